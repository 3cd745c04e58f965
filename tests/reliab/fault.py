#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Randomized fault injection (suite 'fault', docs/reliability.md).

Usage: fault.py CHAOS_RANK RINGLET_RUN TESTHOSTS [--trials N] [--seed S] [--replay SEED]
                [--workers W] [--kinds k,k] [--budget SECONDS]

Each trial starts 4 ranks of tests/reliab/chaos_rank (random collectives, every result
checked) with RINGLET_TIMEOUT=5, waits until every rank is inside its collectives, waits a
random moment, and injects one fault into one random rank (rank 0, the store's server,
included):
  kill      SIGKILL                     exit      returns from main before collective N
  reset     `ss -K` in the victim's host (every TCP connection of that host is reset)
  stop      SIGSTOP                     linkdown  the victim host's link set down
  crawl     tbf rate 8kbit on the victim host's link (both directions)
over one of: lo-shm (4 ranks on loopback, shared memory), lo-tcp (RINGLET_SHM=0), ns-2x2 and
ns-4x1 (test hosts rlf-h1..8, 198.18.100.0/24: shared memory inside a host, TCP between).
reset, linkdown and crawl need test hosts. A quarter of the loopback trials run under
ringlet-run instead of by hand.

Invariants, per trial: no rank reports success or a wrong result; every rank but the victim
raises a ringlet::Error (exit 3) within the timeout plus 5 s of the fault; for kill, exit and
reset the error names the lost rank (a rank of the victim host for reset); for stop, linkdown
and crawl it is timeout or peer_lost, and at least one survivor's report names the culprit
(a rank of the victim host); under ringlet-run the job exits non-zero; nothing of the trial's
ranks is left in /dev/shm. Every trial prints its seed; `--replay SEED` runs that trial alone.
Exit status: 0 all trials held, 1 a violated invariant, 77 skipped (not root: loopback only
would not cover the kinds; run with --kinds kill,exit,stop to run loopback trials anyway).
"""
import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT = 5
SLACK = 5
PREFIX = "rlf"
NET = "198.18.100"
KINDS = ["kill", "exit", "reset", "stop", "linkdown", "crawl"]
TOPOS = {"lo-shm": [4], "lo-tcp": [4], "ns-2x2": [2, 2], "ns-4x1": [1, 1, 1, 1]}
NEEDS_HOSTS = {"reset", "linkdown", "crawl"}


def sh(*cmd, check=False):
    return subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=check, timeout=30)


class Trial:
    def __init__(self, seed, worker, kinds, have_hosts):
        r = random.Random(seed)
        self.seed = seed
        self.kind = r.choice(kinds)
        topos = [t for t in TOPOS if have_hosts or t.startswith("lo")]
        if self.kind in NEEDS_HOSTS:
            topos = [t for t in topos if t.startswith("ns")]
        self.topo = r.choice(topos)
        self.slots = TOPOS[self.topo]
        self.n = sum(self.slots)
        self.victim = r.randrange(self.n)
        self.delay = r.uniform(0.05, 0.8)
        self.exit_at = r.randrange(1, 40)
        self.data_seed = r.randrange(1 << 30)
        self.port = r.randrange(20000, 30000)
        self.under_run = self.topo.startswith("lo") and r.random() < 0.25
        self.worker = worker
        self.first_host = 1 + 4 * worker
        # rank -> (host index into slots, local rank)
        self.place = []
        for h, s in enumerate(self.slots):
            for j in range(s):
                self.place.append((h, j))
        self.log = []

    def host_name(self, h):
        return f"{PREFIX}-h{self.first_host + h}"

    def host_addr(self, h):
        return f"{NET}.{self.first_host + h}"

    def victim_host(self):
        return self.place[self.victim][0]

    def victim_host_ranks(self):
        return [r for r in range(self.n) if self.place[r][0] == self.victim_host()]

    def name(self):
        how = "ringlet-run" if self.under_run else "by hand"
        return (f"seed={self.seed} kind={self.kind} topo={self.topo} victim={self.victim} "
                f"({how})")


def parse_lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


class Runner:
    def __init__(self, args):
        self.args = args
        self.results = []  # (kind, topo, ok, fault_to_last_error_s or None, message)
        self.lock = threading.Lock()
        self.failed = False

    # -- the faults ----------------------------------------------------------------------
    def inject(self, t, pids):
        k = t.kind
        if k == "kill":
            os.kill(pids[t.victim], signal.SIGKILL)
        elif k == "stop":
            os.kill(pids[t.victim], signal.SIGSTOP)
        elif k == "reset":
            sh("ip", "netns", "exec", t.host_name(t.victim_host()), "ss", "-K", "-t",
               "state", "established")
        elif k == "linkdown":
            sh("ip", "-n", t.host_name(t.victim_host()), "link", "set", "eth0", "down")
        elif k == "crawl":
            h = t.host_name(t.victim_host())
            sh("tc", "-n", h, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "8kbit",
               "burst", "2kb", "latency", "50ms")
            sh("tc", "qdisc", "replace", "dev", h + "-v", "root", "tbf", "rate", "8kbit",
               "burst", "2kb", "latency", "50ms")

    def restore(self, t):
        if t.kind in ("linkdown", "crawl"):
            h = t.host_name(t.victim_host())
            sh("ip", "-n", h, "link", "set", "eth0", "up")
            sh("tc", "-n", h, "qdisc", "del", "dev", "eth0", "root")
            sh("tc", "qdisc", "del", "dev", h + "-v", "root")

    # -- one trial -----------------------------------------------------------------------
    def start_ranks(self, t, work):
        job = "%016x" % random.Random(t.seed ^ 0x5bd1e995).getrandbits(64)
        base = {k: v for k, v in os.environ.items() if not k.startswith("RINGLET_")}
        cmd = [self.args.chaos, "--seed", str(t.data_seed), "--seconds", "40"]
        procs = []
        if t.under_run:
            env = dict(base, RINGLET_TIMEOUT=str(TIMEOUT))
            if t.topo == "lo-tcp":
                env["RINGLET_SHM"] = "0"
            # ringlet-run passes the same command to every rank: the victim of an exit trial
            # finds its --exit-at through CHAOS_EXIT_RANK.
            full = [self.args.run, "-np", str(t.n), "--timeout", "40", "-x",
                    "RINGLET_TIMEOUT", "--tag-output", "--", "sh", "-c",
                    'if [ "$RINGLET_RANK" = "$CHAOS_EXIT_RANK" ]; then exec "$@" --exit-at '
                    '"$CHAOS_EXIT_AT"; else exec "$@"; fi', "sh"] + cmd
            if t.topo == "lo-tcp":
                full[5:5] = ["-x", "RINGLET_SHM"]
            if t.kind == "exit":
                env.update(CHAOS_EXIT_RANK=str(t.victim), CHAOS_EXIT_AT=str(t.exit_at))
            out = open(os.path.join(work, "run.out"), "w")
            p = subprocess.Popen(full, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            procs.append(p)
            return procs, job
        for r in range(t.n):
            h, j = t.place[r]
            env = dict(base, RINGLET_RANK=str(r), RINGLET_SIZE=str(t.n),
                       RINGLET_LOCAL_RANK=str(j), RINGLET_LOCAL_SIZE=str(t.slots[h]),
                       RINGLET_JOB_ID=job, RINGLET_TIMEOUT=str(TIMEOUT))
            c = list(cmd)
            if t.kind == "exit" and r == t.victim:
                c += ["--exit-at", str(t.exit_at)]
            if t.topo.startswith("lo"):
                env.update(RINGLET_ADDR=f"127.0.0.1:{t.port}", RINGLET_NODE_ID="lo")
                if t.topo == "lo-tcp":
                    env["RINGLET_SHM"] = "0"
            else:
                env.update(RINGLET_ADDR=f"{t.host_addr(0)}:{t.port}",
                           RINGLET_NODE_ID=t.host_name(h))
                c = ["ip", "netns", "exec", t.host_name(h)] + c
            out = open(os.path.join(work, f"{r}.out"), "w")
            procs.append(subprocess.Popen(c, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        return procs, job

    def rank_lines(self, t, work):
        """rank -> its output lines."""
        if not t.under_run:
            return {r: parse_lines(os.path.join(work, f"{r}.out")) for r in range(t.n)}
        lines = {r: [] for r in range(t.n)}
        for line in parse_lines(os.path.join(work, "run.out")):
            m = re.match(r"^\[1,(\d+)\]<std\w+>:\s?(.*)$", line)
            if m and int(m.group(1)) in lines:
                lines[int(m.group(1))].append(m.group(2))
        return lines

    def trial_once(self, t, work):
        procs, job = self.start_ranks(t, work)
        pids = {}
        deadline = time.time() + 20
        exit_wall = None
        while time.time() < deadline:
            lines = self.rank_lines(t, work)
            for r, ls in lines.items():
                for line in ls:
                    m = re.match(r"^READY rank=(\d+) pid=(\d+)", line)
                    if m:
                        pids[int(m.group(1))] = int(m.group(2))
            if len(pids) == t.n or any(p.poll() is not None for p in procs):
                break
            time.sleep(0.05)
        if len(pids) != t.n:
            # A port in use or a slow start: not a fault of the library unless it repeats.
            for p in procs:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
            return None, "the ranks did not all start: " + " | ".join(
                " / ".join(ls[-2:]) for ls in self.rank_lines(t, work).values())
        time.sleep(t.delay)
        t_fault = time.time()
        if t.kind != "exit":
            self.inject(t, pids)
        survivors = [r for r in range(t.n) if r != t.victim]
        limit = TIMEOUT + SLACK
        # Wait for the survivors (by hand: their processes; ringlet-run: the job).
        end = t_fault + limit + 3
        if t.under_run:
            try:
                procs[0].wait(timeout=max(0.1, end - time.time()) + 8)
            except subprocess.TimeoutExpired:
                pass
        else:
            by_rank = dict(enumerate(procs))
            while time.time() < end and any(by_rank[r].poll() is None for r in survivors):
                time.sleep(0.05)
        statuses = {r: p.poll() for r, p in enumerate(procs)}
        # End whatever is left (the stopped victim included), then restore the network.
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
                os.killpg(p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for p in procs:
            p.wait()
        self.restore(t)
        lines = self.rank_lines(t, work)
        problems = []
        if t.kind == "exit":
            for line in lines[t.victim]:
                m = re.match(r"^EXITING rank=\d+ .* wall_ms=(\d+)", line)
                if m:
                    exit_wall = int(m.group(1)) / 1000.0
            if exit_wall is None:
                problems.append(f"the victim rank {t.victim} did not reach collective "
                                f"{t.exit_at}")
                exit_wall = t_fault
            t_fault = exit_wall
        for r, ls in lines.items():
            for line in ls:
                if line.startswith(("WRONG", "OTHER", "CHAOS done")):
                    problems.append(f"rank {r}: {line}")
        if t.under_run and statuses.get(0) in (0, None):
            problems.append(f"ringlet-run exited with {statuses.get(0)}")
        if not t.under_run:
            for r in survivors:
                if statuses[r] is None:
                    problems.append(f"rank {r} still running {limit + 3} s after the fault")
                elif statuses[r] == 0:
                    problems.append(f"rank {r} exited 0")
        times = []
        named = False
        victims = [t.victim] if t.kind in ("kill", "exit", "stop") else t.victim_host_ranks()
        for r in survivors:
            errs = [line for line in lines[r] if line.startswith("ERROR ")]
            if not errs:
                # Under ringlet-run the supervisor ends the job when the first rank fails:
                # a survivor may be terminated before its own error (one error is required).
                if not t.under_run:
                    problems.append(f"rank {r} raised no ringlet::Error; its last lines: "
                                    f"{lines[r][-2:]}")
                continue
            m = re.match(r"^ERROR code=(\w+) ranks=([-\d,]+) wall_ms=(\d+) rank=-?\d+ what=(.*)$",
                         errs[0])
            if not m:
                problems.append(f"rank {r}: unparsed {errs[0]}")
                continue
            code, ranks, wall, what = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            dt = wall / 1000.0 - t_fault
            times.append(dt)
            if dt > limit:
                problems.append(f"rank {r}: error {dt:.1f} s after the fault (limit {limit} s)")
            listed = set(int(x) for x in ranks.split(",") if x not in ("-", ""))
            # The ranks it names: its list, and "rank N" / "peer N" in its text (an error a
            # peer relayed lists the reporter; its text names the rank that peer lost).
            names = listed | set(int(x) for x in re.findall(r"\b(?:ranks?|peer) (\d+)", what))
            names |= set(int(x) for x in re.findall(r"\branks? \d+(?:,| and) (\d+)", what))
            if r in t.victim_host_ranks() and t.kind in NEEDS_HOSTS:
                # A rank on the victim host: it lost every peer off the host.
                pass
            elif t.kind in ("kill", "exit", "reset"):
                if not names & set(victims):
                    problems.append(f"rank {r}'s error does not name rank(s) {victims}: "
                                    f"{errs[0]}")
            if t.kind in ("stop", "linkdown", "crawl"):
                if code not in ("timeout", "peer_lost"):
                    problems.append(f"rank {r}: {code}, not timeout or peer_lost: {errs[0]}")
            if names & set(victims):
                named = True
        diagnosis = ""
        if t.under_run:
            for line in parse_lines(os.path.join(work, "run.out")):
                if line.startswith("ringlet-run: diagnosis: "):
                    diagnosis = line
            # The supervisor's one-line diagnosis names the culprit too.
            dn = set(int(x) for x in re.findall(r"\brank (\d+)", diagnosis.split(" wait")[-1]))
            if dn & set(victims):
                named = True
        # ringlet-run ends the job at once when a rank is killed (exit 137): the survivors
        # are terminated, and need not have raised an error of their own first.
        if t.under_run and not times and t.kind != "kill":
            problems.append("no survivor raised a ringlet::Error before the job ended")
        if t.kind in ("stop", "linkdown", "crawl") and not named:
            problems.append(f"no survivor's report names rank(s) {victims}")
        # Nothing of these ranks left in /dev/shm.
        time.sleep(0.05)
        allpids = set(pids.values())
        left = [f for f in os.listdir("/dev/shm") if f.startswith("ringlet-") and
                f.rsplit("-", 1)[-1].isdigit() and int(f.rsplit("-", 1)[-1]) in allpids]
        if left:
            problems.append(f"/dev/shm holds {left}")
        last = max(times) if times else None
        if problems:
            firsts = [f"rank {r}: " + next((x for x in lines[r] if x.startswith("ERROR ")), "-")
                      for r in survivors]
            problems.append("errors: " + " | ".join(firsts) + (f" | {diagnosis}" if diagnosis
                                                                 else ""))
        return (not problems, last, times), "; ".join(problems)

    def trial(self, t):
        with tempfile.TemporaryDirectory(prefix="ringlet-fault-") as work:
            t0 = time.time()
            res, msg = self.trial_once(t, work)
            if res is None:
                t.port = 20000 + (t.port + 4999) % 10000
                res, msg = self.trial_once(t, work)
            if res is None:
                ok, last = False, None
            else:
                ok, last, _ = res
            took = time.time() - t0
        with self.lock:
            self.results.append((t.kind, t.topo, ok, last))
            state = "ok" if ok else "FAIL"
            lat = f" last error {last:.2f} s after the fault" if last is not None else ""
            print(f"{state}: trial {t.name()}{lat} ({took:.1f} s){': ' + msg if msg else ''}",
                  flush=True)
            if not ok:
                self.failed = True

    def hosts(self, cmd, *extra):
        env = dict(os.environ, RL_TESTHOSTS_PREFIX=PREFIX, RL_TESTHOSTS_NET=NET)
        return subprocess.run(["bash", self.args.testhosts, cmd, *extra], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=120)


def summarize(results, wall):
    print(f"fault: {len(results)} trials in {wall:.0f} s")
    print(f"{'kind':9} {'trials':>6} {'held':>5} {'median s':>9} {'max s':>6}   "
          "(fault to the last survivor's error)")
    for k in KINDS:
        rs = [x for x in results if x[0] == k]
        if not rs:
            continue
        ts = [x[3] for x in rs if x[3] is not None]
        med = f"{statistics.median(ts):.2f}" if ts else "-"
        mx = f"{max(ts):.2f}" if ts else "-"
        print(f"{k:9} {len(rs):6} {sum(1 for x in rs if x[2]):5} {med:>9} {mx:>6}")
    topos = sorted(set(x[1] for x in results))
    print("by topology: " + ", ".join(f"{tp} {sum(1 for x in results if x[1] == tp)}"
                                      for tp in topos))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("chaos")
    ap.add_argument("run")
    ap.add_argument("testhosts")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--replay", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--budget", type=float, default=360)
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    for v in [k for k in os.environ if k.startswith("RINGLET_")]:
        del os.environ[v]
    have_hosts = os.geteuid() == 0 and subprocess.run(
        ["ip", "netns", "list"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL).returncode == 0
    if not have_hosts:
        kinds = [k for k in kinds if k not in NEEDS_HOSTS]
        if not kinds or args.kinds == ",".join(KINDS):
            print("SKIP: fault injection needs root and `ip netns` for test hosts")
            return 77
    runner = Runner(args)
    if have_hosts:
        up = runner.hosts("up", str(4 * args.workers), "none")
        if up.returncode != 0:
            print("FAIL: testhosts.sh up:", up.stdout)
            return 1
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: sys.exit(143))
    try:
        master = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
        if args.replay is not None:
            seeds = [args.replay]
        else:
            print(f"fault: master seed {master} (rerun all: --seed {master}; one trial: "
                  "--replay SEED)", flush=True)
            mr = random.Random(master)
            seeds = [mr.randrange(1 << 31) for _ in range(args.trials)]
        start = time.time()
        todo = list(seeds)
        todo_lock = threading.Lock()

        def work(w):
            while True:
                with todo_lock:
                    if not todo or time.time() - start > args.budget:
                        return
                    s = todo.pop(0)
                runner.trial(Trial(s, w, kinds, have_hosts))

        threads = [threading.Thread(target=work, args=(w,)) for w in range(args.workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.time() - start
        summarize(runner.results, wall)
        if len(runner.results) < len(seeds):
            print(f"FAIL: only {len(runner.results)} of {len(seeds)} trials ran within the "
                  f"budget of {args.budget:.0f} s")
            return 1
        if runner.failed:
            print("FAILED")
            return 1
        print("PASSED")
        return 0
    finally:
        if have_hosts:
            runner.hosts("down")


if __name__ == "__main__":
    sys.exit(main())
