#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Where recursive doubling stops beating the ring over TCP: times both algorithms at each
# size for several rank counts (RINGLET_SHM=0, so both run over TCP) and prints the largest
# size at which recursive doubling is still faster.
# usage: bench/crossover.sh BUILD [RANKS...]   (default ranks: 2 3 4 8)
set -uo pipefail
build=${1:?usage: bench/crossover.sh BUILD [RANKS...]}
shift
ranks=${*:-2 3 4 8}
run=$build/tools/ringlet-run
perf=$build/bench/allreduce_perf
out=$(mktemp -d /tmp/ringlet-crossover.XXXXXX)
export GLIBC_TUNABLES=glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184
echo "# crossover of recursive doubling and ring over TCP loopback, $(date -u '+%F %T UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '# %5s %10s %12s %12s\n' ranks bytes rd_us ring_us
for n in $ranks; do
  for algo in recursive_doubling ring; do
    RINGLET_SHM=0 timeout 300 "$run" -np "$n" --timeout 280 "$perf" --algo "$algo" \
      -b 1K -e 1M -f 2 -n 200 -w 20 -c 0 >"$out/$algo-$n.txt" 2>&1
  done
  paste <(awk '!/^#/ && NF == 8 {print $1, $5}' "$out/recursive_doubling-$n.txt") \
        <(awk '!/^#/ && NF == 8 {print $5}' "$out/ring-$n.txt") |
    awk -v n="$n" '{ printf "  %5d %10d %12.1f %12.1f%s\n", n, $1, $2, $3, ($2 <= $3 ? "  rd" : "  ring") }'
done
echo "# outputs in $out"
