// SPDX-License-Identifier: Apache-2.0
// The wire between emulated NICs: filesystem Unix sockets, the requester (QP worker) and the
// responder (one thread per incoming connection), shared by threads and processes alike.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>

#include "emu_internal.hpp"

namespace rlemu {
namespace {

using Clock = std::chrono::steady_clock;

// Process-wide state. It is never destroyed: emulator threads may still run while static
// destructors do, and a child after fork() must not run the parent's destructors.
struct Global {
  std::mutex mu;  // nics, counters
  std::atomic<uint32_t> gen{1};
  std::weak_ptr<Nic> nics[kMaxDevices];
  uint32_t nic_counter = 0;
  uint32_t qpn_counter = 0x100;
  uint32_t key_counter = 1;
  std::mutex fd_mu;
  std::set<int> fds;
  std::mutex log_mu;
  std::unordered_map<uint32_t, std::shared_ptr<MrLog>> logs;
  std::mutex hook_mu;
  ringlet_emu_access_hook hook = nullptr;
  void* hook_user = nullptr;
};

void atfork_prepare();
void atfork_parent();
void atfork_child();

Global& G() {
  static Global* g = [] {
    auto* p = new Global;
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    return p;
  }();
  return *g;
}

// Every global lock is held across fork() so that the child finds them consistent.
void atfork_prepare() {
  Global& g = G();
  g.mu.lock();
  g.fd_mu.lock();
  g.log_mu.lock();
  g.hook_mu.lock();
}
void atfork_parent() {
  Global& g = G();
  g.hook_mu.unlock();
  g.log_mu.unlock();
  g.fd_mu.unlock();
  g.mu.unlock();
}
// The child has none of the parent's emulator threads: it forgets the parent's NICs (they are
// leaked, never torn down, so the parent's socket files stay) and closes the parent's sockets
// and event fds so that peers of the parent see its connections end only when the parent's do.
void atfork_child() {
  Global& g = G();
  g.gen.fetch_add(1);
  for (auto& w : g.nics) w.reset();
  for (int fd : g.fds) ::close(fd);
  g.fds.clear();
  g.hook_mu.unlock();
  g.log_mu.unlock();
  g.fd_mu.unlock();
  g.mu.unlock();
}

constexpr uint32_t kMagic = 0x52564531;  // "RVE1"
enum WireOp : uint32_t { kSend = 1, kSendImm, kWrite, kWriteImm };
enum WireStatus : uint32_t { kAck = 1, kRnr, kRemAccess, kRemInvReq, kRemOp, kDrop };

struct WireReq {
  uint32_t magic;
  uint32_t op;
  uint32_t dst_qpn;
  uint32_t src_qpn;
  uint8_t src_gid[16];
  uint32_t src_lid;
  uint32_t psn;
  uint32_t npkts;
  uint32_t imm;
  uint32_t rkey;
  uint32_t flags;
  uint64_t remote_addr;
  uint64_t length;
};
struct WireRep {
  uint32_t magic;
  uint32_t status;
  uint32_t rnr_timer;
  uint32_t pad;
};

// Moves n bytes over a non-blocking socket, in slices of 20 ms so that abort() is seen.
// Returns 0, -1 on a broken connection or end of file, -2 when aborted or past the deadline.
int io_all(int fd, void* buf, size_t n, bool out, const std::function<bool()>& abort,
           Clock::time_point deadline) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = out ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
      continue;
    }
    if (r == 0 && !out) return -1;
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
    if (abort() || Clock::now() >= deadline) return -2;
    pollfd pfd{fd, static_cast<short>(out ? POLLOUT : POLLIN), 0};
    ::poll(&pfd, 1, 20);
  }
  return 0;
}

// The IB encodings of the RNR timer in microseconds (index 0 is the longest).
constexpr uint32_t kRnrMicros[32] = {655360, 10,    20,    30,     40,     60,     80,     120,
                                     160,    240,   320,   480,    640,    960,    1280,   1920,
                                     2560,   3840,  5120,  7680,   10240,  15360,  20480,  30720,
                                     40960,  61440, 81920, 122880, 163840, 245760, 327680, 491520};
// Emulated waits are capped so that a test of a retry path stays short.
constexpr auto kMaxEmulatedWait = std::chrono::milliseconds(100);

Clock::duration rnr_delay(uint32_t timer) {
  auto d = std::chrono::microseconds(kRnrMicros[timer & 31]);
  return std::min<Clock::duration>(d, kMaxEmulatedWait);
}
// The local ACK timeout, 4.096 us * 2^timeout; 0 means wait for ever.
Clock::duration ack_timeout(uint8_t timeout) {
  if (timeout == 0) return Clock::duration::max() / 2;
  double us = 4.096 * static_cast<double>(1ULL << std::min<uint8_t>(timeout, 31));
  auto d = std::chrono::microseconds(static_cast<int64_t>(us));
  return std::min<Clock::duration>(d, kMaxEmulatedWait);
}

uint32_t mtu_bytes(ibv_mtu m) { return 128U << static_cast<int>(m); }

uint32_t packets(uint64_t len, ibv_mtu m) {
  uint64_t mtu = mtu_bytes(m);
  return static_cast<uint32_t>(std::max<uint64_t>(1, (len + mtu - 1) / mtu));
}

std::string hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += d[p[i] >> 4];
    s += d[p[i] & 15];
  }
  return s;
}

int unix_socket() {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd >= 0) track_fd(fd);
  return fd;
}

bool fill_addr(sockaddr_un* a, const std::string& path) {
  std::memset(a, 0, sizeof(*a));
  a->sun_family = AF_UNIX;
  if (path.size() >= sizeof(a->sun_path)) return false;
  std::memcpy(a->sun_path, path.c_str(), path.size() + 1);
  return true;
}

// Connects to a NIC's socket. Returns the fd or -1 (the NIC is gone or never existed).
int connect_path(const std::string& path) {
  sockaddr_un a;
  if (!fill_addr(&a, path)) return -1;
  int fd = unix_socket();
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) return fd;
  if (errno == EINPROGRESS || errno == EAGAIN) {
    // A full backlog: wait briefly for the acceptor rather than treat the peer as gone.
    pollfd pfd{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof(err);
    if (::poll(&pfd, 1, 200) == 1 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
        err == 0)
      return fd;
  }
  close_fd(fd);
  return -1;
}

bool stale_socket(const std::string& path) {
  int fd = connect_path(path);
  if (fd >= 0) {
    close_fd(fd);
    return false;
  }
  return true;
}

}  // namespace

uint32_t current_gen() { return G().gen.load(); }

void* Thread::trampoline(void* self) {
  static_cast<Thread*>(self)->fn_();
  return nullptr;
}

void Thread::start(std::function<void()> fn) {
  fn_ = std::move(fn);
  size_ = 1 << 20;
  stack_ = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (stack_ == MAP_FAILED) std::abort();
  ::mprotect(stack_, 4096, PROT_NONE);  // a guard page below the stack
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstack(&attr, stack_, size_);
  if (pthread_create(&tid_, &attr, trampoline, this) != 0) std::abort();
  pthread_attr_destroy(&attr);
  started_ = true;
}

void Thread::join() {
  if (!started_) return;
  pthread_join(tid_, nullptr);
  started_ = false;
  ::munmap(stack_, size_);
  stack_ = nullptr;
}

Thread::~Thread() {
  // Only reached in the generation that started the thread, after join(); a parent's objects
  // are never destroyed in a child.
  if (started_) std::abort();
}

void track_fd(int fd) {
  Global& g = G();
  std::lock_guard<std::mutex> l(g.fd_mu);
  g.fds.insert(fd);
}

void close_fd(int fd) {
  if (fd < 0) return;
  Global& g = G();
  {
    std::lock_guard<std::mutex> l(g.fd_mu);
    g.fds.erase(fd);
  }
  ::close(fd);
}

std::string socket_dir() {
  const char* d = std::getenv("RINGLET_VERBS_EMU_DIR");
  if (d && *d) return d;
  // Per user, so that one user's folder never blocks another's.
  return "/tmp/ringlet-verbs-emu-" + std::to_string(::getuid());
}

std::string gid_path(const std::string& dir, const uint8_t* gid) {
  return dir + "/g-" + hex(gid, 16) + ".sock";
}

std::string lid_path(const std::string& dir, uint16_t lid) {
  char b[16];
  std::snprintf(b, sizeof(b), "/lid-%04x", lid);
  return dir + b;
}

uint32_t next_qpn() {
  Global& g = G();
  std::lock_guard<std::mutex> l(g.mu);
  uint32_t q = g.qpn_counter++ & 0xffffff;
  if (q < 0x100) q = g.qpn_counter = 0x100;
  return q;
}

uint32_t next_key_index() {
  Global& g = G();
  std::lock_guard<std::mutex> l(g.mu);
  return g.key_counter++ & 0xffffff;
}

std::shared_ptr<MrLog> new_log(uint32_t lkey, uint32_t rkey) {
  auto log = std::make_shared<MrLog>();
  log->lkey = lkey;
  log->rkey = rkey;
  Global& g = G();
  std::lock_guard<std::mutex> l(g.log_mu);
  g.logs[lkey] = log;
  return log;
}

void record_access(const std::shared_ptr<MrLog>& log, int kind, const void* addr, uint64_t len) {
  Global& g = G();
  ringlet_emu_access a{kind, log->lkey, log->rkey, addr, len, 0};
  {
    std::lock_guard<std::mutex> l(g.log_mu);
    if (kind == RINGLET_EMU_LOCAL_READ) ++log->local_reads;
    if (kind == RINGLET_EMU_LOCAL_WRITE) ++log->local_writes;
    if (kind == RINGLET_EMU_REMOTE_WRITE) ++log->remote_writes;
    log->bytes += len;
    if (!log->registered) {
      ++log->after_dereg;
      a.after_dereg = 1;
    }
    if (log->ranges.size() < 65536)
      log->ranges.emplace_back(reinterpret_cast<uintptr_t>(addr), len);
  }
  ringlet_emu_access_hook hook;
  void* user;
  {
    std::lock_guard<std::mutex> l(g.hook_mu);
    hook = g.hook;
    user = g.hook_user;
  }
  if (hook) hook(user, &a);
}

void mark_deregistered(const std::shared_ptr<MrLog>& log) {
  std::lock_guard<std::mutex> l(G().log_mu);
  log->registered = false;
}

uint8_t* Mr::translate(uint64_t iova_addr, uint64_t len) const {
  if (iova_addr < iova || len > length || iova_addr - iova > length - len) return nullptr;
  return reinterpret_cast<uint8_t*>(addr + (iova_addr - iova));
}

// ---- NIC lifetime --------------------------------------------------------------------------

std::shared_ptr<Nic> nic_for_device(int index, int* err) {
  Global& g = G();
  std::lock_guard<std::mutex> l(g.mu);
  if (auto n = g.nics[index].lock()) return n;
  uint32_t gen = g.gen.load();
  // The deleter tears the NIC down only in the process generation that made it.
  std::shared_ptr<Nic> n(new Nic, [](Nic* p) {
    if (p->gen != current_gen()) return;
    p->shutdown();
    delete p;
  });
  n->index = index;
  n->gen = gen;
  // The GUID names the NIC: "RV", a per-process counter, and the pid.
  for (int attempt = 0; attempt < 64; ++attempt) {
    uint32_t counter = g.nic_counter++ & 0xffff;
    uint32_t pid = static_cast<uint32_t>(::getpid());
    n->guid = (0x5256ULL << 48) | (static_cast<uint64_t>(counter) << 32) | pid;
    n->gid.global.subnet_prefix = htobe64(0xfe80000000000000ULL);
    n->gid.global.interface_id = htobe64(n->guid);
    int rc = n->start();
    if (rc == 0) {
      g.nics[index] = n;
      return n;
    }
    if (rc != EADDRINUSE) {
      *err = rc;
      n->gen = 0;  // nothing started: the deleter must not tear anything down
      return nullptr;
    }
  }
  *err = EADDRINUSE;
  n->gen = 0;
  return nullptr;
}

int Nic::start() {
  // The folder is read once, here: the NIC's threads never call getenv().
  dir = socket_dir();
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return errno;
  sock_path = gid_path(dir, gid.raw);
  sockaddr_un a;
  if (!fill_addr(&a, sock_path)) return ENAMETOOLONG;
  int fd = unix_socket();
  if (fd < 0) return errno;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    int e = errno;
    close_fd(fd);
    // A socket file left by a process that died: take it over.
    if (e == EADDRINUSE && stale_socket(sock_path) && ::unlink(sock_path.c_str()) == 0)
      return start();
    return e;
  }
  if (::listen(fd, 128) != 0) {
    int e = errno;
    close_fd(fd);
    ::unlink(sock_path.c_str());
    return e;
  }
  listen_fd = fd;
  // The LID is a name in the same folder, so that a transport may address by dlid alone.
  std::string target = sock_path.substr(sock_path.rfind('/') + 1);
  uint32_t start_lid = (guid * 2654435761ULL) % 0xbffe;
  for (uint32_t i = 0; i < 0xbffe; ++i) {
    uint16_t l = static_cast<uint16_t>((start_lid + i) % 0xbffe + 1);
    std::string p = rlemu::lid_path(dir, l);
    if (::symlink(target.c_str(), p.c_str()) == 0) {
      lid = l;
      lid_link = p;
      break;
    }
    if (errno != EEXIST) break;
    if (stale_socket(p) && ::unlink(p.c_str()) == 0) --i;  // the same LID again, now free
  }
  if (lid == 0) {
    close_fd(listen_fd);
    listen_fd = -1;
    ::unlink(sock_path.c_str());
    return ENOSPC;
  }
  acceptor.start([this] { accept_loop(); });
  return 0;
}

void Nic::shutdown() {
  stop = true;
  if (acceptor.joinable()) acceptor.join();
  std::list<std::unique_ptr<Conn>> all;
  {
    std::lock_guard<std::mutex> l(mu);
    all.swap(conns);
  }
  for (auto& c : all) {
    ::shutdown(c->fd, SHUT_RDWR);
    if (c->th.joinable()) c->th.join();
    close_fd(c->fd);
  }
  close_fd(listen_fd);
  if (!lid_link.empty()) ::unlink(lid_link.c_str());
  ::unlink(sock_path.c_str());
}

void Nic::accept_loop() {
  while (!stop) {
    pollfd pfd{listen_fd, POLLIN, 0};
    if (::poll(&pfd, 1, 50) <= 0) continue;
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    track_fd(fd);
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    Conn* raw = c.get();
    std::lock_guard<std::mutex> l(mu);
    // Connections whose peer has gone are reaped here, so that long runs keep few threads.
    for (auto it = conns.begin(); it != conns.end();) {
      if ((*it)->done) {
        (*it)->th.join();
        close_fd((*it)->fd);
        it = conns.erase(it);
      } else {
        ++it;
      }
    }
    raw->th.start([this, raw] { serve(raw); });
    conns.push_back(std::move(c));
  }
}

std::shared_ptr<Qp> Nic::find_qp(uint32_t qpn) {
  std::lock_guard<std::mutex> l(mu);
  auto it = qps.find(qpn);
  return it == qps.end() ? nullptr : it->second;
}

void Nic::post_port_event(ibv_event_type type) {
  std::lock_guard<std::mutex> l(mu);
  for (Context* c : contexts) {
    ibv_async_event ev{};
    ev.element.port_num = 1;
    ev.event_type = type;
    c->post_event(ev);
  }
}

// ---- Responder -----------------------------------------------------------------------------

namespace {

struct Outcome {
  WireStatus status;
  uint32_t rnr_timer;
  // A successful receive completion, pushed only once the ACK is on its way (see serve).
  std::optional<CqEntry> completion = std::nullopt;
  bool solicited = false;
};

bool source_matches(const Qp& qp, const WireReq& m) {
  if (qp.attr.dest_qp_num != m.src_qpn) return false;
  if (qp.attr.ah_attr.is_global)
    return std::memcmp(qp.attr.ah_attr.grh.dgid.raw, m.src_gid, 16) == 0;
  return qp.attr.ah_attr.dlid == m.src_lid;
}

ibv_wc recv_wc(const Qp& qp, const RecvWr& r, ibv_wc_status st, const WireReq& m) {
  ibv_wc wc{};
  wc.wr_id = r.wr_id;
  wc.status = st;
  wc.opcode = (m.op == kWriteImm) ? IBV_WC_RECV_RDMA_WITH_IMM : IBV_WC_RECV;
  wc.byte_len = static_cast<uint32_t>(m.length);
  if (m.op == kSendImm || m.op == kWriteImm) {
    wc.wc_flags = IBV_WC_WITH_IMM;
    wc.imm_data = m.imm;
  }
  wc.qp_num = qp.box.qp.qp_num;
  wc.src_qp = m.src_qpn;
  wc.slid = static_cast<uint16_t>(m.src_lid);
  return wc;
}

// Executes one request on the target QP. Needs qp.mu.
Outcome execute(Qp& qp, const WireReq& m, const uint8_t* payload) {
  Nic& nic = *qp.nic;
  ibv_qp_state st = qp.state();
  if (qp.dead || (st != IBV_QPS_RTR && st != IBV_QPS_RTS) || !source_matches(qp, m))
    return {kDrop, 0};
  uint32_t diff = (m.psn - qp.rq_psn) & 0xffffff;
  if (diff != 0) {
    // An older PSN is a retransmission of something already executed: acknowledge it again.
    // A newer one is a sequence error, which the requester sees as a lost packet. Stricter than
    // a NIC: an "older" PSN that this QP never received (before its RTR rq_psn) is a
    // misconfigured PSN pair, and is dropped rather than silently acknowledged.
    uint32_t executed = (qp.rq_psn - qp.rq_psn_start) & 0xffffff;
    uint32_t since_start = (m.psn - qp.rq_psn_start) & 0xffffff;
    bool duplicate = diff >= 0x800000 && since_start < executed;
    return {duplicate ? kAck : kDrop, 0};
  }
  bool needs_recv = m.op != kWrite;
  if (needs_recv && qp.rq.empty()) return {kRnr, qp.attr.min_rnr_timer};
  bool is_write = m.op == kWrite || m.op == kWriteImm;

  if (is_write) {
    bool ok = (qp.attr.qp_access_flags & IBV_ACCESS_REMOTE_WRITE) != 0;
    if (ok && m.length > 0) {
      std::shared_lock<std::shared_mutex> l(nic.mr_mu);
      auto it = nic.by_rkey.find(m.rkey);
      Mr* mr = it == nic.by_rkey.end() ? nullptr : it->second;
      uint8_t* dst = nullptr;
      if (mr && mr->pd == qp.pd && (mr->access & IBV_ACCESS_REMOTE_WRITE))
        dst = mr->translate(m.remote_addr, m.length);
      if (dst) {
        std::memcpy(dst, payload, m.length);
        record_access(mr->log, RINGLET_EMU_REMOTE_WRITE, dst, m.length);
      } else {
        ok = false;
      }
    }
    if (!ok) {
      qp.to_error_locked();
      ibv_async_event ev{};
      ev.element.qp = &qp.box.qp;
      ev.event_type = IBV_EVENT_QP_ACCESS_ERR;
      qp.ctx->post_event(ev);
      return {kRemAccess, 0};
    }
    qp.rq_psn = (qp.rq_psn + m.npkts) & 0xffffff;
    if (m.op == kWrite) return {kAck, 0};
    RecvWr r = std::move(qp.rq.front());
    qp.rq.pop_front();
    return {kAck, 0,
            CqEntry{recv_wc(qp, r, IBV_WC_SUCCESS, m), qp.weak_from_this(), qp.epoch, false, r.seq},
            (m.flags & IBV_SEND_SOLICITED) != 0};
  }

  // SEND: scatter into the first posted receive.
  RecvWr r = std::move(qp.rq.front());
  qp.rq.pop_front();
  uint64_t room = 0;
  for (auto& s : r.sges) room += s.length;
  ibv_wc_status status = IBV_WC_SUCCESS;
  if (m.length > room) {
    status = IBV_WC_LOC_LEN_ERR;
  } else {
    std::shared_lock<std::shared_mutex> l(nic.mr_mu);
    // Every SGE that the message reaches is checked before any byte is placed.
    std::vector<std::pair<uint8_t*, Mr*>> dst;
    uint64_t left = m.length;
    for (auto& s : r.sges) {
      if (left == 0) break;
      uint64_t n = std::min<uint64_t>(left, s.length);
      auto it = nic.by_lkey.find(s.lkey);
      Mr* mr = it == nic.by_lkey.end() ? nullptr : it->second;
      uint8_t* p = nullptr;
      if (mr && mr->pd == qp.pd && (mr->access & IBV_ACCESS_LOCAL_WRITE))
        p = mr->translate(s.addr, n);
      if (!p) {
        status = IBV_WC_LOC_PROT_ERR;
        break;
      }
      dst.emplace_back(p, mr);
      left -= n;
    }
    if (status == IBV_WC_SUCCESS) {
      left = m.length;
      const uint8_t* src = payload;
      for (size_t i = 0; i < dst.size(); ++i) {
        uint64_t n = std::min<uint64_t>(left, r.sges[i].length);
        std::memcpy(dst[i].first, src, n);
        record_access(dst[i].second->log, RINGLET_EMU_LOCAL_WRITE, dst[i].first, n);
        src += n;
        left -= n;
      }
    }
  }
  if (status != IBV_WC_SUCCESS) {
    qp.rcq->push({recv_wc(qp, r, status, m), qp.weak_from_this(), qp.epoch, false, r.seq}, true);
    qp.to_error_locked();
    return {status == IBV_WC_LOC_LEN_ERR ? kRemInvReq : kRemOp, 0};
  }
  qp.rq_psn = (qp.rq_psn + m.npkts) & 0xffffff;
  return {kAck, 0, CqEntry{recv_wc(qp, r, status, m), qp.weak_from_this(), qp.epoch, false, r.seq},
          (m.flags & IBV_SEND_SOLICITED) != 0};
}

}  // namespace

void Nic::serve(Conn* c) {
  auto abort = [this] { return stop.load(); };
  auto forever = Clock::time_point::max();
  std::vector<uint8_t> payload;
  for (;;) {
    WireReq m;
    if (io_all(c->fd, &m, sizeof(m), false, abort, forever) != 0) break;
    if (m.magic != kMagic || m.length > kMaxMsg) break;
    payload.resize(m.length);
    if (m.length && io_all(c->fd, payload.data(), m.length, false, abort, forever) != 0) break;
    Outcome out{kDrop, 0};
    bool replied = false, reply_failed = false;
    if (port_state.load() == IBV_PORT_ACTIVE) {
      if (auto qp = find_qp(m.dst_qpn)) {
        std::lock_guard<std::mutex> l(qp->mu);
        out = execute(*qp, m, payload.data());
        if (out.completion) {
          // As on a NIC, the ACK leaves before the application can see the receive: a process
          // stopped (SIGSTOP) right after its completion must not leave the requester waiting.
          WireRep rep{kMagic, out.status, out.rnr_timer, 0};
          reply_failed = io_all(c->fd, &rep, sizeof(rep), true, abort, forever) != 0;
          replied = true;
          qp->rcq->push(*out.completion, out.solicited);
        }
      }
    }
    if (reply_failed) break;
    if (!replied) {
      WireRep rep{kMagic, out.status, out.rnr_timer, 0};
      if (io_all(c->fd, &rep, sizeof(rep), true, abort, forever) != 0) break;
    }
  }
  c->done = true;
}

// ---- Requester -----------------------------------------------------------------------------

void Qp::complete_send_locked(const SendWr& wr, ibv_wc_status status) {
  bool signalled = sig_all || (wr.flags & IBV_SEND_SIGNALED);
  if (status == IBV_WC_SUCCESS && !signalled) return;
  ibv_wc wc{};
  wc.wr_id = wr.wr_id;
  wc.status = status;
  switch (wr.opcode) {
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
      wc.opcode = IBV_WC_SEND;
      break;
    default:
      wc.opcode = IBV_WC_RDMA_WRITE;
      break;
  }
  wc.qp_num = box.qp.qp_num;
  if (status != IBV_WC_SUCCESS && status != IBV_WC_WR_FLUSH_ERR) wc.vendor_err = 0x100 + status;
  scq->push({wc, weak_from_this(), epoch, true, wr.seq}, status != IBV_WC_SUCCESS);
}

void Qp::flush_locked() {
  for (auto& wr : sq) complete_send_locked(wr, IBV_WC_WR_FLUSH_ERR);
  sq.clear();
  for (auto& r : rq) {
    ibv_wc wc{};
    wc.wr_id = r.wr_id;
    wc.status = IBV_WC_WR_FLUSH_ERR;
    wc.opcode = IBV_WC_RECV;
    wc.qp_num = box.qp.qp_num;
    rcq->push({wc, weak_from_this(), epoch, false, r.seq}, true);
  }
  rq.clear();
  flush_gen.fetch_add(1);
  cv.notify_all();
}

void Qp::to_error_locked() {
  box.qp.state = IBV_QPS_ERR;
  attr.qp_state = IBV_QPS_ERR;
  flush_locked();
}

void Qp::retire(bool send, uint32_t entry_epoch, uint64_t seq) {
  std::lock_guard<std::mutex> l(mu);
  if (entry_epoch != epoch) return;
  uint64_t& r = send ? sq_retired : rq_retired;
  r = std::max(r, seq + 1);
}

void Qp::run_worker() {
  std::vector<uint8_t> data;
  for (;;) {
    SendWr wr;
    uint64_t gen;
    ibv_qp_attr a;
    uint32_t psn;
    {
      std::unique_lock<std::mutex> l(mu);
      while (!stop && !(state() == IBV_QPS_RTS && !sq.empty()))
        cv.wait_for(l, std::chrono::milliseconds(100));
      if (stop) return;
      wr = sq.front();
      gen = flush_gen.load();
      a = attr;
      psn = sq_psn;
    }
    auto abandoned = [&] { return stop.load() || flush_gen.load() != gen; };
    auto finish = [&](ibv_wc_status st, uint32_t npkts) {
      std::lock_guard<std::mutex> l(mu);
      if (abandoned()) return;  // flushed (or reset) while in flight
      sq.pop_front();
      if (st == IBV_WC_SUCCESS) {
        sq_psn = (sq_psn + npkts) & 0xffffff;
        complete_send_locked(wr, st);
      } else {
        complete_send_locked(wr, st);
        to_error_locked();
      }
    };

    // Gather the payload. Inline data was copied when the WR was posted.
    ibv_wc_status local = IBV_WC_SUCCESS;
    if (wr.is_inline) {
      data = wr.inline_data;
    } else {
      data.clear();
      uint64_t total = 0;
      for (auto& s : wr.sges) total += s.length;
      if (total > kMaxMsg) {
        local = IBV_WC_LOC_LEN_ERR;
      } else {
        data.resize(total);
        std::shared_lock<std::shared_mutex> l(nic->mr_mu);
        uint64_t off = 0;
        for (auto& s : wr.sges) {
          if (s.length == 0) continue;
          auto it = nic->by_lkey.find(s.lkey);
          Mr* mr = it == nic->by_lkey.end() ? nullptr : it->second;
          uint8_t* p = (mr && mr->pd == pd) ? mr->translate(s.addr, s.length) : nullptr;
          if (!p) {
            local = IBV_WC_LOC_PROT_ERR;
            break;
          }
          std::memcpy(data.data() + off, p, s.length);
          record_access(mr->log, RINGLET_EMU_LOCAL_READ, p, s.length);
          off += s.length;
        }
      }
    }
    if (local != IBV_WC_SUCCESS) {
      finish(local, 0);
      continue;
    }

    WireReq m{};
    m.magic = kMagic;
    switch (wr.opcode) {
      case IBV_WR_SEND:
        m.op = kSend;
        break;
      case IBV_WR_SEND_WITH_IMM:
        m.op = kSendImm;
        break;
      case IBV_WR_RDMA_WRITE:
        m.op = kWrite;
        break;
      default:
        m.op = kWriteImm;
        break;
    }
    m.dst_qpn = a.dest_qp_num;
    m.src_qpn = box.qp.qp_num;
    std::memcpy(m.src_gid, nic->gid.raw, 16);
    m.src_lid = nic->lid;
    m.psn = psn;
    m.npkts = packets(data.size(), a.path_mtu);
    m.imm = wr.imm;
    m.rkey = wr.rkey;
    m.flags = wr.flags;
    m.remote_addr = wr.remote_addr;
    m.length = data.size();

    std::string path = a.ah_attr.is_global ? gid_path(nic->dir, a.ah_attr.grh.dgid.raw)
                                           : lid_path(nic->dir, a.ah_attr.dlid);
    int retries = a.retry_cnt;
    int rnr_retries = a.rnr_retry;  // 7 means retry for ever
    ibv_wc_status result = IBV_WC_SUCCESS;
    bool done = false;
    while (!done) {
      if (abandoned()) break;
      // The retry comes one ACK timeout after the attempt began. Moving the bytes and waiting
      // for the answer may take longer for a large message, as many packets would on a NIC.
      Clock::time_point start = Clock::now();
      Clock::time_point deadline = start + ack_timeout(a.timeout);
      Clock::time_point io_deadline =
          a.timeout == 0 ? Clock::time_point::max()
                         : deadline + std::chrono::seconds(2) +
                               std::chrono::nanoseconds(10 * static_cast<int64_t>(data.size()));
      WireRep rep{};
      int io = -1;
      if (nic->port_state.load() == IBV_PORT_ACTIVE) {
        if (conn < 0) conn = connect_path(path);
        if (conn >= 0) {
          io = io_all(conn, &m, sizeof(m), true, abandoned, io_deadline);
          if (io == 0 && m.length)
            io = io_all(conn, data.data(), data.size(), true, abandoned, io_deadline);
          if (io == 0) io = io_all(conn, &rep, sizeof(rep), false, abandoned, io_deadline);
        }
      }
      if (abandoned()) break;
      if (io == 0 && rep.magic == kMagic && rep.status != kDrop) {
        switch (rep.status) {
          case kAck:
            done = true;
            break;
          case kRnr:
            if (rnr_retries == 0) {
              result = IBV_WC_RNR_RETRY_EXC_ERR;
              done = true;
              break;
            }
            if (rnr_retries != 7) --rnr_retries;
            {
              std::unique_lock<std::mutex> l(mu);
              cv.wait_for(l, rnr_delay(rep.rnr_timer), abandoned);
            }
            break;
          case kRemAccess:
            result = IBV_WC_REM_ACCESS_ERR;
            done = true;
            break;
          case kRemInvReq:
            result = IBV_WC_REM_INV_REQ_ERR;
            done = true;
            break;
          default:
            result = IBV_WC_REM_OP_ERR;
            done = true;
            break;
        }
        continue;
      }
      // No acknowledgement: the peer is gone, dropped the packet, or the link broke. A broken
      // connection is not trusted again; the transport timer then runs out before a retry.
      if (io != 0) {
        close_fd(conn);
        conn = -1;
      }
      if (retries == 0) {
        result = IBV_WC_RETRY_EXC_ERR;
        done = true;
        break;
      }
      --retries;
      std::unique_lock<std::mutex> l(mu);
      cv.wait_until(l, deadline, abandoned);
    }
    if (done) finish(result, m.npkts);
  }
}

}  // namespace rlemu

// ---- Test-only API -------------------------------------------------------------------------

using rlemu::G;

extern "C" {

void ringlet_emu_set_access_hook(ringlet_emu_access_hook hook, void* user) {
  auto& g = G();
  std::lock_guard<std::mutex> l(g.hook_mu);
  g.hook = hook;
  g.hook_user = user;
}

int ringlet_emu_mr_access_count(uint32_t lkey, struct ringlet_emu_access_counts* counts) {
  auto& g = G();
  std::lock_guard<std::mutex> l(g.log_mu);
  auto it = g.logs.find(lkey);
  if (it == g.logs.end()) return -1;
  const auto& log = *it->second;
  counts->local_reads = log.local_reads;
  counts->local_writes = log.local_writes;
  counts->remote_writes = log.remote_writes;
  counts->bytes = log.bytes;
  counts->after_dereg = log.after_dereg;
  counts->registered = log.registered ? 1 : 0;
  return 0;
}

uint64_t ringlet_emu_range_access_count(const void* addr, size_t length) {
  auto& g = G();
  auto lo = reinterpret_cast<uintptr_t>(addr);
  uintptr_t hi = lo + length;
  uint64_t n = 0;
  std::lock_guard<std::mutex> l(g.log_mu);
  for (auto& [key, log] : g.logs)
    for (auto& [a, len] : log->ranges)
      if (a < hi && a + len > lo) ++n;
  return n;
}

const char* ringlet_emu_socket_dir(void) {
  static thread_local std::string d;
  d = rlemu::socket_dir();
  return d.c_str();
}

}  // extern "C"
