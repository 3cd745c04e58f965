// SPDX-License-Identifier: Apache-2.0
// Communicator::Impl: validates calls, checks fingerprints, picks the algorithm, owns the
// transport, the connections and the scratch memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/algo/context.hpp"
#include "src/bootstrap/store.hpp"
#include "transports/shm/group.hpp"
#include "transports/transport.hpp"

namespace ringlet {

// What every rank sends its ring neighbours first in each collective, so that ranks that
// disagree fail with ErrorCode::mismatch instead of exchanging garbage.
enum class CollectiveKind : std::uint8_t {
  allreduce = 1,
  broadcast,
  allgather,
  reduce_scatter,
  barrier,
  dup
};

struct Fingerprint {
  std::uint64_t seq = 0;
  CollectiveKind kind = CollectiveKind::allreduce;
  DataType type = DataType::float32;
  ReduceOp op = ReduceOp::sum;
  std::int32_t root = -1;
  std::uint64_t count = 0;
};

std::string describe(const Fingerprint& f);  // "allreduce(count=1024, float32, sum)"

// The fingerprint as it travels: 32 bytes, host byte order (all ranks of a job share one
// architecture).
struct WireHeader {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint8_t kind;
  std::uint8_t type;
  std::uint8_t op;
  std::uint8_t reserved;
  std::int32_t root;
  std::uint64_t seq;
  std::uint64_t count;
};
static_assert(sizeof(WireHeader) == 32);
WireHeader wire_header(const Fingerprint& fp);

// Owned by Communicator. Used by one user thread at a time; abort() may come from any
// thread and touches only aborted_ and transport_->interrupt().
class [[gnu::visibility("hidden")]] Communicator::Impl {
 public:
  struct Identity {
    int rank = 0;
    int size = 1;
    int local_rank = -1;
    int local_size = -1;
    std::string node_id;
    std::chrono::milliseconds timeout{300000};
  };

  Impl(const Identity& id, std::shared_ptr<bootstrap::Store> base_store, std::string prefix);
  ~Impl();

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  int local_rank() const noexcept { return local_rank_; }
  int local_size() const noexcept { return local_size_; }
  int node_count() const noexcept { return node_count_; }

  std::unique_ptr<Impl> dup();
  void allreduce(Tensor in, Tensor out, ReduceOp op);
  void broadcast(Tensor in, Tensor out, int root);
  void allgather(Tensor in, Tensor out);
  void reduce_scatter(Tensor in, Tensor out, ReduceOp op);
  void barrier();
  void abort() noexcept;

 private:
  void rendezvous(Deadline deadline);
  void connect_peers(Deadline deadline);
  // Runs one collective: sequence number, fingerprint exchange with both ring neighbours,
  // then `body`. Any error aborts the communicator and is passed to the peers.
  // When the fingerprints of the ring neighbours are compared: before the data moves (large
  // messages), after it (small messages: the check overlaps the data exchange; receives are
  // length-checked, so a disagreement cannot overrun a buffer), or not here (the body checks
  // them itself, as the shared-memory collectives do).
  // in_body: the body carries the fingerprint in its own messages (recursive doubling).
  enum class Check { before, after, in_body, none };
  template <class Body>
  // Sets fp.seq, so that the body sees the sequence number.
  void run(Fingerprint & fp, Body && body, Check check = Check::before);
  struct FingerprintExchange {
    WireHeader mine{};
    WireHeader theirs[2]{};
    int neighbours[2] = {0, 0};
    int n = 0;
    bool received[2] = {false, false};
  };
  void post_fingerprints(FingerprintExchange & x, const Fingerprint& fp);
  void compare_fingerprint(int peer, const WireHeader& theirs, const Fingerprint& fp) const;
  // Recursive doubling with the fingerprint in front of every message.
  void recursive_doubling(algo::Context & ctx, std::byte * buf, std::size_t count, DataType type,
                          ReduceOp op, const Fingerprint& fp);
  void check_fingerprints(FingerprintExchange & x, const Fingerprint& fp, Deadline deadline,
                          bool only_arrived);
  void create_local_group(Deadline deadline);
  void hierarchical_allreduce(std::byte * buf, std::size_t count, DataType type, ReduceOp op,
                              Deadline deadline);
  void fail(const Error& e) noexcept;
  algo::Context context(Deadline deadline);
  void check_usable();
  void check_tensor(const Tensor& t, const char* what) const;
  // avg is defined for floating-point types only: invalid_argument otherwise.
  void check_op(DataType type, ReduceOp op, const char* what) const;

  int rank_;
  int size_;
  int local_rank_ = 0;
  int local_size_ = 1;
  int node_count_ = 1;
  int numa_node_ = -1;  // where this rank's network thread runs; -1: anywhere
  std::string node_id_;
  std::vector<int> node_of_rank_;
  std::vector<std::vector<int>> members_;  // ranks of each node, in rank order
  int node_index_ = 0;                     // this rank's node, into members_
  int node_position_ = 0;                  // this rank's index in members_[node_index_]
  // Every node has the same number L > 1 of ranks and there are several nodes: local rank i
  // of every node forms one inter-node ring.
  bool hier_ok_ = false;
  // The whole job is one node with several ranks: allreduce and barrier run in shared memory.
  bool shm_only_ = false;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<bootstrap::Store> base_store_;
  std::shared_ptr<bootstrap::Store> store_;  // prefix store of this communicator
  std::string prefix_;
  int dups_ = 0;
  std::uint64_t job_id_ = 0;
  std::uint64_t seq_ = 0;
  std::atomic<bool> aborted_{false};
  bool propagated_ = false;  // the error has been sent to the peers
  std::string abort_reason_;
  std::string algo_;
  bool hier_fallback_logged_ = false;
  std::size_t crossover_bytes_ = 0;
  std::unique_ptr<transport::Transport> transport_;
  std::unique_ptr<transport::shm::ShmGroup> local_;  // ranks of this node, when several
  std::map<int, std::unique_ptr<transport::Connection>> connections_;
  std::vector<transport::Connection*> peers_;
  std::vector<std::byte> ring_scratch_;
  std::vector<std::byte> small_scratch_;
  std::vector<std::byte> work_;  // out-of-place reduce_scatter staging, grown on demand
  std::size_t slice_bytes_ = 0;
  int slots_ = 0;
};

}  // namespace ringlet
