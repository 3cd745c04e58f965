#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The whole test suite: builds BUILD (default: build) if needed and runs every test suite,
# the namespaced multi-host suite 'net' included when root. Fails when no test ran.
# The suites 'fault', 'soak' and 'fuzz' (docs/reliability.md) are not part of it: .ci/run runs
# them once. Usage: tests/run_all.sh [BUILD] [extra meson setup options...]
#
# A quick subset while developing (about 4 minutes on the 2-core VM; not a replacement for the
# whole suite): tests/run_all.sh --quick [BUILD] runs the unit suite, the launcher, the thread
# variants of the multi-rank collectives and async tests, the fault tests, and (as root) 20
# fault-injection trials.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
if [[ "${1:-}" == --quick ]]; then
  quick=1
  shift
fi
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
if ((quick)); then
  run --suite unit --suite launcher multirank_collectives_threads multirank_async_threads \
    multirank_fault multirank_mismatch_inflight || status=$?
  if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
    python3 tests/reliab/fault.py "$build/tests/reliab/chaos_rank" "$build/tools/ringlet-run" \
      tests/net/testhosts.sh --trials 20 || status=$?
  fi
  exit "$status"
fi
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
