// SPDX-License-Identifier: Apache-2.0
// Stream semantics of a collective on device memory (NCCL's): the call enqueues the collective
// and returns; it runs after the earlier work of the caller's stream, and later work of that
// stream waits for it, on the device, without the host synchronising.
//
// At the call, the collective takes the next ticket k of its stream, and two operations on
// flags of mapped host memory (one pair per stream) are put on the stream: ready = k (written
// by the device once the earlier work has completed) and a device-side wait for done >= k
// (written by the host once the collective has finished; done advances only over released
// tickets in order, so a failed later collective never releases an earlier one's waiters). The
// communicator's engine brackets the collective with the StreamHook: before() waits, bounded by the
// deadline, for "ready" and stages the inputs into host memory; the host algorithms run there;
// after() copies the outputs back, waits for the copies and writes "done", which releases the
// stream. A collective that fails, or never runs (aborted communicator), still releases the stream,
// from the destructor; its error surfaces from Work::test/wait and the next call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/common/deadline.hpp"
#include "src/exec/device.hpp"

namespace ringlet::exec {

// What the engine calls around one collective; the engine knows nothing else of streams.
class StreamHook {
 public:
  virtual ~StreamHook() = default;
  // Before the collective's data moves: waits for the stream's earlier work (bounded by
  // `deadline`; Error(timeout) after it) and prepares the inputs.
  virtual void before(Deadline deadline) = 0;
  // After the collective has finished on the host: completes it on the device and releases
  // the stream's later work.
  virtual void after() = 0;
};

// One collective's tensors on the device, staged through host memory.
class StagedStreamCollective final : public StreamHook {
 public:
  struct Buffer {
    Tensor tensor;
    bool input = false;   // copied to the host before the collective
    bool output = false;  // copied back to the device after it
  };
  // On the calling thread. Checks that every tensor is CUDA memory of one device that `d` has
  // (invalid_argument naming `rank` otherwise) and that the buffers nest or are disjoint,
  // allocates the staging memory and enqueues the two flags on `stream`.
  StagedStreamCollective(Device& d, void* stream, int rank, const char* what,
                         std::vector<Buffer> buffers);
  ~StagedStreamCollective() override;
  StagedStreamCollective(const StagedStreamCollective&) = delete;
  StagedStreamCollective& operator=(const StagedStreamCollective&) = delete;

  // The host tensor standing for `t` (one of the buffers, or a tensor inside one).
  Tensor host(const Tensor& t) const;
  void before(Deadline deadline) override;
  void after() override;
  struct StreamState;  // internal: the flags and tickets of one stream

 private:
  struct Range {
    std::byte* device = nullptr;
    std::size_t bytes = 0;
    std::byte* host = nullptr;
  };
  std::byte* host_of(const void* device_ptr) const;
  void release() noexcept;

  Device& device_;
  void* user_stream_;
  int rank_;
  const char* what_;
  int ordinal_ = 0;
  std::vector<Buffer> buffers_;
  std::vector<Range> roots_;  // the outermost ranges, each with its staging
  std::byte* staging_ = nullptr;
  std::size_t staging_bytes_ = 0;
  std::shared_ptr<StreamState> state_;  // the flags of the caller's stream
  std::uint32_t ticket_ = 0;
  void* copy_stream_ = nullptr;
  bool released_ = false;
};

// The device of the process, for a collective `what` of `rank` on CUDA memory; throws
// Error(invalid_argument) naming the rank and the reason when there is none.
Device& require_device(int rank, const char* what);

}  // namespace ringlet::exec
