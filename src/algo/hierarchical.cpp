// SPDX-License-Identifier: Apache-2.0
// Hierarchical allreduce: shared-memory reduce-scatter, parallel inter-node rings, shared-
// memory allgather, pipelined over chunks so that the node-local stages overlap the network.
#include "src/algo/hierarchical.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>

#include "src/algo/ring.hpp"
#include "src/common/check.hpp"
#include "src/common/futex.hpp"
#include "src/common/helper_thread.hpp"

namespace ringlet::algo {
namespace {

// What the calling task and the network thread share for one call.
struct Pipeline {
  std::mutex mutex;
  std::condition_variable cv;
  std::size_t scattered = 0;  // chunks whose intra-node reduce-scatter is done
  std::size_t reduced = 0;    // chunks whose inter-node ring is done
  bool stop = false;
  std::exception_ptr network_error;
  // Bumped (and woken) at every change of `reduced` or `network_error`: what a polled wait
  // for a chunk's ring sleeps on.
  std::atomic<std::uint32_t> changes{0};

  // Under `mutex`.
  void changed() {
    changes.fetch_add(1, std::memory_order_release);
    futex_wake_private(changes);
    cv.notify_all();
  }
};

// co_await: the ring of chunk k is done or the network side failed (the caller looks at
// network_error). Blocking driver: a condition-variable wait, as before; polling driver: a
// Pollable the engine polls and sleeps on (Pipeline::changes). The network thread has the
// same deadline, and its error names the peer it waited for: the wait gives it a moment past
// the deadline before reporting the deadline without a name.
class RingDone final : public engine::PollableAwait {
 public:
  RingDone(Pipeline& p, engine::Driver& d, std::size_t k, std::size_t chunks, std::size_t lr,
           Deadline deadline) noexcept
      : PollableAwait(d), p_(p), k_(k), chunks_(chunks), lr_(lr), deadline_(deadline) {}
  RingDone(const RingDone&) = delete;
  RingDone& operator=(const RingDone&) = delete;
  ~RingDone() = default;

  bool await_ready() {
    if (!d_.blocking) return ready();
    std::unique_lock lock(p_.mutex);
    const auto done = [&] { return p_.reduced > k_ || p_.network_error; };
    if (!p_.cv.wait_until(lock, deadline_, done) &&
        !p_.cv.wait_for(lock, std::chrono::milliseconds(kGraceMs), done)) {
      throw_timeout();
    }
    return true;
  }

  bool poll() override {
    if (ready()) return true;
    if (Clock::now() >= deadline_ + std::chrono::milliseconds(kGraceMs)) throw_timeout();
    return false;
  }
  void sleep(std::chrono::microseconds timeout) noexcept override {
    const std::uint32_t seen = p_.changes.load(std::memory_order_acquire);
    if (ready()) return;
    futex_wait_private(p_.changes, seen, timeout);
  }

 private:
  static constexpr int kGraceMs = 500;
  bool ready() {
    std::lock_guard lock(p_.mutex);
    return p_.reduced > k_ || p_.network_error;
  }
  [[noreturn]] void throw_timeout() const {
    throw Error(ErrorCode::timeout,
                str_cat("hierarchical allreduce: the inter-node ring of local rank ", lr_,
                        " did not finish chunk ", k_, " of ", chunks_, " before the deadline"));
  }

  Pipeline& p_;
  std::size_t k_, chunks_, lr_;
  Deadline deadline_;
};

}  // namespace

engine::Task hierarchical_allreduce(HierContext& ctx, std::byte* buf, std::size_t count,
                                    DataType type, ReduceOp op) {
  const std::size_t elem = size_of(type);
  const std::size_t bytes = count * elem;
  const std::size_t chunks = std::max<std::size_t>(
      1, (bytes + ctx.pipeline_bytes - 1) / std::max<std::size_t>(ctx.pipeline_bytes, 1));
  const auto L = static_cast<std::size_t>(ctx.local_size);
  const auto lr = static_cast<std::size_t>(ctx.local_rank);
  auto chunk_begin = [&](std::size_t k) { return split_begin(count, chunks, k); };
  // The calling task's driver: the engine's (polling) or the caller's (blocking).
  engine::Driver own;
  own.deadline = ctx.ring.deadline;
  engine::Driver& d = ctx.ring.driver != nullptr ? *ctx.ring.driver : own;

  Pipeline pipe;

  // The network side runs on the communicator's persistent helper thread (no thread per
  // call); without a runtime (unit use), on a helper of this call.
  std::optional<HelperThread> own_helper;
  HelperThread* network = ctx.ring.runtime != nullptr ? ctx.ring.runtime->helper() : nullptr;
  if (network == nullptr) network = &own_helper.emplace();
  // The helper thread drives the transport from here on: the engine must not touch it.
  const bool was_busy = std::exchange(d.transport_busy, true);
  // The inter-node ring over this local rank's shard of each chunk, driven to completion on
  // the helper thread (its own blocking driver; it records the peer it waits for in the
  // collective's progress record).
  network->start([&] {
    try {
      engine::Driver driver;
      driver.blocking = true;
      driver.deadline = ctx.ring.deadline;
      driver.rank = ctx.ring.driver != nullptr ? ctx.ring.driver->rank : ctx.ring.rank;
      driver.record = ctx.ring.driver != nullptr ? ctx.ring.driver->record : nullptr;
      Context ring = ctx.ring;
      ring.driver = &driver;
      for (std::size_t k = 0; k < chunks; ++k) {
        {
          std::unique_lock lock(pipe.mutex);
          pipe.cv.wait(lock, [&] { return pipe.scattered > k || pipe.stop; });
          if (pipe.stop) return;
        }
        const std::size_t len = chunk_begin(k + 1) - chunk_begin(k);
        const std::size_t shard_begin = chunk_begin(k) + split_begin(len, L, lr);
        const std::size_t shard_len = split_begin(len, L, lr + 1) - split_begin(len, L, lr);
        std::byte* shard = buf + shard_begin * elem;
        if (shard_len > 0) {
          engine::run_blocking(ring_allreduce(ring, shard, shard, shard_len, type, op), driver);
        }
        std::lock_guard lock(pipe.mutex);
        pipe.reduced = k + 1;
        pipe.changed();
      }
    } catch (...) {
      {
        std::lock_guard lock(pipe.mutex);
        pipe.network_error = std::current_exception();
        pipe.changed();
      }
      // Wakes the calling task's shared-memory waits.
      if (ctx.ring.runtime != nullptr) ctx.ring.runtime->abort();
    }
  });

  try {
    // Intra-node reduce-scatter of every chunk, handing each to the network thread.
    for (std::size_t k = 0; k < chunks; ++k) {
      const std::size_t len = chunk_begin(k + 1) - chunk_begin(k);
      co_await ctx.ring.local->reduce_scatter(buf + chunk_begin(k) * elem, len, type, op,
                                              *ctx.ring.exec, *ctx.ring.fp, d);
      std::lock_guard lock(pipe.mutex);
      pipe.scattered = k + 1;
      pipe.cv.notify_all();
    }
    // Intra-node allgather of each chunk as soon as its ring is done.
    for (std::size_t k = 0; k < chunks; ++k) {
      co_await RingDone(pipe, d, k, chunks, lr, ctx.ring.deadline);
      {
        std::lock_guard lock(pipe.mutex);
        if (pipe.network_error) std::rethrow_exception(pipe.network_error);
      }
      const std::size_t len = chunk_begin(k + 1) - chunk_begin(k);
      co_await ctx.ring.local->allgather(buf + chunk_begin(k) * elem, len, type, *ctx.ring.exec,
                                         *ctx.ring.fp, d);
    }
  } catch (...) {
    bool network_first = false;
    {
      std::lock_guard lock(pipe.mutex);
      network_first = pipe.network_error != nullptr;
      pipe.stop = true;
      pipe.cv.notify_all();
    }
    if (ctx.ring.runtime != nullptr) ctx.ring.runtime->abort();
    // Bounded: aborted, the helper's ring fails at its next wait (the transport's interrupt).
    network->join();
    d.transport_busy = was_busy;
    // The error of the side that failed first is the real one: the other side's is the
    // abort it induced (a network error explains a shared-memory abort, and a shared-memory
    // timeout or mismatch is not masked by the network's induced abort).
    if (network_first) std::rethrow_exception(pipe.network_error);
    throw;
  }
  // Immediate: the helper's job returns once it has reduced the last chunk.
  network->join();
  d.transport_busy = was_busy;
  if (pipe.network_error) std::rethrow_exception(pipe.network_error);
}

}  // namespace ringlet::algo
