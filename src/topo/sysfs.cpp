// SPDX-License-Identifier: Apache-2.0
// The /proc and /sys topology backend, and the live network and RDMA device readers that
// the hwloc backend shares.
#include <arpa/inet.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "src/common/check.hpp"
#include "src/topo/detail.hpp"
#include "src/topo/topology.hpp"

namespace ringlet::topo {
namespace detail {
namespace {

// The first line of a sysfs file without its newline; {} when unreadable.
std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return {};
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
  return line;
}

long long read_int(const std::string& path, long long fallback) {
  std::string s = read_line(path);
  if (s.empty()) return fallback;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 0);
  return end == s.c_str() ? fallback : v;
}

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return names;
  while (dirent* e = ::readdir(dir)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

std::string real_path(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return {};
  return buf;
}

bool is_bus_id(const std::string& s) {
  if (s.size() != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.') return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i == 4 || i == 7 || i == 10) continue;
    if (!std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::stringstream in(path);
  std::string p;
  while (std::getline(in, p, '/')) {
    if (!p.empty()) parts.push_back(p);
  }
  return parts;
}

// The PCI bus id nearest to a device's sysfs node ("/sys/devices/pci0000:00/0000:00:03.0/
// virtio0/net/eth0" -> "0000:00:03.0"); empty for virtual devices.
std::string pci_bus_id_of(const std::string& sysfs_device_link) {
  std::string real = real_path(sysfs_device_link);
  std::vector<std::string> parts = split_path(real);
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    if (is_bus_id(*it)) return *it;
  }
  return {};
}

int prefix_length(const sockaddr* mask) {
  if (mask == nullptr) return -1;
  const unsigned char* bytes = nullptr;
  std::size_t n = 0;
  if (mask->sa_family == AF_INET) {
    bytes = reinterpret_cast<const unsigned char*>(
        &reinterpret_cast<const sockaddr_in*>(mask)->sin_addr);
    n = 4;
  } else if (mask->sa_family == AF_INET6) {
    bytes = reinterpret_cast<const unsigned char*>(
        &reinterpret_cast<const sockaddr_in6*>(mask)->sin6_addr);
    n = 16;
  } else {
    return -1;
  }
  int bits = 0;
  for (std::size_t i = 0; i < n; ++i) bits += __builtin_popcount(bytes[i]);
  return bits;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return {};
}

std::string cache_type_name(const std::string& sysfs_type) {
  if (sysfs_type == "Data") return "data";
  if (sysfs_type == "Instruction") return "instruction";
  return "unified";
}

std::uint64_t parse_size(const std::string& s) {  // "48K", "2048K", "480M"
  char* end = nullptr;
  std::uint64_t v = std::strtoull(s.c_str(), &end, 10);
  if (end != nullptr && (*end == 'K' || *end == 'k')) v <<= 10;
  if (end != nullptr && (*end == 'M' || *end == 'm')) v <<= 20;
  if (end != nullptr && (*end == 'G' || *end == 'g')) v <<= 30;
  return v;
}

void read_cpus_and_caches(Topology& topo) {
  const std::string base = "/sys/devices/system/cpu/";
  std::vector<int> pus = parse_cpu_list(read_line(base + "online"));
  RINGLET_CHECK(!pus.empty(), "cannot read ", base, "online");
  topo.pus = static_cast<int>(pus.size());
  std::set<std::pair<long long, long long>> cores;
  std::map<long long, std::vector<int>> packages;
  std::map<std::tuple<int, std::string, std::string>, Cache> caches;  // level, type, shared
  for (int cpu : pus) {
    std::string dir = str_cat(base, "cpu", cpu, "/");
    long long pkg = read_int(dir + "topology/physical_package_id", 0);
    long long core = read_int(dir + "topology/core_id", cpu);
    cores.insert({pkg, core});
    packages[pkg].push_back(cpu);
    for (const std::string& idx : list_dir(dir + "cache")) {
      if (idx.rfind("index", 0) != 0) continue;
      std::string cdir = str_cat(dir, "cache/", idx, "/");
      int level = static_cast<int>(read_int(cdir + "level", 0));
      std::string type = cache_type_name(read_line(cdir + "type"));
      std::string shared = read_line(cdir + "shared_cpu_list");
      auto key = std::make_tuple(level, type, shared);
      if (caches.count(key)) continue;
      Cache c;
      c.level = level;
      c.type = type;
      c.size_bytes = parse_size(read_line(cdir + "size"));
      c.line_bytes = static_cast<int>(read_int(cdir + "coherency_line_size", 0));
      c.count = 1;
      caches[key] = c;
    }
  }
  topo.cores = static_cast<int>(cores.size());
  std::string model = cpu_model();
  for (auto& [id, cpus] : packages) {
    topo.packages.push_back({static_cast<int>(id), model, cpus});
  }
  // Merge cache instances of the same kind and size.
  for (auto& entry : caches) {
    const auto& c = entry.second;  // not a structured binding: clang 14 cannot capture one
    auto same = std::find_if(topo.caches.begin(), topo.caches.end(), [&](const Cache& x) {
      return x.level == c.level && x.type == c.type && x.size_bytes == c.size_bytes;
    });
    if (same != topo.caches.end()) {
      ++same->count;
    } else {
      topo.caches.push_back(c);
    }
  }
  std::sort(topo.caches.begin(), topo.caches.end(), [](const Cache& a, const Cache& b) {
    return std::tie(a.level, a.type) < std::tie(b.level, b.type);
  });
}

void read_numa(Topology& topo) {
  const std::string base = "/sys/devices/system/node/";
  for (const std::string& name : list_dir(base)) {
    if (name.rfind("node", 0) != 0 || name.size() < 5 ||
        !std::isdigit(static_cast<unsigned char>(name[4]))) {
      continue;
    }
    NumaNode n;
    n.os_index = std::atoi(name.c_str() + 4);
    n.cpus = parse_cpu_list(read_line(base + name + "/cpulist"));
    std::ifstream in(base + name + "/meminfo");
    std::string line;
    while (std::getline(in, line)) {
      auto at = line.find("MemTotal:");
      if (at != std::string::npos) {
        n.memory_bytes = std::strtoull(line.c_str() + at + 9, nullptr, 10) * 1024;
      }
    }
    topo.numa_nodes.push_back(n);
  }
  if (topo.numa_nodes.empty()) {  // a kernel without NUMA: one node with everything
    NumaNode n;
    n.os_index = 0;
    for (const Package& p : topo.packages)
      n.cpus.insert(n.cpus.end(), p.cpus.begin(), p.cpus.end());
    std::ifstream in("/proc/meminfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("MemTotal:", 0) == 0) {
        n.memory_bytes = std::strtoull(line.c_str() + 9, nullptr, 10) * 1024;
      }
    }
    topo.numa_nodes.push_back(n);
  }
  std::sort(topo.numa_nodes.begin(), topo.numa_nodes.end(),
            [](const NumaNode& a, const NumaNode& b) { return a.os_index < b.os_index; });
}

// GPUs (NVIDIA, class 0x0300/0x0302) and NICs (class 0x02xx) from /sys/bus/pci/devices.
void read_pci(Topology& topo) {
  const std::string base = "/sys/bus/pci/devices/";
  for (const std::string& bus : list_dir(base)) {
    std::string dir = base + bus + "/";
    long long cls = read_int(dir + "class", 0);
    long long vendor = read_int(dir + "vendor", 0);
    long long device = read_int(dir + "device", 0);
    bool gpu = vendor == 0x10de && ((cls >> 8) == 0x0302 || (cls >> 8) == 0x0300);
    bool nic = (cls >> 16) == 0x02;
    if (!gpu && !nic) continue;
    PciLocation loc;
    loc.bus_id = normalize_bus_id(bus);
    std::vector<std::string> parts = split_path(real_path(dir));
    for (const std::string& p : parts) {
      if (p.rfind("pci", 0) == 0 && p.size() > 3 && p.find(':') != std::string::npos) {
        loc.host_bridge = p;
      } else if (is_bus_id(p) && normalize_bus_id(p) != loc.bus_id) {
        loc.bridges.insert(loc.bridges.begin(), normalize_bus_id(p));
      }
    }
    loc.numa_node = static_cast<int>(read_int(dir + "numa_node", -1));
    if (loc.numa_node < 0 && topo.numa_nodes.size() == 1) {
      loc.numa_node = topo.numa_nodes.front().os_index;
    }
    std::vector<int> cpus = parse_cpu_list(read_line(dir + "local_cpulist"));
    char ids[32];
    std::snprintf(ids, sizeof(ids), "[%04llx:%04llx]", vendor, device);
    if (gpu) {
      Gpu g;
      g.name = str_cat("NVIDIA GPU ", ids);
      g.pci = loc;
      g.cpus = cpus;
      topo.gpus.push_back(g);
    } else {
      Nic n;
      n.name = loc.bus_id;
      n.model = ids;
      n.pci = loc;
      n.cpus = cpus;
      topo.nics.push_back(n);
    }
  }
}

}  // namespace

std::vector<NetInterface> read_net_interfaces() {
  std::vector<NetInterface> out;
  const std::string base = "/sys/class/net/";
  for (const std::string& name : list_dir(base)) {
    NetInterface i;
    i.name = name;
    std::string dir = base + name + "/";
    i.state = read_line(dir + "operstate");
    i.speed_mbps = read_int(dir + "speed", -1);
    if (i.speed_mbps <= 0) i.speed_mbps = -1;
    i.mtu = static_cast<int>(read_int(dir + "mtu", 0));
    i.mac = read_line(dir + "address");
    i.bus_id = normalize_bus_id(pci_bus_id_of(dir + "device"));
    out.push_back(i);
  }
  std::vector<IfAddr> addresses;
  try {
    addresses = list_interface_addresses();
  } catch (const Error&) {
    // Without getifaddrs the interfaces are still listed, with no addresses.
  }
  for (const IfAddr& a : addresses) {
    std::string text = a.address;
    if (a.prefix >= 0) text += str_cat('/', a.prefix);
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const NetInterface& i) { return i.name == a.name; });
    if (it != out.end()) it->addresses.push_back(text);
  }
  return out;
}

std::vector<RdmaDevice> read_rdma_devices() {
  std::vector<RdmaDevice> out;
  const std::string base = "/sys/class/infiniband/";
  for (const std::string& name : list_dir(base)) {
    RdmaDevice d;
    d.name = name;
    d.bus_id = normalize_bus_id(pci_bus_id_of(base + name + "/device"));
    for (const std::string& port : list_dir(base + name + "/ports")) {
      std::string dir = base + name + "/ports/" + port + "/";
      RdmaPort p;
      p.port = std::atoi(port.c_str());
      p.link_layer = read_line(dir + "link_layer");
      p.state = read_line(dir + "state");  // "4: ACTIVE"
      auto colon = p.state.find(": ");
      if (colon != std::string::npos) p.state = p.state.substr(colon + 2);
      p.rate = read_line(dir + "rate");
      d.ports.push_back(p);
    }
    out.push_back(d);
  }
  return out;
}

}  // namespace detail

std::vector<IfAddr> list_interface_addresses() {
  ifaddrs* raw = nullptr;
  if (::getifaddrs(&raw) != 0) ringlet::detail::throw_errno("getifaddrs");
  std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> list(raw, ::freeifaddrs);
  std::vector<IfAddr> out;
  for (const ifaddrs* a = raw; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr) continue;
    const int family = a->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    IfAddr entry;
    entry.name = a->ifa_name;
    entry.family = family;
    char text[INET6_ADDRSTRLEN] = {};
    const void* src = nullptr;
    if (family == AF_INET) {
      src = &reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr;
    } else {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a->ifa_addr);
      src = &sin6->sin6_addr;
      entry.link_local = IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr);
    }
    if (::inet_ntop(family, src, text, sizeof(text)) == nullptr) continue;
    entry.address = text;
    entry.prefix = detail::prefix_length(a->ifa_netmask);
    entry.up = (a->ifa_flags & IFF_UP) != 0;
    entry.loopback = (a->ifa_flags & IFF_LOOPBACK) != 0;
    out.push_back(std::move(entry));
  }
  return out;
}

Topology load_topology_sysfs() {
  Topology topo;
  topo.backend = "sysfs";
  topo.source = "live";
  utsname u{};
  if (::uname(&u) == 0) {
    topo.hostname = u.nodename;
    topo.architecture = u.machine;
    topo.os_name = u.sysname;
    topo.os_release = u.release;
    topo.os_version = u.version;
  }
  detail::read_cpus_and_caches(topo);
  detail::read_numa(topo);
  detail::read_pci(topo);
  topo.net_interfaces = detail::read_net_interfaces();
  topo.rdma_devices = detail::read_rdma_devices();
  detail::attach_live_nic_state(topo);
  detail::finish_devices(topo, detail::query_nvml());
  return topo;
}

}  // namespace ringlet::topo
