// SPDX-License-Identifier: Apache-2.0
// Internal objects of the emulated libibverbs device: NIC, context, PD, MR, CQ, channel and QP.
#pragma once

// The real header, so that every structure has exactly the ABI of libibverbs. The entry points it
// declares get default visibility; everything else in the library is hidden.
#pragma GCC visibility push(default)
#include <infiniband/verbs.h>

#include "ringlet_verbs_emu.h"
#pragma GCC visibility pop

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace rlemu {

constexpr int kMaxDevices = 4;
constexpr uint32_t kMaxInline = 512;
constexpr uint32_t kMaxSge = 16;
constexpr uint32_t kMaxQpWr = 16384;
constexpr int kMaxCqe = 65536;
constexpr uint32_t kMaxMsg = 1U << 31;

struct Nic;
struct Context;
struct Qp;

// A thread on a stack of its own mapping rather than glibc's stack cache. A child after fork()
// then never gets a parent thread's stack (and so its thread id) for a new thread, which would
// confuse ThreadSanitizer, and the parent's stacks stay untouched in the child.
class Thread {
 public:
  Thread() = default;
  Thread(const Thread&) = delete;
  Thread& operator=(const Thread&) = delete;
  ~Thread();
  void start(std::function<void()> fn);
  void join();
  bool joinable() const { return started_; }

 private:
  static void* trampoline(void* self);
  pthread_t tid_{};
  void* stack_ = nullptr;
  size_t size_ = 0;
  bool started_ = false;
  std::function<void()> fn_;
};

// The generation changes in a child after fork(): objects of an older generation belong to the
// parent, whose threads do not exist in the child, so they are left alone (leaked) there.
uint32_t current_gen();

// Records an access of registered memory in the MR's log and calls the test hook.
struct MrLog {
  uint32_t lkey = 0, rkey = 0;
  uint64_t local_reads = 0, local_writes = 0, remote_writes = 0, bytes = 0, after_dereg = 0;
  bool registered = true;
  std::vector<std::pair<uintptr_t, uint64_t>> ranges;
};
void record_access(const std::shared_ptr<MrLog>& log, int kind, const void* addr, uint64_t len);
void mark_deregistered(const std::shared_ptr<MrLog>& log);

struct PdBox {
  ibv_pd pd;
  struct Pd* self;
};
struct Pd {
  PdBox box{};
  Context* ctx = nullptr;
  std::atomic<int> users{0};
};

struct MrBox {
  ibv_mr mr;
  struct Mr* self;
};
struct Mr {
  MrBox box{};
  Pd* pd = nullptr;
  Nic* nic = nullptr;
  uintptr_t addr = 0;
  uint64_t iova = 0;
  uint64_t length = 0;
  int access = 0;
  std::shared_ptr<MrLog> log;
  // Host address of [iova_addr, iova_addr + len) inside this MR, or nullptr when out of bounds.
  uint8_t* translate(uint64_t iova_addr, uint64_t len) const;
};

struct ChBox {
  ibv_comp_channel ch;
  struct Channel* self;
};
struct Cq;
// A completion channel: a queue of CQs with a pending event and an eventfd that is readable
// exactly while that queue is not empty.
struct Channel {
  ChBox box{};
  Context* ctx = nullptr;
  std::mutex mu;
  std::deque<Cq*> pending;
  bool signalled = false;
  std::atomic<int> users{0};
  void post(Cq* cq);
  void forget(Cq* cq);
};

struct CqEntry {
  ibv_wc wc;
  std::weak_ptr<Qp> qp;
  uint32_t epoch;
  bool send;
  uint64_t seq;
};
struct CqBox {
  ibv_cq cq;
  struct Cq* self;
};
struct Cq {
  CqBox box{};
  Context* ctx = nullptr;
  Channel* channel = nullptr;
  std::mutex mu;
  std::deque<CqEntry> entries;
  size_t capacity = 0;
  bool armed = false, armed_solicited = false, overrun = false;
  uint32_t events_returned = 0, events_acked = 0;
  std::atomic<int> users{0};
  // Adds a completion; raises the channel event when armed. solicited: the WC may wake a
  // solicited-only arm.
  void push(const CqEntry& e, bool solicited);
};

struct CtxBox {
  verbs_context vctx;
  Context* self;
};
struct Context {
  CtxBox box{};
  std::shared_ptr<Nic> nic;
  uint32_t gen = 0;
  std::mutex mu;  // the async event queue and the object sets
  std::deque<ibv_async_event> events;
  bool signalled = false;
  uint32_t events_returned = 0, events_acked = 0;
  std::set<Pd*> pds;
  std::set<Mr*> mrs;
  std::set<Cq*> cqs;
  std::set<Channel*> channels;
  std::set<Qp*> qps;
  void post_event(const ibv_async_event& ev);
};

struct SendWr {
  uint64_t wr_id = 0;
  ibv_wr_opcode opcode = IBV_WR_SEND;
  unsigned flags = 0;
  uint32_t imm = 0;
  uint64_t remote_addr = 0;
  uint32_t rkey = 0;
  std::vector<ibv_sge> sges;
  std::vector<uint8_t> inline_data;
  bool is_inline = false;
  uint64_t seq = 0;
};
struct RecvWr {
  uint64_t wr_id = 0;
  std::vector<ibv_sge> sges;
  uint64_t seq = 0;
};

struct QpBox {
  ibv_qp qp;
  struct Qp* self;
};
// An RC queue pair. Its worker thread executes the send queue in order, one message at a time,
// and waits for the responder's acknowledgement before the next: this gives RC ordering.
struct Qp : std::enable_shared_from_this<Qp> {
  QpBox box{};
  Nic* nic = nullptr;
  Context* ctx = nullptr;
  Pd* pd = nullptr;
  Cq* scq = nullptr;
  Cq* rcq = nullptr;
  ibv_qp_cap cap{};
  bool sig_all = false;
  uint32_t gen = 0;

  std::mutex mu;
  std::condition_variable cv;
  ibv_qp_attr attr{};
  std::deque<SendWr> sq;
  std::deque<RecvWr> rq;
  uint64_t sq_posted = 0, sq_retired = 0, rq_posted = 0, rq_retired = 0;
  uint32_t epoch = 0;                  // changes on RESET: older CQ entries free no slot
  std::atomic<uint64_t> flush_gen{0};  // changes whenever the queues are flushed or reset
  uint32_t sq_psn = 0, rq_psn = 0;     // next PSN to send, next PSN expected
  uint32_t rq_psn_start = 0;           // rq_psn as set by RTR
  bool dead = false;
  std::atomic<bool> stop{false};
  Thread worker;
  int conn = -1;  // the worker's connection to the peer NIC

  ibv_qp_state state() const { return box.qp.state; }
  // Moves to ERR and flushes both queues with IBV_WC_WR_FLUSH_ERR. Needs mu.
  void to_error_locked();
  void flush_locked();
  void complete_send_locked(const SendWr& wr, ibv_wc_status status);
  void run_worker();
  void retire(bool send, uint32_t entry_epoch, uint64_t seq);
};

struct Nic {
  int index = 0;
  uint32_t gen = 0;
  uint64_t guid = 0;
  uint16_t lid = 0;
  ibv_gid gid{};
  std::string dir, sock_path, lid_link;
  int listen_fd = -1;
  Thread acceptor;
  std::atomic<bool> stop{false};
  std::atomic<int> port_state{IBV_PORT_ACTIVE};

  std::mutex mu;  // qps, contexts, conns
  std::map<uint32_t, std::shared_ptr<Qp>> qps;
  std::vector<Context*> contexts;
  struct Conn {
    int fd = -1;
    Thread th;
    std::atomic<bool> done{false};
  };
  std::list<std::unique_ptr<Conn>> conns;

  std::shared_mutex mr_mu;  // held shared while an access touches MR memory
  std::unordered_map<uint32_t, Mr*> by_lkey, by_rkey;

  int start();
  void shutdown();
  void accept_loop();
  void serve(Conn* c);
  std::shared_ptr<Qp> find_qp(uint32_t qpn);
  void post_port_event(ibv_event_type type);
};

std::shared_ptr<Nic> nic_for_device(int index, int* err);
void track_fd(int fd);
void close_fd(int fd);
std::string socket_dir();
std::string gid_path(const std::string& dir, const uint8_t* gid);
std::string lid_path(const std::string& dir, uint16_t lid);
uint32_t next_qpn();
uint32_t next_key_index();
std::shared_ptr<MrLog> new_log(uint32_t lkey, uint32_t rkey);

}  // namespace rlemu
