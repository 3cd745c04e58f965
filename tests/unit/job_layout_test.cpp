// SPDX-License-Identifier: Apache-2.0
// JobLayout from node identities: grouping, positions, shapes, ring peers.
#include "src/job_layout.hpp"

#include <gtest/gtest.h>

#include "include/ringlet/ringlet.hpp"

namespace ringlet {
namespace {

TEST(JobLayoutTest, ShapesFromNodeIdentities) {
  EXPECT_EQ(JobLayout::from_node_ids(0, {"a"}).shape, JobShape::single);
  EXPECT_EQ(JobLayout::from_node_ids(1, {"a", "a", "a"}).shape, JobShape::one_node);
  EXPECT_EQ(JobLayout::from_node_ids(0, {"a", "b", "a", "b"}).shape, JobShape::uniform);
  EXPECT_EQ(JobLayout::from_node_ids(0, {"a", "b", "c"}).shape, JobShape::flat);
  EXPECT_EQ(JobLayout::from_node_ids(0, {"a", "a", "b"}).shape, JobShape::flat);
}

TEST(JobLayoutTest, InterleavedRanksGroupByNodeInRankOrder) {
  // Ranks 0..5 on nodes x, y, x, z, y, z: node order is first appearance.
  const std::vector<std::string> ids = {"x", "y", "x", "z", "y", "z"};
  const JobLayout l = JobLayout::from_node_ids(4, ids);
  EXPECT_EQ(l.size, 6);
  EXPECT_EQ(l.node_count(), 3);
  EXPECT_EQ(l.node_of_rank, (std::vector<int>{0, 1, 0, 2, 1, 2}));
  EXPECT_EQ(l.node_members(0), (std::vector<int>{0, 2}));
  EXPECT_EQ(l.node_members(1), (std::vector<int>{1, 4}));
  EXPECT_EQ(l.node_members(2), (std::vector<int>{3, 5}));
  EXPECT_EQ(l.node_index, 1);
  EXPECT_EQ(l.node_position, 1);
  EXPECT_EQ(l.local_rank, 1);
  EXPECT_EQ(l.local_size, 2);
  EXPECT_EQ(l.shape, JobShape::uniform);
  // The inter-node ring of position 1: ranks 2 (node x), 4 (node y), 5 (node z).
  EXPECT_EQ(l.node_ring_peer(-1), 2);
  EXPECT_EQ(l.node_ring_peer(+1), 5);
  EXPECT_EQ(JobLayout::from_node_ids(2, ids).node_ring_peer(-1), 5);  // wraps
}

TEST(JobLayoutTest, LauncherHintsWinForLocalRankAndSize) {
  const JobLayout l = JobLayout::from_node_ids(1, {"a", "a"}, 7, 8);
  EXPECT_EQ(l.local_rank, 7);
  EXPECT_EQ(l.local_size, 8);
  EXPECT_EQ(l.node_position, 1);  // the position among the ranks seen stays computed
}

TEST(JobLayoutTest, RejectsARankOutsideTheJob) {
  EXPECT_THROW(JobLayout::from_node_ids(2, {"a", "b"}), Error);
  EXPECT_THROW(JobLayout::from_node_ids(0, {}), Error);
}

}  // namespace
}  // namespace ringlet
