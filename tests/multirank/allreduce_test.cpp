// SPDX-License-Identifier: Apache-2.0
// Multi-rank allreduce: every DataType x ReduceOp against a serial reference, as threads and
// as processes, over the size, rank-count and algorithm matrix.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "src/common/str_cat.hpp"
#include "tests/multirank/rank_group.hpp"
#include "tests/multirank/reference.hpp"

namespace ringlet::testing {
namespace {

using namespace std::chrono_literals;

// Runs one allreduce of `count` elements of T with `op` on this rank and checks every element
// against the reference. Folds the output into `hash`. Returns false after a failure.
template <class T>
bool check_allreduce(Communicator& comm, std::size_t count, ReduceOp op, bool in_place,
                     std::uint64_t& hash) {
  const int n = comm.size();
  const int r = comm.rank();
  const std::string what =
      str_cat("allreduce(count=", count, ", ", type_name<T>(), ", ", to_string(op),
              in_place ? ", in place" : ", out of place", ") on ", n, " ranks, rank ", r);
  std::vector<T> in(count);
  fill_input(std::span<T>(in), op, n, r);
  const std::vector<T> original = in;
  std::vector<T> out(count, from_value<T>(99));
  try {
    if (in_place) {
      comm.allreduce(std::span<T>(in), op);
    } else {
      comm.allreduce(std::span<const T>(in), std::span<T>(out), op);
    }
  } catch (const Error& e) {
    ADD_FAILURE() << what << " threw: " << e.what();
    return false;
  }
  const std::vector<T>& got = in_place ? in : out;
  std::vector<T> want(count);
  for (std::size_t i = 0; i < count; ++i) {
    want[i] = from_value<T>(reference_value(op, kIsSigned<T>, n, i));
  }
  const long long bad = first_difference<T>(got, want);
  if (bad >= 0) {
    const auto i = static_cast<std::size_t>(bad);
    ADD_FAILURE() << what << ": first difference at index " << i << " of " << count << ": got "
                  << static_cast<double>(to_value(got[i])) << ", want "
                  << static_cast<double>(to_value(want[i]));
    return false;
  }
  if (!in_place) {
    const long long touched = first_difference<T>(in, original);
    if (touched >= 0) {
      ADD_FAILURE() << what << ": the input was modified at index " << touched;
      return false;
    }
  }
  hash = fnv1a(hash, got.data(), got.size() * sizeof(T));
  return true;
}

// Every rank publishes its running hash; all must equal rank 0's.
void expect_identical_on_all_ranks(const RankContext& ctx, std::uint64_t hash,
                                   const std::string& tag) {
  ctx.store->set_string(str_cat("hash/", tag, "/", ctx.rank), std::to_string(hash));
  const std::string zero = ctx.store->get_string(str_cat("hash/", tag, "/0"), Clock::now() + 60s);
  EXPECT_EQ(zero, std::to_string(hash))
      << "rank " << ctx.rank << "'s outputs are not bitwise identical to rank 0's (" << tag << ")";
}

std::vector<std::size_t> matrix_counts(int n) {
  std::set<std::size_t> s = {
      0, 1, static_cast<std::size_t>(n - 1), static_cast<std::size_t>(n + 1), 4099, 65537};
  return {s.begin(), s.end()};
}

// The full DataType x ReduceOp x count x placement matrix on one communicator.
void run_matrix(RankContext& ctx, const std::vector<std::size_t>& counts) {
  Communicator comm = ctx.create();
  ASSERT_EQ(comm.rank(), ctx.rank);
  ASSERT_EQ(comm.size(), ctx.size);
  std::uint64_t hash = kFnvSeed;
  bool ok = true;
  for_each_type([&]<class T>(T*) {
    for (ReduceOp op : kAllOps) {
      if (op == ReduceOp::avg && !kIsFloat<T>) {
        // An integer avg is the caller's bug: invalid_argument, and the communicator lives on.
        std::vector<T> buf(3);
        try {
          comm.allreduce(std::span<T>(buf), op);
          ADD_FAILURE() << "allreduce(" << type_name<T>() << ", avg) did not throw";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
        }
        continue;
      }
      for (std::size_t count : counts) {
        for (bool in_place : {true, false}) {
          if (ok) ok = check_allreduce<T>(comm, count, op, in_place, hash);
        }
      }
    }
  });
  if (ok) expect_identical_on_all_ranks(ctx, hash, "matrix");
}

struct MatrixParam {
  RankMode mode;
  int ranks;
  std::string algo;             // RINGLET_ALGO, "" for the default
  std::size_t slice_bytes = 0;  // RINGLET_SLICE_BYTES, 0 for the transport's
};

std::string matrix_name(const ::testing::TestParamInfo<MatrixParam>& info) {
  std::string s = str_cat(to_string(info.param.mode), "_", info.param.ranks, "ranks");
  if (!info.param.algo.empty()) s += "_" + info.param.algo;
  if (info.param.slice_bytes != 0) s += str_cat("_slice", info.param.slice_bytes);
  return s;
}

class AllreduceMatrixTest : public ::testing::TestWithParam<MatrixParam> {};

TEST_P(AllreduceMatrixTest, EveryTypeAndOpMatchesSerialReference) {
  const MatrixParam& p = GetParam();
  std::optional<ScopedEnv> algo;
  if (!p.algo.empty()) algo.emplace("RINGLET_ALGO", p.algo);
  // Small slices: 65537 elements then take many pieces per step (windows wrap around).
  std::optional<ScopedEnv> slice;
  if (p.slice_bytes != 0) slice.emplace("RINGLET_SLICE_BYTES", std::to_string(p.slice_bytes));
  auto group = make_rank_group(p.mode);
  const auto counts = matrix_counts(p.ranks);
  group->run(p.ranks, [&](RankContext& ctx) { run_matrix(ctx, counts); });
}

INSTANTIATE_TEST_SUITE_P(
    Threads, AllreduceMatrixTest,
    ::testing::Values(MatrixParam{RankMode::threads, 1, ""}, MatrixParam{RankMode::threads, 2, ""},
                      MatrixParam{RankMode::threads, 3, ""}, MatrixParam{RankMode::threads, 4, ""},
                      MatrixParam{RankMode::threads, 5, ""}, MatrixParam{RankMode::threads, 6, ""},
                      MatrixParam{RankMode::threads, 7, ""}, MatrixParam{RankMode::threads, 8, ""},
                      MatrixParam{RankMode::threads, 2, "ring"},
                      MatrixParam{RankMode::threads, 3, "ring"},
                      MatrixParam{RankMode::threads, 5, "ring"},
                      MatrixParam{RankMode::threads, 3, "recursive_doubling"},
                      MatrixParam{RankMode::threads, 5, "recursive_doubling"},
                      MatrixParam{RankMode::threads, 6, "recursive_doubling"},
                      MatrixParam{RankMode::threads, 7, "recursive_doubling"},
                      MatrixParam{RankMode::threads, 2, "rabenseifner"},
                      MatrixParam{RankMode::threads, 3, "rabenseifner", 4096},
                      MatrixParam{RankMode::threads, 4, "rabenseifner"},
                      MatrixParam{RankMode::threads, 5, "rabenseifner", 4096},
                      MatrixParam{RankMode::threads, 6, "rabenseifner"},
                      MatrixParam{RankMode::threads, 7, "rabenseifner", 4096},
                      MatrixParam{RankMode::threads, 8, "rabenseifner", 4096},
                      // The cost model's table over the probed links (with shared memory on,
                      // one node: the local group's, as auto's).
                      MatrixParam{RankMode::threads, 3, "model"},
                      MatrixParam{RankMode::threads, 4, "model", 4096},
                      MatrixParam{RankMode::threads, 6, "model"}),
    matrix_name);

INSTANTIATE_TEST_SUITE_P(Processes, AllreduceMatrixTest,
                         ::testing::Values(MatrixParam{RankMode::processes, 2, ""},
                                           MatrixParam{RankMode::processes, 3, ""},
                                           MatrixParam{RankMode::processes, 4, ""},
                                           MatrixParam{RankMode::processes, 3, "rabenseifner"},
                                           MatrixParam{RankMode::processes, 5, "rabenseifner",
                                                       4096},
                                           MatrixParam{RankMode::processes, 6, "rabenseifner"},
                                           MatrixParam{RankMode::processes, 4, "model"}),
                         matrix_name);

// Rabenseifner's allreduce beyond the matrix: its reduction order, its one post-scale and
// messages of many slices. RINGLET_ALGO=rabenseifner for every size.
struct RabParam {
  RankMode mode;
  int ranks;
};

std::string rab_name(const ::testing::TestParamInfo<RabParam>& info) {
  return str_cat(to_string(info.param.mode), "_", info.param.ranks, "ranks");
}

class RabenseifnerTest : public ::testing::TestWithParam<RabParam> {};

// Inputs whose float32 sum depends on the order of the additions (large terms of both
// signs and small ones): every rank must still end with the same bits, close to the exact
// sum.
TEST_P(RabenseifnerTest, Float32SumIsBitwiseIdenticalOnEveryRank) {
  const RabParam& p = GetParam();
  ScopedEnv algo("RINGLET_ALGO", "rabenseifner");
  ScopedEnv slice("RINGLET_SLICE_BYTES", "4096");
  auto group = make_rank_group(p.mode);
  group->run(p.ranks, [&](RankContext& ctx) {
    Communicator comm = ctx.create();
    const int n = comm.size();
    auto input = [](int r, std::size_t i) {
      const float big = (r % 2 == 0 ? 1.0f : -1.0f) * 3.0e7f * static_cast<float>(i % 5 + 1);
      return big + 0.3f * static_cast<float>(r + 1) + 1.0e-3f * static_cast<float>(i % 17);
    };
    std::uint64_t hash = kFnvSeed;
    for (std::size_t count :
         {std::size_t{1}, static_cast<std::size_t>(n - 1), std::size_t{1021}, std::size_t{40009}}) {
      std::vector<float> buf(count);
      for (std::size_t i = 0; i < count; ++i) buf[i] = input(comm.rank(), i);
      comm.allreduce(std::span<float>(buf), ReduceOp::sum);
      for (std::size_t i = 0; i < count; ++i) {
        long double exact = 0;
        long double magnitude = 0;
        for (int r = 0; r < n; ++r) {
          exact += input(r, i);
          magnitude += std::abs(static_cast<long double>(input(r, i)));
        }
        // n - 1 roundings of partial sums no larger than the magnitude.
        const long double bound = n * magnitude * 6.0e-8L;
        ASSERT_LE(std::abs(static_cast<long double>(buf[i]) - exact), bound)
            << "count " << count << ", index " << i << " on rank " << comm.rank();
      }
      hash = fnv1a(hash, buf.data(), buf.size() * sizeof(float));
    }
    expect_identical_on_all_ranks(ctx, hash, "rabenseifner-bits");
  });
}

// avg divides each element exactly once: the same input v on every rank averages to v; a
// second division (or none) gives v / n (or n v). The sums are exact in both types.
TEST_P(RabenseifnerTest, AvgPostScaleRunsOncePerElement) {
  const RabParam& p = GetParam();
  ScopedEnv algo("RINGLET_ALGO", "rabenseifner");
  auto group = make_rank_group(p.mode);
  group->run(p.ranks, [&](RankContext& ctx) {
    Communicator comm = ctx.create();
    const int n = comm.size();
    std::uint64_t hash = kFnvSeed;
    for (std::size_t count : {std::size_t{1}, static_cast<std::size_t>(n - 1),
                              static_cast<std::size_t>(n + 1), std::size_t{4099}}) {
      std::vector<double> in(count);
      std::vector<double> out(count, -1.0);
      for (std::size_t i = 0; i < count; ++i) in[i] = n * static_cast<double>(i % 97 + 1);
      comm.allreduce(std::span<const double>(in), std::span<double>(out), ReduceOp::avg);
      std::vector<float> f(count, 5.0f * static_cast<float>(n));
      comm.allreduce(std::span<float>(f), ReduceOp::avg);
      for (std::size_t i = 0; i < count; ++i) {
        ASSERT_EQ(out[i], in[i]) << "index " << i << " of " << count;
        ASSERT_EQ(f[i], 5.0f * static_cast<float>(n)) << "index " << i << " of " << count;
      }
      hash = fnv1a(hash, out.data(), out.size() * sizeof(double));
    }
    expect_identical_on_all_ranks(ctx, hash, "rabenseifner-avg");
  });
}

// 20 MiB of float32 at the transport's slice: several slices per step, every slot reused.
TEST_P(RabenseifnerTest, ManySlicesAtTheTransportSlice) {
  const RabParam& p = GetParam();
  ScopedEnv algo("RINGLET_ALGO", "rabenseifner");
  auto group = make_rank_group(p.mode);
  group->run(p.ranks, [&](RankContext& ctx) {
    Communicator comm = ctx.create();
    std::uint64_t hash = kFnvSeed;
    const std::size_t count = (std::size_t{5} << 20) + 7;
    bool ok = check_allreduce<float>(comm, count, ReduceOp::sum, true, hash);
    if (ok) ok = check_allreduce<float>(comm, count, ReduceOp::max, false, hash);
    if (ok) expect_identical_on_all_ranks(ctx, hash, "rabenseifner-large");
  });
}

INSTANTIATE_TEST_SUITE_P(Threads, RabenseifnerTest,
                         ::testing::Values(RabParam{RankMode::threads, 2},
                                           RabParam{RankMode::threads, 3},
                                           RabParam{RankMode::threads, 4},
                                           RabParam{RankMode::threads, 6},
                                           RabParam{RankMode::threads, 7}),
                         rab_name);
INSTANTIATE_TEST_SUITE_P(Processes, RabenseifnerTest,
                         ::testing::Values(RabParam{RankMode::processes, 3},
                                           RabParam{RankMode::processes, 5}),
                         rab_name);

// Both sides of the crossover between recursive doubling and the ring, with the crossover
// moved by RINGLET_CROSSOVER_BYTES and at its default.
struct CrossoverParam {
  RankMode mode;
  int ranks;
  std::size_t crossover_bytes;  // 0: the default
};

class AllreduceCrossoverTest : public ::testing::TestWithParam<CrossoverParam> {};

TEST_P(AllreduceCrossoverTest, BothSidesOfTheCrossoverAgree) {
  const CrossoverParam& p = GetParam();
  std::optional<ScopedEnv> crossover;
  // The default crossover is 64 KiB (src/communicator.cpp); test around it when not moved.
  const std::size_t bytes = p.crossover_bytes != 0 ? p.crossover_bytes : 64 * 1024;
  if (p.crossover_bytes != 0) crossover.emplace("RINGLET_CROSSOVER_BYTES", std::to_string(bytes));
  auto group = make_rank_group(p.mode);
  group->run(p.ranks, [&](RankContext& ctx) {
    Communicator comm = ctx.create();
    std::uint64_t hash = kFnvSeed;
    bool ok = true;
    for (std::size_t delta : {std::size_t{2}, std::size_t{1}, std::size_t{0}}) {
      for (int side : {-1, +1}) {
        const std::size_t floats = (side < 0 ? bytes - delta * 4 : bytes + delta * 4) / 4;
        for (ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::avg}) {
          for (bool in_place : {true, false}) {
            if (ok) ok = check_allreduce<float>(comm, floats, op, in_place, hash);
          }
        }
        const std::size_t halves = (side < 0 ? bytes - delta * 2 : bytes + delta * 2) / 2;
        if (ok) ok = check_allreduce<BFloat16>(comm, halves, ReduceOp::sum, true, hash);
        if (ok) ok = check_allreduce<Half>(comm, halves, ReduceOp::prod, false, hash);
        const std::size_t longs = (side < 0 ? bytes - delta * 8 : bytes + delta * 8) / 8;
        if (ok) ok = check_allreduce<std::int64_t>(comm, longs, ReduceOp::min, true, hash);
      }
    }
    if (ok) expect_identical_on_all_ranks(ctx, hash, "crossover");
  });
}

std::string crossover_name(const ::testing::TestParamInfo<CrossoverParam>& info) {
  return str_cat(to_string(info.param.mode), "_", info.param.ranks, "ranks_",
                 info.param.crossover_bytes == 0 ? std::string("default")
                                                 : std::to_string(info.param.crossover_bytes));
}

INSTANTIATE_TEST_SUITE_P(Threads, AllreduceCrossoverTest,
                         ::testing::Values(CrossoverParam{RankMode::threads, 3, 4096},
                                           CrossoverParam{RankMode::threads, 4, 4096},
                                           CrossoverParam{RankMode::threads, 5, 0},
                                           CrossoverParam{RankMode::threads, 7, 4096},
                                           CrossoverParam{RankMode::threads, 8, 0}),
                         crossover_name);
INSTANTIATE_TEST_SUITE_P(Processes, AllreduceCrossoverTest,
                         ::testing::Values(CrossoverParam{RankMode::processes, 3, 0},
                                           CrossoverParam{RankMode::processes, 4, 4096}),
                         crossover_name);

// 64 MiB of float32: many pipeline slices, the ring path, memory bounded by the scratch.
class AllreduceLargeTest : public ::testing::TestWithParam<std::tuple<RankMode, int>> {};

TEST_P(AllreduceLargeTest, SixtyFourMebibytesFloat32Sum) {
  const auto [mode, ranks] = GetParam();
  constexpr std::size_t kCount = (std::size_t{64} << 20) / sizeof(float);
  auto group = make_rank_group(mode);
  group->run(ranks, [&](RankContext& ctx) {
    Communicator comm = ctx.create();
    std::uint64_t hash = kFnvSeed;
    bool ok = check_allreduce<float>(comm, kCount, ReduceOp::sum, true, hash);
    if (ok) ok = check_allreduce<float>(comm, kCount + 1, ReduceOp::max, false, hash);
    if (ok) expect_identical_on_all_ranks(ctx, hash, "large");
  });
}

INSTANTIATE_TEST_SUITE_P(All, AllreduceLargeTest,
                         ::testing::Values(std::tuple{RankMode::threads, 3},
                                           std::tuple{RankMode::processes, 2},
                                           std::tuple{RankMode::processes, 4}),
                         [](const auto& info) {
                           return str_cat(to_string(std::get<0>(info.param)), "_",
                                          std::get<1>(info.param), "ranks");
                         });

// Zero-length and invalid calls do not disturb a communicator in use.
TEST(AllreduceEdgeTest, InvalidArgumentsLeaveTheCommunicatorUsable) {
  auto group = make_rank_group(RankMode::threads);
  group->run(3, [&](RankContext& ctx) {
    Communicator comm = ctx.create();
    std::vector<float> a(10, 1.0f);
    std::vector<float> b(11, 0.0f);
    try {
      comm.allreduce(std::span<const float>(a), std::span<float>(b));
      ADD_FAILURE() << "allreduce with different input and output counts did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
    }
    try {
      comm.allreduce(std::span<const float>(a.data(), 8), std::span<float>(a.data() + 2, 8));
      ADD_FAILURE() << "allreduce with partly overlapping buffers did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
    }
    comm.allreduce(std::span<float>(a));
    for (std::size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(a[i], 3.0f) << "index " << i;
    }
  });
}

}  // namespace
}  // namespace ringlet::testing
