#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# testhosts.sh: test hosts as network namespaces on one Linux bridge, with tbf-shaped links.
#
#   testhosts.sh up M RATE      M hosts rl-h1..rl-hM, 198.18.0.1..M/24, on bridge rl-br0
#                               (198.18.0.254/24); RATE is a tc rate ("1gbit") or "none"
#   testhosts.sh down           removes every host, link and the bridge (idempotent)
#   testhosts.sh run HOST cmd.. runs cmd in HOST, with its own UTS namespace (hostname HOST)
#   testhosts.sh status         lists the hosts and their qdiscs
#
# Environment: RL_TESTHOSTS_PREFIX (default "rl") names the set, so that two sets can coexist;
# RL_TESTHOSTS_NET (default "198.18.0") is the /24 the set uses, inside 198.18.0.0/15;
# RL_TESTHOSTS_BURST (default "125kb", what tbf needs to hold 1 Gbit/s on these machines).
# Needs root, iproute2 (ip, tc) and util-linux (unshare). See docs/guide/launcher.md.
set -euo pipefail

prefix="${RL_TESTHOSTS_PREFIX:-rl}"
net="${RL_TESTHOSTS_NET:-198.18.0}"
burst="${RL_TESTHOSTS_BURST:-125kb}"
bridge="${prefix}-br0"

die() {
  echo "testhosts.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

check_settings() {
  [[ "$prefix" =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "RL_TESTHOSTS_PREFIX must be 1-8 of [a-z0-9]"
  [[ "$net" =~ ^198\.1[89]\.([0-9]{1,3})$ ]] && ((BASH_REMATCH[1] <= 255)) ||
    die "RL_TESTHOSTS_NET must be 198.18.X or 198.19.X (inside 198.18.0.0/15), got '$net'"
}

# The hosts of this set that exist now, one per line.
hosts_now() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${prefix}-h[0-9]+\$" || true
}

down() {
  local ns link
  for ns in $(hosts_now); do
    ip netns del "$ns" 2>/dev/null || true  # also removes both ends of its veth
  done
  # Bridge-side veth ends left over from a failed `up`.
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 |
                grep -E "^${prefix}-h[0-9]+-v\$" || true); do
    ip link del "$link" 2>/dev/null || true
  done
  if ip link show "$bridge" >/dev/null 2>&1; then
    ip link del "$bridge" 2>/dev/null || true
  fi
}

# Shapes egress of one device (in namespace $1, or the root namespace when $1 is empty).
shape() {
  local ns="$1" dev="$2" rate="$3"
  local tc=(tc)
  [[ -n "$ns" ]] && tc=(tc -n "$ns")
  "${tc[@]}" qdisc replace dev "$dev" root tbf rate "$rate" burst "$burst" latency 50ms
}

up() {
  local m="$1" rate="$2" i ns veth
  [[ "$m" =~ ^[0-9]+$ ]] && ((m >= 1 && m <= 253)) || die "M must be 1..253, got '$m'"
  [[ "$rate" == none || "$rate" =~ ^[0-9.]+([kmgt]?(bit|bps))?$ ]] ||
    die "RATE must be a tc rate such as 1gbit, or none; got '$rate'"
  down  # start clean: safe to run again, and after a failed run
  trap 'echo "testhosts.sh: up failed; removing what was created" >&2; down' ERR
  ip link add "$bridge" type bridge
  ip link set "$bridge" up
  ip addr add "${net}.254/24" dev "$bridge"
  for ((i = 1; i <= m; i++)); do
    ns="${prefix}-h${i}"
    veth="${prefix}-h${i}-v"
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$bridge" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "${net}.${i}/24" dev eth0
    ip -n "$ns" link set eth0 up
    if [[ "$rate" != none ]]; then
      shape "$ns" eth0 "$rate"   # host -> bridge
      shape "" "$veth" "$rate"   # bridge -> host
    fi
  done
  trap - ERR
  echo "testhosts.sh: $m hosts ${prefix}-h1..${prefix}-h${m} on ${net}.0/24 via ${bridge}," \
       "rate ${rate}"
}

run() {
  local host="$1"
  shift
  [[ $# -ge 1 ]] || usage
  ip netns list | awk '{print $1}' | grep -qx "$host" || die "no such test host '$host'"
  exec ip netns exec "$host" unshare --uts sh -c 'hostname "$1" && shift && exec "$@"' sh \
    "$host" "$@"
}

status() {
  local ns
  for ns in $(hosts_now); do
    echo "== $ns: $(ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}')"
    tc -n "$ns" qdisc show dev eth0 2>/dev/null || true
    tc qdisc show dev "${ns}-v" 2>/dev/null || true
  done
}

[[ $# -ge 1 ]] || usage
check_settings
cmd="$1"
shift
case "$cmd" in
  up) [[ $# -eq 2 ]] || usage; [[ $EUID -eq 0 ]] || die "must run as root"; up "$1" "$2" ;;
  down) [[ $# -eq 0 ]] || usage; [[ $EUID -eq 0 ]] || die "must run as root"; down ;;
  run) [[ $# -ge 2 ]] || usage; run "$@" ;;
  status) status ;;
  *) usage ;;
esac
