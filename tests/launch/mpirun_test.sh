#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# mpirun_test.sh: zero-configuration launches and job isolation.
# Usage: mpirun_test.sh ALLREDUCE_CHECK TESTHOSTS_SH
#
#  1. Open MPI's `mpirun -np 4` with no RINGLET_* variable: PMIx wire-up, exact results
#     (RINGLET_TEST_PMIX=0, a build without PMIx: the error names -Dpmix=enabled).
#  2. MPICH's `mpiexec.hydra -np 4`: PMI-1 wire-up on PMI_FD, exact results.
#  3. Job isolation: a rank of another job that reaches a job's store is refused with a
#     mismatch naming both identities, and the job it reached still completes.
#  4. As root with network namespaces: `mpirun -np 4` across 2 namespaced test hosts (set
#     "rlm", 198.18.249.0/24), no RINGLET_* variable; the hosts are removed on any exit.
# Parts whose program is missing (mpirun, mpiexec.hydra) or that need root are skipped with a
# note; the whole test is skipped (77) only when nothing could run.
set -uo pipefail

check="${1:?usage: mpirun_test.sh ALLREDUCE_CHECK TESTHOSTS_SH}"
testhosts="${2:?usage: mpirun_test.sh ALLREDUCE_CHECK TESTHOSTS_SH}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
pmix="${RINGLET_TEST_PMIX:-1}"  # read before the RINGLET_* variables are cleared
for v in $(env | sed -n 's/^\(RINGLET_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export RINGLET_TIMEOUT=30

failures=0
ran=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
expect_ok() {  # expect_ok NAME N OUTPUT [WIREUP]
  local name="$1" n="$2" text="$3" wireup="${4:-}"
  ran=$((ran + 1))
  if [[ "$(grep -c ': OK$' <<<"$text")" != "$n" ]] || grep -q FAILED <<<"$text"; then
    fail "$name: expected $n OK lines"
    tail -n 20 <<<"$text"
  elif [[ -n "$wireup" && "$(grep -c "wire-up $wireup," <<<"$text")" != "$n" ]]; then
    fail "$name: expected the $wireup wire-up on $n ranks"
    grep 'wire-up' <<<"$text" | head -n 4
  else
    echo "ok: $name ($(sed -n 's/.*create_ms \([0-9.]*\).*/\1/p' <<<"$text" | sort -n | tr '\n' ' ')ms in create())"
  fi
}

# 1. mpirun on this machine (without PMIx in the build: the error must say how to fix it).
if command -v mpirun.openmpi >/dev/null && [[ "$pmix" != 1 ]]; then
  o="$(timeout 60 mpirun.openmpi -np 2 "$check" 2>&1)"
  ran=$((ran + 1))
  if grep -q -- '-Dpmix=enabled' <<<"$o"; then
    echo "ok: mpirun without PMIx in the build names -Dpmix=enabled"
  else
    fail "mpirun without PMIx: no clear error: $(tail -n 3 <<<"$o")"
  fi
elif command -v mpirun.openmpi >/dev/null; then
  o="$(RINGLET_DEBUG=info timeout 60 mpirun.openmpi -np 4 "$check" --expect-size 4 --expect-local-size 4 2>&1)"
  expect_ok "mpirun -np 4" 4 "$o" PMIx
else
  echo "note: mpirun.openmpi not found; part 1 skipped"
fi

# 2. mpiexec.hydra on this machine.
if command -v mpiexec.hydra >/dev/null; then
  o="$(RINGLET_DEBUG=info timeout 60 mpiexec.hydra -np 4 "$check" --expect-size 4 2>&1)"
  expect_ok "mpiexec.hydra -np 4" 4 "$o" PMI-1
  [[ "$(grep -c 'job pmi1:kvs_' <<<"$o")" == 4 ]] || fail "mpiexec.hydra: identity not the KVS name"
else
  echo "note: mpiexec.hydra not found (apt-get install mpich); part 2 skipped"
fi

# 3. Two jobs on one address: job b's rank is refused, job a is undisturbed.
port=$((30600 + RANDOM % 2000))
a_env=("RINGLET_ADDR=127.0.0.1:$port" RINGLET_SIZE=2 RINGLET_JOB_ID=job-a)
env "${a_env[@]}" RINGLET_RANK=0 timeout 60 "$check" --expect-size 2 >"${TMPDIR:-/tmp}/rl-iso.$$" 2>&1 &
a0=$!
sleep 0.5
b="$(env RINGLET_ADDR=127.0.0.1:$port RINGLET_SIZE=2 RINGLET_JOB_ID=job-b RINGLET_RANK=1 \
      timeout 60 "$check" 2>&1)"
b_rc=$?
a1="$(env "${a_env[@]}" RINGLET_RANK=1 timeout 60 "$check" --expect-size 2 2>&1)"
wait "$a0"
a0_rc=$?
ran=$((ran + 1))
if [[ $b_rc == 0 ]] || ! grep -q "job-a" <<<"$b" || ! grep -q "job-b" <<<"$b"; then
  fail "isolation: the foreign rank was not refused naming both jobs (rc $b_rc): $b"
elif [[ $a0_rc != 0 ]] || ! grep -q ': OK$' <<<"$a1"; then
  fail "isolation: job a did not complete after the refusal (rc $a0_rc): $a1 $(cat "${TMPDIR:-/tmp}/rl-iso.$$")"
else
  echo "ok: isolation ($(head -c 200 <<<"$b"))"
fi
rm -f "${TMPDIR:-/tmp}/rl-iso.$$"

# 4. mpirun across 2 namespaced hosts.
if [[ "$(id -u)" == 0 && "$pmix" == 1 ]] && command -v mpirun.openmpi >/dev/null &&
   ip netns list >/dev/null 2>&1; then
  export RL_TESTHOSTS_PREFIX=rlm RL_TESTHOSTS_NET=198.18.249
  trap 'bash "$testhosts" down >/dev/null 2>&1' EXIT
  if bash "$testhosts" up 2 none >/dev/null; then
    agent="$(mktemp /tmp/rlm-agent.XXXXXX)"
    cat >"$agent" <<'AGENT'
#!/bin/bash
# Open MPI rsh agent: AGENT [options] HOST COMMAND... enters namespace rlm-hN (N: last octet).
while [[ "$1" == -* ]]; do shift; done
host=$1
shift
ns=rlm-h${host##*.}
exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$1"; shift; exec sh -c "$*"' sh "$ns" "$@"
AGENT
    chmod +x "$agent"
    o="$(RINGLET_DEBUG=info timeout 90 mpirun.openmpi --bind-to none --mca plm_rsh_agent "$agent" \
          --mca oob_tcp_if_include 198.18.249.0/24 -H 198.18.249.1:2,198.18.249.2:2 -np 4 \
          "$check" --expect-size 4 --expect-local-size 2 2>&1)"
    expect_ok "mpirun -np 4 across 2 namespaced hosts" 4 "$o" PMIx
    grep -q 'rendezvous at 198.18.249.1:' <<<"$o" || fail "2 hosts: the store was not on 198.18.249.1"
    rm -f "$agent"
  else
    fail "could not bring up the test hosts"
  fi
else
  echo "note: part 4 (2 namespaced hosts) needs root, PMIx, mpirun.openmpi and ip netns; skipped"
fi

((ran > 0)) || { echo "SKIP: nothing could run"; exit 77; }
echo "launch: $failures failure(s)"
((failures == 0))
