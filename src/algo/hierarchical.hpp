// SPDX-License-Identifier: Apache-2.0
// Hierarchical allreduce for M nodes of L local ranks each.
#pragma once

#include <cstddef>

#include "src/algo/context.hpp"

namespace ringlet::algo {

struct HierContext {
  // The inter-node ring this local rank drives: rank = node index, size = M, left/right
  // the ranks with the same local rank on the neighbouring nodes. Its local group, executor,
  // post-scale step and runtime serve the whole algorithm.
  Context ring;
  int local_rank = 0;
  int local_size = 1;
  std::size_t pipeline_bytes = 0;  // bytes per pipeline chunk
};

// Intra-node reduce-scatter -> L inter-node rings in parallel, local rank i driving the ring
// over shard i -> intra-node allgather. Each node's link carries 2(M-1)/M * S, the lower
// bound, and the inter-node latency term is 2(M-1)a instead of 2(ML-1)a. The buffer is cut
// into pipeline chunks; a network thread runs the ring of chunk k while the calling task
// runs the shared-memory stages of the other chunks, so that they overlap. In place. The
// post-scale step runs on the network thread, on the part of each shard its ring owns.
// A task: the shared-memory stages are awaits of the local group's tasks, and the wait for a
// chunk's ring is a Pollable on the helper thread's progress, so that with a polling driver
// (ctx.ring.driver) the progress engine never blocks in it. The ring of each chunk is still
// driven to completion on the communicator's persistent helper thread (its own blocking
// driver); while it runs, the driver's transport_busy keeps the engine off the transport.
engine::Task hierarchical_allreduce(HierContext& ctx, std::byte* buf, std::size_t count,
                                    DataType type, ReduceOp op);

}  // namespace ringlet::algo
