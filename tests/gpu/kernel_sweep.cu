// SPDX-License-Identifier: Apache-2.0
// kernel_sweep: the reduce kernels of src/reduce/cuda_kernels.cuh timed with CUDA events on
// one device, for tests/gpu/device_check.sh. For float32 and bfloat16 sum over N bytes per
// operand (default 1 GiB): the packed kernel at vector widths 8 and 16 bytes, unroll 1/2/4 and
// 1-16 blocks per SM, beside the plain grid-stride kernel and cudaMemcpy device-to-device.
// Bandwidth: a reduction moves 3 N (2 reads + 1 write), the copy 2 N (read + write); the ratio
// column is the kernel's bandwidth over the copy's. Median of 7 runs after 2 warm-ups. The
// library's configuration (16 bytes, unroll 4, 8 blocks per SM) is marked "lib".
// Usage: kernel_sweep [BYTES]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "src/reduce/cuda_kernels.cuh"

namespace {

using ringlet::ReduceOp;
namespace k = ringlet::reduce::kernels;

constexpr int kThreads = 256;

#define CHECK(call)                                                    \
  do {                                                                 \
    cudaError_t e_ = (call);                                           \
    if (e_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_)); \
      std::exit(1);                                                    \
    }                                                                  \
  } while (0)

template <class F>
float median_ms(F&& launch) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 2; ++i) launch();
  std::vector<float> t;
  for (int i = 0; i < 7; ++i) {
    CHECK(cudaEventRecord(a));
    launch();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CHECK(cudaGetLastError());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

template <class T, int kBytes, int kUnroll>
void packed_row(const char* type, void* o, const void* a, const void* b, std::size_t n,
                std::size_t bytes, int sms, int bpsm, double copy_gbs) {
  using S = typename k::Storage<T>::type;
  const unsigned grid = static_cast<unsigned>(sms * bpsm);
  const float ms = median_ms([&] {
    k::reduce3_packed<T, ReduceOp::sum, kBytes, kUnroll><<<grid, kThreads>>>(
        static_cast<S*>(o), static_cast<const S*>(a), static_cast<const S*>(b), n);
  });
  const double gbs = 3.0 * static_cast<double>(bytes) / (ms * 1e6);
  const bool lib = kBytes == 16 && kUnroll == 4 && bpsm == 8;
  std::printf("| %-8s | packed | %2d | %d | %2d | %8.3f | %7.1f | %5.3f |%s\n", type, kBytes,
              kUnroll, bpsm, ms, gbs, gbs / copy_gbs, lib ? " lib" : "");
}

template <class T>
void sweep(const char* type, std::size_t bytes, int sms, double copy_gbs) {
  using S = typename k::Storage<T>::type;
  const std::size_t n = bytes / sizeof(S);
  void *o, *a, *b;
  CHECK(cudaMalloc(&o, bytes));
  CHECK(cudaMalloc(&a, bytes));
  CHECK(cudaMalloc(&b, bytes));
  CHECK(cudaMemset(a, 0x3c, bytes));
  CHECK(cudaMemset(b, 0x3c, bytes));
  for (int bpsm : {1, 2, 4, 8, 16}) {
    const unsigned grid = static_cast<unsigned>(sms * bpsm);
    const float ms = median_ms([&] {
      k::reduce3_plain<T, ReduceOp::sum><<<grid, kThreads>>>(
          static_cast<S*>(o), static_cast<const S*>(a), static_cast<const S*>(b), n);
    });
    const double gbs = 3.0 * static_cast<double>(bytes) / (ms * 1e6);
    std::printf("| %-8s | plain  | %2zu | 1 | %2d | %8.3f | %7.1f | %5.3f |\n", type, sizeof(S),
                bpsm, ms, gbs, gbs / copy_gbs);
  }
  for (int bpsm : {1, 2, 4, 8, 16}) {
    packed_row<T, 8, 1>(type, o, a, b, n, bytes, sms, bpsm, copy_gbs);
    packed_row<T, 8, 2>(type, o, a, b, n, bytes, sms, bpsm, copy_gbs);
    packed_row<T, 8, 4>(type, o, a, b, n, bytes, sms, bpsm, copy_gbs);
    packed_row<T, 16, 1>(type, o, a, b, n, bytes, sms, bpsm, copy_gbs);
    packed_row<T, 16, 2>(type, o, a, b, n, bytes, sms, bpsm, copy_gbs);
    packed_row<T, 16, 4>(type, o, a, b, n, bytes, sms, bpsm, copy_gbs);
  }
  cudaFree(o);
  cudaFree(a);
  cudaFree(b);
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t bytes = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : (std::size_t{1} << 30);
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  int sms = prop.multiProcessorCount;
  std::printf("# kernel_sweep: %s, %d SMs, %zu bytes per operand, %d threads per block\n",
              prop.name, sms, bytes, kThreads);
  void *x, *y;
  CHECK(cudaMalloc(&x, bytes));
  CHECK(cudaMalloc(&y, bytes));
  CHECK(cudaMemset(x, 1, bytes));
  const float copy_ms =
      median_ms([&] { CHECK(cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice)); });
  const double copy_gbs = 2.0 * static_cast<double>(bytes) / (copy_ms * 1e6);
  cudaFree(x);
  cudaFree(y);
  std::printf("# cudaMemcpy device-to-device: %.3f ms, %.1f GB/s (read + write)\n", copy_ms,
              copy_gbs);
  std::printf("| type     | kernel | vector B | unroll | blocks/SM | ms | GB/s | vs memcpy |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  sweep<float>("float32", bytes, sms, copy_gbs);
  sweep<k::Bf16>("bfloat16", bytes, sms, copy_gbs);
  return 0;
}
