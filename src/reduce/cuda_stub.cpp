// SPDX-License-Identifier: Apache-2.0
// The CUDA entry points of reduce.hpp and src/exec/cuda_api.hpp in a build without CUDA: they
// fail with invalid_argument or report no device.
#include "ringlet_config.hpp"
#include "src/exec/cuda_api.hpp"
#include "src/reduce/reduce.hpp"

#if !RINGLET_HAVE_CUDA

namespace ringlet {
namespace {

[[noreturn]] void no_cuda() {
  throw Error(ErrorCode::invalid_argument, "ringlet was built without CUDA");
}

}  // namespace

namespace reduce {

void reduce_cuda(void*, const void*, std::size_t, DataType, ReduceOp, void*) { no_cuda(); }

int cuda_device_count() noexcept { return 0; }

}  // namespace reduce

namespace cuda_api {

bool built() noexcept { return false; }
int device_count(std::string* why) noexcept {
  if (why != nullptr) *why = "ringlet was built without CUDA";
  return 0;
}
void set_device(int) { no_cuda(); }
void* stream_create() { no_cuda(); }
void stream_destroy(void*) noexcept {}
void copy_async(void*, const void*, std::size_t, void*) { no_cuda(); }
void reduce3_async(void*, const void*, const void*, std::size_t, DataType, ReduceOp, void*) {
  no_cuda();
}
void scale_async(void*, std::size_t, DataType, int, void*) { no_cuda(); }
void stream_synchronize(void*) { no_cuda(); }
std::uint32_t* flags_alloc(std::size_t) { no_cuda(); }
void flags_free(std::uint32_t*) noexcept {}
void write_flag(void*, std::uint32_t*, std::uint32_t) { no_cuda(); }
void wait_flag(void*, std::uint32_t*, std::uint32_t) { no_cuda(); }
void* host_alloc(std::size_t) { no_cuda(); }
void host_free(void*) noexcept {}
void* device_alloc(std::size_t) { no_cuda(); }
void device_free(void*) noexcept {}

}  // namespace cuda_api
}  // namespace ringlet

#endif
