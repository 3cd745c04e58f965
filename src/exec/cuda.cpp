// SPDX-License-Identifier: Apache-2.0
// The CUDA device (over src/exec/cuda_api.hpp), the device of the process, and the device
// executor. No CUDA header here: the runtime calls live in src/reduce/cuda.cu.
#include <algorithm>
#include <cstring>
#include <mutex>

#include "src/common/str_cat.hpp"
#include "src/exec/cuda_api.hpp"
#include "src/exec/device.hpp"

namespace ringlet::exec {
namespace {

class CudaDevice final : public Device {
 public:
  std::string name() const override { return "cuda"; }
  int count() noexcept override { return cuda_api::device_count(nullptr); }
  void set_current(int ordinal) override { cuda_api::set_device(ordinal); }
  void* create_stream() override { return cuda_api::stream_create(); }
  void destroy_stream(void* stream) noexcept override { cuda_api::stream_destroy(stream); }
  void copy_async(void* dst, const void* src, std::size_t bytes, void* stream) override {
    cuda_api::copy_async(dst, src, bytes, stream);
  }
  void reduce_async(void* out, const void* a, const void* b, std::size_t n, DataType type,
                    ReduceOp op, void* stream) override {
    cuda_api::reduce3_async(out, a, b, n, type, op, stream);
  }
  void scale_async(void* data, std::size_t n, DataType type, int divisor, void* stream) override {
    cuda_api::scale_async(data, n, type, divisor, stream);
  }
  void synchronize(void* stream) override { cuda_api::stream_synchronize(stream); }
  std::uint32_t* alloc_flags(std::size_t n) override { return cuda_api::flags_alloc(n); }
  void free_flags(std::uint32_t* flags) noexcept override { cuda_api::flags_free(flags); }
  void write_flag(void* stream, std::uint32_t* flag, std::uint32_t value) override {
    cuda_api::write_flag(stream, flag, value);
  }
  void wait_flag(void* stream, std::uint32_t* flag, std::uint32_t value) override {
    cuda_api::wait_flag(stream, flag, value);
  }
  void* host_alloc(std::size_t bytes) override { return cuda_api::host_alloc(bytes); }
  void host_free(void* p) noexcept override { cuda_api::host_free(p); }
};

struct DeviceSlot {
  std::mutex mutex;
  std::shared_ptr<Device> installed;  // tests
  bool probed = false;
  std::shared_ptr<Device> cuda;  // when the probe found a device
  std::string reason;            // why not, otherwise
  // executor_for(MemoryKind::cuda): over the current device and its default stream.
  Device* executor_device = nullptr;
  std::unique_ptr<DeviceExecutor> executor;
};

DeviceSlot& slot() {
  static DeviceSlot s;
  return s;
}

// Under the slot's lock: the probe runs once, at the first use of CUDA memory.
Device* current(DeviceSlot& s) {
  if (s.installed) return s.installed.get();
  if (!s.probed) {
    s.probed = true;
    if (!cuda_api::built()) {
      s.reason = "ringlet was built without CUDA";
    } else {
      std::string why;
      if (cuda_api::device_count(&why) > 0) {
        s.cuda = std::make_shared<CudaDevice>();
      } else {
        s.reason = str_cat("no CUDA device is usable on this machine (", why, ")");
      }
    }
  }
  return s.cuda.get();
}

void bound_reduce(const void* context, DataType type, ReduceOp op, void* out, const void* a,
                  const void* b, std::size_t n) {
  const auto* e = static_cast<const DeviceExecutor*>(context);
  if (n > 0) e->device().reduce_async(out, a, b, n, type, op, e->stream());
}

}  // namespace

Device* device() noexcept {
  DeviceSlot& s = slot();
  std::lock_guard lock(s.mutex);
  try {
    return current(s);
  } catch (...) {
    return nullptr;
  }
}

void install_device_for_testing(std::shared_ptr<Device> d) {
  DeviceSlot& s = slot();
  std::lock_guard lock(s.mutex);
  s.installed = std::move(d);
  s.executor.reset();
  s.executor_device = nullptr;
}

std::string device_unavailable_reason() {
  DeviceSlot& s = slot();
  std::lock_guard lock(s.mutex);
  if (current(s) != nullptr) return {};
  return s.reason;
}

Reducer DeviceExecutor::reducer(DataType type, ReduceOp op) const {
  return Reducer(&bound_reduce, this, type, op);
}

void DeviceExecutor::copy(void* dst, const void* src, std::size_t bytes) const {
  if (bytes == 0 || dst == src) return;
  auto* d = static_cast<std::byte*>(dst);
  const auto* s = static_cast<const std::byte*>(src);
  const std::size_t gap = d > s ? static_cast<std::size_t>(d - s) : static_cast<std::size_t>(s - d);
  if (gap >= bytes) {
    device_.copy_async(dst, src, bytes, stream_);
    return;
  }
  // Overlapping (memmove): pieces of `gap` bytes, each disjoint from the source still unread,
  // in the direction that reads every byte before it is overwritten; the stream keeps order.
  if (d < s) {
    for (std::size_t off = 0; off < bytes; off += gap) {
      device_.copy_async(d + off, s + off, std::min(gap, bytes - off), stream_);
    }
  } else {
    for (std::size_t end = bytes; end > 0;) {
      const std::size_t n = std::min(gap, end);
      end -= n;
      device_.copy_async(d + end, s + end, n, stream_);
    }
  }
}

void DeviceExecutor::scale(void* data, std::size_t count, DataType type, int divisor) const {
  if (count > 0) device_.scale_async(data, count, type, divisor, stream_);
}

void DeviceExecutor::synchronize() const { device_.synchronize(stream_); }

const Executor& executor_for(MemoryKind kind) {
  if (kind == MemoryKind::host) return host_executor();
  DeviceSlot& s = slot();
  std::lock_guard lock(s.mutex);
  Device* d = current(s);
  if (d == nullptr) {
    throw Error(ErrorCode::invalid_argument, str_cat("CUDA memory cannot be used: ", s.reason));
  }
  if (s.executor_device != d || !s.executor) {
    s.executor = std::make_unique<DeviceExecutor>(*d, nullptr);
    s.executor_device = d;
  }
  return *s.executor;
}

}  // namespace ringlet::exec
