#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What the job's secret and RINGLET_ENCRYPT cost (docs/perf/security.md), in one bounded run.
#
# usage: bench/compare_security.sh BUILD_DIR [BASE_BUILD_DIR] [all|setup|loopback|hosts]
#
#   setup     Communicator::create() time (allreduce_perf's "# create" line, slowest rank) at
#             4 and 8 ranks over TCP loopback (RINGLET_SHM=0): BASE (the build before
#             authentication, when given), no secret, a secret; interleaved
#   loopback  busbw at 64 MiB, 2 and 4 ranks over TCP loopback: a secret, and a secret with
#             RINGLET_ENCRYPT=1
#   hosts     the same between 2 namespaced hosts (1 rank each) on 1 Gbit/s links (root)
# Every figure is the median of REPS runs. Environment: REPS=5, COMPARE_TIMEOUT=120 (s per
# command), RATE=1gbit, COMPARE_PREFIX=rlx, COMPARE_NET=198.18.250, OUT_DIR.
set -uo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '4,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
build=$(cd "$1" && pwd)
shift
base=""
if [[ $# -ge 1 && -d "$1" ]]; then
  base=$(cd "$1" && pwd)
  shift
fi
mode=${1:-all}
reps=${REPS:-5}
limit=${COMPARE_TIMEOUT:-120}
rate=${RATE:-1gbit}
export RL_TESTHOSTS_PREFIX=${COMPARE_PREFIX:-rlx}
export RL_TESTHOSTS_NET=${COMPARE_NET:-198.18.250}
out_dir=${OUT_DIR:-$(mktemp -d /tmp/ringlet-compare-security.XXXXXX)}
mkdir -p "$out_dir"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
testhosts="$here/../tests/net/testhosts.sh"
for v in $(env | sed -n 's/^\(RINGLET_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.3f", a / b; else print "n/a" }'; }

# create_ms BUILD N SECRET: one job of N processes started by hand (so that no launcher adds a
# secret); prints rank 0's "# create" figure.
port=$((30000 + RANDOM % 20000))
create_ms() {
  local b=$1 n=$2 s=$3 r pids=() out
  port=$((port + 1))
  out=$out_dir/create.$$.$port
  for ((r = 0; r < n; r++)); do
    env RINGLET_RANK=$r RINGLET_SIZE=$n RINGLET_ADDR=127.0.0.1:$port RINGLET_SHM=0 \
      RINGLET_JOB_ID=sec$port ${s:+RINGLET_SECRET=$s} \
      timeout "$limit" "$b/bench/allreduce_perf" -b 8 -e 8 -n 1 -w 0 -c 0 >"$out.$r" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  awk '/^# create:/ { print $3 }' "$out.0"
}

if [[ "$mode" == all || "$mode" == setup ]]; then
  for n in 4 8; do
    : >"$out_dir/setup-$n-base" ; : >"$out_dir/setup-$n-none" ; : >"$out_dir/setup-$n-secret"
    for ((i = 0; i < reps; i++)); do
      [[ -n "$base" ]] && create_ms "$base" $n "" >>"$out_dir/setup-$n-base"
      create_ms "$build" $n "" >>"$out_dir/setup-$n-none"
      create_ms "$build" $n "$secret" >>"$out_dir/setup-$n-secret"
    done
    b=$(median <"$out_dir/setup-$n-base"); o=$(median <"$out_dir/setup-$n-none")
    s=$(median <"$out_dir/setup-$n-secret")
    echo "setup $n ranks (ms, median of $reps): base $b  no-secret $o  secret $s  secret/base $(ratio "$s" "$b")  secret/no-secret $(ratio "$s" "$o")"
  done
fi

# busbw_runs NAME LAUNCH...: busbw (GB/s, column 7) at 64 MiB of `runs` (default REPS) runs of
# the command, one per line in OUT_DIR/NAME.
S=67108864
busbw_runs() {
  local name=$1 i
  shift
  : >"$out_dir/$name"
  for ((i = 0; i < ${runs:-$reps}; i++)); do
    timeout "$limit" "$@" -b 64M -e 64M -n 5 -w 2 -c 1 2>&1 | tee "$out_dir/$name.$i.txt" |
      awk -v b=$S '!/^#/ && NF == 8 && $1 == b && $8 == 0 { print $7 }' >>"$out_dir/$name"
  done
}

if [[ "$mode" == all || "$mode" == loopback ]]; then
  for n in 2 4; do
    for ((i = 0; i < reps; i++)); do
      # Interleaved: one clear run, one encrypted run, REPS times.
      runs=1 busbw_runs tmp-clear env RINGLET_SHM=0 RINGLET_SECRET=$secret "$build/tools/ringlet-run" -np $n "$build/bench/allreduce_perf"
      cat "$out_dir/tmp-clear" >>"$out_dir/lo-$n-clear.all"
      runs=1 busbw_runs tmp-enc env RINGLET_SHM=0 RINGLET_SECRET=$secret RINGLET_ENCRYPT=1 "$build/tools/ringlet-run" -np $n "$build/bench/allreduce_perf"
      cat "$out_dir/tmp-enc" >>"$out_dir/lo-$n-enc.all"
    done
    c=$(median <"$out_dir/lo-$n-clear.all"); e=$(median <"$out_dir/lo-$n-enc.all")
    echo "loopback $n ranks busbw 64 MiB (GB/s, median of $reps): secret $c  secret+encrypt $e  ratio $(ratio "$e" "$c")"
  done
fi

if [[ "$mode" == all || "$mode" == hosts ]]; then
  [[ $EUID -eq 0 ]] || { echo "hosts: needs root" >&2; exit 2; }
  trap '"$testhosts" down >/dev/null 2>&1' EXIT
  "$testhosts" up 2 "$rate" >/dev/null || { echo "hosts: testhosts.sh up failed" >&2; exit 1; }
  h=$RL_TESTHOSTS_PREFIX-h
  : >"$out_dir/hosts-clear.all"; : >"$out_dir/hosts-enc.all"
  for ((i = 0; i < reps; i++)); do
    runs=1 busbw_runs tmp-hc env RINGLET_SECRET=$secret "$build/tools/ringlet-run" -np 2 -H "${h}1:1,${h}2:1" --launcher netns "$build/bench/allreduce_perf"
    cat "$out_dir/tmp-hc" >>"$out_dir/hosts-clear.all"
    runs=1 busbw_runs tmp-he env RINGLET_SECRET=$secret RINGLET_ENCRYPT=1 "$build/tools/ringlet-run" -np 2 -H "${h}1:1,${h}2:1" --launcher netns "$build/bench/allreduce_perf"
    cat "$out_dir/tmp-he" >>"$out_dir/hosts-enc.all"
  done
  c=$(median <"$out_dir/hosts-clear.all"); e=$(median <"$out_dir/hosts-enc.all")
  echo "2 hosts x 1 rank, $rate, busbw 64 MiB (GB/s, median of $reps): secret $c  secret+encrypt $e  ratio $(ratio "$e" "$c")"
fi
echo "outputs: $out_dir"
