#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# hier_test.sh: hierarchical and flat allreduce across 2-4 namespaced test hosts, and a killed rank.
# Usage: hier_test.sh RINGLET_RUN HIER_CHECK. Exit 77 (skip) when not root or without
# `ip netns`; the test hosts (set "rlh", 198.18.253.0/24, links not shaped) are always removed
# (trap EXIT), also on failure. Every command is bounded by `timeout`.
set -uo pipefail

run_exe="${1:?usage: hier_test.sh RINGLET_RUN HIER_CHECK}"
check_exe="${2:?usage: hier_test.sh RINGLET_RUN HIER_CHECK}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
testhosts="$here/testhosts.sh"

skip() {
  echo "SKIP: $*"
  exit 77
}
[[ $EUID -eq 0 ]] || skip "needs root to create network namespaces"
command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
command -v unshare >/dev/null || skip "unshare (util-linux) is not installed"
ip netns list >/dev/null 2>&1 || skip "\`ip netns\` is unavailable"

# A set of our own, so that test hosts someone else brought up are left alone.
export RL_TESTHOSTS_PREFIX=rlh RL_TESTHOSTS_NET=198.18.253
h=rlh-h
work="$(mktemp -d /tmp/ringlet-hier-test.XXXXXX)"
pids_to_reap=()
cleanup() {
  local p
  for p in "${pids_to_reap[@]}"; do kill -9 "$p" 2>/dev/null; done
  "$testhosts" down
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM  # meson's timeout: still remove the hosts
trap 'exit 130' INT
"$testhosts" up 4 none || { echo "FAIL: testhosts.sh up"; exit 1; }
# RINGLET_* from the caller's environment must not leak into the ranks.
for v in $(env | sed -n 's/^\(RINGLET_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
shm_before="$(ls /dev/shm | grep ringlet | sort)"

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# hosts SLOTS...: the -H list for hosts rlh-h1.. with these slot counts.
hosts() {
  local i=1 s list=""
  for s in "$@"; do
    list+="${list:+,}$h$i:$s"
    i=$((i + 1))
  done
  echo "$list"
}

# run_check ALGO EXPECT "SLOTS..." [ARGS...]: hier_check on hosts with these slot counts, with
# RINGLET_ALGO=ALGO. EXPECT: "-" (no log check), "hier" (RINGLET_DEBUG=info; every rank must
# say that large allreduces are hierarchical, none may fall back), "fallback" (every rank must
# log that the hierarchy does not apply, and with ALGO=hier that it uses the flat ring).
run_check() {
  local algo=$1 expect=$2 slots=($3)
  shift 3
  local n=0 m=${#slots[@]} s j want="" name
  for s in "${slots[@]}"; do
    n=$((n + s))
    for ((j = 0; j < s; j++)); do want+="nodes $m local $j/$s"$'\n'; done
  done
  name="$algo -H $(hosts "${slots[@]}")${*:+ $*}"
  local env=(RINGLET_ALGO="$algo" RINGLET_TIMEOUT=60)
  [[ "$expect" != - ]] && env+=(RINGLET_DEBUG=info)
  local start=$SECONDS
  timeout --kill-after=5 120 env "${env[@]}" "$run_exe" -np "$n" -H "$(hosts "${slots[@]}")" \
    --launcher netns --timeout 100 "$check_exe" "$@" >"$work/out" 2>"$work/err"
  local status=$?
  local ok=1
  if [[ $status -ne 0 ]]; then
    fail "$name: exit status $status"
    ok=0
  fi
  local got
  got="$(sed -n 's/^hier_check rank [0-9]*\/[0-9]* \(nodes [0-9]* local [0-9]*\/[0-9]*\): .*: OK$/\1/p' \
           "$work/out" | sort)"
  if [[ "$got" != "$(printf '%s' "$want" | sort)" ]]; then
    fail "$name: expected one OK line per rank with ($(printf '%s' "$want" | sort | uniq -c |
          tr -s ' \n' ' ')), got ($(sort <<<"$got" | uniq -c | tr -s ' \n' ' '))"
    ok=0
  fi
  case "$expect" in
    hier)
      local c f
      c=$(grep -c 'large allreduces are hierarchical' "$work/err")
      f=$(grep -c 'does not allow it\|does not apply' "$work/err")
      [[ $c -eq $n && $f -eq 0 ]] ||
        { fail "$name: $c of $n ranks logged the hierarchical path, $f a fallback"; ok=0; }
      ;;
    fallback)
      local c d
      c=$(grep -c 'the hierarchical allreduce does not apply, the flat ring' "$work/err")
      d=$(grep -c 'does not allow it; using the flat ring' "$work/err")
      [[ $c -eq $n ]] || { fail "$name: $c of $n ranks logged that the hierarchy does not apply"; ok=0; }
      if [[ "$algo" == hier && $d -ne $n ]]; then
        fail "$name: $d of $n ranks logged the RINGLET_ALGO=hier fallback"
        ok=0
      fi
      ;;
  esac
  if ((ok)); then
    echo "ok: $name ($n ranks, $((SECONDS - start)) s)"
  else
    echo "--- stdout"; tail -n 20 "$work/out"; echo "--- stderr"; grep -v INFO "$work/err" | tail -n 20
  fi
}

# Correctness: every DataType x {sum, max, avg} at 0, 1, 4097, 2^20+3 elements and 16 MiB.
run_check hier hier "2 2"
run_check ring - "2 2"
run_check auto - "2 2"
run_check auto - "1 1"
run_check ring - "1 1"
run_check hier fallback "1 1 1 1"
run_check auto fallback "1 1 1 1"
run_check hier fallback "3 2"
run_check auto fallback "3 2"
run_check ring - "1 3"
run_check hier hier "2 2 2"
run_check auto - "3 3"
run_check hier hier "4 4"
run_check ring - "4 4"
run_check auto - "4 4"
run_check hier hier "3 3 3"
run_check auto - "2 1 3 4"
run_check hier hier "4 4 4 4"
run_check ring - "4 4 4 4" --no-big

# kill_test ALGO VICTIM "SLOTS...": ranks started by hand (not through ringlet-run, which
# would end the job itself) loop 64 MiB allreduces with RINGLET_TIMEOUT=20; VICTIM gets
# SIGKILL in the middle of one. Every other rank must print "ERROR ..." and exit non-zero
# within the deadline plus a little, and no shared-memory segment of the job may remain.
kill_test_once() {
  local algo=$1 victim=$2 slots=($3)
  local n=0 s i j r=0 name job port
  for s in "${slots[@]}"; do n=$((n + s)); done
  name="kill rank $victim of $algo -H $(hosts "${slots[@]}")"
  job="$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  # Below the ephemeral range (32768-60999), so that no socket left by an earlier run on the
  # test host holds it.
  port=$((20000 + RANDOM % 10000))
  local pids=() d="$work/kill-$algo-$victim"
  mkdir -p "$d"
  for ((i = 0; i < ${#slots[@]}; i++)); do
    for ((j = 0; j < slots[i]; j++)); do
      env RINGLET_RANK=$r RINGLET_SIZE=$n RINGLET_LOCAL_RANK=$j RINGLET_LOCAL_SIZE=${slots[i]} \
        RINGLET_ADDR=198.18.253.1:$port RINGLET_JOB_ID="$job" RINGLET_NODE_ID="$h$((i + 1))" \
        RINGLET_TIMEOUT=20 RINGLET_ALGO="$algo" \
        timeout --kill-after=5 90 ip netns exec "$h$((i + 1))" "$check_exe" --loop 80 \
        >"$d/$r.out" 2>"$d/$r.err" &
      pids[r]=$!
      pids_to_reap+=($!)
      r=$((r + 1))
    done
  done
  local deadline=$((SECONDS + 60)) looping=0
  while ((SECONDS < deadline)); do
    looping=$(cat "$d"/*.out | grep -c '^LOOPING')
    ((looping == n)) && break
    sleep 0.2
  done
  if ((looping != n)); then
    echo "note: $name: only $looping of $n ranks started looping; stderr: $(tail -q -n 2 "$d"/*.err | tr '\n' ' ')"
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    { wait; } 2>/dev/null
    return 2
  fi
  local vpid
  vpid="$(sed -n 's/^LOOPING rank=[0-9]* pid=\([0-9]*\)$/\1/p' "$d/$victim.out")"
  sleep 0.3  # inside the next allreduce
  kill -9 "$vpid"
  local t0=$SECONDS ok=1 limit=27  # RINGLET_TIMEOUT=20, plus a few seconds
  for ((r = 0; r < n; r++)); do
    ((r == victim)) && continue
    while kill -0 "${pids[r]}" 2>/dev/null && ((SECONDS - t0 <= limit)); do sleep 0.2; done
    if kill -0 "${pids[r]}" 2>/dev/null; then
      fail "$name: rank $r still running $limit s after the kill"
      ok=0
      continue
    fi
    { wait "${pids[r]}"; } 2>/dev/null
    local st=$?
    if [[ $st -eq 0 ]] || ! grep -q '^ERROR ' "$d/$r.err"; then
      fail "$name: rank $r exited with status $st and stderr: $(tail -n 3 "$d/$r.err")"
      ok=0
    fi
  done
  local took=$((SECONDS - t0))
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  { wait; } 2>/dev/null
  if ls /dev/shm | grep -q "ringlet-$job"; then
    fail "$name: /dev/shm still holds $(ls /dev/shm | grep "ringlet-$job" | tr '\n' ' ')"
    ok=0
  fi
  if ((ok)); then
    echo "ok: $name: every other rank failed within $took s:" \
         "$(cat "$d"/*.err | grep -o '^ERROR [a-z_]*' | sort | uniq -c | tr -s ' \n' ' ')"
  fi
}

# The job is started by hand on a random port: if it could not start (a port in use on a
# test host), try once more on another port before failing.
kill_test() {
  kill_test_once "$@"
  [[ $? -eq 2 ]] || return 0
  kill_test_once "$@"
  [[ $? -eq 2 ]] && fail "kill test $1 victim $2 on \"$3\": the ranks did not start twice"
  return 0
}

kill_test hier 3 "2 2" 2>/dev/null  # (bash reports the killed job on stderr)
kill_test ring 1 "1 1 1" 2>/dev/null

# Through ringlet-run: the job ends with the victim's 137 at once, and nothing is left.
timeout --kill-after=5 60 env RINGLET_TIMEOUT=20 RINGLET_ALGO=hier "$run_exe" -np 4 \
  -H "$(hosts 2 2)" --launcher netns --timeout 50 "$check_exe" --loop 40 \
  >"$work/rr.out" 2>"$work/rr.err" &
rr=$!
pids_to_reap+=($rr)
for ((i = 0; i < 300; i++)); do
  [[ $(grep -sc '^LOOPING' "$work/rr.out") -eq 4 ]] && break
  sleep 0.2
done
vpid="$(sed -n 's/^LOOPING rank=2 pid=\([0-9]*\)$/\1/p' "$work/rr.out")"
t0=$SECONDS
[[ -n "$vpid" ]] && kill -9 "$vpid"
{ wait "$rr"; } 2>/dev/null
status=$?
if [[ -n "$vpid" && $status -eq 137 && $((SECONDS - t0)) -le 10 ]]; then
  echo "ok: ringlet-run ended the job with 137 within $((SECONDS - t0)) s of the kill"
else
  fail "ringlet-run after a killed rank: status $status after $((SECONDS - t0)) s (victim '$vpid')"
fi

# No segment of any of these jobs is left in /dev/shm.
# Another job on this machine may hold a segment for a moment while it sets up: look twice.
new_segments() { comm -13 <(echo "$shm_before") <(ls /dev/shm | grep ringlet | sort); }
leftover="$(new_segments)"
[[ -z "$leftover" ]] || { sleep 2; leftover="$(comm -12 <(echo "$leftover") <(new_segments))"; }
[[ -z "$leftover" ]] || fail "/dev/shm holds new ringlet segments: $leftover"

if ((failures > 0)); then
  echo "FAILED: $failures checks"
  exit 1
fi
echo "PASSED"
