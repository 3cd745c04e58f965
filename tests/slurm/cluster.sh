#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# cluster.sh: a real SLURM 22.05 (Debian's slurmctld, slurmd, munge) on one machine, each
# daemon in its own network, mount and UTS namespace: controller rlsctl and nodes rlsn1..N.
#
#   cluster.sh up STATE N CPUS   builds it under the folder STATE (created), N nodes (1..9)
#                                of CPUS CPUs each; prints "export SLURM_CONF=..." on stdout
#   cluster.sh down STATE        stops what STATE's pid files name, removes the namespaces
#                                rls-*, the bridge rls-br0 and STATE (idempotent)
#   cluster.sh node STATE NODE cmd..  runs cmd inside NODE's namespaces (e.g. scontrol listpids)
#
# Addresses: 198.19.42.0/24 (bridge .1, controller .2, node i at .(10+i)); namespaces rls-c
# and rls-n1..N. tests/net/testhosts.sh's sets use rl*-h* names and other /24s. Needs root,
# iproute2, util-linux (nsenter, unshare). Every wait is bounded.
set -euo pipefail

net=198.19.42
bridge=rls-br0

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

# Waits up to $1 tenths of a second for the command to succeed.
wait_for() {
  local tenths="$1" i
  shift
  for ((i = 0; i < tenths; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# The checkout this script belongs to. When it lives under /tmp (CI clones there), every
# node keeps it visible at the same path on top of its own /tmp, so that slurmstepd finds
# the working directory and the programs.
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
case "$repo_root/" in /tmp/*) keep_under_tmp="$repo_root" ;; *) keep_under_tmp="" ;; esac

# Runs a command in namespace NS with hostname HOST, STATE's /etc/hosts and its own /tmp
# (slurmstepd's PMIx folders are named by job and step only, so nodes must not share /tmp;
# hence STATE must not be under /tmp), the checkout kept visible when it is under /tmp.
# nsenter and unshare exec (no fork), so $! of a background call is the daemon's pid.
in_node() {
  local state="$1" ns="$2" host="$3"
  shift 3
  exec nsenter --net="/run/netns/$ns" unshare --mount --uts --propagation private \
    bash -c 'mount --bind "$1" /etc/hosts &&
             if [ -n "$4" ]; then mkdir -p "$5" && mount --bind "$4" "$5"; fi &&
             mount --bind "$2" /tmp &&
             if [ -n "$4" ]; then mkdir -p "$4" && mount --bind "$5" "$4"; fi &&
             hostname "$3" && shift 5 && exec "$@"' in_node "$state/etc/hosts" \
    "$state/tmp/$host" "$host" "$keep_under_tmp" "$state/keep/$host" "$@"
}

down() {
  local state="$1" pidfile pid ns i
  # Daemons first (SIGTERM, then SIGKILL after 8 s), only the pids this state started.
  if [[ -d "$state/run" ]]; then
    for pidfile in "$state"/run/*.pid; do
      [[ -f "$pidfile" ]] || continue
      pid="$(cat "$pidfile" 2>/dev/null || true)"
      [[ "$pid" =~ ^[0-9]+$ ]] || continue
      case "$(cat "/proc/$pid/comm" 2>/dev/null || true)" in
        slurmctld | slurmd | munged) kill -TERM "$pid" 2>/dev/null || true ;;
      esac
    done
    for ((i = 0; i < 80; i++)); do
      local alive=0
      for pidfile in "$state"/run/*.pid; do
        [[ -f "$pidfile" ]] || continue
        pid="$(cat "$pidfile" 2>/dev/null || true)"
        [[ "$pid" =~ ^[0-9]+$ ]] && case "$(cat "/proc/$pid/comm" 2>/dev/null || true)" in
          slurmctld | slurmd | munged) alive=1 ;;
        esac
      done
      ((alive)) || break
      sleep 0.1
    done
    for pidfile in "$state"/run/*.pid; do
      [[ -f "$pidfile" ]] || continue
      pid="$(cat "$pidfile" 2>/dev/null || true)"
      [[ "$pid" =~ ^[0-9]+$ ]] || continue
      case "$(cat "/proc/$pid/comm" 2>/dev/null || true)" in
        slurmctld | slurmd | munged) kill -KILL "$pid" 2>/dev/null || true ;;
      esac
    done
  fi
  # Whatever still runs in our namespaces (steps, tasks), then the namespaces themselves.
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^rls-(c|n[0-9])$' || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 |
                grep -E '^rls-(c|n[0-9])-v$' || true); do
    ip link del "$link" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
  [[ -n "$state" && -d "$state" && -f "$state/.rls-state" ]] && rm -rf "$state"
  return 0
}

add_host() {  # add_host NS ADDRESS
  local ns="$1" addr="$2"
  ip netns add "$ns"
  ip link add "$ns-v" type veth peer name eth0 netns "$ns"
  ip link set "$ns-v" master "$bridge" up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

up() {
  local state="$1" n="$2" cpus="$3" i
  [[ "$n" =~ ^[1-9]$ ]] || die "N must be 1..9, got '$n'"
  [[ "$cpus" =~ ^[1-9][0-9]?$ ]] || die "CPUS must be 1..99, got '$cpus'"
  for p in slurmctld slurmd munged srun ip nsenter unshare; do
    command -v "$p" >/dev/null || die "$p not found (apt-get install slurmctld slurmd slurm-client munge)"
  done
  down "$state"
  trap 'echo "cluster.sh: up failed; logs:" >&2; tail -n 5 "$state"/log/* >&2 2>/dev/null; down "$state"' ERR
  case "$(realpath -m "$state")/" in /tmp/*) die "STATE must not be under /tmp (each node mounts its own /tmp)" ;; esac
  mkdir -p "$state"/{etc,run,log,spool,ctld,munge} "$state/tmp/rlsctl"
  chmod 1777 "$state/tmp/rlsctl"
  touch "$state/.rls-state"
  chmod 0755 "$state" "$state/run"
  chmod 0700 "$state/munge"
  dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
  chmod 0400 "$state/munge/munge.key"
  munged --force --socket="$state/run/munge.socket" --key-file="$state/munge/munge.key" \
    --pid-file="$state/run/munged.pid" --log-file="$state/log/munged.log" \
    --seed-file="$state/munge/munge.seed"
  wait_for 50 test -S "$state/run/munge.socket" || die "munged did not start"

  ip link add "$bridge" type bridge
  ip addr add "$net.1/24" dev "$bridge"
  ip link set "$bridge" up
  add_host rls-c "$net.2"
  {
    echo "127.0.0.1 localhost"
    echo "$net.2 rlsctl"
    for ((i = 1; i <= n; i++)); do echo "$net.$((10 + i)) rlsn$i"; done
  } >"$state/etc/hosts"
  for ((i = 1; i <= n; i++)); do
    add_host "rls-n$i" "$net.$((10 + i))"
    mkdir -p "$state/tmp/rlsn$i"
    chmod 1777 "$state/tmp/rlsn$i"
  done

  cat >"$state/etc/slurm.conf" <<CONF
ClusterName=rlstest
SlurmctldHost=rlsctl($net.2)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/run/munge.socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool/%n
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd-%n.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
MailProg=/bin/true
InactiveLimit=0
KillWait=5
MinJobAge=30
Waittime=0
CONF
  for ((i = 1; i <= n; i++)); do
    echo "NodeName=rlsn$i NodeAddr=$net.$((10 + i)) NodeHostname=rlsn$i CPUs=$cpus State=UNKNOWN"
  done >>"$state/etc/slurm.conf"
  echo "PartitionName=test Nodes=ALL Default=YES MaxTime=10 State=UP OverSubscribe=NO" \
    >>"$state/etc/slurm.conf"
  export SLURM_CONF="$state/etc/slurm.conf"

  (in_node "$state" rls-c rlsctl slurmctld -i -f "$SLURM_CONF" >>"$state/log/slurmctld.out" 2>&1 &)
  wait_for 100 scontrol ping || die "slurmctld does not answer"
  for ((i = 1; i <= n; i++)); do
    mkdir -p "$state/spool/rlsn$i"
    (in_node "$state" "rls-n$i" "rlsn$i" slurmd -f "$SLURM_CONF" >>"$state/log/slurmd-rlsn$i.out" 2>&1 &)
  done
  idle() { [[ "$(sinfo -h -N -o '%t' 2>/dev/null | grep -cE '^(idle|mix|alloc)')" == "$n" ]]; }
  wait_for 150 idle || die "the nodes did not become idle: $(sinfo -h -N 2>&1 | tr '\n' ' ')"
  trap - ERR
  echo "export SLURM_CONF=$SLURM_CONF"
}

case "${1:-}" in
  up) up "${2:?STATE}" "${3:?N}" "${4:?CPUS}" ;;
  down) down "${2:?STATE}" ;;
  node)
    state="${2:?STATE}" node="${3:?NODE}"
    shift 3
    in_node "$state" "rls-${node#rls}" "$node" "$@"
    ;;
  *)
    sed -n '4,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
