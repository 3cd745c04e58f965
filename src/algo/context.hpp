// SPDX-License-Identifier: Apache-2.0
// What an algorithm needs from its communicator: connections, scratch memory and its
// registration, the executor, the local group, the plan's post-scale step and the deadline.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "groups/local_group.hpp"
#include "include/ringlet/ringlet.hpp"
#include "src/common/deadline.hpp"
#include "src/common/helper_thread.hpp"
#include "src/common/partition.hpp"
#include "src/engine/task.hpp"
#include "src/exec/executor.hpp"
#include "src/fingerprint.hpp"
#include "transports/transport.hpp"

namespace ringlet::algo {

// The communicator's services an algorithm may need beyond data movement.
class Runtime {
 public:
  // Aborts the communicator: stops the other side of an algorithm (a helper thread, a local
  // group wait) when one side fails. Thread-safe, never throws.
  virtual void abort() noexcept = 0;
  // Runs first on a helper thread an algorithm starts (NUMA pinning). Never throws.
  virtual void on_helper_thread() noexcept {}
  // The communicator's persistent helper thread for algorithms that overlap two activities
  // (one job at a time); null: the algorithm makes its own.
  virtual HelperThread* helper() noexcept { return nullptr; }
  // The algorithm enters a named step ("ring reduce-scatter"), for the timeline; never throws.
  virtual void trace_step(const char* step) noexcept { (void)step; }

 protected:
  ~Runtime() = default;
};

// The plan's post-scale step: avg is sum followed by this division by the world size, once
// per element, applied by the algorithm to the part of the result this rank owns before it
// is distributed (so that each element is divided exactly once, on one rank).
struct PostScale {
  int divisor = 1;
  void operator()(const exec::Executor& exec, std::byte* data, std::size_t count,
                  DataType type) const {
    if (divisor != 1 && count > 0) exec.scale(data, count, type, divisor);
  }
};

// Filled by Communicator::Impl for one collective. Algorithms use only the connections, the
// scratch memory and the executor given here, all owned by the communicator.
struct Context {
  int rank = 0;
  int size = 1;
  // Connection to each peer this rank talks to, indexed by rank (null where none).
  std::span<transport::Connection* const> peers;
  transport::Connection* left = nullptr;   // rank - 1
  transport::Connection* right = nullptr;  // rank + 1
  // Receive slots of the pipelined ring: `slots` slices of `slice_bytes` each, registered.
  std::span<std::byte> ring_scratch;
  const transport::MemoryRegion* ring_scratch_mr = nullptr;
  std::size_t slice_bytes = 0;
  int slots = 0;
  // Posts outstanding per connection and direction the transport allows; 0: no limit.
  std::size_t max_outstanding = 0;
  // Staging of the latency-optimal path; at least twice the crossover size, registered.
  std::span<std::byte> small_scratch;
  const transport::MemoryRegion* small_scratch_mr = nullptr;
  // Where reductions and copies run (the memory kind of the collective's buffers).
  const exec::Executor* exec = &exec::host_executor();
  // The ranks of this node, where the plan uses them.
  groups::LocalGroup* local = nullptr;
  // The collective being run (for the local group's agreement and for messages).
  const Fingerprint* fp = nullptr;
  PostScale post_scale;
  Runtime* runtime = nullptr;
  Deadline deadline;
  // How the algorithm's awaits behave (blocking on the caller's thread, or polled by the
  // progress engine) and where it records the peer it waits for. Never null while it runs.
  engine::Driver* driver = nullptr;
};

}  // namespace ringlet::algo
