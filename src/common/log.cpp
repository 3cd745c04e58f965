// SPDX-License-Identifier: Apache-2.0
// Logging on stderr, each line prefixed with the rank.
#include "src/common/log.hpp"

#include <unistd.h>

#include "src/common/env.hpp"

namespace ringlet::log {
namespace {
thread_local int t_rank = -1;
}

Level level() noexcept {
  static const Level l = [] {
    try {
      return env::debug_level();
    } catch (...) {
      return Level::warn;
    }
  }();
  return l;
}

void set_thread_rank(int rank) noexcept { t_rank = rank; }

void write(Level l, const std::string& message) noexcept {
  try {
    static const char* const names[] = {"WARN", "INFO", "TRACE"};
    std::string line = t_rank >= 0 ? str_cat("ringlet[", t_rank, "] ") : std::string("ringlet ");
    line += names[static_cast<int>(l)];
    line += ' ';
    line += message;
    line += '\n';
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
      ssize_t n = ::write(2, p, left);
      if (n <= 0) break;
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  } catch (...) {
  }
}

}  // namespace ringlet::log
