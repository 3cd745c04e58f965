// SPDX-License-Identifier: Apache-2.0
// Multi-rank broadcast, allgather, reduce_scatter, barrier and dup against serial references,
// as threads and as processes.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "src/common/str_cat.hpp"
#include "tests/multirank/rank_group.hpp"
#include "tests/multirank/reference.hpp"

namespace ringlet::testing {
namespace {

using namespace std::chrono_literals;

struct GroupParam {
  RankMode mode;
  int ranks;
};

std::string group_name(const ::testing::TestParamInfo<GroupParam>& info) {
  return str_cat(to_string(info.param.mode), "_", info.param.ranks, "ranks");
}

std::vector<std::size_t> counts_for(int n) {
  std::set<std::size_t> s = {
      0, 1, static_cast<std::size_t>(n - 1), static_cast<std::size_t>(n + 1), 4099, 65537};
  return {s.begin(), s.end()};
}

// A value of rank `r`'s element `i` that fits every type exactly (0..99).
template <class T>
T pattern(int r, std::size_t i) {
  return from_value<T>(static_cast<long double>((i * 13 + static_cast<std::size_t>(r) * 7) % 100));
}

template <class T>
bool expect_block(std::span<const T> got, int owner, std::size_t offset, const std::string& what) {
  for (std::size_t i = 0; i < got.size(); ++i) {
    const T want = pattern<T>(owner, offset + i);
    if (std::memcmp(&got[i], &want, sizeof(T)) != 0) {
      ADD_FAILURE() << what << ": first difference at index " << offset + i << ": got "
                    << static_cast<double>(to_value(got[i])) << ", want "
                    << static_cast<double>(to_value(want));
      return false;
    }
  }
  return true;
}

class CollectivesTest : public ::testing::TestWithParam<GroupParam> {
 protected:
  void run(const RankBody& body) {
    auto group = make_rank_group(GetParam().mode);
    group->run(GetParam().ranks, body);
  }
};

// --- broadcast ------------------------------------------------------------------------

template <class T>
bool check_broadcast(Communicator& comm, std::size_t count, int root, bool in_place) {
  const int r = comm.rank();
  const std::string what = str_cat("broadcast(count=", count, ", ", type_name<T>(), ", root=", root,
                                   in_place ? ", in place" : ", out of place", ") rank ", r);
  std::vector<T> in(count, from_value<T>(101));
  std::vector<T> out(count, from_value<T>(103));
  if (r == root) {
    for (std::size_t i = 0; i < count; ++i) in[i] = pattern<T>(root, i);
  }
  try {
    if (in_place) {
      comm.broadcast(Tensor::of(std::span<T>(in)), root);
    } else {
      comm.broadcast(Tensor::of(std::span<T>(in)), Tensor::of(std::span<T>(out)), root);
    }
  } catch (const Error& e) {
    ADD_FAILURE() << what << " threw: " << e.what();
    return false;
  }
  if (!in_place && r == root &&
      !expect_block<T>(in, root, 0, what + " (the root's input was modified)")) {
    return false;
  }
  return expect_block<T>(in_place ? in : out, root, 0, what);
}

TEST_P(CollectivesTest, BroadcastFromEveryRoot) {
  run([](RankContext& ctx) {
    Communicator comm = ctx.create();
    bool ok = true;
    for (int root = 0; root < ctx.size; ++root) {
      for (std::size_t count : counts_for(ctx.size)) {
        for (bool in_place : {true, false}) {
          if (ok) ok = check_broadcast<float>(comm, count, root, in_place);
          if (ok) ok = check_broadcast<std::int8_t>(comm, count, root, !in_place);
        }
        if (ok) ok = check_broadcast<Half>(comm, count, root, true);
        if (ok) ok = check_broadcast<std::int64_t>(comm, count, root, false);
      }
    }
  });
}

// --- allgather ------------------------------------------------------------------------

template <class T>
bool check_allgather(Communicator& comm, std::size_t count, bool in_place) {
  const int n = comm.size();
  const int r = comm.rank();
  const std::string what = str_cat("allgather(count=", count, ", ", type_name<T>(),
                                   in_place ? ", in place" : ", out of place", ") rank ", r);
  std::vector<T> in(count);
  for (std::size_t i = 0; i < count; ++i) in[i] = pattern<T>(r, i);
  std::vector<T> out(count * static_cast<std::size_t>(n), from_value<T>(101));
  std::span<T> own(out.data() + static_cast<std::size_t>(r) * count, count);
  try {
    if (in_place) {
      std::copy(in.begin(), in.end(), own.begin());
      comm.allgather(Tensor::of(own), Tensor::of(std::span<T>(out)));
    } else {
      comm.allgather(Tensor::of(std::span<const T>(in)), Tensor::of(std::span<T>(out)));
    }
  } catch (const Error& e) {
    ADD_FAILURE() << what << " threw: " << e.what();
    return false;
  }
  for (int b = 0; b < n; ++b) {
    std::span<const T> block(out.data() + static_cast<std::size_t>(b) * count, count);
    if (!expect_block<T>(block, b, 0, str_cat(what, ", block ", b))) return false;
  }
  return in_place || expect_block<T>(in, r, 0, what + " (the input was modified)");
}

TEST_P(CollectivesTest, AllgatherInPlaceAndOutOfPlace) {
  run([](RankContext& ctx) {
    Communicator comm = ctx.create();
    bool ok = true;
    for (std::size_t count : counts_for(ctx.size)) {
      for (bool in_place : {true, false}) {
        if (ok) ok = check_allgather<float>(comm, count, in_place);
        if (ok) ok = check_allgather<std::uint8_t>(comm, count, in_place);
        if (ok) ok = check_allgather<BFloat16>(comm, count, in_place);
        if (ok) ok = check_allgather<double>(comm, count, in_place);
      }
    }
  });
}

// --- reduce_scatter -------------------------------------------------------------------

template <class T>
bool check_reduce_scatter(Communicator& comm, std::size_t count, ReduceOp op, bool in_place) {
  const int n = comm.size();
  const int r = comm.rank();
  const std::string what =
      str_cat("reduce_scatter(count=", count, ", ", type_name<T>(), ", ", to_string(op),
              in_place ? ", in place" : ", out of place", ") on ", n, " ranks, rank ", r);
  const std::size_t total = count * static_cast<std::size_t>(n);
  std::vector<T> in(total);
  fill_input(std::span<T>(in), op, n, r);
  const std::vector<T> original = in;
  std::vector<T> out(count, from_value<T>(99));
  std::span<T> result = in_place
                            ? std::span<T>(in.data() + static_cast<std::size_t>(r) * count, count)
                            : std::span<T>(out);
  try {
    comm.reduce_scatter(Tensor::of(std::span<T>(in)), Tensor::of(result), op);
  } catch (const Error& e) {
    ADD_FAILURE() << what << " threw: " << e.what();
    return false;
  }
  const std::size_t offset = static_cast<std::size_t>(r) * count;
  for (std::size_t i = 0; i < count; ++i) {
    const T want = from_value<T>(reference_value(op, kIsSigned<T>, n, offset + i));
    if (std::memcmp(&result[i], &want, sizeof(T)) != 0) {
      ADD_FAILURE() << what << ": first difference at index " << i << " of the block: got "
                    << static_cast<double>(to_value(result[i])) << ", want "
                    << static_cast<double>(to_value(want));
      return false;
    }
  }
  if (!in_place && first_difference<T>(in, original) >= 0) {
    ADD_FAILURE() << what << ": the input was modified";
    return false;
  }
  return true;
}

TEST_P(CollectivesTest, ReduceScatterEveryOp) {
  run([](RankContext& ctx) {
    Communicator comm = ctx.create();
    bool ok = true;
    const std::size_t counts[] = {0, 1, static_cast<std::size_t>(ctx.size) + 1, 4099};
    for_each_type([&]<class T>(T*) {
      for (ReduceOp op : kAllOps) {
        if (op == ReduceOp::avg && !kIsFloat<T>) {
          std::vector<T> in(static_cast<std::size_t>(ctx.size) * 2);
          std::vector<T> out(2);
          try {
            comm.reduce_scatter(Tensor::of(std::span<T>(in)), Tensor::of(std::span<T>(out)), op);
            ADD_FAILURE() << "reduce_scatter(" << type_name<T>() << ", avg) did not throw";
          } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
          }
          continue;
        }
        for (std::size_t count : counts) {
          for (bool in_place : {true, false}) {
            if (ok) ok = check_reduce_scatter<T>(comm, count, op, in_place);
          }
        }
      }
    });
  });
}

// --- barrier --------------------------------------------------------------------------

TEST_P(CollectivesTest, BarrierWaitsForEveryRank) {
  run([](RankContext& ctx) {
    Communicator comm = ctx.create();
    for (int round = 0; round < 3; ++round) {
      // Later ranks arrive later; nobody may leave before the last one has arrived.
      std::this_thread::sleep_for(std::chrono::milliseconds(15 * ((ctx.rank + round) % ctx.size)));
      const std::string key = str_cat("arrived/", round);
      ctx.store->add(key, 1);
      comm.barrier();
      EXPECT_EQ(ctx.store->add(key, 0), ctx.size) << "round " << round;
      comm.barrier();  // nobody starts the next round's count before everyone has read this
    }
  });
}

// --- dup ------------------------------------------------------------------------------

TEST_P(CollectivesTest, DupIsIndependentAndWorksInterleaved) {
  run([](RankContext& ctx) {
    Communicator parent = ctx.create();
    Communicator child = parent.dup();
    EXPECT_EQ(child.rank(), parent.rank());
    EXPECT_EQ(child.size(), parent.size());
    Communicator grandchild = child.dup();
    const std::size_t n = static_cast<std::size_t>(ctx.size);
    for (int round = 0; round < 4; ++round) {
      // Different sizes and types on each communicator, interleaved.
      std::vector<float> a(1000 + static_cast<std::size_t>(round),
                           static_cast<float>(ctx.rank + 1));
      std::vector<std::int32_t> b(70000, ctx.rank * 2);
      std::vector<double> c(3, static_cast<double>(ctx.rank));
      parent.allreduce(std::span<float>(a));
      child.allreduce(std::span<std::int32_t>(b), ReduceOp::max);
      grandchild.allreduce(std::span<double>(c), ReduceOp::min);
      child.barrier();
      parent.broadcast(std::span<double>(c), ctx.size - 1);
      const float sum = static_cast<float>(n * (n + 1) / 2);
      for (std::size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], sum) << "parent, index " << i;
      for (std::size_t i = 0; i < b.size(); ++i) {
        ASSERT_EQ(b[i], (ctx.size - 1) * 2) << "child, index " << i;
      }
      for (std::size_t i = 0; i < c.size(); ++i) ASSERT_EQ(c[i], 0.0) << "grandchild, index " << i;
    }
    // The parent outlives its children.
    { Communicator gone = std::move(grandchild); }
    std::vector<std::int64_t> d(5, 1);
    parent.allreduce(std::span<std::int64_t>(d));
    for (auto x : d) EXPECT_EQ(x, ctx.size);
    child.allreduce(std::span<std::int64_t>(d), ReduceOp::prod);
    std::int64_t want = 1;
    for (int i = 0; i < ctx.size; ++i) want *= ctx.size;
    for (auto x : d) EXPECT_EQ(x, want);
  });
}

INSTANTIATE_TEST_SUITE_P(
    Threads, CollectivesTest,
    ::testing::Values(GroupParam{RankMode::threads, 1}, GroupParam{RankMode::threads, 2},
                      GroupParam{RankMode::threads, 3}, GroupParam{RankMode::threads, 4},
                      GroupParam{RankMode::threads, 5}, GroupParam{RankMode::threads, 8}),
    group_name);
INSTANTIATE_TEST_SUITE_P(Processes, CollectivesTest,
                         ::testing::Values(GroupParam{RankMode::processes, 2},
                                           GroupParam{RankMode::processes, 3},
                                           GroupParam{RankMode::processes, 4}),
                         group_name);

}  // namespace
}  // namespace ringlet::testing

namespace ringlet::testing {
namespace {

// The harness itself: failures on any rank reach this test, for both ways of running.
void fail_on_rank_one() {
  make_rank_group(RankMode::processes)->run(3, [](RankContext& ctx) {
    EXPECT_NE(ctx.rank, 1) << "deliberate failure";
  });
}
void throw_on_rank_two() {
  make_rank_group(RankMode::processes)->run(3, [](RankContext& ctx) {
    if (ctx.rank == 2) throw Error(ErrorCode::timeout, "deliberate exception");
  });
}
void fail_on_a_thread() {
  make_rank_group(RankMode::threads)->run(3, [](RankContext& ctx) {
    EXPECT_NE(ctx.rank, 2) << "deliberate failure";
  });
}

TEST(RankGroupTest, ProcessFailuresReachTheParent) {
  EXPECT_NONFATAL_FAILURE(fail_on_rank_one(), "rank 1 of 3 (process");
  EXPECT_NONFATAL_FAILURE(throw_on_rank_two(), "deliberate exception");
}

TEST(RankGroupTest, ThreadFailuresReachTheTest) {
  EXPECT_NONFATAL_FAILURE_ON_ALL_THREADS(fail_on_a_thread(), "deliberate failure");
}

TEST(RankGroupTest, EveryRankRunsOnceAndSeesTheSameStore) {
  for (RankMode mode : {RankMode::threads, RankMode::processes}) {
    auto outcomes = make_rank_group(mode)->run(4, [](RankContext& ctx) {
      EXPECT_EQ(ctx.store->add("ran", 1) <= 4, true);
      ctx.store->set_string(str_cat("rank/", ctx.rank), "x");
      ctx.sync("all");
      EXPECT_EQ(ctx.store->add("ran", 0), 4);
      for (int r = 0; r < ctx.size; ++r) {
        EXPECT_EQ(ctx.store->get_string(str_cat("rank/", r), Clock::now() + 10s), "x");
      }
    });
    ASSERT_EQ(outcomes.size(), 4u);
    for (const auto& o : outcomes) {
      EXPECT_TRUE(o.finished);
      EXPECT_EQ(o.exit_code, 0);
      EXPECT_EQ(o.signal, 0);
    }
  }
}

void sleep_past_the_limit() {
  GroupOptions go;
  go.limit = 1s;
  make_rank_group(RankMode::processes)
      ->run(
          2,
          [](RankContext& ctx) {
            if (ctx.rank == 0) std::this_thread::sleep_for(60s);
          },
          go);
}

TEST(RankGroupTest, ProcessesAreKilledAtTheLimit) {
  const auto start = Clock::now();
  EXPECT_NONFATAL_FAILURE(sleep_past_the_limit(), "exceeded its limit");
  EXPECT_LT(Clock::now() - start, 20s);
}

TEST(RankGroupTest, VictimsStillRunningAreKilledOnceTheOthersEnd) {
  GroupOptions go;
  go.victims = {0};
  const auto start = Clock::now();
  auto outcomes = make_rank_group(RankMode::processes)
                      ->run(
                          2,
                          [](RankContext& ctx) {
                            if (ctx.rank == 0) std::this_thread::sleep_for(60s);
                          },
                          go);
  EXPECT_LT(Clock::now() - start, 20s);
  EXPECT_EQ(outcomes[0].signal, SIGKILL);
  EXPECT_EQ(outcomes[1].exit_code, 0);
}

}  // namespace
}  // namespace ringlet::testing
