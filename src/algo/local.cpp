// SPDX-License-Identifier: Apache-2.0
// Allreduce through the local group alone.
#include "src/algo/local.hpp"

namespace ringlet::algo {
namespace {

engine::Task reduce_then_scale(groups::LocalGroup& local, const exec::Executor& exec,
                               const Fingerprint& fp, PostScale post_scale, std::byte* dst,
                               std::size_t count, DataType type, ReduceOp op,
                               engine::Driver& driver) {
  co_await local.allreduce(dst, count, type, op, exec, fp, driver);
  post_scale(exec, dst, count, type);
}

}  // namespace

engine::Task local_allreduce(groups::LocalGroup& local, const exec::Executor& exec,
                             const Fingerprint& fp, PostScale post_scale, const std::byte* src,
                             std::byte* dst, std::size_t count, DataType type, ReduceOp op,
                             engine::Driver& driver) {
  exec.copy(dst, src, count * size_of(type));
  // Without a division (sum, min, max, prod), the group's own task is the whole step: no
  // frame of this function's on the latency path.
  if (post_scale.divisor == 1) return local.allreduce(dst, count, type, op, exec, fp, driver);
  return reduce_then_scale(local, exec, fp, post_scale, dst, count, type, op, driver);
}

}  // namespace ringlet::algo
