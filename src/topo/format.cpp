// SPDX-License-Identifier: Apache-2.0
// The readable report, the nvidia-smi style GPU/NIC matrix, and the JSON document.
#include "src/topo/format.hpp"

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "src/common/str_cat.hpp"

namespace ringlet::topo {
namespace {

std::string human_bytes(std::uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf),
                v == static_cast<double>(static_cast<long long>(v)) ? "%.0f %s" : "%.1f %s", v,
                units[u]);
  return buf;
}

std::string state_name(LinkState s) {
  switch (s) {
    case LinkState::up:
      return "up";
    case LinkState::down:
      return "down";
    case LinkState::unknown:
      return "unknown";
  }
  return "unknown";
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const std::string& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

std::string pad(const std::string& s, std::size_t width) {
  return s.size() >= width ? s + " " : s + std::string(width - s.size(), ' ');
}

// JSON string literal.
std::string q(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string q_list(const std::vector<std::string>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + q(v[i]);
  return out + "]";
}

// {"GPU1": "PIX", "NIC0": "NODE"}: every other device, as in the matrix.
std::string paths_json(const std::vector<Link>& to_gpus, const std::vector<Link>& to_nics) {
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < to_gpus.size(); ++i) {
    if (to_gpus[i].type != LinkType::self)
      parts.push_back(str_cat(q(str_cat("GPU", i)), ": ", q(to_string(to_gpus[i]))));
  }
  for (std::size_t i = 0; i < to_nics.size(); ++i) {
    if (to_nics[i].type != LinkType::self)
      parts.push_back(str_cat(q(str_cat("NIC", i)), ": ", q(to_string(to_nics[i]))));
  }
  return "{" + join(parts, ", ") + "}";
}

}  // namespace

std::string format_report(const Topology& t) {
  std::ostringstream o;
  o << "ringlet-topo: backend " << t.backend
    << (t.backend == "sysfs" ? " (reduced /proc and /sys fallback; ringlet built without hwloc)"
                             : "")
    << ", source " << t.source << "\n";
  o << "Machine: " << (t.hostname.empty() ? "?" : t.hostname) << " ("
    << (t.architecture.empty() ? "?" : t.architecture) << ")\n";
  o << "OS: " << t.os_name << " " << t.os_release << " " << t.os_version << "\n";
  o << "CPUs: " << t.packages.size() << " package(s), " << t.cores << " core(s), " << t.pus
    << " hardware thread(s)\n";
  for (const Package& p : t.packages) {
    o << "  Package " << p.os_index << ": " << (p.cpu_model.empty() ? "?" : p.cpu_model)
      << ", CPUs " << format_cpu_list(p.cpus) << "\n";
  }
  o << "NUMA nodes: " << t.numa_nodes.size() << "\n";
  for (const NumaNode& n : t.numa_nodes) {
    o << "  Node " << n.os_index << ": " << human_bytes(n.memory_bytes) << ", CPUs "
      << format_cpu_list(n.cpus) << "\n";
  }
  o << "Caches:\n";
  for (const Cache& c : t.caches) {
    o << "  L" << c.level << " " << c.type << " " << human_bytes(c.size_bytes) << " x " << c.count
      << " (line " << c.line_bytes << " B)\n";
  }
  o << "GPUs: " << t.gpus.size() << "\n";
  for (const Gpu& g : t.gpus) {
    o << "  GPU" << g.index << ": " << g.name << ", bus " << g.pci.bus_id << ", NUMA node "
      << g.pci.numa_node << ", CPUs " << format_cpu_list(g.cpus) << "\n";
    for (const NvlinkPeer& p : g.nvlink_peers) {
      o << "    NVLink x" << p.links << " to "
        << (p.gpu_index >= 0 ? str_cat("GPU", p.gpu_index) : std::string("switch")) << " ("
        << p.bus_id << ")\n";
    }
  }
  o << "NICs: " << t.nics.size() << "\n";
  for (const Nic& n : t.nics) {
    o << "  NIC" << n.index << ": " << n.name << " (" << n.model << "), bus " << n.pci.bus_id
      << ", NUMA node " << n.pci.numa_node << ", state " << state_name(n.state);
    if (!n.interfaces.empty()) o << ", interfaces " << join(n.interfaces, ",");
    if (!n.rdma_devices.empty()) o << ", RDMA " << join(n.rdma_devices, ",");
    o << "\n";
  }
  o << "Network interfaces: " << t.net_interfaces.size() << "\n";
  for (const NetInterface& i : t.net_interfaces) {
    o << "  " << i.name << ": " << i.state << ", MTU " << i.mtu << ", speed "
      << (i.speed_mbps < 0 ? std::string("?") : str_cat(i.speed_mbps, " Mb/s"));
    if (!i.mac.empty()) o << ", MAC " << i.mac;
    if (!i.bus_id.empty()) o << ", bus " << i.bus_id;
    if (!i.addresses.empty()) o << ", " << join(i.addresses, " ");
    o << "\n";
  }
  o << "RDMA devices: " << t.rdma_devices.size() << "\n";
  for (const RdmaDevice& d : t.rdma_devices) {
    o << "  " << d.name << " (bus " << (d.bus_id.empty() ? "?" : d.bus_id) << ")\n";
    for (const RdmaPort& p : d.ports) {
      o << "    port " << p.port << ": " << p.state << ", " << p.link_layer << ", "
        << (p.rate.empty() ? "?" : p.rate) << "\n";
    }
  }
  if (!t.gpus.empty() || !t.nics.empty()) o << "\n" << format_matrix(t);
  return o.str();
}

std::string format_matrix(const Topology& t) {
  constexpr std::size_t kCell = 8;
  std::ostringstream o;
  std::vector<std::string> names;
  for (const Gpu& g : t.gpus) names.push_back(str_cat("GPU", g.index));
  for (const Nic& n : t.nics) names.push_back(str_cat("NIC", n.index));
  o << pad("", kCell);
  for (const std::string& n : names) o << pad(n, kCell);
  o << pad("CPU Affinity", 16) << "NUMA Affinity\n";
  auto row = [&](const std::string& name, const std::vector<Link>& to_gpus,
                 const std::vector<Link>& to_nics, const std::vector<int>& cpus, int numa) {
    o << pad(name, kCell);
    for (const Link& l : to_gpus) o << pad(to_string(l), kCell);
    for (const Link& l : to_nics) o << pad(to_string(l), kCell);
    std::string cpu_text = cpus.empty() ? std::string("N/A") : format_cpu_list(cpus);
    o << pad(cpu_text, 16) << (numa < 0 ? std::string("N/A") : std::to_string(numa)) << "\n";
  };
  for (const Gpu& g : t.gpus)
    row(names[static_cast<std::size_t>(g.index)], g.to_gpus, g.to_nics, g.cpus, g.pci.numa_node);
  for (const Nic& n : t.nics)
    row(str_cat("NIC", n.index), n.to_gpus, n.to_nics, n.cpus, n.pci.numa_node);
  o << "\nLegend:\n\n"
       "  X    = Self\n"
       "  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes\n"
       "  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges "
       "within a NUMA node\n"
       "  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)\n"
       "  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host "
       "Bridge)\n"
       "  PIX  = Connection traversing at most a single PCIe bridge (one PCIe switch counts as "
       "one)\n"
       "  NV#  = Connection traversing a bonded set of # NVLinks\n";
  if (!t.nics.empty()) {
    o << "\nNIC Legend:\n\n";
    for (const Nic& n : t.nics) o << "  NIC" << n.index << ": " << n.name << "\n";
  }
  return o.str();
}

std::string to_json(const Topology& t) {
  std::ostringstream o;
  o << "{\n  \"schema_version\": " << kJsonSchemaVersion << ",\n";
  o << "  \"backend\": " << q(t.backend) << ",\n  \"source\": " << q(t.source) << ",\n";
  o << "  \"machine\": {\"hostname\": " << q(t.hostname)
    << ", \"architecture\": " << q(t.architecture) << "},\n";
  o << "  \"os\": {\"name\": " << q(t.os_name) << ", \"release\": " << q(t.os_release)
    << ", \"version\": " << q(t.os_version) << "},\n";
  o << "  \"numa_nodes\": [";
  for (std::size_t i = 0; i < t.numa_nodes.size(); ++i) {
    const NumaNode& n = t.numa_nodes[i];
    o << (i ? ",\n    " : "\n    ") << "{\"os_index\": " << n.os_index
      << ", \"memory_bytes\": " << n.memory_bytes << ", \"cpuset\": " << q(format_cpu_list(n.cpus))
      << "}";
  }
  o << "\n  ],\n  \"packages\": [";
  for (std::size_t i = 0; i < t.packages.size(); ++i) {
    const Package& p = t.packages[i];
    o << (i ? ",\n    " : "\n    ") << "{\"os_index\": " << p.os_index
      << ", \"cpu_model\": " << q(p.cpu_model) << ", \"cpuset\": " << q(format_cpu_list(p.cpus))
      << "}";
  }
  o << "\n  ],\n  \"cores\": " << t.cores << ",\n  \"pus\": " << t.pus << ",\n  \"caches\": [";
  for (std::size_t i = 0; i < t.caches.size(); ++i) {
    const Cache& c = t.caches[i];
    o << (i ? ",\n    " : "\n    ") << "{\"level\": " << c.level << ", \"type\": " << q(c.type)
      << ", \"size_bytes\": " << c.size_bytes << ", \"line_bytes\": " << c.line_bytes
      << ", \"count\": " << c.count << "}";
  }
  o << "\n  ],\n  \"gpus\": [";
  for (std::size_t i = 0; i < t.gpus.size(); ++i) {
    const Gpu& g = t.gpus[i];
    o << (i ? ",\n    " : "\n    ") << "{\"index\": " << g.index << ", \"name\": " << q(g.name)
      << ", \"bus_id\": " << q(g.pci.bus_id) << ", \"numa_node\": " << g.pci.numa_node
      << ", \"cpuset\": " << q(format_cpu_list(g.cpus)) << ", \"nvlink_peers\": [";
    for (std::size_t k = 0; k < g.nvlink_peers.size(); ++k) {
      const NvlinkPeer& p = g.nvlink_peers[k];
      o << (k ? ", " : "") << "{\"bus_id\": " << q(p.bus_id) << ", \"gpu\": " << p.gpu_index
        << ", \"links\": " << p.links << "}";
    }
    o << "], \"paths\": " << paths_json(g.to_gpus, g.to_nics) << "}";
  }
  o << "\n  ],\n  \"nics\": [";
  for (std::size_t i = 0; i < t.nics.size(); ++i) {
    const Nic& n = t.nics[i];
    o << (i ? ",\n    " : "\n    ") << "{\"index\": " << n.index << ", \"name\": " << q(n.name)
      << ", \"model\": " << q(n.model) << ", \"bus_id\": " << q(n.pci.bus_id)
      << ", \"numa_node\": " << n.pci.numa_node << ", \"cpuset\": " << q(format_cpu_list(n.cpus))
      << ", \"state\": " << q(state_name(n.state)) << ", \"interfaces\": " << q_list(n.interfaces)
      << ", \"rdma_devices\": " << q_list(n.rdma_devices)
      << ", \"paths\": " << paths_json(n.to_gpus, n.to_nics) << "}";
  }
  o << "\n  ],\n  \"net_interfaces\": [";
  for (std::size_t i = 0; i < t.net_interfaces.size(); ++i) {
    const NetInterface& n = t.net_interfaces[i];
    o << (i ? ",\n    " : "\n    ") << "{\"name\": " << q(n.name) << ", \"state\": " << q(n.state)
      << ", \"speed_mbps\": " << n.speed_mbps << ", \"mtu\": " << n.mtu << ", \"mac\": " << q(n.mac)
      << ", \"bus_id\": " << q(n.bus_id) << ", \"addresses\": " << q_list(n.addresses) << "}";
  }
  o << "\n  ],\n  \"rdma_devices\": [";
  for (std::size_t i = 0; i < t.rdma_devices.size(); ++i) {
    const RdmaDevice& d = t.rdma_devices[i];
    o << (i ? ",\n    " : "\n    ") << "{\"name\": " << q(d.name) << ", \"bus_id\": " << q(d.bus_id)
      << ", \"ports\": [";
    for (std::size_t k = 0; k < d.ports.size(); ++k) {
      const RdmaPort& p = d.ports[k];
      o << (k ? ", " : "") << "{\"port\": " << p.port << ", \"link_layer\": " << q(p.link_layer)
        << ", \"state\": " << q(p.state) << ", \"rate\": " << q(p.rate) << "}";
    }
    o << "]}";
  }
  o << "\n  ]\n}\n";
  return o.str();
}

}  // namespace ringlet::topo
