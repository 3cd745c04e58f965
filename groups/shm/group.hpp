// SPDX-License-Identifier: Apache-2.0
// ShmGroup: the local ranks of one node reducing through one POSIX shared-memory segment.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "groups/local_group.hpp"
#include "include/ringlet/ringlet.hpp"
#include "src/bootstrap/store.hpp"
#include "src/common/deadline.hpp"
#include "src/common/job_context.hpp"
#include "src/engine/task.hpp"
#include "src/exec/executor.hpp"
#include "src/fingerprint.hpp"

namespace ringlet::groups::shm {

struct ShmOptions {
  JobContext job;  // job.rank: global rank (messages); job.job_id; job.abort_flag
  int local_rank = 0;
  int local_size = 1;
  std::vector<int> local_to_global;         // global rank of each local rank; empty: identity
  std::shared_ptr<bootstrap::Store> store;  // private to this communicator
  std::size_t chunk_bytes = 0;              // per-rank slot; 0: kDefaultChunkBytes
  int spin = 50;                            // pause rounds before yielding (Config::shm_spin)
  int yields = 100;                         // yield rounds before sleeping (Config::shm_yields)
  bool oversubscribed = false;              // more local ranks than cores: yield at once
};

// ringlet::groups::shm::ShmGroup
//
// L = local_size ranks of one node sharing one segment, "/ringlet-<job_id>-<g0>-<pid>" (job_id
// in hex; g0: the global rank of local rank 0; pid: its creator's), of bounded size (a few
// slots of chunk_bytes per rank, whatever the buffer size); the collectives loop over chunks of
// the caller's buffer. The segment is unlinked before create() returns on any rank, so a crash
// leaves nothing in /dev/shm.
//
// The contract (matching, shards, errors, threads) is LocalGroup's (groups/local_group.hpp).
// Every element is reduced once, in local-rank order 0, 1, ..., L-1, so results are identical
// bit for bit on every rank. A local peer that died is noticed after about a second of
// waiting (peer_lost). After an error, later calls throw peer_lost or aborted.
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

  std::string_view name() const noexcept override { return "shm"; }
  MemoryKind memory() const noexcept override { return MemoryKind::host; }
  int local_rank() const noexcept override;
  int local_size() const noexcept override;
  // The segment's (already unlinked) name; empty when local_size() == 1.
  const std::string& segment_name() const noexcept;

  // The blocking forms of LocalGroup.
  using LocalGroup::agree;
  using LocalGroup::allgather;
  using LocalGroup::allreduce;
  using LocalGroup::barrier;
  using LocalGroup::broadcast;
  using LocalGroup::reduce_scatter;

  engine::Task agree(const Fingerprint& fp, engine::Driver& driver) override;
  void mark_failed(ErrorCode code) noexcept override;
  void mark_lost(ErrorCode code, int lost) noexcept override;
  // Without it, a blocking wait sees the abort flag within about 50 ms (a polled one at the
  // engine's next poll, within a few ms).
  void interrupt() noexcept override;

  engine::Task allreduce(void* data, std::size_t count, DataType type, ReduceOp op,
                         const exec::Executor& exec, const Fingerprint& fp,
                         engine::Driver& driver) override;
  engine::Task reduce_scatter(void* data, std::size_t count, DataType type, ReduceOp op,
                              const exec::Executor& exec, const Fingerprint& fp,
                              engine::Driver& driver) override;
  engine::Task allgather(void* data, std::size_t count, DataType type, const exec::Executor& exec,
                         const Fingerprint& fp, engine::Driver& driver) override;
  engine::Task broadcast(void* data, std::size_t bytes, int local_root, const exec::Executor& exec,
                         const Fingerprint& fp, engine::Driver& driver) override;
  engine::Task barrier(const Fingerprint& fp, engine::Driver& driver) override;

 private:
  class Impl;
  explicit ShmGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringlet::groups::shm
