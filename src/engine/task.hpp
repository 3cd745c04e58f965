// SPDX-License-Identifier: Apache-2.0
// Resumable tasks: a collective written once as a C++20 coroutine that posts what it can and
// co_awaits completions, driven either to completion on the calling thread (blocking: each
// await is the transport's wait(), today's latency path) or step by step by the progress
// engine (polling: each await tests its request and, when it has not completed, suspends;
// the engine sleeps on the transport's descriptors and advances the task again).
//
//   engine::Task ring(Context& ctx) {          // an algorithm
//     Request r = ctx.left->post_recv(...);
//     co_await engine::completion(*ctx.driver, ctx.left, r);
//   }
//   Driver d{.blocking = false, ...};
//   Task t = ring(ctx);
//   while (!advance(t, d)) transport.wait_any(...);   // the engine
//
// The other kind of wait is a Pollable: a word that another process or thread advances (a
// local group's shared-memory flags, the hierarchical pipeline's helper thread). Blocking,
// its await waits as the group always has (a short spin, yields, then a futex wait in
// bounded slices); polled, it checks the word once and suspends the task, recording the
// local peer it waits for (as a global rank) in the AwaitRecord.
//
// A task never blocks in polling mode. The engine's rule while its task is suspended
// (src/communicator.cpp, sleep_until_progress): on a request, it sleeps in the transport's
// wait_any() until a descriptor is ready, interrupt() or the deadline; on a Pollable, it
// spins briefly on the awaited word, then sleeps in a futex wait on it of at most a few
// milliseconds (woken by the peer's publish, abort() and a peer's failure report), and
// between two such sleeps lets the transport move whatever is ready (wait_any(0)), so that
// posted network requests keep progressing; with nothing pending it sleeps on its condition
// variable. Either way it tests the wait again, sees the deadline and the abort flag, and
// resumes the task once the wait is over.
#pragma once

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <utility>

#include "include/ringlet/ringlet.hpp"
#include "src/common/deadline.hpp"
#include "transports/transport.hpp"

namespace ringlet::engine {

// Where a collective stands inside its algorithm, written by the task's awaits: a few
// relaxed stores per completion. Read from any thread (progress snapshots, hang reports).
struct AwaitRecord {
  std::atomic<std::uint32_t> step{0};  // completions consumed so far in this collective
  std::atomic<int> peer{-1};           // the peer awaited now; -1: none (computing)
  std::atomic<long long> since_ns{0};  // when the wait for `peer` began (steady clock)
  std::atomic<int> direction{0};       // 0: a receive, 1: a send
  void reset() noexcept {
    step.store(0, std::memory_order_relaxed);
    peer.store(-1, std::memory_order_relaxed);
    since_ns.store(0, std::memory_order_relaxed);
  }
};

inline long long steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}
// The same clock to the kernel's tick: what the awaits record ("waits since"), cheap enough
// for every completion of the latency path.
inline long long coarse_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(coarse_now().time_since_epoch())
      .count();
}

// A wait on something other than a transport request; see the header comment. An awaitable
// that suspends on one sets Driver::pollable to itself and stays alive (in the suspended
// coroutine's frame) until the engine resumes it.
class Pollable {
 public:
  // Checks once, without blocking: true when the wait is over. Throws the wait's failure
  // (deadline, abort, a lost peer) as a ringlet::Error naming the ranks.
  virtual bool poll() = 0;
  // Sleeps until the awaited word may have changed, a wake-up (interrupt(), a peer's failure
  // report) or `timeout`, whichever comes first. Never throws.
  virtual void sleep(std::chrono::microseconds timeout) noexcept = 0;

 protected:
  ~Pollable() = default;
};

// How a task's awaits behave, and where a polled task is suspended. One per running task,
// used by one thread at a time.
struct Driver {
  // true: every await waits for its request (transport wait()); false: tests it and
  // suspends the task when it has not completed.
  bool blocking = true;
  Deadline deadline = Deadline::max();
  int rank = -1;                  // for messages
  AwaitRecord* record = nullptr;  // may be null
  // While a polled task is suspended: the request it waits for (or the Pollable), and who
  // waits.
  transport::Connection* conn = nullptr;
  Pollable* pollable = nullptr;
  transport::Request request{};
  bool is_send = false;
  std::coroutine_handle<> waiter;
  long long waiting_since_ns = 0;
  // Set while another thread drives the task's transport (the hierarchical pipeline's
  // helper): the engine then sleeps on the Pollable only, never in the transport.
  bool transport_busy = false;
  // A failure of the request's test (or the deadline), delivered to the waiting coroutine.
  std::exception_ptr error;

  void note_wait(transport::Connection* c, bool send, long long now_ns) const noexcept {
    if (record == nullptr) return;
    record->peer.store(c->peer(), std::memory_order_relaxed);
    record->direction.store(send ? 1 : 0, std::memory_order_relaxed);
    record->since_ns.store(now_ns, std::memory_order_relaxed);
  }
  // As note_wait(), for a wait on the node-local peer `peer` (a global rank).
  void note_wait_rank(int peer, long long now_ns) const noexcept {
    if (record == nullptr) return;
    record->peer.store(peer, std::memory_order_relaxed);
    record->direction.store(0, std::memory_order_relaxed);
    record->since_ns.store(now_ns, std::memory_order_relaxed);
  }
  void note_done() const noexcept {
    if (record == nullptr) return;
    record->step.fetch_add(1, std::memory_order_relaxed);
    record->peer.store(-1, std::memory_order_relaxed);
  }
};

// An awaiter that is its own Pollable: the suspend and resume halves every such wait shares
// (the local group's waits, the hierarchical pipeline's); subclasses give await_ready(),
// poll() and sleep().
class PollableAwait : public Pollable {
 public:
  void await_suspend(std::coroutine_handle<> h) noexcept {
    d_.pollable = this;
    d_.waiter = h;
  }
  void await_resume() {
    if (d_.error) std::rethrow_exception(std::exchange(d_.error, nullptr));
  }

 protected:
  explicit PollableAwait(Driver& d) noexcept : d_(d) {}
  ~PollableAwait() = default;
  Driver& d_;
};

// Coroutine frames come from a small per-thread cache of recycled blocks (plain new and
// delete under AddressSanitizer), so that a collective's few frames cost no malloc on the
// latency path once warm.
void* allocate_frame(std::size_t bytes);
void free_frame(void* frame, std::size_t bytes) noexcept;

// A coroutine that returns nothing: co_await it from another task, or drive it with
// advance()/run_blocking(). Move-only; destroys its frame. Starts suspended.
class [[nodiscard]] Task {
 public:
  struct promise_type;
  using Handle = std::coroutine_handle<promise_type>;

  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(Handle h) noexcept {
      auto next = h.promise().continuation;
      return next ? next : std::noop_coroutine();
    }
    void await_resume() const noexcept {}
  };
  struct promise_type {
    static void* operator new(std::size_t bytes) { return allocate_frame(bytes); }
    static void operator delete(void* frame, std::size_t bytes) noexcept {
      free_frame(frame, bytes);
    }
    std::coroutine_handle<> continuation;
    std::exception_ptr error;
    Task get_return_object() noexcept { return Task(Handle::from_promise(*this)); }
    std::suspend_always initial_suspend() const noexcept { return {}; }
    FinalAwaiter final_suspend() const noexcept { return {}; }
    void return_void() const noexcept {}
    void unhandled_exception() noexcept { error = std::current_exception(); }
  };

  Task() noexcept = default;
  explicit Task(Handle h) noexcept : h_(h) {}
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    if (h_) h_.destroy();
  }

  bool done() const noexcept { return !h_ || h_.done(); }
  bool started() const noexcept { return started_; }

  // co_await from another coroutine: runs this one (symmetric transfer), resumes the
  // awaiting one when it finishes, rethrows its exception.
  bool await_ready() const noexcept { return !h_ || h_.done(); }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
    h_.promise().continuation = awaiting;
    return h_;
  }
  void await_resume() const {
    if (h_ && h_.promise().error) std::rethrow_exception(h_.promise().error);
  }

 private:
  friend bool advance(Task& task, Driver& driver);
  Handle h_;
  bool started_ = false;
};

// Waits for one request: `co_await completion(driver, conn, request)`.
struct [[nodiscard]] Completion {
  Driver* d;
  transport::Connection* c;
  transport::Request r;
  bool send;

  bool await_ready() {
    if (d->blocking) {
      d->note_wait(c, send, d->record ? coarse_ns() : 0);
      c->wait(r, d->deadline);
      d->note_done();
      return true;
    }
    if (c->test(r)) {
      d->note_done();
      return true;
    }
    const long long now = coarse_ns();
    d->waiting_since_ns = now;
    d->note_wait(c, send, now);
    return false;
  }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    d->conn = c;
    d->request = r;
    d->is_send = send;
    d->waiter = h;
  }
  void await_resume() {
    if (d->error) std::rethrow_exception(std::exchange(d->error, nullptr));
  }
};

inline Completion received(Driver& d, transport::Connection* c, transport::Request r) {
  return Completion{&d, c, r, false};
}
inline Completion sent(Driver& d, transport::Connection* c, transport::Request r) {
  return Completion{&d, c, r, true};
}

// One step of a polled task: tests the request (or polls the Pollable) it waits for and, once
// it has completed (or failed, or the deadline passed), resumes the task until it waits again.
// Returns true once the task has finished, and rethrows its exception. Never blocks itself.
bool advance(Task& task, Driver& driver);

// Drives `task` to completion on this thread (driver.blocking must be true): the blocking
// form of a collective.
void run_blocking(Task task, Driver& driver);

}  // namespace ringlet::engine
