// SPDX-License-Identifier: Apache-2.0
// The selection table: parsing RINGLET_ALGO, the automatic table per job shape, requested
// ranges laid over it, fallbacks, plans; no sockets.
#include "src/algo/select.hpp"

#include <gtest/gtest.h>

#include "src/algo/rabenseifner.hpp"
#include "src/algo/recursive_doubling.hpp"

namespace ringlet::algo {
namespace {

constexpr std::size_t K = 1024;

SelectTable table(std::string_view spec, JobShape shape, bool local_group,
                  std::size_t crossover = 64 * K) {
  SelectInputs in;
  in.spec = parse_algorithm_spec(spec, "RINGLET_ALGO");
  in.crossover_bytes = crossover;
  in.shape = shape;
  in.local_group = local_group;
  return SelectTable::build(in);
}

TEST(SelectTest, ParsesNamesAndRanges) {
  EXPECT_TRUE(parse_algorithm_spec("", "x").is_auto());
  EXPECT_TRUE(parse_algorithm_spec(" AUTO ", "x").is_auto());
  EXPECT_EQ(parse_algorithm_spec("ring", "x").ranges,
            (std::vector<Range>{{0, kMaxBytes, Algorithm::ring}}));
  EXPECT_EQ(parse_algorithm_spec("recursive_doubling", "x").ranges,
            (std::vector<Range>{{0, kMaxBytes, Algorithm::recursive_doubling}}));
  EXPECT_EQ(parse_algorithm_spec("hier", "x").ranges[0].algorithm, Algorithm::hierarchical);
  EXPECT_EQ(parse_algorithm_spec("rd:0-64K;ring:64K-max", "x").ranges,
            (std::vector<Range>{{0, 64 * K, Algorithm::recursive_doubling},
                                {64 * K, kMaxBytes, Algorithm::ring}}));
  EXPECT_EQ(parse_algorithm_spec("ring:1M-2M", "x").ranges,
            (std::vector<Range>{{1 << 20, 2 << 20, Algorithm::ring}}));
}

TEST(SelectTest, ParsesRabenseifner) {
  // The spelling: ',' between ranges, an open upper bound, the first range winning.
  EXPECT_EQ(parse_algorithm_spec("recursive_doubling:0-64K,ring:64K-", "x").ranges,
            (std::vector<Range>{{0, 64 << 10, Algorithm::recursive_doubling},
                                {64 << 10, kMaxBytes, Algorithm::ring}}));
  EXPECT_TRUE(parse_algorithm_spec("model", "x").model);
  EXPECT_FALSE(parse_algorithm_spec("model", "x").is_auto());
  EXPECT_TRUE(parse_algorithm_spec("auto", "x").is_auto());
  EXPECT_EQ(parse_algorithm_spec("rabenseifner", "x").ranges,
            (std::vector<Range>{{0, kMaxBytes, Algorithm::rabenseifner}}));
  EXPECT_EQ(parse_algorithm_spec(" Rabenseifner ", "x").ranges,
            (std::vector<Range>{{0, kMaxBytes, Algorithm::rabenseifner}}));
  EXPECT_EQ(to_string(Algorithm::rabenseifner), "rabenseifner");
  EXPECT_EQ(parse_algorithm_spec("rd:0-64K;rabenseifner:64K-1M;ring:1M-max", "x").ranges,
            (std::vector<Range>{{0, 64 * K, Algorithm::recursive_doubling},
                                {64 * K, 1 << 20, Algorithm::rabenseifner},
                                {1 << 20, kMaxBytes, Algorithm::ring}}));
  const SelectTable t = table("rd:0-64K;rabenseifner:64K-1M;ring:1M-max", JobShape::flat, false);
  EXPECT_EQ(t.allreduce(64 * K), Algorithm::recursive_doubling);  // the first range wins
  EXPECT_EQ(t.allreduce(64 * K + 1), Algorithm::rabenseifner);
  EXPECT_EQ(t.allreduce(1 << 20), Algorithm::rabenseifner);
  EXPECT_EQ(t.allreduce((1 << 20) + 1), Algorithm::ring);
  EXPECT_EQ(describe(t),
            "allreduce: recursive_doubling 0-64K, rabenseifner 65537-1M, ring 1048577-max; "
            "barrier: recursive_doubling");
  // Forced for every size, on every shape (it needs only the network connections).
  for (JobShape shape : {JobShape::flat, JobShape::one_node, JobShape::uniform}) {
    const SelectTable f = table("rabenseifner", shape, true);
    EXPECT_EQ(f.allreduce(0), Algorithm::rabenseifner);
    EXPECT_EQ(f.allreduce(kMaxBytes), Algorithm::rabenseifner);
    EXPECT_TRUE(f.fallbacks().empty());
  }
  // auto is unchanged: it never picks rabenseifner (yet).
  for (std::size_t bytes : {std::size_t{0}, 64 * K, 64 * K + 1, std::size_t{1} << 30}) {
    EXPECT_NE(table("auto", JobShape::flat, false).allreduce(bytes), Algorithm::rabenseifner);
  }
  for (const char* bad : {"rabenseifner:", "raben", "rabenseifner:2-1"}) {
    EXPECT_THROW(parse_algorithm_spec(bad, "RINGLET_ALGO"), Error) << bad;
  }
}

TEST(SelectTest, RabenseifnerTalksToTheRecursiveDoublingPartners) {
  for (int size = 1; size <= 33; ++size) {
    for (int rank = 0; rank < size; ++rank) {
      EXPECT_EQ(rabenseifner_peers(rank, size), recursive_doubling_peers(rank, size))
          << "rank " << rank << " of " << size;
    }
  }
  EXPECT_EQ(rabenseifner_peers(0, 6), (std::vector<int>{1}));        // folds into rank 1
  EXPECT_EQ(rabenseifner_peers(1, 6), (std::vector<int>{0, 3, 4}));  // group 0: 1, 2 -> 3, 4
  EXPECT_EQ(rabenseifner_peers(5, 6), (std::vector<int>{3, 4}));     // group 3: 2, 1
}

TEST(SelectTest, RejectsBadSpecsNamingTheVariable) {
  for (const char* bad : {"tree", "ring:", "ring:-5", "ring:5-x", "ring:9-3", "ring:1X-2",
                          "ring;rd", "nccl:0-max", "rd:0-99999999999999999999", ";"}) {
    try {
      parse_algorithm_spec(bad, "RINGLET_ALGO");
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("RINGLET_ALGO="), std::string::npos) << e.what();
    }
  }
}

TEST(SelectTest, AutomaticTableFollowsTheMeasuredCrossover) {
  // Several nodes of one rank each: recursive doubling up to the crossover, ring above.
  const SelectTable t = table("auto", JobShape::flat, false);
  EXPECT_EQ(t.allreduce(0), Algorithm::recursive_doubling);
  EXPECT_EQ(t.allreduce(64 * K), Algorithm::recursive_doubling);
  EXPECT_EQ(t.allreduce(64 * K + 1), Algorithm::ring);
  EXPECT_EQ(t.allreduce(kMaxBytes), Algorithm::ring);
  EXPECT_EQ(t.barrier(), Algorithm::recursive_doubling);
  EXPECT_FALSE(t.agree_locally());
  EXPECT_EQ(describe(t),
            "allreduce: recursive_doubling 0-64K, ring 65537-max; barrier: recursive_doubling");
}

TEST(SelectTest, TheModelsRangesReplaceTheAutomaticChoice) {
  SelectInputs in;
  in.spec = parse_algorithm_spec("model", "RINGLET_ALGO");
  in.crossover_bytes = 64 * K;
  in.shape = JobShape::flat;
  in.model_ranges = {{0, 200 * K, Algorithm::recursive_doubling},
                     {200 * K + 1, kMaxBytes, Algorithm::rabenseifner}};
  const SelectTable t = SelectTable::build(in);
  EXPECT_EQ(t.allreduce_ranges(), in.model_ranges);
  EXPECT_EQ(t.allreduce(200 * K), Algorithm::recursive_doubling);
  EXPECT_EQ(t.allreduce(200 * K + 1), Algorithm::rabenseifner);
  // Before the probe has run (or where it does not: one node with a local group), the
  // automatic table stands.
  in.model_ranges.clear();
  EXPECT_EQ(SelectTable::build(in).allreduce(64 * K + 1), Algorithm::ring);
}

TEST(SelectTest, AutomaticTablePerShape) {
  const SelectTable one = table("auto", JobShape::one_node, true);
  EXPECT_EQ(one.allreduce(8), Algorithm::local);
  EXPECT_EQ(one.allreduce(256 << 20), Algorithm::local);
  EXPECT_EQ(one.barrier(), Algorithm::local);
  EXPECT_TRUE(one.agree_locally());
  // RINGLET_SHM=0: no local group, so one node behaves as a flat job.
  const SelectTable no_shm = table("auto", JobShape::one_node, false);
  EXPECT_EQ(no_shm.allreduce(8), Algorithm::recursive_doubling);
  EXPECT_EQ(no_shm.allreduce(1 << 20), Algorithm::ring);
  EXPECT_FALSE(no_shm.agree_locally());
  const SelectTable hier = table("auto", JobShape::uniform, true);
  EXPECT_EQ(hier.allreduce(64 * K), Algorithm::recursive_doubling);
  EXPECT_EQ(hier.allreduce(64 * K + 1), Algorithm::hierarchical);
  EXPECT_EQ(table("auto", JobShape::uniform, false).allreduce(1 << 20), Algorithm::ring);
  const SelectTable big = table("auto", JobShape::flat, false, 128 * K);
  EXPECT_EQ(big.allreduce(128 * K), Algorithm::recursive_doubling);
  EXPECT_EQ(big.allreduce(128 * K + 1), Algorithm::ring);
}

TEST(SelectTest, ForcedNamesServeEverySize) {
  const SelectTable ring = table("ring", JobShape::one_node, true);
  EXPECT_EQ(ring.allreduce(8), Algorithm::ring);
  EXPECT_EQ(ring.allreduce(1 << 30), Algorithm::ring);
  EXPECT_TRUE(ring.agree_locally());  // the local ranks still agree before each collective
  EXPECT_EQ(table("rd", JobShape::flat, false).allreduce(1 << 30), Algorithm::recursive_doubling);
  EXPECT_EQ(table("hier", JobShape::uniform, true).allreduce(8), Algorithm::hierarchical);
}

TEST(SelectTest, HierarchicalFallsBackWhereTheShapeForbidsIt) {
  const SelectTable flat = table("hier", JobShape::flat, false);
  EXPECT_EQ(flat.allreduce(8), Algorithm::ring);
  ASSERT_EQ(flat.fallbacks().size(), 1u);
  EXPECT_NE(flat.fallbacks()[0].find("does not allow it"), std::string::npos);
  // On one node the hierarchical allreduce is the local one.
  EXPECT_EQ(table("hier", JobShape::one_node, true).allreduce(1 << 20), Algorithm::local);
  // local elsewhere: the automatic choice, with a note.
  const SelectTable local = table("local", JobShape::flat, false);
  EXPECT_EQ(local.allreduce(8), Algorithm::recursive_doubling);
  EXPECT_EQ(local.allreduce(1 << 20), Algorithm::ring);
  EXPECT_EQ(local.fallbacks().size(), 1u);
}

TEST(SelectTest, RangesOverlayTheAutomaticTableFirstWins) {
  const SelectTable t = table("ring:0-1K;rd:512-1M", JobShape::flat, false);
  EXPECT_EQ(t.allreduce(0), Algorithm::ring);
  EXPECT_EQ(t.allreduce(1 * K), Algorithm::ring);  // in both: the first range wins
  EXPECT_EQ(t.allreduce(1 * K + 1), Algorithm::recursive_doubling);
  EXPECT_EQ(t.allreduce(1 << 20), Algorithm::recursive_doubling);
  EXPECT_EQ(t.allreduce((1 << 20) + 1), Algorithm::ring);  // uncovered: automatic
  // The table covers every size exactly once, in order.
  const auto& r = t.allreduce_ranges();
  ASSERT_FALSE(r.empty());
  EXPECT_EQ(r.front().lo, 0u);
  EXPECT_EQ(r.back().hi, kMaxBytes);
  for (std::size_t i = 1; i < r.size(); ++i) {
    EXPECT_EQ(r[i].lo, r[i - 1].hi + 1);
    EXPECT_NE(r[i].algorithm, r[i - 1].algorithm);  // neighbours merged
  }
  // The review's example reproduces today's default with an exclusive upper bound.
  const SelectTable ex = table("rd:0-64K;ring:64K-max", JobShape::flat, false);
  EXPECT_EQ(ex.allreduce(64 * K), Algorithm::recursive_doubling);
  EXPECT_EQ(ex.allreduce(64 * K + 1), Algorithm::ring);
}

TEST(SelectTest, PlanTurnsAvgIntoSumAndOnePostScale) {
  const SelectTable t = table("auto", JobShape::flat, false);
  Plan p = select(t, {CollectiveKind::allreduce, 8, ReduceOp::avg, MemoryKind::host}, 6);
  EXPECT_EQ(p.algorithm, Algorithm::recursive_doubling);
  EXPECT_EQ(p.op, ReduceOp::sum);
  EXPECT_EQ(p.post_scale.divisor, 6);
  p = select(t, {CollectiveKind::allreduce, 1 << 20, ReduceOp::max, MemoryKind::host}, 6);
  EXPECT_EQ(p.algorithm, Algorithm::ring);
  EXPECT_EQ(p.op, ReduceOp::max);
  EXPECT_EQ(p.post_scale.divisor, 1);
  p = select(t, {CollectiveKind::reduce_scatter, 8, ReduceOp::avg, MemoryKind::host}, 3);
  EXPECT_EQ(p.algorithm, Algorithm::ring);
  EXPECT_EQ(p.post_scale.divisor, 3);
  EXPECT_EQ(select(t, {CollectiveKind::barrier, 0, ReduceOp::max, MemoryKind::host}, 3).algorithm,
            Algorithm::recursive_doubling);
}

}  // namespace
}  // namespace ringlet::algo
