// SPDX-License-Identifier: Apache-2.0
// What an algorithm needs from its communicator: connections, scratch memory, deadline.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/common/deadline.hpp"
#include "transports/transport.hpp"

namespace ringlet::algo {

// Filled by Communicator::Impl for one collective. Algorithms use only the connections and
// the scratch memory given here, all owned by the communicator.
struct Context {
  int rank = 0;
  int size = 1;
  // Connection to each peer this rank talks to, indexed by rank (null where none).
  std::span<transport::Connection* const> peers;
  transport::Connection* left = nullptr;   // rank - 1
  transport::Connection* right = nullptr;  // rank + 1
  // Receive slots of the pipelined ring: `slots` slices of `slice_bytes` each.
  std::span<std::byte> ring_scratch;
  std::size_t slice_bytes = 0;
  int slots = 0;
  // Receive buffer of the latency-optimal path; at least the crossover size.
  std::span<std::byte> small_scratch;
  Deadline deadline;
};

// Balanced split of `count` elements into `parts` contiguous parts: part i is
// [split_begin(count, parts, i), split_begin(count, parts, i + 1)).
inline std::size_t split_begin(std::size_t count, std::size_t parts, std::size_t i) {
  return count / parts * i + std::min(i, count % parts);
}

inline int mod(long long a, int n) { return static_cast<int>(((a % n) + n) % n); }

}  // namespace ringlet::algo
