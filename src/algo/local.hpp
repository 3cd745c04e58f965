// SPDX-License-Identifier: Apache-2.0
// The job is one node: allreduce through the node's local group alone.
#pragma once

#include <cstddef>

#include "src/algo/context.hpp"

namespace ringlet::algo {

// Copies `src` into `dst` (when they differ), reduces it in place over ctx.local, then applies
// the post-scale step to the whole buffer (every rank holds the whole result). Time ~ the
// group's cost model (groups/shm/group.cpp).
void local_allreduce(Context& ctx, const std::byte* src, std::byte* dst, std::size_t count,
                     DataType type, ReduceOp op);

}  // namespace ringlet::algo
