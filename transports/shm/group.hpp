// SPDX-License-Identifier: Apache-2.0
// ShmGroup: the local ranks of one node reducing through one POSIX shared-memory segment.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/bootstrap/store.hpp"
#include "src/common/deadline.hpp"
#include "transports/transport.hpp"

namespace ringlet::transport::shm {

struct ShmOptions {
  int local_rank = 0;
  int local_size = 1;
  int rank = 0;                                   // global rank, for messages
  std::vector<int> local_to_global;               // global rank of each local rank; empty: local
  std::string job_id;                             // unique per communicator, from the rendezvous
  std::shared_ptr<bootstrap::Store> store;        // private to this communicator
  const std::atomic<bool>* abort_flag = nullptr;  // checked in every wait loop
  std::chrono::milliseconds timeout{300000};      // not used by the calls: each takes a deadline
  std::size_t chunk_bytes = 0;                    // per-rank slot size; 0: kDefaultChunkBytes
  // More local ranks than cores: waits yield at once instead of spinning first.
  bool oversubscribed = false;
};

// ringlet::transport::shm::ShmGroup
//
// L = local_size ranks of one node sharing one segment, "/ringlet-<job_id>-<g0>-<pid>" (g0:
// the global rank of local rank 0, pid: its creator's), of bounded size (a few slots of
// chunk_bytes per rank, whatever the buffer size); the collectives loop over chunks of the
// caller's buffer. The segment is unlinked before create() returns on any rank, so a crash
// leaves nothing in /dev/shm.
//
// Owned by one rank (one thread at a time), except interrupt(), which any thread may call.
// Calls must be matched: the same sequence of collectives with the same count, type, op and
// root on every local rank. Results are identical bit for bit on every rank: each element is
// reduced once, in local-rank order 0, 1, ..., L-1.
//
// Errors (ringlet::Error): mismatch when local ranks disagree on a call (on every local rank);
// timeout at the deadline, naming the local ranks waited on by their global rank; peer_lost
// when a local peer died (noticed after about a second of waiting) or failed in a call;
// aborted when the abort flag is set. After any of these the group is unusable: later calls
// throw peer_lost or aborted. invalid_argument for bad arguments (nothing is damaged then).
class ShmGroup final : public LocalGroup {
 public:
  // The default slot size per rank (measured; docs/transport-shm.md).
  static constexpr std::size_t kDefaultChunkBytes = std::size_t{256} << 10;
  // Messages up to this many bytes take the low-latency path (one publish per rank).
  static constexpr std::size_t kSmallBytes = std::size_t{16} << 10;

  // Collective over the local ranks: local rank 0 creates the segment and publishes its name
  // through options.store; the others map it; local rank 0 unlinks it once all have mapped it.
  static std::unique_ptr<ShmGroup> create(const ShmOptions& options, Deadline deadline);
  ~ShmGroup() override;
  ShmGroup(const ShmGroup&) = delete;
  ShmGroup& operator=(const ShmGroup&) = delete;

  int local_rank() const noexcept;
  int local_size() const noexcept;
  // The segment's (already unlinked) name; empty when local_size() == 1.
  const std::string& segment_name() const noexcept;

  // In place, over `count` elements of `data`. avg reduces as sum: the caller divides.
  std::string_view name() const noexcept override { return "shm"; }
  void allreduce(void* data, std::size_t count, DataType type, ReduceOp op,
                 Deadline deadline) override;
  // After it, local rank i's shard (shard_range(count, L, i)) of its own `data` holds the
  // reduction over all local ranks of that shard; the rest of `data` is unspecified.
  void reduce_scatter(void* data, std::size_t count, DataType type, ReduceOp op,
                      Deadline deadline) override;
  // Every local rank contributes its shard of `data`; after it every rank's `data` is whole.
  void allgather(void* data, std::size_t count, DataType type, Deadline deadline) override;
  // Copies `bytes` bytes of local_root's `data` into every local rank's `data`.
  void broadcast(void* data, std::size_t bytes, int local_root, Deadline deadline) override;
  void barrier(Deadline deadline) override;

  // A collective of the communicator that runs over another transport: every local rank
  // checks here that the others entered the same one (mismatch otherwise, as for this
  // group's own calls), so that a rank in a shared-memory allreduce and a rank in, say, a
  // TCP broadcast both fail with mismatch instead of waiting for each other.
  // Tells the other local ranks that this one has failed outside the group (for example its
  // communicator was aborted), so that none waits for it until its deadline. Thread-safe.
  void mark_failed(ErrorCode code) noexcept;

  enum class Call : std::uint32_t { allreduce = 6, broadcast, allgather, reduce_scatter, dup };
  void agree(Call call, std::size_t count, DataType type, ReduceOp op, int root, Deadline deadline);

  // Wakes a wait of this rank so that it sees the abort flag at once (otherwise within
  // about 50 ms). Thread-safe, never throws.
  void interrupt() noexcept;

  // Shard i of `count` elements among local_size ranks: [begin, end) in elements. Shards are
  // contiguous, in local-rank order, and their sizes differ by at most one element.
  static std::pair<std::size_t, std::size_t> shard_range(std::size_t count, int local_size, int i);

 private:
  class Impl;
  explicit ShmGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringlet::transport::shm
