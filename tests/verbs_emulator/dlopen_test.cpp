// SPDX-License-Identifier: Apache-2.0
// Loads the emulator as the RDMA transport will load libibverbs: dlopen by name at run time,
// with RINGLET_IBVERBS_LIBRARY naming the emulator instead. This binary does not link it.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <infiniband/verbs.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

// The entry points an RC transport resolves; the rest of the verbs are inline over ops.
const char* const kSymbols[] = {
    "ibv_get_device_list",
    "ibv_free_device_list",
    "ibv_get_device_name",
    "ibv_get_device_guid",
    "ibv_open_device",
    "ibv_close_device",
    "ibv_query_device",
    "ibv_query_port",
    "ibv_query_gid",
    "_ibv_query_gid_ex",
    "ibv_alloc_pd",
    "ibv_dealloc_pd",
    "ibv_reg_mr",
    "ibv_reg_mr_iova2",
    "ibv_reg_dmabuf_mr",
    "ibv_dereg_mr",
    "ibv_create_comp_channel",
    "ibv_destroy_comp_channel",
    "ibv_create_cq",
    "ibv_destroy_cq",
    "ibv_get_cq_event",
    "ibv_ack_cq_events",
    "ibv_create_qp",
    "ibv_modify_qp",
    "ibv_query_qp",
    "ibv_destroy_qp",
    "ibv_get_async_event",
    "ibv_ack_async_event",
    "ibv_wc_status_str",
    "ibv_event_type_str",
    "ibv_node_type_str",
    "ibv_port_state_str",
};

struct Verbs {
  void* handle = nullptr;
  decltype(&::ibv_get_device_list) get_device_list;
  decltype(&::ibv_free_device_list) free_device_list;
  decltype(&::ibv_open_device) open_device;
  decltype(&::ibv_close_device) close_device;
  decltype(&::ibv_query_gid) query_gid;
  decltype(&::ibv_alloc_pd) alloc_pd;
  decltype(&::ibv_dealloc_pd) dealloc_pd;
  decltype(&::ibv_reg_mr_iova2) reg_mr_iova2;
  decltype(&::ibv_dereg_mr) dereg_mr;
  decltype(&::ibv_create_cq) create_cq;
  decltype(&::ibv_destroy_cq) destroy_cq;
  decltype(&::ibv_create_qp) create_qp;
  decltype(&::ibv_modify_qp) modify_qp;
  decltype(&::ibv_destroy_qp) destroy_qp;
  decltype(&::ibv_wc_status_str) wc_status_str;

  template <typename F>
  void get(F& f, const char* name) {
    f = reinterpret_cast<F>(::dlsym(handle, name));
  }
  bool load(const char* path) {
    handle = ::dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) return false;
    get(get_device_list, "ibv_get_device_list");
    get(free_device_list, "ibv_free_device_list");
    get(open_device, "ibv_open_device");
    get(close_device, "ibv_close_device");
    get(query_gid, "ibv_query_gid");
    get(alloc_pd, "ibv_alloc_pd");
    get(dealloc_pd, "ibv_dealloc_pd");
    get(reg_mr_iova2, "ibv_reg_mr_iova2");
    get(dereg_mr, "ibv_dereg_mr");
    get(create_cq, "ibv_create_cq");
    get(destroy_cq, "ibv_destroy_cq");
    get(create_qp, "ibv_create_qp");
    get(modify_qp, "ibv_modify_qp");
    get(destroy_qp, "ibv_destroy_qp");
    get(wc_status_str, "ibv_wc_status_str");
    return true;
  }
};

// The transport's rule: the real library unless the test-only variable names another.
const char* library() {
  const char* p = std::getenv("RINGLET_IBVERBS_LIBRARY");
  return p && *p ? p : "libibverbs.so.1";
}

}  // namespace

TEST(DlopenTest, EveryEntryPointResolves) {
  if (!std::getenv("RINGLET_IBVERBS_LIBRARY")) GTEST_SKIP() << "RINGLET_IBVERBS_LIBRARY not set";
  void* h = ::dlopen(library(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(h, nullptr) << ::dlerror();
  for (const char* s : kSymbols) EXPECT_NE(::dlsym(h, s), nullptr) << s;
  ::dlclose(h);
}

TEST(DlopenTest, LoopbackSendAndWriteThroughDlsym) {
  if (!std::getenv("RINGLET_IBVERBS_LIBRARY")) GTEST_SKIP() << "RINGLET_IBVERBS_LIBRARY not set";
  Verbs v;
  ASSERT_TRUE(v.load(library())) << ::dlerror();
  int n = 0;
  ibv_device** list = v.get_device_list(&n);
  ASSERT_NE(list, nullptr);
  ibv_context* ctx = v.open_device(list[0]);
  v.free_device_list(list);
  ASSERT_NE(ctx, nullptr);
  // The port query goes through the extended context, as the inline wrapper does.
  verbs_context* vctx = verbs_get_ctx(ctx);
  ASSERT_NE(vctx, nullptr);
  ASSERT_NE(vctx->query_port, nullptr);
  ibv_port_attr pa;
  ASSERT_EQ(vctx->query_port(ctx, 1, &pa, sizeof(pa)), 0);
  EXPECT_EQ(pa.state, IBV_PORT_ACTIVE);
  ibv_gid gid;
  ASSERT_EQ(v.query_gid(ctx, 1, 0, &gid), 0);

  ibv_pd* pd = v.alloc_pd(ctx);
  ibv_cq* cq = v.create_cq(ctx, 16, nullptr, nullptr, 0);
  ASSERT_TRUE(pd && cq);
  std::vector<uint8_t> buf(4096);
  ibv_mr* mr = v.reg_mr_iova2(pd, buf.data(), buf.size(), reinterpret_cast<uintptr_t>(buf.data()),
                              IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  ASSERT_NE(mr, nullptr);
  ibv_qp* qp[2];
  for (auto& q : qp) {
    ibv_qp_init_attr ia{};
    ia.send_cq = cq;
    ia.recv_cq = cq;
    ia.qp_type = IBV_QPT_RC;
    ia.cap.max_send_wr = 4;
    ia.cap.max_recv_wr = 4;
    ia.cap.max_send_sge = 1;
    ia.cap.max_recv_sge = 1;
    q = v.create_qp(pd, &ia);
    ASSERT_NE(q, nullptr);
  }
  // Two QPs of one context connected to each other (loopback through the emulated NIC).
  for (int i = 0; i < 2; ++i) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
    ASSERT_EQ(v.modify_qp(qp[i], &a,
                          IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS),
              0);
    a = ibv_qp_attr{};
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_1024;
    a.dest_qp_num = qp[1 - i]->qp_num;
    a.rq_psn = 100;
    a.min_rnr_timer = 1;
    a.ah_attr.port_num = 1;
    a.ah_attr.is_global = 1;
    a.ah_attr.grh.dgid = gid;
    ASSERT_EQ(v.modify_qp(qp[i], &a,
                          IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                              IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER),
              0);
    a = ibv_qp_attr{};
    a.qp_state = IBV_QPS_RTS;
    a.timeout = 10;
    a.retry_cnt = 2;
    a.rnr_retry = 7;
    a.sq_psn = 100;
    ASSERT_EQ(v.modify_qp(qp[i], &a,
                          IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                              IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC),
              0);
  }
  std::memcpy(buf.data(), "hello", 5);
  ibv_sge rs{reinterpret_cast<uintptr_t>(buf.data()) + 1024, 1024, mr->lkey};
  ibv_recv_wr rw{};
  rw.wr_id = 1;
  rw.sg_list = &rs;
  rw.num_sge = 1;
  ibv_recv_wr* rbad = nullptr;
  ASSERT_EQ(ibv_post_recv(qp[1], &rw, &rbad), 0);  // inline, through context->ops
  ibv_sge ss{reinterpret_cast<uintptr_t>(buf.data()), 5, mr->lkey};
  ibv_send_wr sw{};
  sw.wr_id = 2;
  sw.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  sw.send_flags = IBV_SEND_SIGNALED;
  sw.imm_data = htobe32(77);
  sw.sg_list = &ss;
  sw.num_sge = 1;
  sw.wr.rdma.remote_addr = reinterpret_cast<uintptr_t>(buf.data()) + 2048;
  sw.wr.rdma.rkey = mr->rkey;
  ibv_send_wr* sbad = nullptr;
  ASSERT_EQ(ibv_post_send(qp[0], &sw, &sbad), 0);
  int got = 0;
  bool recv_seen = false;
  for (int spin = 0; spin < 100000 && got < 2; ++spin) {
    ibv_wc wc;
    if (ibv_poll_cq(cq, 1, &wc) == 1) {
      EXPECT_EQ(wc.status, IBV_WC_SUCCESS) << v.wc_status_str(wc.status);
      if (wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
        recv_seen = true;
        EXPECT_EQ(be32toh(wc.imm_data), 77u);
        EXPECT_EQ(wc.byte_len, 5u);
      }
      ++got;
    } else {
      ::usleep(100);
    }
  }
  EXPECT_EQ(got, 2);
  EXPECT_TRUE(recv_seen);
  EXPECT_EQ(std::memcmp(buf.data() + 2048, "hello", 5), 0);
  EXPECT_EQ(v.destroy_qp(qp[0]), 0);
  EXPECT_EQ(v.destroy_qp(qp[1]), 0);
  EXPECT_EQ(v.dereg_mr(mr), 0);
  EXPECT_EQ(v.destroy_cq(cq), 0);
  EXPECT_EQ(v.dealloc_pd(pd), 0);
  EXPECT_EQ(v.close_device(ctx), 0);
  // The library stays loaded: its NIC threads are gone, but unloading is not what a transport
  // does mid-process either.
}
