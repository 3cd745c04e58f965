// SPDX-License-Identifier: Apache-2.0
// CUDA reduce kernels: grid-stride dst[i] = op(dst[i], src[i]) with the host kernels' bits.
//
// The element functions are host.cpp's own (elements.hpp, compiled here as device code):
// canonical NaN results, NaN-propagating min/max with -0 below +0, wrapping integers, 16-bit
// floats through float32 with round-to-nearest-even by integer operations rather than
// __float2half_rn and __float2bfloat16_rn, whose NaN patterns differ from the host's. Device float
// add, multiply and divide round to nearest even without flushing denormals (nvcc's defaults:
// -ftz=false, -prec-div=true), as the host's SSE/AVX arithmetic does.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "src/common/check.hpp"
#include "src/reduce/elements.hpp"
#include "src/reduce/reduce.hpp"

namespace ringlet::reduce {
namespace {

constexpr int kThreads = 256;
constexpr std::size_t kMaxBlocks = 8192;

struct F16 {};   // IEEE binary16 storage
struct Bf16 {};  // bfloat16 storage

template <class T>
struct Storage {
  using type = T;
};
template <>
struct Storage<F16> {
  using type = std::uint16_t;
};
template <>
struct Storage<Bf16> {
  using type = std::uint16_t;
};

// One element of dst = op(dst, src): 16-bit floats widen to float32, combine, and narrow with
// the same integer conversions as the host kernels.
template <class T, ReduceOp Op>
__device__ inline typename Storage<T>::type combine(typename Storage<T>::type a,
                                                    typename Storage<T>::type b) {
  if constexpr (std::is_same_v<T, F16>) {
    return elements::float_to_half(
        elements::apply<float, Op>(elements::half_to_float(a), elements::half_to_float(b)));
  } else if constexpr (std::is_same_v<T, Bf16>) {
    return elements::float_to_bf16(
        elements::apply<float, Op>(elements::bf16_to_float(a), elements::bf16_to_float(b)));
  } else {
    return elements::apply<T, Op>(a, b);
  }
}

template <class T, ReduceOp Op>
__global__ void reduce_kernel(typename Storage<T>::type* dst, const typename Storage<T>::type* src,
                              std::size_t n) {
  const std::size_t stride = static_cast<std::size_t>(blockDim.x) * gridDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    dst[i] = combine<T, Op>(dst[i], src[i]);
  }
}

using Launch = void (*)(void* dst, const void* src, std::size_t n, cudaStream_t stream);

template <class T, ReduceOp Op>
void launch(void* dst, const void* src, std::size_t n, cudaStream_t stream) {
  using S = typename Storage<T>::type;
  const std::size_t wanted = (n + kThreads - 1) / kThreads;
  const auto blocks = static_cast<unsigned>(wanted < kMaxBlocks ? wanted : kMaxBlocks);
  reduce_kernel<T, Op>
      <<<blocks, kThreads, 0, stream>>>(static_cast<S*>(dst), static_cast<const S*>(src), n);
}

template <class T>
constexpr void fill(Launch (&row)[5]) {
  row[0] = &launch<T, ReduceOp::sum>;
  row[1] = &launch<T, ReduceOp::prod>;
  row[2] = &launch<T, ReduceOp::min>;
  row[3] = &launch<T, ReduceOp::max>;
  row[4] = &launch<T, ReduceOp::avg>;
}

struct LaunchTable {
  Launch k[8][5];
};

LaunchTable make_table() {
  LaunchTable t{};
  fill<float>(t.k[static_cast<int>(DataType::float32)]);
  fill<double>(t.k[static_cast<int>(DataType::float64)]);
  fill<F16>(t.k[static_cast<int>(DataType::float16)]);
  fill<Bf16>(t.k[static_cast<int>(DataType::bfloat16)]);
  fill<std::int8_t>(t.k[static_cast<int>(DataType::int8)]);
  fill<std::uint8_t>(t.k[static_cast<int>(DataType::uint8)]);
  fill<std::int32_t>(t.k[static_cast<int>(DataType::int32)]);
  fill<std::int64_t>(t.k[static_cast<int>(DataType::int64)]);
  return t;
}

}  // namespace

void reduce_cuda(void* dst, const void* src, std::size_t n, DataType type, ReduceOp op,
                 void* stream) {
  static const LaunchTable table = make_table();
  const auto t = static_cast<std::size_t>(type);
  const auto o = static_cast<std::size_t>(op);
  RINGLET_CHECK(t < 8 && o < 5, "reduce_cuda: unknown DataType ", t, " or ReduceOp ", o);
  if (n == 0) return;
  table.k[t][o](dst, src, n, static_cast<cudaStream_t>(stream));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw Error(ErrorCode::transport,
                str_cat("reduce_cuda: kernel launch failed: ", cudaGetErrorString(err)));
  }
}

int cuda_device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error of a failed runtime initialisation
    return 0;
  }
  return count;
}

}  // namespace ringlet::reduce
