// SPDX-License-Identifier: Apache-2.0
// The CUDA entry points of reduce.hpp in a build without CUDA: they fail or report no device.
#include "ringlet_config.hpp"
#include "src/reduce/reduce.hpp"

#if !RINGLET_HAVE_CUDA

namespace ringlet::reduce {

void reduce_cuda(void*, const void*, std::size_t, DataType, ReduceOp, void*) {
  throw Error(ErrorCode::invalid_argument, "ringlet was built without CUDA");
}

int cuda_device_count() noexcept { return 0; }

}  // namespace ringlet::reduce

#endif
