// SPDX-License-Identifier: Apache-2.0
// The emulated device (tests only): the Device interface over host memory, for CI machines
// without a GPU. Each stream is a worker thread that runs its operations in order: copies,
// reductions (the host kernels), "kernels" given by the test, event records and waits, and
// the device-side wait on a host-written flag, which blocks the stream's later work until the
// host writes the flag. An injectable delay before every copy, reduction and kernel makes a
// missing ordering show as wrong data. "Device memory" is host memory from alloc().
//
// Limits: the legacy default stream (nullptr) is one more stream, without the implicit
// synchronisation with other streams; a wait on a host flag gives up after 120 s and the
// stream reports the error at its next synchronize().
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "src/exec/device.hpp"

namespace ringlet::exec {

class EmulatedDevice final : public Device, public std::enable_shared_from_this<EmulatedDevice> {
 public:
  explicit EmulatedDevice(int devices = 1);
  ~EmulatedDevice() override;

  std::string name() const override { return "emulated"; }
  int count() noexcept override { return devices_; }
  void set_current(int ordinal) override;
  void* create_stream() override;
  void destroy_stream(void* stream) noexcept override;
  void copy_async(void* dst, const void* src, std::size_t bytes, void* stream) override;
  void reduce_async(void* out, const void* a, const void* b, std::size_t n, DataType type,
                    ReduceOp op, void* stream) override;
  void scale_async(void* data, std::size_t n, DataType type, int divisor, void* stream) override;
  void synchronize(void* stream) override;
  std::uint32_t* alloc_flags(std::size_t n) override;
  void free_flags(std::uint32_t* flags) noexcept override;
  void write_flag(void* stream, std::uint32_t* flag, std::uint32_t value) override;
  void wait_flag(void* stream, std::uint32_t* flag, std::uint32_t value) override;
  void* host_alloc(std::size_t bytes) override;
  void host_free(void* p) noexcept override;

  // Test side. "Device memory" (64-byte aligned host memory), freed by free().
  void* alloc(std::size_t bytes);
  void free(void* p) noexcept;
  // An emulated kernel: `fn` runs on the stream's worker after its earlier work.
  void launch(void* stream, std::function<void()> fn);
  // Events: record_event() enqueues the record; wait_event() makes the stream wait for the
  // last record enqueued before it, and does not wait for an event never recorded (as
  // cudaStreamWaitEvent).
  struct Event;
  std::shared_ptr<Event> create_event();
  void record_event(const std::shared_ptr<Event>& event, void* stream);
  void wait_event(void* stream, const std::shared_ptr<Event>& event);
  // Sleeps `delay` before every later copy, reduction and kernel (0: none).
  void set_delay(std::chrono::microseconds delay) noexcept { delay_us_.store(delay.count()); }
  // Operations run so far, over every stream.
  std::uint64_t operations() const noexcept { return operations_.load(); }

 private:
  class Stream;
  Stream& stream_of(void* stream);
  void enqueue(void* stream, std::function<void()> op, bool delayed);

  const int devices_;
  std::atomic<long long> delay_us_{0};
  std::atomic<std::uint64_t> operations_{0};
  std::mutex mutex_;
  std::vector<std::unique_ptr<Stream>> streams_;  // [0]: the default stream
};

}  // namespace ringlet::exec
