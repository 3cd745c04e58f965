// SPDX-License-Identifier: Apache-2.0
// JobLayout from the ranks' node identities.
#include "src/job_layout.hpp"

#include <algorithm>

#include "src/common/check.hpp"
#include "src/common/partition.hpp"

namespace ringlet {

const char* to_string(JobShape shape) noexcept {
  switch (shape) {
    case JobShape::single:
      return "single rank";
    case JobShape::one_node:
      return "one node";
    case JobShape::uniform:
      return "uniform nodes";
    case JobShape::flat:
      return "flat (one rank per node or unequal nodes)";
  }
  return "?";
}

int JobLayout::node_ring_peer(int offset) const {
  const auto& node = node_members(mod(node_index + offset, node_count()));
  return node[static_cast<std::size_t>(node_position)];
}

JobLayout JobLayout::from_node_ids(int rank, const std::vector<std::string>& node_ids,
                                   int local_rank_hint, int local_size_hint) {
  const int size = static_cast<int>(node_ids.size());
  RINGLET_CHECK(size >= 1 && rank >= 0 && rank < size, "rank ", rank, " is outside a job of ",
                size);
  JobLayout l;
  l.rank = rank;
  l.size = size;
  l.node_of_rank.assign(node_ids.size(), 0);
  std::vector<const std::string*> nodes;  // in order of first appearance
  for (std::size_t r = 0; r < node_ids.size(); ++r) {
    auto it = std::find_if(nodes.begin(), nodes.end(),
                           [&](const std::string* n) { return *n == node_ids[r]; });
    l.node_of_rank[r] = static_cast<int>(it - nodes.begin());
    if (it == nodes.end()) nodes.push_back(&node_ids[r]);
  }
  l.members.assign(nodes.size(), {});
  for (int r = 0; r < size; ++r) {
    l.members[static_cast<std::size_t>(l.node_of_rank[static_cast<std::size_t>(r)])].push_back(r);
  }
  l.node_index = l.node_of_rank[static_cast<std::size_t>(rank)];
  const auto& mine = l.my_node();
  l.node_position = static_cast<int>(std::find(mine.begin(), mine.end(), rank) - mine.begin());
  l.local_rank = local_rank_hint >= 0 ? local_rank_hint : l.node_position;
  l.local_size = local_size_hint >= 0 ? local_size_hint : static_cast<int>(mine.size());
  const std::size_t per_node = l.members[0].size();
  const bool equal = std::all_of(l.members.begin(), l.members.end(),
                                 [&](const std::vector<int>& m) { return m.size() == per_node; });
  if (size == 1) {
    l.shape = JobShape::single;
  } else if (l.members.size() == 1) {
    l.shape = JobShape::one_node;
  } else if (equal && per_node > 1) {
    l.shape = JobShape::uniform;
  } else {
    l.shape = JobShape::flat;
  }
  return l;
}

}  // namespace ringlet
