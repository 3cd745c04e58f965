// SPDX-License-Identifier: Apache-2.0
// How add() counters are stored: decimal text, so that get_string() shows them readably.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ringlet::bootstrap::detail {

// Parses a counter value; nullopt when `value` is not a decimal int64.
std::optional<std::int64_t> parse_counter(std::span<const std::byte> value);

// Encodes a counter value.
std::vector<std::byte> encode_counter(std::int64_t value);

// old + delta, or nullopt on int64 overflow.
std::optional<std::int64_t> checked_add(std::int64_t old, std::int64_t delta);

}  // namespace ringlet::bootstrap::detail
