// SPDX-License-Identifier: Apache-2.0
// How a buffer is cut into parts: one definition for the algorithms and every local group.
#pragma once

#include <algorithm>
#include <cstddef>

namespace ringlet {

// Balanced split of `count` elements into `parts` contiguous parts: part i is
// [split_begin(count, parts, i), split_begin(count, parts, i + 1)). The first count % parts
// parts are one element longer than the others.
inline std::size_t split_begin(std::size_t count, std::size_t parts, std::size_t i) {
  return count / parts * i + std::min(i, count % parts);
}

// a mod n in [0, n), for ring arithmetic on ranks (a may be negative).
inline int mod(long long a, int n) { return static_cast<int>(((a % n) + n) % n); }

}  // namespace ringlet
