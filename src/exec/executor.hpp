// SPDX-License-Identifier: Apache-2.0
// Executor: where the arithmetic and copies of a collective run, chosen by memory kind.
// Algorithms and local groups never call a kernel directly; they call their executor, so
// that a second memory kind (CUDA, with streams) is added as a second implementation here
// without changing any algorithm.
#pragma once

#include <cstddef>

#include "include/ringlet/ringlet.hpp"

namespace ringlet::exec {

// The reduction of one (type, op), resolved once per collective: out[i] = op(a[i], b[i]).
// out may equal a; otherwise the three ranges do not overlap. avg reduces as sum: scaling is
// the plan's separate post-scale step (Executor::scale).
// A host reducer is a plain kernel; a device reducer carries its executor (device, stream) as
// a context pointer and the resolved (type, op).
class Reducer {
 public:
  using Fn = void (*)(void* out, const void* a, const void* b, std::size_t n);
  using BoundFn = void (*)(const void* context, DataType type, ReduceOp op, void* out,
                           const void* a, const void* b, std::size_t n);
  Reducer() = default;
  explicit Reducer(Fn fn) noexcept : fn_(fn) {}
  Reducer(BoundFn fn, const void* context, DataType type, ReduceOp op) noexcept
      : bound_(fn), context_(context), type_(type), op_(op) {}
  void operator()(void* out, const void* a, const void* b, std::size_t n) const {
    if (bound_ != nullptr) {
      bound_(context_, type_, op_, out, a, b, n);
    } else {
      fn_(out, a, b, n);
    }
  }

 private:
  Fn fn_ = nullptr;
  BoundFn bound_ = nullptr;
  const void* context_ = nullptr;
  DataType type_ = DataType::float32;
  ReduceOp op_ = ReduceOp::sum;
};

// One per memory kind, shared by every communicator of the process (stateless for host
// memory; the device executor, src/exec/device.hpp, carries its device and stream).
// Thread-safe: the hierarchical algorithm uses it from two threads.
class Executor {
 public:
  virtual ~Executor() = default;
  virtual MemoryKind memory() const noexcept = 0;
  // Resolves the kernel of (type, op) for this memory kind.
  virtual Reducer reducer(DataType type, ReduceOp op) const = 0;
  // dst[0, bytes) = src[0, bytes); the ranges may overlap (memmove).
  virtual void copy(void* dst, const void* src, std::size_t bytes) const = 0;
  // data[i] /= divisor for floating-point `type` (the post-scale step of avg).
  virtual void scale(void* data, std::size_t count, DataType type, int divisor) const = 0;
  // Makes every step issued so far complete before the caller reads the memory on the host
  // or hands it to a transport. Host memory: nothing to do.
  virtual void synchronize() const {}
};

// The executor of host memory: the CPU kernels of src/reduce (AVX-512, AVX2 or generic).
const Executor& host_executor() noexcept;

// The executor of a kind this build has no executor for: throws Error(invalid_argument).
[[noreturn]] void no_executor_for(MemoryKind kind);

// The executor for `kind`; throws Error(invalid_argument) for a kind this build or machine
// cannot run (CUDA memory without CUDA in the build, or without a device).
const Executor& executor_for(MemoryKind kind);

}  // namespace ringlet::exec
