#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The dedicated build of tests/gpu/device_check.sh: only its targets, no debug information,
# stripped, no hwloc, ibverbs, NCCL or PMIx; small enough (under 64 MiB) to carry to the GPU
# machine, or quick to make there.
# Usage: tests/gpu/build_device_check.sh BUILDDIR
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$1
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
targets=(tests/test_cuda_stream tests/test_reduce_cuda tests/test_gpu_emulated tests/kernel_sweep
         bench/allreduce_perf)
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$src" -Dcuda=enabled -Dnccl=disabled -Dhwloc=disabled -Dibverbs=disabled \
    -Dpmix=disabled -Dbenchmarks=disabled -Dtests=enabled -Dbuildtype=release -Ddebug=false \
    -Db_ndebug=true -Dcpp_args=-g0 -Dcpp_link_args=-s
fi
ninja -C "$build" -j "${NINJA_JOBS:-$(nproc)}" "${targets[@]}"
# Objects are not needed to run: drop them so that the folder stays small.
find "$build" \( -name '*.o' -o -name '*.a' \) -delete
for t in "${targets[@]}"; do strip --strip-unneeded "$build/$t" 2>/dev/null || true; done
strip --strip-unneeded "$build"/libringlet.so.* 2>/dev/null || true
git -C "$src" rev-parse HEAD > "$build/COMMIT" 2>/dev/null || true
du -sh "$build"
