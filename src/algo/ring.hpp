// SPDX-License-Identifier: Apache-2.0
// Pipelined ring algorithms: allreduce (reduce-scatter + allgather), reduce-scatter,
// allgather and broadcast.
#pragma once

#include <cstddef>

#include "src/algo/context.hpp"

namespace ringlet::algo {

// How a buffer of `count` elements is cut into size() chunks: balanced (allreduce), or
// equal blocks of `block` elements (reduce_scatter, allgather).
struct ChunkLayout {
  std::size_t count = 0;  // elements in all chunks
  int chunks = 1;
  std::size_t begin(int c) const {
    return split_begin(count, static_cast<std::size_t>(chunks), static_cast<std::size_t>(c));
  }
  std::size_t length(int c) const { return begin(c + 1) - begin(c); }
};

// Each algorithm is a resumable task (src/engine/task.hpp): it posts what it can and
// co_awaits completions through ctx.driver; `ctx` and the buffers outlive the task.

// Ring reduce-scatter over `layout`: reads `src`, accumulates into `dst` (may equal src).
// Afterwards chunk (rank + 1 + shift) mod size of dst holds the reduction over all ranks
// (avg reduces as sum; the caller applies the post-scale). Other chunks of dst hold partial
// results.
engine::Task ring_reduce_scatter(Context& ctx, const std::byte* src, std::byte* dst,
                                 ChunkLayout layout, DataType type, ReduceOp op, int shift);

// Ring allgather over `layout`, in place in `buf`: this rank's chunk `owned` is complete;
// afterwards every chunk is.
engine::Task ring_allgather(Context& ctx, std::byte* buf, ChunkLayout layout, DataType type,
                            int owned);

// Ring allreduce = reduce-scatter + allgather: 2(N-1) steps, each rank sends 2(N-1)/N * S
// bytes. Out of place when src != dst. The post-scale step (ctx.post_scale) runs on the owned
// chunk between the two halves, so each element is scaled once.
engine::Task ring_allreduce(Context& ctx, const std::byte* src, std::byte* dst, std::size_t count,
                            DataType type, ReduceOp op);

// Pipelined chain broadcast from `root` along the ring: N-1 hops, each rank receives S bytes
// once and forwards them, so time ~ (N-1) a + S/B for S much larger than a slice.
engine::Task ring_broadcast(Context& ctx, std::byte* buf, std::size_t bytes, int root);

}  // namespace ringlet::algo
