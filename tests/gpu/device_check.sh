#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The device check of issue 10, for the GPU test machine (one H200, CUDA 13 and NCCL 2.28
# system-wide, no Google Benchmark): in one shot, under 5 minutes, everything under OUTDIR.
#  1. the dedicated build (tests/gpu/build_device_check.sh; BUILDDIR, default build-gpu, is
#     reused when its binaries exist, e.g. carried from a CPU machine), and `ldd` of every
#     binary it runs;
#  2. suite gpu: the CUDA executor bitwise against the host kernels (every DataType x ReduceOp),
#     the allreduce matrix on device memory, stream ordering without host synchronisation, and
#     4 ranks as processes on the one GPU, each its own node; the old reduce_cuda test;
#  3. suite gpu-emulated, for comparison on the same machine;
#  4. allreduce_perf over 4 ranks (processes, each its own RINGLET_NODE_ID) with --memory cuda
#     and with host memory (the default);
#  5. the kernel sweep (1 GiB per operand, CUDA events).
# Usage: tests/gpu/device_check.sh OUTDIR [BUILDDIR]
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
build=${2:-$src/build-gpu}
case "$build" in /*) ;; *) build="$src/$build" ;; esac
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
exec > >(tee "$out/device_check.log") 2>&1
start=$SECONDS
status=0
summary=()
step() {  # step NAME LIMIT_S COMMAND...: runs, records pass/fail, never stops the script
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  echo
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > >(tee "$out/$name.txt") 2>&1
  rc=$?
  summary+=("$(printf '%-22s rc=%-3s %4ss' "$name" "$rc" "$((SECONDS - t0))")")
  [ "$rc" = 0 ] || status=1
  return 0
}

echo "# device_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
echo "# commit $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
nvcc --version 2>&1 | tail -2 || true
uname -r; nproc

bins=(tests/test_cuda_stream tests/test_reduce_cuda tests/test_gpu_emulated tests/kernel_sweep
      bench/allreduce_perf)
missing=0
for b in "${bins[@]}"; do [ -x "$build/$b" ] || missing=1; done
if [ "$missing" = 1 ]; then
  step build 240 bash "$src/tests/gpu/build_device_check.sh" "$build"
fi
du -sh "$build" 2>/dev/null
head=$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)
built=$(cat "$build/COMMIT" 2>/dev/null || echo unknown)
if [ "$head" != "$built" ]; then
  echo "WARNING: $build was built at commit $built, the checkout is at $head" \
       "(remove $build to rebuild)"
fi
for b in "${bins[@]}" libringlet.so.0; do
  f="$build/$b"
  echo "--- ldd $b"
  ldd "$f" 2>&1 | sed 's/^/  /'
done > "$out/ldd.txt"
cat "$out/ldd.txt"
if grep -E 'libcudart|libcuda\.so' "$out/ldd.txt"; then
  echo "FAIL: a binary needs a CUDA library at load time"
  status=1
fi

export RINGLET_TIMEOUT=120
step gpu_suite 120 "$build/tests/test_cuda_stream" --gtest_filter=-CudaProcesses.*
step gpu_processes 90 "$build/tests/test_cuda_stream" --gtest_filter=CudaProcesses.*
step reduce_cuda 90 "$build/tests/test_reduce_cuda"
# On the GPU machine a skip is a failure: the device was not usable.
for f in gpu_suite gpu_processes reduce_cuda; do
  if grep -q 'SKIPPED \]' "$out/$f.txt" 2>/dev/null; then
    echo "FAIL: $f skipped its tests: $(grep -m1 -A1 'Skipped' "$out/$f.txt" | tail -1)"
    summary+=("$(printf '%-22s skipped: no usable device' "$f")")
    status=1
  fi
done
step gpu_emulated 120 "$build/tests/test_gpu_emulated"

# allreduce_perf: 4 processes, each its own node (the ring over TCP loopback).
perf4() {
  local memory=$1 port=$((30000 + RANDOM % 20000)) pids=() rc=0
  for r in 0 1 2 3; do
    RINGLET_RANK=$r RINGLET_SIZE=4 RINGLET_ADDR=127.0.0.1:$port RINGLET_NODE_ID=gpu-node-$r \
      RINGLET_SECRET=ringlet-device-check-secret "$build/bench/allreduce_perf" --memory "$memory" \
      -b 8 -e "${DEVICE_CHECK_PERF_MAX:-256M}" -f 4 -n 5 -w 2 -c 1 > "$out/perf_${memory}_rank$r.txt" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  cat "$out/perf_${memory}_rank0.txt"
  for r in 1 2 3; do grep -iE 'error|fail' "$out/perf_${memory}_rank$r.txt" || true; done
  return $rc
}
export -f perf4
export build out
step allreduce_perf_cuda 150 bash -c 'perf4 cuda'
step allreduce_perf_host 150 bash -c 'perf4 host'
step kernel_sweep 120 "$build/tests/kernel_sweep" $((1 << 30))

echo
echo "=== summary ($((SECONDS - start)) s)"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
echo "device_check: $([ $status = 0 ] && echo PASSED || echo FAILED)" | tee -a "$out/summary.txt"
# A draft of docs/perf/gpu.md from this run.
{
  echo "<!-- SPDX-License-Identifier: Apache-2.0 -->"
  echo "# GPU device check (issue 10)"
  echo
  echo "Run $(date -u +%Y-%m-%d) by tests/gpu/device_check.sh at commit" \
       "$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown):" \
       "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)."
  echo
  echo '```'
  cat "$out/summary.txt"
  echo '```'
  echo
  echo "## Kernel sweep (1 GiB per operand, CUDA events, median of 7)"
  echo
  cat "$out/kernel_sweep.txt" 2>/dev/null
  for m in cuda host; do
    echo
    echo "## allreduce_perf, 4 ranks as 4 nodes on one machine, --memory $m"
    echo
    echo '```'
    cat "$out/allreduce_perf_$m.txt" 2>/dev/null
    echo '```'
  done
} > "$out/gpu.md"
echo "draft: $out/gpu.md"
exit $status
