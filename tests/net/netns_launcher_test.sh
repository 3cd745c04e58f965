#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# netns_launcher_test.sh: ringlet-run --launcher netns across 2 namespaced test hosts.
# Usage: netns_launcher_test.sh RINGLET_RUN RANK_PROBE. Exit 77 (skip) when not root or
# without `ip netns`; the test hosts are always removed (trap EXIT), also on failure.
set -uo pipefail

run_exe="${1:?usage: netns_launcher_test.sh RINGLET_RUN RANK_PROBE}"
probe="${2:?usage: netns_launcher_test.sh RINGLET_RUN RANK_PROBE}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
testhosts="$here/testhosts.sh"

skip() {
  echo "SKIP: $*"
  exit 77
}
[[ $EUID -eq 0 ]] || skip "needs root to create network namespaces"
command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
command -v unshare >/dev/null || skip "unshare (util-linux) is not installed"
ip netns list >/dev/null 2>&1 || skip "\`ip netns\` is unavailable"

# A set of our own, so that a test host set someone else brought up is left alone.
export RL_TESTHOSTS_PREFIX=rlt RL_TESTHOSTS_NET=198.18.254
h1=rlt-h1
h2=rlt-h2
trap '"$testhosts" down' EXIT
"$testhosts" up 2 1gbit || { echo "FAIL: testhosts.sh up"; exit 1; }

failures=0
check() {  # check DESCRIPTION EXPECTED ACTUAL
  if [[ "$2" == "$3" ]]; then
    echo "ok: $1"
  else
    echo "FAIL: $1: expected '$2', got '$3'"
    failures=$((failures + 1))
  fi
}

out="$(timeout 60 "$run_exe" -np 4 -H "$h1:2,$h2:2" --launcher netns --timeout 30 \
         "$probe" env)"
status=$?
echo "$out"
check "ringlet-run exit status" 0 "$status"
check "lines" 4 "$(grep -c '^rank=' <<<"$out")"
# rank -> expected host, local rank, address
expect=("$h1 0 198.18.254.1" "$h1 1 198.18.254.1" "$h2 0 198.18.254.2" "$h2 1 198.18.254.2")
for r in 0 1 2 3; do
  line="$(grep "^rank=$r " <<<"$out")"
  field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  read -r host local ip <<<"${expect[$r]}"
  check "rank $r hostname" "$host" "$(field host)"
  check "rank $r RINGLET_NODE_ID" "$host" "$(field node)"
  check "rank $r RINGLET_LOCAL_RANK" "$local" "$(field local_rank)"
  check "rank $r RINGLET_LOCAL_SIZE" 2 "$(field local_size)"
  check "rank $r RINGLET_SIZE" 4 "$(field size)"
  check "rank $r IPv4 address" "$ip" "$(field ips)"
  check "rank $r RINGLET_ADDR host" "198.18.254.1" "$(field addr | cut -d: -f1)"
done

# The store address is reachable from the other host: rank 0 listens, the others connect.
out="$(timeout 60 "$run_exe" -np 4 -H "$h1:2,$h2:2" --launcher netns --timeout 30 \
         "$probe" rendezvous 2>&1)"
status=$?
echo "$out"
check "rendezvous across hosts: exit status" 0 "$status"
check "rendezvous across hosts: rank 0 heard from" 3 \
  "$(grep -c '^rank 0 accepted rank' <<<"$out")"

# An explicit address (-H host=addr) and a failing rank in the other namespace.
timeout 60 "$run_exe" -np 2 -H "$h1=198.18.254.1:1,$h2:1" --launcher netns "$probe" exit 1 7
check "exit status from a rank in $h2" 7 "$?"

# A missing namespace is a clear set-up error.
timeout 60 "$run_exe" -np 1 -H rlt-nosuch --launcher netns true 2>/dev/null
check "missing namespace" 1 "$?"

if ((failures > 0)); then
  echo "FAILED: $failures checks"
  exit 1
fi
echo "PASSED"
