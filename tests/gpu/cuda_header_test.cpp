// SPDX-License-Identifier: Apache-2.0
// ringlet/cuda.hpp compiles with the CUDA headers and builds the expected tensors and streams.
#include <gtest/gtest.h>

#include <ringlet/cuda.hpp>

namespace {

TEST(CudaHeader, TensorAndStream) {
  float* p = reinterpret_cast<float*>(std::uintptr_t{4096});
  const ringlet::Tensor t = ringlet::cuda::tensor(p, 10, 0);
  EXPECT_EQ(t.memory, ringlet::MemoryKind::cuda);
  EXPECT_EQ(t.type, ringlet::DataType::float32);
  EXPECT_EQ(t.device, 0);
  EXPECT_EQ(t.count, 10u);
  EXPECT_EQ(ringlet::cuda::stream(nullptr).handle, nullptr);
}

}  // namespace
