#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# netns_hier_test.sh: the hierarchical allreduce across 2 namespaced test hosts of 2 ranks each,
# shared memory inside each host and rdma (the emulated device) between them.
# Usage: netns_hier_test.sh RINGLET_RUN HIER_CHECK EMULATOR TESTHOSTS. Exit 77 (skip) when not
# root or without `ip netns`; the test hosts (set "rlr", 198.19.13.0/24) are always removed.
set -uo pipefail
run_exe="${1:?usage}" check_exe="${2:?usage}" emu="${3:?usage}" testhosts="${4:?usage}"
skip() {
  echo "SKIP: $*"
  exit 77
}
[[ $EUID -eq 0 ]] || skip "needs root to create network namespaces"
command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
ip netns list >/dev/null 2>&1 || skip "\`ip netns\` is unavailable"
export RL_TESTHOSTS_PREFIX=rlr RL_TESTHOSTS_NET=198.19.13
work="$(mktemp -d /tmp/ringlet-rdma-hier.XXXXXX)"
cleanup() {
  "$testhosts" down
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
"$testhosts" up 2 none || { echo "FAIL: testhosts.sh up"; exit 1; }
for v in $(env | sed -n 's/^\(RINGLET_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
# The emulated NICs meet in a socket folder that both hosts see (the file system is shared).
mkdir -p "$work/emu"
timeout --kill-after=5 120 env RINGLET_ALGO=hier RINGLET_TIMEOUT=60 RINGLET_DEBUG=info \
  RINGLET_TRANSPORT=rdma RINGLET_IBVERBS_LIBRARY="$emu" RINGLET_VERBS_EMU_DIR="$work/emu" \
  "$run_exe" -np 4 -H rlr-h1:2,rlr-h2:2 --launcher netns --timeout 100 "$check_exe" \
  >"$work/out" 2>"$work/err"
status=$?
ok=$(grep -c "^hier_check rank [0-9]/4 nodes 2 local [01]/2: .*OK$" "$work/out")
rdma=$(grep -c "transport rdma, local group shm" "$work/err")
hier=$(grep -c "large allreduces are hierarchical" "$work/err")
echo "status $status, $ok of 4 ranks exact, $rdma of 4 on rdma + shm, $hier of 4 hierarchical"
if [[ $status -ne 0 || $ok -ne 4 || $rdma -ne 4 || $hier -ne 4 ]]; then
  echo "FAIL"; tail -20 "$work/err"; exit 1
fi
echo "ok"
