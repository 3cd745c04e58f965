// SPDX-License-Identifier: Apache-2.0
// Test helpers shared by the transport tests: reproducible byte patterns and an exact
// comparison that names the first differing byte.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ringlet::test {

// `size` bytes of a xorshift sequence seeded by `seed` (different seeds, different bytes).
inline std::vector<std::byte> pattern(std::size_t size, std::uint64_t seed) {
  std::vector<std::byte> v(size);
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (std::size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v[i] = static_cast<std::byte>(x);
  }
  return v;
}

// Exact comparison that reports the first differing index.
inline ::testing::AssertionResult same_bytes(const std::vector<std::byte>& got,
                                             const std::vector<std::byte>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      return ::testing::AssertionFailure()
             << "first difference at byte " << i << " of " << got.size() << ": "
             << static_cast<int>(got[i]) << " != " << static_cast<int>(want[i]);
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace ringlet::test
