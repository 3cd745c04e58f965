#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One binary for CPU and GPU nodes: a CUDA build runs its host-memory collectives where no CUDA
# toolkit or driver exists. Checks that libringlet.so lists neither libcudart nor libcuda as
# NEEDED, then, in a private mount namespace with the CUDA toolkit folder and every libcuda.so*
# hidden, runs the public-library rank program and a set of host test binaries.
# Usage: cuda_hidden_test.sh LIBRINGLET ALLREDUCE_CHECK TEST_BINARY[:GTEST_FILTER]...
# Exit 77 (skipped) without root or unshare.
set -euo pipefail
lib=$1 check=$2
shift 2
if readelf -d "$lib" | grep -E 'NEEDED.*(libcudart|libcuda\.)'; then
  echo "FAIL: $lib needs a CUDA library" >&2
  exit 1
fi
echo "ok: $lib needs no CUDA library ($(readelf -d "$lib" | grep -c NEEDED) NEEDED entries)"
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
  echo "SKIP: hiding CUDA needs root and unshare" >&2
  exit 77
fi
cuda_dirs=()
for d in /usr/local/cuda "${CUDA_HOME:-}" "${CUDA_PATH:-}"; do
  if [ -n "$d" ] && [ -e "$d" ]; then cuda_dirs+=("$(readlink -f "$d")"); fi
done
if command -v nvcc >/dev/null; then
  cuda_dirs+=("$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")")
fi
# The driver, wherever the loader would find it.
mapfile -t driver_files < <( (ldconfig -p 2>/dev/null | awk '/libcuda\.so/ {print $NF}';
                              ls /usr/lib/x86_64-linux-gnu/libcuda.so* /usr/lib64/libcuda.so* 2>/dev/null) |
                             xargs -r readlink -f | sort -u)
mapfile -t cuda_dirs < <(printf '%s\n' "${cuda_dirs[@]}" | sort -u)
export RINGLET_HIDE_DIRS="${cuda_dirs[*]:-}" RINGLET_HIDE_FILES="${driver_files[*]:-}"
port=$(( 20000 + RANDOM % 20000 ))
tests=$(printf '%q ' "$@")
exec unshare -m bash -c '
  set -euo pipefail
  mount --make-rprivate /
  for d in $RINGLET_HIDE_DIRS; do mount -t tmpfs none "$d"; echo "hidden: $d"; done
  for f in $RINGLET_HIDE_FILES; do mount --bind /dev/null "$f"; echo "hidden: $f"; done
  if command -v nvcc >/dev/null && nvcc --version >/dev/null 2>&1; then
    echo "FAIL: nvcc still runs" >&2; exit 1
  fi
  echo "ldd of the rank program:"; ldd "'"$check"'" | sed "s/^/  /"
  if ldd "'"$check"'" | grep -q "not found"; then echo "FAIL: a library is missing" >&2; exit 1; fi
  RINGLET_RANK=0 RINGLET_SIZE=1 RINGLET_ADDR=127.0.0.1:'"$port"' "'"$check"'"
  for t in '"$tests"'; do
    bin=${t%%:*}; filter=*
    [ "$bin" != "$t" ] && filter=${t#*:}
    echo "running $(basename "$bin") --gtest_filter=$filter"
    "$bin" --gtest_filter="$filter" --gtest_brief=1
  done
  echo "ok: host collectives ran with CUDA hidden"
'
