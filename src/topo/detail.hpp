// SPDX-License-Identifier: Apache-2.0
// Internal pieces shared by the topology backends (hwloc.cpp, sysfs.cpp, nvml.cpp).
#pragma once

#include <string>
#include <vector>

#include "ringlet_config.hpp"
#include "src/topo/topology.hpp"

namespace ringlet::topo::detail {

// "00000000:17:00.0" or "0000:17:00.0" (any case) -> "0000:17:00.0".
std::string normalize_bus_id(const std::string& bus_id);

// Parses "0-3,8,10-11" (sysfs cpulist); an empty or malformed list gives {}.
std::vector<int> parse_cpu_list(const std::string& list);

// The live network interfaces (getifaddrs + /sys/class/net) and RDMA devices
// (/sys/class/infiniband), sorted by name.
std::vector<NetInterface> read_net_interfaces();
std::vector<RdmaDevice> read_rdma_devices();

// Fills each NIC's interfaces, RDMA devices and state from the live lists, matched by bus id.
void attach_live_nic_state(Topology& topo);

// What NVML reports for one GPU.
struct NvmlGpu {
  std::string bus_id;  // normalized
  std::string name;
  std::vector<NvlinkPeer> peers;  // gpu_index not yet set
};

// Every GPU NVML sees, or {} when libnvidia-ml.so.1 is absent or fails (logged at info).
std::vector<NvmlGpu> query_nvml();

// After a backend filled gpus and nics (PCI locations, CPUs): sorts and numbers them, merges
// NVML names and NVLink peers, computes every to_gpus / to_nics link, and NIC states.
void finish_devices(Topology& topo, const std::vector<NvmlGpu>& nvml);

#if RINGLET_HAVE_HWLOC
// hwloc backend: the live machine when xml_path is empty, else that XML file.
Topology load_hwloc(const std::string& xml_path);
#endif

}  // namespace ringlet::topo::detail
