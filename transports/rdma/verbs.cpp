// SPDX-License-Identifier: Apache-2.0
// The libibverbs loader and the port listing.
#include "transports/rdma/verbs.hpp"

#include <dlfcn.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>

#include "include/ringlet/ringlet.hpp"
#include "src/common/str_cat.hpp"

namespace ringlet::transport::rdma {
namespace {

template <class F>
void resolve(void* handle, const char* name, F* out, std::string* missing) {
  *out = reinterpret_cast<F>(::dlsym(handle, name));
  if (*out == nullptr && missing != nullptr) {
    if (!missing->empty()) *missing += ", ";
    *missing += name;
  }
}

std::unique_ptr<Verbs> load(const std::string& library) {
  const std::string name = library.empty() ? std::string("libibverbs.so.1") : library;
  void* h = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* why = ::dlerror();
    throw Error(ErrorCode::transport,
                str_cat("rdma: cannot load ", name, " (", why != nullptr ? why : "dlopen failed",
                        ")", library.empty() ? "; is rdma-core (libibverbs1) installed?" : ""));
  }
  auto v = std::make_unique<Verbs>();
  v->library = name;
  std::string missing;
#define RINGLET_VERBS_RESOLVE(member, symbol) resolve(h, #symbol, &v->member, &missing);
  RINGLET_VERBS_REQUIRED(RINGLET_VERBS_RESOLVE)
#undef RINGLET_VERBS_RESOLVE
#define RINGLET_VERBS_RESOLVE(member, symbol) resolve(h, #symbol, &v->member, nullptr);
  RINGLET_VERBS_OPTIONAL(RINGLET_VERBS_RESOLVE)
#undef RINGLET_VERBS_RESOLVE
  resolve(h, "ibv_query_port", &v->query_port_compat, &missing);
  resolve(h, "_ibv_query_gid_ex", &v->query_gid_ex, nullptr);
  resolve(h, "ibv_reg_mr_iova2", &v->reg_mr_iova2, nullptr);
  resolve(h, "ibv_reg_mr", &v->reg_mr, v->reg_mr_iova2 == nullptr ? &missing : nullptr);
  if (!missing.empty()) {
    // The handle stays open: dlclose of a verbs provider is not safe in every rdma-core.
    throw Error(ErrorCode::transport,
                str_cat("rdma: ", name, " lacks the libibverbs entry points ", missing));
  }
  return v;
}

}  // namespace

int Verbs::query_port(ibv_context* context, uint8_t port, ibv_port_attr* attr) const {
  *attr = ibv_port_attr{};
  verbs_context* vctx = verbs_get_ctx_op(context, query_port);
  if (vctx != nullptr) return vctx->query_port(context, port, attr, sizeof(*attr));
  return query_port_compat(context, port, attr);
}

ibv_mr* Verbs::register_mr(ibv_pd* pd, void* addr, size_t length, unsigned access) const {
  if (reg_mr_iova2 != nullptr) {
    return reg_mr_iova2(pd, addr, length, reinterpret_cast<std::uintptr_t>(addr), access);
  }
  return reg_mr(pd, addr, length, static_cast<int>(access));
}

const Verbs& load_verbs(const std::string& library) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Verbs>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  auto it = loaded.find(library);
  if (it == loaded.end()) it = loaded.emplace(library, load(library)).first;
  return *it->second;
}

std::vector<PortInfo> list_ports(const Verbs& v) {
  int n = 0;
  ibv_device** list = v.get_device_list(&n);
  if (list == nullptr) return {};
  std::vector<PortInfo> ports;
  for (int i = 0; i < n; ++i) {
    const char* dev_name = v.get_device_name(list[i]);
    ibv_context* ctx = v.open_device(list[i]);
    if (ctx == nullptr) continue;
    ibv_device_attr da{};
    if (v.query_device(ctx, &da) == 0) {
      for (int p = 1; p <= da.phys_port_cnt; ++p) {
        ibv_port_attr pa{};
        if (v.query_port(ctx, static_cast<uint8_t>(p), &pa) != 0) continue;
        PortInfo info;
        info.device = dev_name != nullptr ? dev_name : "?";
        info.port = p;
        info.state = pa.state;
        info.link_layer = pa.link_layer;
        info.lid = pa.lid;
        info.active_mtu = pa.active_mtu;
        info.gid_table = pa.gid_tbl_len;
        ports.push_back(info);
      }
    }
    v.close_device(ctx);
  }
  v.free_device_list(list);
  return ports;
}

std::string describe(const PortInfo& p) {
  const char* state = p.state == IBV_PORT_ACTIVE  ? "ACTIVE"
                      : p.state == IBV_PORT_DOWN  ? "DOWN"
                      : p.state == IBV_PORT_INIT  ? "INIT"
                      : p.state == IBV_PORT_ARMED ? "ARMED"
                                                  : "not active";
  const char* ll = p.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet (RoCE)" : "InfiniBand";
  return str_cat(p.device, ":", p.port, " ", state, " ", ll);
}

}  // namespace ringlet::transport::rdma
