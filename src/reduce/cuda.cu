// SPDX-License-Identifier: Apache-2.0
// CUDA reduce kernels: grid-stride dst[i] = op(dst[i], src[i]) with the host kernels' bits.
//
// The element functions mirror host.cpp: canonical NaN results, NaN-propagating min/max with
// -0 below +0, wrapping integers, 16-bit floats through float32 with round-to-nearest-even.
// The 16-bit conversions are done with integer operations rather than __float2half_rn and
// __float2bfloat16_rn, whose NaN patterns differ from the host's. Device float add, multiply
// and divide round to nearest even without flushing denormals (nvcc's defaults: -ftz=false,
// -prec-div=true), as the host's SSE/AVX arithmetic does.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "src/common/check.hpp"
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

__device__ inline float canonical_nan_f() { return __uint_as_float(0x7FC00000u); }
__device__ inline double canonical_nan_d() { return __longlong_as_double(0x7FF8000000000000ll); }

__device__ inline float canon(float r) { return r != r ? canonical_nan_f() : r; }
__device__ inline double canon(double r) { return r != r ? canonical_nan_d() : r; }

__device__ inline std::uint32_t bits_of(float x) { return __float_as_uint(x); }
__device__ inline std::uint64_t bits_of(double x) {
  return static_cast<std::uint64_t>(__double_as_longlong(x));
}
__device__ inline float from_bits(std::uint32_t b) { return __uint_as_float(b); }
__device__ inline double from_bits(std::uint64_t b) {
  return __longlong_as_double(static_cast<long long>(b));
}

template <class C>
__device__ inline C float_op(C a, C b, ReduceOp op) {
  C r;
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg:
      return canon(a + b);
    case ReduceOp::prod:
      return canon(a * b);
    case ReduceOp::min:
      r = a < b ? a : (b < a ? b : from_bits(bits_of(a) | bits_of(b)));
      break;
    default:
      r = a > b ? a : (b > a ? b : from_bits(bits_of(a) & bits_of(b)));
      break;
  }
  return (a != a || b != b) ? canon(a + b) : r;  // canon() of a NaN is the canonical NaN
}

template <class C>
__device__ inline C int_op(C a, C b, ReduceOp op) {
  using U = std::conditional_t<(sizeof(C) < 4), std::uint32_t, std::make_unsigned_t<C>>;
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg:
      return static_cast<C>(static_cast<U>(a) + static_cast<U>(b));
    case ReduceOp::prod:
      return static_cast<C>(static_cast<U>(a) * static_cast<U>(b));
    case ReduceOp::min:
      return b < a ? b : a;
    default:
      return a < b ? b : a;
  }
}

__device__ inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1Fu;
  const std::uint32_t m = h & 0x3FFu;
  if (e == 0x1F) return __uint_as_float(sign | 0x7F800000u | (m << 13) | (m != 0 ? 0x400000u : 0u));
  if (e == 0) {
    const float v = static_cast<float>(m) * 0x1p-24f;
    return sign != 0 ? -v : v;
  }
  return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

__device__ inline std::uint16_t float_to_half(float f) {
  const std::uint32_t x = __float_as_uint(f);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
  if (ax >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);
  if (ax >= 0x38800000u) {
    std::uint32_t r = ax - (112u << 23);
    r += 0xFFFu + ((r >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | (r >> 13));
  }
  const std::uint32_t e = ax >> 23;
  const std::uint32_t m = e == 0 ? ax : ((ax & 0x7FFFFFu) | 0x800000u);
  const std::uint32_t shift = 126u - (e == 0 ? 1u : e);
  if (shift >= 25) return sign;
  std::uint32_t q = m >> shift;
  const std::uint32_t rem = m & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u) != 0)) ++q;
  return static_cast<std::uint16_t>(sign | q);
}

__device__ inline float bf16_to_float(std::uint16_t h) {
  return __uint_as_float(static_cast<std::uint32_t>(h) << 16);
}

__device__ inline std::uint16_t float_to_bf16(float f) {  // f is never a non-canonical NaN
  std::uint32_t x = __float_as_uint(f);
  x += 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>(x >> 16);
}

template <class T>
__device__ inline typename Storage<T>::type apply(typename Storage<T>::type a,
                                                  typename Storage<T>::type b, ReduceOp op) {
  if constexpr (std::is_same_v<T, F16>) {
    return float_to_half(float_op(half_to_float(a), half_to_float(b), op));
  } else if constexpr (std::is_same_v<T, Bf16>) {
    return float_to_bf16(float_op(bf16_to_float(a), bf16_to_float(b), op));
  } else if constexpr (std::is_floating_point_v<T>) {
    return float_op(a, b, op);
  } else {
    return int_op(a, b, op);
  }
}

// The op is a template argument, so the switch in float_op/int_op folds away per kernel.
template <class T, ReduceOp Op>
__global__ void reduce_kernel(typename Storage<T>::type* dst, const typename Storage<T>::type* src,
                              std::size_t n) {
  const std::size_t stride = static_cast<std::size_t>(blockDim.x) * gridDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    dst[i] = apply<T>(dst[i], src[i], Op);
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
