// SPDX-License-Identifier: Apache-2.0
// ringlet-plan (tools/plan): the choice and the shape of the output on a few jobs, the model
// file, 10,000 nodes, and exit status 2 with a message for bad input. The tool's path comes
// in RINGLET_PLAN_TOOL (tests/meson.build).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Result {
  int status = -1;
  std::string out;  // stdout and stderr
};

Result run(const std::string& args) {
  const char* tool = std::getenv("RINGLET_PLAN_TOOL");
  Result r;
  const std::string cmd = std::string(tool) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::vector<std::vector<std::string>> rows(const std::string& out) {
  std::vector<std::vector<std::string>> table;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::vector<std::string> w;
    std::string x;
    while (words >> x) w.push_back(x);
    table.push_back(w);
  }
  return table;
}

// The row for `size` and `algorithm` of the full output, or an empty one.
std::vector<std::string> row(const std::string& out, const std::string& size,
                             const std::string& algorithm) {
  for (const auto& w : rows(out)) {
    if (w.size() >= 4 && w[0] == size && w[1] == algorithm) return w;
  }
  return {};
}

#define REQUIRE_TOOL()                                                                       \
  do {                                                                                       \
    if (std::getenv("RINGLET_PLAN_TOOL") == nullptr) GTEST_SKIP() << "no RINGLET_PLAN_TOOL"; \
  } while (false)

TEST(PlanToolTest, FourNodesChoosesByTheAlgebra) {
  REQUIRE_TOOL();
  // alpha 10 us, 1 GB/s: rd = 2a + 2Sb wins at 8 B; at 64 MiB Rabenseifner (4a + 1.5Sb).
  const Result r = run("--nodes 4 --alpha 10us --beta 1e-9 --size 8 --size 64M");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("4 nodes x 1 ranks per node = 4 ranks"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not available: local"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not available: hierarchical"), std::string::npos) << r.out;
  const auto rd8 = row(r.out, "8", "recursive_doubling");
  ASSERT_EQ(rd8.size(), 6u) << r.out;  // size algorithm time busbw <- choice
  EXPECT_EQ(rd8[5], "choice");
  EXPECT_NEAR(std::stod(rd8[2]), 2 * (10 + 8e-3), 0.01);
  for (const char* a : {"ring", "rabenseifner", "lower_bound"}) {
    EXPECT_EQ(row(r.out, "8", a).size(), 4u) << a << "\n" << r.out;
  }
  const auto ring = row(r.out, "64M", "ring");
  ASSERT_EQ(ring.size(), 4u) << r.out;
  // 6 alpha + 1.5 S beta = 60 us + 100663.296 us; busbw = S / T x 1.5.
  const double t = 60 + 1.5 * 67108864 * 1e-3;
  EXPECT_NEAR(std::stod(ring[2]), t, 0.01);
  EXPECT_NEAR(std::stod(ring[3]), 67108864 / (t * 1e-6) * 1.5 / 1e9, 0.001);
  EXPECT_EQ(row(r.out, "64M", "rabenseifner").back(), "choice") << r.out;
  EXPECT_NEAR(std::stod(row(r.out, "64M", "lower_bound")[2]), 1.5 * 67108864 * 1e-3, 0.01);
  EXPECT_NE(r.out.find("ranges: recursive_doubling 0-"), std::string::npos) << r.out;
}

TEST(PlanToolTest, BriefAtScaleAndHierarchical) {
  REQUIRE_TOOL();
  const Result r =
      run("--nodes 10000 --ranks-per-node 8 --alpha 50us --bandwidth 1Gbit --sizes 8-1G --brief");
  ASSERT_EQ(r.status, 0) << r.out;
  int sizes = 0;
  std::string last_choice;
  for (const auto& w : rows(r.out)) {
    if (w.size() == 6 && w[0] != "size" && (std::isdigit(static_cast<unsigned char>(w[0][0])))) {
      ++sizes;
      last_choice = w[1];
      EXPECT_GE(std::stod(w[2]), std::stod(w[4])) << "time below the bound: " << w[0];
    }
  }
  EXPECT_EQ(sizes, 14) << r.out;  // 8, 32, ..., 512M
  EXPECT_EQ(last_choice, "hierarchical") << r.out;

  const Result one = run("--nodes 1 --ranks-per-node 8 --alpha 50us --beta 8e-9 --size 1M");
  ASSERT_EQ(one.status, 0) << one.out;
  EXPECT_EQ(row(one.out, "1M", "local").back(), "choice") << one.out;
  const Result noshm =
      run("--nodes 1 --ranks-per-node 8 --alpha 50us --beta 8e-9 --size 1M --no-local-group");
  ASSERT_EQ(noshm.status, 0) << noshm.out;
  EXPECT_TRUE(row(noshm.out, "1M", "local").empty()) << noshm.out;
}

TEST(PlanToolTest, ModelFileAndOverrides) {
  REQUIRE_TOOL();
  const std::string path = ::testing::TempDir() + "/ringlet_plan_model.txt";
  {
    std::ofstream f(path);
    f << "# written by hand\nalpha=1e-5\nbeta=1e-9\nnodes=4\nranks_per_node=1\n";
  }
  const Result r = run("--model " + path + " --size 8");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NEAR(std::stod(row(r.out, "8", "recursive_doubling")[2]), 20.016, 0.01) << r.out;
  // Options win over the file: 8 nodes, 3 exchanges.
  const Result o = run("--nodes 8 --model " + path + " --size 8");
  ASSERT_EQ(o.status, 0) << o.out;
  EXPECT_NEAR(std::stod(row(o.out, "8", "recursive_doubling")[2]), 30.024, 0.01) << o.out;
  {
    std::ofstream f(path);
    f << "alpha=1e-5\nspeed=3\n";
  }
  const Result bad = run("--model " + path + " --size 8");
  EXPECT_EQ(bad.status, 2) << bad.out;
  EXPECT_NE(bad.out.find(":2: unknown key \"speed\""), std::string::npos) << bad.out;
  std::remove(path.c_str());
}

TEST(PlanToolTest, BadInputExitsTwoWithAMessage) {
  REQUIRE_TOOL();
  const std::string ok = " --alpha 1e-5 --beta 1e-9";
  const std::pair<std::string, std::string> cases[] = {
      {"--alpha 1e-5 --beta 1e-9", "--nodes is required"},
      {"--nodes 0" + ok, "--nodes 0: not a count"},
      {"--nodes x" + ok, "--nodes x: not a count"},
      {"--nodes 4 --beta 1e-9", "--alpha is required"},
      {"--nodes 4 --alpha 1e-5", "--beta or --bandwidth is required"},
      {"--nodes 4 --alpha -1 --beta 1e-9", "--alpha -1: not a time"},
      {"--nodes 4 --alpha 1e-5 --bandwidth 1Gbyte", "--bandwidth 1Gbyte"},
      {"--nodes 4" + ok + " --size 12Q", "--size 12Q: not a size"},
      {"--nodes 4" + ok + " --sizes 64M-4", "needs 1 <= LO <= HI"},
      {"--nodes 4" + ok + " --frobnicate", "unknown argument --frobnicate"},
      {"--nodes 4" + ok + " --size", "--size needs a value"},
      {"--nodes 100000 --ranks-per-node 1000" + ok, "exceed"},
      {"--nodes 4" + ok + " --model /nonexistent/model.txt", "cannot read"},
  };
  for (const auto& c : cases) {
    const Result r = run(c.first);
    EXPECT_EQ(r.status, 2) << c.first << "\n" << r.out;
    EXPECT_NE(r.out.find(c.second), std::string::npos) << c.first << "\n" << r.out;
  }
  EXPECT_EQ(run("--help").status, 0);
}

}  // namespace
