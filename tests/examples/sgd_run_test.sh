#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# sgd_run_test.sh: a short data-parallel training run of examples/sgd_fashion_mnist.
# Usage: sgd_run_test.sh RINGLET_RUN SGD_FASHION_MNIST. Exit 77 (skip) without the data set.
#
# 1. 2 ranks under ringlet-run, 6000 training samples, 3 epochs: the training loss must fall
#    every epoch, the final test accuracy must reach 75%, the weights must be identical.
# 2. The same job as one process without any launcher variable. Averaging the shard
#    gradients must give the same SGD as one process on the whole batch: every epoch's
#    training loss must agree with the 2-rank run within 0.01 (only the float summation order
#    differs). Summing instead of averaging, or wrong shards, would break this.
# 3. A missing data folder: exit 1 and a message naming the package.
#
# Why 75%: with seed 1 this configuration reaches 78.6% (72.1% after epoch 1) on 1 and 2
# ranks; chance is 10%. 75% leaves room for summation-order noise but fails a run that stops
# learning after the first epoch.
set -uo pipefail

run_exe="${1:?usage: sgd_run_test.sh RINGLET_RUN SGD_FASHION_MNIST}"
sgd="${2:?usage: sgd_run_test.sh RINGLET_RUN SGD_FASHION_MNIST}"
data="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"

if [[ ! -r "$data/train-images-idx3-ubyte.gz" || ! -r "$data/t10k-labels-idx1-ubyte.gz" ]]; then
  echo "SKIP: Fashion-MNIST not found in $data (apt-get install dataset-fashion-mnist)"
  exit 77
fi

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# Checks one run's output: losses strictly falling, last accuracy >= $2 percent, weights equal.
check_run() {  # check_run NAME MIN_ACCURACY OUTPUT
  local name="$1" min_acc="$2" out="$3"
  local losses accs
  losses="$(awk '/^epoch /{for (i = 1; i < NF; i++) if ($i == "train_loss") print $(i + 1)}' <<<"$out")"
  accs="$(awk '/^epoch /{for (i = 1; i < NF; i++) if ($i == "test_acc") {sub("%", "", $(i + 1)); print $(i + 1)}}' <<<"$out")"
  [[ -n "$losses" ]] || { fail "$name: no epoch lines"; return; }
  if awk 'NR > 1 && $1 >= prev {bad = 1} {prev = $1} END {exit bad}' <<<"$losses"; then
    echo "ok: $name: training loss falls every epoch ($(tr '\n' ' ' <<<"$losses"))"
  else
    fail "$name: training loss does not fall every epoch: $(tr '\n' ' ' <<<"$losses")"
  fi
  local last_acc
  last_acc="$(tail -n 1 <<<"$accs")"
  if awk -v a="$last_acc" -v m="$min_acc" 'BEGIN {exit !(a >= m)}'; then
    echo "ok: $name: test accuracy $last_acc% >= $min_acc%"
  else
    fail "$name: test accuracy $last_acc% is below $min_acc%"
  fi
}

# 1. Two ranks under the launcher.
out="$(timeout 240 "$run_exe" -np 2 --timeout 200 "$sgd" --data "$data" --limit 6000 \
         --epochs 3 --batch 64 --lr 0.1 --seed 1 2>&1)"
status=$?
echo "$out"
if [[ $status -ne 0 ]]; then
  fail "2 ranks: exit status $status"
else
  check_run "2 ranks" 75 "$out"
  grep -q '^ringlet .*: 2 ranks, 6000 training samples, 10000 test samples' <<<"$out" ||
    fail "2 ranks: header line missing"
  grep -q '^weights: fnv1a64 [0-9a-f]\{16\}, identical on all 2 ranks$' <<<"$out" ||
    fail "2 ranks: no 'identical on all 2 ranks' line"
fi

# 2. One process, no launcher: every launcher variable removed.
out1="$(timeout 120 env -u RINGLET_RANK -u RINGLET_SIZE -u RANK -u WORLD_SIZE \
          -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE -u PMI_RANK -u PMI_SIZE \
          -u SLURM_PROCID -u SLURM_NTASKS -u RINGLET_ADDR \
          "$sgd" --data "$data" --limit 6000 --epochs 3 --batch 64 --lr 0.1 --seed 1 2>&1)"
status=$?
echo "$out1"
if [[ $status -ne 0 ]]; then
  fail "1 process: exit status $status"
else
  check_run "1 process" 75 "$out1"
  grep -q '^ringlet .*: 1 ranks, 6000 training samples' <<<"$out1" || fail "1 process: header"
  grep -q 'identical on all 1 ranks$' <<<"$out1" || fail "1 process: no weights line"
  loss_of() { awk '/^epoch /{for (i = 1; i < NF; i++) if ($i == "train_loss") print $(i + 1)}' <<<"$1"; }
  if paste <(loss_of "$out") <(loss_of "$out1") |
      awk 'NF != 2 {bad = 1} {d = $1 - $2; if (d < 0) d = -d; if (d > 0.01) bad = 1}
           END {exit bad || NR != 3}'; then
    echo "ok: 2 ranks and 1 process agree on every epoch's training loss (within 0.01)"
  else
    fail "2 ranks and 1 process disagree: $(paste <(loss_of "$out") <(loss_of "$out1") | tr '\n' ';')"
  fi
fi

# 3. Missing data: a clear message and exit status 1.
empty="$(mktemp -d)"
out2="$(timeout 60 env -u RINGLET_RANK -u RINGLET_SIZE -u RANK -u WORLD_SIZE \
          -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE -u PMI_RANK -u PMI_SIZE \
          -u SLURM_PROCID -u SLURM_NTASKS "$sgd" --data "$empty" 2>&1)"
status=$?
rmdir "$empty"
echo "$out2"
[[ $status -eq 1 ]] || fail "missing data: exit status $status, expected 1"
grep -q 'apt-get install dataset-fashion-mnist' <<<"$out2" ||
  fail "missing data: no hint to install dataset-fashion-mnist"

if [[ $failures -ne 0 ]]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
