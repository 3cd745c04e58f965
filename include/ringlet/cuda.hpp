// SPDX-License-Identifier: Apache-2.0
// ringlet/cuda.hpp: optional, header-only conveniences for CUDA users. It includes
// cuda_runtime_api.h, so only code that includes it needs the CUDA headers; ringlet.hpp stays
// free of CUDA, and a program that never includes this header builds without CUDA.
//
//   #include <ringlet/cuda.hpp>
//   ringlet::cuda::allreduce(comm, ringlet::cuda::tensor(grads_dev, n), ringlet::ReduceOp::avg,
//                            stream);
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <ringlet/ringlet.hpp>
#include <span>

namespace ringlet::cuda {

// A cudaStream_t as the CudaStream the collectives take.
inline CudaStream stream(cudaStream_t s) noexcept { return CudaStream{static_cast<void*>(s)}; }

// A Tensor over `count` elements of CUDA memory at `data` on `device` (-1: the current device).
template <class T>
Tensor tensor(T* data, std::size_t count, int device = -1) {
  if (device < 0 && cudaGetDevice(&device) != cudaSuccess) device = 0;
  return Tensor{const_cast<std::remove_cv_t<T>*>(data), count, data_type_of<T>(), MemoryKind::cuda,
                device};
}

// The collectives with a cudaStream_t (NCCL's semantics, ringlet.hpp).
inline void allreduce(Communicator& c, Tensor inout, ReduceOp op, cudaStream_t s) {
  c.allreduce(inout, op, stream(s));
}
inline void allreduce(Communicator& c, Tensor in, Tensor out, ReduceOp op, cudaStream_t s) {
  c.allreduce(in, out, op, stream(s));
}
inline void allreduce(Communicator& c, std::span<const Tensor> tensors, ReduceOp op,
                      cudaStream_t s) {
  c.allreduce(tensors, op, stream(s));
}
inline void broadcast(Communicator& c, Tensor inout, int root, cudaStream_t s) {
  c.broadcast(inout, root, stream(s));
}
inline void broadcast(Communicator& c, Tensor in, Tensor out, int root, cudaStream_t s) {
  c.broadcast(in, out, root, stream(s));
}
inline void allgather(Communicator& c, Tensor in, Tensor out, cudaStream_t s) {
  c.allgather(in, out, stream(s));
}
inline void reduce_scatter(Communicator& c, Tensor in, Tensor out, ReduceOp op, cudaStream_t s) {
  c.reduce_scatter(in, out, op, stream(s));
}
inline void barrier(Communicator& c, cudaStream_t s) { c.barrier(stream(s)); }
inline Work allreduce_async(Communicator& c, Tensor inout, ReduceOp op, cudaStream_t s) {
  return c.allreduce_async(inout, op, stream(s));
}
inline Work allreduce_async(Communicator& c, Tensor in, Tensor out, ReduceOp op, cudaStream_t s) {
  return c.allreduce_async(in, out, op, stream(s));
}
inline Work allreduce_async(Communicator& c, std::span<const Tensor> tensors, ReduceOp op,
                            cudaStream_t s) {
  return c.allreduce_async(tensors, op, stream(s));
}
inline Work broadcast_async(Communicator& c, Tensor inout, int root, cudaStream_t s) {
  return c.broadcast_async(inout, root, stream(s));
}
inline Work broadcast_async(Communicator& c, Tensor in, Tensor out, int root, cudaStream_t s) {
  return c.broadcast_async(in, out, root, stream(s));
}
inline Work allgather_async(Communicator& c, Tensor in, Tensor out, cudaStream_t s) {
  return c.allgather_async(in, out, stream(s));
}
inline Work reduce_scatter_async(Communicator& c, Tensor in, Tensor out, ReduceOp op,
                                 cudaStream_t s) {
  return c.reduce_scatter_async(in, out, op, stream(s));
}
inline Work barrier_async(Communicator& c, cudaStream_t s) { return c.barrier_async(stream(s)); }

}  // namespace ringlet::cuda
