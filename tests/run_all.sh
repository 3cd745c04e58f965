#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The whole test suite: builds BUILD (default: build) if needed and runs every test suite,
# the namespaced multi-host suite 'net' included when root. Fails when no test ran.
# Usage: tests/run_all.sh [BUILD] [extra meson setup options...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" -Dtests=enabled "$@"
fi
ninja -C "$build"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() {
  set +e
  meson test -C "$build" --print-errorlogs --num-processes 2 "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}
status=0
run || status=$?
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  # Multi-host tests across network namespaces need root; they skip themselves otherwise.
  run --suite net || status=$?
  # A real SLURM in network namespaces (tests/slurm); skips itself without slurmd or munge.
  run --suite slurm || status=$?
fi
if grep -q "No tests defined" "$log"; then
  echo "run_all: no tests are defined in $build (was -Dtests disabled?)" >&2
  exit 1
fi
ran=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
if [ "$ran" -eq 0 ]; then
  echo "run_all: no test passed in $build" >&2
  exit 1
fi
exit "$status"
