// SPDX-License-Identifier: Apache-2.0
// The libibverbs entry points of the emulated RC device, with the checks real providers make.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "emu_internal.hpp"

using namespace rlemu;

namespace {

struct DevBox {
  ibv_device dev;
  int index;
};
DevBox g_devs[kMaxDevices];
std::once_flag g_devs_once;
std::mutex g_lists_mu;
std::map<ibv_device**, std::vector<std::shared_ptr<Nic>>> g_lists;

void init_devices() {
  std::call_once(g_devs_once, [] {
    for (int i = 0; i < kMaxDevices; ++i) {
      DevBox& d = g_devs[i];
      d.index = i;
      d.dev.node_type = IBV_NODE_CA;
      d.dev.transport_type = IBV_TRANSPORT_IB;
      std::snprintf(d.dev.name, sizeof(d.dev.name), "rlemu%d", i);
      std::snprintf(d.dev.dev_name, sizeof(d.dev.dev_name), "uverbs%d", i);
      std::snprintf(d.dev.dev_path, sizeof(d.dev.dev_path), "/sys/class/infiniband_verbs/uverbs%d",
                    i);
      std::snprintf(d.dev.ibdev_path, sizeof(d.dev.ibdev_path), "/sys/class/infiniband/rlemu%d", i);
    }
  });
}

// Read at every listing, as the real library rescans sysfs, so a test may change it.
int device_count() {
  const char* n = std::getenv("RINGLET_VERBS_EMU_DEVICES");
  return n && *n ? std::clamp(std::atoi(n), 1, kMaxDevices) : 1;
}

DevBox* dev_box(ibv_device* d) {
  for (auto& b : g_devs)
    if (&b.dev == d) return &b;
  return nullptr;
}

Context* ctx_of(ibv_context* c) {
  verbs_context* v = verbs_get_ctx(c);
  return v ? reinterpret_cast<CtxBox*>(v)->self : nullptr;
}
Pd* pd_of(ibv_pd* p) { return reinterpret_cast<PdBox*>(p)->self; }
Mr* mr_of(ibv_mr* m) { return reinterpret_cast<MrBox*>(m)->self; }
Cq* cq_of(ibv_cq* c) { return reinterpret_cast<CqBox*>(c)->self; }
Channel* ch_of(ibv_comp_channel* c) { return reinterpret_cast<ChBox*>(c)->self; }
Qp* qp_of(ibv_qp* q) { return reinterpret_cast<QpBox*>(q)->self; }

// A context made before fork() in the parent: its NIC's threads do not exist in this process.
bool stale(const Context* c) { return !c || c->gen != current_gen(); }

template <typename T>
T* fail(int e) {
  errno = e;
  return nullptr;
}

// The eventfd of a queue that is readable exactly while the queue is not empty.
void raise_fd(int fd, bool& signalled) {
  if (signalled) return;
  // An eventfd write of 1 cannot fail short of a counter overflow, which one bit never reaches.
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(fd, &one, sizeof(one));
  signalled = true;
}
void lower_fd(int fd, bool& signalled) {
  if (!signalled) return;
  // The counter is non-zero while signalled, so this read neither blocks nor fails.
  uint64_t v;
  [[maybe_unused]] ssize_t r = ::read(fd, &v, sizeof(v));
  signalled = false;
}

// Waits until fd is readable, honouring O_NONBLOCK as a read would. Returns 0 or an errno.
int wait_readable(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return errno;
  pollfd p{fd, POLLIN, 0};
  if (fl & O_NONBLOCK) return ::poll(&p, 1, 0) == 1 ? 0 : EAGAIN;
  // The verb blocks by contract; callers that need a deadline poll the fd first.
  while (::poll(&p, 1, 100) == 0) {
  }
  return 0;
}

int make_eventfd() {
  int fd = ::eventfd(0, EFD_CLOEXEC);
  if (fd >= 0) track_fd(fd);
  return fd;
}

void fill_port_attr(const Nic& nic, ibv_port_attr* a) {
  std::memset(a, 0, sizeof(*a));
  a->state = static_cast<ibv_port_state>(nic.port_state.load());
  a->max_mtu = IBV_MTU_4096;
  a->active_mtu = IBV_MTU_4096;
  a->gid_tbl_len = 1;
  a->port_cap_flags = 0;
  a->max_msg_sz = kMaxMsg;
  a->pkey_tbl_len = 1;
  a->lid = nic.lid;
  a->sm_lid = 1;
  a->lmc = 0;
  a->max_vl_num = 1;
  a->subnet_timeout = 18;
  a->active_width = 2;                                  // 4x
  a->active_speed = 32;                                 // EDR
  a->phys_state = a->state == IBV_PORT_ACTIVE ? 5 : 3;  // LinkUp or Disabled
  a->link_layer = IBV_LINK_LAYER_INFINIBAND;
}

int op_query_port(ibv_context* c, uint8_t port, ibv_port_attr* attr, size_t len) {
  Context* ctx = ctx_of(c);
  if (stale(ctx)) return EIO;
  if (port != 1) return EINVAL;
  ibv_port_attr a;
  fill_port_attr(*ctx->nic, &a);
  std::memcpy(attr, &a, std::min(len, sizeof(a)));
  return 0;
}

int op_query_device_ex(ibv_context*, const ibv_query_device_ex_input*, ibv_device_attr_ex*,
                       size_t) {
  return EOPNOTSUPP;  // the inline wrapper falls back to ibv_query_device
}

int op_poll_cq(ibv_cq* c, int n, ibv_wc* wc) {
  Cq* cq = cq_of(c);
  if (stale(cq->ctx) || n < 0) return -1;
  int got = 0;
  while (got < n) {
    constexpr int kBatch = 32;
    CqEntry batch[kBatch];
    int k = 0;
    {
      std::lock_guard<std::mutex> l(cq->mu);
      while (k < kBatch && got + k < n && !cq->entries.empty()) {
        batch[k++] = std::move(cq->entries.front());
        cq->entries.pop_front();
      }
    }
    if (k == 0) break;
    // A polled completion frees its queue slot, and those of the unsignalled WRs before it.
    for (int i = 0; i < k; ++i) {
      wc[got + i] = batch[i].wc;
      if (auto qp = batch[i].qp.lock()) qp->retire(batch[i].send, batch[i].epoch, batch[i].seq);
    }
    got += k;
  }
  return got;
}

int op_req_notify_cq(ibv_cq* c, int solicited_only) {
  Cq* cq = cq_of(c);
  if (stale(cq->ctx)) return EIO;
  std::lock_guard<std::mutex> l(cq->mu);
  if (!cq->armed) {
    cq->armed = true;
    cq->armed_solicited = solicited_only != 0;
  } else if (!solicited_only) {
    cq->armed_solicited = false;
  }
  return 0;
}

constexpr unsigned kSendFlags =
    IBV_SEND_FENCE | IBV_SEND_SIGNALED | IBV_SEND_SOLICITED | IBV_SEND_INLINE;

int op_post_send(ibv_qp* q, ibv_send_wr* wr, ibv_send_wr** bad) {
  Qp* qp = qp_of(q);
  if (stale(qp->ctx)) {
    *bad = wr;
    return EIO;
  }
  std::lock_guard<std::mutex> l(qp->mu);
  for (; wr; wr = wr->next) {
    int err = 0;
    bool known = wr->opcode == IBV_WR_SEND || wr->opcode == IBV_WR_SEND_WITH_IMM ||
                 wr->opcode == IBV_WR_RDMA_WRITE || wr->opcode == IBV_WR_RDMA_WRITE_WITH_IMM;
    uint64_t total = 0;
    if (wr->num_sge > 0)
      for (int i = 0; i < wr->num_sge; ++i) total += wr->sg_list[i].length;
    if (qp->state() == IBV_QPS_RESET || !known || (wr->send_flags & ~kSendFlags) ||
        wr->num_sge < 0 || (wr->num_sge > 0 && !wr->sg_list))
      err = EINVAL;
    else if (static_cast<uint32_t>(wr->num_sge) > qp->cap.max_send_sge)
      err = EINVAL;
    else if ((wr->send_flags & IBV_SEND_INLINE) && total > qp->cap.max_inline_data)
      err = ENOMEM;
    else if (qp->sq_posted - qp->sq_retired >= qp->cap.max_send_wr)
      err = ENOMEM;
    if (err) {
      *bad = wr;
      return err;
    }
    SendWr s;
    s.wr_id = wr->wr_id;
    s.opcode = wr->opcode;
    s.flags = wr->send_flags;
    s.imm = wr->imm_data;
    s.remote_addr = wr->wr.rdma.remote_addr;
    s.rkey = wr->wr.rdma.rkey;
    s.seq = qp->sq_posted++;
    if (wr->send_flags & IBV_SEND_INLINE) {
      // Inline data is copied now: the caller may reuse its buffer as soon as this returns.
      s.is_inline = true;
      s.inline_data.reserve(total);
      for (int i = 0; i < wr->num_sge; ++i) {
        auto* p = reinterpret_cast<const uint8_t*>(static_cast<uintptr_t>(wr->sg_list[i].addr));
        s.inline_data.insert(s.inline_data.end(), p, p + wr->sg_list[i].length);
      }
    } else {
      s.sges.assign(wr->sg_list, wr->sg_list + wr->num_sge);
    }
    if (qp->state() == IBV_QPS_ERR) {
      qp->complete_send_locked(s, IBV_WC_WR_FLUSH_ERR);
      continue;
    }
    qp->sq.push_back(std::move(s));
  }
  qp->cv.notify_all();
  return 0;
}

int op_post_recv(ibv_qp* q, ibv_recv_wr* wr, ibv_recv_wr** bad) {
  Qp* qp = qp_of(q);
  if (stale(qp->ctx)) {
    *bad = wr;
    return EIO;
  }
  std::lock_guard<std::mutex> l(qp->mu);
  for (; wr; wr = wr->next) {
    int err = 0;
    if (qp->state() == IBV_QPS_RESET || wr->num_sge < 0 || (wr->num_sge > 0 && !wr->sg_list))
      err = EINVAL;
    else if (static_cast<uint32_t>(wr->num_sge) > qp->cap.max_recv_sge)
      err = EINVAL;
    else if (qp->rq_posted - qp->rq_retired >= qp->cap.max_recv_wr)
      err = ENOMEM;
    if (err) {
      *bad = wr;
      return err;
    }
    RecvWr r;
    r.wr_id = wr->wr_id;
    r.sges.assign(wr->sg_list, wr->sg_list + wr->num_sge);
    r.seq = qp->rq_posted++;
    if (qp->state() == IBV_QPS_ERR) {
      ibv_wc wc{};
      wc.wr_id = r.wr_id;
      wc.status = IBV_WC_WR_FLUSH_ERR;
      wc.opcode = IBV_WC_RECV;
      wc.qp_num = q->qp_num;
      qp->rcq->push({wc, qp->weak_from_this(), qp->epoch, false, r.seq}, true);
      continue;
    }
    qp->rq.push_back(std::move(r));
  }
  return 0;
}

// Tears down one QP: after this no thread of the emulator touches it or its CQs again.
void destroy_qp_impl(Qp* qp) {
  std::shared_ptr<Qp> keep;
  {
    std::lock_guard<std::mutex> l(qp->nic->mu);
    auto it = qp->nic->qps.find(qp->box.qp.qp_num);
    if (it != qp->nic->qps.end()) {
      keep = it->second;
      qp->nic->qps.erase(it);
    }
  }
  {
    std::lock_guard<std::mutex> l(qp->mu);
    qp->dead = true;
    qp->stop = true;
    qp->flush_gen.fetch_add(1);
  }
  qp->cv.notify_all();
  if (qp->worker.joinable()) qp->worker.join();
  close_fd(qp->conn);
  qp->conn = -1;
  qp->scq->users--;
  qp->rcq->users--;
  qp->pd->users--;
  {
    std::lock_guard<std::mutex> l(qp->ctx->mu);
    qp->ctx->qps.erase(qp);
  }
}

int destroy_mr_impl(Mr* mr) {
  {
    // The exclusive lock waits for every access in progress; none can start afterwards.
    std::unique_lock<std::shared_mutex> l(mr->nic->mr_mu);
    mr->nic->by_lkey.erase(mr->box.mr.lkey);
    mr->nic->by_rkey.erase(mr->box.mr.rkey);
  }
  mark_deregistered(mr->log);
  mr->pd->users--;
  {
    std::lock_guard<std::mutex> l(mr->pd->ctx->mu);
    mr->pd->ctx->mrs.erase(mr);
  }
  return 0;
}

}  // namespace

namespace rlemu {

void Channel::post(Cq* cq) {
  std::lock_guard<std::mutex> l(mu);
  pending.push_back(cq);
  raise_fd(box.ch.fd, signalled);
}

void Channel::forget(Cq* cq) {
  std::lock_guard<std::mutex> l(mu);
  pending.erase(std::remove(pending.begin(), pending.end(), cq), pending.end());
  if (pending.empty()) lower_fd(box.ch.fd, signalled);
}

void Cq::push(const CqEntry& e, bool solicited) {
  bool notify = false, overflow = false;
  {
    std::lock_guard<std::mutex> l(mu);
    if (entries.size() >= capacity) {
      overflow = !overrun;
      overrun = true;
    } else {
      entries.push_back(e);
      if (armed && (!armed_solicited || solicited)) {
        armed = false;
        notify = channel != nullptr;
      }
    }
  }
  if (notify) channel->post(this);
  if (overflow) {
    ibv_async_event ev{};
    ev.element.cq = &box.cq;
    ev.event_type = IBV_EVENT_CQ_ERR;
    ctx->post_event(ev);
  }
}

void Context::post_event(const ibv_async_event& ev) {
  std::lock_guard<std::mutex> l(mu);
  events.push_back(ev);
  raise_fd(box.vctx.context.async_fd, signalled);
}

}  // namespace rlemu

extern "C" {

// ---- Devices and contexts ------------------------------------------------------------------

ibv_device** ibv_get_device_list(int* num_devices) {
  init_devices();
  const int ndevs = device_count();
  std::vector<std::shared_ptr<Nic>> refs;
  for (int i = 0; i < ndevs; ++i) {
    int err = 0;
    auto n = nic_for_device(i, &err);
    if (!n) {
      if (num_devices) *num_devices = 0;
      errno = err;
      return nullptr;
    }
    refs.push_back(std::move(n));
  }
  auto** list = static_cast<ibv_device**>(std::calloc(ndevs + 1, sizeof(ibv_device*)));
  if (!list) return fail<ibv_device*>(ENOMEM);
  for (int i = 0; i < ndevs; ++i) list[i] = &g_devs[i].dev;
  {
    std::lock_guard<std::mutex> l(g_lists_mu);
    g_lists[list] = std::move(refs);
  }
  if (num_devices) *num_devices = ndevs;
  return list;
}

void ibv_free_device_list(ibv_device** list) {
  std::vector<std::shared_ptr<Nic>> refs;
  {
    std::lock_guard<std::mutex> l(g_lists_mu);
    auto it = g_lists.find(list);
    if (it == g_lists.end()) return;
    refs = std::move(it->second);
    g_lists.erase(it);
  }
  // A list inherited across fork() holds the parent's NICs: they are not released here.
  for (auto& r : refs)
    if (r->gen != current_gen()) new std::shared_ptr<Nic>(std::move(r));
  std::free(list);
}

const char* ibv_get_device_name(ibv_device* device) { return device ? device->name : nullptr; }

int ibv_get_device_index(ibv_device* device) {
  DevBox* b = dev_box(device);
  return b ? b->index : -1;
}

__be64 ibv_get_device_guid(ibv_device* device) {
  DevBox* b = dev_box(device);
  if (!b) return 0;
  int err = 0;
  auto n = nic_for_device(b->index, &err);
  return n ? htobe64(n->guid) : 0;
}

ibv_context* ibv_open_device(ibv_device* device) {
  DevBox* b = dev_box(device);
  if (!b) return fail<ibv_context>(ENODEV);
  int err = 0;
  auto nic = nic_for_device(b->index, &err);
  if (!nic) return fail<ibv_context>(err);
  auto* ctx = new Context;
  ctx->box.self = ctx;
  ctx->nic = nic;
  ctx->gen = current_gen();
  verbs_context& v = ctx->box.vctx;
  v.sz = sizeof(verbs_context);
  v.query_port = op_query_port;
  v.query_device_ex = op_query_device_ex;
  ibv_context& c = v.context;
  c.device = device;
  c.ops.poll_cq = op_poll_cq;
  c.ops.req_notify_cq = op_req_notify_cq;
  c.ops.post_send = op_post_send;
  c.ops.post_recv = op_post_recv;
  c.cmd_fd = -1;
  c.async_fd = make_eventfd();
  c.num_comp_vectors = 1;
  pthread_mutex_init(&c.mutex, nullptr);
  c.abi_compat = __VERBS_ABI_IS_EXTENDED;
  if (c.async_fd < 0) {
    int e = errno;
    delete ctx;
    return fail<ibv_context>(e);
  }
  std::lock_guard<std::mutex> l(nic->mu);
  nic->contexts.push_back(ctx);
  return &c;
}

int ibv_close_device(ibv_context* c) {
  Context* ctx = ctx_of(c);
  if (!ctx) return EINVAL;
  if (stale(ctx)) return 0;  // the parent's: left as it is
  // Resources the caller did not destroy go with the context, as the kernel would do.
  std::vector<Qp*> qps(ctx->qps.begin(), ctx->qps.end());
  for (Qp* q : qps) destroy_qp_impl(q);
  std::vector<Mr*> mrs(ctx->mrs.begin(), ctx->mrs.end());
  for (Mr* m : mrs) {
    destroy_mr_impl(m);
    delete m;
  }
  for (Cq* cq : ctx->cqs) {
    if (cq->channel) cq->channel->forget(cq);
    pthread_mutex_destroy(&cq->box.cq.mutex);
    pthread_cond_destroy(&cq->box.cq.cond);
    delete cq;
  }
  for (Channel* ch : ctx->channels) {
    close_fd(ch->box.ch.fd);
    delete ch;
  }
  for (Pd* pd : ctx->pds) delete pd;
  {
    std::lock_guard<std::mutex> l(ctx->nic->mu);
    auto& v = ctx->nic->contexts;
    v.erase(std::remove(v.begin(), v.end(), ctx), v.end());
  }
  close_fd(c->async_fd);
  pthread_mutex_destroy(&c->mutex);
  delete ctx;
  return 0;
}

int ibv_get_async_event(ibv_context* c, ibv_async_event* event) {
  Context* ctx = ctx_of(c);
  if (stale(ctx)) {
    errno = EIO;
    return -1;
  }
  for (;;) {
    {
      std::lock_guard<std::mutex> l(ctx->mu);
      if (!ctx->events.empty()) {
        *event = ctx->events.front();
        ctx->events.pop_front();
        ++ctx->events_returned;
        if (ctx->events.empty()) lower_fd(c->async_fd, ctx->signalled);
        return 0;
      }
    }
    int e = wait_readable(c->async_fd);
    if (e) {
      errno = e;
      return -1;
    }
  }
}

void ibv_ack_async_event(ibv_async_event* event) {
  ibv_context* c = nullptr;
  switch (event->event_type) {
    case IBV_EVENT_CQ_ERR:
      c = event->element.cq->context;
      break;
    case IBV_EVENT_QP_FATAL:
    case IBV_EVENT_QP_REQ_ERR:
    case IBV_EVENT_QP_ACCESS_ERR:
    case IBV_EVENT_COMM_EST:
    case IBV_EVENT_SQ_DRAINED:
    case IBV_EVENT_PATH_MIG:
    case IBV_EVENT_PATH_MIG_ERR:
    case IBV_EVENT_QP_LAST_WQE_REACHED:
      c = event->element.qp->context;
      break;
    default:
      return;  // port and device events are not counted per object
  }
  Context* ctx = ctx_of(c);
  if (stale(ctx)) return;
  std::lock_guard<std::mutex> l(ctx->mu);
  ++ctx->events_acked;
}

int ibv_query_device(ibv_context* c, ibv_device_attr* a) {
  Context* ctx = ctx_of(c);
  if (stale(ctx)) return EIO;
  std::memset(a, 0, sizeof(*a));
  std::snprintf(a->fw_ver, sizeof(a->fw_ver), "ringlet-emu 1");
  a->node_guid = htobe64(ctx->nic->guid);
  a->sys_image_guid = htobe64(ctx->nic->guid);
  a->max_mr_size = 1ULL << 40;
  a->page_size_cap = 0xfffff000;
  a->vendor_id = 0;
  a->max_qp = 4096;
  a->max_qp_wr = kMaxQpWr;
  a->device_cap_flags = IBV_DEVICE_RC_RNR_NAK_GEN | IBV_DEVICE_PORT_ACTIVE_EVENT;
  a->max_sge = kMaxSge;
  a->max_sge_rd = kMaxSge;
  a->max_cq = 4096;
  a->max_cqe = kMaxCqe;
  a->max_mr = 65536;
  a->max_pd = 1024;
  a->max_qp_rd_atom = 16;
  a->max_qp_init_rd_atom = 16;
  a->max_res_rd_atom = 16 * 4096;
  a->atomic_cap = IBV_ATOMIC_NONE;
  a->max_pkeys = 1;
  a->local_ca_ack_delay = 15;
  a->phys_port_cnt = 1;
  return 0;
}

// The function behind the ibv_query_port macro: the old entry that writes the compat layout
// (without the fields added later), as a binary built against an older header calls it.
int(ibv_query_port)(ibv_context* c, uint8_t port, _compat_ibv_port_attr* attr) {
  Context* ctx = ctx_of(c);
  if (stale(ctx)) return EIO;
  if (port != 1) return EINVAL;
  ibv_port_attr a;
  fill_port_attr(*ctx->nic, &a);
  std::memcpy(static_cast<void*>(attr), &a, offsetof(ibv_port_attr, port_cap_flags2));
  return 0;
}

int ibv_query_gid(ibv_context* c, uint8_t port, int index, ibv_gid* gid) {
  Context* ctx = ctx_of(c);
  if (stale(ctx) || port != 1 || index != 0) {
    errno = stale(ctx) ? EIO : EINVAL;
    return -1;
  }
  *gid = ctx->nic->gid;
  return 0;
}

int _ibv_query_gid_ex(ibv_context* c, uint32_t port, uint32_t index, ibv_gid_entry* entry,
                      uint32_t flags, size_t entry_size) {
  Context* ctx = ctx_of(c);
  if (stale(ctx)) return EIO;
  if (port != 1 || flags != 0 || entry_size < sizeof(ibv_gid_entry)) return EINVAL;
  if (index != 0) return ENODATA;
  std::memset(entry, 0, entry_size);
  entry->gid = ctx->nic->gid;
  entry->gid_index = 0;
  entry->port_num = 1;
  entry->gid_type = IBV_GID_TYPE_IB;
  entry->ndev_ifindex = 0;
  return 0;
}

ssize_t _ibv_query_gid_table(ibv_context* c, ibv_gid_entry* entries, size_t max_entries,
                             uint32_t flags, size_t entry_size) {
  if (max_entries == 0) return -EINVAL;
  int rc = _ibv_query_gid_ex(c, 1, 0, entries, flags, entry_size);
  return rc ? -rc : 1;
}

int ibv_query_pkey(ibv_context* c, uint8_t port, int index, __be16* pkey) {
  Context* ctx = ctx_of(c);
  if (stale(ctx) || port != 1 || index != 0) return -1;
  *pkey = htobe16(0xffff);
  return 0;
}

int ibv_get_pkey_index(ibv_context* c, uint8_t port, __be16 pkey) {
  Context* ctx = ctx_of(c);
  if (stale(ctx) || port != 1) return -EINVAL;
  return be16toh(pkey) == 0xffff ? 0 : -ENOENT;
}

int ibv_fork_init(void) { return 0; }

enum ibv_fork_status ibv_is_fork_initialized(void) { return IBV_FORK_UNNEEDED; }

// ---- Protection domains and memory regions -------------------------------------------------

ibv_pd* ibv_alloc_pd(ibv_context* c) {
  Context* ctx = ctx_of(c);
  if (stale(ctx)) return fail<ibv_pd>(EIO);
  auto* pd = new Pd;
  pd->box.self = pd;
  pd->box.pd.context = c;
  pd->box.pd.handle = next_key_index();
  pd->ctx = ctx;
  std::lock_guard<std::mutex> l(ctx->mu);
  ctx->pds.insert(pd);
  return &pd->box.pd;
}

int ibv_dealloc_pd(ibv_pd* p) {
  Pd* pd = pd_of(p);
  if (stale(pd->ctx)) return EIO;
  if (pd->users.load() > 0) return EBUSY;
  {
    std::lock_guard<std::mutex> l(pd->ctx->mu);
    pd->ctx->pds.erase(pd);
  }
  delete pd;
  return 0;
}

constexpr int kKnownAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                             IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC |
                             IBV_ACCESS_MW_BIND | IBV_ACCESS_RELAXED_ORDERING;

// Real registration pins pages, so unmapped memory fails with EFAULT; mincore() tells.
bool mapped(uintptr_t addr, uint64_t len) {
  if (len == 0) return true;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t lo = addr & ~(page - 1);
  uintptr_t hi = addr + len;
  unsigned char vec[256];
  while (lo < hi) {
    uintptr_t n = std::min<uintptr_t>((hi - lo + page - 1) / page, sizeof(vec));
    if (::mincore(reinterpret_cast<void*>(lo), n * page, vec) != 0) return false;
    lo += n * page;
  }
  return true;
}

ibv_mr* ibv_reg_mr_iova2(ibv_pd* p, void* addr, size_t length, uint64_t iova, unsigned int access) {
  Pd* pd = pd_of(p);
  if (stale(pd->ctx)) return fail<ibv_mr>(EIO);
  int acc = static_cast<int>(access);
  if (acc & ~kKnownAccess) return fail<ibv_mr>(EINVAL);
  // Remote write and atomics need local write, as the IB spec and every provider require.
  if ((acc & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
      !(acc & IBV_ACCESS_LOCAL_WRITE))
    return fail<ibv_mr>(EINVAL);
  if (length == 0 || length > (1ULL << 40)) return fail<ibv_mr>(EINVAL);
  if (!mapped(reinterpret_cast<uintptr_t>(addr), length)) return fail<ibv_mr>(EFAULT);
  Nic* nic = pd->ctx->nic.get();
  auto* mr = new Mr;
  uint32_t n = next_key_index();
  mr->box.self = mr;
  mr->box.mr.context = p->context;
  mr->box.mr.pd = p;
  mr->box.mr.addr = addr;
  mr->box.mr.length = length;
  mr->box.mr.handle = n;
  mr->box.mr.lkey = (n << 8) | 0x11;
  mr->box.mr.rkey = (n << 8) | 0x22;
  mr->pd = pd;
  mr->nic = nic;
  mr->addr = reinterpret_cast<uintptr_t>(addr);
  mr->iova = iova;
  mr->length = length;
  mr->access = acc;
  mr->log = new_log(mr->box.mr.lkey, mr->box.mr.rkey);
  {
    std::unique_lock<std::shared_mutex> l(nic->mr_mu);
    nic->by_lkey[mr->box.mr.lkey] = mr;
    nic->by_rkey[mr->box.mr.rkey] = mr;
  }
  pd->users++;
  std::lock_guard<std::mutex> l(pd->ctx->mu);
  pd->ctx->mrs.insert(mr);
  return &mr->box.mr;
}

ibv_mr*(ibv_reg_mr)(ibv_pd* pd, void* addr, size_t length, int access) {
  return ibv_reg_mr_iova2(pd, addr, length, reinterpret_cast<uintptr_t>(addr),
                          static_cast<unsigned>(access));
}

ibv_mr*(ibv_reg_mr_iova)(ibv_pd* pd, void* addr, size_t length, uint64_t iova, int access) {
  return ibv_reg_mr_iova2(pd, addr, length, iova, static_cast<unsigned>(access));
}

// There is no device memory to import a dma-buf into: the registration fails as on a device
// without dma-buf support.
ibv_mr* ibv_reg_dmabuf_mr(ibv_pd* pd, uint64_t, size_t, uint64_t, int fd, int) {
  if (!pd || fd < 0) return fail<ibv_mr>(EINVAL);
  return fail<ibv_mr>(EOPNOTSUPP);
}

int ibv_dereg_mr(ibv_mr* m) {
  Mr* mr = mr_of(m);
  if (stale(mr->pd->ctx)) return EIO;
  destroy_mr_impl(mr);
  delete mr;
  return 0;
}

// ---- Completion channels and CQs -----------------------------------------------------------

ibv_comp_channel* ibv_create_comp_channel(ibv_context* c) {
  Context* ctx = ctx_of(c);
  if (stale(ctx)) return fail<ibv_comp_channel>(EIO);
  int fd = make_eventfd();
  if (fd < 0) return nullptr;
  auto* ch = new Channel;
  ch->box.self = ch;
  ch->box.ch.context = c;
  ch->box.ch.fd = fd;
  ch->box.ch.refcnt = 0;
  ch->ctx = ctx;
  std::lock_guard<std::mutex> l(ctx->mu);
  ctx->channels.insert(ch);
  return &ch->box.ch;
}

int ibv_destroy_comp_channel(ibv_comp_channel* c) {
  Channel* ch = ch_of(c);
  if (stale(ch->ctx)) return EIO;
  if (ch->users.load() > 0) return EBUSY;
  {
    std::lock_guard<std::mutex> l(ch->ctx->mu);
    ch->ctx->channels.erase(ch);
  }
  close_fd(c->fd);
  delete ch;
  return 0;
}

ibv_cq* ibv_create_cq(ibv_context* c, int cqe, void* cq_context, ibv_comp_channel* channel,
                      int comp_vector) {
  Context* ctx = ctx_of(c);
  if (stale(ctx)) return fail<ibv_cq>(EIO);
  if (cqe < 1 || cqe > kMaxCqe || comp_vector < 0 || comp_vector >= c->num_comp_vectors)
    return fail<ibv_cq>(EINVAL);
  auto* cq = new Cq;
  cq->box.self = cq;
  ibv_cq& q = cq->box.cq;
  q.context = c;
  q.channel = channel;
  q.cq_context = cq_context;
  q.handle = next_key_index();
  q.cqe = cqe;
  pthread_mutex_init(&q.mutex, nullptr);
  pthread_cond_init(&q.cond, nullptr);
  cq->ctx = ctx;
  cq->capacity = static_cast<size_t>(cqe);
  if (channel) {
    cq->channel = ch_of(channel);
    cq->channel->users++;
  }
  std::lock_guard<std::mutex> l(ctx->mu);
  ctx->cqs.insert(cq);
  return &q;
}

int ibv_destroy_cq(ibv_cq* c) {
  Cq* cq = cq_of(c);
  if (stale(cq->ctx)) return EIO;
  if (cq->users.load() > 0) return EBUSY;
  // libibverbs waits for every returned event to be acknowledged; the emulator waits 2 s and
  // then refuses, so that a missing ack fails a test instead of hanging it.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    {
      std::lock_guard<std::mutex> l(cq->mu);
      if (cq->events_acked >= cq->events_returned) break;
    }
    if (std::chrono::steady_clock::now() > until) return EBUSY;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (cq->channel) {
    cq->channel->forget(cq);
    cq->channel->users--;
  }
  {
    std::lock_guard<std::mutex> l(cq->ctx->mu);
    cq->ctx->cqs.erase(cq);
  }
  pthread_mutex_destroy(&c->mutex);
  pthread_cond_destroy(&c->cond);
  delete cq;
  return 0;
}

int ibv_get_cq_event(ibv_comp_channel* c, ibv_cq** cq_out, void** cq_context) {
  Channel* ch = ch_of(c);
  if (stale(ch->ctx)) {
    errno = EIO;
    return -1;
  }
  for (;;) {
    {
      std::lock_guard<std::mutex> l(ch->mu);
      if (!ch->pending.empty()) {
        Cq* cq = ch->pending.front();
        ch->pending.pop_front();
        if (ch->pending.empty()) lower_fd(c->fd, ch->signalled);
        {
          std::lock_guard<std::mutex> lc(cq->mu);
          ++cq->events_returned;
        }
        *cq_out = &cq->box.cq;
        *cq_context = cq->box.cq.cq_context;
        return 0;
      }
    }
    int e = wait_readable(c->fd);
    if (e) {
      errno = e;
      return -1;
    }
  }
}

void ibv_ack_cq_events(ibv_cq* c, unsigned int nevents) {
  Cq* cq = cq_of(c);
  if (stale(cq->ctx)) return;
  std::lock_guard<std::mutex> l(cq->mu);
  cq->events_acked += nevents;
  c->comp_events_completed += nevents;
}

int ibv_resize_cq(ibv_cq* c, int cqe) {
  Cq* cq = cq_of(c);
  if (stale(cq->ctx)) return EIO;
  std::lock_guard<std::mutex> l(cq->mu);
  if (cqe < 1 || cqe > kMaxCqe || static_cast<size_t>(cqe) < cq->entries.size()) return EINVAL;
  cq->capacity = static_cast<size_t>(cqe);
  c->cqe = cqe;
  return 0;
}

// ---- Queue pairs ---------------------------------------------------------------------------

ibv_qp* ibv_create_qp(ibv_pd* p, ibv_qp_init_attr* init) {
  Pd* pd = pd_of(p);
  if (stale(pd->ctx)) return fail<ibv_qp>(EIO);
  if (init->qp_type != IBV_QPT_RC) return fail<ibv_qp>(EOPNOTSUPP);
  if (init->srq) return fail<ibv_qp>(EOPNOTSUPP);
  if (!init->send_cq || !init->recv_cq) return fail<ibv_qp>(EINVAL);
  const ibv_qp_cap& c = init->cap;
  if (c.max_send_wr < 1 || c.max_send_wr > kMaxQpWr || c.max_recv_wr > kMaxQpWr ||
      c.max_send_sge > kMaxSge || c.max_recv_sge > kMaxSge || c.max_inline_data > kMaxInline)
    return fail<ibv_qp>(EINVAL);
  Cq* scq = cq_of(init->send_cq);
  Cq* rcq = cq_of(init->recv_cq);
  if (scq->ctx != pd->ctx || rcq->ctx != pd->ctx) return fail<ibv_qp>(EINVAL);
  Context* ctx = pd->ctx;
  uint32_t gen = current_gen();
  // The deleter runs where the last reference goes: never in a child for a parent's QP.
  std::shared_ptr<Qp> qp(new Qp, [](Qp* q) {
    if (q->gen != current_gen()) return;
    delete q;
  });
  qp->gen = gen;
  qp->box.self = qp.get();
  ibv_qp& q = qp->box.qp;
  q.context = p->context;
  q.qp_context = init->qp_context;
  q.pd = p;
  q.send_cq = init->send_cq;
  q.recv_cq = init->recv_cq;
  q.handle = next_key_index();
  q.qp_num = next_qpn();
  q.state = IBV_QPS_RESET;
  q.qp_type = IBV_QPT_RC;
  pthread_mutex_init(&q.mutex, nullptr);
  pthread_cond_init(&q.cond, nullptr);
  qp->nic = ctx->nic.get();
  qp->ctx = ctx;
  qp->pd = pd;
  qp->scq = scq;
  qp->rcq = rcq;
  qp->cap = c;
  qp->sig_all = init->sq_sig_all != 0;
  qp->attr.qp_state = IBV_QPS_RESET;
  qp->attr.cap = c;
  scq->users++;
  rcq->users++;
  pd->users++;
  Qp* raw = qp.get();
  raw->worker.start([raw] { raw->run_worker(); });
  {
    std::lock_guard<std::mutex> l(ctx->nic->mu);
    ctx->nic->qps[q.qp_num] = qp;
  }
  std::lock_guard<std::mutex> l(ctx->mu);
  ctx->qps.insert(raw);
  return &q;
}

namespace {

// Required and optional attributes of each RC transition (IB spec table of QP transitions).
struct Transition {
  ibv_qp_state from, to;
  int required, optional;
};
constexpr int kInitOpt = IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
const Transition kTransitions[] = {
    {IBV_QPS_RESET, IBV_QPS_INIT,
     IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS, 0},
    {IBV_QPS_INIT, IBV_QPS_INIT, IBV_QP_STATE, kInitOpt},
    {IBV_QPS_INIT, IBV_QPS_RTR,
     IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
         IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER,
     IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX},
    {IBV_QPS_RTR, IBV_QPS_RTS,
     IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
         IBV_QP_MAX_QP_RD_ATOMIC,
     IBV_QP_CUR_STATE | IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER | IBV_QP_ALT_PATH |
         IBV_QP_PATH_MIG_STATE},
    {IBV_QPS_RTS, IBV_QPS_RTS, IBV_QP_STATE,
     IBV_QP_CUR_STATE | IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER | IBV_QP_ALT_PATH |
         IBV_QP_PATH_MIG_STATE},
};

int check_values(const ibv_qp_attr& a, int mask) {
  if ((mask & IBV_QP_PORT) && a.port_num != 1) return EINVAL;
  if ((mask & IBV_QP_PKEY_INDEX) && a.pkey_index != 0) return EINVAL;
  if ((mask & IBV_QP_ACCESS_FLAGS) &&
      (a.qp_access_flags & ~(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                             IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC)))
    return EINVAL;
  if (mask & IBV_QP_AV) {
    const ibv_ah_attr& ah = a.ah_attr;
    if (ah.port_num != 1) return EINVAL;
    if (ah.is_global && ah.grh.sgid_index != 0) return EINVAL;
    if (!ah.is_global && (ah.dlid == 0 || ah.dlid >= 0xc000)) return EINVAL;
  }
  if ((mask & IBV_QP_PATH_MTU) && (a.path_mtu < IBV_MTU_256 || a.path_mtu > IBV_MTU_4096))
    return EINVAL;
  if ((mask & IBV_QP_DEST_QPN) && (a.dest_qp_num == 0 || a.dest_qp_num > 0xffffff)) return EINVAL;
  if ((mask & IBV_QP_RQ_PSN) && a.rq_psn > 0xffffff) return EINVAL;
  if ((mask & IBV_QP_SQ_PSN) && a.sq_psn > 0xffffff) return EINVAL;
  if ((mask & IBV_QP_MAX_DEST_RD_ATOMIC) && a.max_dest_rd_atomic > 16) return EINVAL;
  if ((mask & IBV_QP_MAX_QP_RD_ATOMIC) && a.max_rd_atomic > 16) return EINVAL;
  if ((mask & IBV_QP_MIN_RNR_TIMER) && a.min_rnr_timer > 31) return EINVAL;
  if ((mask & IBV_QP_TIMEOUT) && a.timeout > 31) return EINVAL;
  if ((mask & IBV_QP_RETRY_CNT) && a.retry_cnt > 7) return EINVAL;
  if ((mask & IBV_QP_RNR_RETRY) && a.rnr_retry > 7) return EINVAL;
  return 0;
}

void apply(ibv_qp_attr& cur, const ibv_qp_attr& a, int mask) {
  if (mask & IBV_QP_PKEY_INDEX) cur.pkey_index = a.pkey_index;
  if (mask & IBV_QP_PORT) cur.port_num = a.port_num;
  if (mask & IBV_QP_ACCESS_FLAGS) cur.qp_access_flags = a.qp_access_flags;
  if (mask & IBV_QP_AV) cur.ah_attr = a.ah_attr;
  if (mask & IBV_QP_PATH_MTU) cur.path_mtu = a.path_mtu;
  if (mask & IBV_QP_DEST_QPN) cur.dest_qp_num = a.dest_qp_num;
  if (mask & IBV_QP_RQ_PSN) cur.rq_psn = a.rq_psn;
  if (mask & IBV_QP_MAX_DEST_RD_ATOMIC) cur.max_dest_rd_atomic = a.max_dest_rd_atomic;
  if (mask & IBV_QP_MIN_RNR_TIMER) cur.min_rnr_timer = a.min_rnr_timer;
  if (mask & IBV_QP_TIMEOUT) cur.timeout = a.timeout;
  if (mask & IBV_QP_RETRY_CNT) cur.retry_cnt = a.retry_cnt;
  if (mask & IBV_QP_RNR_RETRY) cur.rnr_retry = a.rnr_retry;
  if (mask & IBV_QP_SQ_PSN) cur.sq_psn = a.sq_psn;
  if (mask & IBV_QP_MAX_QP_RD_ATOMIC) cur.max_rd_atomic = a.max_rd_atomic;
  if (mask & IBV_QP_PATH_MIG_STATE) cur.path_mig_state = a.path_mig_state;
  if (mask & IBV_QP_ALT_PATH) {
    cur.alt_ah_attr = a.alt_ah_attr;
    cur.alt_pkey_index = a.alt_pkey_index;
    cur.alt_port_num = a.alt_port_num;
    cur.alt_timeout = a.alt_timeout;
  }
}

}  // namespace

int ibv_modify_qp(ibv_qp* q, ibv_qp_attr* a, int mask) {
  Qp* qp = qp_of(q);
  if (stale(qp->ctx)) return EIO;
  std::lock_guard<std::mutex> l(qp->mu);
  ibv_qp_state cur = qp->state();
  if ((mask & IBV_QP_CUR_STATE) && a->cur_qp_state != cur) return EINVAL;
  ibv_qp_state to = (mask & IBV_QP_STATE) ? a->qp_state : cur;
  if (to == IBV_QPS_RESET || to == IBV_QPS_ERR) {
    // Any state may go to RESET or ERR, with the state alone.
    if (!(mask & IBV_QP_STATE) || (mask & ~(IBV_QP_STATE | IBV_QP_CUR_STATE))) return EINVAL;
    if (to == IBV_QPS_ERR) {
      qp->to_error_locked();
    } else {
      qp->sq.clear();
      qp->rq.clear();
      qp->sq_posted = qp->sq_retired = qp->rq_posted = qp->rq_retired = 0;
      ++qp->epoch;
      qp->flush_gen.fetch_add(1);
      qp->attr = ibv_qp_attr{};
      qp->attr.cap = qp->cap;
      q->state = IBV_QPS_RESET;
      qp->attr.qp_state = IBV_QPS_RESET;
      qp->cv.notify_all();
    }
    return 0;
  }
  const Transition* t = nullptr;
  for (const auto& tr : kTransitions)
    if (tr.from == cur && tr.to == to) t = &tr;
  if (!t) return EINVAL;
  if ((mask & t->required) != t->required || (mask & ~(t->required | t->optional))) return EINVAL;
  if (int e = check_values(*a, mask)) return e;
  apply(qp->attr, *a, mask);
  if (mask & IBV_QP_RQ_PSN) qp->rq_psn = qp->rq_psn_start = a->rq_psn;
  if (mask & IBV_QP_SQ_PSN) qp->sq_psn = a->sq_psn;
  q->state = to;
  qp->attr.qp_state = to;
  qp->cv.notify_all();
  return 0;
}

int ibv_query_qp(ibv_qp* q, ibv_qp_attr* attr, int, ibv_qp_init_attr* init) {
  Qp* qp = qp_of(q);
  if (stale(qp->ctx)) return EIO;
  std::lock_guard<std::mutex> l(qp->mu);
  *attr = qp->attr;
  attr->qp_state = qp->state();
  attr->cur_qp_state = qp->state();
  attr->cap = qp->cap;
  if (init) {
    std::memset(init, 0, sizeof(*init));
    init->qp_context = q->qp_context;
    init->send_cq = q->send_cq;
    init->recv_cq = q->recv_cq;
    init->cap = qp->cap;
    init->qp_type = IBV_QPT_RC;
    init->sq_sig_all = qp->sig_all ? 1 : 0;
  }
  return 0;
}

int ibv_destroy_qp(ibv_qp* q) {
  Qp* qp = qp_of(q);
  if (stale(qp->ctx)) return EIO;
  destroy_qp_impl(qp);
  return 0;
}

// ---- Test-only controls --------------------------------------------------------------------

int ringlet_emu_inject_qp_fatal(ibv_qp* q) {
  Qp* qp = qp_of(q);
  if (stale(qp->ctx)) return EIO;
  {
    std::lock_guard<std::mutex> l(qp->mu);
    qp->to_error_locked();
  }
  ibv_async_event ev{};
  ev.element.qp = q;
  ev.event_type = IBV_EVENT_QP_FATAL;
  qp->ctx->post_event(ev);
  return 0;
}

int ringlet_emu_set_port_state(ibv_context* c, ibv_port_state state) {
  Context* ctx = ctx_of(c);
  if (stale(ctx)) return EIO;
  if (state != IBV_PORT_ACTIVE && state != IBV_PORT_DOWN) return EINVAL;
  int old = ctx->nic->port_state.exchange(state);
  if (old != state)
    ctx->nic->post_port_event(state == IBV_PORT_ACTIVE ? IBV_EVENT_PORT_ACTIVE
                                                       : IBV_EVENT_PORT_ERR);
  return 0;
}

// ---- Strings -------------------------------------------------------------------------------

const char* ibv_wc_status_str(enum ibv_wc_status status) {
  switch (status) {
    case IBV_WC_SUCCESS:
      return "success";
    case IBV_WC_LOC_LEN_ERR:
      return "local length error";
    case IBV_WC_LOC_QP_OP_ERR:
      return "local QP operation error";
    case IBV_WC_LOC_EEC_OP_ERR:
      return "local EE context operation error";
    case IBV_WC_LOC_PROT_ERR:
      return "local protection error";
    case IBV_WC_WR_FLUSH_ERR:
      return "Work Request Flushed Error";
    case IBV_WC_MW_BIND_ERR:
      return "memory management operation error";
    case IBV_WC_BAD_RESP_ERR:
      return "bad response error";
    case IBV_WC_LOC_ACCESS_ERR:
      return "local access error";
    case IBV_WC_REM_INV_REQ_ERR:
      return "remote invalid request error";
    case IBV_WC_REM_ACCESS_ERR:
      return "remote access error";
    case IBV_WC_REM_OP_ERR:
      return "remote operation error";
    case IBV_WC_RETRY_EXC_ERR:
      return "transport retry counter exceeded";
    case IBV_WC_RNR_RETRY_EXC_ERR:
      return "RNR retry counter exceeded";
    case IBV_WC_LOC_RDD_VIOL_ERR:
      return "local RDD violation error";
    case IBV_WC_REM_INV_RD_REQ_ERR:
      return "remote invalid RD request";
    case IBV_WC_REM_ABORT_ERR:
      return "aborted error";
    case IBV_WC_INV_EECN_ERR:
      return "invalid EE context number";
    case IBV_WC_INV_EEC_STATE_ERR:
      return "invalid EE context state";
    case IBV_WC_FATAL_ERR:
      return "fatal error";
    case IBV_WC_RESP_TIMEOUT_ERR:
      return "response timeout error";
    case IBV_WC_GENERAL_ERR:
      return "general error";
    case IBV_WC_TM_ERR:
      return "TM error";
    case IBV_WC_TM_RNDV_INCOMPLETE:
      return "TM software rendezvous";
  }
  return "unknown";
}

const char* ibv_event_type_str(enum ibv_event_type event) {
  switch (event) {
    case IBV_EVENT_CQ_ERR:
      return "CQ error";
    case IBV_EVENT_QP_FATAL:
      return "local work queue catastrophic error";
    case IBV_EVENT_QP_REQ_ERR:
      return "invalid request local work queue error";
    case IBV_EVENT_QP_ACCESS_ERR:
      return "local access violation work queue error";
    case IBV_EVENT_COMM_EST:
      return "communication established";
    case IBV_EVENT_SQ_DRAINED:
      return "send queue drained";
    case IBV_EVENT_PATH_MIG:
      return "path migrated";
    case IBV_EVENT_PATH_MIG_ERR:
      return "path migration request error";
    case IBV_EVENT_DEVICE_FATAL:
      return "local catastrophic error";
    case IBV_EVENT_PORT_ACTIVE:
      return "port active";
    case IBV_EVENT_PORT_ERR:
      return "port error";
    case IBV_EVENT_LID_CHANGE:
      return "LID change";
    case IBV_EVENT_PKEY_CHANGE:
      return "P_Key change";
    case IBV_EVENT_SM_CHANGE:
      return "SM change";
    case IBV_EVENT_SRQ_ERR:
      return "SRQ catastrophic error";
    case IBV_EVENT_SRQ_LIMIT_REACHED:
      return "SRQ limit reached";
    case IBV_EVENT_QP_LAST_WQE_REACHED:
      return "last WQE reached";
    case IBV_EVENT_CLIENT_REREGISTER:
      return "client reregistration";
    case IBV_EVENT_GID_CHANGE:
      return "GID table change";
    case IBV_EVENT_WQ_FATAL:
      return "WQ fatal";
  }
  return "unknown";
}

const char* ibv_node_type_str(enum ibv_node_type node_type) {
  switch (node_type) {
    case IBV_NODE_CA:
      return "InfiniBand channel adapter";
    case IBV_NODE_SWITCH:
      return "InfiniBand switch";
    case IBV_NODE_ROUTER:
      return "InfiniBand router";
    case IBV_NODE_RNIC:
      return "iWARP NIC";
    case IBV_NODE_USNIC:
      return "usNIC";
    case IBV_NODE_USNIC_UDP:
      return "usNIC UDP";
    case IBV_NODE_UNSPECIFIED:
      return "unspecified";
    case IBV_NODE_UNKNOWN:
      break;
  }
  return "unknown";
}

const char* ibv_port_state_str(enum ibv_port_state port_state) {
  switch (port_state) {
    case IBV_PORT_NOP:
      return "PORT_NOP";
    case IBV_PORT_DOWN:
      return "PORT_DOWN";
    case IBV_PORT_INIT:
      return "PORT_INIT";
    case IBV_PORT_ARMED:
      return "PORT_ARMED";
    case IBV_PORT_ACTIVE:
      return "PORT_ACTIVE";
    case IBV_PORT_ACTIVE_DEFER:
      return "PORT_ACTIVE_DEFER";
  }
  return "invalid state";
}

}  // extern "C"
