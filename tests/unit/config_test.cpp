// SPDX-License-Identifier: Apache-2.0
// The configuration resolver: Options first, then the environment, then measured defaults;
// malformed values name their variable. The environment is a map here.
#include "src/config.hpp"

#include <gtest/gtest.h>

#include <map>

namespace ringlet {
namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(ConfigTest, DefaultsAreTheMeasuredOnes) {
  const Config c = resolve_config({}, 4, env_of({}));
  EXPECT_EQ(c.algorithm, "auto");
  EXPECT_EQ(c.transport, "auto");
  EXPECT_EQ(c.timeout, std::chrono::seconds(300));
  EXPECT_EQ(c.crossover_bytes, std::size_t{64} << 10);
  EXPECT_EQ(resolve_config({}, 5, env_of({})).crossover_bytes, std::size_t{128} << 10);
  EXPECT_EQ(c.slice_bytes, 0u);  // the transport's recommendation
  EXPECT_EQ(c.ring_slots, 4);
  EXPECT_EQ(c.hier_pipeline_bytes, std::size_t{1} << 20);
  EXPECT_TRUE(c.shm);
  EXPECT_EQ(c.shm_spin, 50);
  EXPECT_EQ(c.shm_yields, 100);
  EXPECT_EQ(c.tcp_sockets, 0);
  EXPECT_EQ(c.socket_ifname, "");
}

TEST(ConfigTest, EnvironmentOverridesDefaults) {
  const Config c = resolve_config({}, 2,
                                  env_of({{"RINGLET_ALGO", "rd:0-1K;ring:1K-max"},
                                          {"RINGLET_TRANSPORT", "TCP"},
                                          {"RINGLET_TIMEOUT", "2.5"},
                                          {"RINGLET_CROSSOVER_BYTES", "0"},
                                          {"RINGLET_SLICE_BYTES", "65536"},
                                          {"RINGLET_SHM", "0"},
                                          {"RINGLET_SHM_SPIN", "7"},
                                          {"RINGLET_SHM_YIELDS", "9"},
                                          {"RINGLET_SOCKETS", "3"},
                                          {"RINGLET_SOCKET_IFNAME", "=lo"}}));
  EXPECT_EQ(c.algorithm, "rd:0-1K;ring:1K-max");
  EXPECT_EQ(c.transport, "tcp");
  EXPECT_EQ(c.timeout, std::chrono::milliseconds(2500));
  EXPECT_EQ(c.crossover_bytes, 0u);
  EXPECT_EQ(c.slice_bytes, 65536u);
  EXPECT_FALSE(c.shm);
  EXPECT_EQ(c.shm_spin, 7);
  EXPECT_EQ(c.shm_yields, 9);
  EXPECT_EQ(c.tcp_sockets, 3);
  EXPECT_EQ(c.socket_ifname, "=lo");
  // Empty values count as unset.
  EXPECT_EQ(resolve_config({}, 2, env_of({{"RINGLET_ALGO", ""}})).algorithm, "auto");
}

TEST(ConfigTest, OptionsWinOverTheEnvironment) {
  Options o;
  o.algorithm = "ring";
  o.transport = "tcp";
  o.timeout = std::chrono::milliseconds(1234);
  const Config c = resolve_config(
      o, 2,
      env_of({{"RINGLET_ALGO", "hier"}, {"RINGLET_TRANSPORT", "auto"}, {"RINGLET_TIMEOUT", "99"}}));
  EXPECT_EQ(c.algorithm, "ring");
  EXPECT_EQ(c.transport, "tcp");
  EXPECT_EQ(c.timeout, std::chrono::milliseconds(1234));
}

TEST(ConfigTest, MalformedValuesNameTheirSource) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"RINGLET_ALGO", "tree"},
      {"RINGLET_TRANSPORT", "carrier-pigeon"},
      {"RINGLET_TIMEOUT", "soon"},
      {"RINGLET_TIMEOUT", "-1"},
      {"RINGLET_CROSSOVER_BYTES", "-5"},
      {"RINGLET_SLICE_BYTES", "12"},
      {"RINGLET_SHM", "2"},
      {"RINGLET_SOCKETS", "65"},
      {"RINGLET_SOCKETS", "x"},
      {"RINGLET_SHM_SPIN", "-1"}};
  for (const auto& [name, value] : bad) {
    try {
      resolve_config({}, 2, env_of({{name, value}}));
      ADD_FAILURE() << name << "=" << value << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
  Options o;
  o.algorithm = "tree";
  EXPECT_THROW(resolve_config(o, 2, env_of({})), Error);
  o.algorithm = "";
  o.transport = rdma_built() ? "infiniband" : "rdma";  // rdma only in builds with ibverbs
  try {
    resolve_config(o, 2, env_of({}));
    ADD_FAILURE() << "transport " << o.transport << " accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Options::transport"), std::string::npos) << e.what();
  }
  if (rdma_built()) {
    o.transport = "RDMA";
    EXPECT_EQ(resolve_config(o, 2, env_of({})).transport, "rdma");
  }
}

TEST(ConfigTest, RdmaVariables) {
  const Config c = resolve_config({}, 2,
                                  env_of({{"RINGLET_IB_HCA", "^mlx5_2"},
                                          {"RINGLET_IB_GID_INDEX", "3"},
                                          {"RINGLET_IB_QPS_PER_CONNECTION", "4"},
                                          {"RINGLET_IBVERBS_LIBRARY", "/x/libverbs.so"}}));
  EXPECT_EQ(c.ib_hca, "^mlx5_2");
  EXPECT_EQ(c.ib_gid_index, 3);
  EXPECT_EQ(c.ib_qps, 4);
  EXPECT_EQ(c.ibverbs_library, "/x/libverbs.so");
  EXPECT_THROW(resolve_config({}, 2, env_of({{"RINGLET_IB_QPS_PER_CONNECTION", "0"}})), Error);
  EXPECT_THROW(resolve_config({}, 2, env_of({{"RINGLET_IB_GID_INDEX", "x"}})), Error);
}

TEST(ConfigTest, DescribeListsEveryValue) {
  const std::string d = describe(resolve_config({}, 2, env_of({})));
  for (const char* key : {"algorithm=auto", "transport=auto", "timeout=300000ms",
                          "crossover_bytes=65536", "slice_bytes=transport", "ring_slots=4", "shm=1",
                          "shm_spin=50", "tcp_sockets=default", "socket_ifname=auto"}) {
    EXPECT_NE(d.find(key), std::string::npos) << key << " missing in " << d;
  }
}

TEST(ConfigTest, InfiniteAndHugeTimeoutsAreClampedToOneYear) {
  // Review L3: inf was an undefined cast, and a huge value put the deadline in the past.
  const auto year = std::chrono::milliseconds(365LL * 24 * 3600 * 1000);
  EXPECT_EQ(resolve_config({}, 2, env_of({{"RINGLET_TIMEOUT", "inf"}})).timeout, year);
  EXPECT_EQ(resolve_config({}, 2, env_of({{"RINGLET_TIMEOUT", "1e300"}})).timeout, year);
  Options o;
  o.timeout = std::chrono::milliseconds::max();
  EXPECT_EQ(resolve_config(o, 2, env_of({})).timeout, year);
  EXPECT_EQ(resolve_config({}, 2, env_of({{"RINGLET_TIMEOUT", "0.0001"}})).timeout.count(), 1);
  EXPECT_THROW(resolve_config({}, 2, env_of({{"RINGLET_TIMEOUT", "nan"}})), Error);
}

TEST(ConfigTest, SettingsThatMustAgreeNameTheFirstDifference) {
  // Review L4: a RINGLET_SHM that differed across local ranks showed only as a timeout.
  const Config a = resolve_config({}, 4, env_of({}));
  const Config b = resolve_config({}, 4, env_of({{"RINGLET_SHM", "0"}}));
  const std::string sa = agreed_settings(a), sb = agreed_settings(b);
  EXPECT_NE(settings_digest(sa), settings_digest(sb));
  EXPECT_EQ(settings_digest(sa),
            settings_digest(agreed_settings(resolve_config({}, 4, env_of({})))));
  EXPECT_EQ(settings_difference(sa, sb, 3), "RINGLET_SHM is 1 here and 0 at rank 3");
  EXPECT_EQ(settings_difference(sa, sa, 3), "");
  const Config c = resolve_config({}, 4, env_of({{"RINGLET_SOCKETS", "2"}}));
  EXPECT_EQ(settings_difference(sa, agreed_settings(c), 1),
            "RINGLET_SOCKETS is 0 here and 2 at rank 1");
  // What may differ per rank does not count: the timeout, the interface names.
  const Config d =
      resolve_config({}, 4, env_of({{"RINGLET_TIMEOUT", "7"}, {"RINGLET_SOCKET_IFNAME", "eth1"}}));
  EXPECT_EQ(agreed_settings(d), sa);
}

}  // namespace
}  // namespace ringlet

namespace ringlet {
namespace {

TEST(ConfigTest, BucketBytesAndTimeline) {
  const Config d = resolve_config({}, 2, env_of({}));
  EXPECT_EQ(d.bucket_bytes, 0u);  // the reducer then uses fusion_bytes
  EXPECT_TRUE(d.timeline.empty());
  const Config c = resolve_config(
      {}, 2, env_of({{"RINGLET_BUCKET_BYTES", "1048576"}, {"RINGLET_TIMELINE", "/tmp/t"}}));
  EXPECT_EQ(c.bucket_bytes, std::size_t{1} << 20);
  EXPECT_EQ(c.timeline, "/tmp/t");
  try {
    resolve_config({}, 2, env_of({{"RINGLET_BUCKET_BYTES", "12"}}));
    ADD_FAILURE() << "a bucket of 12 bytes was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("RINGLET_BUCKET_BYTES"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ringlet
