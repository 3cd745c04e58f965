// SPDX-License-Identifier: Apache-2.0
// The rdma transport's progress engine: one device context, protection domain, completion
// queue and completion channel per transport, shared (owned) by the transport, its
// connections and its memory regions, and driven by the calling thread inside test() and
// wait(), like the tcp transport's Loop.
//
// Protocol per connection (docs/rdma.md): the receiver owns `slots` receive slots of
// `slot_bytes` each, registered for remote write. A send is cut into chunks of at most one
// slot; chunk n is written with RDMA WRITE WITH IMM into slot n % slots of the peer, on queue
// pair n % qps, and costs one credit; the receiver copies it out into the posted receive
// (FIFO) and returns the credit in the immediate of its next write (or a zero-length
// credits-only write). Receive work requests are posted for every write that can be in
// flight (data within the credits, credit returns within the credits, one error record), so
// the peer never meets "receiver not ready".
#pragma once

#include <infiniband/verbs.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/common/deadline.hpp"
#include "src/common/unique_fd.hpp"
#include "transports/rdma/verbs.hpp"
#include "transports/rdma/wire.hpp"

namespace ringlet::transport::rdma {

// Page-aligned memory owned by a channel (slots, staging).
struct Buffer {
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void allocate(std::size_t bytes);
  ~Buffer();
  std::byte* data = nullptr;
  std::size_t size = 0;
};

struct SendOp {
  std::uint64_t id = 0;
  const std::byte* data = nullptr;
  std::size_t length = 0;
  std::uint32_t lkey = 0;  // the caller's registration; 0: stage (or inline)
  std::size_t issued = 0;  // bytes handed to the NIC
  bool started = false;    // a zero-length send still posts one chunk
  int outstanding = 0;     // chunks posted whose completion has not been polled
  bool done = false;
  std::optional<Error> error;
};

struct RecvOp {
  std::uint64_t id = 0;
  std::byte* data = nullptr;
  std::size_t length = 0;
  std::size_t got = 0;
  bool done = false;
  std::optional<Error> error;
};

struct Qp {
  ibv_qp* qp = nullptr;
  std::uint32_t psn = 0;
  int sq_used = 0;  // send work requests whose completion has not been polled
};

struct Arrived {
  bool present = false;
  bool last = false;
  std::uint32_t bytes = 0;
};

// Everything about one peer. Owned by its RdmaConnection; known to the Engine while it lives.
struct Channel {
  int peer = -1;
  std::uint32_t id = 0;  // in every work request id
  std::vector<Qp> qps;
  int sq_depth = 0, rq_depth = 0;
  int cq_entries = 0;  // reserved in the engine's completion queue
  std::size_t slots = 0, slot_bytes = 0;
  Buffer recv_area;  // slots, then the error area
  Buffer stage;      // staging slots, then the outgoing error record
  ibv_mr* recv_mr = nullptr;
  ibv_mr* stage_mr = nullptr;
  // The peer's receive area.
  std::uint64_t remote_addr = 0;
  std::uint32_t remote_rkey = 0;

  // Sends, in post order; the front ones may be complete but not yet observed.
  std::deque<SendOp> sends;
  std::uint64_t sends_posted = 0;
  std::uint64_t chunks_sent = 0;           // chunk sequence numbers handed out
  std::size_t credits = 0;                 // free slots at the peer
  std::vector<std::uint64_t> chunk_owner;  // slot -> the send whose chunk it carries
  // Slot -> its last chunk's completion has not been polled (its staging copy and its
  // owner's count are still in use).
  std::vector<bool> slot_busy;
  std::size_t inline_bytes = 0;  // what the queue pairs accept inline

  // Receives, in post order.
  std::deque<RecvOp> recvs;
  std::uint64_t recvs_posted = 0;
  std::vector<Arrived> arrived;      // slot -> the chunk waiting there
  std::uint64_t next_chunk = 0;      // the chunk the head receive consumes next
  std::uint64_t chunks_arrived = 0;  // highest arrived chunk + 1
  std::size_t credits_owed = 0;      // slots freed, not yet told to the peer

  // The first failure: a failed completion, the peer's error record, a mismatch. Receives
  // that still find their chunks complete; the others fail with it. `failure_after`: the
  // peer's chunks sent before its failure (receives beyond them fail).
  std::optional<Error> failure;
  std::uint64_t failure_after = 0;
  bool local_failure = false;  // our queue pairs failed: nothing more will arrive
  bool error_sent = false;
  bool error_pending = false;  // the error record's write is outstanding
  bool probe_pending = false;
  Clock::time_point last_heard{};
};

class Engine {
 public:
  Engine(const Verbs& verbs, const std::string& device, int port, int gid_index, int rank,
         const std::atomic<bool>* abort_flag, bool oversubscribed);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const Verbs& verbs() const noexcept { return v_; }
  ibv_context* context() const noexcept { return ctx_; }
  ibv_pd* pd() const noexcept { return pd_; }
  ibv_cq* cq() const noexcept { return cq_; }
  int port() const noexcept { return port_; }
  int rank() const noexcept { return rank_; }
  const ibv_port_attr& port_attr() const noexcept { return port_attr_; }
  int gid_index() const noexcept { return gid_index_; }
  const ibv_gid& gid() const noexcept { return gid_; }
  const std::string& device() const noexcept { return device_; }
  int event_fd() const noexcept { return event_fd_.get(); }
  // The completion channel's fd: readable while completion events are pending (for an
  // asynchronous engine that sleeps on the transport).
  int completion_fd() const noexcept;

  // Creates the channel's queue pairs, buffers and registrations and posts its receives.
  std::unique_ptr<Channel> make_channel(int peer, int qps);
  // Moves its queue pairs to RTS towards the peer's record.
  void connect_channel(Channel& c, const ConnectionInfo& theirs);
  void add(Channel* c);
  void remove(Channel* c) noexcept;
  void destroy_channel(Channel& c) noexcept;

  std::uint64_t post_send(Channel& c, std::span<const std::byte> data, std::uint32_t lkey);
  std::uint64_t post_recv(Channel& c, std::span<std::byte> data);
  bool test_send(Channel& c, std::uint64_t id);
  bool test_recv(Channel& c, std::uint64_t id);
  void wait_send(Channel& c, std::uint64_t id, Deadline deadline);
  void wait_recv(Channel& c, std::uint64_t id, Deadline deadline);

  void report_failure(ErrorCode code, int origin_rank, std::string_view cause) noexcept;
  void interrupt() noexcept;

  // User registrations (Transport::register_user_memory), which posts with no region look up
  // by address. Thread-safe. No cache: an entry lives exactly as long as its region.
  void add_user_region(const std::byte* base, std::size_t size, std::uint32_t lkey);
  void remove_user_region(std::uint32_t lkey) noexcept;
  // The lkey of a live user registration covering [data, data + size), or 0.
  std::uint32_t user_lkey(const std::byte* data, std::size_t size) const;
  void check_abort() const;

 private:
  void progress();
  void on_completion(const ibv_wc& wc);
  void pump(Channel& c);
  void consume(Channel& c);
  void post_chunk(Channel& c, SendOp& op);
  bool post_credits(Channel& c);
  void post_probe(Channel& c);
  void post_error_record(Channel& c, ErrorCode code, int origin, std::string_view cause);
  void post_recv_wr(Channel& c, int qp_index);
  void fail_channel(Channel& c, Error e, bool local);
  void apply_failure(Channel& c);
  void release_send(Channel& c, SendOp& op) noexcept;
  void wait_until(Channel& c, bool is_send, std::uint64_t id, Deadline deadline);
  void block(int timeout_ms);
  SendOp* find_send(Channel& c, std::uint64_t id);
  RecvOp* find_recv(Channel& c, std::uint64_t id);
  [[noreturn]] void throw_op(Channel& c, bool is_send, std::uint64_t id, Error e);

  const Verbs& v_;
  std::string device_;
  int port_ = 1;
  int rank_ = 0;
  const std::atomic<bool>* abort_flag_ = nullptr;
  bool oversubscribed_ = false;
  ibv_context* ctx_ = nullptr;
  ibv_pd* pd_ = nullptr;
  ibv_comp_channel* chan_ = nullptr;
  ibv_cq* cq_ = nullptr;
  int cq_capacity_ = 0;
  int cq_reserved_ = 0;
  unsigned unacked_events_ = 0;
  ibv_port_attr port_attr_{};
  int gid_index_ = 0;
  ibv_gid gid_{};
  UniqueFd event_fd_;
  std::uint32_t next_channel_id_ = 1;
  std::unordered_map<std::uint32_t, Channel*> channels_;
  struct UserRegion {
    const std::byte* base;
    std::size_t size;
    std::uint32_t lkey;
  };
  mutable std::mutex user_mutex_;
  std::vector<UserRegion> user_regions_;  // guarded by user_mutex_
};

}  // namespace ringlet::transport::rdma
