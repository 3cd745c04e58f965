// SPDX-License-Identifier: Apache-2.0
// Driving resumable tasks: one step (the progress engine) or to completion (the caller).
#include "src/engine/task.hpp"

#include "src/common/check.hpp"
#include "src/common/sanitizers.hpp"

namespace ringlet::engine {
namespace {

#if RINGLET_ASAN
constexpr bool kRecycleFrames = false;  // let ASan see every frame's lifetime
#else
constexpr bool kRecycleFrames = true;
#endif
// Size classes of 64 bytes up to 4 KiB, a few blocks kept per class and thread.
constexpr std::size_t kGrain = 64;
constexpr std::size_t kClasses = 64;
constexpr unsigned kKeep = 8;

struct FrameCache;
// The cache is reached through a pointer in the static TLS block (initial-exec: no
// __tls_get_addr call per frame, which a shared library's own thread_local costs on the
// latency path; 8 bytes, well inside glibc's reserve for dlopen()ed libraries). The cache
// itself is owned by an ordinary thread_local, touched once per thread; after it is
// destroyed at thread exit, frames come from plain new and delete.
[[gnu::tls_model("initial-exec")]] thread_local FrameCache* tls_cache = nullptr;
[[gnu::tls_model("initial-exec")]] thread_local bool tls_cache_gone = false;

struct FrameCache {
  void* blocks[kClasses][kKeep] = {};
  unsigned count[kClasses] = {};
  ~FrameCache() {
    tls_cache = nullptr;
    tls_cache_gone = true;
    for (std::size_t c = 0; c < kClasses; ++c) {
      for (unsigned i = 0; i < count[c]; ++i) ::operator delete(blocks[c][i]);
    }
  }
};

[[gnu::noinline]] FrameCache* make_cache() {
  if (tls_cache_gone) return nullptr;
  thread_local FrameCache owner;
  tls_cache = &owner;
  return &owner;
}

inline FrameCache* frame_cache() {
  FrameCache* c = tls_cache;
  return c != nullptr ? c : make_cache();
}

// The deadline passed while a polled task waited for `d.request`. The request stays posted:
// the collective fails, fail() sets the abort flag, and no more bytes move (every later test
// and wait throws first, and the engine polls only for a task in flight), as after any
// failure in the middle of a collective. (Asking the transport to wait with a passed deadline would
// release it, but tcp first yields the processor some hundred times, seconds on a loaded machine.)
[[noreturn]] void expire(Driver& d) {
  const long long waited_ms = (steady_ns() - d.waiting_since_ns) / 1000000;
  throw Error(ErrorCode::timeout,
              str_cat("rank ", d.rank, " waited ", waited_ms, " ms for peer ", d.conn->peer(),
                      " to complete a ", d.is_send ? "send" : "receive"),
              {d.rank, d.conn->peer()});
}

}  // namespace

void* allocate_frame(std::size_t bytes) {
  const std::size_t c = (bytes + kGrain - 1) / kGrain;
  if (!kRecycleFrames || c >= kClasses) return ::operator new(bytes);
  FrameCache* cache = frame_cache();
  if (cache != nullptr && cache->count[c] > 0) return cache->blocks[c][--cache->count[c]];
  return ::operator new(c* kGrain);  // every block of class c holds c * kGrain bytes
}

void free_frame(void* frame, std::size_t bytes) noexcept {
  const std::size_t c = (bytes + kGrain - 1) / kGrain;
  if (kRecycleFrames && c < kClasses) {
    FrameCache* cache = frame_cache();
    if (cache != nullptr && cache->count[c] < kKeep) {
      cache->blocks[c][cache->count[c]++] = frame;
      return;
    }
  }
  ::operator delete(frame);
}

bool advance(Task& task, Driver& driver) {
  RINGLET_CHECK(task.h_, "advance() on an empty task");
  if (!task.started_) {
    task.started_ = true;
    task.h_.resume();
  } else if (driver.conn != nullptr) {
    bool ready = false;
    try {
      ready = driver.conn->test(driver.request);
      if (!ready && Clock::now() >= driver.deadline) expire(driver);
      if (ready) driver.note_done();
    } catch (...) {
      driver.error = std::current_exception();
      ready = true;
    }
    if (!ready) return false;
    driver.conn = nullptr;
    auto waiter = std::exchange(driver.waiter, {});
    waiter.resume();
  } else if (driver.pollable != nullptr) {
    bool ready = false;
    try {
      // The Pollable applies the deadline itself, naming the ranks it waited for.
      ready = driver.pollable->poll();
      if (ready) driver.note_done();
    } catch (...) {
      driver.error = std::current_exception();
      ready = true;
    }
    if (!ready) return false;
    driver.pollable = nullptr;
    auto waiter = std::exchange(driver.waiter, {});
    waiter.resume();
  }
  if (!task.h_.done()) return false;
  if (task.h_.promise().error) std::rethrow_exception(task.h_.promise().error);
  return true;
}

void run_blocking(Task task, Driver& driver) {
  RINGLET_CHECK(driver.blocking, "run_blocking() with a polling driver");
  // A blocking driver's awaits never suspend, so one resume runs the task to its end; the
  // loop only guards the contract.
  while (!advance(task, driver)) {
  }
}

}  // namespace ringlet::engine
