// SPDX-License-Identifier: Apache-2.0
// Algorithm selection as data (UCC's score tables as the model): a table of message-size
// ranges per collective, built once per communicator from its Config, job layout and
// transport traits, printable at INFO and testable without sockets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/algo/context.hpp"
#include "src/fingerprint.hpp"
#include "src/job_layout.hpp"
#include "transports/transport.hpp"

namespace ringlet::algo {

enum class Algorithm : std::uint8_t {
  local,               // the node's local group alone (the job is one node)
  recursive_doubling,  // latency-optimal, log2 N exchanges of the whole message
  ring,                // pipelined ring, bandwidth-optimal
  rabenseifner,        // recursive halving + doubling, bandwidth-optimal in log2 N steps
  hierarchical,        // local reduce-scatter, parallel inter-node rings, local allgather
};

std::string_view to_string(Algorithm a) noexcept;

inline constexpr std::size_t kMaxBytes = std::numeric_limits<std::size_t>::max();

// Messages of lo..hi bytes (both included) take `algorithm`.
struct Range {
  std::size_t lo = 0;
  std::size_t hi = kMaxBytes;
  Algorithm algorithm = Algorithm::ring;
  friend bool operator==(const Range&, const Range&) = default;
};

// A parsed RINGLET_ALGO / Options::algorithm. "auto" (empty ranges); one name for every size
// ("ring", "rabenseifner", "recursive_doubling" or "rd", "hier" or "hierarchical", "local" or
// "shm"); or ranges "rd:0-64K,ring:64K-" separated by ',' or ';' (sizes in bytes with
// optional K, M, G suffixes; "max" or nothing after the dash for no bound; the first range
// that contains a size wins; sizes no range covers take auto).
// "model": the cost model (src/algo/cost_model.hpp) over alpha and beta that the job
// measures on its own links at create() (src/algo/probe.hpp) chooses every size's algorithm.
struct AlgorithmSpec {
  std::vector<Range> ranges;
  bool model = false;
  bool is_auto() const noexcept { return ranges.empty() && !model; }
};
// Throws Error(invalid_argument) naming `what` (the variable or option) for a bad spec.
AlgorithmSpec parse_algorithm_spec(std::string_view text, std::string_view what);

// What selection looks at besides the collective.
struct SelectInputs {
  AlgorithmSpec spec;
  std::size_t crossover_bytes = 0;  // auto: recursive doubling up to here
  JobShape shape = JobShape::single;
  bool local_group = false;  // a local group serves this node (shared memory enabled)
  transport::TransportTraits traits;
  // With spec.model: the cost model's ranges (covering 0..max), which replace the automatic
  // choice; empty: the automatic choice.
  std::vector<Range> model_ranges;
};

// The allreduce ranges in force, covering 0..max without gaps, and why.
class SelectTable {
 public:
  static SelectTable build(const SelectInputs& in);
  Algorithm allreduce(std::size_t bytes) const noexcept {
    for (const Range& r : ranges_) {
      if (bytes <= r.hi) return r.algorithm;
    }
    return ranges_.empty() ? Algorithm::ring : ranges_.back().algorithm;
  }
  // barrier: through the local group on one node, recursive doubling otherwise.
  Algorithm barrier() const noexcept { return barrier_; }
  // Whether the ranks of one node agree through their local group before every collective
  // (one-node jobs, where a local collective and a network one could otherwise wait for
  // each other).
  bool agree_locally() const noexcept { return agree_locally_; }
  const std::vector<Range>& allreduce_ranges() const noexcept { return ranges_; }
  // Notes on requested algorithms the job's shape does not allow (logged once at INFO).
  const std::vector<std::string>& fallbacks() const noexcept { return fallbacks_; }

 private:
  std::vector<Range> ranges_;
  Algorithm barrier_ = Algorithm::recursive_doubling;
  bool agree_locally_ = false;
  std::vector<std::string> fallbacks_;
};

// "allreduce: recursive_doubling 0-64K, ring 64K+1-max; barrier: recursive_doubling".
std::string describe(const SelectTable& table);

// One collective's plan: the algorithm, the op it reduces with (avg becomes sum) and the
// post-scale step that completes avg.
struct Plan {
  Algorithm algorithm = Algorithm::ring;
  ReduceOp op = ReduceOp::sum;
  PostScale post_scale;
  MemoryKind memory = MemoryKind::host;  // the executor the algorithm runs on
};

struct CollectiveDesc {
  CollectiveKind kind = CollectiveKind::allreduce;
  std::size_t bytes = 0;
  ReduceOp op = ReduceOp::sum;
  MemoryKind memory = MemoryKind::host;
};

// The plan for `desc` in a job of `world_size` ranks. Inline: it is on every collective's
// latency path.
inline Plan select(const SelectTable& table, const CollectiveDesc& desc, int world_size) {
  Plan plan;
  plan.memory = desc.memory;
  plan.op = desc.op == ReduceOp::avg ? ReduceOp::sum : desc.op;
  if (desc.op == ReduceOp::avg) plan.post_scale.divisor = world_size;
  switch (desc.kind) {
    case CollectiveKind::allreduce:
      plan.algorithm = table.allreduce(desc.bytes);
      break;
    case CollectiveKind::barrier:
      plan.algorithm = table.barrier();
      break;
    case CollectiveKind::broadcast:
    case CollectiveKind::allgather:
    case CollectiveKind::reduce_scatter:
    case CollectiveKind::dup:
    case CollectiveKind::allreduce_list:
      plan.algorithm = Algorithm::ring;
      break;
  }
  return plan;
}

}  // namespace ringlet::algo
