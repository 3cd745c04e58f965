// SPDX-License-Identifier: Apache-2.0
// The host executor: CPU kernels (src/reduce/host.cpp), memmove, and the avg division.
#include <cstring>

#include "src/common/str_cat.hpp"
#include "src/exec/device.hpp"
#include "src/exec/executor.hpp"
#include "src/reduce/reduce.hpp"

namespace ringlet::exec {
namespace {

class HostExecutor final : public Executor {
 public:
  MemoryKind memory() const noexcept override { return MemoryKind::host; }
  Reducer reducer(DataType type, ReduceOp op) const override {
    return Reducer(reduce::host_kernel3(type, op));
  }
  void copy(void* dst, const void* src, std::size_t bytes) const override {
    if (bytes > 0 && dst != src) std::memmove(dst, src, bytes);
  }
  void scale(void* data, std::size_t count, DataType type, int divisor) const override {
    if (count > 0) reduce::divide_host(data, count, type, divisor);
  }
};

}  // namespace

const Executor& host_executor() noexcept {
  static const HostExecutor executor;
  return executor;
}

void no_executor_for(MemoryKind) {
  throw Error(ErrorCode::invalid_argument,
              str_cat("CUDA memory cannot be used: ", device_unavailable_reason()));
}

}  // namespace ringlet::exec
