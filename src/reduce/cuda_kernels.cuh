// SPDX-License-Identifier: Apache-2.0
// The CUDA reduce kernels, as templates: included by src/reduce/cuda.cu (the library's
// instantiations) and by the kernel sweep of tests/gpu/device_check.sh (other vector widths,
// unroll factors and grid sizes). CUDA-only; compiled by nvcc.
//
// The element functions are host.cpp's own (elements.hpp, compiled here as device code):
// canonical NaN results, NaN-propagating min/max with -0 below +0, wrapping integers, 16-bit
// floats through float32 with round-to-nearest-even by integer operations rather than
// __float2half_rn and __float2bfloat16_rn, whose NaN patterns differ from the host's. Device float
// add, multiply and divide round to nearest even without flushing denormals (nvcc's defaults:
// -ftz=false, -prec-div=true), as the host's SSE/AVX arithmetic does. Each output element is
// one application of the element function to the same two inputs, so the bits are the host's
// whatever the vector width or the order in which threads run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "src/reduce/elements.hpp"

namespace ringlet::reduce::kernels {

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

// One element of op(a, b): 16-bit floats widen to float32, combine, and narrow with the same
// integer conversions as the host kernels.
template <class T, ReduceOp Op>
__device__ __forceinline__ typename Storage<T>::type combine(typename Storage<T>::type a,
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

// x / divisor with the host's rounding: 16-bit types through float32.
template <class T>
__device__ __forceinline__ typename Storage<T>::type divide(typename Storage<T>::type x,
                                                            int divisor) {
  if constexpr (std::is_same_v<T, F16>) {
    return elements::float_to_half(
        elements::divide_one(elements::half_to_float(x), static_cast<float>(divisor)));
  } else if constexpr (std::is_same_v<T, Bf16>) {
    return elements::float_to_bf16(
        elements::divide_one(elements::bf16_to_float(x), static_cast<float>(divisor)));
  } else {
    return elements::divide_one(x, static_cast<T>(divisor));
  }
}

// kBytes of elements, loaded and stored as one vector (ld.global.v4 / v2).
template <class S, int kBytes>
struct alignas(kBytes) Pack {
  static constexpr int kElems = kBytes / static_cast<int>(sizeof(S));
  S e[kElems];
};

// out = op(a, b) over n elements: packs of kBytes, kUnroll packs in flight per thread, a
// grid-stride loop; the elements after the last whole pack one per thread. out, a and b are
// kBytes-aligned (the launcher checks); out may equal a.
template <class T, ReduceOp Op, int kBytes, int kUnroll>
__global__ void reduce3_packed(typename Storage<T>::type* out, const typename Storage<T>::type* a,
                               const typename Storage<T>::type* b, std::size_t n) {
  using S = typename Storage<T>::type;
  using P = Pack<S, kBytes>;
  constexpr int kE = P::kElems;
  const std::size_t packs = n / kE;
  const std::size_t stride = static_cast<std::size_t>(blockDim.x) * gridDim.x;
  const std::size_t tid = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const P* pa = reinterpret_cast<const P*>(a);
  const P* pb = reinterpret_cast<const P*>(b);
  P* po = reinterpret_cast<P*>(out);
  std::size_t i = tid;
  for (; i + (kUnroll - 1) * stride < packs; i += kUnroll * stride) {
    P x[kUnroll];
    P y[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      x[u] = pa[i + u * stride];
      y[u] = pb[i + u * stride];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int k = 0; k < kE; ++k) x[u].e[k] = combine<T, Op>(x[u].e[k], y[u].e[k]);
      po[i + u * stride] = x[u];
    }
  }
  for (; i < packs; i += stride) {
    P x = pa[i];
    const P y = pb[i];
#pragma unroll
    for (int k = 0; k < kE; ++k) x.e[k] = combine<T, Op>(x.e[k], y.e[k]);
    po[i] = x;
  }
  const std::size_t tail = packs * kE + tid;
  if (tail < n) out[tail] = combine<T, Op>(a[tail], b[tail]);
}

// The plain grid-stride form, one element per thread and step: unaligned pointers, and the
// baseline of the kernel sweep.
template <class T, ReduceOp Op>
__global__ void reduce3_plain(typename Storage<T>::type* out, const typename Storage<T>::type* a,
                              const typename Storage<T>::type* b, std::size_t n) {
  const std::size_t stride = static_cast<std::size_t>(blockDim.x) * gridDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = combine<T, Op>(a[i], b[i]);
  }
}

template <class T>
__global__ void divide_plain(typename Storage<T>::type* data, std::size_t n, int divisor) {
  const std::size_t stride = static_cast<std::size_t>(blockDim.x) * gridDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    data[i] = divide<T>(data[i], divisor);
  }
}

}  // namespace ringlet::reduce::kernels
