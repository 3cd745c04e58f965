#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Two builds of ringlet side by side in one run, interleaved round by round, so that a change
# is measured against its parent on the same machine state: busbw over TCP and shared memory,
# 8-byte latency, and the 2 x 4 hierarchical case on 1 Gbit/s namespaced hosts.
#
# usage: bench/compare_builds.sh BEFORE_BUILD AFTER_BUILD [all|bandwidth|latency|hier]
#
# Environment knobs:
#   RANKS="2 4"         rank counts on one node
#   BW_REPS=3           interleaved rounds of the bandwidth cases (median reported)
#   LAT_REPS=5          interleaved rounds of the latency cases (median and min-max reported)
#   LAT_ITERS=20000     timed iterations of each latency run
#   HIER_REPS=3         interleaved rounds of the hierarchical case (needs root)
#   RATE=1gbit          tbf rate of the test hosts' links
#   COMPARE_TIMEOUT=300 wall-clock limit of each command, in seconds
#   OUT_DIR=...         where every output is kept (default: a new temporary folder)
#   PERF_ARGS="-c 1"    extra allreduce_perf flags of the bandwidth and latency cases
#   AFTER_ARGS="-z 1"   extra flags for AFTER_BUILD only (flags BEFORE_BUILD may not know)
set -uo pipefail

if [[ $# -lt 2 || $# -gt 3 || "$1" == -h || "$1" == --help ]]; then
  sed -n '4,20p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
before=$(cd "$1" && pwd)
after=$(cd "$2" && pwd)
mode=${3:-all}
case "$mode" in all | bandwidth | latency | hier) ;; *) echo "unknown mode '$mode'" >&2; exit 2 ;; esac
ranks_list=${RANKS:-2 4}
bw_reps=${BW_REPS:-3}
lat_reps=${LAT_REPS:-5}
lat_iters=${LAT_ITERS:-20000}
hier_reps=${HIER_REPS:-3}
rate=${RATE:-1gbit}
limit=${COMPARE_TIMEOUT:-300}
perf_args=${PERF_ARGS:-}
after_args=${AFTER_ARGS:-}
out_dir=${OUT_DIR:-$(mktemp -d /tmp/ringlet-builds.XXXXXX)}
mkdir -p "$out_dir"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export RL_TESTHOSTS_PREFIX=${COMPARE_PREFIX:-rlb}
export RL_TESTHOSTS_NET=${COMPARE_NET:-198.18.252}
testhosts="$here/../tests/net/testhosts.sh"
h=$RL_TESTHOSTS_PREFIX-h

export GLIBC_TUNABLES=glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184
for v in $(env | sed -n 's/^\(RINGLET_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done

hosts_up=0
cleanup() { [[ $hosts_up -eq 1 ]] && "$testhosts" down >/dev/null 2>&1; }
trap cleanup EXIT

# one NAME BUILD ENV... -- ARGS...: one bounded run, output kept as OUT_DIR/NAME.<n>.txt.
one() {
  local name=$1 build=$2
  shift 2
  local envs=()
  while [[ "$1" != -- ]]; do envs+=("$1"); shift; done
  shift
  local n
  n=$(ls "$out_dir/$name".*.txt 2>/dev/null | wc -l)
  n=$((n + 1))
  echo "== $name run $n" >&2
  env "${envs[@]}" timeout --kill-after=10 "$limit" "$build/tools/ringlet-run" "$@" \
    >"$out_dir/$name.$n.txt" 2>"$out_dir/$name.$n.err" ||
    echo "   exit status $? (see $out_dir/$name.$n.err)" >&2
}

# values NAME BYTES COLUMN: the column of the row for BYTES in every run with #wrong 0, sorted.
values() {
  local f
  for f in "$out_dir/$1".*.txt; do
    awk -v b="$2" -v c="$3" '!/^#/ && NF == 8 && $1 == b && $8 == 0 { print $c }' "$f"
  done | sort -g
}
median() {
  local v
  v=$(values "$@")
  [[ -n "$v" ]] || { echo n/a; return; }
  awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }' <<<"$v"
}
range() {
  local v
  v=$(values "$@")
  [[ -n "$v" ]] || { echo n/a; return; }
  echo "$(head -1 <<<"$v")-$(tail -1 <<<"$v")"
}
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.3f", a / b; else print "n/a" }'
}

rows=()
row() { rows+=("$(printf '%-34s %14s %14s %8s   %s' "$@")"); }

if [[ "$mode" == all || "$mode" == bandwidth ]]; then
  for np in $ranks_list; do
    for path in tcp shm; do
      shm=1; [[ $path == tcp ]] && shm=0
      for ((i = 0; i < bw_reps; i++)); do
        for b in before after; do
          build=$before extra=""; [[ $b == after ]] && build=$after extra=$after_args
          one "bw-$path-$np-$b" "$build" RINGLET_SHM=$shm -- -np "$np" \
            "$build/bench/allreduce_perf" -b 64M -e 256M -f 4 -n 5 -w 2 -c 1 $perf_args $extra
        done
      done
      for S in 67108864 268435456; do
        bb=$(median "bw-$path-$np-before" $S 7); ba=$(median "bw-$path-$np-after" $S 7)
        row "busbw $path np=$np $((S >> 20)) MiB (GB/s)" "$bb" "$ba" "$(ratio "$ba" "$bb")" "after/before"
      done
    done
  done
fi

if [[ "$mode" == all || "$mode" == latency ]]; then
  for np in $ranks_list; do
    for path in tcp shm; do
      shm=1; [[ $path == tcp ]] && shm=0
      for ((i = 0; i < lat_reps; i++)); do
        for b in before after; do
          build=$before extra=""; [[ $b == after ]] && build=$after extra=$after_args
          one "lat-$path-$np-$b" "$build" RINGLET_SHM=$shm -- -np "$np" \
            "$build/bench/allreduce_perf" -b 8 -e 8 -n "$lat_iters" -w 1000 -c 1 $perf_args $extra
        done
      done
      lb=$(median "lat-$path-$np-before" 8 5); la=$(median "lat-$path-$np-after" 8 5)
      row "8 B latency $path np=$np (us)" "$lb" "$la" "$(ratio "$la" "$lb")" \
        "before range $(range "lat-$path-$np-before" 8 5), after $(range "lat-$path-$np-after" 8 5)"
    done
  done
fi

if [[ "$mode" == all || "$mode" == hier ]]; then
  if [[ $EUID -ne 0 ]]; then
    echo "compare_builds.sh: the hierarchical case needs root (namespaces); skipped" >&2
  elif "$testhosts" up 2 "$rate" >&2; then
    hosts_up=1
    H2="$h"1:4,"$h"2:4
    for ((i = 0; i < hier_reps; i++)); do
      for b in before after; do
        build=$before; [[ $b == after ]] && build=$after
        one "hier-2x4-$b" "$build" -- -np 8 -H "$H2" --launcher netns --timeout "$limit" \
          "$build/bench/allreduce_perf" -b 64M -e 64M -n 5 -w 2 -c 1 --algo hier
      done
    done
    S=67108864
    hb=$(median hier-2x4-before $S 7); ha=$(median hier-2x4-after $S 7)
    row "hier 2x4 at $rate 64 MiB busbw (GB/s)" "$hb" "$ha" "$(ratio "$ha" "$hb")" "after/before"
  else
    echo "compare_builds.sh: testhosts.sh up failed; hierarchical case skipped" >&2
  fi
fi

echo "# compare_builds.sh $(date -u +%FT%TZ) on $(nproc) cores; before $before, after $after"
printf '%-34s %14s %14s %8s   %s\n' case before after ratio note
printf '%s\n' "${rows[@]}"
echo "# outputs in $out_dir"
