// SPDX-License-Identifier: Apache-2.0
// The hwloc topology backend: the live machine or an hwloc XML export, with PCI I/O devices.
#include <hwloc.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "src/common/check.hpp"
#include "src/topo/detail.hpp"
#include "src/topo/topology.hpp"

namespace ringlet::topo::detail {
namespace {

struct TopologyDeleter {
  void operator()(hwloc_topology* t) const noexcept { hwloc_topology_destroy(t); }
};
using TopologyPtr = std::unique_ptr<hwloc_topology, TopologyDeleter>;

std::string info(hwloc_obj_t obj, const char* name) {
  const char* v = obj == nullptr ? nullptr : hwloc_obj_get_info_by_name(obj, name);
  return v == nullptr ? std::string() : std::string(v);
}

std::vector<int> cpus_of(hwloc_const_bitmap_t set) {
  std::vector<int> cpus;
  if (set == nullptr) return cpus;
  for (int i = hwloc_bitmap_first(set); i >= 0; i = hwloc_bitmap_next(set, i)) cpus.push_back(i);
  return cpus;
}

std::string bus_id_of(hwloc_obj_t pci) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%04x:%02x:%02x.%01x", pci->attr->pcidev.domain,
                pci->attr->pcidev.bus, pci->attr->pcidev.dev, pci->attr->pcidev.func);
  return buf;
}

// The bridges above a PCI device, nearest first, its host bridge and its NUMA node.
PciLocation locate(hwloc_topology_t topo, hwloc_obj_t pci) {
  PciLocation loc;
  loc.bus_id = bus_id_of(pci);
  for (hwloc_obj_t p = pci->parent; p != nullptr && p->type == HWLOC_OBJ_BRIDGE; p = p->parent) {
    std::string id = str_cat("bridge#", p->gp_index);
    if (p->attr->bridge.upstream_type == HWLOC_OBJ_BRIDGE_HOST) {
      loc.host_bridge = id;
    } else {
      loc.bridges.push_back(id);
    }
  }
  hwloc_obj_t anchor = hwloc_get_non_io_ancestor_obj(topo, pci);
  if (anchor != nullptr && anchor->nodeset != nullptr &&
      hwloc_bitmap_weight(anchor->nodeset) == 1) {
    loc.numa_node = hwloc_bitmap_first(anchor->nodeset);
  }
  return loc;
}

std::string ids_of(hwloc_obj_t pci) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "[%04x:%04x]", pci->attr->pcidev.vendor_id,
                pci->attr->pcidev.device_id);
  return buf;
}

std::string cache_type(hwloc_obj_cache_type_e t) {
  switch (t) {
    case HWLOC_OBJ_CACHE_DATA:
      return "data";
    case HWLOC_OBJ_CACHE_INSTRUCTION:
      return "instruction";
    case HWLOC_OBJ_CACHE_UNIFIED:
      return "unified";
  }
  return "unified";
}

void read_caches(hwloc_topology_t t, Topology& topo) {
  const hwloc_obj_type_t kinds[] = {HWLOC_OBJ_L1CACHE,  HWLOC_OBJ_L1ICACHE, HWLOC_OBJ_L2CACHE,
                                    HWLOC_OBJ_L2ICACHE, HWLOC_OBJ_L3CACHE,  HWLOC_OBJ_L3ICACHE,
                                    HWLOC_OBJ_L4CACHE,  HWLOC_OBJ_L5CACHE};
  for (hwloc_obj_type_t kind : kinds) {
    int n = hwloc_get_nbobjs_by_type(t, kind);
    for (int i = 0; i < n; ++i) {
      hwloc_obj_t c = hwloc_get_obj_by_type(t, kind, static_cast<unsigned>(i));
      Cache cache;
      cache.level = static_cast<int>(c->attr->cache.depth);
      cache.type = cache_type(c->attr->cache.type);
      cache.size_bytes = c->attr->cache.size;
      cache.line_bytes = static_cast<int>(c->attr->cache.linesize);
      auto same = std::find_if(topo.caches.begin(), topo.caches.end(), [&](const Cache& x) {
        return x.level == cache.level && x.type == cache.type && x.size_bytes == cache.size_bytes;
      });
      if (same != topo.caches.end()) {
        ++same->count;
      } else {
        cache.count = 1;
        topo.caches.push_back(cache);
      }
    }
  }
}

bool has_osdev(hwloc_obj_t pci, hwloc_obj_osdev_type_t type) {
  for (hwloc_obj_t c = pci->io_first_child; c != nullptr; c = c->next_sibling) {
    if (c->type == HWLOC_OBJ_OS_DEVICE && c->attr->osdev.type == type) return true;
  }
  return false;
}

// GPUs and NICs with their OS devices (interfaces, RDMA devices) from the PCI tree.
void read_pci(hwloc_topology_t t, Topology& topo, bool live) {
  for (hwloc_obj_t pci = hwloc_get_next_pcidev(t, nullptr); pci != nullptr;
       pci = hwloc_get_next_pcidev(t, pci)) {
    unsigned cls = pci->attr->pcidev.class_id;
    bool nvidia = pci->attr->pcidev.vendor_id == 0x10de;
    bool gpu =
        (nvidia && (cls == 0x0302 || cls == 0x0300)) ||
        (nvidia && (has_osdev(pci, HWLOC_OBJ_OSDEV_GPU) || has_osdev(pci, HWLOC_OBJ_OSDEV_COPROC)));
    bool nic = (cls >> 8) == 0x02 || has_osdev(pci, HWLOC_OBJ_OSDEV_NETWORK) ||
               has_osdev(pci, HWLOC_OBJ_OSDEV_OPENFABRICS);
    if (!gpu && !nic) continue;
    hwloc_obj_t anchor = hwloc_get_non_io_ancestor_obj(t, pci);
    std::vector<int> cpus = cpus_of(anchor == nullptr ? nullptr : anchor->cpuset);
    std::string pci_name = info(pci, "PCIDevice");
    if (gpu) {
      Gpu g;
      g.name = pci_name.empty() ? str_cat("NVIDIA GPU ", ids_of(pci)) : pci_name;
      g.pci = locate(t, pci);
      g.cpus = cpus;
      topo.gpus.push_back(g);
      continue;
    }
    Nic n;
    n.model = pci_name.empty() ? ids_of(pci) : str_cat(pci_name, " ", ids_of(pci));
    n.pci = locate(t, pci);
    n.cpus = cpus;
    n.name = n.pci.bus_id;
    for (hwloc_obj_t c = pci->io_first_child; c != nullptr; c = c->next_sibling) {
      if (c->type != HWLOC_OBJ_OS_DEVICE || c->name == nullptr) continue;
      if (c->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK) n.interfaces.push_back(c->name);
      if (c->attr->osdev.type == HWLOC_OBJ_OSDEV_OPENFABRICS) n.rdma_devices.push_back(c->name);
      if (live) continue;
      // From an XML file: what the export recorded stands in for the live reads.
      if (c->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK) {
        NetInterface i;
        i.name = c->name;
        i.state = "unknown";
        i.mac = info(c, "Address");
        i.bus_id = n.pci.bus_id;
        topo.net_interfaces.push_back(i);
      } else if (c->attr->osdev.type == HWLOC_OBJ_OSDEV_OPENFABRICS) {
        RdmaDevice d;
        d.name = c->name;
        d.bus_id = n.pci.bus_id;
        for (int port = 1; port <= 8; ++port) {
          std::string state = info(c, str_cat("Port", port, "State").c_str());
          if (state.empty()) continue;
          RdmaPort p;
          p.port = port;
          // hwloc records the numeric ibv_port_state: 4 is ACTIVE, 1 DOWN.
          p.state = state == "4" ? "ACTIVE" : state == "1" ? "DOWN" : state;
          p.link_layer = info(c, str_cat("Port", port, "LinkLayer").c_str());
          p.rate = info(c, str_cat("Port", port, "Rate").c_str());
          d.ports.push_back(p);
        }
        topo.rdma_devices.push_back(d);
      }
    }
    if (!n.rdma_devices.empty()) {
      n.name = n.rdma_devices.front();
    } else if (!n.interfaces.empty()) {
      n.name = n.interfaces.front();
    }
    topo.nics.push_back(n);
  }
}

}  // namespace

Topology load_hwloc(const std::string& xml_path) {
  hwloc_topology_t raw = nullptr;
  if (hwloc_topology_init(&raw) != 0)
    throw Error(ErrorCode::transport, "hwloc_topology_init failed");
  TopologyPtr owner(raw);
  hwloc_topology_set_io_types_filter(raw, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  hwloc_topology_set_icache_types_filter(raw, HWLOC_TYPE_FILTER_KEEP_ALL);
  const bool live = xml_path.empty();
  if (!live && hwloc_topology_set_xml(raw, xml_path.c_str()) != 0) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("cannot read the hwloc XML topology ", xml_path));
  }
  if (hwloc_topology_load(raw) != 0) {
    throw Error(live ? ErrorCode::transport : ErrorCode::invalid_argument,
                live ? std::string("hwloc could not load this machine's topology")
                     : str_cat("cannot load the hwloc XML topology ", xml_path));
  }
  Topology topo;
  topo.backend = live ? "hwloc" : "hwloc-xml";
  topo.source = live ? "live" : xml_path;
  hwloc_obj_t root = hwloc_get_root_obj(raw);
  topo.hostname = info(root, "HostName");
  topo.architecture = info(root, "Architecture");
  topo.os_name = info(root, "OSName");
  topo.os_release = info(root, "OSRelease");
  topo.os_version = info(root, "OSVersion");

  int numa = hwloc_get_nbobjs_by_type(raw, HWLOC_OBJ_NUMANODE);
  for (int i = 0; i < numa; ++i) {
    hwloc_obj_t n = hwloc_get_obj_by_type(raw, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
    topo.numa_nodes.push_back(
        {static_cast<int>(n->os_index), n->attr->numanode.local_memory, cpus_of(n->cpuset)});
  }
  int packages = hwloc_get_nbobjs_by_type(raw, HWLOC_OBJ_PACKAGE);
  for (int i = 0; i < packages; ++i) {
    hwloc_obj_t p = hwloc_get_obj_by_type(raw, HWLOC_OBJ_PACKAGE, static_cast<unsigned>(i));
    topo.packages.push_back(
        {static_cast<int>(p->os_index), info(p, "CPUModel"), cpus_of(p->cpuset)});
  }
  topo.cores = hwloc_get_nbobjs_by_type(raw, HWLOC_OBJ_CORE);
  topo.pus = hwloc_get_nbobjs_by_type(raw, HWLOC_OBJ_PU);
  read_caches(raw, topo);
  read_pci(raw, topo, live);
  if (live) {
    topo.net_interfaces = read_net_interfaces();
    topo.rdma_devices = read_rdma_devices();
    attach_live_nic_state(topo);
  } else {
    // Only what the export recorded: RDMA port states when present.
    for (Nic& nic : topo.nics) {
      for (const RdmaDevice& d : topo.rdma_devices) {
        if (d.bus_id != nic.pci.bus_id) continue;
        for (const RdmaPort& p : d.ports) {
          if (p.state == "ACTIVE") nic.state = LinkState::up;
          if (p.state == "DOWN" && nic.state != LinkState::up) nic.state = LinkState::down;
        }
      }
    }
  }
  finish_devices(topo, live ? query_nvml() : std::vector<NvmlGpu>{});
  return topo;
}

}  // namespace ringlet::topo::detail
