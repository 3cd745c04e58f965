// SPDX-License-Identifier: Apache-2.0
// CUDA reduce kernels: every DataType x ReduceOp against the host kernels, bit for bit.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "src/reduce/reduce.hpp"

namespace ringlet::reduce {
namespace {

constexpr DataType kAllTypes[] = {DataType::float32,  DataType::float64, DataType::float16,
                                  DataType::bfloat16, DataType::int8,    DataType::uint8,
                                  DataType::int32,    DataType::int64};
constexpr ReduceOp kAllOps[] = {ReduceOp::sum, ReduceOp::prod, ReduceOp::min, ReduceOp::max,
                                ReduceOp::avg};

std::size_t elem_size(DataType t) {
  switch (t) {
    case DataType::float64:
    case DataType::int64:
      return 8;
    case DataType::float32:
    case DataType::int32:
      return 4;
    case DataType::float16:
    case DataType::bfloat16:
      return 2;
    default:
      return 1;
  }
}

// Random bytes with special values planted: zeros, -0, infinities, NaNs, extremes.
std::vector<unsigned char> make_bytes(DataType t, std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::size_t s = elem_size(t);
  std::vector<unsigned char> v(n * s);
  for (auto& b : v) b = static_cast<unsigned char>(rng());
  for (std::size_t i = 0; i < n; i += 5) {
    const unsigned char sign = (rng() & 1) != 0 ? 0x80 : 0x00;
    unsigned char* e = v.data() + i * s;
    switch (rng() % 3) {
      case 0:  // +-0
        std::memset(e, 0, s);
        e[s - 1] = sign;
        break;
      case 1:  // small magnitude: exponent bits cleared (subnormals, small ints)
        e[s - 1] = static_cast<unsigned char>(sign | 0x00);
        break;
      default:  // all exponent bits set: inf or NaN
        e[s - 1] = static_cast<unsigned char>(sign | 0x7F);
        if (s >= 2) e[s - 2] = static_cast<unsigned char>(e[s - 2] | 0xF0);
    }
  }
  return v;
}

class ReduceCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) GTEST_SKIP() << "no CUDA device: " << cudaGetErrorString(err);
    if (count == 0) GTEST_SKIP() << "no CUDA device: " << cudaGetErrorString(cudaErrorNoDevice);
  }
};

TEST_F(ReduceCudaTest, MatchesHostKernelsBitwise) {
  EXPECT_GT(cuda_device_count(), 0);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  for (const DataType type : kAllTypes) {
    for (const ReduceOp op : kAllOps) {
      for (const std::size_t n :
           {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{(1u << 21) + 3}}) {
        const std::size_t bytes = n * elem_size(type);
        auto a = make_bytes(type, n, n + 11);
        const auto b = make_bytes(type, n, n + 12);
        void* d_a = nullptr;
        void* d_b = nullptr;
        ASSERT_EQ(cudaMalloc(&d_a, bytes + 8), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&d_b, bytes + 8), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(d_a, a.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(d_b, b.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
        reduce_cuda(d_a, d_b, n, type, op, stream);
        ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
        std::vector<unsigned char> got(bytes);
        ASSERT_EQ(cudaMemcpy(got.data(), d_a, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
        cudaFree(d_a);
        cudaFree(d_b);
        host_kernel(type, op)(a.data(), b.data(), n);
        const std::size_t s = elem_size(type);
        int reported = 0;
        for (std::size_t i = 0; i < n && reported < 5; ++i) {
          if (std::memcmp(got.data() + i * s, a.data() + i * s, s) != 0) {
            ADD_FAILURE() << "type " << static_cast<int>(type) << " op " << static_cast<int>(op)
                          << " n " << n << ": element " << i << " differs from the host";
            ++reported;
          }
        }
      }
    }
  }
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace ringlet::reduce
