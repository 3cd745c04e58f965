// SPDX-License-Identifier: Apache-2.0
// The rdma progress engine: device, queue pairs, credits, completions, failures.
#include "transports/rdma/engine.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>

#include "src/common/check.hpp"
#include "src/common/log.hpp"
#include "transports/rdma/transport.hpp"

namespace ringlet::transport::rdma {
namespace {

enum WrKind : std::uint64_t {
  kRecvWr = 1,
  kChunkWr = 2,
  kCreditsWr = 3,
  kErrorWr = 4,
  kProbeWr = 5
};

std::uint64_t wr_id(std::uint32_t channel, WrKind kind, int qp, std::uint32_t value) {
  return (std::uint64_t{channel} << 32) | (static_cast<std::uint64_t>(kind) << 24) |
         (static_cast<std::uint64_t>(qp & 0xff) << 16) | (value & 0xffff);
}
std::uint32_t wr_channel(std::uint64_t id) { return static_cast<std::uint32_t>(id >> 32); }
WrKind wr_kind(std::uint64_t id) { return static_cast<WrKind>((id >> 24) & 0xff); }
int wr_qp(std::uint64_t id) { return static_cast<int>((id >> 16) & 0xff); }
std::uint32_t wr_value(std::uint64_t id) { return static_cast<std::uint32_t>(id & 0xffff); }

// Idle time after which a wait probes its peer with a zero-length RDMA WRITE: a peer that
// is gone then fails the probe with "retry exceeded" instead of leaving the wait to its
// deadline.
constexpr auto kProbeAfter = std::chrono::milliseconds(1000);
// Polls of the completion queue before a wait sleeps on the completion channel.
constexpr int kSpinRounds = 2000;
constexpr int kMaxBlockMs = 100;
// Send queue entries kept for the error record and the liveness probe.
constexpr int kReservedSendWrs = 2;
// ACK timeout 4.096 us * 2^14 = 67 ms, 7 retries: a lost peer is noticed within ~0.5 s.
constexpr std::uint8_t kAckTimeout = 14;
constexpr std::uint8_t kRetryCount = 7;
// RNR never happens by construction (receives are posted for every write that can arrive);
// a bug surfaces as IBV_WC_RNR_RETRY_EXC_ERR after 6 retries rather than as a storm.
constexpr std::uint8_t kRnrRetry = 6;
constexpr std::uint8_t kMinRnrTimer = 12;

const char* mtu_text(int mtu) {
  switch (mtu) {
    case IBV_MTU_256:
      return "256";
    case IBV_MTU_512:
      return "512";
    case IBV_MTU_1024:
      return "1024";
    case IBV_MTU_2048:
      return "2048";
    case IBV_MTU_4096:
      return "4096";
    default:
      return "?";
  }
}

}  // namespace

void Buffer::allocate(std::size_t bytes) {
  size = bytes;
  const std::size_t rounded = (bytes + 4095) / 4096 * 4096;
  data = static_cast<std::byte*>(std::aligned_alloc(4096, rounded));
  if (data == nullptr) throw std::bad_alloc();
  std::memset(data, 0, rounded);
}

Buffer::~Buffer() { std::free(data); }

Engine::Engine(const Verbs& verbs, const std::string& device, int port, int gid_index, int rank,
               const std::atomic<bool>* abort_flag, bool oversubscribed)
    : v_(verbs),
      device_(device),
      port_(port),
      rank_(rank),
      abort_flag_(abort_flag),
      oversubscribed_(oversubscribed) {
  int n = 0;
  ibv_device** list = v_.get_device_list(&n);
  for (int i = 0; list != nullptr && i < n && ctx_ == nullptr; ++i) {
    const char* name = v_.get_device_name(list[i]);
    if (name != nullptr && device == name) ctx_ = v_.open_device(list[i]);
  }
  if (list != nullptr) v_.free_device_list(list);
  if (ctx_ == nullptr) {
    throw Error(
        ErrorCode::transport,
        str_cat("rdma: rank ", rank, " cannot open device ", device, ": ", std::strerror(errno)),
        {rank});
  }
  auto cleanup_fail = [this](const std::string& what) {
    const int err = errno;
    if (cq_ != nullptr) v_.destroy_cq(cq_);
    if (chan_ != nullptr) v_.destroy_comp_channel(chan_);
    if (pd_ != nullptr) v_.dealloc_pd(pd_);
    v_.close_device(ctx_);
    throw Error(
        ErrorCode::transport,
        str_cat("rdma: rank ", rank_, ": ", what, " on ", device_, ": ", std::strerror(err)),
        {rank_});
  };
  if (v_.query_port(ctx_, static_cast<uint8_t>(port), &port_attr_) != 0) {
    cleanup_fail(str_cat("ibv_query_port(", port, ")"));
  }
  ibv_device_attr da{};
  if (v_.query_device(ctx_, &da) != 0) cleanup_fail("ibv_query_device");
  // GID: the configured index; on RoCE the first RoCE v2 GID holding an IPv4 address, then
  // any RoCE v2 GID; index 0 on InfiniBand (where the LID routes within the subnet).
  gid_index_ = gid_index >= 0 ? gid_index : 0;
  if (gid_index < 0 && port_attr_.link_layer == IBV_LINK_LAYER_ETHERNET &&
      v_.query_gid_ex != nullptr) {
    int v2 = -1, v2_ipv4 = -1;
    for (int i = 0; i < port_attr_.gid_tbl_len; ++i) {
      ibv_gid_entry e{};
      if (v_.query_gid_ex(ctx_, static_cast<uint32_t>(port), static_cast<uint32_t>(i), &e, 0,
                          sizeof(e)) != 0) {
        continue;
      }
      if (e.gid_type != IBV_GID_TYPE_ROCE_V2) continue;
      if (v2 < 0) v2 = i;
      const std::uint8_t* g = e.gid.raw;
      const bool ipv4 = std::all_of(g, g + 10, [](std::uint8_t b) { return b == 0; }) &&
                        g[10] == 0xff && g[11] == 0xff;
      if (ipv4 && v2_ipv4 < 0) v2_ipv4 = i;
    }
    gid_index_ = v2_ipv4 >= 0 ? v2_ipv4 : v2 >= 0 ? v2 : 0;
  }
  if (v_.query_gid(ctx_, static_cast<uint8_t>(port), gid_index_, &gid_) != 0) {
    cleanup_fail(str_cat("ibv_query_gid(port ", port, ", index ", gid_index_, ")"));
  }
  pd_ = v_.alloc_pd(ctx_);
  if (pd_ == nullptr) cleanup_fail("ibv_alloc_pd");
  chan_ = v_.create_comp_channel(ctx_);
  if (chan_ == nullptr) cleanup_fail("ibv_create_comp_channel");
  ::fcntl(chan_->fd, F_SETFL, ::fcntl(chan_->fd, F_GETFL) | O_NONBLOCK);
  cq_capacity_ = std::min(da.max_cqe, 16384);
  cq_ = v_.create_cq(ctx_, cq_capacity_, nullptr, chan_, 0);
  if (cq_ == nullptr) cleanup_fail(str_cat("ibv_create_cq(", cq_capacity_, ")"));
  event_fd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!event_fd_) cleanup_fail("eventfd");
  RINGLET_LOG(info, "rdma: rank ", rank, " uses ", device, ":", port, " (",
              port_attr_.link_layer == IBV_LINK_LAYER_ETHERNET ? "RoCE" : "InfiniBand", ", LID ",
              port_attr_.lid, ", GID index ", gid_index_, ", MTU ", mtu_text(port_attr_.active_mtu),
              ", library ", v_.library, ")");
}

Engine::~Engine() {
  if (unacked_events_ > 0) v_.ack_cq_events(cq_, unacked_events_);
  v_.destroy_cq(cq_);
  v_.destroy_comp_channel(chan_);
  v_.dealloc_pd(pd_);
  v_.close_device(ctx_);
}

int Engine::completion_fd() const noexcept { return chan_->fd; }

void Engine::check_abort() const {
  if (abort_flag_ != nullptr && abort_flag_->load(std::memory_order_acquire)) {
    throw Error(ErrorCode::aborted, str_cat("rdma: rank ", rank_, " was aborted"), {rank_});
  }
}

void Engine::interrupt() noexcept {
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(event_fd_.get(), &one, sizeof(one));
}

std::unique_ptr<Channel> Engine::make_channel(int peer, int qps) {
  auto c = std::make_unique<Channel>();
  c->peer = peer;
  c->id = next_channel_id_++;
  c->slots = kRdmaSlots;
  c->slot_bytes = kRdmaSlotBytes;
  c->sq_depth = static_cast<int>(2 * c->slots) + 4;
  c->rq_depth = static_cast<int>(2 * c->slots) + 4;
  const int per_qp = c->sq_depth + kReservedSendWrs + c->rq_depth;
  if (cq_reserved_ + qps * per_qp > cq_capacity_) {
    throw Error(ErrorCode::transport,
                str_cat("rdma: rank ", rank_, " cannot connect to peer ", peer, ": its ", qps,
                        " queue pairs would overrun the completion queue of ", cq_capacity_,
                        " entries (", channels_.size(), " peers connected)"),
                {rank_, peer});
  }
  c->cq_entries = qps * per_qp;
  cq_reserved_ += c->cq_entries;
  auto fail = [&](const std::string& what) {
    const int err = errno;
    destroy_channel(*c);
    throw Error(ErrorCode::transport,
                str_cat("rdma: rank ", rank_, " cannot connect to peer ", peer, ": ", what, ": ",
                        std::strerror(err)),
                {rank_, peer});
  };
  const std::size_t area = c->slots * c->slot_bytes + kErrorAreaBytes;
  c->recv_area.allocate(area);
  c->stage.allocate(area);
  c->recv_mr = v_.register_mr(pd_, c->recv_area.data, area,
                              IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  if (c->recv_mr == nullptr) fail("ibv_reg_mr (receive slots)");
  c->stage_mr = v_.register_mr(pd_, c->stage.data, area, IBV_ACCESS_LOCAL_WRITE);
  if (c->stage_mr == nullptr) fail("ibv_reg_mr (staging)");
  c->chunk_owner.assign(c->slots, 0);
  c->slot_busy.assign(c->slots, false);
  c->arrived.assign(c->slots, Arrived{});
  std::random_device rd;
  c->inline_bytes = kRdmaInlineBytes;
  for (int i = 0; i < qps; ++i) {
    ibv_qp_init_attr init{};
    init.send_cq = cq_;
    init.recv_cq = cq_;
    init.qp_type = IBV_QPT_RC;
    init.cap.max_send_wr = static_cast<uint32_t>(c->sq_depth + kReservedSendWrs);
    init.cap.max_recv_wr = static_cast<uint32_t>(c->rq_depth);
    init.cap.max_send_sge = 1;
    init.cap.max_recv_sge = 1;
    init.cap.max_inline_data = static_cast<uint32_t>(c->inline_bytes);
    ibv_qp* qp = v_.create_qp(pd_, &init);
    if (qp == nullptr && c->inline_bytes > 0) {
      // A device without inline sends of that size: post everything from memory.
      c->inline_bytes = 0;
      init.cap.max_inline_data = 0;
      qp = v_.create_qp(pd_, &init);
    }
    if (qp == nullptr) fail("ibv_create_qp");
    c->inline_bytes = std::min<std::size_t>(c->inline_bytes, init.cap.max_inline_data);
    Qp q;
    q.qp = qp;
    q.psn = rd() & 0xffffff;
    c->qps.push_back(q);
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_INIT;
    a.pkey_index = 0;
    a.port_num = static_cast<uint8_t>(port_);
    a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
    if (v_.modify_qp(qp, &a,
                     IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) != 0) {
      fail("ibv_modify_qp(INIT)");
    }
    for (int r = 0; r < c->rq_depth; ++r) post_recv_wr(*c, i);
  }
  return c;
}

void Engine::connect_channel(Channel& c, const ConnectionInfo& theirs) {
  for (std::size_t i = 0; i < c.qps.size(); ++i) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = static_cast<ibv_mtu>(
        std::min<std::uint32_t>(static_cast<std::uint32_t>(port_attr_.active_mtu), theirs.mtu));
    a.dest_qp_num = theirs.qpn[i];
    a.rq_psn = theirs.psn[i];
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = kMinRnrTimer;
    a.ah_attr.port_num = static_cast<uint8_t>(port_);
    if (theirs.link_layer == IBV_LINK_LAYER_ETHERNET || theirs.lid == 0 ||
        port_attr_.link_layer == IBV_LINK_LAYER_ETHERNET) {
      a.ah_attr.is_global = 1;
      std::memcpy(a.ah_attr.grh.dgid.raw, theirs.gid.data(), 16);
      a.ah_attr.grh.sgid_index = static_cast<uint8_t>(gid_index_);
      a.ah_attr.grh.hop_limit = 64;
    } else {
      a.ah_attr.dlid = static_cast<uint16_t>(theirs.lid);
    }
    int rc = v_.modify_qp(c.qps[i].qp, &a,
                          IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                              IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    if (rc == 0) {
      ibv_qp_attr s{};
      s.qp_state = IBV_QPS_RTS;
      s.timeout = kAckTimeout;
      s.retry_cnt = kRetryCount;
      s.rnr_retry = kRnrRetry;
      s.sq_psn = c.qps[i].psn;
      s.max_rd_atomic = 1;
      rc = v_.modify_qp(c.qps[i].qp, &s,
                        IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                            IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
    }
    if (rc != 0) {
      throw Error(ErrorCode::transport,
                  str_cat("rdma: rank ", rank_, " cannot connect queue pair ", i, " to peer ",
                          c.peer, " (QPN ", theirs.qpn[i], "): ibv_modify_qp: ", std::strerror(rc)),
                  {rank_, c.peer});
    }
  }
  c.remote_addr = theirs.slot_addr;
  c.remote_rkey = theirs.rkey;
  c.credits = c.slots;
  c.last_heard = Clock::now();
}

void Engine::add(Channel* c) { channels_[c->id] = c; }

void Engine::remove(Channel* c) noexcept { channels_.erase(c->id); }

void Engine::destroy_channel(Channel& c) noexcept {
  channels_.erase(c.id);
  for (Qp& q : c.qps) {
    if (q.qp != nullptr) v_.destroy_qp(q.qp);
    q.qp = nullptr;
  }
  if (c.recv_mr != nullptr) v_.dereg_mr(c.recv_mr);
  if (c.stage_mr != nullptr) v_.dereg_mr(c.stage_mr);
  c.recv_mr = c.stage_mr = nullptr;
  c.qps.clear();
  cq_reserved_ -= c.cq_entries;
  c.cq_entries = 0;
}

void Engine::post_recv_wr(Channel& c, int qp_index) {
  ibv_recv_wr wr{};
  ibv_recv_wr* bad = nullptr;
  wr.wr_id = wr_id(c.id, kRecvWr, qp_index, 0);
  wr.num_sge = 0;  // writes with immediate place their bytes by rkey
  const int rc = ibv_post_recv(c.qps[static_cast<std::size_t>(qp_index)].qp, &wr, &bad);
  if (rc != 0) {
    fail_channel(c,
                 Error(ErrorCode::transport,
                       str_cat("rdma: rank ", rank_, " cannot post a receive for peer ", c.peer,
                               ": ", std::strerror(rc)),
                       {rank_, c.peer}),
                 true);
  }
}

std::uint64_t Engine::post_send(Channel& c, std::span<const std::byte> data, std::uint32_t lkey) {
  SendOp op;
  op.id = ++c.sends_posted;
  op.data = data.data();
  op.length = data.size();
  op.lkey = lkey;
  c.sends.push_back(op);
  if (c.failure) {
    apply_failure(c);
  } else {
    pump(c);
  }
  return op.id;
}

std::uint64_t Engine::post_recv(Channel& c, std::span<std::byte> data) {
  RecvOp op;
  op.id = ++c.recvs_posted;
  op.data = data.data();
  op.length = data.size();
  c.recvs.push_back(op);
  consume(c);
  if (c.credits_owed > 0 && !c.failure) post_credits(c);
  return op.id;
}

void Engine::post_chunk(Channel& c, SendOp& op) {
  const std::uint64_t seq = c.chunks_sent;
  const std::size_t slot = seq % c.slots;
  const auto qpi = static_cast<int>(seq % c.qps.size());
  Qp& q = c.qps[static_cast<std::size_t>(qpi)];
  const std::size_t len = std::min(c.slot_bytes, op.length - op.issued);
  const bool last = op.issued + len == op.length;
  const bool inl = len > 0 && len <= c.inline_bytes;
  const bool staged = !inl && len > 0 && op.lkey == 0;
  ibv_sge sge{};
  ibv_send_wr wr{};
  ibv_send_wr* bad = nullptr;
  if (len > 0) {
    if (staged) {
      std::byte* dst = c.stage.data + slot * c.slot_bytes;
      std::memcpy(dst, op.data + op.issued, len);
      sge.addr = reinterpret_cast<std::uintptr_t>(dst);
      sge.lkey = c.stage_mr->lkey;
    } else {
      sge.addr = reinterpret_cast<std::uintptr_t>(op.data + op.issued);
      sge.lkey = op.lkey;
    }
    sge.length = static_cast<uint32_t>(len);
    wr.sg_list = &sge;
    wr.num_sge = 1;
  }
  const auto credits =
      static_cast<std::uint32_t>(std::min<std::size_t>(c.credits_owed, kMaxCreditsPerImm));
  wr.wr_id = wr_id(c.id, kChunkWr, qpi, static_cast<std::uint32_t>(slot));
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.send_flags = IBV_SEND_SIGNALED | (inl ? static_cast<unsigned>(IBV_SEND_INLINE) : 0u);
  wr.imm_data = htonl(make_imm(last ? ImmKind::last : ImmKind::data, credits, seq));
  wr.wr.rdma.remote_addr = c.remote_addr + slot * c.slot_bytes;
  wr.wr.rdma.rkey = c.remote_rkey;
  const int rc = ibv_post_send(q.qp, &wr, &bad);
  if (rc != 0) {
    fail_channel(c,
                 Error(ErrorCode::transport,
                       str_cat("rdma: rank ", rank_, " cannot post an RDMA WRITE to peer ", c.peer,
                               ": ", std::strerror(rc)),
                       {rank_, c.peer}),
                 true);
    return;
  }
  c.credits_owed -= credits;
  ++q.sq_used;
  --c.credits;
  ++c.chunks_sent;
  c.chunk_owner[slot] = op.id;
  c.slot_busy[slot] = true;
  op.issued += len;
  op.started = true;
  ++op.outstanding;
}

bool Engine::post_credits(Channel& c) {
  Qp& q = c.qps[0];
  if (q.sq_used >= c.sq_depth || c.local_failure) return false;
  const auto credits =
      static_cast<std::uint32_t>(std::min<std::size_t>(c.credits_owed, kMaxCreditsPerImm));
  ibv_send_wr wr{};
  ibv_send_wr* bad = nullptr;
  wr.wr_id = wr_id(c.id, kCreditsWr, 0, 0);
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.imm_data = htonl(make_imm(ImmKind::credits, credits, 0));
  wr.wr.rdma.remote_addr = c.remote_addr;
  wr.wr.rdma.rkey = c.remote_rkey;
  const int rc = ibv_post_send(q.qp, &wr, &bad);
  if (rc != 0) {
    fail_channel(c,
                 Error(ErrorCode::transport,
                       str_cat("rdma: rank ", rank_, " cannot return credits to peer ", c.peer,
                               ": ", std::strerror(rc)),
                       {rank_, c.peer}),
                 true);
    return false;
  }
  ++q.sq_used;
  c.credits_owed -= credits;
  return true;
}

void Engine::post_probe(Channel& c) {
  Qp& q = c.qps[0];
  if (c.probe_pending || c.local_failure || q.sq_used >= c.sq_depth + kReservedSendWrs) return;
  ibv_send_wr wr{};
  ibv_send_wr* bad = nullptr;
  wr.wr_id = wr_id(c.id, kProbeWr, 0, 0);
  wr.opcode = IBV_WR_RDMA_WRITE;  // zero bytes: no receive consumed, only an ACK
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.wr.rdma.remote_addr = c.remote_addr;
  wr.wr.rdma.rkey = c.remote_rkey;
  if (ibv_post_send(q.qp, &wr, &bad) == 0) {
    ++q.sq_used;
    c.probe_pending = true;
  }
}

void Engine::post_error_record(Channel& c, ErrorCode code, int origin, std::string_view cause) {
  Qp& q = c.qps[0];
  if (c.error_sent || c.local_failure || q.sq_used >= c.sq_depth + kReservedSendWrs) return;
  std::byte* rec = c.stage.data + c.slots * c.slot_bytes;
  const std::size_t text = std::min(cause.size(), kErrorAreaBytes - kErrorHeaderBytes);
  put_u32(rec, static_cast<std::uint32_t>(code));
  put_u32(rec + 4, static_cast<std::uint32_t>(origin));
  put_u64(rec + 8, c.chunks_sent);
  put_u32(rec + 16, static_cast<std::uint32_t>(text));
  std::memcpy(rec + kErrorHeaderBytes, cause.data(), text);
  ibv_sge sge{};
  sge.addr = reinterpret_cast<std::uintptr_t>(rec);
  sge.length = static_cast<uint32_t>(kErrorHeaderBytes + text);
  sge.lkey = c.stage_mr->lkey;
  ibv_send_wr wr{};
  ibv_send_wr* bad = nullptr;
  wr.wr_id = wr_id(c.id, kErrorWr, 0, 0);
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.imm_data = htonl(make_imm(ImmKind::error, 0, 0));
  wr.wr.rdma.remote_addr = c.remote_addr + c.slots * c.slot_bytes;
  wr.wr.rdma.rkey = c.remote_rkey;
  if (ibv_post_send(q.qp, &wr, &bad) == 0) {
    ++q.sq_used;
    c.error_sent = true;
    c.error_pending = true;
  }
}

void Engine::pump(Channel& c) {
  if (c.failure) return;
  for (SendOp& op : c.sends) {
    while (!op.done && !op.error && (!op.started || op.issued < op.length)) {
      if (c.credits == 0) goto credits;
      const std::uint64_t seq = c.chunks_sent;
      const std::size_t slot = seq % c.slots;
      const Qp& q = c.qps[seq % c.qps.size()];
      if (q.sq_used >= c.sq_depth) goto credits;
      // A slot's previous chunk must have completed here too (its owner is counted down).
      if (c.slot_busy[slot]) goto credits;
      post_chunk(c, op);
      if (c.failure) return;
    }
  }
credits:
  if (c.credits_owed > 0) post_credits(c);
}

void Engine::consume(Channel& c) {
  while (!c.recvs.empty()) {
    auto it = std::find_if(c.recvs.begin(), c.recvs.end(),
                           [](const RecvOp& r) { return !r.done && !r.error; });
    if (it == c.recvs.end()) return;
    RecvOp& op = *it;
    const std::size_t slot = c.next_chunk % c.slots;
    Arrived& a = c.arrived[slot];
    if (!a.present) {
      if (c.failure) apply_failure(c);
      return;
    }
    const std::byte* src = c.recv_area.data + slot * c.slot_bytes;
    const std::size_t room = op.length - op.got;
    if (const std::size_t n = std::min<std::size_t>(room, a.bytes); n > 0) {
      std::memcpy(op.data + op.got, src, n);
    }
    const bool overflow = a.bytes > room;
    op.got += std::min<std::size_t>(room, a.bytes);
    const bool last = a.last;
    a = Arrived{};
    ++c.next_chunk;
    ++c.credits_owed;
    if (overflow || (last && op.got != op.length)) {
      Error e(ErrorCode::mismatch,
              overflow ? str_cat("rdma: rank ", rank_, " received a message of more than ",
                                 op.length, " bytes from peer ", c.peer, " where a receive of ",
                                 op.length, " bytes was posted")
                       : str_cat("rdma: rank ", rank_, " received a message of ", op.got,
                                 " bytes from peer ", c.peer, " where a receive of ", op.length,
                                 " bytes was posted"),
              {rank_, c.peer});
      op.error = e;
      // The order of messages on this connection is broken from here on.
      if (!c.failure) {
        c.failure = e;
        c.failure_after = c.next_chunk;
      }
      apply_failure(c);
      return;
    }
    if (last) op.done = true;
  }
}

void Engine::fail_channel(Channel& c, Error e, bool local) {
  if (local) c.local_failure = true;
  if (!c.failure) {
    c.failure = std::move(e);
    c.failure_after = local ? c.chunks_arrived : c.failure_after;
  }
  apply_failure(c);
}

void Engine::apply_failure(Channel& c) {
  if (!c.failure) return;
  for (SendOp& op : c.sends) {
    if (op.done || op.error) continue;
    const bool all_issued = op.started && op.issued == op.length;
    if (!all_issued || c.local_failure) op.error = *c.failure;
  }
  // Receives fail from the first one whose chunk will not arrive: after a local failure
  // nothing more arrives (a later chunk may have come on another queue pair while this one
  // was lost); after the peer's report, what it sent before reporting still arrives.
  bool failing = false;
  for (RecvOp& op : c.recvs) {
    if (op.done || op.error) continue;
    if (!failing) {
      const std::size_t slot = c.next_chunk % c.slots;
      failing = !c.arrived[slot].present && (c.local_failure || c.next_chunk >= c.failure_after);
      if (!failing) break;
    }
    op.error = *c.failure;
  }
}

void Engine::on_completion(const ibv_wc& wc) {
  auto it = channels_.find(wr_channel(wc.wr_id));
  if (it == channels_.end()) return;  // a connection that is gone
  Channel& c = *it->second;
  const WrKind kind = wr_kind(wc.wr_id);
  const int qpi = wr_qp(wc.wr_id);
  if (kind != kRecvWr) --c.qps[static_cast<std::size_t>(qpi)].sq_used;
  if (kind == kChunkWr) {
    const std::uint32_t slot = wr_value(wc.wr_id);
    c.slot_busy[slot] = false;
    const std::uint64_t owner = c.chunk_owner[slot];
    for (SendOp& op : c.sends) {
      if (op.id != owner) continue;
      --op.outstanding;
      if (wc.status == IBV_WC_SUCCESS && op.outstanding == 0 && op.started &&
          op.issued == op.length && !op.error) {
        op.done = true;
      }
      break;
    }
  } else if (kind == kProbeWr) {
    c.probe_pending = false;
  } else if (kind == kErrorWr) {
    c.error_pending = false;
  }
  if (wc.status != IBV_WC_SUCCESS) {
    if (wc.status == IBV_WC_WR_FLUSH_ERR && c.failure) return;
    ErrorCode code = ErrorCode::transport;
    std::string why;
    switch (wc.status) {
      case IBV_WC_RETRY_EXC_ERR:
        code = ErrorCode::peer_lost;
        why = "does not answer (retry exceeded: its process, queue pair or NIC is gone)";
        break;
      case IBV_WC_REM_ACCESS_ERR:
        why = "refused an RDMA WRITE (remote access error: bad rkey, bounds or access)";
        break;
      case IBV_WC_RNR_RETRY_EXC_ERR:
        why = "had no receive posted (receiver not ready, retries exceeded)";
        break;
      case IBV_WC_WR_FLUSH_ERR:
        why = "is unreachable: the queue pair entered the error state (work request flushed)";
        break;
      default:
        why = str_cat("failed a work request: ", v_.status(wc.status));
        break;
    }
    fail_channel(c,
                 Error(code,
                       str_cat("rdma: rank ", rank_, ": peer ", c.peer, " ", why, " (",
                               v_.status(wc.status), " on queue pair ", qpi, ")"),
                       {rank_, c.peer}),
                 true);
    return;
  }
  c.last_heard = Clock::now();
  if (kind != kRecvWr) return;
  post_recv_wr(c, qpi);
  const std::uint32_t imm = ntohl(wc.imm_data);
  c.credits += imm_credits(imm);
  const ImmKind ik = imm_kind(imm);
  if (ik == ImmKind::data || ik == ImmKind::last) {
    const std::uint64_t seq = c.next_chunk + ((imm_seq(imm) - (c.next_chunk & 0xffff)) & 0xffff);
    const std::size_t slot = seq % c.slots;
    if (seq >= c.next_chunk + c.slots || c.arrived[slot].present || wc.byte_len > c.slot_bytes) {
      fail_channel(c,
                   Error(ErrorCode::transport,
                         str_cat("rdma: rank ", rank_, ": peer ", c.peer,
                                 " broke the credit protocol (chunk ", seq, " while expecting ",
                                 c.next_chunk, ")"),
                         {rank_, c.peer}),
                   true);
      return;
    }
    c.arrived[slot] = Arrived{true, ik == ImmKind::last, wc.byte_len};
    c.chunks_arrived = std::max(c.chunks_arrived, seq + 1);
  } else if (ik == ImmKind::error) {
    const std::byte* rec = c.recv_area.data + c.slots * c.slot_bytes;
    const auto code = static_cast<ErrorCode>(get_u32(rec));
    auto origin = static_cast<std::int32_t>(get_u32(rec + 4));
    if (origin < 0) origin = c.peer;
    const std::uint64_t after = get_u64(rec + 8);
    const std::size_t text =
        std::min<std::size_t>(get_u32(rec + 16), kErrorAreaBytes - kErrorHeaderBytes);
    Error e(code, std::string(reinterpret_cast<const char*>(rec + kErrorHeaderBytes), text),
            {origin});
    e.reported_by(origin);
    if (!c.failure) {
      c.failure = e;
      c.failure_after = after;
    }
    apply_failure(c);
  }
}

void Engine::progress() {
  ibv_wc wc[32];
  for (;;) {
    const int n = ibv_poll_cq(cq_, 32, wc);
    if (n < 0) {
      throw Error(ErrorCode::transport, str_cat("rdma: rank ", rank_, ": ibv_poll_cq failed"),
                  {rank_});
    }
    for (int i = 0; i < n; ++i) on_completion(wc[i]);
    if (n < 32) break;
  }
  for (auto& [id, c] : channels_) {
    consume(*c);
    if (c->failure) {
      apply_failure(*c);
    } else {
      pump(*c);
    }
  }
}

void Engine::block(int timeout_ms) {
  pollfd p[2] = {{chan_->fd, POLLIN, 0}, {event_fd_.get(), POLLIN, 0}};
  const int n = ::poll(p, 2, timeout_ms);
  if (n <= 0) return;
  if (p[0].revents != 0) {
    ibv_cq* cq = nullptr;
    void* ctx = nullptr;
    while (v_.get_cq_event(chan_, &cq, &ctx) == 0) ++unacked_events_;
    if (unacked_events_ > 0) {
      v_.ack_cq_events(cq_, unacked_events_);
      unacked_events_ = 0;
    }
  }
  if (p[1].revents != 0) {
    std::uint64_t count = 0;
    [[maybe_unused]] ssize_t r = ::read(event_fd_.get(), &count, sizeof(count));
  }
}

SendOp* Engine::find_send(Channel& c, std::uint64_t id) {
  for (SendOp& op : c.sends) {
    if (op.id == id) return &op;
  }
  return nullptr;
}

RecvOp* Engine::find_recv(Channel& c, std::uint64_t id) {
  for (RecvOp& op : c.recvs) {
    if (op.id == id) return &op;
  }
  return nullptr;
}

void Engine::release_send(Channel& c, SendOp& op) noexcept {
  // Chunks posted in place may still be read by the NIC: wait for their completions (they
  // complete, or flush once the queue pairs are in the error state) before the memory is
  // the caller's again.
  if (op.lkey == 0 || op.outstanding == 0) return;
  const std::uint64_t id = op.id;
  try {
    const Deadline soft = Clock::now() + std::chrono::seconds(2);
    bool forced = false;
    for (;;) {
      SendOp* o = find_send(c, id);
      if (o == nullptr || o->outstanding == 0) return;
      if (Clock::now() >= soft && !forced) {
        for (Qp& q : c.qps) {
          ibv_qp_attr a{};
          a.qp_state = IBV_QPS_ERR;
          v_.modify_qp(q.qp, &a, IBV_QP_STATE);
        }
        c.local_failure = true;
        forced = true;
      }
      if (Clock::now() >= soft + std::chrono::seconds(2)) return;
      progress();
      block(1);
    }
  } catch (...) {
  }
}

void Engine::throw_op(Channel& c, bool is_send, std::uint64_t id, Error e) {
  if (is_send) {
    if (SendOp* op = find_send(c, id)) release_send(c, *op);
    std::erase_if(c.sends, [id](const SendOp& o) { return o.id == id; });
  } else {
    std::erase_if(c.recvs, [id](const RecvOp& o) { return o.id == id; });
  }
  throw e;
}

bool Engine::test_send(Channel& c, std::uint64_t id) {
  progress();
  SendOp* op = find_send(c, id);
  RINGLET_CHECK(op != nullptr, "rdma: send request ", id, " to peer ", c.peer,
                " is not outstanding");
  if (op->error) throw_op(c, true, id, *op->error);
  if (!op->done) return false;
  std::erase_if(c.sends, [id](const SendOp& o) { return o.id == id; });
  return true;
}

bool Engine::test_recv(Channel& c, std::uint64_t id) {
  progress();
  RecvOp* op = find_recv(c, id);
  RINGLET_CHECK(op != nullptr, "rdma: receive request ", id, " from peer ", c.peer,
                " is not outstanding");
  if (op->error) throw_op(c, false, id, *op->error);
  if (!op->done) return false;
  std::erase_if(c.recvs, [id](const RecvOp& o) { return o.id == id; });
  return true;
}

void Engine::wait_send(Channel& c, std::uint64_t id, Deadline deadline) {
  wait_until(c, true, id, deadline);
}

void Engine::wait_recv(Channel& c, std::uint64_t id, Deadline deadline) {
  wait_until(c, false, id, deadline);
}

void Engine::wait_until(Channel& c, bool is_send, std::uint64_t id, Deadline deadline) {
  const Deadline start = Clock::now();
  const int spin_limit = oversubscribed_ ? 20 : kSpinRounds;
  int spins = 0;
  auto settled = [&]() { return is_send ? test_send(c, id) : test_recv(c, id); };
  for (;;) {
    if (settled()) return;
    check_abort();
    const auto now = Clock::now();
    if (now >= deadline) {
      const std::size_t bytes = is_send ? find_send(c, id)->length : find_recv(c, id)->length;
      throw_op(
          c, is_send, id,
          Error(ErrorCode::timeout,
                str_cat("rdma: rank ", rank_, " waited ", ms_between(start, now), " ms for peer ",
                        c.peer, is_send ? " to take a send of " : " to send a message of ", bytes,
                        " bytes"),
                {rank_, c.peer}));
    }
    if (++spins < spin_limit) {
      if (oversubscribed_) sched_yield();
      continue;
    }
    if (now - c.last_heard > kProbeAfter) post_probe(c);
    if (ibv_req_notify_cq(cq_, 0) != 0) {
      throw Error(ErrorCode::transport, str_cat("rdma: rank ", rank_, ": ibv_req_notify_cq failed"),
                  {rank_});
    }
    if (settled()) return;
    block(ms_until(deadline, kMaxBlockMs));
  }
}

void Engine::report_failure(ErrorCode code, int origin_rank, std::string_view cause) noexcept {
  try {
    for (auto& [id, c] : channels_) post_error_record(*c, code, origin_rank, cause);
    const Deadline deadline = Clock::now() + std::chrono::seconds(1);
    for (;;) {
      bool pending = false;
      for (auto& [id, c] : channels_) pending = pending || c->error_pending;
      if (!pending || Clock::now() >= deadline) return;
      ibv_wc wc[16];
      const int n = ibv_poll_cq(cq_, 16, wc);
      for (int i = 0; i < n; ++i) on_completion(wc[i]);
      if (n == 0) block(1);
    }
  } catch (...) {
  }
}

void Engine::add_user_region(const std::byte* base, std::size_t size, std::uint32_t lkey) {
  std::lock_guard lock(user_mutex_);
  user_regions_.push_back({base, size, lkey});
}

void Engine::remove_user_region(std::uint32_t lkey) noexcept {
  std::lock_guard lock(user_mutex_);
  std::erase_if(user_regions_, [lkey](const UserRegion& r) { return r.lkey == lkey; });
}

std::uint32_t Engine::user_lkey(const std::byte* data, std::size_t size) const {
  std::lock_guard lock(user_mutex_);
  for (const UserRegion& r : user_regions_) {
    if (data >= r.base && size <= r.size &&
        static_cast<std::size_t>(data - r.base) <= r.size - size) {
      return r.lkey;
    }
  }
  return 0;
}

}  // namespace ringlet::transport::rdma
