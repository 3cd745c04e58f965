// SPDX-License-Identifier: Apache-2.0
// GPU machine check of src/topo: every NVIDIA GPU on the PCI bus appears with its bus id,
// NUMA node and local CPUs (skipped where no NVIDIA GPU is visible).
#include <dirent.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "src/topo/topology.hpp"

namespace ringlet::topo {
namespace {

struct SysGpu {
  std::string bus_id;
  int numa_node = -1;
};

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

// NVIDIA display or 3D controllers as the kernel lists them, read independently of src/topo.
std::vector<SysGpu> sysfs_nvidia_gpus() {
  std::vector<SysGpu> out;
  const std::string base = "/sys/bus/pci/devices/";
  DIR* d = ::opendir(base.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name[0] == '.') continue;
    unsigned long vendor = std::strtoul(first_line(base + name + "/vendor").c_str(), nullptr, 16);
    unsigned long cls = std::strtoul(first_line(base + name + "/class").c_str(), nullptr, 16);
    if (vendor != 0x10de || ((cls >> 8) != 0x0302 && (cls >> 8) != 0x0300)) continue;
    out.push_back({name, std::atoi(first_line(base + name + "/numa_node").c_str())});
  }
  ::closedir(d);
  return out;
}

void expect_gpus_found(const Topology& t, const std::vector<SysGpu>& expected) {
  ASSERT_EQ(t.gpus.size(), expected.size()) << t.backend;
  for (const SysGpu& s : expected) {
    const Gpu* found = nullptr;
    for (const Gpu& g : t.gpus) {
      if (g.pci.bus_id == s.bus_id) found = &g;
    }
    ASSERT_NE(found, nullptr) << s.bus_id << " missing (" << t.backend << ")";
    EXPECT_FALSE(found->name.empty());
    EXPECT_FALSE(found->cpus.empty()) << s.bus_id;
    if (s.numa_node >= 0) {
      EXPECT_EQ(found->pci.numa_node, s.numa_node) << s.bus_id << " (" << t.backend << ")";
    } else {
      EXPECT_GE(found->pci.numa_node, t.numa_nodes.size() == 1 ? 0 : -1) << s.bus_id;
    }
    std::printf("[ info ] %s: GPU%d %s bus %s NUMA %d CPUs %s\n", t.backend.c_str(), found->index,
                found->name.c_str(), found->pci.bus_id.c_str(), found->pci.numa_node,
                format_cpu_list(found->cpus).c_str());
  }
}

TEST(TopoGpu, EveryNvidiaGpuAppearsWithBusIdAndNumaNode) {
  std::vector<SysGpu> expected = sysfs_nvidia_gpus();
  if (expected.empty()) GTEST_SKIP() << "no NVIDIA GPU visible on the PCI bus";
  expect_gpus_found(load_topology(), expected);
  expect_gpus_found(load_topology_sysfs(), expected);
}

}  // namespace
}  // namespace ringlet::topo
