// SPDX-License-Identifier: Apache-2.0
// Hierarchical allreduce with ranks as threads: Options::node_id puts them on simulated nodes,
// so the shared-memory stages, the parallel inter-node rings and the uneven-layout fallback
// all run in one process (the namespaced multi-host tests are in tests/net).
#include <gtest/gtest.h>

#include <cstdlib>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "src/communicator.hpp"

namespace ringlet {
namespace {

struct Layout {
  std::vector<int> ranks_per_node;
  const char* algo;
};

class HierThreadsTest : public ::testing::TestWithParam<Layout> {};

TEST_P(HierThreadsTest, MatchesSerialReferenceBitForBit) {
  const Layout& layout = GetParam();
  std::vector<std::string> node_of;
  for (std::size_t m = 0; m < layout.ranks_per_node.size(); ++m) {
    for (int i = 0; i < layout.ranks_per_node[m]; ++i)
      node_of.push_back("node" + std::to_string(m));
  }
  const int n = static_cast<int>(node_of.size());
  auto store = bootstrap::make_hash_store();
  const std::vector<std::size_t> counts = {0, 1, 7, 4099, (std::size_t{3} << 20) + 5};
  std::vector<std::vector<std::vector<float>>> results(static_cast<std::size_t>(n));
  std::vector<std::string> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        Options o;
        o.rank = r;
        o.size = n;
        o.node_id = node_of[static_cast<std::size_t>(r)];
        o.timeout = std::chrono::seconds(60);
        o.algorithm = layout.algo;
        Communicator comm = detail::create_with_store(o, store);
        if (comm.node_count() != static_cast<int>(layout.ranks_per_node.size())) {
          errors[static_cast<std::size_t>(r)] = "wrong node count";
          return;
        }
        for (std::size_t count : counts) {
          for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
            std::vector<float> v(count);
            // Small integers: every partial sum is exact. For avg every rank gives the same
            // value, so the sum is a multiple of n and the quotient exact.
            for (std::size_t i = 0; i < count; ++i) {
              const std::size_t x = op == ReduceOp::avg
                                        ? (i % 5) + 1
                                        : (i * 7 + static_cast<std::size_t>(r) * 3) % 11 + 1;
              v[i] = static_cast<float>(x);
            }
            comm.allreduce(std::span(v), op);
            results[static_cast<std::size_t>(r)].push_back(std::move(v));
          }
        }
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) ASSERT_EQ(errors[static_cast<std::size_t>(r)], "") << "rank " << r;
  std::size_t k = 0;
  for (std::size_t count : counts) {
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg}) {
      const auto& got = results[0][k];
      for (std::size_t i = 0; i < count; ++i) {
        long double want = 0;
        for (int q = 0; q < n; ++q) {
          want +=
              op == ReduceOp::avg
                  ? static_cast<long double>((i % 5) + 1)
                  : static_cast<long double>((i * 7 + static_cast<std::size_t>(q) * 3) % 11 + 1);
        }
        if (op == ReduceOp::avg) want /= n;
        ASSERT_EQ(static_cast<long double>(got[i]), want)
            << "count " << count << " op " << to_string(op) << " index " << i;
      }
      for (int r = 1; r < n; ++r) {
        ASSERT_EQ(results[static_cast<std::size_t>(r)][k], got)
            << "rank " << r << " differs from rank 0, count " << count;
      }
      ++k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, HierThreadsTest,
                         ::testing::Values(Layout{{2, 2}, "hier"}, Layout{{2, 2, 2}, "auto"},
                                           Layout{{3, 3}, "hier"}, Layout{{3, 2}, "hier"},
                                           Layout{{4, 4}, "auto"}),
                         [](const ::testing::TestParamInfo<Layout>& info) {
                           std::string name = info.param.algo;
                           for (int k : info.param.ranks_per_node) name += "_" + std::to_string(k);
                           return name;
                         });

}  // namespace
}  // namespace ringlet
