#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The emulator across two namespaced test hosts: each host runs one rank of emu_peer, the
# endpoints go over TCP on the test link, the emulated NICs talk through a socket folder that
# both hosts see. Skips (exit 77) unless root with `ip netns`.
# Usage: netns_test.sh EMU_PEER TESTHOSTS_SH
set -euo pipefail
peer="$1"
testhosts="$2"
if [[ $EUID -ne 0 ]] || ! command -v ip >/dev/null || ! ip netns list >/dev/null 2>&1; then
  echo "SKIP: needs root and ip netns"
  exit 77
fi
# A set of its own (prefix and /24), so that it never meets the 'net' suite's hosts.
export RL_TESTHOSTS_PREFIX=rve RL_TESTHOSTS_NET=198.19.12
dir=$(mktemp -d /tmp/rlemu-net.XXXXXX)
export RINGLET_VERBS_EMU_DIR="$dir"
cleanup() {
  bash "$testhosts" down || true
  rm -rf "$dir"
}
trap cleanup EXIT
if ! bash "$testhosts" up 2 none; then
  echo "SKIP: cannot create test hosts here"
  exit 77
fi
port=$((20000 + RANDOM % 20000))
timeout 60 bash "$testhosts" run rve-h1 "$peer" server 198.19.12.1 "$port" &
server=$!
status=0
timeout 60 bash "$testhosts" run rve-h2 "$peer" client 198.19.12.1 "$port" || status=$?
wait "$server" || status=$?
# Every NIC removed its socket when its rank closed.
left=$(find "$dir" -mindepth 1 | wc -l)
if [[ $left -ne 0 ]]; then
  echo "netns_test: $left socket files left in $dir" >&2
  status=1
fi
echo "netns_test: exit $status"
exit "$status"
