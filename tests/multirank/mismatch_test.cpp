// SPDX-License-Identifier: Apache-2.0
// Ranks that call different collectives, or the same one with different arguments, all get
// ErrorCode::mismatch at once (not by timeout), naming both calls; later calls throw aborted.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "src/common/str_cat.hpp"
#include "tests/multirank/rank_group.hpp"

namespace ringlet::testing {
namespace {

using namespace std::chrono_literals;

constexpr auto kTimeout = 8s;
// Mismatch is detected from the first message of the collective; allow for a loaded machine,
// but far less than the timeout.
constexpr auto kPromptly = 3s;

struct Scenario {
  std::string name;
  int deviant;  // the rank that calls something else
  // Issues the collective under test on `comm`; `deviant` says which variant to call.
  std::function<void(Communicator& comm, bool deviant)> call;
  std::vector<std::string> must_mention;  // substrings every rank's message contains
};

std::vector<float> buffer_f32(std::size_t n) { return std::vector<float>(n, 1.0f); }

std::vector<Scenario> scenarios() {
  return {
      {"Count",
       1,
       [](Communicator& c, bool d) {
         auto v = buffer_f32(d ? 1024 : 1000);
         c.allreduce(std::span<float>(v));
       },
       {"allreduce(count=1000", "count=1024"}},
      {"CountOnTheRingPath",
       2,
       [](Communicator& c, bool d) {
         auto v = buffer_f32(d ? 300001 : 300000);
         c.allreduce(std::span<float>(v));
       },
       {"allreduce(count=300000", "count=300001"}},
      {"Type",
       2,
       [](Communicator& c, bool d) {
         if (d) {
           std::vector<double> v(1000, 1.0);
           c.allreduce(std::span<double>(v));
         } else {
           auto v = buffer_f32(1000);
           c.allreduce(std::span<float>(v));
         }
       },
       {"float32", "float64"}},
      {"Op",
       0,
       [](Communicator& c, bool d) {
         auto v = buffer_f32(1000);
         c.allreduce(std::span<float>(v), d ? ReduceOp::max : ReduceOp::sum);
       },
       {"allreduce(count=1000, float32, sum)", "allreduce(count=1000, float32, max)"}},
      {"Root",
       1,
       [](Communicator& c, bool d) {
         auto v = buffer_f32(1000);
         c.broadcast(std::span<float>(v), d ? 1 : 0);
       },
       {"root=0", "root=1"}},
      {"KindAllreduceVersusBroadcast",
       1,
       [](Communicator& c, bool d) {
         auto v = buffer_f32(1000);
         if (d) {
           c.broadcast(std::span<float>(v), 0);
         } else {
           c.allreduce(std::span<float>(v));
         }
       },
       {"allreduce(count=1000", "broadcast(count=1000"}},
      {"KindBarrierVersusAllreduce",
       3,
       [](Communicator& c, bool d) {
         if (d) {
           c.barrier();
         } else {
           auto v = buffer_f32(8);
           c.allreduce(std::span<float>(v));
         }
       },
       {"barrier(", "allreduce(count=8"}},
      {"KindAllgatherVersusReduceScatter",
       0,
       [](Communicator& c, bool d) {
         const auto n = static_cast<std::size_t>(c.size());
         auto big = buffer_f32(4 * n);
         auto small = buffer_f32(4);
         if (d) {
           c.reduce_scatter(Tensor::of(std::span<float>(big)), Tensor::of(std::span<float>(small)));
         } else {
           c.allgather(Tensor::of(std::span<float>(small)), Tensor::of(std::span<float>(big)));
         }
       },
       {"allgather(count=4", "reduce_scatter(count=4"}},
      {"ExtraCollectiveOnOneRank",
       2,
       [](Communicator& c, bool d) {
         auto v = buffer_f32(16);
         if (d) c.barrier();  // one collective ahead of the others from here on
         c.allreduce(std::span<float>(v));
       },
       {"barrier(", "allreduce(count=16"}},
  };
}

struct MismatchParam {
  RankMode mode;
  int ranks;
  std::size_t scenario;
};

class MismatchTest : public ::testing::TestWithParam<MismatchParam> {};

TEST_P(MismatchTest, EveryRankGetsMismatchPromptlyThenAborted) {
  const MismatchParam& p = GetParam();
  const Scenario s = scenarios()[p.scenario];
  auto group = make_rank_group(p.mode);
  group->run(
      p.ranks, [&](RankContext& ctx) {
        Options options;
        options.timeout = kTimeout;
        Communicator comm = ctx.create(options);
        // A matching collective first, so the mismatch is not the first call. Every rank leaves
        // it before any starts the mismatched one (InFlightCollectiveTest covers the overlap).
        auto warm = buffer_f32(5);
        comm.allreduce(std::span<float>(warm));
        ctx.sync("warm");
        const auto start = Clock::now();
        try {
          s.call(comm, ctx.rank == s.deviant % ctx.size);
          ADD_FAILURE() << "rank " << ctx.rank << ": the mismatched collective returned normally";
          return;
        } catch (const Error& e) {
          const auto took = Clock::now() - start;
          EXPECT_EQ(e.code(), ErrorCode::mismatch) << "rank " << ctx.rank << ": " << e.what();
          EXPECT_LT(took, kPromptly)
              << "rank " << ctx.rank << " took "
              << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
              << " ms to see the mismatch: " << e.what();
          for (const auto& m : s.must_mention) {
            EXPECT_NE(std::string(e.what()).find(m), std::string::npos)
                << "rank " << ctx.rank << ": the message does not mention \"" << m
                << "\": " << e.what();
          }
        }
        // The communicator is aborted now.
        for (int i = 0; i < 2; ++i) {
          try {
            auto v = buffer_f32(5);
            comm.allreduce(std::span<float>(v));
            ADD_FAILURE() << "rank " << ctx.rank << ": a call after the mismatch succeeded";
          } catch (const Error& e) {
            EXPECT_EQ(e.code(), ErrorCode::aborted) << "rank " << ctx.rank << ": " << e.what();
          }
        }
        try {
          comm.barrier();
          ADD_FAILURE() << "rank " << ctx.rank << ": barrier after the mismatch succeeded";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::aborted) << "rank " << ctx.rank << ": " << e.what();
        }
      });
}

// A collective that every rank called consistently completes on every rank, even when a
// neighbour has already moved on to a later collective and found a mismatch there: the
// mismatch belongs to the later collective. (The data of the earlier collective has all been
// sent by then, so nothing stops it from completing.)
TEST(InFlightCollectiveTest, ConsistentCollectiveCompletesBeforeALaterMismatch) {
  constexpr int kRounds = 6;
  auto group = make_rank_group(RankMode::threads);
  group->run(4, [&](RankContext& ctx) {
    Options options;
    options.timeout = kTimeout;
    Communicator comm = ctx.create(options);
    for (int round = 0; round < kRounds; ++round) {
      auto v = buffer_f32(5);
      try {
        comm.allreduce(std::span<float>(v));
      } catch (const Error& e) {
        ADD_FAILURE() << "rank " << ctx.rank << ": consistent allreduce #2 of round " << round
                      << " failed: " << e.what();
      }
      if (round == kRounds - 1) break;
      try {
        auto w = buffer_f32(ctx.rank == 1 ? 1024 : 1000);
        comm.allreduce(std::span<float>(w));
        ADD_FAILURE() << "rank " << ctx.rank << ": the mismatched allreduce returned normally";
      } catch (const Error& e) {
        EXPECT_TRUE(e.code() == ErrorCode::mismatch || e.code() == ErrorCode::aborted) << e.what();
      }
      // A fresh communicator for the next round.
      ctx.sync(str_cat("round", round));
      comm = ctx.create(options, str_cat("round", round));
    }
  });
}

std::vector<MismatchParam> params() {
  std::vector<MismatchParam> v;
  const std::size_t n = scenarios().size();
  for (std::size_t i = 0; i < n; ++i) {
    v.push_back({RankMode::threads, 4, i});
    v.push_back({RankMode::threads, 3, i});
  }
  // Two ranks: both neighbours are the same peer.
  v.push_back({RankMode::threads, 2, 0});
  v.push_back({RankMode::threads, 2, 5});
  v.push_back({RankMode::threads, 5, 0});
  v.push_back({RankMode::threads, 5, 8});
  v.push_back({RankMode::processes, 3, 0});
  v.push_back({RankMode::processes, 4, 4});
  v.push_back({RankMode::processes, 4, 7});
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, MismatchTest, ::testing::ValuesIn(params()),
                         [](const ::testing::TestParamInfo<MismatchParam>& info) {
                           return str_cat(scenarios()[info.param.scenario].name, "_",
                                          to_string(info.param.mode), "_", info.param.ranks,
                                          "ranks");
                         });

}  // namespace
}  // namespace ringlet::testing
