// SPDX-License-Identifier: Apache-2.0
// The emulated device: one worker thread per stream over host memory (tests only).
#include "src/exec/emulated.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "src/common/log.hpp"
#include "src/common/str_cat.hpp"
#include "src/reduce/reduce.hpp"

namespace ringlet::exec {

struct EmulatedDevice::Event {
  std::mutex mutex;
  std::condition_variable cv;
  std::uint64_t enqueued = 0;   // records enqueued
  std::uint64_t completed = 0;  // records run
};

class EmulatedDevice::Stream {
 public:
  Stream() : worker_([this] { main(); }) {}
  ~Stream() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      cv_.notify_all();
    }
    worker_.join();
  }
  void push(std::function<void()> op) {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(op));
    cv_.notify_all();
  }
  // Waits until every operation pushed so far has run; rethrows the first failure.
  void drain() {
    std::unique_lock lock(mutex_);
    const std::uint64_t target = pushed_total();
    idle_cv_.wait(lock, [&] { return done_ >= target; });
    if (!error_.empty()) {
      const std::string e = error_;
      error_.clear();
      throw Error(ErrorCode::transport, str_cat("emulated device: ", e));
    }
  }

 private:
  std::uint64_t pushed_total() const { return done_ + queue_.size() + (running_ ? 1 : 0); }
  void main() {
    std::unique_lock lock(mutex_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      std::function<void()> op = std::move(queue_.front());
      queue_.pop_front();
      running_ = true;
      lock.unlock();
      try {
        op();
      } catch (const std::exception& e) {
        lock.lock();
        if (error_.empty()) error_ = e.what();
        lock.unlock();
      }
      lock.lock();
      running_ = false;
      ++done_;
      idle_cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<std::function<void()>> queue_;
  std::uint64_t done_ = 0;
  bool running_ = false;
  bool stopping_ = false;
  std::string error_;
  std::thread worker_;
};

EmulatedDevice::EmulatedDevice(int devices) : devices_(devices) {
  streams_.push_back(std::make_unique<Stream>());
}

EmulatedDevice::~EmulatedDevice() {
  // Streams still waiting on a host flag end by their bound.
  std::lock_guard lock(mutex_);
  streams_.clear();
}

void EmulatedDevice::set_current(int ordinal) {
  if (ordinal < 0 || ordinal >= devices_) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("emulated device: no device ", ordinal, " (", devices_, " emulated)"));
  }
}

void* EmulatedDevice::create_stream() {
  std::lock_guard lock(mutex_);
  streams_.push_back(std::make_unique<Stream>());
  return streams_.back().get();
}

void EmulatedDevice::destroy_stream(void* stream) noexcept {
  if (stream == nullptr) return;
  std::unique_ptr<Stream> gone;
  {
    std::lock_guard lock(mutex_);
    auto it = std::find_if(streams_.begin() + 1, streams_.end(),
                           [&](const std::unique_ptr<Stream>& s) { return s.get() == stream; });
    if (it == streams_.end()) return;
    gone = std::move(*it);
    streams_.erase(it);
  }
  try {
    gone->drain();
  } catch (...) {
  }
}

EmulatedDevice::Stream& EmulatedDevice::stream_of(void* stream) {
  std::lock_guard lock(mutex_);
  if (stream == nullptr) return *streams_.front();
  for (const auto& s : streams_) {
    if (s.get() == stream) return *s;
  }
  throw Error(ErrorCode::invalid_argument, "emulated device: unknown stream");
}

void EmulatedDevice::enqueue(void* stream, std::function<void()> op, bool delayed) {
  stream_of(stream).push([this, op = std::move(op), delayed] {
    const long long us = delay_us_.load();
    if (delayed && us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
    op();
    operations_.fetch_add(1);
  });
}

void EmulatedDevice::copy_async(void* dst, const void* src, std::size_t bytes, void* stream) {
  if (bytes == 0 || dst == src) return;
  enqueue(
      stream, [dst, src, bytes] { std::memmove(dst, src, bytes); }, true);
}

void EmulatedDevice::reduce_async(void* out, const void* a, const void* b, std::size_t n,
                                  DataType type, ReduceOp op, void* stream) {
  if (n == 0) return;
  const reduce::HostKernel3 k = reduce::host_kernel3(type, op);
  enqueue(
      stream, [k, out, a, b, n] { k(out, a, b, n); }, true);
}

void EmulatedDevice::scale_async(void* data, std::size_t n, DataType type, int divisor,
                                 void* stream) {
  if (n == 0) return;
  enqueue(
      stream, [data, n, type, divisor] { reduce::divide_host(data, n, type, divisor); }, true);
}

void EmulatedDevice::synchronize(void* stream) { stream_of(stream).drain(); }

std::uint32_t* EmulatedDevice::alloc_flags(std::size_t n) { return new std::uint32_t[n]{}; }

void EmulatedDevice::free_flags(std::uint32_t* flags) noexcept { delete[] flags; }

void EmulatedDevice::write_flag(void* stream, std::uint32_t* flag, std::uint32_t value) {
  enqueue(
      stream,
      [flag, value] {
        std::atomic_ref<std::uint32_t>(*flag).store(value, std::memory_order_release);
      },
      false);
}

void EmulatedDevice::wait_flag(void* stream, std::uint32_t* flag, std::uint32_t value) {
  enqueue(
      stream,
      [flag, value] {
        // The device-side wait: the stream's later work stays behind it until the host writes.
        const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(120);
        while (std::atomic_ref<std::uint32_t>(*flag).load(std::memory_order_acquire) < value) {
          if (std::chrono::steady_clock::now() > limit) {
            throw std::runtime_error(
                str_cat("a stream waited 120 s for a host flag to reach ", value));
          }
          std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
      },
      false);
}

void* EmulatedDevice::host_alloc(std::size_t bytes) { return alloc(bytes); }
void EmulatedDevice::host_free(void* p) noexcept { free(p); }

void* EmulatedDevice::alloc(std::size_t bytes) {
  void* p = std::aligned_alloc(64, (std::max<std::size_t>(bytes, 1) + 63) / 64 * 64);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void EmulatedDevice::free(void* p) noexcept { std::free(p); }

void EmulatedDevice::launch(void* stream, std::function<void()> fn) {
  enqueue(stream, std::move(fn), true);
}

std::shared_ptr<EmulatedDevice::Event> EmulatedDevice::create_event() {
  return std::make_shared<Event>();
}

void EmulatedDevice::record_event(const std::shared_ptr<Event>& event, void* stream) {
  {
    std::lock_guard lock(event->mutex);
    ++event->enqueued;
  }
  enqueue(
      stream,
      [event] {
        std::lock_guard lock(event->mutex);
        ++event->completed;
        event->cv.notify_all();
      },
      false);
}

void EmulatedDevice::wait_event(void* stream, const std::shared_ptr<Event>& event) {
  std::uint64_t target = 0;
  {
    std::lock_guard lock(event->mutex);
    target = event->enqueued;  // 0: never recorded, no wait
  }
  enqueue(
      stream,
      [event, target] {
        std::unique_lock lock(event->mutex);
        event->cv.wait(lock, [&] { return event->completed >= target; });
      },
      false);
}

}  // namespace ringlet::exec
