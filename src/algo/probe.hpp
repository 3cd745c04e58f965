// SPDX-License-Identifier: Apache-2.0
// Measures this job's own links for the cost model (src/algo/cost_model.hpp): alpha, the
// time of one small message, and beta, the time per byte of a large one, on the ring's
// links, agreed by every rank.
#pragma once

#include <cstddef>
#include <span>

#include "src/algo/context.hpp"

namespace ringlet::algo {

struct ProbeOptions {
  std::size_t small_bytes = 8;
  int small_rounds = 9;
  // At least 2 MiB: a tbf-shaped link passes its ~125 KB burst faster than its rate.
  std::size_t large_bytes = std::size_t{2} << 20;
  int large_rounds = 3;
};

// What the probe measured: the slowest rank's medians (every rank holds the same values).
struct ProbeResult {
  double alpha_s = 0;          // one small message, send to completed receive
  double beta_s_per_byte = 0;  // each further byte of a large one
  double seconds_spent = 0;    // the probe's own time on this rank
};

// Each rank sends to its right neighbour while it receives from its left (the ring's
// pattern, every link busy at once): `small_rounds` shifts of small_bytes, then
// `large_rounds` of large_bytes; per rank the median shift time of each kind gives
// alpha = t_small and beta = (t_large - t_small) / (large_bytes - small_bytes). The slowest
// rank's alpha and beta (a recursive-doubling max over every rank, so that the ranks agree
// bit for bit) go to `out`. `buf` holds 2 x large_bytes, registered as `mr`. Cost per link:
// large_rounds x large_bytes plus small_rounds tiny messages (about 55 ms at 1 Gbit/s with
// the defaults). A resumable task; `ctx`, `buf` and `out` outlive it.
engine::Task probe_links(Context& ctx, std::span<std::byte> buf, const transport::MemoryRegion* mr,
                         ProbeOptions options, ProbeResult* out);

}  // namespace ringlet::algo
