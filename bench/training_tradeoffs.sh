#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Data-parallel SGD trade-offs (issue 14), measured with examples/train_fashion_mnist:
#
#   scaling   step time, communication share, samples/s and scaling efficiency against one
#             rank, for global batch 32, 128, 512, 2048, softmax regression and the
#             784-512-512-512-10 MLP, on 2 and 4 namespaced test hosts (one rank each) with
#             links shaped to 1 Gbit/s and 100 Mbit/s; one rank on loopback is the baseline.
#   overlap   the MLP at 2 hosts, 1 Gbit/s: the GradientReducer (overlap) against the blocking
#             one-call form, interleaved, at OVERLAP_BATCHES.
#   accuracy  test accuracy after ACC_EPOCHS epochs against the batch size, one loopback run
#             (ACC_RANKS ranks) per batch and model.
#
# usage: bench/training_tradeoffs.sh BUILD_DIR [all|scaling|overlap|accuracy]   (root, repo root)
#
# Writes OUT_DIR/{scaling,overlap,accuracy}.csv, OUT_DIR/training.md (markdown tables) and
# OUT_DIR/*.svg (gnuplot). Beside the measurements: the alpha-beta model of ../shared/DESIGN.md,
# T(N) = T1(B) / N + 2(N-1) a + 2(N-1)/N S / link rate, with T1(B) the measured one-rank step
# (what perfectly split computation plus an unoverlapped ring over the links alone would
# allow). The reference VM has 2 cores: 4-rank points are CPU-capped.
# Environment knobs (defaults keep a full run under 20 minutes on the 2-core VM):
#   REPS=3               runs per case; the median is reported
#   SAMPLES=4096         samples per timed run (steps = SAMPLES / batch, at least 4)
#   BATCHES="32 128 512 2048"   MODELS="softmax mlp"   RATES="1gbit 100mbit"   HOSTS="2 4"
#   OVERLAP_BATCHES="64 128"    ACC_EPOCHS=1   ACC_RANKS=2   ACC_LIMIT=60000
#   ALPHA_US=60          per-message latency of the model (measured loopback TCP, namespaced)
#   BENCH_TIMEOUT=300    wall-clock limit of each command, seconds
#   TR_PREFIX=rltr  TR_NET=198.18.110    test-host set (removed at exit)
#   OUT_DIR=...          default: a new folder under /tmp
set -uo pipefail

if [[ $# -lt 1 || $# -gt 2 || "$1" == -h || "$1" == --help ]]; then
  sed -n '4,29p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
build=$(cd "$1" && pwd)
mode=${2:-all}
case "$mode" in all | scaling | overlap | accuracy) ;; *) echo "unknown mode '$mode'" >&2; exit 2 ;; esac
[[ $EUID -eq 0 || "$mode" == accuracy ]] || { echo "training_tradeoffs.sh: needs root" >&2; exit 2; }

reps=${REPS:-3}
samples=${SAMPLES:-4096}
batches=${BATCHES:-32 128 512 2048}
models=${MODELS:-softmax mlp}
rates=${RATES:-1gbit 100mbit}
host_counts=${HOSTS:-2 4}
overlap_batches=${OVERLAP_BATCHES:-64 128}
acc_epochs=${ACC_EPOCHS:-1}
acc_ranks=${ACC_RANKS:-2}
acc_limit=${ACC_LIMIT:-60000}
alpha_us=${ALPHA_US:-60}
limit=${BENCH_TIMEOUT:-300}
export RL_TESTHOSTS_PREFIX=${TR_PREFIX:-rltr}
export RL_TESTHOSTS_NET=${TR_NET:-198.18.110}
out_dir=${OUT_DIR:-$(mktemp -d /tmp/ringlet-training.XXXXXX)}
mkdir -p "$out_dir"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
testhosts="$here/../tests/net/testhosts.sh"
h=$RL_TESTHOSTS_PREFIX-h
run_exe=$build/tools/ringlet-run
train=$build/examples/train_fashion_mnist
for f in "$run_exe" "$train"; do [[ -x "$f" ]] || { echo "missing $f" >&2; exit 2; }; done
for v in $(env | sed -n 's/^\(RINGLET_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
data=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

cleanup() { [[ $EUID -eq 0 ]] && bash "$testhosts" down >/dev/null 2>&1; }
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup  # leftovers of an earlier run

log() { echo "[$(date +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)] $*" >&2; }

# One run; prints its summary line's fields as "step_ms comm_share samples_per_s test_acc".
one_run() {  # one_run NAME CMD...
  local name=$1 out
  shift
  out=$(timeout "$limit" "$@" 2>&1)
  echo "$out" >"$out_dir/runs/$name.log"
  awk '/^summary /{for (i = 2; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
                  print v["step_ms"], v["comm_share"], v["samples_per_s"], v["test_acc"]}' <<<"$out"
}

# The median of REPS runs, field by field (each field's own median).
median_runs() {  # median_runs NAME CMD...
  local name=$1 i
  shift
  for ((i = 1; i <= reps; i++)); do one_run "$name.$i" "$@"; done |
    awk 'BEGIN {n = 0} NF == 4 {for (f = 1; f <= 4; f++) v[f, n] = $f; n++}
         END {if (n == 0) {print "nan nan nan nan"; exit}
              for (f = 1; f <= 4; f++) {for (i = 0; i < n; i++) a[i] = v[f, i]
                for (i = 1; i < n; i++) for (j = i; j > 0 && a[j - 1] > a[j]; j--) {t = a[j]; a[j] = a[j - 1]; a[j - 1] = t}
                m[f] = n % 2 ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2}
              print m[1], m[2], m[3], m[4]}'
}

steps_for() { local s=$((samples / $1)); ((s < 4)) && s=4; echo $s; }
mkdir -p "$out_dir/runs"
log "output in $out_dir; REPS=$reps SAMPLES=$samples; $(nproc) cores"

# --- scaling -----------------------------------------------------------------------------
scaling() {
  local csv=$out_dir/scaling.csv model b n rate steps r hosts
  echo "model,batch,ranks,rate,step_ms,comm_share,samples_per_s,efficiency,model_step_ms,model_efficiency,cpu_capped" >"$csv"
  for model in $models; do
    local grad_bytes
    grad_bytes=$([[ $model == mlp ]] && echo $(((784 * 512 + 512 + 2 * (512 * 512 + 512) + 512 * 10 + 10) * 4)) ||
      echo $(((784 * 10 + 10) * 4)))
    for b in $batches; do
      steps=$(steps_for "$b")
      common=(--model "$model" --batch "$b" --steps "$steps" --epochs 1 --test-limit 100 --data "$data")
      log "scaling: $model batch $b, 1 rank (loopback)"
      read -r t1 c1 s1 _ < <(median_runs "s-$model-$b-1" env -u RANK "$train" "${common[@]}")
      echo "$model,$b,1,loopback,$t1,$c1,$s1,1,$t1,1,no" >>"$csv"
      for rate in $rates; do
        bash "$testhosts" up 4 "$rate" >/dev/null || { log "testhosts up failed"; return 1; }
        for n in $host_counts; do
          hosts=$(for ((r = 1; r <= n; r++)); do printf '%s%d:1,' "$h" "$r"; done)
          log "scaling: $model batch $b, $n hosts at $rate"
          read -r t c s _ < <(median_runs "s-$model-$b-$n-$rate" "$run_exe" -np "$n" -H "${hosts%,}" \
            --launcher netns --timeout "$limit" "$train" "${common[@]}")
          # The model: compute T1(B)(1 - c1) / N (computation splits), plus the ring's time
          # for the gradients, not overlapped (an upper bound on the step).
          awk -v m="$model" -v b="$b" -v n="$n" -v rate="$rate" -v t="$t" -v c="$c" -v s="$s" \
              -v t1="$t1" -v c1="$c1" -v s1="$s1" -v S="$grad_bytes" -v a="$alpha_us" \
              -v capped="$([[ $n -gt $(nproc) ]] && echo yes || echo no)" 'BEGIN {
            bw = rate ~ /gbit/ ? rate * 1e9 / 8 : rate * 1e6 / 8
            comm_ms = 1000 * (2 * (n - 1) * a * 1e-6 + 2 * (n - 1) / n * S / bw)
            model_ms = t1 * (1 - c1) / n + comm_ms
            eff = (s1 > 0 && s != "nan") ? s / (n * s1) : "nan"
            printf "%s,%d,%d,%s,%s,%s,%s,%.3f,%.3f,%.3f,%s\n", m, b, n, rate, t, c, s, eff,
                   model_ms, t1 / (n * model_ms), capped }' >>"$csv"
        done
      done
    done
  done
}

# --- overlap against blocking --------------------------------------------------------------
overlap() {
  local csv=$out_dir/overlap.csv b i mode
  echo "batch,mode,rep,step_ms,comm_share" >"$csv"
  bash "$testhosts" up 2 1gbit >/dev/null || return 1
  for b in $overlap_batches; do
    steps=$(steps_for "$b")
    for ((i = 1; i <= reps; i++)); do
      for mode in overlap blocking; do  # interleaved: the load moves both alike
        log "overlap: mlp batch $b, $mode, rep $i"
        read -r t c _ _ < <(one_run "o-$b-$mode-$i" "$run_exe" -np 2 -H "${h}1:1,${h}2:1" \
          --launcher netns --timeout "$limit" "$train" --model mlp --batch "$b" --mode "$mode" \
          --steps "$steps" --epochs 1 --test-limit 100 --data "$data")
        echo "$b,$mode,$i,$t,$c" >>"$csv"
      done
    done
  done
  # One timeline of each, for the documentation.
  for mode in overlap blocking; do
    RINGLET_TIMELINE=$out_dir/timeline-$mode "$run_exe" -np 2 -H "${h}1:1,${h}2:1" --launcher netns \
      --timeout "$limit" -x RINGLET_TIMELINE "$train" --model mlp --batch "${overlap_batches%% *}" \
      --mode "$mode" --steps 8 --epochs 1 --test-limit 100 --data "$data" >"$out_dir/runs/timeline-$mode.log" 2>&1
    /usr/bin/python3 "$here/../tools/ringlet-timeline" merge "$out_dir/timeline-$mode" \
      -o "$out_dir/trace-$mode.json" >&2 || true
  done
}

# --- accuracy against batch size -------------------------------------------------------------
accuracy() {
  local csv=$out_dir/accuracy.csv model b
  echo "model,batch,ranks,epochs,test_acc" >"$csv"
  for model in $models; do
    for b in $batches; do
      log "accuracy: $model batch $b, $acc_ranks ranks on loopback, $acc_epochs epochs"
      read -r _ _ _ acc < <(one_run "a-$model-$b" "$run_exe" -np "$acc_ranks" --timeout "$limit" \
        "$train" --model "$model" --batch "$b" --epochs "$acc_epochs" --limit "$acc_limit" --data "$data")
      echo "$model,$b,$acc_ranks,$acc_epochs,$acc" >>"$csv"
    done
  done
}

[[ $mode == all || $mode == scaling ]] && scaling
[[ $mode == all || $mode == overlap ]] && overlap
[[ $mode == all || $mode == accuracy ]] && accuracy
cleanup

# --- tables and plots -------------------------------------------------------------------------
/usr/bin/python3 "$here/training_report.py" "$out_dir" "$(cut -d' ' -f1-3 /proc/loadavg)"
log "done: $out_dir/training.md"
