// SPDX-License-Identifier: Apache-2.0
// Device: the stream interface behind CUDA memory. The real one is CUDA (src/exec/cuda.cpp over
// the nvcc-compiled src/reduce/cuda.cu; the runtime is linked statically and loads the driver at
// its first call); tests install an emulated one (src/exec/emulated.*) in its place, so that
// the stream ordering and every collective on "device" memory run where no GPU exists.
//
// Streams are opaque handles (a cudaStream_t for CUDA); nullptr is the legacy default stream.
// Every operation is enqueued on its stream and runs after the earlier work of that stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "include/ringlet/ringlet.hpp"
#include "src/exec/executor.hpp"

namespace ringlet::exec {

class Device {
 public:
  virtual ~Device() = default;
  virtual std::string name() const = 0;
  // The number of devices; 0 when none is usable (no driver, no GPU).
  virtual int count() noexcept = 0;
  // Makes `ordinal` the current device of the calling thread.
  virtual void set_current(int ordinal) = 0;

  virtual void* create_stream() = 0;
  virtual void destroy_stream(void* stream) noexcept = 0;
  // dst = src, any direction (unified addressing); the ranges do not overlap.
  virtual void copy_async(void* dst, const void* src, std::size_t bytes, void* stream) = 0;
  // out[i] = op(a[i], b[i]), the host kernels' bits; out may equal a. avg reduces as sum.
  virtual void reduce_async(void* out, const void* a, const void* b, std::size_t n, DataType type,
                            ReduceOp op, void* stream) = 0;
  // data[i] /= divisor for a floating-point type.
  virtual void scale_async(void* data, std::size_t n, DataType type, int divisor, void* stream) = 0;
  // Blocks the host until the stream's work so far has completed; throws Error on a device
  // failure.
  virtual void synchronize(void* stream) = 0;

  // Flags: 32-bit words of host memory that the device reads and writes (mapped, pinned).
  virtual std::uint32_t* alloc_flags(std::size_t n) = 0;
  virtual void free_flags(std::uint32_t* flags) noexcept = 0;
  // Enqueued: *flag = value once the earlier work of the stream has completed (and its writes
  // are visible to the host) - cuStreamWriteValue32.
  virtual void write_flag(void* stream, std::uint32_t* flag, std::uint32_t value) = 0;
  // Enqueued: the stream waits, on the device, until *flag >= value, written by the host -
  // cuStreamWaitValue32. (cudaStreamWaitEvent on an event not yet recorded would not wait.)
  virtual void wait_flag(void* stream, std::uint32_t* flag, std::uint32_t value) = 0;

  // Host memory for staging (pinned where the device can pin it).
  virtual void* host_alloc(std::size_t bytes) = 0;
  virtual void host_free(void* p) noexcept = 0;
};

// The device of this process: the one installed for testing, else CUDA when the build has it
// and a device is present (probed once, at the first call), else nullptr.
Device* device() noexcept;

// Tests: `d` replaces the device of the process (nullptr restores the probe) until called again.
void install_device_for_testing(std::shared_ptr<Device> d);

// The reason CUDA memory cannot be used here ("ringlet was built without CUDA", "no CUDA
// device: ..."), for invalid_argument messages; empty when a device is usable.
std::string device_unavailable_reason();

// The executor of device memory over `d` and `stream`: reductions, copies and scaling are
// enqueued on the stream; synchronize() waits for them.
class DeviceExecutor final : public Executor {
 public:
  DeviceExecutor(Device& d, void* stream) noexcept : device_(d), stream_(stream) {}
  MemoryKind memory() const noexcept override { return MemoryKind::cuda; }
  Reducer reducer(DataType type, ReduceOp op) const override;
  void copy(void* dst, const void* src, std::size_t bytes) const override;
  void scale(void* data, std::size_t count, DataType type, int divisor) const override;
  void synchronize() const override;
  Device& device() const noexcept { return device_; }
  void* stream() const noexcept { return stream_; }

 private:
  Device& device_;
  void* stream_;
};

}  // namespace ringlet::exec
