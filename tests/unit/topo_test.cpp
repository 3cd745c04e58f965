// SPDX-License-Identifier: Apache-2.0
// Tests of src/topo: live counts against /proc and /sys, path classes and placement on the
// hwloc XML fixtures of tests/data/topo, pinning, and the ringlet-topo tool's output.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "ringlet_config.hpp"
#include "src/common/str_cat.hpp"
#include "src/topo/detail.hpp"
#include "src/topo/format.hpp"
#include "src/topo/topology.hpp"

namespace ringlet::topo {
namespace {

// ---- independent references -------------------------------------------------------------

// Counts the entries of a sysfs cpu list ("0-3,8") without the module's parser.
int count_cpu_list(const std::string& list) {
  int n = 0;
  std::size_t pos = 0;
  while (pos < list.size()) {
    std::size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    std::string part = list.substr(pos, end - pos);
    int lo = 0, hi = 0;
    if (std::sscanf(part.c_str(), "%d-%d", &lo, &hi) == 2) {
      n += hi - lo + 1;
    } else if (std::sscanf(part.c_str(), "%d", &lo) == 1) {
      n += 1;
    }
    pos = end + 1;
  }
  return n;
}

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

struct ProcCounts {
  int processors = 0;
  int cores = 0;
};

ProcCounts read_proc_cpuinfo() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  ProcCounts c;
  std::set<std::pair<std::string, std::string>> cores;
  std::string phys = "0";
  std::string core;
  auto value = [](const std::string& l) { return l.substr(l.find(':') + 2); };
  while (std::getline(in, line)) {
    if (line.rfind("processor", 0) == 0) {
      ++c.processors;
      phys = "0";
      core.clear();
    } else if (line.rfind("physical id", 0) == 0) {
      phys = value(line);
    } else if (line.rfind("core id", 0) == 0) {
      core = value(line);
      cores.insert({phys, core});
    }
  }
  c.cores = cores.empty() ? c.processors : static_cast<int>(cores.size());
  return c;
}

int count_numa_dirs() {
  int n = 0;
  DIR* d = ::opendir("/sys/devices/system/node");
  if (d == nullptr) return 1;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() > 4 && name.rfind("node", 0) == 0 &&
        std::isdigit(static_cast<unsigned char>(name[4])))
      ++n;
  }
  ::closedir(d);
  return n == 0 ? 1 : n;
}

void expect_counts_match_machine(const Topology& t) {
  ProcCounts proc = read_proc_cpuinfo();
  int online = count_cpu_list(first_line("/sys/devices/system/cpu/online"));
  EXPECT_EQ(t.pus, online) << t.backend;
  EXPECT_EQ(t.pus, proc.processors) << t.backend;
  EXPECT_EQ(t.cores, proc.cores) << t.backend;
  EXPECT_EQ(static_cast<int>(t.numa_nodes.size()), count_numa_dirs()) << t.backend;
  int numa_cpus = 0;
  for (const NumaNode& n : t.numa_nodes) numa_cpus += static_cast<int>(n.cpus.size());
  EXPECT_EQ(numa_cpus, online) << t.backend;
}

std::string data_dir() {
  const char* d = std::getenv("RINGLET_TOPO_DATA");
  return d == nullptr ? std::string("tests/data/topo") : std::string(d);
}

// ---- live machine -------------------------------------------------------------------------

TEST(TopoLive, DefaultBackendCountsMatchProcAndSys) {
  Topology t = load_topology();
  EXPECT_EQ(t.backend, RINGLET_HAVE_HWLOC ? "hwloc" : "sysfs");
  EXPECT_EQ(t.source, "live");
  expect_counts_match_machine(t);
}

TEST(TopoLive, SysfsBackendCountsMatchProcAndSys) {
  Topology t = load_topology_sysfs();
  EXPECT_EQ(t.backend, "sysfs");
  expect_counts_match_machine(t);
}

TEST(TopoLive, InterfacesIncludeLoopbackWithItsAddress) {
  Topology t = load_topology();
  bool found = false;
  for (const NetInterface& i : t.net_interfaces) {
    if (i.name != "lo") continue;
    found = true;
    EXPECT_EQ(i.mtu, std::atoi(first_line("/sys/class/net/lo/mtu").c_str()));
    bool v4 = false;
    for (const std::string& a : i.addresses) v4 = v4 || a == "127.0.0.1/8";
    EXPECT_TRUE(v4);
    EXPECT_TRUE(i.bus_id.empty());
  }
  EXPECT_TRUE(found);
}

// ---- pure helpers -------------------------------------------------------------------------

TEST(TopoHelpers, CpuListsRoundTrip) {
  EXPECT_EQ(format_cpu_list({11, 0, 1, 2, 3, 8, 10}), "0-3,8,10-11");
  EXPECT_EQ(format_cpu_list({}), "");
  EXPECT_EQ(detail::parse_cpu_list("0-3,8,10-11\n"), (std::vector<int>{0, 1, 2, 3, 8, 10, 11}));
  EXPECT_TRUE(detail::parse_cpu_list("3-1").empty());
  EXPECT_TRUE(detail::parse_cpu_list("x").empty());
}

TEST(TopoHelpers, BusIdsAreNormalized) {
  EXPECT_EQ(detail::normalize_bus_id("00000000:1B:00.0"), "0000:1b:00.0");
  EXPECT_EQ(detail::normalize_bus_id("0000:1b:00.0"), "0000:1b:00.0");
}

TEST(TopoHelpers, PciPathClasses) {
  PciLocation gpu0{"0000:03:00.0", {"d0", "up", "rp"}, "hb0", 0};
  PciLocation gpu1{"0000:04:00.0", {"d1", "up", "rp"}, "hb0", 0};
  PciLocation deep{"0000:08:00.0", {"d2", "up2", "d3", "up", "rp"}, "hb0", 0};
  PciLocation other_rp{"0000:10:00.0", {"rp2"}, "hb0", 0};
  PciLocation other_hb{"0000:20:00.0", {"rp3"}, "hb1", 0};
  PciLocation other_numa{"0000:90:00.0", {"rp4"}, "hb2", 1};
  PciLocation unknown_numa{"0000:a0:00.0", {"rp5"}, "hb3", -1};
  EXPECT_EQ(to_string(classify_pci_path(gpu0, gpu1)), "PIX");
  EXPECT_EQ(to_string(classify_pci_path(gpu0, deep)), "PXB");
  EXPECT_EQ(to_string(classify_pci_path(gpu0, other_rp)), "PHB");
  EXPECT_EQ(to_string(classify_pci_path(gpu0, other_hb)), "NODE");
  EXPECT_EQ(to_string(classify_pci_path(gpu0, other_numa)), "SYS");
  EXPECT_EQ(to_string(classify_pci_path(gpu0, unknown_numa)), "NODE");
  EXPECT_EQ(to_string(classify_pci_path(gpu0, PciLocation{})), "?");
}

Topology two_gpu_topology() {
  Topology t;
  t.numa_nodes = {{0, 1 << 30, {0, 1}}};
  Gpu a;
  a.pci = {"0000:03:00.0", {"d0", "up"}, "hb0", 0};
  Gpu b;
  b.pci = {"0000:04:00.0", {"d1", "up"}, "hb0", 0};
  t.gpus = {b, a};  // finish_devices sorts by bus id
  return t;
}

TEST(TopoHelpers, NvlinkPeersBecomeNvLinks) {
  Topology t = two_gpu_topology();
  detail::finish_devices(t, {{"0000:03:00.0", "H200", {{"0000:04:00.0", -1, 4}}},
                             {"0000:04:00.0", "H200", {{"0000:03:00.0", -1, 4}}}});
  ASSERT_EQ(t.gpus.size(), 2u);
  EXPECT_EQ(t.gpus[0].pci.bus_id, "0000:03:00.0");
  EXPECT_EQ(t.gpus[0].name, "H200");
  EXPECT_EQ(t.gpus[0].to_gpus[1], (Link{LinkType::nvlink, 4}));
  EXPECT_EQ(to_string(t.gpus[1].to_gpus[0]), "NV4");
  EXPECT_EQ(t.gpus[0].nvlink_peers.at(0).gpu_index, 1);
}

TEST(TopoHelpers, NvswitchLinksConnectEveryPair) {
  Topology t = two_gpu_topology();
  detail::finish_devices(t, {{"0000:03:00.0", "", {{"0000:c1:00.0", -1, 18}}},
                             {"0000:04:00.0", "", {{"0000:c2:00.0", -1, 18}}}});
  EXPECT_EQ(to_string(t.gpus[0].to_gpus[1]), "NV18");
  EXPECT_EQ(t.gpus[0].nvlink_peers.at(0).gpu_index, -1);
}

TEST(TopoHelpers, WithoutNvmlPairsArePciClasses) {
  Topology t = two_gpu_topology();
  detail::finish_devices(t, {});
  EXPECT_EQ(to_string(t.gpus[0].to_gpus[1]), "PIX");
  EXPECT_EQ(to_string(t.gpus[0].to_gpus[0]), "X");
}

// ---- placement without GPUs --------------------------------------------------------------

Topology nic_only_topology() {
  Topology t;
  t.numa_nodes = {{0, 1 << 30, {0, 1}}, {1, 1 << 30, {2, 3}}};
  for (int k = 0; k < 3; ++k) {
    Nic n;
    n.pci = {str_cat("0000:", k, "1:00.0"), {}, str_cat("hb", k), k == 2 ? 1 : 0};
    n.name = str_cat("eth", k);
    n.interfaces = {n.name};
    n.state = k == 1 ? LinkState::down : LinkState::up;
    t.nics.push_back(n);
    t.net_interfaces.push_back(
        {n.name, k == 1 ? "down" : "up", 100000, 1500, "", n.pci.bus_id, {}});
  }
  detail::finish_devices(t, {});
  return t;
}

TEST(TopoPlacement, NoGpuRoundRobinSkipsDownNics) {
  Topology t = nic_only_topology();
  const char* expected_if[] = {"eth0", "eth2", "eth0", "eth2"};
  const int expected_numa[] = {0, 1, 0, 1};
  for (int r = 0; r < 4; ++r) {
    PlacementChoice c = choose_placement(t, r, 4, "");
    EXPECT_EQ(c.ifname, expected_if[r]) << "local rank " << r;
    EXPECT_EQ(c.numa_node, expected_numa[r]) << "local rank " << r;
    EXPECT_EQ(c.gpu_index, -1);
    EXPECT_NE(c.reason.find("round-robin"), std::string::npos) << c.reason;
  }
}

TEST(TopoPlacement, OverrideWinsAndIsExplained) {
  Topology t = nic_only_topology();
  PlacementChoice c = choose_placement(t, 0, 2, "ib7");
  EXPECT_EQ(c.ifname, "ib7");
  EXPECT_NE(c.reason.find("RINGLET_SOCKET_IFNAME=ib7"), std::string::npos) << c.reason;
}

TEST(TopoPlacement, EmptyTopologyChoosesNothing) {
  PlacementChoice c = choose_placement(Topology{}, 0, 1, "");
  EXPECT_EQ(c.nic_index, -1);
  EXPECT_EQ(c.numa_node, -1);
  EXPECT_TRUE(c.ifname.empty());
  EXPECT_FALSE(c.reason.empty());
  EXPECT_THROW(choose_placement(Topology{}, 2, 2, ""), Error);
}

// ---- pinning ------------------------------------------------------------------------------

std::set<int> current_affinity() {
  cpu_set_t set;
  CPU_ZERO(&set);
  EXPECT_EQ(::sched_getaffinity(0, sizeof(set), &set), 0);
  std::set<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.insert(c);
  }
  return cpus;
}

TEST(TopoPin, PinsThreadToNodeCpus) {
  Topology t = load_topology();
  ASSERT_FALSE(t.numa_nodes.empty());
  const NumaNode& node = t.numa_nodes.front();
  std::set<int> got, before, after_unknown;
  std::thread worker([&] {  // a thread of its own: the test's main thread stays unpinned
    before = current_affinity();
    pin_current_thread_to_numa(t, 12345);
    after_unknown = current_affinity();
    pin_current_thread_to_numa(t, node.os_index);
    got = current_affinity();
  });
  worker.join();
  EXPECT_EQ(after_unknown, before);
  EXPECT_EQ(got, std::set<int>(node.cpus.begin(), node.cpus.end()));
}

// ---- hwloc XML fixtures -------------------------------------------------------------------

#define SKIP_WITHOUT_HWLOC()                                                                    \
  do {                                                                                          \
    if (!RINGLET_HAVE_HWLOC) GTEST_SKIP() << "ringlet was built without hwloc: no XML loading"; \
  } while (false)

TEST(TopoXml, WithoutHwlocXmlIsAClearError) {
  if (RINGLET_HAVE_HWLOC) GTEST_SKIP() << "built with hwloc";
  try {
    load_topology_xml(data_dir() + "/dgx8.xml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("without hwloc"), std::string::npos) << e.what();
  }
}

TEST(TopoXml, MissingFileIsInvalidArgument) {
  SKIP_WITHOUT_HWLOC();
  try {
    load_topology_xml(data_dir() + "/no-such-file.xml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
  }
}

// The fixture's layout: GPU g sits in socket g/4, behind root complex g/2 (a PCIe switch with
// GPUs 2k, 2k+1 and NIC k). Expected classes follow from that alone.
std::string dgx8_expected(int socket_a, int complex_a, int socket_b, int complex_b) {
  if (socket_a != socket_b) return "SYS";
  if (complex_a != complex_b) return "NODE";
  return "PIX";
}

TEST(TopoXml, Dgx8CountsDevicesAndPathClasses) {
  SKIP_WITHOUT_HWLOC();
  Topology t = load_topology_xml(data_dir() + "/dgx8.xml");
  EXPECT_EQ(t.backend, "hwloc-xml");
  EXPECT_EQ(t.hostname, "dgx8-fixture");
  EXPECT_EQ(t.packages.size(), 2u);
  EXPECT_EQ(t.cores, 16);
  EXPECT_EQ(t.pus, 32);
  ASSERT_EQ(t.numa_nodes.size(), 2u);
  EXPECT_EQ(t.numa_nodes[1].memory_bytes, 256ull << 30);
  EXPECT_EQ(format_cpu_list(t.numa_nodes[1].cpus), "16-31");
  ASSERT_EQ(t.gpus.size(), 8u);
  ASSERT_EQ(t.nics.size(), 4u);
  const char* gpu_bus[] = {"0000:13:00.0", "0000:14:00.0", "0000:33:00.0", "0000:34:00.0",
                           "0000:93:00.0", "0000:94:00.0", "0000:b3:00.0", "0000:b4:00.0"};
  for (int g = 0; g < 8; ++g) {
    const Gpu& gpu = t.gpus[static_cast<std::size_t>(g)];
    EXPECT_EQ(gpu.index, g);
    EXPECT_EQ(gpu.pci.bus_id, gpu_bus[g]);
    EXPECT_EQ(gpu.name, "GH100 [H200 SXM 141GB]");
    EXPECT_EQ(gpu.pci.numa_node, g / 4);
    EXPECT_EQ(format_cpu_list(gpu.cpus), g < 4 ? "0-15" : "16-31");
    for (int h = 0; h < 8; ++h) {
      std::string want = g == h ? "X" : dgx8_expected(g / 4, g / 2, h / 4, h / 2);
      EXPECT_EQ(to_string(gpu.to_gpus[static_cast<std::size_t>(h)]), want)
          << "GPU" << g << "-GPU" << h;
    }
    for (int k = 0; k < 4; ++k) {
      EXPECT_EQ(to_string(gpu.to_nics[static_cast<std::size_t>(k)]),
                dgx8_expected(g / 4, g / 2, k / 2, k))
          << "GPU" << g << "-NIC" << k;
    }
  }
  for (int k = 0; k < 4; ++k) {
    const Nic& nic = t.nics[static_cast<std::size_t>(k)];
    EXPECT_EQ(nic.name, str_cat("mlx5_", k));
    EXPECT_EQ(nic.interfaces, (std::vector<std::string>{str_cat("ib", k)}));
    EXPECT_EQ(nic.state, LinkState::up);
    EXPECT_EQ(nic.pci.numa_node, k / 2);
  }
  // The cases named in issue 4.
  EXPECT_EQ(to_string(t.gpus[0].to_gpus[1]), "PIX");
  EXPECT_EQ(to_string(t.gpus[0].to_gpus[2]), "NODE");
  EXPECT_EQ(to_string(t.gpus[0].to_gpus[4]), "SYS");
  EXPECT_EQ(to_string(t.gpus[0].to_nics[0]), "PIX");
  ASSERT_EQ(t.rdma_devices.size(), 4u);
  EXPECT_EQ(t.rdma_devices[2].ports.at(0).state, "ACTIVE");
  EXPECT_EQ(t.rdma_devices[2].ports.at(0).link_layer, "InfiniBand");
}

TEST(TopoXml, Dgx8PlacementIsOneRailPerGpuPair) {
  SKIP_WITHOUT_HWLOC();
  Topology t = load_topology_xml(data_dir() + "/dgx8.xml");
  for (int r = 0; r < 8; ++r) {
    PlacementChoice c = choose_placement(t, r, 8, "");
    EXPECT_EQ(c.gpu_index, r);
    EXPECT_EQ(c.nic_index, r / 2) << c.reason;
    EXPECT_EQ(c.ifname, str_cat("ib", r / 2));
    EXPECT_EQ(c.rdma_device, str_cat("mlx5_", r / 2));
    EXPECT_EQ(c.numa_node, r / 4);
    EXPECT_NE(c.reason.find(str_cat("GPU", r)), std::string::npos) << c.reason;
    EXPECT_NE(c.reason.find("PIX"), std::string::npos) << c.reason;
  }
  PlacementChoice o = choose_placement(t, 5, 8, "eth9");
  EXPECT_EQ(o.ifname, "eth9");
  EXPECT_EQ(o.numa_node, 1);
}

TEST(TopoXml, Cascade4PathClassesAndDownNic) {
  SKIP_WITHOUT_HWLOC();
  Topology t = load_topology_xml(data_dir() + "/cascade4.xml");
  ASSERT_EQ(t.gpus.size(), 4u);
  ASSERT_EQ(t.nics.size(), 3u);
  auto gg = [&](int a, int b) {
    return to_string(t.gpus[static_cast<std::size_t>(a)].to_gpus[static_cast<std::size_t>(b)]);
  };
  auto gn = [&](int a, int k) {
    return to_string(t.gpus[static_cast<std::size_t>(a)].to_nics[static_cast<std::size_t>(k)]);
  };
  EXPECT_EQ(gg(0, 1), "PIX");
  EXPECT_EQ(gg(0, 2), "PXB");
  EXPECT_EQ(gg(0, 3), "PHB");
  EXPECT_EQ(gg(2, 3), "PHB");
  EXPECT_EQ(gn(2, 0), "PIX");
  EXPECT_EQ(gn(0, 0), "PXB");
  EXPECT_EQ(gn(3, 1), "PHB");
  EXPECT_EQ(gn(0, 2), "NODE");
  EXPECT_EQ(to_string(t.nics[2].to_nics[0]), "NODE");
  EXPECT_EQ(t.nics[0].state, LinkState::down);
  EXPECT_EQ(t.nics[1].state, LinkState::up);
  EXPECT_EQ(t.nics[2].name, "eth2");
  // GPU2's nearest NIC (NIC0, PIX) is down: it takes NIC1 (PHB) rather than NIC2 (NODE).
  PlacementChoice c = choose_placement(t, 2, 4, "");
  EXPECT_EQ(c.nic_index, 1) << c.reason;
  EXPECT_EQ(c.rdma_device, "mlx5_1");
}

TEST(TopoXml, MatrixHasNvidiaSmiLayout) {
  SKIP_WITHOUT_HWLOC();
  std::string m = format_matrix(load_topology_xml(data_dir() + "/dgx8.xml"));
  std::string header = m.substr(0, m.find('\n'));
  EXPECT_NE(header.find("GPU0"), std::string::npos);
  EXPECT_NE(header.find("NIC3"), std::string::npos);
  EXPECT_NE(header.find("CPU Affinity"), std::string::npos);
  EXPECT_NE(header.find("NUMA Affinity"), std::string::npos);
  EXPECT_NE(
      m.find("\nGPU0    X       PIX     NODE    NODE    SYS     SYS     SYS     SYS     PIX     "
             "NODE    SYS     SYS     0-15            0\n"),
      std::string::npos)
      << m;
  EXPECT_NE(m.find("Legend:"), std::string::npos);
  EXPECT_NE(m.find("NIC0: mlx5_0"), std::string::npos);
}

// ---- a minimal JSON reader, to check that ringlet-topo --json parses -----------------------

struct Json {
  enum class Kind { null, boolean, number, string, array, object } kind = Kind::null;
  double number = 0;
  std::string text;
  std::vector<Json> items;
  std::map<std::string, Json> members;
  std::vector<std::string> keys;  // in document order
};

class JsonReader {
 public:
  explicit JsonReader(const std::string& s) : s_(s) {}
  Json document() {
    Json v = value();
    space();
    if (pos_ != s_.size()) fail("trailing text");
    return v;
  }
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  void fail(const std::string& why) {
    if (error_.empty()) error_ = str_cat(why, " at offset ", pos_);
    pos_ = s_.size();
  }
  void space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool eat(char c) {
    space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  std::string string_literal() {
    std::string out;
    if (!eat('"')) fail("expected string");
    while (pos_ < s_.size() && s_[pos_] != '"') {
      if (s_[pos_] == '\\') {
        ++pos_;
        if (pos_ < s_.size() && s_[pos_] == 'u') pos_ += 4;
      }
      if (pos_ < s_.size() && static_cast<unsigned char>(s_[pos_]) < 0x20)
        fail("control character");
      if (pos_ < s_.size()) out += s_[pos_++];
    }
    if (pos_ >= s_.size()) fail("unterminated string");
    ++pos_;
    return out;
  }
  Json value() {
    Json v;
    space();
    if (pos_ >= s_.size()) {
      fail("unexpected end");
      return v;
    }
    char c = s_[pos_];
    if (c == '{') {
      ++pos_;
      v.kind = Json::Kind::object;
      if (eat('}')) return v;
      do {
        std::string key = string_literal();
        if (!eat(':')) fail("expected ':'");
        if (v.members.count(key)) fail("duplicate key " + key);
        v.keys.push_back(key);
        v.members[key] = value();
      } while (eat(','));
      if (!eat('}')) fail("expected '}'");
    } else if (c == '[') {
      ++pos_;
      v.kind = Json::Kind::array;
      if (eat(']')) return v;
      do v.items.push_back(value());
      while (eat(','));
      if (!eat(']')) fail("expected ']'");
    } else if (c == '"') {
      v.kind = Json::Kind::string;
      v.text = string_literal();
    } else if (s_.compare(pos_, 4, "true") == 0 || s_.compare(pos_, 5, "false") == 0) {
      v.kind = Json::Kind::boolean;
      pos_ += s_[pos_] == 't' ? 4 : 5;
    } else if (s_.compare(pos_, 4, "null") == 0) {
      pos_ += 4;
    } else {
      char* end = nullptr;
      v.number = std::strtod(s_.c_str() + pos_, &end);
      if (end == s_.c_str() + pos_) fail("unexpected character");
      v.kind = Json::Kind::number;
      pos_ = static_cast<std::size_t>(end - s_.c_str());
    }
    return v;
  }
  const std::string& s_;
  std::size_t pos_ = 0;
  std::string error_;
};

struct ToolRun {
  int status = -1;
  std::string out;
};

ToolRun run_tool(const std::string& args) {
  const char* tool = std::getenv("RINGLET_TOPO_TOOL");
  ToolRun r;
  if (tool == nullptr) return r;
  std::string cmd = str_cat("timeout 20 '", tool, "' ", args, " 2>&1");
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

#define SKIP_WITHOUT_TOOL()                                                                     \
  do {                                                                                          \
    if (std::getenv("RINGLET_TOPO_TOOL") == nullptr) GTEST_SKIP() << "RINGLET_TOPO_TOOL unset"; \
  } while (false)

void expect_schema(const Json& doc) {
  ASSERT_EQ(doc.kind, Json::Kind::object);
  const std::vector<std::string> keys = {
      "schema_version", "backend", "source", "machine", "os",   "numa_nodes",     "packages",
      "cores",          "pus",     "caches", "gpus",    "nics", "net_interfaces", "rdma_devices"};
  EXPECT_EQ(doc.keys, keys);
  ASSERT_TRUE(doc.members.count("schema_version"));
  EXPECT_EQ(doc.members.at("schema_version").number, 1);
  for (const char* k :
       {"numa_nodes", "packages", "caches", "gpus", "nics", "net_interfaces", "rdma_devices"}) {
    EXPECT_EQ(doc.members.at(k).kind, Json::Kind::array) << k;
  }
  for (const Json& g : doc.members.at("gpus").items) {
    for (const char* k :
         {"index", "name", "bus_id", "numa_node", "cpuset", "nvlink_peers", "paths"}) {
      EXPECT_TRUE(g.members.count(k)) << k;
    }
  }
}

TEST(TopoTool, JsonParsesAndMatchesMachine) {
  SKIP_WITHOUT_TOOL();
  ToolRun r = run_tool("--json");
  ASSERT_EQ(r.status, 0) << r.out;
  JsonReader reader(r.out);
  Json doc = reader.document();
  ASSERT_TRUE(reader.ok()) << reader.error() << "\n" << r.out;
  expect_schema(doc);
  ProcCounts proc = read_proc_cpuinfo();
  EXPECT_EQ(doc.members.at("pus").number, proc.processors);
  EXPECT_EQ(doc.members.at("cores").number, proc.cores);
  EXPECT_EQ(static_cast<int>(doc.members.at("numa_nodes").items.size()), count_numa_dirs());
  EXPECT_EQ(doc.members.at("backend").text, RINGLET_HAVE_HWLOC ? "hwloc" : "sysfs");
}

TEST(TopoTool, XmlFixture) {
  SKIP_WITHOUT_TOOL();
  ToolRun r = run_tool(str_cat("--json --xml '", data_dir(), "/dgx8.xml'"));
  if (!RINGLET_HAVE_HWLOC) {
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find("built without hwloc"), std::string::npos) << r.out;
    GTEST_SKIP() << "ringlet was built without hwloc: --xml is an error, as checked";
  }
  ASSERT_EQ(r.status, 0) << r.out;
  JsonReader reader(r.out);
  Json doc = reader.document();
  ASSERT_TRUE(reader.ok()) << reader.error();
  expect_schema(doc);
  ASSERT_EQ(doc.members.at("gpus").items.size(), 8u);
  EXPECT_EQ(doc.members.at("nics").items.size(), 4u);
  const Json& gpu0 = doc.members.at("gpus").items[0];
  EXPECT_EQ(gpu0.members.at("bus_id").text, "0000:13:00.0");
  EXPECT_EQ(gpu0.members.at("paths").members.at("GPU1").text, "PIX");
  EXPECT_EQ(gpu0.members.at("paths").members.at("GPU4").text, "SYS");
  EXPECT_EQ(gpu0.members.at("paths").members.at("NIC0").text, "PIX");
  ToolRun m = run_tool(str_cat("--matrix --xml '", data_dir(), "/dgx8.xml'"));
  EXPECT_EQ(m.status, 0);
  EXPECT_NE(m.out.find("NUMA Affinity"), std::string::npos) << m.out;
}

TEST(TopoTool, ExitCodes) {
  SKIP_WITHOUT_TOOL();
  EXPECT_EQ(run_tool("--bogus").status, 2);
  EXPECT_EQ(run_tool("--xml").status, 2);
  EXPECT_EQ(run_tool("--json --matrix").status, 2);
  EXPECT_EQ(run_tool("--xml /nonexistent/topo.xml").status, 1);
  ToolRun r = run_tool("");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find(RINGLET_HAVE_HWLOC ? "backend hwloc" : "backend sysfs"), std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace ringlet::topo
