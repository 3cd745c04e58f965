// SPDX-License-Identifier: Apache-2.0
// JobLayout: the rendezvous result as one value: which node each rank is on, this rank's
// place, and the job's shape. Pure: built from the ranks' node identities, unit-testable.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace ringlet {

enum class JobShape : unsigned char {
  single,    // one rank
  one_node,  // several ranks, all on one node
  uniform,   // several nodes with the same number L > 1 of ranks each (hierarchical)
  flat,      // several nodes, one rank each or unequal numbers
};

const char* to_string(JobShape shape) noexcept;

struct JobLayout {
  int rank = 0;
  int size = 1;
  std::vector<int> node_of_rank;          // node index of every rank
  std::vector<std::vector<int>> members;  // ranks of each node, in rank order
  int node_index = 0;                     // this rank's node
  int node_position = 0;                  // this rank's index among its node's ranks
  int local_rank = 0;                     // as the launcher said, else node_position
  int local_size = 1;                     // as the launcher said, else the node's ranks
  JobShape shape = JobShape::single;

  int node_count() const noexcept { return static_cast<int>(members.size()); }
  const std::vector<int>& node_members(int node) const {
    return members[static_cast<std::size_t>(node)];
  }
  const std::vector<int>& my_node() const { return node_members(node_index); }
  // The rank at this rank's position on the node `offset` steps along the ring of nodes.
  int node_ring_peer(int offset) const;

  // `node_ids[r]` is rank r's node identity. Negative hints: computed from the identities.
  static JobLayout from_node_ids(int rank, const std::vector<std::string>& node_ids,
                                 int local_rank_hint = -1, int local_size_hint = -1);
};

}  // namespace ringlet
