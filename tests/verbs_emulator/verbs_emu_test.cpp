// SPDX-License-Identifier: Apache-2.0
// Tests of the emulated libibverbs RC device: ping-pong of every opcode over threads and
// processes, every error completion, queue limits, channels, async events, access logs, fork.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>

#include "emu_test_util.hpp"
#include "ringlet_verbs_emu.h"

using namespace emutest;

namespace {

// A connected pair of ranks in this process, each with its own context (as thread ranks are).
struct Pair {
  Rank a, b;
  Endpoint ea{}, eb{};
  bool up(const QpOpts& oa = QpOpts(), const QpOpts& ob = QpOpts(), bool channel = false) {
    if (!a.open(oa, channel) || !b.open(ob, channel)) return false;
    ea = a.local();
    eb = b.local();
    return a.connect(eb) && b.connect(ea);
  }
  std::string error() const { return a.error + " / " + b.error; }
};

// Waits for a forked child with a deadline; kills it when the deadline passes.
int wait_child(pid_t pid, int timeout_ms = 30000) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int st = 0;
    pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (Clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

ibv_wc_status wait_status(ibv_cq* cq, ibv_wc* wc_out = nullptr) {
  ibv_wc wc{};
  if (!poll_one(cq, &wc)) return static_cast<ibv_wc_status>(-1);
  if (wc_out) *wc_out = wc;
  return wc.status;
}

bool wait_async(ibv_context* ctx, ibv_async_event* ev, int timeout_ms = 5000) {
  pollfd p{ctx->async_fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return false;
  return ibv_get_async_event(ctx, ev) == 0;
}

// Every run gets a socket folder of its own, removed at the end: a test that kills a rank
// leaves that rank's socket behind, as a crashed process would.
class SocketDirEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    char tmpl[] = "/tmp/rlemu-test.XXXXXX";
    if (!::mkdtemp(tmpl)) return;
    dir_ = tmpl;
    ::setenv("RINGLET_VERBS_EMU_DIR", dir_.c_str(), 1);
  }
  void TearDown() override {
    if (dir_.empty()) return;
    // Every NIC that closed removed its socket and LID name; only the rank that
    // PeerProcessGoneIsRetryExceeded kills leaves its two behind.
    std::vector<std::string> left;
    for (const auto& e : std::filesystem::directory_iterator(dir_))
      left.push_back(e.path().filename().string());
    EXPECT_LE(left.size(), 2u) << ::testing::PrintToString(left);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    EXPECT_FALSE(ec) << ec.message();
  }

 private:
  std::string dir_;
};
[[maybe_unused]] ::testing::Environment* const g_env =
    ::testing::AddGlobalTestEnvironment(new SocketDirEnvironment);

}  // namespace

// ---- Device, context and strings -----------------------------------------------------------

TEST(DeviceTest, ListNameGuidPortAndGid) {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  ASSERT_NE(list, nullptr);
  ASSERT_GE(n, 1);
  EXPECT_EQ(list[n], nullptr);
  EXPECT_STREQ(ibv_get_device_name(list[0]), "rlemu0");
  uint64_t guid = be64toh(ibv_get_device_guid(list[0]));
  EXPECT_EQ(guid & 0xffffffffULL, static_cast<uint64_t>(::getpid())) << "the GUID names the pid";
  ibv_context* ctx = ibv_open_device(list[0]);
  ASSERT_NE(ctx, nullptr);
  ibv_free_device_list(list);

  ibv_device_attr da;
  ASSERT_EQ(ibv_query_device(ctx, &da), 0);
  EXPECT_EQ(be64toh(da.node_guid), guid);
  EXPECT_EQ(da.phys_port_cnt, 1);
  ibv_device_attr_ex dax;
  ASSERT_EQ(ibv_query_device_ex(ctx, nullptr, &dax), 0);
  EXPECT_EQ(dax.orig_attr.max_qp_wr, da.max_qp_wr);

  ibv_port_attr pa;
  ASSERT_EQ(ibv_query_port(ctx, 1, &pa), 0);  // the inline wrapper over verbs_context
  EXPECT_EQ(pa.state, IBV_PORT_ACTIVE);
  EXPECT_EQ(pa.link_layer, IBV_LINK_LAYER_INFINIBAND);
  EXPECT_NE(pa.lid, 0);
  EXPECT_LT(pa.lid, 0xc000);
  EXPECT_EQ(pa.active_mtu, IBV_MTU_4096);
  EXPECT_EQ(ibv_query_port(ctx, 2, &pa), EINVAL);

  ibv_gid gid;
  ASSERT_EQ(ibv_query_gid(ctx, 1, 0, &gid), 0);
  EXPECT_EQ(be64toh(gid.global.interface_id), guid);
  EXPECT_EQ(be64toh(gid.global.subnet_prefix), 0xfe80000000000000ULL);
  EXPECT_EQ(ibv_query_gid(ctx, 1, 1, &gid), -1);
  ibv_gid_entry ge;
  ASSERT_EQ(ibv_query_gid_ex(ctx, 1, 0, &ge, 0), 0);
  EXPECT_EQ(std::memcmp(ge.gid.raw, gid.raw, 16), 0);
  EXPECT_EQ(ge.gid_type, IBV_GID_TYPE_IB);
  EXPECT_EQ(ibv_query_gid_ex(ctx, 1, 3, &ge, 0), ENODATA);
  EXPECT_EQ(ibv_close_device(ctx), 0);
}

TEST(DeviceTest, VerbsContextLayoutAndCompatQueryPort) {
  Rank r;
  ASSERT_TRUE(r.open()) << r.error;
  verbs_context* v = verbs_get_ctx(r.ctx);
  ASSERT_NE(v, nullptr) << "abi_compat must be the extended-ABI marker";
  EXPECT_EQ(v->sz, sizeof(verbs_context));
  EXPECT_EQ(&v->context, r.ctx);
  // What verbs_get_ctx_op(ctx, query_port) checks, without the GNU statement expression.
  EXPECT_GE(v->sz, sizeof(*v) - offsetof(verbs_context, query_port));
  EXPECT_NE(v->query_port, nullptr);
  EXPECT_NE(r.ctx->ops.post_send, nullptr);
  EXPECT_NE(r.ctx->ops.post_recv, nullptr);
  EXPECT_NE(r.ctx->ops.poll_cq, nullptr);
  EXPECT_NE(r.ctx->ops.req_notify_cq, nullptr);
  // The exported function behind the macro, as an older binary would call it.
  ibv_port_attr pa{};
  ASSERT_EQ((ibv_query_port)(r.ctx, 1, reinterpret_cast<_compat_ibv_port_attr*>(&pa)), 0);
  EXPECT_EQ(pa.state, IBV_PORT_ACTIVE);
  EXPECT_EQ(pa.lid, r.local().lid);
}

TEST(DeviceTest, StringHelpers) {
  EXPECT_STREQ(ibv_wc_status_str(IBV_WC_SUCCESS), "success");
  EXPECT_STREQ(ibv_wc_status_str(IBV_WC_REM_ACCESS_ERR), "remote access error");
  EXPECT_STREQ(ibv_wc_status_str(IBV_WC_RETRY_EXC_ERR), "transport retry counter exceeded");
  EXPECT_STREQ(ibv_event_type_str(IBV_EVENT_QP_FATAL), "local work queue catastrophic error");
  EXPECT_STREQ(ibv_event_type_str(IBV_EVENT_PORT_ERR), "port error");
  EXPECT_STREQ(ibv_node_type_str(IBV_NODE_CA), "InfiniBand channel adapter");
  EXPECT_STREQ(ibv_port_state_str(IBV_PORT_ACTIVE), "PORT_ACTIVE");
  EXPECT_STREQ(ibv_wc_status_str(static_cast<ibv_wc_status>(999)), "unknown");
}

// ---- Memory registration -------------------------------------------------------------------

TEST(MrTest, RegistrationChecks) {
  Rank r;
  ASSERT_TRUE(r.open()) << r.error;
  std::vector<uint8_t> mem(8192);
  errno = 0;
  EXPECT_EQ(ibv_reg_mr(r.pd, mem.data(), mem.size(), static_cast<int>(IBV_ACCESS_REMOTE_WRITE)),
            nullptr);
  EXPECT_EQ(errno, EINVAL) << "remote write needs local write";
  errno = 0;
  EXPECT_EQ(ibv_reg_mr(r.pd, mem.data(), 0, static_cast<int>(IBV_ACCESS_LOCAL_WRITE)), nullptr);
  EXPECT_EQ(errno, EINVAL);
  // An address range with nothing mapped fails as pinning would.
  void* hole = ::mmap(nullptr, 8192, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(hole, MAP_FAILED);
  ::munmap(hole, 8192);
  errno = 0;
  EXPECT_EQ(ibv_reg_mr(r.pd, hole, 8192, static_cast<int>(IBV_ACCESS_LOCAL_WRITE)), nullptr);
  EXPECT_EQ(errno, EFAULT);
  errno = 0;
  EXPECT_EQ(ibv_reg_dmabuf_mr(r.pd, 0, 4096, 0, 3, static_cast<int>(IBV_ACCESS_LOCAL_WRITE)),
            nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
  // Every registration entry works; the iova form translates remote addresses.
  ibv_mr* m1 = ibv_reg_mr_iova2(r.pd, mem.data(), 4096, 0x10000, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(m1, nullptr);
  EXPECT_EQ(m1->addr, mem.data());
  EXPECT_NE(m1->lkey, m1->rkey);
  ibv_mr* m2 = ibv_reg_mr(r.pd, mem.data() + 4096, 4096,
                          static_cast<int>(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                           IBV_ACCESS_RELAXED_ORDERING));
  ASSERT_NE(m2, nullptr);
  EXPECT_EQ(ibv_dealloc_pd(r.pd), EBUSY) << "a PD with MRs cannot go";
  EXPECT_EQ(ibv_dereg_mr(m1), 0);
  EXPECT_EQ(ibv_dereg_mr(m2), 0);
}

// ---- QP state machine ----------------------------------------------------------------------

TEST(QpTest, TransitionMasksAreChecked) {
  Rank r, peer;
  ASSERT_TRUE(r.open() && peer.open()) << r.error << peer.error;
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_INIT;
  a.port_num = 1;
  a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
  EXPECT_EQ(ibv_modify_qp(r.qp, &a, IBV_QP_STATE | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS), EINVAL)
      << "INIT needs PKEY_INDEX";
  EXPECT_EQ(ibv_modify_qp(r.qp, &a,
                          IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS |
                              IBV_QP_SQ_PSN),
            EINVAL)
      << "SQ_PSN is not allowed in RESET->INIT";
  a.port_num = 2;
  EXPECT_EQ(
      ibv_modify_qp(r.qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS),
      EINVAL)
      << "no port 2";
  a.port_num = 1;
  a.qp_state = IBV_QPS_RTR;
  EXPECT_EQ(ibv_modify_qp(r.qp, &a, IBV_QP_STATE), EINVAL) << "RESET->RTR does not exist";
  a.qp_state = IBV_QPS_INIT;
  ASSERT_EQ(
      ibv_modify_qp(r.qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS),
      0);
  EXPECT_EQ(r.qp->state, IBV_QPS_INIT);

  Endpoint pe = peer.local();
  ibv_qp_attr b{};
  b.qp_state = IBV_QPS_RTR;
  b.path_mtu = IBV_MTU_1024;
  b.dest_qp_num = pe.qpn;
  b.rq_psn = pe.psn;
  b.max_dest_rd_atomic = 1;
  b.min_rnr_timer = 12;
  b.ah_attr.port_num = 1;
  b.ah_attr.dlid = static_cast<uint16_t>(pe.lid);
  const int rtr = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                  IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
  EXPECT_EQ(ibv_modify_qp(r.qp, &b, rtr & ~IBV_QP_MIN_RNR_TIMER), EINVAL);
  EXPECT_EQ(ibv_modify_qp(r.qp, &b, rtr & ~IBV_QP_AV), EINVAL);
  EXPECT_EQ(ibv_modify_qp(r.qp, &b, rtr | IBV_QP_TIMEOUT), EINVAL) << "TIMEOUT belongs to RTS";
  ASSERT_EQ(ibv_modify_qp(r.qp, &b, rtr), 0);

  ibv_qp_attr c{};
  c.qp_state = IBV_QPS_RTS;
  c.timeout = 14;
  c.retry_cnt = 7;
  c.rnr_retry = 7;
  c.sq_psn = 5;
  c.max_rd_atomic = 1;
  const int rts = IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                  IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC;
  EXPECT_EQ(ibv_modify_qp(r.qp, &c, rts & ~IBV_QP_SQ_PSN), EINVAL);
  EXPECT_EQ(ibv_modify_qp(r.qp, &c, rts | IBV_QP_DEST_QPN), EINVAL);
  c.retry_cnt = 8;
  EXPECT_EQ(ibv_modify_qp(r.qp, &c, rts), EINVAL) << "retry_cnt is 3 bits";
  c.retry_cnt = 7;
  ASSERT_EQ(ibv_modify_qp(r.qp, &c, rts), 0);

  ibv_qp_attr q{};
  ibv_qp_init_attr qi{};
  ASSERT_EQ(ibv_query_qp(r.qp, &q, IBV_QP_STATE | IBV_QP_CAP, &qi), 0);
  EXPECT_EQ(q.qp_state, IBV_QPS_RTS);
  EXPECT_EQ(q.dest_qp_num, pe.qpn);
  EXPECT_EQ(q.sq_psn, 5u);
  EXPECT_EQ(q.path_mtu, IBV_MTU_1024);
  EXPECT_EQ(qi.cap.max_inline_data, r.opts.max_inline);
  // Any state goes to ERR and to RESET with the state alone.
  ibv_qp_attr e{};
  e.qp_state = IBV_QPS_ERR;
  EXPECT_EQ(ibv_modify_qp(r.qp, &e, IBV_QP_STATE | IBV_QP_PORT), EINVAL);
  EXPECT_EQ(ibv_modify_qp(r.qp, &e, IBV_QP_STATE), 0);
  EXPECT_EQ(r.qp->state, IBV_QPS_ERR);
  e.qp_state = IBV_QPS_RESET;
  EXPECT_EQ(ibv_modify_qp(r.qp, &e, IBV_QP_STATE), 0);
  EXPECT_EQ(r.qp->state, IBV_QPS_RESET);
  // Unsupported QP types are refused.
  ibv_qp_init_attr ud{};
  ud.send_cq = r.scq;
  ud.recv_cq = r.rcq;
  ud.qp_type = IBV_QPT_UD;
  ud.cap.max_send_wr = 1;
  errno = 0;
  EXPECT_EQ(ibv_create_qp(r.pd, &ud), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
}

// ---- Ping-pong of every opcode -------------------------------------------------------------

enum class Mode { Threads, Processes };
using PingParam = std::tuple<Mode, ibv_wr_opcode, bool>;

class PingPongTest : public ::testing::TestWithParam<PingParam> {};

std::string ping_name(const ::testing::TestParamInfo<PingParam>& info) {
  std::string s = std::get<0>(info.param) == Mode::Threads ? "Threads" : "Processes";
  switch (std::get<1>(info.param)) {
    case IBV_WR_SEND:
      s += "_Send";
      break;
    case IBV_WR_SEND_WITH_IMM:
      s += "_SendImm";
      break;
    case IBV_WR_RDMA_WRITE:
      s += "_Write";
      break;
    default:
      s += "_WriteImm";
      break;
  }
  return s + (std::get<2>(info.param) ? "_Inline" : "_Copy");
}

// One rank of the ping-pong; its own context, as a rank in another thread or process has.
std::string run_rank(int oob, int role, ibv_wr_opcode op, bool inl) {
  Rank r;
  if (!r.open()) return r.error;
  Endpoint peer;
  if (!r.exchange_and_connect(oob, &peer)) return r.error;
  // Inline messages fit the inline limit; copied ones span several MTUs.
  uint32_t len = inl ? 100 : 10000;
  std::string err = pingpong(r, peer, role, op, inl, 60, len);
  // Both sides finish before either tears down, so that no last ACK meets a destroyed QP.
  char done = 1;
  if (!oob_io(oob, &done, 1, true) || !oob_io(oob, &done, 1, false)) return err + " final sync";
  return err;
}

TEST_P(PingPongTest, EveryOpcode) {
  const Mode mode = std::get<0>(GetParam());
  const ibv_wr_opcode op = std::get<1>(GetParam());
  const bool inl = std::get<2>(GetParam());
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  if (mode == Mode::Threads) {
    std::string e1;
    std::thread t([&] { e1 = run_rank(sv[1], 1, op, inl); });
    std::string e0 = run_rank(sv[0], 0, op, inl);
    t.join();
    EXPECT_EQ(e0, "");
    EXPECT_EQ(e1, "");
  } else {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(sv[0]);
      std::string e = run_rank(sv[1], 1, op, inl);
      if (!e.empty()) std::fprintf(stderr, "child: %s\n", e.c_str());
      ::_exit(e.empty() ? 0 : 1);
    }
    ::close(sv[1]);
    sv[1] = -1;
    EXPECT_EQ(run_rank(sv[0], 0, op, inl), "");
    EXPECT_EQ(wait_child(pid), 0);
  }
  ::close(sv[0]);
  if (sv[1] >= 0) ::close(sv[1]);
}

INSTANTIATE_TEST_SUITE_P(All, PingPongTest,
                         ::testing::Combine(::testing::Values(Mode::Threads, Mode::Processes),
                                            ::testing::Values(IBV_WR_SEND, IBV_WR_SEND_WITH_IMM,
                                                              IBV_WR_RDMA_WRITE,
                                                              IBV_WR_RDMA_WRITE_WITH_IMM),
                                            ::testing::Bool()),
                         ping_name);

TEST(PingPongExtraTest, AddressedByLid) {
  QpOpts o;
  o.use_gid = false;
  Pair p;
  ASSERT_TRUE(p.up(o, o)) << p.error();
  std::string e1;
  std::thread t([&] { e1 = pingpong(p.b, p.ea, 1, IBV_WR_SEND_WITH_IMM, false, 20, 3000); });
  EXPECT_EQ(pingpong(p.a, p.eb, 0, IBV_WR_SEND_WITH_IMM, false, 20, 3000), "");
  t.join();
  EXPECT_EQ(e1, "");
}

TEST(PingPongExtraTest, MultiSgeGatherAndScatterInOrder) {
  Pair p;
  ASSERT_TRUE(p.up()) << p.error();
  const uint32_t n = 300000;  // many MTUs; two SGEs on both sides
  std::vector<uint8_t> src(n), dst(n + 100);
  for (uint32_t i = 0; i < n; ++i) src[i] = static_cast<uint8_t>(i * 13 + 5);
  ibv_mr* ms = ibv_reg_mr(p.a.pd, src.data(), src.size(), static_cast<int>(IBV_ACCESS_LOCAL_WRITE));
  ibv_mr* md = ibv_reg_mr(p.b.pd, dst.data(), dst.size(), static_cast<int>(IBV_ACCESS_LOCAL_WRITE));
  ASSERT_TRUE(ms && md);
  // Three receives, then three sends: each lands in its own receive, in order.
  for (int k = 0; k < 3; ++k) {
    ibv_sge rs[2] = {{reinterpret_cast<uintptr_t>(dst.data()), 1000, md->lkey},
                     {reinterpret_cast<uintptr_t>(dst.data()) + 1000, n - 1000 + 100, md->lkey}};
    ibv_recv_wr rw{};
    rw.wr_id = 10 + static_cast<uint64_t>(k);
    rw.sg_list = rs;
    rw.num_sge = 2;
    ibv_recv_wr* bad = nullptr;
    ASSERT_EQ(ibv_post_recv(p.b.qp, &rw, &bad), 0);
  }
  ibv_sge ss[2] = {{reinterpret_cast<uintptr_t>(src.data()), 7, ms->lkey},
                   {reinterpret_cast<uintptr_t>(src.data()) + 7, n - 7, ms->lkey}};
  for (int k = 0; k < 3; ++k) {
    ibv_send_wr sw{};
    sw.wr_id = 20 + static_cast<uint64_t>(k);
    sw.opcode = IBV_WR_SEND;
    sw.send_flags = IBV_SEND_SIGNALED;
    sw.sg_list = ss;
    sw.num_sge = 2;
    ibv_send_wr* bad = nullptr;
    ASSERT_EQ(ibv_post_send(p.a.qp, &sw, &bad), 0);
  }
  for (int k = 0; k < 3; ++k) {
    ibv_wc wc;
    ASSERT_TRUE(poll_one(p.b.rcq, &wc));
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
    EXPECT_EQ(wc.wr_id, 10u + static_cast<unsigned>(k));
    EXPECT_EQ(wc.byte_len, n);
    ASSERT_TRUE(poll_one(p.a.scq, &wc));
    EXPECT_EQ(wc.wr_id, 20u + static_cast<unsigned>(k));
  }
  EXPECT_EQ(std::memcmp(src.data(), dst.data(), n), 0);
  ibv_dereg_mr(ms);
  ibv_dereg_mr(md);
}

// ---- Error completions ---------------------------------------------------------------------

class ErrorTest : public ::testing::Test {
 protected:
  Pair p;
  uint64_t half() const { return p.b.buf.size() / 2; }
};

TEST_F(ErrorTest, RemoteAccessErrorsAndResponderAsyncEvent) {
  struct Case {
    const char* what;
    int mr_access;
    int qp_access;
    bool bad_rkey;
    uint64_t offset;
  };
  const int lw = IBV_ACCESS_LOCAL_WRITE, rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
  const Case cases[] = {
      {"bad rkey", rw, rw, true, 0},
      {"out of bounds", rw, rw, false, (1 << 16) - 8},
      {"MR without REMOTE_WRITE", lw, rw, false, 0},
      {"QP without REMOTE_WRITE", rw, lw, false, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Pair q;
    QpOpts ob;
    ob.mr_access = c.mr_access;
    ob.qp_access = c.qp_access;
    ASSERT_TRUE(q.up(QpOpts(), ob)) << q.error();
    uint32_t rkey = c.bad_rkey ? q.eb.rkey + 0x100 : q.eb.rkey;
    ASSERT_EQ(
        q.a.post(IBV_WR_RDMA_WRITE, 1, 0, 64, IBV_SEND_SIGNALED, 0, q.eb.addr + c.offset, rkey), 0);
    ASSERT_EQ(q.a.post(IBV_WR_SEND, 2, 0, 8, 0), 0);  // unsignalled, still flushed
    ibv_wc wc;
    EXPECT_EQ(wait_status(q.a.scq, &wc), IBV_WC_REM_ACCESS_ERR);
    EXPECT_EQ(wc.wr_id, 1u);
    EXPECT_EQ(wait_status(q.a.scq, &wc), IBV_WC_WR_FLUSH_ERR);
    EXPECT_EQ(wc.wr_id, 2u);
    EXPECT_EQ(q.a.qp->state, IBV_QPS_ERR);
    ibv_async_event ev;
    ASSERT_TRUE(wait_async(q.b.ctx, &ev));
    EXPECT_EQ(ev.event_type, IBV_EVENT_QP_ACCESS_ERR);
    EXPECT_EQ(ev.element.qp, q.b.qp);
    ibv_ack_async_event(&ev);
    EXPECT_EQ(q.b.qp->state, IBV_QPS_ERR);
    for (size_t i = 0; i < q.b.buf.size(); ++i) ASSERT_EQ(q.b.buf[i], 0) << "byte " << i;
  }
}

TEST_F(ErrorTest, SendLongerThanReceiveIsLocalLengthError) {
  ASSERT_TRUE(p.up()) << p.error();
  ASSERT_EQ(p.b.post_recv(7, 0, 100), 0);
  ASSERT_EQ(p.b.post_recv(8, 100, 100), 0);
  ASSERT_EQ(p.a.post(IBV_WR_SEND, 1, 0, 101, IBV_SEND_SIGNALED), 0);
  ibv_wc wc;
  EXPECT_EQ(wait_status(p.b.rcq, &wc), IBV_WC_LOC_LEN_ERR);
  EXPECT_EQ(wc.wr_id, 7u);
  EXPECT_EQ(wait_status(p.b.rcq, &wc), IBV_WC_WR_FLUSH_ERR) << "the next receive is flushed";
  EXPECT_EQ(wc.wr_id, 8u);
  EXPECT_EQ(wait_status(p.a.scq, &wc), IBV_WC_REM_INV_REQ_ERR);
}

TEST_F(ErrorTest, NoReceivePostedIsRnrRetryExceeded) {
  QpOpts o;
  o.rnr_retry = 2;
  o.min_rnr_timer = 12;  // 0.64 ms
  ASSERT_TRUE(p.up(o, o)) << p.error();
  ASSERT_EQ(p.a.post(IBV_WR_SEND_WITH_IMM, 1, 0, 16, IBV_SEND_SIGNALED, 5), 0);
  EXPECT_EQ(wait_status(p.a.scq), IBV_WC_RNR_RETRY_EXC_ERR);
  // WRITE_WITH_IMM needs a receive just as SEND does.
  Pair q;
  ASSERT_TRUE(q.up(o, o)) << q.error();
  ASSERT_EQ(
      q.a.post(IBV_WR_RDMA_WRITE_WITH_IMM, 1, 0, 16, IBV_SEND_SIGNALED, 5, q.eb.addr, q.eb.rkey),
      0);
  EXPECT_EQ(wait_status(q.a.scq), IBV_WC_RNR_RETRY_EXC_ERR);
}

TEST_F(ErrorTest, RnrRetryRecoversWhenReceiveArrives) {
  QpOpts o;
  o.rnr_retry = 7;  // for ever
  o.min_rnr_timer = 14;
  ASSERT_TRUE(p.up(o, o)) << p.error();
  ASSERT_EQ(p.a.post(IBV_WR_SEND, 1, 0, 16, IBV_SEND_SIGNALED), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  ASSERT_EQ(p.b.post_recv(3, 0, 64), 0);
  EXPECT_EQ(wait_status(p.a.scq), IBV_WC_SUCCESS);
  EXPECT_EQ(wait_status(p.b.rcq), IBV_WC_SUCCESS);
}

TEST_F(ErrorTest, PeerQpGoneIsRetryExceeded) {
  ASSERT_TRUE(p.up()) << p.error();
  ASSERT_EQ(ibv_destroy_qp(p.b.qp), 0);
  p.b.qp = nullptr;
  auto t0 = Clock::now();
  ASSERT_EQ(p.a.post(IBV_WR_RDMA_WRITE, 1, 0, 16, IBV_SEND_SIGNALED, 0, p.eb.addr, p.eb.rkey), 0);
  EXPECT_EQ(wait_status(p.a.scq), IBV_WC_RETRY_EXC_ERR);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
}

TEST_F(ErrorTest, PeerProcessGoneIsRetryExceeded) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(sv[0]);
    Rank r;
    if (!r.open() || !r.exchange_and_connect(sv[1])) ::_exit(1);
    if (r.post_recv(1, 0, 64) != 0) ::_exit(2);
    ibv_wc wc;
    if (!poll_one(r.rcq, &wc) || wc.status != IBV_WC_SUCCESS) ::_exit(3);
    ::_exit(0);  // gone without tearing anything down, as a crashed rank
  }
  ::close(sv[1]);
  Rank r;
  ASSERT_TRUE(r.open()) << r.error;
  ASSERT_TRUE(r.exchange_and_connect(sv[0])) << r.error;
  ASSERT_EQ(r.post(IBV_WR_SEND, 1, 0, 8, IBV_SEND_SIGNALED), 0);
  EXPECT_EQ(wait_status(r.scq), IBV_WC_SUCCESS);
  EXPECT_EQ(wait_child(pid), 0);
  ASSERT_EQ(r.post(IBV_WR_SEND, 2, 0, 8, IBV_SEND_SIGNALED), 0);
  EXPECT_EQ(wait_status(r.scq), IBV_WC_RETRY_EXC_ERR);
  ::close(sv[0]);
}

TEST_F(ErrorTest, PsnMismatchAndWrongDestinationAreRetryExceeded) {
  ASSERT_TRUE(p.a.open() && p.b.open());
  Endpoint ea = p.a.local(), eb = p.b.local();
  Endpoint wrong = ea;
  wrong.psn = (ea.psn + 5) & 0xffffff;  // b expects a PSN that a never sends
  ASSERT_TRUE(p.a.connect(eb) && p.b.connect(wrong));
  ASSERT_EQ(p.b.post_recv(1, 0, 64), 0);
  ASSERT_EQ(p.a.post(IBV_WR_SEND, 1, 0, 8, IBV_SEND_SIGNALED), 0);
  EXPECT_EQ(wait_status(p.a.scq), IBV_WC_RETRY_EXC_ERR);
  ibv_wc none;
  EXPECT_EQ(ibv_poll_cq(p.b.rcq, 1, &none), 0) << "nothing was delivered";
  // The requester ahead of the responder: a sequence error.
  Pair r;
  ASSERT_TRUE(r.a.open() && r.b.open());
  Endpoint ra = r.a.local(), rb = r.b.local();
  Endpoint behind = ra;
  behind.psn = (ra.psn - 3) & 0xffffff;
  ASSERT_TRUE(r.a.connect(rb) && r.b.connect(behind));
  ASSERT_EQ(r.b.post_recv(1, 0, 64), 0);
  ASSERT_EQ(r.a.post(IBV_WR_SEND, 1, 0, 8, IBV_SEND_SIGNALED), 0);
  EXPECT_EQ(wait_status(r.a.scq), IBV_WC_RETRY_EXC_ERR);

  // A QP accepts packets only from the QP it was connected to.
  Pair q;
  Rank third;
  ASSERT_TRUE(q.a.open() && q.b.open() && third.open());
  Endpoint qb = q.b.local(), qt = third.local();
  ASSERT_TRUE(q.a.connect(qb) && q.b.connect(qt));
  ASSERT_EQ(q.b.post_recv(1, 0, 64), 0);
  ASSERT_EQ(q.a.post(IBV_WR_SEND, 1, 0, 8, IBV_SEND_SIGNALED), 0);
  EXPECT_EQ(wait_status(q.a.scq), IBV_WC_RETRY_EXC_ERR);
}

TEST_F(ErrorTest, BadLkeyIsLocalProtectionError) {
  ASSERT_TRUE(p.up()) << p.error();
  ibv_sge s{reinterpret_cast<uintptr_t>(p.a.buf.data()), 64, p.a.mr->lkey + 0x100};
  ibv_send_wr wr{};
  wr.wr_id = 9;
  wr.opcode = IBV_WR_SEND;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.sg_list = &s;
  wr.num_sge = 1;
  ibv_send_wr* bad = nullptr;
  ASSERT_EQ(ibv_post_send(p.a.qp, &wr, &bad), 0);
  ibv_wc wc;
  EXPECT_EQ(wait_status(p.a.scq, &wc), IBV_WC_LOC_PROT_ERR);
  EXPECT_EQ(wc.wr_id, 9u);
  // A receive buffer without local write cannot take a SEND.
  Pair q;
  ASSERT_TRUE(q.up()) << q.error();
  std::vector<uint8_t> ro(256);
  ibv_mr* m = ibv_reg_mr(q.b.pd, ro.data(), ro.size(), 0);
  ASSERT_NE(m, nullptr);
  ibv_sge rs{reinterpret_cast<uintptr_t>(ro.data()), 256, m->lkey};
  ibv_recv_wr rw{};
  rw.wr_id = 4;
  rw.sg_list = &rs;
  rw.num_sge = 1;
  ibv_recv_wr* rbad = nullptr;
  ASSERT_EQ(ibv_post_recv(q.b.qp, &rw, &rbad), 0);
  ASSERT_EQ(q.a.post(IBV_WR_SEND, 1, 0, 8, IBV_SEND_SIGNALED), 0);
  EXPECT_EQ(wait_status(q.b.rcq, &wc), IBV_WC_LOC_PROT_ERR);
  EXPECT_EQ(wait_status(q.a.scq, &wc), IBV_WC_REM_OP_ERR);
  ASSERT_EQ(ibv_destroy_qp(q.b.qp), 0);
  q.b.qp = nullptr;
  ibv_dereg_mr(m);
}

TEST_F(ErrorTest, ErrorStateFlushesQueuedAndNewWork) {
  ASSERT_TRUE(p.up()) << p.error();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(p.b.post_recv(100 + static_cast<uint64_t>(i), 0, 64), 0);
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_ERR;
  ASSERT_EQ(ibv_modify_qp(p.b.qp, &a, IBV_QP_STATE), 0);
  for (int i = 0; i < 3; ++i) {
    ibv_wc wc;
    EXPECT_EQ(wait_status(p.b.rcq, &wc), IBV_WC_WR_FLUSH_ERR);
    EXPECT_EQ(wc.wr_id, 100u + static_cast<unsigned>(i)) << "flushed in order";
    EXPECT_EQ(wc.opcode, IBV_WC_RECV);
  }
  // Work posted in ERR completes at once with a flush error, signalled or not.
  ASSERT_EQ(p.b.post_recv(200, 0, 64), 0);
  ASSERT_EQ(p.b.post(IBV_WR_SEND, 201, 0, 8, 0), 0);
  ibv_wc wc;
  EXPECT_EQ(wait_status(p.b.rcq, &wc), IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(wc.wr_id, 200u);
  EXPECT_EQ(wait_status(p.b.scq, &wc), IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(wc.wr_id, 201u);
  // The peer's sends now go nowhere.
  ASSERT_EQ(p.a.post(IBV_WR_SEND, 1, 0, 8, IBV_SEND_SIGNALED), 0);
  EXPECT_EQ(wait_status(p.a.scq), IBV_WC_RETRY_EXC_ERR);
}

// ---- Queue limits --------------------------------------------------------------------------

TEST(QueueTest, SendSlotsStayUsedUntilCompletionsArePolled) {
  QpOpts o;
  o.max_send_wr = 4;
  Pair p;
  ASSERT_TRUE(p.up(o, QpOpts())) << p.error();
  for (int i = 0; i < 8; ++i) ASSERT_EQ(p.b.post_recv(static_cast<uint64_t>(i), 0, 64), 0);
  // Three unsignalled and one signalled WR fill the queue.
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(p.a.post(IBV_WR_SEND, static_cast<uint64_t>(i), 0, 8, 0), 0);
  ASSERT_EQ(p.a.post(IBV_WR_SEND, 3, 0, 8, IBV_SEND_SIGNALED), 0);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(wait_status(p.b.rcq), IBV_WC_SUCCESS);
  // All four executed, yet the queue is full until the signalled completion is polled.
  ibv_sge s{reinterpret_cast<uintptr_t>(p.a.buf.data()), 8, p.a.mr->lkey};
  ibv_send_wr wr{};
  wr.wr_id = 4;
  wr.opcode = IBV_WR_SEND;
  wr.sg_list = &s;
  wr.num_sge = 1;
  ibv_send_wr* bad = nullptr;
  EXPECT_EQ(ibv_post_send(p.a.qp, &wr, &bad), ENOMEM);
  EXPECT_EQ(bad, &wr);
  ibv_wc wc;
  ASSERT_EQ(wait_status(p.a.scq, &wc), IBV_WC_SUCCESS);
  EXPECT_EQ(wc.wr_id, 3u);
  bad = reinterpret_cast<ibv_send_wr*>(0x1);
  // A chain of four now fits; bad_wr stays untouched on success.
  ibv_send_wr chain[4] = {};
  for (int i = 0; i < 4; ++i) {
    chain[i] = wr;
    chain[i].wr_id = 10 + static_cast<uint64_t>(i);
    chain[i].next = i < 3 ? &chain[i + 1] : nullptr;
  }
  chain[3].send_flags = IBV_SEND_SIGNALED;
  EXPECT_EQ(ibv_post_send(p.a.qp, &chain[0], &bad), 0);
  EXPECT_EQ(bad, reinterpret_cast<ibv_send_wr*>(0x1));
  ASSERT_EQ(wait_status(p.a.scq, &wc), IBV_WC_SUCCESS);
  EXPECT_EQ(wc.wr_id, 13u);
  // A fifth in a chain that overflows: the first ones are posted, bad_wr names the first refused.
  for (int i = 0; i < 4; ++i) ASSERT_EQ(wait_status(p.b.rcq), IBV_WC_SUCCESS);
  ibv_send_wr five[5] = {};
  for (int i = 0; i < 5; ++i) {
    five[i] = wr;
    five[i].wr_id = 20 + static_cast<uint64_t>(i);
    five[i].send_flags = IBV_SEND_SIGNALED;
    five[i].next = i < 4 ? &five[i + 1] : nullptr;
  }
  for (int i = 0; i < 8; ++i) ASSERT_EQ(p.b.post_recv(static_cast<uint64_t>(i), 0, 64), 0);
  EXPECT_EQ(ibv_post_send(p.a.qp, &five[0], &bad), ENOMEM);
  EXPECT_EQ(bad, &five[4]);
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(wait_status(p.a.scq, &wc), IBV_WC_SUCCESS);
    EXPECT_EQ(wc.wr_id, 20u + static_cast<unsigned>(i));
  }
}

TEST(QueueTest, ReceiveDepthInlineAndSgeLimits) {
  QpOpts o;
  o.max_recv_wr = 2;
  o.max_inline = 64;
  o.max_sge = 1;
  Pair p;
  ASSERT_TRUE(p.up(o, o)) << p.error();
  ASSERT_EQ(p.b.post_recv(1, 0, 64), 0);
  ASSERT_EQ(p.b.post_recv(2, 64, 64), 0);
  EXPECT_EQ(p.b.post_recv(3, 128, 64), ENOMEM);
  // Inline up to the QP's limit, not beyond.
  ibv_send_wr* bad = nullptr;
  ibv_sge s{reinterpret_cast<uintptr_t>(p.a.buf.data()), 65, 0};
  ibv_send_wr wr{};
  wr.opcode = IBV_WR_SEND;
  wr.send_flags = IBV_SEND_INLINE | IBV_SEND_SIGNALED;
  wr.sg_list = &s;
  wr.num_sge = 1;
  EXPECT_EQ(ibv_post_send(p.a.qp, &wr, &bad), ENOMEM);
  EXPECT_EQ(bad, &wr);
  s.length = 64;  // inline ignores the lkey
  bad = nullptr;
  EXPECT_EQ(ibv_post_send(p.a.qp, &wr, &bad), 0);
  EXPECT_EQ(bad, nullptr);
  // The buffer may change at once: the inline copy was taken when the WR was posted.
  uint8_t first = p.a.buf[0];
  p.a.buf[0] = static_cast<uint8_t>(first + 1);
  EXPECT_EQ(wait_status(p.a.scq), IBV_WC_SUCCESS);
  EXPECT_EQ(wait_status(p.b.rcq), IBV_WC_SUCCESS);
  EXPECT_EQ(p.b.buf[0], first);
  // More SGEs than the QP asked for, and an unknown opcode.
  ibv_sge two[2] = {{reinterpret_cast<uintptr_t>(p.a.buf.data()), 8, p.a.mr->lkey},
                    {reinterpret_cast<uintptr_t>(p.a.buf.data()) + 8, 8, p.a.mr->lkey}};
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.sg_list = two;
  wr.num_sge = 2;
  EXPECT_EQ(ibv_post_send(p.a.qp, &wr, &bad), EINVAL);
  wr.num_sge = 1;
  wr.opcode = IBV_WR_ATOMIC_FETCH_AND_ADD;
  EXPECT_EQ(ibv_post_send(p.a.qp, &wr, &bad), EINVAL);
  ibv_recv_wr rw{};
  rw.sg_list = two;
  rw.num_sge = 2;
  ibv_recv_wr* rbad = nullptr;
  EXPECT_EQ(ibv_post_recv(p.b.qp, &rw, &rbad), EINVAL);
  EXPECT_EQ(rbad, &rw);
  // Asking for more than the device has fails at creation.
  ibv_qp_init_attr ia{};
  ia.send_cq = p.a.scq;
  ia.recv_cq = p.a.rcq;
  ia.qp_type = IBV_QPT_RC;
  ia.cap.max_send_wr = 1;
  ia.cap.max_inline_data = 4096;
  errno = 0;
  EXPECT_EQ(ibv_create_qp(p.a.pd, &ia), nullptr);
  EXPECT_EQ(errno, EINVAL);
}

TEST(QueueTest, PostingInResetIsRefused) {
  Rank r;
  ASSERT_TRUE(r.open()) << r.error;
  EXPECT_EQ(r.post(IBV_WR_SEND, 1, 0, 8, IBV_SEND_SIGNALED), EINVAL);
  EXPECT_EQ(r.post_recv(1, 0, 8), EINVAL);
  EXPECT_EQ(ibv_destroy_cq(r.scq), EBUSY) << "a CQ in use by a QP cannot go";
}

// ---- Completion channel --------------------------------------------------------------------

TEST(ChannelTest, WakesAThreadBlockedInGetCqEvent) {
  Pair p;
  ASSERT_TRUE(p.up(QpOpts(), QpOpts(), true)) << p.error();
  ASSERT_EQ(ibv_req_notify_cq(p.b.rcq, 0), 0);
  ASSERT_EQ(p.b.post_recv(1, 0, 64), 0);
  std::atomic<bool> blocked{false};
  auto fut = std::async(std::launch::async, [&] {
    ibv_cq* cq = nullptr;
    void* cq_ctx = nullptr;
    blocked = true;
    int rc = ibv_get_cq_event(p.b.channel, &cq, &cq_ctx);  // blocks: nothing has arrived
    return rc == 0 ? cq : nullptr;
  });
  auto started = Clock::now();
  while (!blocked && Clock::now() - started < std::chrono::seconds(10)) std::this_thread::yield();
  ASSERT_TRUE(blocked);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(fut.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  ASSERT_EQ(p.a.post(IBV_WR_SEND, 1, 0, 8, IBV_SEND_SIGNALED), 0);
  if (fut.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    // Unblock the waiter before failing, so that the test cannot hang.
    ibv_req_notify_cq(p.b.rcq, 0);
    p.b.post_recv(2, 0, 64);
    p.a.post(IBV_WR_SEND, 2, 0, 8, 0);
    FAIL() << "ibv_get_cq_event was not woken";
  }
  ibv_cq* woke = fut.get();
  EXPECT_EQ(woke, p.b.rcq);
  ibv_ack_cq_events(woke, 1);
  EXPECT_EQ(wait_status(p.b.rcq), IBV_WC_SUCCESS);
  // Disarmed now: the next completion raises no event until the CQ is armed again.
  ASSERT_EQ(p.b.post_recv(2, 0, 64), 0);
  ASSERT_EQ(p.a.post(IBV_WR_SEND, 2, 0, 8, IBV_SEND_SIGNALED), 0);
  EXPECT_EQ(wait_status(p.b.rcq), IBV_WC_SUCCESS);
  pollfd pfd{p.b.channel->fd, POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 50), 0);
  // With O_NONBLOCK the verb returns at once.
  int fl = ::fcntl(p.b.channel->fd, F_GETFL);
  ASSERT_EQ(::fcntl(p.b.channel->fd, F_SETFL, fl | O_NONBLOCK), 0);
  ibv_cq* cq = nullptr;
  void* cq_ctx = nullptr;
  errno = 0;
  EXPECT_EQ(ibv_get_cq_event(p.b.channel, &cq, &cq_ctx), -1);
  EXPECT_EQ(errno, EAGAIN);
  // Solicited-only: an unsolicited SEND does not wake, a solicited one does.
  ASSERT_EQ(ibv_req_notify_cq(p.b.rcq, 1), 0);
  ASSERT_EQ(p.b.post_recv(3, 0, 64), 0);
  ASSERT_EQ(p.b.post_recv(4, 0, 64), 0);
  ASSERT_EQ(p.a.post(IBV_WR_SEND, 3, 0, 8, IBV_SEND_SIGNALED), 0);
  EXPECT_EQ(wait_status(p.b.rcq), IBV_WC_SUCCESS);
  EXPECT_EQ(::poll(&pfd, 1, 50), 0);
  ASSERT_EQ(p.a.post(IBV_WR_SEND, 4, 0, 8, IBV_SEND_SIGNALED | IBV_SEND_SOLICITED), 0);
  EXPECT_EQ(::poll(&pfd, 1, 5000), 1);
  ASSERT_EQ(ibv_get_cq_event(p.b.channel, &cq, &cq_ctx), 0);
  ibv_ack_cq_events(cq, 1);
  EXPECT_EQ(ibv_destroy_comp_channel(p.b.channel), EBUSY) << "CQs still use it";
}

// ---- Async events --------------------------------------------------------------------------

TEST(AsyncTest, QpFatalAndPortEvents) {
  Pair p;
  ASSERT_TRUE(p.up()) << p.error();
  ASSERT_EQ(p.a.post_recv(5, 0, 64), 0);
  ASSERT_EQ(ringlet_emu_inject_qp_fatal(p.a.qp), 0);
  ibv_async_event ev;
  ASSERT_TRUE(wait_async(p.a.ctx, &ev));
  EXPECT_EQ(ev.event_type, IBV_EVENT_QP_FATAL);
  EXPECT_EQ(ev.element.qp, p.a.qp);
  ibv_ack_async_event(&ev);
  ibv_wc wc;
  EXPECT_EQ(wait_status(p.a.rcq, &wc), IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(p.a.qp->state, IBV_QPS_ERR);

  // Port down: every context on the NIC hears it, and sends fail as with a lost link.
  Pair q;
  QpOpts o;
  o.retry_cnt = 1;
  ASSERT_TRUE(q.up(o, o)) << q.error();
  ASSERT_EQ(ringlet_emu_set_port_state(q.a.ctx, IBV_PORT_DOWN), 0);
  for (ibv_context* c : {q.a.ctx, q.b.ctx}) {
    ASSERT_TRUE(wait_async(c, &ev));
    EXPECT_EQ(ev.event_type, IBV_EVENT_PORT_ERR);
    EXPECT_EQ(ev.element.port_num, 1);
    ibv_ack_async_event(&ev);
  }
  ibv_port_attr pa;
  ASSERT_EQ(ibv_query_port(q.a.ctx, 1, &pa), 0);
  EXPECT_EQ(pa.state, IBV_PORT_DOWN);
  ASSERT_EQ(q.b.post_recv(1, 0, 64), 0);
  ASSERT_EQ(q.a.post(IBV_WR_SEND, 1, 0, 8, IBV_SEND_SIGNALED), 0);
  EXPECT_EQ(wait_status(q.a.scq), IBV_WC_RETRY_EXC_ERR);
  ASSERT_EQ(ringlet_emu_set_port_state(q.a.ctx, IBV_PORT_ACTIVE), 0);
  ASSERT_TRUE(wait_async(q.a.ctx, &ev));
  EXPECT_EQ(ev.event_type, IBV_EVENT_PORT_ACTIVE);
  ibv_ack_async_event(&ev);
  ASSERT_TRUE(wait_async(q.b.ctx, &ev));
  ibv_ack_async_event(&ev);
  pollfd pfd{q.a.ctx->async_fd, POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0) << "no events left";
}

// ---- Access log ----------------------------------------------------------------------------

namespace {
std::mutex g_hook_mu;
std::vector<ringlet_emu_access> g_hook_seen;
void hook(void*, const ringlet_emu_access* a) {
  std::lock_guard<std::mutex> l(g_hook_mu);
  g_hook_seen.push_back(*a);
}
}  // namespace

TEST(AccessLogTest, DeregisteredBufferIsNeverTouchedAgain) {
  Pair p;
  ASSERT_TRUE(p.up()) << p.error();
  std::vector<uint8_t> target(4096), source(4096, 0xab);
  ibv_mr* tm = ibv_reg_mr(p.b.pd, target.data(), target.size(),
                          static_cast<int>(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE));
  ibv_mr* sm =
      ibv_reg_mr(p.a.pd, source.data(), source.size(), static_cast<int>(IBV_ACCESS_LOCAL_WRITE));
  ASSERT_TRUE(tm && sm);
  uint32_t tlkey = tm->lkey, slkey = sm->lkey, trkey = tm->rkey;
  // The range counts include earlier tests' MRs that the heap placed at the same addresses.
  const uint64_t t0 = ringlet_emu_range_access_count(target.data(), target.size());
  const uint64_t s0 = ringlet_emu_range_access_count(source.data(), source.size());
  ringlet_emu_set_access_hook(hook, nullptr);
  auto write = [&](uint64_t wr_id, uint32_t lkey, uint32_t rkey) {
    ibv_sge s{reinterpret_cast<uintptr_t>(source.data()), 256, lkey};
    ibv_send_wr wr{};
    wr.wr_id = wr_id;
    wr.opcode = IBV_WR_RDMA_WRITE;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.sg_list = &s;
    wr.num_sge = 1;
    wr.wr.rdma.remote_addr = reinterpret_cast<uintptr_t>(target.data());
    wr.wr.rdma.rkey = rkey;
    ibv_send_wr* bad = nullptr;
    return ibv_post_send(p.a.qp, &wr, &bad);
  };
  ASSERT_EQ(write(1, slkey, trkey), 0);
  ASSERT_EQ(wait_status(p.a.scq), IBV_WC_SUCCESS);
  ringlet_emu_access_counts c{};
  ASSERT_EQ(ringlet_emu_mr_access_count(tlkey, &c), 0);
  EXPECT_EQ(c.remote_writes, 1u);
  EXPECT_EQ(c.bytes, 256u);
  ASSERT_EQ(ringlet_emu_mr_access_count(slkey, &c), 0);
  EXPECT_EQ(c.local_reads, 1u);
  uint64_t t_before = ringlet_emu_range_access_count(target.data(), target.size());
  uint64_t s_before = ringlet_emu_range_access_count(source.data(), source.size());
  EXPECT_EQ(t_before, t0 + 1);
  EXPECT_EQ(s_before, s0 + 1);

  // After deregistration neither the old rkey nor the old lkey reaches the memory.
  ASSERT_EQ(ibv_dereg_mr(tm), 0);
  ASSERT_EQ(write(2, slkey, trkey), 0);
  EXPECT_EQ(wait_status(p.a.scq), IBV_WC_REM_ACCESS_ERR);
  // The source was still registered, so the NIC read it before the responder refused.
  s_before = ringlet_emu_range_access_count(source.data(), source.size());
  EXPECT_EQ(s_before, s0 + 2);
  Pair q;
  ASSERT_TRUE(q.up()) << q.error();
  ASSERT_EQ(ibv_dereg_mr(sm), 0);
  ibv_sge s{reinterpret_cast<uintptr_t>(source.data()), 256, slkey};
  ibv_send_wr wr{};
  wr.opcode = IBV_WR_SEND;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.sg_list = &s;
  wr.num_sge = 1;
  ibv_send_wr* bad = nullptr;
  ASSERT_EQ(ibv_post_send(q.a.qp, &wr, &bad), 0);
  EXPECT_EQ(wait_status(q.a.scq), IBV_WC_LOC_PROT_ERR);
  ringlet_emu_set_access_hook(nullptr, nullptr);

  EXPECT_EQ(ringlet_emu_range_access_count(target.data(), target.size()), t_before);
  EXPECT_EQ(ringlet_emu_range_access_count(source.data(), source.size()), s_before);
  ASSERT_EQ(ringlet_emu_mr_access_count(tlkey, &c), 0);
  EXPECT_EQ(c.registered, 0);
  EXPECT_EQ(c.remote_writes, 1u);
  EXPECT_EQ(c.after_dereg, 0u);
  ASSERT_EQ(ringlet_emu_mr_access_count(slkey, &c), 0);
  EXPECT_EQ(c.after_dereg, 0u);
  EXPECT_EQ(ringlet_emu_mr_access_count(0xdead, &c), -1);
  std::lock_guard<std::mutex> l(g_hook_mu);
  ASSERT_EQ(g_hook_seen.size(), 3u) << "source read, target written, source read";
  for (auto& a : g_hook_seen) EXPECT_EQ(a.after_dereg, 0);
  EXPECT_EQ(g_hook_seen[0].kind, RINGLET_EMU_LOCAL_READ);
  EXPECT_EQ(g_hook_seen[1].kind, RINGLET_EMU_REMOTE_WRITE);
  EXPECT_EQ(g_hook_seen[1].rkey, trkey);
  EXPECT_EQ(g_hook_seen[2].kind, RINGLET_EMU_LOCAL_READ);
}

// ---- Fork safety ---------------------------------------------------------------------------

TEST(ForkTest, ChildUsesItsOwnContextAndParentIsUnharmed) {
  Pair p;
  ASSERT_TRUE(p.up()) << p.error();
  std::string e1;
  std::thread t([&] { e1 = pingpong(p.b, p.ea, 1, IBV_WR_RDMA_WRITE_WITH_IMM, false, 10, 500); });
  EXPECT_EQ(pingpong(p.a, p.eb, 0, IBV_WR_RDMA_WRITE_WITH_IMM, false, 10, 500), "");
  t.join();
  ASSERT_EQ(e1, "");
  ibv_gid parent_gid;
  ASSERT_EQ(ibv_query_gid(p.a.ctx, 1, 0, &parent_gid), 0);

  pid_t pid = ::fork();  // while the parent's NIC threads run
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The parent's objects are dead here and say so; the child's own work.
    if (ibv_alloc_pd(p.a.ctx) != nullptr || errno != EIO) ::_exit(10);
    Pair c;
    if (!c.up()) ::_exit(11);
    ibv_gid g;
    if (ibv_query_gid(c.a.ctx, 1, 0, &g) != 0 || std::memcmp(g.raw, parent_gid.raw, 16) == 0)
      ::_exit(12);
    std::string ce;
    std::thread ct([&] { ce = pingpong(c.b, c.ea, 1, IBV_WR_SEND, true, 10, 32); });
    std::string ce0 = pingpong(c.a, c.eb, 0, IBV_WR_SEND, true, 10, 32);
    ct.join();
    if (!ce.empty() || !ce0.empty()) ::_exit(13);
    c.a.close();
    c.b.close();
    ::_exit(0);
  }
  EXPECT_EQ(wait_child(pid), 0);
  // The parent goes on with the same QPs.
  std::thread t2([&] { e1 = pingpong(p.b, p.ea, 1, IBV_WR_SEND, false, 10, 2000); });
  EXPECT_EQ(pingpong(p.a, p.eb, 0, IBV_WR_SEND, false, 10, 2000), "");
  t2.join();
  EXPECT_EQ(e1, "");
}

TEST(NicTest, LastCloseRemovesTheSocketFile) {
  std::string dir = ringlet_emu_socket_dir();
  std::string path;
  {
    Pair p;
    ASSERT_TRUE(p.up()) << p.error();
    ibv_gid g;
    ASSERT_EQ(ibv_query_gid(p.a.ctx, 1, 0, &g), 0);
    char hex[40];
    for (int i = 0; i < 16; ++i) std::snprintf(hex + 2 * i, 3, "%02x", g.raw[i]);
    path = dir + "/g-" + hex + ".sock";
    EXPECT_EQ(::access(path.c_str(), F_OK), 0);
  }
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "the last close removes the NIC's socket";
}

TEST(AsyncTest, CqOverrunRaisesCqError) {
  QpOpts o;
  o.cqe = 2;
  Pair p;
  ASSERT_TRUE(p.up(o, QpOpts())) << p.error();
  for (int i = 0; i < 3; ++i) ASSERT_EQ(p.b.post_recv(static_cast<uint64_t>(i), 0, 64), 0);
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(p.a.post(IBV_WR_SEND, static_cast<uint64_t>(i), 0, 8, IBV_SEND_SIGNALED), 0);
  ibv_async_event ev;
  ASSERT_TRUE(wait_async(p.a.ctx, &ev));
  EXPECT_EQ(ev.event_type, IBV_EVENT_CQ_ERR);
  EXPECT_EQ(ev.element.cq, p.a.scq);
  ibv_ack_async_event(&ev);
  std::vector<ibv_wc> got;
  drain(p.a.scq, &got, 50);
  EXPECT_EQ(got.size(), 2u) << "the third completion had no room";
}

TEST(ErrorExtraTest, ForeignPdRkeyIsRemoteAccessErrorAndZeroLengthWriteChecksNothing) {
  Pair p;
  ASSERT_TRUE(p.up()) << p.error();
  // An MR of another PD of the responder's context: a valid rkey, but not for this QP.
  ibv_pd* other = ibv_alloc_pd(p.b.ctx);
  ASSERT_NE(other, nullptr);
  std::vector<uint8_t> mem(256);
  ibv_mr* m = ibv_reg_mr(other, mem.data(), mem.size(),
                         static_cast<int>(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE));
  ASSERT_NE(m, nullptr);
  // A zero-length write carries no data, so no rkey is checked (as on hardware).
  ASSERT_EQ(p.a.post(IBV_WR_RDMA_WRITE, 1, 0, 0, IBV_SEND_SIGNALED, 0, 0, 0xbad), 0);
  EXPECT_EQ(wait_status(p.a.scq), IBV_WC_SUCCESS);
  ASSERT_EQ(p.a.post(IBV_WR_RDMA_WRITE, 2, 0, 16, IBV_SEND_SIGNALED, 0,
                     reinterpret_cast<uintptr_t>(mem.data()), m->rkey),
            0);
  EXPECT_EQ(wait_status(p.a.scq), IBV_WC_REM_ACCESS_ERR);
  ASSERT_EQ(ibv_destroy_qp(p.b.qp), 0);
  p.b.qp = nullptr;
  EXPECT_EQ(ibv_dereg_mr(m), 0);
  EXPECT_EQ(ibv_dealloc_pd(other), 0);
}

// Several QP pairs of one process at once, each in its own pair of threads: RC order holds
// per QP while the NIC serves them all.
TEST(StressTest, ManyQpPairsConcurrently) {
  constexpr int kPairs = 4;
  std::vector<std::unique_ptr<Pair>> pairs;
  for (int i = 0; i < kPairs; ++i) {
    pairs.push_back(std::make_unique<Pair>());
    ASSERT_TRUE(pairs.back()->up()) << pairs.back()->error();
  }
  const ibv_wr_opcode ops[kPairs] = {IBV_WR_SEND, IBV_WR_SEND_WITH_IMM, IBV_WR_RDMA_WRITE,
                                     IBV_WR_RDMA_WRITE_WITH_IMM};
  std::vector<std::string> errs(2 * kPairs);
  std::vector<std::thread> threads;
  for (int i = 0; i < kPairs; ++i) {
    Pair* p = pairs[static_cast<size_t>(i)].get();
    ibv_wr_opcode op = ops[i];
    threads.emplace_back([p, op, &errs, i] {
      errs[2 * static_cast<size_t>(i)] = pingpong(p->a, p->eb, 0, op, false, 80, 5000);
    });
    threads.emplace_back([p, op, &errs, i] {
      errs[2 * static_cast<size_t>(i) + 1] = pingpong(p->b, p->ea, 1, op, false, 80, 5000);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < errs.size(); ++i) EXPECT_EQ(errs[i], "") << "rank " << i;
}

// Two emulated devices in one process are two NICs: two GIDs and LIDs, and QPs on them talk as
// ranks on two hosts would.
TEST(DeviceTest, TwoDevicesAreTwoNics) {
  ::setenv("RINGLET_VERBS_EMU_DEVICES", "2", 1);
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  ASSERT_NE(list, nullptr);
  EXPECT_EQ(n, 2);
  EXPECT_STREQ(ibv_get_device_name(list[1]), "rlemu1");
  EXPECT_NE(ibv_get_device_guid(list[0]), ibv_get_device_guid(list[1]));
  ibv_free_device_list(list);
  Rank a, b;
  bool ok = a.open(QpOpts(), false, 0) && b.open(QpOpts(), false, 1);
  ::unsetenv("RINGLET_VERBS_EMU_DEVICES");
  ASSERT_TRUE(ok) << a.error << b.error;
  Endpoint ea = a.local(), eb = b.local();
  EXPECT_NE(std::memcmp(ea.gid, eb.gid, 16), 0);
  EXPECT_NE(ea.lid, eb.lid);
  ASSERT_TRUE(a.connect(eb) && b.connect(ea)) << a.error << b.error;
  std::string e1;
  std::thread t([&] { e1 = pingpong(b, ea, 1, IBV_WR_RDMA_WRITE_WITH_IMM, true, 20, 64); });
  EXPECT_EQ(pingpong(a, eb, 0, IBV_WR_RDMA_WRITE_WITH_IMM, true, 20, 64), "");
  t.join();
  EXPECT_EQ(e1, "");
}
