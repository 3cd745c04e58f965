// SPDX-License-Identifier: Apache-2.0
// The cost model: each formula against values computed by hand (the arithmetic is in the
// comments), crossovers where the algebra puts them, ranges without gaps, monotonic times,
// one rank, non-power-of-two rank counts, 10,000 nodes, the model file.
#include "src/algo/cost_model.hpp"

#include <gtest/gtest.h>

#include <cmath>

namespace ringlet::algo {
namespace {

constexpr std::size_t K = 1024;
constexpr std::size_t M = 1024 * K;

// alpha 10 us, beta 1 ns/B (1 GB/s), no reduction cost, 1 MiB slices.
CostModel simple() {
  CostModel m;
  m.net = {1e-5, 1e-9};
  m.local = {1e-6, 1e-10};
  m.gamma_s_per_byte = 0;
  return m;
}

ModelShape shape(std::int64_t nodes, std::int64_t rpn = 1, bool local_group = true) {
  ModelShape s;
  s.nodes = nodes;
  s.ranks_per_node = rpn;
  s.local_group = local_group;
  return s;
}

void expect_near_rel(double actual, double expected) {
  EXPECT_NEAR(actual, expected, std::abs(expected) * 1e-12 + 1e-18);
}

TEST(CostModelTest, FlatFormulasMatchHandComputedValues) {
  const CostModel m = simple();
  const ModelShape s4 = shape(4);
  // ring, p = 4, S = 4096: c = 1024, each of the 6 steps 10 us + 1.024 us.
  expect_near_rel(ring_time(m, s4, 4096), 6 * (1e-5 + 1024e-9));
  // recursive doubling: 2 exchanges of 10 us + 4.096 us.
  expect_near_rel(recursive_doubling_time(m, s4, 4096), 2 * (1e-5 + 4096e-9));
  // Rabenseifner: halving 2048 then 1024 bytes, doubling the same: 4 alpha + 6144 beta.
  expect_near_rel(rabenseifner_time(m, s4, 4096), 4e-5 + 6144e-9);
  // Lower bound over 4 nodes: 2 (3/4) S beta; busbw of S in T: S / T x 1.5.
  expect_near_rel(bandwidth_lower_bound(m, s4, 4096), 1.5 * 4096e-9);
  expect_near_rel(bus_bandwidth(s4, 4096, 1e-3), 4096 / 1e-3 * 1.5);
}

TEST(CostModelTest, NonPowerOfTwoAddsTheFold) {
  const CostModel m = simple();
  const ModelShape s6 = shape(6);  // q = 4, two extra ranks
  // rd: fold in and out (2 alpha + 2 S beta) + log2 4 = 2 exchanges: 4 alpha + 4 S beta.
  expect_near_rel(recursive_doubling_time(m, s6, 1000), 4e-5 + 4000e-9);
  // Rabenseifner: the fold + 4 alpha + 1.5 S beta.
  expect_near_rel(rabenseifner_time(m, s6, 1000), 6e-5 + 3500e-9);
  // ring: 10 steps of alpha + S/6 beta.
  expect_near_rel(ring_time(m, s6, 1000), 10 * (1e-5 + 1000.0 / 6 * 1e-9));
  // p = 5 folds one rank: 2 alpha + 2 S beta + 2 exchanges.
  expect_near_rel(recursive_doubling_time(m, shape(5), 1000), 4e-5 + 4000e-9);
  // p = 8 needs no fold: 3 exchanges.
  expect_near_rel(recursive_doubling_time(m, shape(8), 1000), 3 * (1e-5 + 1000e-9));
}

TEST(CostModelTest, RingPipelineHidesTheSmallerStageButOneSlice) {
  CostModel m = simple();
  m.gamma_s_per_byte = 2e-9;  // reduction slower than the link
  // p = 2, S = 4 MiB: c = 2 MiB; reduce-scatter step alpha + c gamma + 1 MiB beta,
  // allgather step alpha + c beta: 2 alpha + 7 MiB x 1 ns.
  expect_near_rel(ring_time(m, shape(2), 4 * M), 2e-5 + 7.0 * M * 1e-9);
  // One slice (S = 1 MiB, c = 512 KiB): Thakur's 2 alpha + c (2 beta + gamma).
  expect_near_rel(ring_time(m, shape(2), M), 2e-5 + 512.0 * K * 4e-9);
  // The reduction is counted in recursive doubling's steps too: alpha + S (beta + gamma).
  expect_near_rel(recursive_doubling_time(m, shape(2), 1000), 1e-5 + 1000 * 3e-9);
}

TEST(CostModelTest, HierarchicalAndLocalMatchHandComputedValues) {
  const CostModel m = simple();
  const ModelShape s = shape(4, 2);
  // 64 KiB, one pipeline chunk: rs = 2 alpha_l + S beta_l = 8.5536 us, the same for ag;
  // 2 rings of 32 KiB over 4 nodes with beta doubled: 6 (10 us + 8192 x 2 ns).
  const double rs = 2e-6 + 65536e-10;
  const double ring = 6 * (1e-5 + 8192 * 2e-9);
  expect_near_rel(hierarchical_time(m, s, 64 * K), ring + 2 * rs);
  // 8 MiB, 1 MiB chunks: the ring for all of S, the local stages for the first chunk.
  const double ring8 = 6 * (1e-5 + 1.0 * M * 2e-9);
  const double rs1 = 2 * 4 * 1e-6 + 1.0 * M * 1e-10;
  expect_near_rel(hierarchical_time(m, s, 8 * M), ring8 + 2 * rs1);
  // The inter-node bandwidth term equals the node-level bound.
  CostModel bw_only;
  bw_only.net = {0, 1e-9};
  EXPECT_NEAR(hierarchical_time(bw_only, shape(64, 8), 64 * M),
              bandwidth_lower_bound(bw_only, shape(64, 8), 64 * M), 1e-12);

  CostModel l = simple();
  l.gamma_s_per_byte = 1e-10;
  const ModelShape one = shape(1, 4);
  // Small path: alpha_l + 2 S beta_l + 3 S gamma.
  expect_near_rel(local_time(l, one, 1024), 1e-6 + 5 * 1024e-10);
  // Chunked path, 4 chunks: 12 alpha_l + 2 S beta_l + 3/4 S gamma.
  expect_near_rel(local_time(l, one, M), 12e-6 + 2.75 * M * 1e-10);
  expect_near_rel(bandwidth_lower_bound(l, one, M), 1.5 * M * 1e-10);
}

TEST(CostModelTest, AvailabilityFollowsTheShape) {
  const CostModel m = simple();
  EXPECT_TRUE(std::isinf(hierarchical_time(m, shape(4, 1), 1)));
  EXPECT_TRUE(std::isinf(hierarchical_time(m, shape(4, 8, false), 1)));
  EXPECT_TRUE(std::isinf(local_time(m, shape(4, 8), 1)));
  EXPECT_TRUE(std::isinf(local_time(m, shape(1, 8, false), 1)));
  EXPECT_EQ(fastest(m, shape(1, 8), 64 * M), Algorithm::local);
  EXPECT_NE(fastest(m, shape(1, 8, false), 64 * M), Algorithm::local);
  EXPECT_EQ(fastest(m, shape(64, 8), 64 * M), Algorithm::hierarchical);
  try {
    fastest(m, shape(4), 1, {Algorithm::hierarchical});
    ADD_FAILURE() << "no candidate can run";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::invalid_argument);
  }
}

TEST(CostModelTest, RingVersusRecursiveDoublingCrossoverForFourRanks) {
  const CostModel m = simple();
  // rd = 2 alpha + 2 S beta, ring = 6 alpha + 1.5 S beta: equal at S = 8 alpha / beta = 80000.
  const std::vector<Algorithm> two = {Algorithm::recursive_doubling, Algorithm::ring};
  EXPECT_EQ(fastest(m, shape(4), 79999, two), Algorithm::recursive_doubling);
  EXPECT_EQ(fastest(m, shape(4), 80001, two), Algorithm::ring);
  const std::vector<Range> r = predicted_ranges(m, shape(4), two);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].algorithm, Algorithm::recursive_doubling);
  EXPECT_GE(r[0].hi, 79999u);
  EXPECT_LE(r[0].hi, 80000u);
  EXPECT_EQ(r[1].algorithm, Algorithm::ring);
  // With Rabenseifner (4 alpha + 1.5 S beta), it replaces the ring, and it overtakes
  // recursive doubling at S = 4 alpha / beta = 40000.
  const std::vector<Range> all = predicted_ranges(m, shape(4));
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].algorithm, Algorithm::recursive_doubling);
  EXPECT_GE(all[0].hi, 39999u);
  EXPECT_LE(all[0].hi, 40000u);
  EXPECT_EQ(all[1].algorithm, Algorithm::rabenseifner);
}

void expect_ranges_cover(const std::vector<Range>& r, const CostModel& m, const ModelShape& s,
                         const std::vector<Algorithm>& candidates = {}) {
  ASSERT_FALSE(r.empty());
  EXPECT_EQ(r.front().lo, 0u);
  EXPECT_EQ(r.back().hi, kMaxBytes);
  for (std::size_t i = 0; i < r.size(); ++i) {
    EXPECT_LE(r[i].lo, r[i].hi);
    if (i + 1 < r.size()) {
      EXPECT_EQ(r[i + 1].lo, r[i].hi + 1) << i;
      EXPECT_NE(r[i + 1].algorithm, r[i].algorithm) << i;
    }
    // Each range's ends take its algorithm (sizes up to 1 GiB, where the model was sampled).
    const std::size_t lo = std::max<std::size_t>(r[i].lo, 1);
    if (lo <= (std::size_t{1} << 30)) {
      EXPECT_EQ(fastest(m, s, lo, candidates), r[i].algorithm);
    }
    if (r[i].hi <= (std::size_t{1} << 30)) {
      EXPECT_EQ(fastest(m, s, r[i].hi, candidates), r[i].algorithm);
    }
  }
}

TEST(CostModelTest, RangesCoverEverySizeWithoutGaps) {
  CostModel m = simple();
  m.gamma_s_per_byte = 1e-10;
  for (const ModelShape& s : {shape(1), shape(2), shape(3), shape(4), shape(6), shape(1, 8),
                              shape(4, 8), shape(64, 8), shape(1000, 3), shape(10000, 8)}) {
    SCOPED_TRACE(testing::Message() << s.nodes << "x" << s.ranks_per_node);
    expect_ranges_cover(predicted_ranges(m, s), m, s);
    const std::vector<Algorithm> selectable = {Algorithm::local, Algorithm::hierarchical,
                                               Algorithm::recursive_doubling, Algorithm::ring};
    expect_ranges_cover(predicted_ranges(m, s, selectable), m, s, selectable);
  }
}

TEST(CostModelTest, RangesFeedTheSelectionTable) {
  const CostModel m = simple();
  const std::vector<Algorithm> selectable = {Algorithm::recursive_doubling, Algorithm::ring};
  SelectInputs in;
  in.spec.ranges = predicted_ranges(m, shape(4), selectable);
  in.shape = JobShape::flat;
  const SelectTable t = SelectTable::build(in);
  EXPECT_EQ(t.allreduce_ranges(), in.spec.ranges);
  for (std::size_t b : {std::size_t{0}, std::size_t{8}, 64 * K, 128 * K, 64 * M}) {
    EXPECT_EQ(t.allreduce(b), fastest(m, shape(4), std::max<std::size_t>(b, 1), selectable));
  }
}

TEST(CostModelTest, TimesAreMonotonic) {
  CostModel m = simple();
  m.gamma_s_per_byte = 2e-10;
  for (const ModelShape& s :
       {shape(2), shape(4), shape(6), shape(4, 8), shape(64, 8), shape(4096, 3), shape(1, 8)}) {
    for (Algorithm a : kModelAlgorithms) {
      if (!available(a, s)) continue;
      SCOPED_TRACE(testing::Message() << s.nodes << "x" << s.ranks_per_node << " " << to_string(a));
      double prev = -1;
      for (std::size_t b = 1; b <= (std::size_t{1} << 30); b = b * 3 / 2 + 1) {
        // The local group's two paths are each monotone; skip its switch at 16 KiB.
        if (a == Algorithm::local && b > m.local_small_bytes && prev >= 0 &&
            b * 2 / 3 <= m.local_small_bytes) {
          prev = -1;
        }
        const double t = predicted_time(a, m, s, b);
        EXPECT_GE(t, prev) << b;
        prev = t;
      }
      // Slower links never make an algorithm faster.
      CostModel slow = m;
      slow.net.alpha_s *= 2;
      slow.net.beta_s_per_byte *= 2;
      slow.local.alpha_s *= 2;
      EXPECT_GE(predicted_time(a, slow, s, 64 * K), predicted_time(a, m, s, 64 * K));
    }
    // The bound is below every algorithm.
    for (std::size_t b : {std::size_t{1}, 64 * K, 64 * M}) {
      EXPECT_LE(bandwidth_lower_bound(m, s, b), predicted_time(fastest(m, s, b), m, s, b));
    }
  }
}

TEST(CostModelTest, OneRankCostsNothing) {
  const CostModel m = simple();
  const ModelShape s = shape(1);
  for (Algorithm a : {Algorithm::recursive_doubling, Algorithm::ring, Algorithm::rabenseifner}) {
    EXPECT_EQ(predicted_time(a, m, s, 64 * M), 0);
  }
  EXPECT_EQ(bandwidth_lower_bound(m, s, 64 * M), 0);
  EXPECT_EQ(bus_bandwidth(s, 64 * M, 0), 0);
  const std::vector<Range> r = predicted_ranges(m, s);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].algorithm, Algorithm::recursive_doubling);  // ties: the earlier algorithm
}

TEST(CostModelTest, TenThousandNodesStayFinite) {
  CostModel m;
  m.net = {2e-6, 8e-11};  // 100 Gbit/s
  m.local = {1e-6, 1e-10};
  m.gamma_s_per_byte = 1e-10;
  const ModelShape s = shape(10000, 8);
  validate(m, s);
  for (Algorithm a : kModelAlgorithms) {
    if (!available(a, s)) continue;
    const double t = predicted_time(a, m, s, std::size_t{1} << 30);
    EXPECT_TRUE(std::isfinite(t) && t > 0) << to_string(a);
  }
  // ring over 80,000 ranks: 2 x 79,999 steps of at least alpha.
  EXPECT_GE(ring_time(m, s, 8), 2 * 79999 * 2e-6);
  // rd: q = 65536, log2 q = 16 exchanges + the fold.
  const double rd = recursive_doubling_time(m, s, 8);
  EXPECT_GE(rd, 18 * 2e-6);
  EXPECT_LT(rd, 18 * 2e-6 + 18 * 8 * (8 * 8e-11 + 1e-10));
  EXPECT_EQ(fastest(m, s, 8), Algorithm::recursive_doubling);
  EXPECT_EQ(fastest(m, s, std::size_t{1} << 30), Algorithm::hierarchical);
  EXPECT_NEAR(bandwidth_lower_bound(m, s, 1000), 2 * 9999.0 / 10000 * 1000 * 8e-11, 1e-18);
}

TEST(CostModelTest, ValidateRejectsWhatTheFormulasDoNotCover) {
  const CostModel m = simple();
  EXPECT_THROW(validate(m, shape(0)), Error);
  EXPECT_THROW(validate(m, shape(4, 0)), Error);
  EXPECT_THROW(validate(m, shape(10000, 10000)), Error);
  CostModel neg = m;
  neg.net.alpha_s = -1;
  EXPECT_THROW(validate(neg, shape(4)), Error);
  CostModel nan = m;
  nan.gamma_s_per_byte = std::nan("");
  EXPECT_THROW(validate(nan, shape(4)), Error);
  CostModel zero = m;
  zero.slice_bytes = 0;
  EXPECT_THROW(validate(zero, shape(4)), Error);
  EXPECT_NO_THROW(validate(m, shape(10000, 64)));
}

TEST(CostModelTest, ModelFileRoundTripsAndRejectsBadLines) {
  CostModel m;
  m.net = {5e-5, 8e-9};
  m.local = {1.5e-6, 1.25e-10};
  m.gamma_s_per_byte = 3e-10;
  m.slice_bytes = 512 * K;
  const ModelShape s = shape(4, 2, false);
  ModelFile f;
  parse_model_text(format_model_text(m, s), "model", f);
  EXPECT_EQ(f.model.net, m.net);
  EXPECT_EQ(f.model.local, m.local);
  EXPECT_EQ(f.model.gamma_s_per_byte, m.gamma_s_per_byte);
  EXPECT_EQ(f.model.slice_bytes, m.slice_bytes);
  EXPECT_EQ(f.shape.nodes, 4);
  EXPECT_EQ(f.shape.ranks_per_node, 2);
  EXPECT_FALSE(f.shape.local_group);
  EXPECT_TRUE(f.has_alpha && f.has_beta && f.has_gamma && f.has_nodes);

  ModelFile partial;
  parse_model_text("# measured\n  alpha = 2e-6  # us\n\nbeta=8e-11\n", "m.txt", partial);
  EXPECT_EQ(partial.model.net.alpha_s, 2e-6);
  EXPECT_TRUE(partial.has_alpha);
  EXPECT_FALSE(partial.has_gamma);
  for (const char* bad : {"alpha", "alpha=", "alpha=x", "alpha=-1", "alpha=inf", "speed=3",
                          "nodes=0", "nodes=2.5", "local_group=2"}) {
    ModelFile g;
    try {
      parse_model_text(bad, "m.txt", g);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("m.txt:1:"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace ringlet::algo
