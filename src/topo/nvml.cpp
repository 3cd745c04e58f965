// SPDX-License-Identifier: Apache-2.0
// NVML, loaded at run time with dlopen (no link-time dependency): GPU names and NVLink peers.
#include <dlfcn.h>

#include <map>
#include <string>
#include <vector>

#include "src/common/log.hpp"
#include "src/topo/detail.hpp"

namespace ringlet::topo::detail {
namespace {

// The few NVML declarations used here, from NVML's documented C API.
using NvmlReturn = int;  // nvmlReturn_t; 0 is NVML_SUCCESS
using NvmlDevice = struct NvmlDeviceOpaque*;
constexpr NvmlReturn kNvmlSuccess = 0;
constexpr unsigned kNvmlMaxLinks = 18;   // NVML_NVLINK_MAX_LINKS
constexpr unsigned kNvmlNameBytes = 96;  // NVML_DEVICE_NAME_V2_BUFFER_SIZE

struct NvmlPciInfo {  // nvmlPciInfo_t
  char bus_id_legacy[16];
  unsigned domain;
  unsigned bus;
  unsigned device;
  unsigned pci_device_id;
  unsigned pci_subsystem_id;
  char bus_id[32];
};

using InitFn = NvmlReturn (*)();
using ShutdownFn = NvmlReturn (*)();
using CountFn = NvmlReturn (*)(unsigned*);
using HandleFn = NvmlReturn (*)(unsigned, NvmlDevice*);
using NameFn = NvmlReturn (*)(NvmlDevice, char*, unsigned);
using PciFn = NvmlReturn (*)(NvmlDevice, NvmlPciInfo*);
using LinkStateFn = NvmlReturn (*)(NvmlDevice, unsigned, int*);  // nvmlEnableState_t*
using RemotePciFn = NvmlReturn (*)(NvmlDevice, unsigned, NvmlPciInfo*);

template <class Fn>
Fn symbol(void* lib, const char* name) {
  return reinterpret_cast<Fn>(::dlsym(lib, name));
}

}  // namespace

std::vector<NvmlGpu> query_nvml() {
  void* lib = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    RINGLET_LOG(trace, "topology: no NVML (", ::dlerror(), "); no NVLink information");
    return {};
  }
  auto init = symbol<InitFn>(lib, "nvmlInit_v2");
  auto shutdown = symbol<ShutdownFn>(lib, "nvmlShutdown");
  auto count = symbol<CountFn>(lib, "nvmlDeviceGetCount_v2");
  auto handle = symbol<HandleFn>(lib, "nvmlDeviceGetHandleByIndex_v2");
  auto name = symbol<NameFn>(lib, "nvmlDeviceGetName");
  auto pci = symbol<PciFn>(lib, "nvmlDeviceGetPciInfo_v3");
  auto link_state = symbol<LinkStateFn>(lib, "nvmlDeviceGetNvLinkState");
  auto remote_pci = symbol<RemotePciFn>(lib, "nvmlDeviceGetNvLinkRemotePciInfo_v2");
  std::vector<NvmlGpu> out;
  if (init == nullptr || shutdown == nullptr || count == nullptr || handle == nullptr ||
      pci == nullptr) {
    RINGLET_LOG(info, "topology: libnvidia-ml.so.1 lacks the functions needed; ignoring it");
  } else if (init() != kNvmlSuccess) {
    RINGLET_LOG(info, "topology: nvmlInit failed; no NVLink information");
  } else {
    unsigned n = 0;
    if (count(&n) != kNvmlSuccess) n = 0;
    for (unsigned i = 0; i < n; ++i) {
      NvmlDevice dev = nullptr;
      NvmlPciInfo info{};
      if (handle(i, &dev) != kNvmlSuccess || pci(dev, &info) != kNvmlSuccess) continue;
      NvmlGpu g;
      g.bus_id = normalize_bus_id(info.bus_id);
      char text[kNvmlNameBytes] = {};
      if (name != nullptr && name(dev, text, sizeof(text)) == kNvmlSuccess) g.name = text;
      std::map<std::string, int> links;
      for (unsigned l = 0; link_state != nullptr && remote_pci != nullptr && l < kNvmlMaxLinks;
           ++l) {
        int active = 0;
        if (link_state(dev, l, &active) != kNvmlSuccess || active == 0) continue;
        NvmlPciInfo remote{};
        if (remote_pci(dev, l, &remote) != kNvmlSuccess) continue;
        ++links[normalize_bus_id(remote.bus_id)];
      }
      for (const auto& [bus, k] : links) g.peers.push_back({bus, -1, k});
      out.push_back(g);
    }
    shutdown();
  }
  ::dlclose(lib);
  return out;
}

}  // namespace ringlet::topo::detail
