// SPDX-License-Identifier: Apache-2.0
// Allreduce through the local group alone.
#include "src/algo/local.hpp"

namespace ringlet::algo {

void local_allreduce(groups::LocalGroup& local, const exec::Executor& exec, const Fingerprint& fp,
                     const PostScale& post_scale, const std::byte* src, std::byte* dst,
                     std::size_t count, DataType type, ReduceOp op, Deadline deadline) {
  exec.copy(dst, src, count * size_of(type));
  local.allreduce(dst, count, type, op, exec, fp, deadline);
  post_scale(exec, dst, count, type);
}

}  // namespace ringlet::algo
