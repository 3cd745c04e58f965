// SPDX-License-Identifier: Apache-2.0
// Hierarchical allreduce for M nodes of L local ranks each.
#pragma once

#include <cstddef>
#include <functional>

#include "src/algo/context.hpp"

namespace ringlet::algo {

struct HierContext {
  // The inter-node ring this local rank drives: rank = node index, size = M, left/right
  // the ranks with the same local rank on the neighbouring nodes.
  Context ring;
  transport::LocalGroup* local = nullptr;
  int local_rank = 0;
  int local_size = 1;
  int world_size = 1;                       // for avg
  std::size_t pipeline_bytes = 0;           // bytes per pipeline chunk
  std::function<void()> interrupt;          // stops the other side when one side fails
  std::function<void()> on_network_thread;  // runs first on the network thread (pinning)
};

// Intra-node reduce-scatter -> L inter-node rings in parallel, local rank i driving the ring
// over shard i -> intra-node allgather. Each node's link carries 2(M-1)/M * S, the lower
// bound, and the inter-node latency term is 2(M-1)a instead of 2(ML-1)a. The buffer is cut
// into pipeline chunks; a network thread runs the ring of chunk k while the calling thread
// runs the shared-memory stages of the other chunks, so that they overlap. In place.
void hierarchical_allreduce(HierContext& ctx, std::byte* buf, std::size_t count, DataType type,
                            ReduceOp op);

}  // namespace ringlet::algo
