// SPDX-License-Identifier: Apache-2.0
// LocalGroup: the ranks of one node reducing through node-local memory (shared memory for
// host buffers; NCCL for CUDA buffers with "GPU II"). One implementation per folder under
// groups/; the factory (transports/factory.hpp) makes one per memory kind.
#pragma once

#include <cstddef>
#include <string_view>

#include "include/ringlet/ringlet.hpp"
#include "src/common/deadline.hpp"
#include "src/engine/task.hpp"
#include "src/exec/executor.hpp"
#include "src/fingerprint.hpp"

namespace ringlet::groups {

// Collective over the local ranks: every local rank makes the same calls in the same order.
// Shard i of `count` elements is [split_begin(count, L, i), split_begin(count, L, i + 1))
// (src/common/partition.hpp): contiguous, in local-rank order.
//
// Data calls reduce through `exec` (whose memory kind is the group's) and treat avg as sum:
// the caller's plan scales once afterwards. Results are identical bit for bit on every local
// rank.
//
// Errors (ringlet::Error): mismatch when local ranks disagree (on every local rank), timeout
// at the deadline naming the ranks waited on, peer_lost when a local peer died or failed,
// aborted when the communicator's abort flag is set. After any of them the group is
// unusable. invalid_argument for bad arguments, with nothing damaged.
//
// Owned by one communicator and used by one thread at a time, except mark_failed() and
// interrupt(), which any thread may call.
class LocalGroup {
 public:
  virtual ~LocalGroup() = default;
  virtual std::string_view name() const noexcept = 0;
  virtual MemoryKind memory() const noexcept = 0;
  virtual int local_rank() const noexcept = 0;
  virtual int local_size() const noexcept = 0;

  // Checks that every local rank entered the collective `fp` of the communicator, which runs
  // over another path (the network); mismatch otherwise. It makes a rank in a local
  // allreduce and a rank in a network broadcast both fail instead of waiting for each other.
  virtual engine::Task agree(const Fingerprint& fp, engine::Driver& driver) = 0;
  // Tells the other local ranks that this one failed outside the group (its communicator
  // was aborted), so that none waits for it until its deadline. Never throws.
  virtual void mark_failed(ErrorCode code) noexcept = 0;
  // As mark_failed(), for a failure this rank noticed in the global rank `lost` (a peer it
  // found dead over the network): the other local ranks hear that `lost` was lost, not that
  // this rank failed. A rank outside the group: as mark_failed(). Never throws.
  virtual void mark_lost(ErrorCode code, int /*lost*/) noexcept { mark_failed(code); }
  // Wakes a wait of this rank (blocking, or the progress engine asleep on a polled task's
  // wait) so that it sees the abort flag at once. Never throws.
  virtual void interrupt() noexcept = 0;

  // The collectives, as resumable tasks (src/engine/task.hpp) to co_await from the
  // collective's task; `fp` is the communicator's collective they serve (for the local ranks'
  // own agreement check and for messages); `driver` gives the deadline and the mode: with a
  // blocking driver every wait on another local rank blocks as it always has (spin, then
  // futex), with a polling one it is checked once and suspends the task (the driver's
  // Pollable), recording the local rank awaited in the driver's record. The task refers to
  // its arguments until it finishes.
  // In place over `count` elements of `data`.
  virtual engine::Task allreduce(void* data, std::size_t count, DataType type, ReduceOp op,
                                 const exec::Executor& exec, const Fingerprint& fp,
                                 engine::Driver& driver) = 0;
  // Afterwards this local rank's shard of `data` holds the reduction over the local ranks;
  // the rest of `data` is unspecified.
  virtual engine::Task reduce_scatter(void* data, std::size_t count, DataType type, ReduceOp op,
                                      const exec::Executor& exec, const Fingerprint& fp,
                                      engine::Driver& driver) = 0;
  // Every local rank contributes its shard of `data`; afterwards `data` is whole everywhere.
  virtual engine::Task allgather(void* data, std::size_t count, DataType type,
                                 const exec::Executor& exec, const Fingerprint& fp,
                                 engine::Driver& driver) = 0;
  // Copies `bytes` bytes of local_root's `data` into every local rank's `data`.
  virtual engine::Task broadcast(void* data, std::size_t bytes, int local_root,
                                 const exec::Executor& exec, const Fingerprint& fp,
                                 engine::Driver& driver) = 0;
  virtual engine::Task barrier(const Fingerprint& fp, engine::Driver& driver) = 0;

  // The blocking forms: the task driven to completion on this thread by a blocking driver
  // with `deadline`.
  void agree(const Fingerprint& fp, Deadline deadline) {
    run_blocking_call(deadline, [&](engine::Driver& d) { return agree(fp, d); });
  }
  void allreduce(void* data, std::size_t count, DataType type, ReduceOp op,
                 const exec::Executor& exec, const Fingerprint& fp, Deadline deadline) {
    run_blocking_call(
        deadline, [&](engine::Driver& d) { return allreduce(data, count, type, op, exec, fp, d); });
  }
  void reduce_scatter(void* data, std::size_t count, DataType type, ReduceOp op,
                      const exec::Executor& exec, const Fingerprint& fp, Deadline deadline) {
    run_blocking_call(deadline, [&](engine::Driver& d) {
      return reduce_scatter(data, count, type, op, exec, fp, d);
    });
  }
  void allgather(void* data, std::size_t count, DataType type, const exec::Executor& exec,
                 const Fingerprint& fp, Deadline deadline) {
    run_blocking_call(deadline,
                      [&](engine::Driver& d) { return allgather(data, count, type, exec, fp, d); });
  }
  void broadcast(void* data, std::size_t bytes, int local_root, const exec::Executor& exec,
                 const Fingerprint& fp, Deadline deadline) {
    run_blocking_call(deadline, [&](engine::Driver& d) {
      return broadcast(data, bytes, local_root, exec, fp, d);
    });
  }
  void barrier(const Fingerprint& fp, Deadline deadline) {
    run_blocking_call(deadline, [&](engine::Driver& d) { return barrier(fp, d); });
  }

 private:
  template <class Make>
  static void run_blocking_call(Deadline deadline, Make&& make) {
    engine::Driver d;
    d.blocking = true;
    d.deadline = deadline;
    engine::run_blocking(make(d), d);
  }
};

}  // namespace ringlet::groups
