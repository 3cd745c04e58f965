// SPDX-License-Identifier: Apache-2.0
// Reduce kernels: dst[i] = op(dst[i], src[i]). The (DataType, ReduceOp) pair is resolved once
// through a table of template instantiations, never by a switch inside the loop.
#pragma once

#include <cstddef>

#include "include/ringlet/ringlet.hpp"

namespace ringlet::reduce {

// dst[i] = op(dst[i], src[i]) for i < n. avg reduces as sum (the caller divides at the end).
// float16 and bfloat16 use float32 arithmetic, rounded to nearest even when stored.
using HostKernel = void (*)(void* dst, const void* src, std::size_t n);

// The kernel for (type, op), chosen once per process for this CPU (AVX-512, AVX2 or plain).
HostKernel host_kernel(DataType type, ReduceOp op);

inline void reduce_host(void* dst, const void* src, std::size_t n, DataType type, ReduceOp op) {
  host_kernel(type, op)(dst, src, n);
}

// out[i] = op(a[i], b[i]): the out-of-place form, so that the first step of a reduction
// does not need a copy. out may equal a.
using HostKernel3 = void (*)(void* out, const void* a, const void* b, std::size_t n);
HostKernel3 host_kernel3(DataType type, ReduceOp op);

// data[i] /= divisor, for ReduceOp::avg on floating-point types (rounded as the type's own
// division would be; 16-bit types through float32).
void divide_host(void* data, std::size_t n, DataType type, int divisor);

// Name of the instruction set the host kernels use on this CPU ("avx512", "avx2", "generic").
const char* host_isa() noexcept;

}  // namespace ringlet::reduce
