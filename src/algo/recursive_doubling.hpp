// SPDX-License-Identifier: Apache-2.0
// Latency-optimal allreduce for small messages: recursive doubling.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <vector>

#include "src/algo/context.hpp"

namespace ringlet::algo {

// The peers recursive doubling talks to from `rank` among `size` ranks (for connecting).
std::vector<int> recursive_doubling_peers(int rank, int size);

// Bytes sent in front of every message (the collective's fingerprint), and the check run on
// every peer's prefix as it arrives; check throws to fail the collective.
struct MessagePrefix {
  std::span<const std::byte> mine;
  std::function<void(int peer, std::span<const std::byte> theirs)> check;
};

// Recursive doubling allreduce, in place in `buf` (count elements; 2 x (prefix + bytes) must
// fit small_scratch):
// ceil(log2 N) exchange steps of the whole message, plus one step before and after for the
// ranks beyond the largest power of two p <= N (they hand their data to a partner and get
// the result back). Time ~ (log2 p + 2[N != p]) (a + S/B). Each pair combines the lower
// rank's operand first, so every rank ends with identical bits. The post-scale step runs
// once on every rank of the power-of-two group; the extra ranks receive scaled results.
// A resumable task (src/engine/task.hpp); `ctx`, `buf` and `prefix` outlive it.
engine::Task recursive_doubling_allreduce(Context& ctx, std::byte* buf, std::size_t count,
                                          DataType type, ReduceOp op,
                                          const MessagePrefix* prefix = nullptr);

}  // namespace ringlet::algo
