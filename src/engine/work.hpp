// SPDX-License-Identifier: Apache-2.0
// The shared state behind a ringlet::Work: done flag, error and completion callbacks. The
// progress engine completes it; Work reads it from any thread.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <vector>

#include "include/ringlet/ringlet.hpp"

namespace ringlet::detail {

struct WorkState {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;
  std::vector<std::function<void(std::exception_ptr)>> callbacks;

  // Marks the collective finished and runs the callbacks on this thread, outside the lock.
  // A callback's exception is swallowed (it has nowhere to go).
  void complete(std::exception_ptr e) noexcept;
};

}  // namespace ringlet::detail
