// SPDX-License-Identifier: Apache-2.0
// Reduce kernels: dst[i] = op(dst[i], src[i]). The (DataType, ReduceOp) pair is resolved once
// through a table of template instantiations, never by a switch inside the loop.
#pragma once

#include <cstddef>
#include <cstdint>

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

// Semantics shared by every code path (generic, AVX2, AVX-512, CUDA), which give identical bits:
// - A floating-point result that is NaN is stored as the type's canonical quiet NaN (positive,
//   top mantissa bit only: 0x7FC00000, 0x7FF8000000000000, 0x7E00, 0x7FC0).
// - min and max propagate NaN (either operand NaN gives NaN) and order -0 below +0.
// - Integer sum and prod wrap modulo 2^bits.
// Kernels take dst/src (or out/a/b) that do not overlap, except out == a in HostKernel3.

// The instruction sets the host kernels are compiled for (addition, for tests and benchmarks).
enum class HostIsa : std::uint8_t { generic, avx2, avx512 };

// Whether this CPU can run the kernels of `isa`; generic always can.
bool host_isa_supported(HostIsa isa) noexcept;

// The kernels of one instruction set. Throws Error(invalid_argument) if this CPU lacks it.
HostKernel host_kernel(HostIsa isa, DataType type, ReduceOp op);
HostKernel3 host_kernel3(HostIsa isa, DataType type, ReduceOp op);
void divide_host(HostIsa isa, void* data, std::size_t n, DataType type, int divisor);

// CUDA (addition): dst[i] = op(dst[i], src[i]) for device pointers, enqueued on `stream` (a
// cudaStream_t; nullptr is the default stream); same semantics and bits as the host kernels.
// Without CUDA in the build it throws Error(invalid_argument, "ringlet was built without CUDA").
void reduce_cuda(void* dst, const void* src, std::size_t n, DataType type, ReduceOp op,
                 void* stream);

// The number of CUDA devices; 0 when CUDA is not built or the runtime reports an error.
int cuda_device_count() noexcept;

}  // namespace ringlet::reduce
