// SPDX-License-Identifier: Apache-2.0
// Deadline: the steady_clock time point every blocking call in ringlet ends by.
#pragma once

#include <time.h>

#include <algorithm>
#include <chrono>

namespace ringlet {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// Now, to the kernel's tick (a few ms): CLOCK_MONOTONIC_COARSE, the clock Clock reads at full
// resolution (so the two compare), read from memory in about 6 ns where Clock::now() takes
// about 24 ns on the reference VM. For deadlines of seconds and "since when" records on
// the latency path; never for durations that are measured or shown in microseconds.
inline Clock::time_point coarse_now() noexcept {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec)));
}

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
