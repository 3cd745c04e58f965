// SPDX-License-Identifier: Apache-2.0
// HelperThread: one persistent worker that runs one job at a time, so that an algorithm that
// overlaps two activities (the hierarchical pipeline) does not start a thread per call.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace ringlet {

class HelperThread {
 public:
  // `on_start` runs first on the thread (NUMA pinning), once.
  explicit HelperThread(std::function<void()> on_start = {}) : on_start_(std::move(on_start)) {}
  HelperThread(const HelperThread&) = delete;
  HelperThread& operator=(const HelperThread&) = delete;
  ~HelperThread() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
      cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }

  // Runs `job` on the thread, started at the first call (std::system_error when it cannot
  // be). One job at a time: join() it before the next start(). `job` must not throw.
  void start(std::function<void()> job) {
    std::lock_guard lock(mutex_);
    if (!thread_.joinable()) thread_ = std::thread([this] { main(); });
    job_ = std::move(job);
    busy_ = true;
    cv_.notify_all();
  }
  // Waits until the job given to start() has returned.
  void join() noexcept {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return !busy_; });
  }

 private:
  void main() {
    if (on_start_) on_start_();
    std::unique_lock lock(mutex_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || job_; });
      if (!job_) return;
      std::function<void()> job = std::move(job_);
      job_ = nullptr;
      lock.unlock();
      job();
      job = nullptr;
      lock.lock();
      busy_ = false;
      cv_.notify_all();
    }
  }

  std::function<void()> on_start_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace ringlet
