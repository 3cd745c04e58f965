#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ringlet-run's hang diagnosis without --tag-output (suite 'launcher'): rank 2 of 3 is stopped
# (SIGSTOP) in the middle of its collectives; the job's --timeout makes ringlet-run ask every
# rank for a hang report (RINGLET_HANG_SIGNAL). The ranks' output goes straight through, so
# the reports reach ringlet-run through their RINGLET_REPORT_FD pipes; its one-line diagnosis
# must name rank 2. Bounded: --timeout 8 s, then the stopped rank is killed.
# usage: hang_diagnosis_test.sh RINGLET_RUN CHAOS_RANK
set -uo pipefail
run=$1 chaos=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for v in $(env | sed -n 's/^\(RINGLET_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
RINGLET_TIMEOUT=60 timeout 60 "$run" -np 3 --timeout 8 -x RINGLET_TIMEOUT -- sh -c \
  'if [ "$RINGLET_RANK" = 2 ]; then (sleep 2; kill -STOP $$) & fi; exec "$@"' sh \
  "$chaos" --seed 7 --seconds 40 >"$out" 2>&1
status=$?
diagnosis=$(grep '^ringlet-run: diagnosis: ' "$out")
echo "ringlet-run exited $status; ${diagnosis:-no diagnosis}"
if [ "$status" -eq 0 ]; then
  echo "FAIL: the job succeeded"; tail -20 "$out"; exit 1
fi
if grep -q '^\[1,' "$out"; then
  echo "FAIL: the output was tagged"; exit 1
fi
if ! grep -Eq 'rank 2\b' <<<"${diagnosis#*wait}"; then
  echo "FAIL: the diagnosis does not name rank 2"; tail -20 "$out"; exit 1
fi
echo PASS
