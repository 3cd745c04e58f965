// SPDX-License-Identifier: Apache-2.0
// The CudaStream forms of the collectives. Host tensors go to the communicator as they are; a
// collective on CUDA tensors gets a stream hook (src/exec/stream.hpp), is queued on the engine
// with host tensors that stand for the device buffers, and returns once queued. The engine
// stages the inputs after the stream's earlier work, runs the host algorithms and stages the
// outputs back before it releases the stream's later work.
#include <initializer_list>
#include <memory>
#include <vector>

#include "src/communicator_impl.hpp"
#include "src/exec/stream.hpp"

namespace ringlet {
namespace {

using Staged = exec::StagedStreamCollective;

bool on_device(std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) {
    if (t->memory == MemoryKind::cuda) return true;
  }
  return false;
}

// The staging of one call's buffers on the caller's stream.
std::shared_ptr<Staged> stage(const Communicator& comm, CudaStream stream, const char* what,
                              std::vector<Staged::Buffer> buffers) {
  exec::Device& d = exec::require_device(comm.rank(), what);
  return std::make_shared<Staged>(d, stream.handle, comm.rank(), what, std::move(buffers));
}

// Issues `call` with `hook` as the stream hook of the collective it issues.
template <class Call>
Work with_hook(Communicator::Impl& impl, std::shared_ptr<exec::StreamHook> hook, Call&& call) {
  impl.next_hook_ = std::move(hook);
  try {
    Work w(call());
    impl.next_hook_.reset();
    return w;
  } catch (...) {
    impl.next_hook_.reset();
    throw;
  }
}

// The blocking form of a collective on a stream: enqueued; its Work is dropped (a failure
// aborts the communicator, so the next call reports it).
void enqueued(Work w) { static_cast<void>(w.test()); }

}  // namespace

Work Communicator::allreduce_async(Tensor in, Tensor out, ReduceOp op, CudaStream stream) {
  if (!on_device({&in, &out})) return Work(impl_->allreduce(in, out, op, true));
  auto s = stage(*this, stream, "allreduce", {{in, true, false}, {out, false, true}});
  return with_hook(*impl_, s,
                   [&] { return impl_->allreduce(s->host(in), s->host(out), op, true); });
}

Work Communicator::allreduce_async(Tensor inout, ReduceOp op, CudaStream stream) {
  return allreduce_async(inout, inout, op, stream);
}

Work Communicator::allreduce_async(std::span<const Tensor> tensors, ReduceOp op,
                                   CudaStream stream) {
  bool cuda = false;
  for (const Tensor& t : tensors) cuda = cuda || t.memory == MemoryKind::cuda;
  if (!cuda) return Work(impl_->allreduce_list(tensors, op, true));
  std::vector<Staged::Buffer> buffers;
  buffers.reserve(tensors.size());
  for (const Tensor& t : tensors) buffers.push_back({t, true, true});
  auto s = stage(*this, stream, "allreduce", std::move(buffers));
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  for (const Tensor& t : tensors) host.push_back(s->host(t));
  return with_hook(*impl_, s, [&] { return impl_->allreduce_list(host, op, true); });
}

Work Communicator::broadcast_async(Tensor in, Tensor out, int root, CudaStream stream) {
  const bool root_here = rank() == root;
  if (!on_device(root_here ? std::initializer_list<const Tensor*>{&in, &out}
                           : std::initializer_list<const Tensor*>{&out})) {
    return Work(impl_->broadcast(in, out, root, true));
  }
  std::vector<Staged::Buffer> buffers{{out, false, true}};
  if (root_here) buffers.push_back({in, true, false});
  auto s = stage(*this, stream, "broadcast", std::move(buffers));
  const Tensor host_in = root_here ? s->host(in) : in;
  return with_hook(*impl_, s, [&] { return impl_->broadcast(host_in, s->host(out), root, true); });
}

Work Communicator::broadcast_async(Tensor inout, int root, CudaStream stream) {
  return broadcast_async(inout, inout, root, stream);
}

Work Communicator::allgather_async(Tensor in, Tensor out, CudaStream stream) {
  if (!on_device({&in, &out})) return Work(impl_->allgather(in, out, true));
  auto s = stage(*this, stream, "allgather", {{in, true, false}, {out, false, true}});
  return with_hook(*impl_, s, [&] { return impl_->allgather(s->host(in), s->host(out), true); });
}

Work Communicator::reduce_scatter_async(Tensor in, Tensor out, ReduceOp op, CudaStream stream) {
  if (!on_device({&in, &out})) return Work(impl_->reduce_scatter(in, out, op, true));
  // In place (out is the rank's block of in), the input is written as the reduction runs:
  // the whole input comes back too, as the host form leaves it.
  const bool in_place =
      out.data != nullptr &&
      static_cast<const std::byte*>(out.data) >= static_cast<std::byte*>(in.data) &&
      static_cast<const std::byte*>(out.data) < static_cast<std::byte*>(in.data) + in.bytes();
  auto s = stage(*this, stream, "reduce_scatter", {{in, true, in_place}, {out, false, true}});
  return with_hook(*impl_, s,
                   [&] { return impl_->reduce_scatter(s->host(in), s->host(out), op, true); });
}

Work Communicator::barrier_async(CudaStream stream) {
  auto s = stage(*this, stream, "barrier", {});
  return with_hook(*impl_, s, [&] { return impl_->barrier(true); });
}

void Communicator::allreduce(Tensor in, Tensor out, ReduceOp op, CudaStream stream) {
  if (!on_device({&in, &out})) {
    impl_->allreduce(in, out, op, false);
    return;
  }
  enqueued(allreduce_async(in, out, op, stream));
}

void Communicator::allreduce(Tensor inout, ReduceOp op, CudaStream stream) {
  allreduce(inout, inout, op, stream);
}

void Communicator::allreduce(std::span<const Tensor> tensors, ReduceOp op, CudaStream stream) {
  bool cuda = false;
  for (const Tensor& t : tensors) cuda = cuda || t.memory == MemoryKind::cuda;
  if (!cuda) {
    impl_->allreduce_list(tensors, op, false);
    return;
  }
  enqueued(allreduce_async(tensors, op, stream));
}

void Communicator::broadcast(Tensor in, Tensor out, int root, CudaStream stream) {
  const bool root_here = rank() == root;
  if (!on_device(root_here ? std::initializer_list<const Tensor*>{&in, &out}
                           : std::initializer_list<const Tensor*>{&out})) {
    impl_->broadcast(in, out, root, false);
    return;
  }
  enqueued(broadcast_async(in, out, root, stream));
}

void Communicator::broadcast(Tensor inout, int root, CudaStream stream) {
  broadcast(inout, inout, root, stream);
}

void Communicator::allgather(Tensor in, Tensor out, CudaStream stream) {
  if (!on_device({&in, &out})) {
    impl_->allgather(in, out, false);
    return;
  }
  enqueued(allgather_async(in, out, stream));
}

void Communicator::reduce_scatter(Tensor in, Tensor out, ReduceOp op, CudaStream stream) {
  if (!on_device({&in, &out})) {
    impl_->reduce_scatter(in, out, op, false);
    return;
  }
  enqueued(reduce_scatter_async(in, out, op, stream));
}

void Communicator::barrier(CudaStream stream) { enqueued(barrier_async(stream)); }

}  // namespace ringlet
