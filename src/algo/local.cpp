// SPDX-License-Identifier: Apache-2.0
// Allreduce through the local group alone.
#include "src/algo/local.hpp"

namespace ringlet::algo {

engine::Task local_allreduce(groups::LocalGroup& local, const exec::Executor& exec,
                             const Fingerprint& fp, PostScale post_scale, const std::byte* src,
                             std::byte* dst, std::size_t count, DataType type, ReduceOp op,
                             engine::Driver& driver) {
  exec.copy(dst, src, count * size_of(type));
  co_await local.allreduce(dst, count, type, op, exec, fp, driver);
  post_scale(exec, dst, count, type);
}

}  // namespace ringlet::algo
