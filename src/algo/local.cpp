// SPDX-License-Identifier: Apache-2.0
// Allreduce through the local group alone.
#include "src/algo/local.hpp"

#include "src/common/check.hpp"

namespace ringlet::algo {

void local_allreduce(Context& ctx, const std::byte* src, std::byte* dst, std::size_t count,
                     DataType type, ReduceOp op) {
  RINGLET_CHECK(ctx.local != nullptr && ctx.fp != nullptr, "local allreduce without a local group");
  ctx.exec->copy(dst, src, count * size_of(type));
  ctx.local->allreduce(dst, count, type, op, *ctx.exec, *ctx.fp, ctx.deadline);
  ctx.post_scale(*ctx.exec, dst, count, type);
}

}  // namespace ringlet::algo
