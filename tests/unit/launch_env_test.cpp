// SPDX-License-Identifier: Apache-2.0
// Unit tests of launcher environment resolution (RINGLET_*, torchrun, MPI, PMI, SLURM).
#include "src/bootstrap/launch_env.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

namespace ringlet::bootstrap {
namespace {

using Vars = std::map<std::string, std::string>;

EnvLookup env_of(Vars vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// Runs resolve_launch expecting Error(invalid_argument); returns its message.
std::string error_of(const Options& options, const Vars& vars) {
  try {
    LaunchInfo info = resolve_launch(options, env_of(vars));
    ADD_FAILURE() << "resolved to rank " << info.rank << " of " << info.size;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    return e.what();
  }
  return "";
}

struct LauncherCase {
  std::string name;
  Vars vars;
  int rank, size, local_rank, local_size;
  std::string host;
  int port;
  std::string source;
};

class LauncherTest : public ::testing::TestWithParam<LauncherCase> {};

TEST_P(LauncherTest, ResolvesEveryField) {
  const LauncherCase& c = GetParam();
  LaunchInfo info = resolve_launch({}, env_of(c.vars));
  EXPECT_EQ(info.rank, c.rank);
  EXPECT_EQ(info.size, c.size);
  EXPECT_EQ(info.local_rank, c.local_rank);
  EXPECT_EQ(info.local_size, c.local_size);
  EXPECT_EQ(info.store_host, c.host);
  EXPECT_EQ(info.store_port, c.port);
  EXPECT_EQ(info.source, c.source);
}

INSTANTIATE_TEST_SUITE_P(
    Launchers, LauncherTest,
    ::testing::Values(
        LauncherCase{"ringlet_host_port",
                     {{"RINGLET_RANK", "3"},
                      {"RINGLET_SIZE", "8"},
                      {"RINGLET_LOCAL_RANK", "1"},
                      {"RINGLET_LOCAL_SIZE", "2"},
                      {"RINGLET_ADDR", "node0:1234"}},
                     3,
                     8,
                     1,
                     2,
                     "node0",
                     1234,
                     "ringlet"},
        LauncherCase{"ringlet_bare_host_and_port",
                     {{"RINGLET_RANK", "0"},
                      {"RINGLET_SIZE", "2"},
                      {"RINGLET_ADDR", "node0"},
                      {"RINGLET_PORT", "4000"}},
                     0,
                     2,
                     -1,
                     -1,
                     "node0",
                     4000,
                     "ringlet"},
        LauncherCase{"ringlet_bracketed_ipv6",
                     {{"RINGLET_RANK", "1"}, {"RINGLET_SIZE", "2"}, {"RINGLET_ADDR", "[::1]:5000"}},
                     1,
                     2,
                     -1,
                     -1,
                     "::1",
                     5000,
                     "ringlet"},
        LauncherCase{"ringlet_bare_ipv6",
                     {{"RINGLET_RANK", "1"}, {"RINGLET_SIZE", "2"}, {"RINGLET_ADDR", "fd00::7"}},
                     1,
                     2,
                     -1,
                     -1,
                     "fd00::7",
                     29500,
                     "ringlet"},
        LauncherCase{"torchrun",
                     {{"RANK", "5"},
                      {"WORLD_SIZE", "16"},
                      {"LOCAL_RANK", "1"},
                      {"LOCAL_WORLD_SIZE", "8"},
                      {"MASTER_ADDR", "10.0.0.1"},
                      {"MASTER_PORT", "29400"}},
                     5,
                     16,
                     1,
                     8,
                     "10.0.0.1",
                     29400,
                     "torchrun"},
        LauncherCase{"torchrun_default_port",
                     {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "[fd00::1]"}},
                     0,
                     2,
                     -1,
                     -1,
                     "fd00::1",
                     29500,
                     "torchrun"},
        LauncherCase{"openmpi",
                     {{"OMPI_COMM_WORLD_RANK", "3"},
                      {"OMPI_COMM_WORLD_SIZE", "4"},
                      {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                      {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                      {"RINGLET_ADDR", "head:7000"}},
                     3,
                     4,
                     1,
                     2,
                     "head",
                     7000,
                     "openmpi"},
        LauncherCase{"mpich_pmi",
                     {{"PMI_RANK", "2"},
                      {"PMI_SIZE", "3"},
                      {"MPI_LOCALRANKID", "0"},
                      {"MPI_LOCALNRANKS", "1"},
                      {"MASTER_ADDR", "head"}},
                     2,
                     3,
                     0,
                     1,
                     "head",
                     29500,
                     "pmi"},
        LauncherCase{"slurm",
                     {{"SLURM_PROCID", "5"},
                      {"SLURM_NTASKS", "8"},
                      {"SLURM_LOCALID", "1"},
                      {"SLURM_NTASKS_PER_NODE", "4(x2)"},
                      {"SLURM_NODELIST", "gpu[07-08]"}},
                     5,
                     8,
                     1,
                     4,
                     "gpu07",
                     29500,
                     "slurm"},
        LauncherCase{"slurm_uneven_nodes_by_node_id",
                     {{"SLURM_PROCID", "8"},
                      {"SLURM_NTASKS", "11"},
                      {"SLURM_LOCALID", "0"},
                      {"SLURM_NTASKS_PER_NODE", "4(x2),3"},
                      {"SLURM_NODEID", "2"},
                      {"SLURM_NODELIST", "a[1-3]"},
                      {"MASTER_PORT", "6000"}},
                     8,
                     11,
                     0,
                     3,
                     "a1",
                     6000,
                     "slurm"},
        LauncherCase{"slurm_unknown_node_takes_first_count",
                     {{"SLURM_PROCID", "0"},
                      {"SLURM_NTASKS", "7"},
                      {"SLURM_NTASKS_PER_NODE", "4,3"},
                      {"SLURM_NODELIST", "x,y"},
                      {"RINGLET_PORT", "6100"},
                      {"MASTER_PORT", "6000"}},
                     0,
                     7,
                     -1,
                     4,
                     "x",
                     6100,
                     "slurm"},
        LauncherCase{"single_rank_needs_no_address",
                     {{"RINGLET_RANK", "0"}, {"RINGLET_SIZE", "1"}},
                     0,
                     1,
                     -1,
                     -1,
                     "",
                     29500,
                     "ringlet"},
        LauncherCase{"empty_values_count_as_unset",
                     {{"RINGLET_RANK", ""},
                      {"RANK", "1"},
                      {"WORLD_SIZE", "2"},
                      {"RINGLET_ADDR", ""},
                      {"MASTER_ADDR", "h"}},
                     1,
                     2,
                     -1,
                     -1,
                     "h",
                     29500,
                     "torchrun"}),
    [](const auto& info) { return info.param.name; });

// Every launcher sets a different rank; removing the top one reveals the next.
TEST(LaunchPrecedenceTest, OptionsThenRingletThenTorchrunThenOmpiThenPmiThenSlurm) {
  Vars vars = {{"RINGLET_RANK", "1"},
               {"RANK", "2"},
               {"OMPI_COMM_WORLD_RANK", "3"},
               {"PMI_RANK", "4"},
               {"SLURM_PROCID", "5"},
               {"RINGLET_SIZE", "10"},
               {"WORLD_SIZE", "20"},
               {"OMPI_COMM_WORLD_SIZE", "30"},
               {"PMI_SIZE", "40"},
               {"SLURM_NTASKS", "50"},
               {"MASTER_ADDR", "h"}};
  Options options;
  options.rank = 0;
  options.size = 9;
  LaunchInfo info = resolve_launch(options, env_of(vars));
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.size, 9);
  EXPECT_EQ(info.source, "options");

  const std::pair<const char*, const char*> layers[] = {
      {"RINGLET_RANK", "RINGLET_SIZE"},
      {"RANK", "WORLD_SIZE"},
      {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
      {"PMI_RANK", "PMI_SIZE"},
      {"SLURM_PROCID", "SLURM_NTASKS"}};
  const char* sources[] = {"ringlet", "torchrun", "openmpi", "pmi", "slurm"};
  for (int i = 0; i < 5; ++i) {
    info = resolve_launch({}, env_of(vars));
    EXPECT_EQ(info.rank, i + 1) << "layer " << i;
    EXPECT_EQ(info.size, (i + 1) * 10) << "layer " << i;
    EXPECT_EQ(info.source, sources[i]);
    vars.erase(layers[i].first);
    vars.erase(layers[i].second);
  }
}

TEST(LaunchPrecedenceTest, FieldsResolveIndependently) {
  // Rank from Options, size from WORLD_SIZE, local rank from OMPI, local size from SLURM.
  Options options;
  options.rank = 2;
  LaunchInfo info = resolve_launch(options, env_of({{"WORLD_SIZE", "4"},
                                                    {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                                                    {"SLURM_NTASKS_PER_NODE", "2"},
                                                    {"MASTER_ADDR", "h"}}));
  EXPECT_EQ(info.rank, 2);
  EXPECT_EQ(info.size, 4);
  EXPECT_EQ(info.local_rank, 0);
  EXPECT_EQ(info.local_size, 2);
  EXPECT_EQ(info.source, "options");
}

TEST(LaunchPrecedenceTest, AddressOptionsThenRingletThenMasterThenSlurm) {
  Vars vars = {{"RANK", "0"},
               {"WORLD_SIZE", "2"},
               {"RINGLET_ADDR", "ringlet-host:1111"},
               {"MASTER_ADDR", "master-host"},
               {"MASTER_PORT", "2222"},
               {"SLURM_NODELIST", "slurm[3-4]"}};
  Options options;
  options.store = "[fd00::9]:3333";
  LaunchInfo info = resolve_launch(options, env_of(vars));
  EXPECT_EQ(info.store_host, "fd00::9");
  EXPECT_EQ(info.store_port, 3333);
  info = resolve_launch({}, env_of(vars));
  EXPECT_EQ(info.store_host, "ringlet-host");
  EXPECT_EQ(info.store_port, 1111);
  vars.erase("RINGLET_ADDR");
  info = resolve_launch({}, env_of(vars));
  EXPECT_EQ(info.store_host, "master-host");
  EXPECT_EQ(info.store_port, 2222);
  vars.erase("MASTER_ADDR");
  info = resolve_launch({}, env_of(vars));
  EXPECT_EQ(info.store_host, "slurm3");
  EXPECT_EQ(info.store_port, 2222);
  vars["RINGLET_PORT"] = "4444";  // RINGLET_PORT before MASTER_PORT
  info = resolve_launch({}, env_of(vars));
  EXPECT_EQ(info.store_port, 4444);
}

TEST(LaunchPrecedenceTest, NodeIdFromOptionsThenEnvironment) {
  Vars vars = {{"RINGLET_RANK", "0"}, {"RINGLET_SIZE", "1"}, {"RINGLET_NODE_ID", "rack1"}};
  EXPECT_EQ(resolve_launch({}, env_of(vars)).node_id, "rack1");
  Options options;
  options.node_id = "mine";
  EXPECT_EQ(resolve_launch(options, env_of(vars)).node_id, "mine");
  vars.erase("RINGLET_NODE_ID");
  EXPECT_EQ(resolve_launch({}, env_of(vars)).node_id, "");
}

TEST(LaunchErrorTest, OpenMpiWithoutAddressSaysWhatToSet) {
  std::string what = error_of({}, {{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "8"}});
  const std::string expected =
      "rank 3 of 8 came from Open MPI (OMPI_COMM_WORLD_RANK) but no rendezvous address is "
      "known: set RINGLET_ADDR=host:port (rank 0's host) or MASTER_ADDR/MASTER_PORT";
  EXPECT_EQ(what.substr(0, expected.size()), expected);  // std::system_error appends ": ...".
}

TEST(LaunchErrorTest, PmiWithoutAddressSaysWhatToSet) {
  std::string what = error_of({}, {{"PMI_RANK", "1"}, {"PMI_SIZE", "2"}});
  EXPECT_NE(what.find("MPICH/PMI (PMI_RANK)"), std::string::npos) << what;
  EXPECT_NE(what.find("set RINGLET_ADDR=host:port"), std::string::npos) << what;
}

TEST(LaunchErrorTest, MissingRankListsTheVariablesLookedAt) {
  std::string what = error_of({}, {{"WORLD_SIZE", "4"}});
  for (const char* var : {"Options::rank", "RINGLET_RANK", "RANK", "OMPI_COMM_WORLD_RANK",
                          "PMI_RANK", "SLURM_PROCID"}) {
    EXPECT_NE(what.find(var), std::string::npos) << var << " missing from: " << what;
  }
}

TEST(LaunchErrorTest, MissingSizeListsTheVariablesLookedAt) {
  std::string what = error_of({}, {{"RANK", "0"}});
  for (const char* var : {"Options::size", "RINGLET_SIZE", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE",
                          "PMI_SIZE", "SLURM_NTASKS"}) {
    EXPECT_NE(what.find(var), std::string::npos) << var << " missing from: " << what;
  }
}

TEST(LaunchErrorTest, MalformedIntegersNameTheVariable) {
  EXPECT_NE(error_of({}, {{"RANK", "abc"}, {"WORLD_SIZE", "2"}}).find("RANK=abc"),
            std::string::npos);
  EXPECT_NE(error_of({}, {{"RANK", "0"}, {"WORLD_SIZE", "2x"}}).find("WORLD_SIZE=2x"),
            std::string::npos);
  EXPECT_NE(error_of({}, {{"RINGLET_RANK", "-1"}, {"RINGLET_SIZE", "2"}}).find("RINGLET_RANK=-1"),
            std::string::npos);
  EXPECT_NE(error_of({}, {{"RANK", "0"}, {"WORLD_SIZE", "0"}}).find("WORLD_SIZE=0"),
            std::string::npos);
  EXPECT_NE(error_of({}, {{"RANK", "0"}, {"WORLD_SIZE", "99999999999"}}).find("WORLD_SIZE"),
            std::string::npos);
  EXPECT_NE(
      error_of({},
               {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}})
          .find("MASTER_PORT=70000"),
      std::string::npos);
  EXPECT_NE(error_of({}, {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"RINGLET_ADDR", "h:port"}})
                .find("RINGLET_ADDR"),
            std::string::npos);
  EXPECT_NE(error_of({}, {{"SLURM_PROCID", "0"},
                          {"SLURM_NTASKS", "2"},
                          {"SLURM_NTASKS_PER_NODE", "2(y3)"},
                          {"SLURM_NODELIST", "a"}})
                .find("SLURM_NTASKS_PER_NODE=2(y3)"),
            std::string::npos);
  Options options;
  options.store = "host:";
  EXPECT_NE(error_of(options, {{"RANK", "0"}, {"WORLD_SIZE", "2"}}).find("Options::store"),
            std::string::npos);
  Options negative;
  negative.rank = -3;
  EXPECT_NE(error_of(negative, {{"WORLD_SIZE", "2"}}).find("Options::rank"), std::string::npos);
}

TEST(LaunchErrorTest, RankOutsideSizeIsRejected) {
  std::string what = error_of({}, {{"RANK", "4"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "h"}});
  EXPECT_NE(what.find("rank 4 (from RANK) is outside [0, 4)"), std::string::npos) << what;
  what = error_of({}, {{"RANK", "0"},
                       {"WORLD_SIZE", "4"},
                       {"LOCAL_RANK", "2"},
                       {"LOCAL_WORLD_SIZE", "2"},
                       {"MASTER_ADDR", "h"}});
  EXPECT_NE(what.find("local rank 2 (from LOCAL_RANK)"), std::string::npos) << what;
}

TEST(LaunchEnvTest, ProcessEnvReadsTheEnvironment) {
  ::setenv("RINGLET_TEST_LAUNCH_ENV_VAR", "value-42", 1);
  EnvLookup env = process_env();
  EXPECT_EQ(env("RINGLET_TEST_LAUNCH_ENV_VAR"), std::optional<std::string>("value-42"));
  EXPECT_EQ(env("RINGLET_TEST_LAUNCH_ENV_UNSET_VAR"), std::nullopt);
  ::unsetenv("RINGLET_TEST_LAUNCH_ENV_VAR");
}

struct NodelistCase {
  std::string name;
  std::string nodelist;
  std::vector<std::string> hosts;
};

class NodelistTest : public ::testing::TestWithParam<NodelistCase> {};

TEST_P(NodelistTest, Expands) {
  EXPECT_EQ(expand_slurm_nodelist(GetParam().nodelist), GetParam().hosts);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, NodelistTest,
    ::testing::Values(
        NodelistCase{"single", "node1", {"node1"}},
        NodelistCase{"plain_list", "a,b,c", {"a", "b", "c"}},
        NodelistCase{"range", "n[1-3]", {"n1", "n2", "n3"}},
        NodelistCase{"header_example",
                     "n[1-3,07-09],gpu5,x[001-002]-ib",
                     {"n1", "n2", "n3", "n07", "n08", "n09", "gpu5", "x001-ib", "x002-ib"}},
        NodelistCase{"crossing_a_power_of_ten", "n[8-10]", {"n8", "n9", "n10"}},
        NodelistCase{"padded_crossing", "n[098-101]", {"n098", "n099", "n100", "n101"}},
        NodelistCase{
            "single_number_in_brackets", "node[01-03,7]", {"node01", "node02", "node03", "node7"}},
        NodelistCase{"two_groups", "r[1-2]n[1-2]", {"r1n1", "r1n2", "r2n1", "r2n2"}},
        NodelistCase{"dotted_names", "h1.example.org,h2", {"h1.example.org", "h2"}},
        NodelistCase{"empty", "", {}}),
    [](const auto& info) { return info.param.name; });

TEST(NodelistErrorTest, MalformedListsAreInvalidArgument) {
  for (const char* bad : {"n[1-3", "n1-3]", "n[3-1]", "n[a-b]", "n[1-]", "n[[1]]", "n[]"}) {
    try {
      expand_slurm_nodelist(bad);
      ADD_FAILURE() << bad << " expanded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << bad;
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

TEST(NodeIdentityTest, HasHostBootIdAndNamespacesAndIsStable) {
  std::string id = detect_node_identity();
  EXPECT_EQ(std::count(id.begin(), id.end(), '/'), 3) << id;
  EXPECT_EQ(id, detect_node_identity());
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  EXPECT_EQ(id.rfind(std::string(host) + "/", 0), 0u) << id;
}

TEST(JobIdentityTest, RingletJobIdWinsElseEveryRankHashesTheSameRendezvous) {
  Vars base{{"RINGLET_ADDR", "10.1.2.3:4000"}, {"RINGLET_SIZE", "4"}};
  Vars r0 = base, r3 = base;
  r0["RINGLET_RANK"] = "0";
  r3["RINGLET_RANK"] = "3";
  LaunchInfo a = resolve_launch({}, env_of(r0));
  LaunchInfo b = resolve_launch({}, env_of(r3));
  EXPECT_EQ(a.job_identity, b.job_identity);
  EXPECT_EQ(a.job_identity_source, "rendezvous parameters");
  EXPECT_EQ(a.job_identity.rfind("rdv-", 0), 0u) << a.job_identity;
  Vars other_port = r0;
  other_port["RINGLET_ADDR"] = "10.1.2.3:4001";
  EXPECT_NE(resolve_launch({}, env_of(other_port)).job_identity, a.job_identity);
  Vars named = r0;
  named["RINGLET_JOB_ID"] = "train-7";
  LaunchInfo n = resolve_launch({}, env_of(named));
  EXPECT_EQ(n.job_identity, "train-7");
  EXPECT_EQ(n.job_identity_source, "RINGLET_JOB_ID");
  named["RINGLET_JOB_ID"] = std::string(257, 'j');
  EXPECT_NE(error_of({}, named).find("RINGLET_JOB_ID"), std::string::npos);
}

}  // namespace
}  // namespace ringlet::bootstrap
