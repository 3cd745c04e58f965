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

// The resolved entry points. Optional ones are null where the library lacks them.
struct Verbs {
  std::string library;  // as given to dlopen
  decltype(&ibv_get_device_list) get_device_list = nullptr;
  decltype(&ibv_free_device_list) free_device_list = nullptr;
  decltype(&ibv_get_device_name) get_device_name = nullptr;
  decltype(&ibv_open_device) open_device = nullptr;
  decltype(&ibv_close_device) close_device = nullptr;
  decltype(&ibv_query_device) query_device = nullptr;
  // The exported compat function; query_port() below prefers the extended context's op.
  int (*query_port_compat)(ibv_context*, uint8_t, ibv_port_attr*) = nullptr;
  decltype(&ibv_query_gid) query_gid = nullptr;
  // Optional (rdma-core >= v32): the GID's type, to choose a RoCE v2 GID.
  int (*query_gid_ex)(ibv_context*, uint32_t, uint32_t, ibv_gid_entry*, uint32_t, size_t) = nullptr;
  decltype(&ibv_alloc_pd) alloc_pd = nullptr;
  decltype(&ibv_dealloc_pd) dealloc_pd = nullptr;
  // ibv_reg_mr_iova2 where exported (what the ibv_reg_mr macro calls), else ibv_reg_mr.
  ibv_mr* (*reg_mr_iova2)(ibv_pd*, void*, size_t, uint64_t, unsigned) = nullptr;
  ibv_mr* (*reg_mr)(ibv_pd*, void*, size_t, int) = nullptr;
  decltype(&ibv_dereg_mr) dereg_mr = nullptr;
  decltype(&ibv_create_comp_channel) create_comp_channel = nullptr;
  decltype(&ibv_destroy_comp_channel) destroy_comp_channel = nullptr;
  decltype(&ibv_create_cq) create_cq = nullptr;
  decltype(&ibv_destroy_cq) destroy_cq = nullptr;
  decltype(&ibv_get_cq_event) get_cq_event = nullptr;
  decltype(&ibv_ack_cq_events) ack_cq_events = nullptr;
  decltype(&ibv_create_qp) create_qp = nullptr;
  decltype(&ibv_modify_qp) modify_qp = nullptr;
  decltype(&ibv_destroy_qp) destroy_qp = nullptr;
  decltype(&ibv_wc_status_str) wc_status_str = nullptr;

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
