#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# train_run_test.sh: examples/train_fashion_mnist through the GradientReducer, short runs.
# Usage: train_run_test.sh RINGLET_RUN TRAIN_FASHION_MNIST. Exit 77 (skip) without the data.
#
# 1. Softmax regression, 2 ranks, 6000 samples, 2 epochs, overlap (the reducer): test
#    accuracy >= 75% (seed 1 reaches about 80%), weights identical on both ranks.
# 2. The same with --mode blocking (one allreduce after backward): the same training, so every
#    epoch's loss agrees with run 1 within 0.001 (only the final scaling's rounding differs).
# 3. The MLP, 2 ranks, 3 steps, fp16 compression: runs, weights identical.
set -uo pipefail
run_exe="${1:?usage: train_run_test.sh RINGLET_RUN TRAIN_FASHION_MNIST}"
train="${2:?usage: train_run_test.sh RINGLET_RUN TRAIN_FASHION_MNIST}"
data="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
if [[ ! -r "$data/train-images-idx3-ubyte.gz" ]]; then
  echo "SKIP: Fashion-MNIST not found in $data (apt-get install dataset-fashion-mnist)"
  exit 77
fi
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
field() {  # field NAME OUTPUT: the value after NAME on each epoch line
  awk -v k="$1" '/^epoch /{for (i = 1; i < NF; i++) if ($i == k) {v = $(i + 1); sub("%", "", v); print v}}' <<<"$2"
}
common=(--data "$data" --limit 6000 --test-limit 2000 --epochs 2 --batch 64 --seed 1)

out="$(timeout 120 "$run_exe" -np 2 --timeout 100 "$train" --model softmax "${common[@]}" 2>&1)"
status=$?
echo "$out"
[[ $status -eq 0 ]] || fail "overlap: exit status $status"
acc="$(field test_acc "$out" | tail -n 1)"
awk -v a="$acc" 'BEGIN {exit !(a >= 75)}' || fail "overlap: test accuracy '$acc' below 75%"
grep -q 'identical on all 2 ranks' <<<"$out" || fail "overlap: weights not identical"
grep -q '^summary model=softmax ranks=2 batch=64 mode=overlap' <<<"$out" || fail "no summary line"

out2="$(timeout 120 "$run_exe" -np 2 --timeout 100 "$train" --model softmax --mode blocking \
          "${common[@]}" 2>&1)"
status=$?
echo "$out2"
[[ $status -eq 0 ]] || fail "blocking: exit status $status"
if paste <(field train_loss "$out") <(field train_loss "$out2") |
    awk 'NF != 2 {bad = 1} {d = $1 - $2; if (d < 0) d = -d; if (d > 0.001) bad = 1}
         END {exit bad || NR != 2}'; then
  echo "ok: overlap and blocking agree on every epoch's loss"
else
  fail "overlap and blocking disagree: $(paste <(field train_loss "$out") <(field train_loss "$out2") | tr '\n' ';')"
fi

out3="$(timeout 120 "$run_exe" -np 2 --timeout 100 "$train" --model mlp --compress fp16 --steps 3 \
          --epochs 1 --limit 1000 --test-limit 200 --data "$data" 2>&1)"
status=$?
echo "$out3"
[[ $status -eq 0 ]] || fail "mlp fp16: exit status $status"
grep -q 'identical on all 2 ranks' <<<"$out3" || fail "mlp fp16: weights not identical"

[[ $failures -eq 0 ]] || { echo "$failures check(s) failed"; exit 1; }
echo "all checks passed"
