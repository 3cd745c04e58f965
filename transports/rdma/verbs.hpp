// SPDX-License-Identifier: Apache-2.0
// libibverbs loaded at run time (as NCCL does): one libringlet.so runs on nodes with and
// without rdma-core. Only the exported entry points are resolved with dlsym; ibv_post_send,
// ibv_post_recv, ibv_poll_cq and ibv_req_notify_cq are inline calls through the context's ops
// table (<infiniband/verbs.h>) and need no symbol. Config::ibverbs_library (the test-only
// RINGLET_IBVERBS_LIBRARY) names another library, the emulated device of tests/verbs_emulator.
#pragma once

#include <infiniband/verbs.h>

#include <string>
#include <vector>

namespace ringlet::transport::rdma {

// The entry points whose type is their declaration in <infiniband/verbs.h>, as
// X(member, symbol): the required ones (load_verbs fails naming those missing), then the
// optional ones (null where the library lacks them).
#define RINGLET_VERBS_REQUIRED(X)                   \
  X(get_device_list, ibv_get_device_list)           \
  X(free_device_list, ibv_free_device_list)         \
  X(get_device_name, ibv_get_device_name)           \
  X(open_device, ibv_open_device)                   \
  X(close_device, ibv_close_device)                 \
  X(query_device, ibv_query_device)                 \
  X(query_gid, ibv_query_gid)                       \
  X(alloc_pd, ibv_alloc_pd)                         \
  X(dealloc_pd, ibv_dealloc_pd)                     \
  X(dereg_mr, ibv_dereg_mr)                         \
  X(create_comp_channel, ibv_create_comp_channel)   \
  X(destroy_comp_channel, ibv_destroy_comp_channel) \
  X(create_cq, ibv_create_cq)                       \
  X(destroy_cq, ibv_destroy_cq)                     \
  X(get_cq_event, ibv_get_cq_event)                 \
  X(ack_cq_events, ibv_ack_cq_events)               \
  X(create_qp, ibv_create_qp)                       \
  X(modify_qp, ibv_modify_qp)                       \
  X(destroy_qp, ibv_destroy_qp)
#define RINGLET_VERBS_OPTIONAL(X) X(wc_status_str, ibv_wc_status_str)

// The resolved entry points.
struct Verbs {
  std::string library;  // as given to dlopen
#define RINGLET_VERBS_MEMBER(member, symbol) decltype(&symbol) member = nullptr;
  RINGLET_VERBS_REQUIRED(RINGLET_VERBS_MEMBER)
  RINGLET_VERBS_OPTIONAL(RINGLET_VERBS_MEMBER)
#undef RINGLET_VERBS_MEMBER
  // Entry points whose exported type differs from the header's declaration:
  // the exported compat function; query_port() below prefers the extended context's op.
  int (*query_port_compat)(ibv_context*, uint8_t, ibv_port_attr*) = nullptr;
  // Optional (rdma-core >= v32): the GID's type, to choose a RoCE v2 GID.
  int (*query_gid_ex)(ibv_context*, uint32_t, uint32_t, ibv_gid_entry*, uint32_t, size_t) = nullptr;
  // ibv_reg_mr_iova2 where exported (what the ibv_reg_mr macro calls), else ibv_reg_mr.
  ibv_mr* (*reg_mr_iova2)(ibv_pd*, void*, size_t, uint64_t, unsigned) = nullptr;
  ibv_mr* (*reg_mr)(ibv_pd*, void*, size_t, int) = nullptr;

  // Port attributes through the extended context when it offers them (as the inline wrapper
  // of verbs.h does), else through the exported function.
  int query_port(ibv_context* context, uint8_t port, ibv_port_attr* attr) const;
  ibv_mr* register_mr(ibv_pd* pd, void* addr, size_t length, unsigned access) const;
  const char* status(ibv_wc_status s) const {
    return wc_status_str != nullptr ? wc_status_str(s) : "unknown status";
  }
};

// Loads `library` ("" -> "libibverbs.so.1") once per process and resolves its entry points;
// never unloaded. Throws Error(transport) naming the library and what is missing.
const Verbs& load_verbs(const std::string& library);

// One port of one device, as ibv_query_port saw it.
struct PortInfo {
  std::string device;
  int port = 1;
  ibv_port_state state = IBV_PORT_NOP;
  int link_layer = IBV_LINK_LAYER_UNSPECIFIED;
  int lid = 0;
  ibv_mtu active_mtu = IBV_MTU_1024;
  int gid_table = 0;
};

// Every port of every device of `v` (opening each device briefly). Throws Error(transport).
std::vector<PortInfo> list_ports(const Verbs& v);

// "IB" or "Ethernet (RoCE)", "ACTIVE", ... for messages.
std::string describe(const PortInfo& p);

}  // namespace ringlet::transport::rdma
