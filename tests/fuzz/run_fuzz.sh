#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# run_fuzz.sh FUZZER CORPUS REGRESSIONS: replays every committed input (the seed corpus and
# the regression inputs of crashes found earlier), then fuzzes for RINGLET_FUZZ_SECONDS
# (default 60) from the seed corpus; new inputs go to a temporary folder, so the committed
# corpus is never written. Prints the executions; a crash leaves its input in
# $RINGLET_FUZZ_ARTIFACTS (default: a temporary folder, printed): add it to REGRESSIONS.
set -uo pipefail
exe="${1:?usage: run_fuzz.sh FUZZER CORPUS REGRESSIONS}"
corpus="${2:?}"
regress="${3:?}"
seconds="${RINGLET_FUZZ_SECONDS:-60}"
name="$(basename "$exe")"
work="$(mktemp -d "/tmp/ringlet-$name.XXXXXX")"
artifacts="${RINGLET_FUZZ_ARTIFACTS:-$work/artifacts}"
mkdir -p "$work/new" "$artifacts"
keep=0
cleanup() { ((keep)) || rm -rf "$work"; }
trap cleanup EXIT
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
replay=("$corpus")
[[ -d "$regress" ]] && replay+=("$regress")
if ! "$exe" -runs=0 -timeout=10 "${replay[@]}" >"$work/replay.log" 2>&1; then
  keep=1
  tail -n 40 "$work/replay.log"
  echo "FAIL: $name: a committed input fails (log: $work/replay.log)"
  exit 1
fi
echo "$name: replayed $(grep -o 'INITED.*' "$work/replay.log" | head -n 1)"
"$exe" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" "$work/new" "$corpus" \
  >"$work/fuzz.log" 2>&1
status=$?
execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log")"
rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/fuzz.log")"
cov="$(grep -o 'cov: [0-9]*' "$work/fuzz.log" | tail -n 1)"
echo "$name: ${execs:-?} executions in ${seconds} s (${rate:-?}/s), $cov, $(ls "$work/new" | wc -l) new inputs"
if ((status != 0)); then
  keep=1
  tail -n 60 "$work/fuzz.log"
  echo "FAIL: $name: exit status $status; the input is in $artifacts (add it to $regress)"
  exit 1
fi
echo "PASSED"
