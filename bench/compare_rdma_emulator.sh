#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# compare_rdma_emulator.sh BUILD [NP] [RUNS]: allreduce_perf over tcp and over rdma on the
# emulated device (tests/verbs_emulator), alternating, RINGLET_SHM=0, RUNS runs each; prints
# the median busbw per size and the ratio rdma/tcp. A sanity figure only: the emulator copies
# every byte on the same cores and keeps one message in flight per queue pair.
set -euo pipefail
build="${1:?usage: compare_rdma_emulator.sh BUILD [NP] [RUNS]}" np="${2:-2}" runs="${3:-5}"
emu="$build/tests/verbs_emulator/libringlet_verbs_emu.so"
[[ -f "$emu" ]] || { echo "no emulator at $emu (configure with -Dtests=enabled and libibverbs-dev)"; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "# np=$np runs=$runs load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((i = 0; i < runs; i++)); do
  for t in tcp rdma; do
    RINGLET_SHM=0 RINGLET_TRANSPORT=$t RINGLET_IBVERBS_LIBRARY="$emu" timeout 300 \
      "$build/tools/ringlet-run" -np "$np" "$build/bench/allreduce_perf" -b 64K -e 64M -f 4 -n 20 -w 5 \
      | awk '/^ +[0-9]+ +[0-9]+ +float/ {print $1, $7, $8}' >"$out/$t.$i"
  done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" "$runs" <<'PY'
import statistics, sys
d, runs = sys.argv[1], int(sys.argv[2])
bw = {}
for t in ("tcp", "rdma"):
    for i in range(runs):
        for line in open(f"{d}/{t}.{i}"):
            size, busbw, wrong = line.split()
            assert wrong == "0", "wrong elements"
            bw.setdefault((t, int(size)), []).append(float(busbw))
print(f"{'size(B)':>10} {'tcp busbw':>10} {'rdma-emu busbw':>15} {'ratio':>7}")
for size in sorted({s for (_, s) in bw}):
    a, b = statistics.median(bw[("tcp", size)]), statistics.median(bw[("rdma", size)])
    print(f"{size:>10} {a:>10.3f} {b:>15.3f} {b / a:>7.2f}")
PY
