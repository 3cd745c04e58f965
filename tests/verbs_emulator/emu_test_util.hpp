// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the emulator's tests and its cross-host peer: an RC endpoint set up as a
// transport would (exchange addresses out of band, then INIT/RTR/RTS), and bounded waits.
#pragma once

#include <infiniband/verbs.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace emutest {

using Clock = std::chrono::steady_clock;

// What two ranks exchange out of band before connecting their QPs.
struct Endpoint {
  uint8_t gid[16];
  uint32_t lid;
  uint32_t qpn;
  uint32_t psn;
  uint32_t rkey;
  uint64_t addr;
  uint64_t len;
};

struct QpOpts {
  uint32_t max_send_wr = 64;
  uint32_t max_recv_wr = 64;
  uint32_t max_sge = 2;
  uint32_t max_inline = 128;
  uint8_t timeout = 10;  // 4 ms
  uint8_t retry_cnt = 3;
  uint8_t rnr_retry = 7;
  uint8_t min_rnr_timer = 1;
  int sig_all = 0;
  int qp_access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
  int mr_access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
  bool use_gid = true;  // address the peer by GID (else by LID)
  size_t buf_size = 1 << 16;
  int cqe = 256;
};

// Writes or reads exactly n bytes of fd within timeout_ms. Returns true on success.
inline bool oob_io(int fd, void* p, size_t n, bool out, int timeout_ms = 10000) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto* b = static_cast<uint8_t*>(p);
  while (n > 0) {
    pollfd pfd{fd, static_cast<short>(out ? POLLOUT : POLLIN), 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) return false;
    ssize_t r = out ? ::send(fd, b, n, MSG_NOSIGNAL) : ::recv(fd, b, n, 0);
    if (r <= 0) return false;
    b += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Polls cq until one completion arrives or timeout_ms passes.
inline bool poll_one(ibv_cq* cq, ibv_wc* wc, int timeout_ms = 10000) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int n = ibv_poll_cq(cq, 1, wc);
    if (n == 1) return true;
    if (n < 0 || Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

// Polls cq for timeout_ms and returns how many completions it held (expecting none, usually).
inline int drain(ibv_cq* cq, std::vector<ibv_wc>* out, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int total = 0;
  do {
    ibv_wc wc[16];
    int n = ibv_poll_cq(cq, 16, wc);
    for (int i = 0; i < n; ++i) {
      if (out) out->push_back(wc[i]);
      ++total;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  } while (Clock::now() < deadline);
  return total;
}

// One rank: its own context, PD, CQs, one RC QP and one registered buffer.
struct Rank {
  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  ibv_comp_channel* channel = nullptr;
  ibv_cq* scq = nullptr;
  ibv_cq* rcq = nullptr;
  ibv_qp* qp = nullptr;
  ibv_mr* mr = nullptr;
  std::vector<uint8_t> buf;
  QpOpts opts;
  uint32_t psn = 0;
  std::string error;

  bool fail(const std::string& what) {
    error = what + " (errno " + std::to_string(errno) + ")";
    return false;
  }

  bool open(const QpOpts& o = QpOpts(), bool with_channel = false, int device = 0) {
    opts = o;
    int n = 0;
    ibv_device** list = ibv_get_device_list(&n);
    if (!list || n <= device) {
      if (list) ibv_free_device_list(list);
      return fail("no device");
    }
    ctx = ibv_open_device(list[device]);
    ibv_free_device_list(list);
    if (!ctx) return fail("open");
    pd = ibv_alloc_pd(ctx);
    if (!pd) return fail("pd");
    if (with_channel && !(channel = ibv_create_comp_channel(ctx))) return fail("channel");
    scq = ibv_create_cq(ctx, o.cqe, nullptr, channel, 0);
    rcq = ibv_create_cq(ctx, o.cqe, nullptr, channel, 0);
    if (!scq || !rcq) return fail("cq");
    buf.assign(o.buf_size, 0);
    mr = ibv_reg_mr(pd, buf.data(), buf.size(), static_cast<int>(o.mr_access));
    if (!mr) return fail("mr");
    return make_qp();
  }

  bool make_qp() {
    ibv_qp_init_attr ia{};
    ia.send_cq = scq;
    ia.recv_cq = rcq;
    ia.qp_type = IBV_QPT_RC;
    ia.sq_sig_all = opts.sig_all;
    ia.cap.max_send_wr = opts.max_send_wr;
    ia.cap.max_recv_wr = opts.max_recv_wr;
    ia.cap.max_send_sge = opts.max_sge;
    ia.cap.max_recv_sge = opts.max_sge;
    ia.cap.max_inline_data = opts.max_inline;
    qp = ibv_create_qp(pd, &ia);
    if (!qp) return fail("qp");
    psn = (qp->qp_num * 7919U) & 0xffffff;
    return true;
  }

  Endpoint local() const {
    Endpoint e{};
    ibv_gid gid;
    ibv_query_gid(ctx, 1, 0, &gid);
    std::memcpy(e.gid, gid.raw, 16);
    ibv_port_attr pa;
    ibv_query_port(ctx, 1, &pa);
    e.lid = pa.lid;
    e.qpn = qp->qp_num;
    e.psn = psn;
    e.rkey = mr->rkey;
    e.addr = reinterpret_cast<uintptr_t>(buf.data());
    e.len = buf.size();
    return e;
  }

  // RESET -> INIT -> RTR -> RTS toward the peer, as an RC transport does.
  bool connect(const Endpoint& peer) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_INIT;
    a.pkey_index = 0;
    a.port_num = 1;
    a.qp_access_flags = static_cast<unsigned>(opts.qp_access);
    if (int e = ibv_modify_qp(
            qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) {
      errno = e;
      return fail("INIT");
    }
    a = ibv_qp_attr{};
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_4096;
    a.dest_qp_num = peer.qpn;
    a.rq_psn = peer.psn;
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = opts.min_rnr_timer;
    a.ah_attr.port_num = 1;
    if (opts.use_gid) {
      a.ah_attr.is_global = 1;
      std::memcpy(a.ah_attr.grh.dgid.raw, peer.gid, 16);
      a.ah_attr.grh.sgid_index = 0;
      a.ah_attr.grh.hop_limit = 1;
    } else {
      a.ah_attr.dlid = static_cast<uint16_t>(peer.lid);
    }
    if (int e =
            ibv_modify_qp(qp, &a,
                          IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                              IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER)) {
      errno = e;
      return fail("RTR");
    }
    a = ibv_qp_attr{};
    a.qp_state = IBV_QPS_RTS;
    a.timeout = opts.timeout;
    a.retry_cnt = opts.retry_cnt;
    a.rnr_retry = opts.rnr_retry;
    a.sq_psn = psn;
    a.max_rd_atomic = 1;
    if (int e = ibv_modify_qp(qp, &a,
                              IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                                  IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC)) {
      errno = e;
      return fail("RTS");
    }
    return true;
  }

  // Exchanges endpoints over the out-of-band socket, then connects.
  bool exchange_and_connect(int oob, Endpoint* peer_out = nullptr) {
    Endpoint me = local(), peer{};
    if (!oob_io(oob, &me, sizeof(me), true) || !oob_io(oob, &peer, sizeof(peer), false))
      return fail("out-of-band exchange");
    if (peer_out) *peer_out = peer;
    return connect(peer);
  }

  int post_recv(uint64_t wr_id, uint64_t off, uint32_t len) {
    ibv_sge s{reinterpret_cast<uintptr_t>(buf.data()) + off, len, mr->lkey};
    ibv_recv_wr wr{};
    wr.wr_id = wr_id;
    wr.sg_list = &s;
    wr.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    return ibv_post_recv(qp, &wr, &bad);
  }

  // Posts one send-queue WR of the local range [off, off+len).
  int post(ibv_wr_opcode op, uint64_t wr_id, uint64_t off, uint32_t len, unsigned flags,
           uint32_t imm = 0, uint64_t raddr = 0, uint32_t rkey = 0) {
    ibv_sge s{reinterpret_cast<uintptr_t>(buf.data()) + off, len, mr->lkey};
    ibv_send_wr wr{};
    wr.wr_id = wr_id;
    wr.opcode = op;
    wr.send_flags = flags;
    wr.sg_list = &s;
    wr.num_sge = len ? 1 : 0;
    wr.imm_data = htobe32(imm);
    wr.wr.rdma.remote_addr = raddr;
    wr.wr.rdma.rkey = rkey;
    ibv_send_wr* bad = nullptr;
    return ibv_post_send(qp, &wr, &bad);
  }

  void close() {
    if (qp) ibv_destroy_qp(qp);
    if (mr) ibv_dereg_mr(mr);
    if (scq) ibv_destroy_cq(scq);
    if (rcq) ibv_destroy_cq(rcq);
    if (channel) ibv_destroy_comp_channel(channel);
    if (pd) ibv_dealloc_pd(pd);
    if (ctx) ibv_close_device(ctx);
    qp = nullptr;
    mr = nullptr;
    scq = rcq = nullptr;
    channel = nullptr;
    pd = nullptr;
    ctx = nullptr;
  }
  ~Rank() { close(); }
};

inline uint8_t pattern(int iter, size_t i) { return static_cast<uint8_t>(iter * 31 + i * 7 + 1); }

// RC ping-pong of one opcode between two connected ranks; role 0 sends first. The layout of
// each buffer: [0, half) is what this rank sends from, [half, size) where it receives.
// Returns "" or a description of the first mismatch.
inline std::string pingpong(Rank& r, const Endpoint& peer, int role, ibv_wr_opcode op, bool inl,
                            int iters, uint32_t len) {
  const uint64_t half = r.buf.size() / 2;
  const bool recv_needed = op != IBV_WR_RDMA_WRITE;
  const unsigned flags = IBV_SEND_SIGNALED | (inl ? IBV_SEND_INLINE : 0);
  // One receive always posted ahead: RDMA WRITE is followed by a zero-byte SEND as the
  // notification, whose arrival proves the write before it was placed (RC ordering).
  if (r.post_recv(0, half, static_cast<uint32_t>(half)) != 0) return "post_recv";
  for (int it = 0; it < iters; ++it) {
    bool sender = (it % 2) == role;
    if (sender) {
      for (uint32_t i = 0; i < len; ++i) r.buf[i] = pattern(it, i);
      uint32_t imm = 0x1000 + static_cast<uint32_t>(it);
      int rc =
          r.post(op, static_cast<uint64_t>(it), 0, len, flags, imm, peer.addr + half, peer.rkey);
      if (rc) return "post_send " + std::to_string(rc);
      if (!recv_needed && r.post(IBV_WR_SEND, 1000000 + it, 0, 0, IBV_SEND_SIGNALED) != 0)
        return "post notify";
      int sends = recv_needed ? 1 : 2;
      for (int k = 0; k < sends; ++k) {
        ibv_wc wc;
        if (!poll_one(r.scq, &wc)) return "no send completion";
        if (wc.status != IBV_WC_SUCCESS)
          return std::string("send status ") + ibv_wc_status_str(wc.status);
        ibv_wc_opcode want = (op == IBV_WR_RDMA_WRITE || op == IBV_WR_RDMA_WRITE_WITH_IMM) && k == 0
                                 ? IBV_WC_RDMA_WRITE
                                 : IBV_WC_SEND;
        if (wc.opcode != want) return "send opcode";
      }
    } else {
      ibv_wc wc;
      if (!poll_one(r.rcq, &wc)) return "no receive completion";
      if (wc.status != IBV_WC_SUCCESS)
        return std::string("recv status ") + ibv_wc_status_str(wc.status);
      if (wc.qp_num != r.qp->qp_num || wc.src_qp != peer.qpn) return "recv qp numbers";
      if (op == IBV_WR_RDMA_WRITE_WITH_IMM) {
        if (wc.opcode != IBV_WC_RECV_RDMA_WITH_IMM) return "recv opcode";
      } else if (wc.opcode != IBV_WC_RECV) {
        return "recv opcode";
      }
      uint32_t want_len = op == IBV_WR_RDMA_WRITE ? 0 : len;
      if (wc.byte_len != want_len) return "byte_len " + std::to_string(wc.byte_len);
      bool imm = op == IBV_WR_SEND_WITH_IMM || op == IBV_WR_RDMA_WRITE_WITH_IMM;
      if (imm != ((wc.wc_flags & IBV_WC_WITH_IMM) != 0)) return "imm flag";
      if (imm && be32toh(wc.imm_data) != 0x1000 + static_cast<uint32_t>(it)) return "imm value";
      for (uint32_t i = 0; i < len; ++i)
        if (r.buf[half + i] != pattern(it, i)) return "data at " + std::to_string(i);
      if (r.post_recv(0, half, static_cast<uint32_t>(half)) != 0) return "post_recv";
    }
  }
  return "";
}

}  // namespace emutest
