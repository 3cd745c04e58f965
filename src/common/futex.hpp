// SPDX-License-Identifier: Apache-2.0
// A bounded wait on a 32-bit word between the threads of one process (Linux futex, private):
// what a task's Pollable sleeps on when the word it awaits is advanced by another thread.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>

namespace ringlet {

// Sleeps while `word` holds `value`, at most `timeout` (spurious wake-ups allowed).
inline void futex_wait_private(std::atomic<std::uint32_t>& word, std::uint32_t value,
                               std::chrono::microseconds timeout) noexcept {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  const long long us = std::max<long long>(timeout.count(), 1);
  timespec ts{static_cast<time_t>(us / 1000000), static_cast<long>(us % 1000000) * 1000L};
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, value, &ts,
            nullptr, 0);
}

// Wakes every thread asleep in futex_wait_private() on `word`.
inline void futex_wake_private(std::atomic<std::uint32_t>& word) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX,
            nullptr, nullptr, 0);
}

}  // namespace ringlet
