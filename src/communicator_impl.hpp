// SPDX-License-Identifier: Apache-2.0
// Communicator::Impl: lifecycle and dispatch. It validates calls, runs each collective
// through its fingerprint check and the plan the selection table gives, and spreads
// failures; configuration, job layout, selection and construction of transports and local
// groups live in their own modules (docs/architecture.md).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "groups/local_group.hpp"
#include "include/ringlet/ringlet.hpp"
#include "src/algo/context.hpp"
#include "src/algo/select.hpp"
#include "src/bootstrap/store.hpp"
#include "src/common/helper_thread.hpp"
#include "src/common/job_context.hpp"
#include "src/config.hpp"
#include "src/engine/task.hpp"
#include "src/engine/work.hpp"
#include "src/exec/stream.hpp"
#include "src/fingerprint.hpp"
#include "src/hang_report.hpp"
#include "src/job_layout.hpp"
#include "transports/transport.hpp"

namespace ringlet {
namespace timeline {
class Lane;
}

// Where a communicator's current collective stands, read from any thread (Training's
// timeline, the hang report, deadline errors): a copy of the progress record's relaxed
// atomics, so fields may be from two neighbouring moments. `seq` 0: no collective yet.
struct ProgressSnapshot {
  std::uint64_t seq = 0;
  std::string fingerprint;   // describe(fp): "allreduce(count=1024, float32, sum)"
  std::string phase;         // "idle", "agreeing in the local group", "exchanging
                             // fingerprints", "moving data"
  std::uint32_t step = 0;    // completions the collective has consumed so far
  int peer = -1;             // the peer it waits for now; -1: none (computing, or idle)
  bool peer_send = false;    // waiting for a send to `peer` (else a receive from it)
  long long since_ns = 0;    // steady clock: when the wait for `peer` began, else the start
  long long started_ns = 0;  // steady clock: when the collective started
};

// The snapshot of `comm`'s progress record (see Communicator::Impl::progress_snapshot).
ProgressSnapshot progress_snapshot(const Communicator& comm);

// Owned by Communicator. Collectives are issued by one user thread at a time; abort() may
// come from any thread and touches only aborted_ and the interrupts of the transport and
// local group.
//
// The progress engine: every collective is a resumable task (src/engine/task.hpp). It runs on
// the calling thread, driven to completion with the transport's blocking waits, when nothing
// is pending (always for a blocking call, for an asynchronous one when it is small);
// otherwise it is queued and the engine thread (started at the first queued collective)
// advances the queue's head step by step in issue order, sleeping in the transport's
// wait_any() (its descriptors and eventfd) while the task awaits a request, and on a
// condition variable while the queue is empty. One collective is in flight at a time, the
// caller's or the engine's, so the transport's per-connection FIFO order, the local group
// and the scratch memory keep a single user.
class [[gnu::visibility("hidden")]] Communicator::Impl final : private algo::Runtime {
 public:
  // Who this rank is, as the launcher (or Options) said; negative local fields: computed.
  struct Identity {
    int rank = 0;
    int size = 1;
    int local_rank = -1;
    int local_size = -1;
    std::string node_id;
  };

  // Rendezvous and connect. A request_stop() on `stop` (Options::stop, or the parent's
  // abort() while dup() builds this child) interrupts it with ErrorCode::aborted. Any
  // exception of set-up leaves as a ringlet::Error, after fail() has told the peers.
  Impl(const Identity& id, const Config& config, std::shared_ptr<bootstrap::Store> base_store,
       std::string prefix, std::stop_token stop = {});
  ~Impl();

  int rank() const noexcept { return layout_.rank; }
  int size() const noexcept { return layout_.size; }
  int local_rank() const noexcept { return layout_.local_rank; }
  int local_size() const noexcept { return layout_.local_size; }
  int node_count() const noexcept { return layout_.node_count(); }
  // The current (or last) collective's progress record; any thread, never blocks.
  ProgressSnapshot progress_snapshot() const;

  // Each collective returns its Work state when `async` and it has not finished at once;
  // null otherwise (a blocking call has then finished, or thrown).
  using WorkPtr = std::shared_ptr<detail::WorkState>;
  std::unique_ptr<Impl> dup();
  WorkPtr allreduce(Tensor in, Tensor out, ReduceOp op, bool async);
  WorkPtr allreduce_list(std::span<const Tensor> tensors, ReduceOp op, bool async);
  WorkPtr broadcast(Tensor in, Tensor out, int root, bool async);
  WorkPtr allgather(Tensor in, Tensor out, bool async);
  WorkPtr reduce_scatter(Tensor in, Tensor out, ReduceOp op, bool async);
  WorkPtr barrier(bool async);
  void abort() noexcept override;
  // The stream hook of the next collective issued (the CudaStream overloads,
  // src/communicator_stream.cpp, set it just before calling one of the above; it is consumed
  // by issue(), and cleared by the overload if the call throws before).
  std::shared_ptr<exec::StreamHook> next_hook_;

  // For layers above the communicator (the GradientReducer): the resolved configuration and
  // the timeline lane (null unless RINGLET_TIMELINE is set).
  const Config& config() const noexcept { return config_; }
  timeline::Lane* timeline() const noexcept { return timeline_.get(); }

  // src/registration.cpp.
  Registration register_buffer(Tensor buffer);

 private:
  // How run() checks that the ranks agree on the collective: by exchanging fingerprints with
  // both ring neighbours before the data moves; inside the body (recursive doubling carries
  // the fingerprint in every message); or not at all here (the local group compares them).
  enum class Check { before, in_body, none };
  // Owned by the communicator, not by a stack frame: a receive still posted when a
  // collective fails points into memory that lives as long as the transport.
  struct FingerprintExchange {
    WireFingerprint mine{};
    WireFingerprint theirs[2]{};
    int neighbours[2] = {0, 0};
    transport::Request recv[2]{};
    transport::Request send[2]{};
    int n = 0;
    bool received[2] = {false, false};
  };
  // One queued collective: makes its task (fingerprint, checks, body, failure handling),
  // which the engine drives with the given driver, and its Work.
  struct Task {
    std::function<engine::Task(engine::Driver&)> start;
    WorkPtr work;
  };
  // A tensor list as the fingerprint digests it and neighbours exchange it on a mismatch.
  struct ListEntry {
    std::uint64_t count;
    std::uint64_t type;
  };

  void set_up(const Identity& id);
  void rendezvous(const Identity& id, Deadline deadline);
  // A rank that found a disagreement at the rendezvous says so; rank 0 (the store's server)
  // waits until every rank has (at most 5 s), so that none loses the store first.
  void disagreement_seen(const Identity& id, Deadline deadline) noexcept;
  void connect_peers(Deadline deadline);
  // Writes one of this rank's records (info/<r>, cfg/<r>, addr/<r>, job) as the holder of
  // its claim, so that no other process can replace it: a record that another process wrote
  // first is Error(mismatch) naming this rank.
  void publish(std::string_view key, std::span<const std::byte> value);
  void publish(std::string_view key, std::string_view text) {
    publish(key, std::as_bytes(std::span(text.data(), text.size())));
  }
  void register_scratch();
  // RINGLET_ALGO=model: probes the links and returns the cost model's allreduce ranges
  // (empty where the local group serves every size).
  std::vector<algo::Range> model_ranges(const algo::SelectInputs& in, Deadline deadline);
  // One collective as a task: fingerprint check, then `body`. Any error aborts the
  // communicator, is reported to the peers, and is thrown with the collective's name.
  // `body(deadline, fp, driver)` returns an engine::Task, or nothing (a blocking step).
  // `body` outlives the task.
  template <class Body>
  engine::Task run(Fingerprint fp, Body & body, Check check, engine::Driver & driver);
  // Gives the collective its sequence number, then runs it here when nothing is pending
  // (and the call is blocking or `small`), else queues it for the engine; a blocking call
  // waits for it.
  template <class Body>
  WorkPtr issue(Fingerprint fp, Body && body, Check check, bool async, bool small);
  // The body of a collective on a CUDA stream: the stream hook before and after it.
  template <class Body>
  struct StreamBody {
    std::shared_ptr<exec::StreamHook> hook;
    Body body;
    void prepare() {
      if constexpr (requires { body.prepare(); }) body.prepare();
    }
    // A task: the body may itself be one (the network algorithms) or a blocking step.
    engine::Task operator()(Deadline deadline, Fingerprint f, engine::Driver& driver) {
      hook->before(deadline);
      if constexpr (std::is_void_v<decltype(body(deadline, f, driver))>) {
        body(deadline, f, driver);
      } else {
        co_await body(deadline, f, driver);
      }
      hook->after();
    }
  };
  void enqueue(Task task);
  void engine_main() noexcept;
  // The engine's sleep while its task awaits a request: the transport's descriptors.
  void sleep_until_progress(const engine::Driver& driver) noexcept;
  // The longest sleep of the engine on a Pollable before it polls again (and lets the
  // transport progress); the futex wake-up ends it sooner.
  static constexpr std::chrono::microseconds kPollSleep{2000};
  Clock::time_point last_transport_poll_{};  // engine thread only
  // Waits for the pending collectives, bounded by the deadline, then aborts; stops the engine.
  void stop_engine() noexcept;
  // The fused list: this rank's (count, type) pairs, compared with a neighbour's when the
  // digests differ; throws a mismatch naming the first differing tensor.
  void name_list_difference(const std::vector<int>& peers, const Fingerprint& fp,
                            Deadline deadline);
  engine::Task reduce_list(const std::vector<Tensor>& tensors, ReduceOp op, Fingerprint fp,
                           Deadline deadline, engine::Driver& driver);
  HelperThread* helper() noexcept override;
  void post_fingerprints(FingerprintExchange & x, const Fingerprint& fp);
  // Awaits both neighbours' fingerprints and compares them (a task).
  engine::Task exchange_fingerprints(FingerprintExchange & x, Fingerprint fp, Deadline deadline,
                                     engine::Driver & driver);
  // Compares the fingerprints that have arrived; never blocks.
  void check_arrived_fingerprints(FingerprintExchange & x, const Fingerprint& fp);
  // A failure explained by a neighbour's fingerprint, when one has arrived and disagrees.
  void explain_with_fingerprints(FingerprintExchange & x, const Fingerprint& fp, const Error& e);
  // Recursive doubling with the fingerprint in front of every message.
  engine::Task recursive_doubling(algo::Context & ctx, std::byte * buf, std::size_t count,
                                  DataType type, ReduceOp op, Fingerprint fp);
  engine::Task execute_allreduce(algo::Plan plan, const std::byte* src, std::byte* dst,
                                 std::size_t count, DataType type, Fingerprint fp,
                                 Deadline deadline, engine::Driver& driver);
  void fail(const Error& e) noexcept;
  // fail(e), then throws e with the collective's name and sequence number.
  [[noreturn]] void fail_and_throw(const Error& e, const Fingerprint& fp);
  [[noreturn]] void fail_out_of_memory(const Fingerprint& fp);
  // The context of one collective on buffers of `memory`: its executor is that kind's.
  algo::Context context(Deadline deadline, MemoryKind memory, const Fingerprint* fp,
                        const algo::Plan* plan, engine::Driver* driver);
  // Throws aborted once the communicator is aborted; tells the peers first when this rank's
  // own abort() is not yet propagated and this thread may use the transport (`exclusive`).
  void check_usable(bool exclusive);
  void check_tensor(const Tensor& t, const char* what) const;
  // avg is defined for floating-point types only: invalid_argument otherwise.
  void check_op(DataType type, ReduceOp op, const char* what) const;
  void on_helper_thread() noexcept override;
  void trace_step(const char* step) noexcept override;

  Config config_;
  JobLayout layout_;
  JobContext job_;
  std::string node_id_;
  int numa_node_ = -1;  // where this rank's helper threads run; -1: anywhere
  std::shared_ptr<bootstrap::Store> base_store_;
  std::shared_ptr<bootstrap::Store> store_;  // prefix store of this communicator
  std::string prefix_;
  std::string claim_key_;    // claim/<rank> in store_
  std::string claim_token_;  // random: what makes this process the claimant
  int dups_ = 0;
  std::uint64_t seq_ = 0;
  std::atomic<bool> aborted_{false};
  std::stop_source abort_source_;  // stopped by abort(): interrupts a child's set-up
  std::stop_source store_stop_;    // stopped by abort() and the set-up's stop: ends store waits
  std::mutex fail_mutex_;          // guards propagated_ and abort_reason_ (engine and caller)
  bool propagated_ = false;        // the failure has been reported to the peers
  std::string abort_reason_;
  FingerprintExchange fx_;
  // The progress record of the collective being run (at most one runs at a time): always
  // on, a few relaxed stores per collective and per completion awaited; deadline errors
  // quote it, progress_snapshot() copies it.
  struct ProgressRecord {
    std::atomic<std::uint64_t> seq{0};
    std::atomic<int> phase{0};           // a Phase
    std::atomic<long long> since_ns{0};  // when the collective started (steady clock)
    // The fingerprint's fields.
    std::atomic<int> kind{0};
    std::atomic<int> type{0};
    std::atomic<int> op{0};
    std::atomic<std::int32_t> root{-1};
    std::atomic<std::uint64_t> count{0};
    engine::AwaitRecord await;  // step, peer awaited and since when (the task's awaits)
  };
  enum Phase { idle, local_agreement, fingerprint_exchange, algorithm };
  void set_phase(Phase phase) noexcept;
  // "collective #7 allreduce(..), exchanging fingerprints with ranks 1 and 3, started 30001 ms ago"
  std::string describe_progress(const Fingerprint& fp) const;
  // The record as a hang report reads it (src/hang_report.hpp); fp and peer when known.
  HangSnapshot snapshot(const Fingerprint* fp, int peer) const;
  ProgressRecord progress_;
  // RINGLET_TIMELINE: this communicator's lane, fed at each phase change; null when off.
  std::unique_ptr<timeline::Lane> timeline_;
  int hang_id_ = 0;  // the RINGLET_HANG_SIGNAL registration
  std::vector<ListEntry> list_mine_;
  std::vector<std::uint64_t> list_lengths_;  // [0] mine, [1..2] the neighbours'
  std::vector<std::vector<ListEntry>> list_theirs_;
  std::vector<std::byte> fusion_;  // the fusion buffer: allocated and touched at set-up
  // The progress engine.
  std::mutex engine_mutex_;
  std::condition_variable engine_cv_;   // work queued, or stop
  std::condition_variable drained_cv_;  // a collective finished
  std::deque<Task> queue_;
  std::atomic<std::size_t> pending_{0};  // queued or running on the engine
  bool stopping_ = false;
  std::thread engine_;
  std::unique_ptr<HelperThread> helper_;  // the hierarchical pipeline's network side
  algo::SelectTable table_;
  transport::TransportTraits traits_;
  std::unique_ptr<transport::Transport> transport_;
  std::unique_ptr<groups::LocalGroup> local_;  // host memory, ranks of this node, when several
  std::map<int, std::unique_ptr<transport::Connection>> connections_;
  std::vector<transport::Connection*> peers_;  // indexed by rank
  // Scratch memory, allocated, touched and registered once.
  std::vector<std::byte> ring_scratch_;
  std::vector<std::byte> small_scratch_;
  std::unique_ptr<transport::MemoryRegion> ring_scratch_mr_;
  std::unique_ptr<transport::MemoryRegion> small_scratch_mr_;
  std::vector<std::byte> staging_;  // out-of-place reduce_scatter accumulates here
  std::size_t slice_bytes_ = 0;
};

}  // namespace ringlet
