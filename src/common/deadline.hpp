// SPDX-License-Identifier: Apache-2.0
// Deadline: the steady_clock time point every blocking call in ringlet ends by.
#pragma once

#include <algorithm>
#include <chrono>

namespace ringlet {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// Milliseconds left until `deadline`, clamped to [0, cap_ms]; for poll(2) timeouts.
inline int ms_until(Deadline deadline, int cap_ms = 1000) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  auto ms = left.count();
  if (ms < 0) return 0;
  // Round up so a wait never ends before its deadline.
  return static_cast<int>(std::min<long long>(ms + 1, cap_ms));
}

// Whole milliseconds from `a` to `b`, for "waited N ms" messages.
inline long long ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

}  // namespace ringlet
