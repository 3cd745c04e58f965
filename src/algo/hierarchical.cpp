// SPDX-License-Identifier: Apache-2.0
// Hierarchical allreduce: shared-memory reduce-scatter, parallel inter-node rings, shared-
// memory allgather, pipelined over chunks so that the node-local stages overlap the network.
#include "src/algo/hierarchical.hpp"

#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>

#include "src/algo/ring.hpp"
#include "src/common/check.hpp"
#include "src/common/helper_thread.hpp"

namespace ringlet::algo {

void hierarchical_allreduce(HierContext& ctx, std::byte* buf, std::size_t count, DataType type,
                            ReduceOp op) {
  const std::size_t elem = size_of(type);
  const std::size_t bytes = count * elem;
  const std::size_t chunks = std::max<std::size_t>(
      1, (bytes + ctx.pipeline_bytes - 1) / std::max<std::size_t>(ctx.pipeline_bytes, 1));
  const auto L = static_cast<std::size_t>(ctx.local_size);
  const auto lr = static_cast<std::size_t>(ctx.local_rank);
  auto chunk_begin = [&](std::size_t k) { return split_begin(count, chunks, k); };

  std::mutex mutex;
  std::condition_variable cv;
  std::size_t scattered = 0;  // chunks whose intra-node reduce-scatter is done
  std::size_t reduced = 0;    // chunks whose inter-node ring is done
  bool stop = false;
  std::exception_ptr network_error;

  // The network side runs on the communicator's persistent helper thread (no thread per
  // call); without a runtime (unit use), on a helper of this call.
  std::optional<HelperThread> own;
  HelperThread* network = ctx.ring.runtime != nullptr ? ctx.ring.runtime->helper() : nullptr;
  if (network == nullptr) network = &own.emplace();
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
          std::unique_lock lock(mutex);
          cv.wait(lock, [&] { return scattered > k || stop; });
          if (stop) return;
        }
        const std::size_t len = chunk_begin(k + 1) - chunk_begin(k);
        const std::size_t shard_begin = chunk_begin(k) + split_begin(len, L, lr);
        const std::size_t shard_len = split_begin(len, L, lr + 1) - split_begin(len, L, lr);
        std::byte* shard = buf + shard_begin * elem;
        if (shard_len > 0) {
          engine::run_blocking(ring_allreduce(ring, shard, shard, shard_len, type, op), driver);
        }
        std::lock_guard lock(mutex);
        reduced = k + 1;
        cv.notify_all();
      }
    } catch (...) {
      {
        std::lock_guard lock(mutex);
        network_error = std::current_exception();
        cv.notify_all();
      }
      // Wakes the calling thread's shared-memory waits.
      if (ctx.ring.runtime != nullptr) ctx.ring.runtime->abort();
    }
  });

  try {
    // Intra-node reduce-scatter of every chunk, handing each to the network thread.
    for (std::size_t k = 0; k < chunks; ++k) {
      const std::size_t len = chunk_begin(k + 1) - chunk_begin(k);
      ctx.ring.local->reduce_scatter(buf + chunk_begin(k) * elem, len, type, op, *ctx.ring.exec,
                                     *ctx.ring.fp, ctx.ring.deadline);
      std::lock_guard lock(mutex);
      scattered = k + 1;
      cv.notify_all();
    }
    // Intra-node allgather of each chunk as soon as its ring is done.
    for (std::size_t k = 0; k < chunks; ++k) {
      {
        std::unique_lock lock(mutex);
        const auto ready = [&] { return reduced > k || network_error; };
        // The network thread has the same deadline, and its error names the peer it waited
        // for: give it a moment to arrive before reporting the deadline without a name.
        if (!cv.wait_until(lock, ctx.ring.deadline, ready) &&
            !cv.wait_for(lock, std::chrono::milliseconds(500), ready)) {
          throw Error(ErrorCode::timeout,
                      str_cat("hierarchical allreduce: the inter-node ring of local rank ", lr,
                              " did not finish chunk ", k, " of ", chunks, " before the deadline"));
        }
        if (network_error) std::rethrow_exception(network_error);
      }
      const std::size_t len = chunk_begin(k + 1) - chunk_begin(k);
      ctx.ring.local->allgather(buf + chunk_begin(k) * elem, len, type, *ctx.ring.exec,
                                *ctx.ring.fp, ctx.ring.deadline);
    }
  } catch (...) {
    bool network_first = false;
    {
      std::lock_guard lock(mutex);
      network_first = network_error != nullptr;
      stop = true;
      cv.notify_all();
    }
    if (ctx.ring.runtime != nullptr) ctx.ring.runtime->abort();
    network->join();
    // The error of the side that failed first is the real one: the other side's is the
    // abort it induced (a network error explains a shared-memory abort, and a shared-memory
    // timeout or mismatch is not masked by the network's induced abort).
    if (network_first) std::rethrow_exception(network_error);
    throw;
  }
  network->join();
  if (network_error) std::rethrow_exception(network_error);
}

}  // namespace ringlet::algo
