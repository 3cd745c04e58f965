// SPDX-License-Identifier: Apache-2.0
// The machine's topology (CPUs, memory, caches, PCI GPUs and NICs, network and RDMA devices),
// the nvidia-smi style path classes between devices, and the placement helpers built on them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringlet::topo {

// How two devices are connected, best first, in the classes `nvidia-smi topo -m` prints.
// A PCIe switch (its upstream port and downstream ports) counts as one bridge.
enum class LinkType : std::uint8_t {
  self,    // X: the device itself
  nvlink,  // NV#: # NVLink links
  pix,     // at most one PCIe bridge (devices behind one switch or root port)
  pxb,     // several PCIe bridges, no host bridge crossed
  phb,     // crosses a PCIe host bridge (same root complex)
  node,    // crosses host bridges within one NUMA node
  sys,     // crosses the inter-socket link (different NUMA nodes)
  unknown  // no PCI location known for one side
};

struct Link {
  LinkType type = LinkType::unknown;
  int nvlinks = 0;  // link count when type == nvlink
  friend bool operator==(const Link&, const Link&) = default;
};

// "X", "NV4", "PIX", "PXB", "PHB", "NODE", "SYS" or "?".
std::string to_string(const Link& link);

// Where a PCI device sits: its bus id, its upstream bridges nearest first (ids unique within
// one topology), its host bridge (root complex) and its NUMA node (-1: unknown).
struct PciLocation {
  std::string bus_id;  // "0000:17:00.0", lower case
  std::vector<std::string> bridges;
  std::string host_bridge;
  int numa_node = -1;
};

// The nvidia-smi path class between two PCI devices of one topology (never nvlink or self).
Link classify_pci_path(const PciLocation& a, const PciLocation& b);

struct NumaNode {
  int os_index = -1;
  std::uint64_t memory_bytes = 0;
  std::vector<int> cpus;  // OS indexes of its hardware threads
};

struct Package {
  int os_index = -1;
  std::string cpu_model;
  std::vector<int> cpus;
};

// One line per cache kind: "L2 unified 2 MiB x 2".
struct Cache {
  int level = 0;
  std::string type;  // "unified", "data" or "instruction"
  std::uint64_t size_bytes = 0;
  int line_bytes = 0;
  int count = 0;  // instances in the machine
};

struct NvlinkPeer {
  std::string bus_id;  // the remote end's PCI bus id
  int gpu_index = -1;  // the remote GPU, -1 when it is no GPU of this machine (an NVSwitch)
  int links = 0;
};

struct Gpu {
  int index = 0;  // in PCI bus id order, as CUDA_DEVICE_ORDER=PCI_BUS_ID and nvidia-smi
  std::string name;
  PciLocation pci;
  std::vector<int> cpus;  // the local CPU set
  std::vector<NvlinkPeer> nvlink_peers;
  std::vector<Link> to_gpus;  // indexed by Gpu::index
  std::vector<Link> to_nics;  // indexed by Nic::index
};

enum class LinkState : std::uint8_t { unknown, up, down };

struct Nic {
  int index = 0;      // in PCI bus id order
  std::string name;   // RDMA device name when there is one ("mlx5_0"), else the interface name
  std::string model;  // "[15b3:1021]" or the PCI database name
  PciLocation pci;
  std::vector<int> cpus;
  std::vector<std::string> interfaces;    // its network interfaces ("eth0", "ib0")
  std::vector<std::string> rdma_devices;  // its RDMA devices ("mlx5_0")
  LinkState state = LinkState::unknown;   // up when any of its interfaces or ports is up
  std::vector<Link> to_gpus;
  std::vector<Link> to_nics;
};

struct NetInterface {
  std::string name;
  std::string state;          // /sys/class/net/<if>/operstate: "up", "down", "unknown", ...
  long long speed_mbps = -1;  // -1: unknown
  int mtu = 0;
  std::string mac;
  std::string bus_id;  // PCI bus id of the device behind it; empty for virtual interfaces
  std::vector<std::string> addresses;  // "10.0.0.1/24", "fe80::1/64"
};

// One address of a network interface, as getifaddrs() lists it.
struct IfAddr {
  std::string name;     // the interface: "eth0"
  int family = 0;       // AF_INET or AF_INET6
  std::string address;  // numeric, without prefix or scope: "10.0.0.1", "fe80::1"
  int prefix = -1;      // netmask bits; -1 when there is no netmask
  bool up = false;      // IFF_UP
  bool loopback = false;
  bool link_local = false;  // IPv6 fe80::/10, unusable without a scope id
};

// Every IPv4 and IPv6 address of the live network interfaces, in getifaddrs() order: the one
// walk of getifaddrs that topology (NetInterface::addresses) and the TCP transport's interface
// selection share. Throws Error(transport) when getifaddrs fails.
std::vector<IfAddr> list_interface_addresses();

struct RdmaPort {
  int port = 0;
  std::string link_layer;  // "InfiniBand" or "Ethernet"
  std::string state;       // "ACTIVE", "DOWN", ...
  std::string rate;        // "200 Gb/sec (4X HDR)"
};

struct RdmaDevice {
  std::string name;
  std::string bus_id;
  std::vector<RdmaPort> ports;
};

struct Topology {
  std::string backend;  // "hwloc", "hwloc-xml" or "sysfs"
  std::string source;   // "live" or the XML file's path
  std::string hostname, architecture;
  std::string os_name, os_release, os_version;
  std::vector<NumaNode> numa_nodes;
  std::vector<Package> packages;
  int cores = 0;
  int pus = 0;  // hardware threads
  std::vector<Cache> caches;
  std::vector<Gpu> gpus;
  std::vector<Nic> nics;
  std::vector<NetInterface> net_interfaces;
  std::vector<RdmaDevice> rdma_devices;
};

// The live machine: through hwloc when ringlet was built with it, else /proc and /sys.
// Throws Error(transport) when the machine cannot be read.
Topology load_topology();

// load_topology(), probed once per process and shared (ranks that run as threads of one
// process share it); null when the probe failed (logged once at INFO).
const Topology* machine_topology() noexcept;

// The live machine through /proc and /sys only (always available).
Topology load_topology_sysfs();

// An hwloc XML export (lstopo --of xml). Throws Error(invalid_argument) when ringlet was built
// without hwloc or the file cannot be read.
Topology load_topology_xml(const std::string& path);

// "0-3,8,10-11".
std::string format_cpu_list(const std::vector<int>& cpus);

// What one local rank uses: its GPU, its NIC (one rail per local rank where there are several),
// the interface for sockets, and the NUMA node for its progress thread.
struct PlacementChoice {
  int gpu_index = -1;
  int nic_index = -1;       // into Topology::nics, -1 when none
  std::string ifname;       // network interface for sockets; empty: let the transport choose
  std::string rdma_device;  // RDMA device of that NIC; empty when none
  int numa_node = -1;       // -1: do not pin
  std::string reason;       // one line for RINGLET_DEBUG=INFO
};

// GPU local_rank's nearest NIC that is not down (ties spread over local ranks), or round-robin
// over the NICs that are not down when there is no GPU. The NUMA node is the GPU's, else the
// NIC's. A non-empty ifname_override (RINGLET_SOCKET_IFNAME) wins for the interface.
PlacementChoice choose_placement(const Topology& topo, int local_rank, int local_size,
                                 std::string_view ifname_override);

// Binds the calling thread to the CPUs of NUMA node `numa_node`. Best effort: an unknown node
// or a failing sched_setaffinity only logs a line.
void pin_current_thread_to_numa(const Topology& topo, int numa_node);

}  // namespace ringlet::topo
