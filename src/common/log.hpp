// SPDX-License-Identifier: Apache-2.0
// Logging on stderr, each line prefixed with the rank: RINGLET_DEBUG=warn|info|trace.
#pragma once

#include <string>

#include "src/common/str_cat.hpp"

namespace ringlet::log {

enum class Level { warn = 0, info = 1, trace = 2 };

// The level in force (RINGLET_DEBUG, read once).
Level level() noexcept;
inline bool enabled(Level l) noexcept { return static_cast<int>(l) <= static_cast<int>(level()); }

// The rank shown in this thread's prefix; -1 before the rank is known. Per thread, so that
// ranks run as threads of one process (tests) log under their own rank.
void set_thread_rank(int rank) noexcept;

// Writes one whole line "ringlet[<rank>] <LEVEL> <message>\n" with a single write(2).
void write(Level l, const std::string& message) noexcept;

}  // namespace ringlet::log

// RINGLET_LOG(info, "picked ", n, " sockets"): builds the message only when the level is on.
#define RINGLET_LOG(lvl, ...)                                                             \
  do {                                                                                    \
    if (::ringlet::log::enabled(::ringlet::log::Level::lvl))                              \
      ::ringlet::log::write(::ringlet::log::Level::lvl, ::ringlet::str_cat(__VA_ARGS__)); \
  } while (false)
