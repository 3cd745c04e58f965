#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# timeline_test.sh: a 2-rank run with RINGLET_TIMELINE writes one file per rank, and
# tools/ringlet-timeline merges them into valid Chrome trace JSON with the expected lanes
# (a process per rank; the world communicator, the reducer's dup() and its reducer thread)
# and events (collectives, fingerprint exchange, ring reduce-scatter and allgather, bucket
# packing and issue, the reducer's wait).
# Usage: timeline_test.sh RINGLET_RUN TRAIN_FASHION_MNIST RINGLET_TIMELINE_TOOL. Exit 77 without data.
set -uo pipefail
run_exe="${1:?}" train="${2:?}" tool="${3:?}"
data="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
[[ -r "$data/train-images-idx3-ubyte.gz" ]] || { echo "SKIP: no Fashion-MNIST"; exit 77; }
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
# TCP between the two local ranks (RINGLET_SHM=0), so that the ring's steps appear.
if ! RINGLET_TIMELINE="$dir/tl" RINGLET_SHM=0 timeout 120 "$run_exe" -np 2 --timeout 100 \
    "$train" --model mlp --steps 3 --epochs 1 --limit 1000 --test-limit 200 --data "$data"; then
  echo "FAIL: the training run failed"; exit 1
fi
ls -l "$dir"
[[ -s "$dir/tl.0.json" && -s "$dir/tl.1.json" ]] || { echo "FAIL: no per-rank files"; exit 1; }
/usr/bin/python3 "$tool" merge "$dir/tl" -o "$dir/trace.json" || { echo "FAIL: merge"; exit 1; }
/usr/bin/python3 "$tool" summary "$dir/tl" | head -40
/usr/bin/python3 - "$dir/trace.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
ev = t["traceEvents"]
bad = []
procs = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
if sorted(procs) != [0, 1]:
    bad.append(f"processes {procs}")
for r in (0, 1):
    threads = {e["args"]["name"] for e in ev
               if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == r}
    for want in ("comm", "comm.1", "comm.1 reducer"):
        if want not in threads:
            bad.append(f"rank {r}: no thread {want!r} (have {sorted(threads)})")
    xs = [e for e in ev if e["ph"] == "X" and e["pid"] == r]
    names = {e["name"] for e in xs}
    for want in ("allreduce", "broadcast", "allgather", "dup", "fingerprint exchange",
                 "ring reduce-scatter", "ring allgather", "reducer wait", "bucket 0 issue",
                 "pack fc1.weight", "bucket 0 unpack"):
        if want not in names:
            bad.append(f"rank {r}: no event {want!r}")
    for e in xs:
        if not (e["dur"] >= 0 and e["ts"] >= 0):
            bad.append(f"bad times {e}")
            break
    # Every phase lies inside a collective of its thread.
    colls = [e for e in xs if e["cat"] == "collective"]
    for p in (e for e in xs if e["cat"] == "phase"):
        if not any(c["tid"] == p["tid"] and c["ts"] - 0.01 <= p["ts"] and
                   p["ts"] + p["dur"] <= c["ts"] + c["dur"] + 0.01 for c in colls):
            bad.append(f"rank {r}: phase outside any collective: {p}")
            break
    # The reducer's allreduces carry its buckets: 3 steps x 4 buckets at least.
    red = [e for e in colls if e["name"] == "allreduce" and e["args"].get("outcome") == "ok"]
    if len(red) < 12:
        bad.append(f"rank {r}: only {len(red)} allreduces")
if bad:
    print("FAIL:\n  " + "\n  ".join(bad))
    sys.exit(1)
print(f"ok: {len(ev)} trace events, valid, with the expected lanes and events")
PY
