// SPDX-License-Identifier: Apache-2.0
// Backend-independent topology code: path classes, device numbering, placement and pinning.
#include "src/topo/topology.hpp"

#include <sched.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>

#include "ringlet_config.hpp"
#include "src/common/check.hpp"
#include "src/common/log.hpp"
#include "src/topo/detail.hpp"

namespace ringlet::topo {

std::string to_string(const Link& link) {
  switch (link.type) {
    case LinkType::self:
      return "X";
    case LinkType::nvlink:
      return str_cat("NV", link.nvlinks);
    case LinkType::pix:
      return "PIX";
    case LinkType::pxb:
      return "PXB";
    case LinkType::phb:
      return "PHB";
    case LinkType::node:
      return "NODE";
    case LinkType::sys:
      return "SYS";
    case LinkType::unknown:
      return "?";
  }
  return "?";
}

Link classify_pci_path(const PciLocation& a, const PciLocation& b) {
  if (a.bus_id.empty() || b.bus_id.empty()) return {LinkType::unknown, 0};
  // Lowest common bridge: bridges[i] on a's side, bridges[j] on b's side.
  for (std::size_t i = 0; i < a.bridges.size(); ++i) {
    auto it = std::find(b.bridges.begin(), b.bridges.end(), a.bridges[i]);
    if (it == b.bridges.end()) continue;
    auto j = static_cast<std::size_t>(it - b.bridges.begin());
    // Below the common bridge each side crosses i (resp. j) bridges: a switch's downstream
    // port alone (1) keeps the pair behind one switch; more means a cascade of switches.
    return {std::max(i, j) <= 1 ? LinkType::pix : LinkType::pxb, 0};
  }
  if (!a.host_bridge.empty() && a.host_bridge == b.host_bridge) return {LinkType::phb, 0};
  if (a.numa_node >= 0 && b.numa_node >= 0 && a.numa_node != b.numa_node) {
    return {LinkType::sys, 0};
  }
  return {LinkType::node, 0};
}

std::string format_cpu_list(const std::vector<int>& cpus) {
  std::vector<int> sorted = cpus;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::string out;
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(sorted[i]);
    if (j > i) out += str_cat('-', sorted[j]);
    i = j + 1;
  }
  return out;
}

namespace detail {

std::string normalize_bus_id(const std::string& bus_id) {
  std::string s;
  for (char c : bus_id) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // Domain: NVML prints 8 hex digits, sysfs and hwloc 4.
  auto colon = s.find(':');
  if (colon != std::string::npos && colon > 4 && s.find(':', colon + 1) != std::string::npos) {
    s = s.substr(colon - 4);
  }
  return s;
}

std::vector<int> parse_cpu_list(const std::string& list) {
  std::vector<int> cpus;
  std::size_t pos = 0;
  while (pos < list.size()) {
    std::size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    std::string part = list.substr(pos, end - pos);
    while (!part.empty() && std::isspace(static_cast<unsigned char>(part.back()))) part.pop_back();
    if (!part.empty()) {
      char* rest = nullptr;
      long lo = std::strtol(part.c_str(), &rest, 10);
      long hi = lo;
      if (rest == part.c_str()) return {};
      if (*rest == '-') {
        char* rest2 = nullptr;
        hi = std::strtol(rest + 1, &rest2, 10);
        if (rest2 == rest + 1 || *rest2 != '\0') return {};
      } else if (*rest != '\0') {
        return {};
      }
      if (lo < 0 || hi < lo || hi > (1 << 20)) return {};
      for (long c = lo; c <= hi; ++c) cpus.push_back(static_cast<int>(c));
    }
    pos = end + 1;
  }
  return cpus;
}

void finish_devices(Topology& topo, const std::vector<NvmlGpu>& nvml) {
  auto by_bus = [](const auto& x, const auto& y) { return x.pci.bus_id < y.pci.bus_id; };
  std::sort(topo.gpus.begin(), topo.gpus.end(), by_bus);
  std::sort(topo.nics.begin(), topo.nics.end(), by_bus);
  std::map<std::string, int> gpu_of_bus;
  for (std::size_t i = 0; i < topo.gpus.size(); ++i) {
    topo.gpus[i].index = static_cast<int>(i);
    gpu_of_bus[topo.gpus[i].pci.bus_id] = static_cast<int>(i);
  }
  for (std::size_t i = 0; i < topo.nics.size(); ++i) topo.nics[i].index = static_cast<int>(i);

  // NVML: names and NVLink peers. Links to a non-GPU end (NVSwitch) connect every GPU that
  // has such links: each pair then gets the smaller of the two switch link counts.
  std::vector<int> switch_links(topo.gpus.size(), 0);
  for (const NvmlGpu& n : nvml) {
    auto it = gpu_of_bus.find(n.bus_id);
    if (it == gpu_of_bus.end()) continue;
    Gpu& g = topo.gpus[static_cast<std::size_t>(it->second)];
    if (!n.name.empty()) g.name = n.name;
    g.nvlink_peers.clear();
    for (NvlinkPeer p : n.peers) {
      auto peer = gpu_of_bus.find(p.bus_id);
      p.gpu_index = peer == gpu_of_bus.end() ? -1 : peer->second;
      if (p.gpu_index < 0) switch_links[static_cast<std::size_t>(g.index)] += p.links;
      g.nvlink_peers.push_back(p);
    }
  }

  const std::size_t ng = topo.gpus.size();
  const std::size_t nn = topo.nics.size();
  for (std::size_t i = 0; i < ng; ++i) {
    Gpu& g = topo.gpus[i];
    g.to_gpus.assign(ng, Link{});
    g.to_nics.assign(nn, Link{});
    for (std::size_t j = 0; j < ng; ++j) {
      if (i == j) {
        g.to_gpus[j] = {LinkType::self, 0};
        continue;
      }
      int links = 0;
      for (const NvlinkPeer& p : g.nvlink_peers) {
        if (p.gpu_index == static_cast<int>(j)) links += p.links;
      }
      if (links == 0) links = std::min(switch_links[i], switch_links[j]);
      g.to_gpus[j] =
          links > 0 ? Link{LinkType::nvlink, links} : classify_pci_path(g.pci, topo.gpus[j].pci);
    }
    for (std::size_t k = 0; k < nn; ++k) g.to_nics[k] = classify_pci_path(g.pci, topo.nics[k].pci);
  }
  for (std::size_t k = 0; k < nn; ++k) {
    Nic& n = topo.nics[k];
    n.to_gpus.assign(ng, Link{});
    for (std::size_t i = 0; i < ng; ++i) n.to_gpus[i] = topo.gpus[i].to_nics[k];
    n.to_nics.assign(nn, Link{});
    for (std::size_t m = 0; m < nn; ++m) {
      n.to_nics[m] = m == k ? Link{LinkType::self, 0} : classify_pci_path(n.pci, topo.nics[m].pci);
    }
  }
}

void attach_live_nic_state(Topology& topo) {
  for (Nic& nic : topo.nics) {
    bool any_up = false;
    bool any_known = false;
    for (const NetInterface& i : topo.net_interfaces) {
      if (i.bus_id != nic.pci.bus_id) continue;
      if (std::find(nic.interfaces.begin(), nic.interfaces.end(), i.name) == nic.interfaces.end()) {
        nic.interfaces.push_back(i.name);
      }
      any_known = true;
      any_up = any_up || i.state == "up";
    }
    for (const RdmaDevice& d : topo.rdma_devices) {
      if (d.bus_id != nic.pci.bus_id) continue;
      if (std::find(nic.rdma_devices.begin(), nic.rdma_devices.end(), d.name) ==
          nic.rdma_devices.end()) {
        nic.rdma_devices.push_back(d.name);
      }
      for (const RdmaPort& p : d.ports) {
        any_known = true;
        any_up = any_up || p.state == "ACTIVE";
      }
    }
    std::sort(nic.interfaces.begin(), nic.interfaces.end());
    std::sort(nic.rdma_devices.begin(), nic.rdma_devices.end());
    if (any_known) nic.state = any_up ? LinkState::up : LinkState::down;
    if (!nic.rdma_devices.empty()) {
      nic.name = nic.rdma_devices.front();
    } else if (!nic.interfaces.empty()) {
      nic.name = nic.interfaces.front();
    }
  }
}

}  // namespace detail

Topology load_topology() {
#if RINGLET_HAVE_HWLOC
  return detail::load_hwloc("");
#else
  return load_topology_sysfs();
#endif
}

const Topology* machine_topology() noexcept {
  static const std::optional<Topology> topology = []() -> std::optional<Topology> {
    try {
      return load_topology();
    } catch (const std::exception& e) {
      RINGLET_LOG(info, "topology probe failed (", e.what(), "); placement uses defaults");
      return std::nullopt;
    }
  }();
  return topology ? &*topology : nullptr;
}

Topology load_topology_xml(const std::string& path) {
#if RINGLET_HAVE_HWLOC
  return detail::load_hwloc(path);
#else
  throw Error(ErrorCode::invalid_argument,
              str_cat("ringlet was built without hwloc: cannot read the XML topology ", path));
#endif
}

namespace {

int rank_order(LinkType t) { return static_cast<int>(t); }

const NumaNode* find_numa(const Topology& topo, int os_index) {
  for (const NumaNode& n : topo.numa_nodes) {
    if (n.os_index == os_index) return &n;
  }
  return nullptr;
}

// The first interface of `nic` whose state is up, else its first interface.
std::string pick_interface(const Topology& topo, const Nic& nic) {
  for (const std::string& name : nic.interfaces) {
    for (const NetInterface& i : topo.net_interfaces) {
      if (i.name == name && i.state == "up") return name;
    }
  }
  return nic.interfaces.empty() ? std::string() : nic.interfaces.front();
}

}  // namespace

PlacementChoice choose_placement(const Topology& topo, int local_rank, int local_size,
                                 std::string_view ifname_override) {
  RINGLET_CHECK(local_rank >= 0 && local_size > 0 && local_rank < local_size, "local rank ",
                local_rank, " outside a node of ", local_size, " ranks");
  PlacementChoice c;
  std::vector<int> usable;
  for (const Nic& n : topo.nics) {
    if (n.state != LinkState::down) usable.push_back(n.index);
  }
  const std::size_t lr = static_cast<std::size_t>(local_rank);
  std::string why;
  if (!topo.gpus.empty()) {
    const Gpu& g = topo.gpus[lr % topo.gpus.size()];
    c.gpu_index = g.index;
    c.numa_node = g.pci.numa_node;
    if (!usable.empty()) {
      int best = rank_order(LinkType::unknown) + 1;
      std::vector<int> tied;
      for (int k : usable) {
        int r = rank_order(g.to_nics[static_cast<std::size_t>(k)].type);
        if (r < best) {
          best = r;
          tied.clear();
        }
        if (r == best) tied.push_back(k);
      }
      // Several equally near NICs: the GPUs that share them take turns.
      std::size_t turn = 0;
      for (std::size_t i = 0; i < static_cast<std::size_t>(g.index); ++i) {
        const Gpu& other = topo.gpus[i];
        int r = rank_order(other.to_nics[static_cast<std::size_t>(tied.front())].type);
        if (r == best) ++turn;
      }
      c.nic_index = tied[turn % tied.size()];
      const Nic& n = topo.nics[static_cast<std::size_t>(c.nic_index)];
      why = str_cat("GPU", g.index, " (", g.pci.bus_id, ") is nearest NIC", n.index, " ", n.name,
                    " (", to_string(g.to_nics[static_cast<std::size_t>(c.nic_index)]), ", ",
                    tied.size(), " as near)");
    } else {
      why = str_cat("GPU", g.index, " (", g.pci.bus_id, "); no NIC that is not down");
    }
  } else if (!usable.empty()) {
    c.nic_index = usable[lr % usable.size()];
    const Nic& n = topo.nics[static_cast<std::size_t>(c.nic_index)];
    c.numa_node = n.pci.numa_node;
    why = str_cat("no GPU; NIC", n.index, " ", n.name, " round-robin (local rank ", local_rank,
                  " of ", local_size, ", ", usable.size(), " NICs up)");
  } else {
    why = "no GPU and no NIC that is not down";
  }
  if (c.nic_index >= 0) {
    const Nic& n = topo.nics[static_cast<std::size_t>(c.nic_index)];
    c.ifname = pick_interface(topo, n);
    if (!n.rdma_devices.empty()) c.rdma_device = n.rdma_devices.front();
    if (c.numa_node < 0) c.numa_node = n.pci.numa_node;
  }
  if (!ifname_override.empty()) {
    c.ifname = std::string(ifname_override);
    why += str_cat("; RINGLET_SOCKET_IFNAME=", ifname_override, " overrides the interface");
  }
  if (c.numa_node >= 0 && find_numa(topo, c.numa_node) == nullptr) c.numa_node = -1;
  c.reason =
      str_cat("local rank ", local_rank, "/", local_size, ": ", why, "; interface ",
              c.ifname.empty() ? std::string("(transport default)") : c.ifname, "; NUMA node ",
              c.numa_node < 0 ? std::string("(none)") : std::to_string(c.numa_node));
  return c;
}

void pin_current_thread_to_numa(const Topology& topo, int numa_node) {
  const NumaNode* node = find_numa(topo, numa_node);
  if (node == nullptr || node->cpus.empty()) {
    RINGLET_LOG(info, "topology: NUMA node ", numa_node, " unknown; thread not pinned");
    return;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : node->cpus) {
    if (cpu >= 0 && cpu < CPU_SETSIZE) CPU_SET(cpu, &set);
  }
  if (::sched_setaffinity(0, sizeof(set), &set) != 0) {
    RINGLET_LOG(warn, "topology: pinning to NUMA node ", numa_node, " (CPUs ",
                format_cpu_list(node->cpus), ") failed: ", std::strerror(errno));
    return;
  }
  RINGLET_LOG(info, "topology: thread pinned to NUMA node ", numa_node, " (CPUs ",
              format_cpu_list(node->cpus), ")");
}

}  // namespace ringlet::topo
