#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The soak (suite 'soak', docs/reliability.md).

Usage: soak.py CHAOS_RANK RINGLET_RUN [--seconds T] [--warmup W] [--transports shm,tcp]
               [--seed S]

For each transport (shm: shared memory on one node; tcp: RINGLET_SHM=0), 4 ranks under
ringlet-run run random collectives of random kinds, types and log-uniform sizes (0 B to
4 MiB), each result checked against the exact reference, for T seconds (default
$RINGLET_SOAK_SECONDS, else 150; warm-up included), sampled from W (default 1000) warm-up
collectives on. Fails on any wrong result, when a rank's resident memory
at the end exceeds its value after the warm-up by more than 10%, or when its number of open
file descriptors differs. Prints each rank's memory and descriptor curve.
"""
import argparse
import os
import random
import re
import subprocess
import sys
import time


def soak(args, transport, seed):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGLET_")}
    env["RINGLET_TIMEOUT"] = "60"
    if transport == "tcp":
        env["RINGLET_SHM"] = "0"
    cmd = [args.run, "-np", "4", "--timeout", str(int(args.seconds * 4 + 120)), "--tag-output",
           "-x", "RINGLET_TIMEOUT"] + (["-x", "RINGLET_SHM"] if transport == "tcp" else []) + [
           "--", args.chaos, "--soak", "--seed", str(seed), "--seconds", str(args.seconds),
           "--warmup", str(args.warmup)]
    t0 = time.time()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=args.seconds * 4 + 180)
    wall = time.time() - t0
    samples = {r: [] for r in range(4)}
    done = {}
    problems = []
    for line in p.stdout.splitlines():
        m = re.match(r"^\[1,(\d+)\]<std\w+>:\s?(.*)$", line)
        if not m:
            continue
        r, text = int(m.group(1)), m.group(2)
        s = re.match(r"^SAMPLE n=(\d+) rss_kib=(\d+) fds=(\d+)", text)
        if s:
            samples[r].append((int(s.group(1)), int(s.group(2)), int(s.group(3))))
        d = re.match(r"^SOAK done rank=\d+ n=(\d+) wrong=(\d+)", text)
        if d:
            done[r] = (int(d.group(1)), int(d.group(2)))
        if text.startswith(("WRONG", "ERROR", "OTHER")):
            problems.append(f"rank {r}: {text}")
    if p.returncode != 0:
        problems.append(f"ringlet-run exited with {p.returncode}")
    print(f"soak {transport}: seed {seed}, {wall:.0f} s, ringlet-run status {p.returncode}")
    for r in range(4):
        if r not in done:
            problems.append(f"rank {r} did not finish")
            continue
        n, wrong = done[r]
        if wrong:
            problems.append(f"rank {r}: {wrong} wrong elements")
        ss = samples[r]
        if len(ss) < 2:
            problems.append(f"rank {r}: {len(ss)} samples")
            continue
        base, last = ss[0], ss[-1]
        growth = (last[1] - base[1]) / base[1]
        step = max(1, len(ss) // 8)
        curve = " ".join(f"{x[0]}:{x[1] // 1024}MiB/{x[2]}fd" for x in ss[::step] + [ss[-1]])
        print(f"  rank {r}: {n} collectives, 0 wrong; rss {base[1]} -> {last[1]} KiB "
              f"({growth * 100:+.1f}%), fds {base[2]} -> {last[2]}; curve {curve}")
        if growth > 0.10:
            problems.append(f"rank {r}: resident memory grew {growth * 100:.1f}% after warm-up")
        if last[2] != base[2]:
            problems.append(f"rank {r}: open descriptors {base[2]} -> {last[2]}")
    for x in problems:
        print("  FAIL:", x)
    if problems:
        print("--- the last output lines")
        print("\n".join(p.stdout.splitlines()[-15:]))
    return not problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("chaos")
    ap.add_argument("run")
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("RINGLET_SOAK_SECONDS", "150")))
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--transports", default="shm,tcp")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    ok = True
    for transport in args.transports.split(","):
        ok = soak(args, transport, seed) and ok
    print("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
