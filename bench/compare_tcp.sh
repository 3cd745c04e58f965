#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ringlet vs Open MPI over TCP on loopback, in one run: iperf3 ceiling, busbw, 8-byte latency.
#
# usage: bench/compare_tcp.sh BUILD_DIR [all|bandwidth|latency]   (from the repository root)
#
# Both sides get the same allocator settings (GLIBC_TUNABLES below), the same flags and the same
# check. Environment knobs:
#   RANKS="2 4"          rank counts to compare
#   COMPARE_TIMEOUT=300  wall-clock limit of each command, in seconds
#   COMPARE_SHM=1        also run Open MPI's default transport (shared memory), for reference
#   IPERF_PORT=5299      port of the iperf3 server on 127.0.0.1
#   OUT_DIR=...          where every program's output is kept (default: a new temporary folder)
set -uo pipefail

if [[ $# -lt 1 || $# -gt 2 || "$1" == -h || "$1" == --help ]]; then
  sed -n '4,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
build=$1
mode=${2:-all}
case "$mode" in all | bandwidth | latency) ;; *) echo "unknown mode '$mode'" >&2; exit 2 ;; esac

ranks_list=${RANKS:-2 4}
limit=${COMPARE_TIMEOUT:-300}
with_shm=${COMPARE_SHM:-1}
iperf_port=${IPERF_PORT:-5299}
out_dir=${OUT_DIR:-$(mktemp -d /tmp/ringlet-compare.XXXXXX)}
mkdir -p "$out_dir"

export GLIBC_TUNABLES=glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184

ringlet_run=$build/tools/ringlet-run
perf=$build/bench/allreduce_perf
mpi_perf=$build/bench/mpi_allreduce_perf
mpirun_base=(mpirun --allow-run-as-root --oversubscribe --bind-to none -x GLIBC_TUNABLES)
mpi_tcp=(--mca pml ob1 --mca btl "tcp,self" --mca btl_tcp_if_include lo)

for f in "$perf" "$mpi_perf" "$ringlet_run"; do
  [[ -x "$f" ]] || echo "warning: $f is missing; its column will say n/a" >&2
done

# run_case NAME CMD...: runs one bounded command, keeps its output as OUT_DIR/NAME.txt.
run_case() {
  local name=$1
  shift
  echo "== $name: $*" >&2
  timeout --kill-after=10 "$((limit + 5))" "$@" >"$out_dir/$name.txt" 2>"$out_dir/$name.err"
  local rc=$?
  [[ $rc -eq 0 ]] || echo "   exit status $rc (see $out_dir/$name.err)" >&2
  return 0
}

# field NAME BYTES COLUMN: a column of the row for BYTES in NAME's table (5 time, 7 busbw,
# 8 #wrong), or n/a.
field() {
  local file=$out_dir/$1.txt
  [[ -s "$file" ]] || { echo n/a; return; }
  awk -v b="$2" -v c="$3" '!/^#/ && NF == 8 && $1 == b { v = $c } END { print (v == "" ? "n/a" : v) }' "$file"
}

ratio() {  # ratio A B: A / B with two decimals, or n/a
  awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
date_start=$(date -u '+%Y-%m-%d %H:%M:%S UTC')

# 1. The loopback ceiling: iperf3, both directions at once.
iperf_gbs=n/a
if [[ "$mode" != latency ]] && command -v iperf3 >/dev/null; then
  echo "== iperf3 --bidir on 127.0.0.1:$iperf_port" >&2
  if iperf3 -s -1 -D -p "$iperf_port" 2>"$out_dir/iperf3-server.err"; then
    sleep 0.5
    timeout 30 iperf3 -c 127.0.0.1 -p "$iperf_port" --bidir -t 5 -J >"$out_dir/iperf3.json" 2>&1
    iperf_gbs=$(python3 - "$out_dir/iperf3.json" <<'EOF'
import json, sys
try:
    end = json.load(open(sys.argv[1]))["end"]
    bits = end["sum_received"]["bits_per_second"] + end["sum_received_bidir_reverse"]["bits_per_second"]
    print(f"{bits / 8e9:.2f}")
except Exception:
    print("n/a")
EOF
    )
  fi
fi

bw_args=(-b 64M -e 256M -f 4 -n 10 -w 3 -c 1)
lat_args=(-b 8 -e 8 -n 20000 -w 1000 -c 1)

for n in $ranks_list; do
  if [[ "$mode" != latency ]]; then
    run_case "ringlet-bw-$n" env RINGLET_SHM=0 "$ringlet_run" -np "$n" --timeout "$limit" "$perf" "${bw_args[@]}"
    [[ "$with_shm" == 1 ]] &&
      run_case "ringlet-shm-bw-$n" "$ringlet_run" -np "$n" --timeout "$limit" "$perf" "${bw_args[@]}"
    run_case "mpi-tcp-bw-$n" "${mpirun_base[@]}" "${mpi_tcp[@]}" -np "$n" "$mpi_perf" "${bw_args[@]}"
    [[ "$with_shm" == 1 ]] &&
      run_case "mpi-shm-bw-$n" "${mpirun_base[@]}" -np "$n" "$mpi_perf" "${bw_args[@]}"
  fi
  if [[ "$mode" != bandwidth ]]; then
    run_case "ringlet-lat-$n" env RINGLET_SHM=0 "$ringlet_run" -np "$n" --timeout "$limit" "$perf" "${lat_args[@]}"
    [[ "$with_shm" == 1 ]] &&
      run_case "ringlet-shm-lat-$n" "$ringlet_run" -np "$n" --timeout "$limit" "$perf" "${lat_args[@]}"
    run_case "mpi-tcp-lat-$n" "${mpirun_base[@]}" "${mpi_tcp[@]}" -np "$n" "$mpi_perf" "${lat_args[@]}"
    [[ "$with_shm" == 1 ]] &&
      run_case "mpi-shm-lat-$n" "${mpirun_base[@]}" -np "$n" "$mpi_perf" "${lat_args[@]}"
  fi
done

load_end=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "# ringlet vs Open MPI over TCP (loopback), float32 sum in place, $date_start"
echo "# $(nproc) CPUs; load average at start $load_start, at end $load_end; outputs in $out_dir"
[[ "$mode" != latency ]] && echo "# iperf3 --bidir loopback ceiling: $iperf_gbs GB/s (both directions together)"
echo "#"
printf '# %-9s %5s %10s %12s %12s %8s %12s %12s %8s %8s\n' test ranks size ringlet_tcp mpi_tcp ratio ringlet_shm mpi_shm ratio wrong
status=0
row() {  # row TEST N BYTES COLUMN LABEL: ratio is ringlet/mpi for busbw, mpi/ringlet for time
  local test=$1 n=$2 bytes=$3 col=$4 label=$5
  local r m s w rs qs
  r=$(field "ringlet-$test-$n" "$bytes" "$col")
  m=$(field "mpi-tcp-$test-$n" "$bytes" "$col")
  s=$([[ "$with_shm" == 1 ]] && field "mpi-shm-$test-$n" "$bytes" "$col" || echo -)
  rs=$([[ "$with_shm" == 1 ]] && field "ringlet-shm-$test-$n" "$bytes" "$col" || echo -)
  if [[ "$test" == bw ]]; then q=$(ratio "$r" "$m"); qs=$(ratio "$rs" "$s"); else q=$(ratio "$m" "$r"); qs=$(ratio "$s" "$rs"); fi
  w=$(field "ringlet-$test-$n" "$bytes" 8)/$(field "mpi-tcp-$test-$n" "$bytes" 8)
  [[ "$w" == 0/0 ]] || status=1
  printf '  %-9s %5s %10s %12s %12s %8s %12s %12s %8s %8s\n' "$test" "$n" "$label" "$r" "$m" "$q" "$rs" "$s" "$qs" "$w"
}
for n in $ranks_list; do
  if [[ "$mode" != latency ]]; then
    row bw "$n" 67108864 7 64MiB
    row bw "$n" 268435456 7 256MiB
  fi
  [[ "$mode" != bandwidth ]] && row lat "$n" 8 5 8B
done
echo "#"
echo "# ringlet_tcp: RINGLET_SHM=0 (TCP ring / recursive doubling); ringlet_shm: default (shared memory)."
echo "# bw rows: busbw in GB/s, ratio = ringlet / mpi (goal >= 1, aim 1.2)."
echo "# lat rows: time in us, ratio = mpi / ringlet (goal >= 1: ringlet no slower)."
echo "# wrong: #wrong of ringlet / of mpi_tcp (n/a: the run failed; see $out_dir)."
exit $status
