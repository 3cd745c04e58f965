// SPDX-License-Identifier: Apache-2.0
// Rabenseifner's allreduce: recursive-halving reduce-scatter, then recursive-doubling
// allgather (Thakur, Rabenseifner and Gropp, "Optimization of Collective Communication
// Operations in MPICH", 2005).
#pragma once

#include <cstddef>
#include <vector>

#include "src/algo/context.hpp"

namespace ringlet::algo {

// The peers Rabenseifner's allreduce talks to from `rank` among `size` ranks (for
// connecting): the same partners as recursive doubling's, the fold partner included.
std::vector<int> rabenseifner_peers(int rank, int size);

// Allreduce of `count` elements, out of place when src != dst. With p the largest power of
// two <= N, the first 2(N - p) ranks pair up: the even one hands its input to the odd one
// (which reduces it) and gets the result back at the end. The p remaining ranks halve the
// buffer log2(p) times, exchanging with partners at distance p/2, p/4, ..., 1 (each keeps
// and reduces the half that holds its block), then double it back in the opposite order.
// Each rank sends ~2 (p-1)/p x S bytes in 2 log2 p steps, plus S twice on the folded pairs:
// time ~ (2 log2 p + 2[N != p]) a + (2 (p-1)/p + 2[N != p]) S/B.
//
// Every element is reduced by one rank per level, the lower rank's operand first, and then
// only copied, so every rank ends with identical bits. The plan's post-scale step runs once,
// on the block each rank of the power-of-two group owns after the reduce-scatter.
// Receives of the reduce-scatter go through ctx.ring_scratch in pieces of at most
// ctx.slice_bytes (ctx.slots in flight); sends go from the buffers, and the allgather
// receives into place. A resumable task (src/engine/task.hpp); `ctx` and the buffers
// outlive it.
engine::Task rabenseifner_allreduce(Context& ctx, const std::byte* src, std::byte* dst,
                                    std::size_t count, DataType type, ReduceOp op);

}  // namespace ringlet::algo
