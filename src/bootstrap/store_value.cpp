// SPDX-License-Identifier: Apache-2.0
// Counter values of add(): decimal int64 text, shared by every store.
#include "src/bootstrap/store_value.hpp"

#include <charconv>
#include <cstring>

namespace ringlet::bootstrap::detail {

std::optional<std::int64_t> parse_counter(std::span<const std::byte> value) {
  const char* begin = reinterpret_cast<const char*>(value.data());
  const char* end = begin + value.size();
  if (begin == end) return std::nullopt;
  std::int64_t x = 0;
  auto [ptr, ec] = std::from_chars(begin, end, x);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return x;
}

std::vector<std::byte> encode_counter(std::int64_t value) {
  std::string s = std::to_string(value);
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

std::optional<std::int64_t> checked_add(std::int64_t old, std::int64_t delta) {
  std::int64_t out = 0;
  if (__builtin_add_overflow(old, delta, &out)) return std::nullopt;
  return out;
}

}  // namespace ringlet::bootstrap::detail
