// SPDX-License-Identifier: Apache-2.0
// The tcp transport's progress loop: poll(2) over every socket, partial reads and writes.
#include "transports/tcp/loop.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include "src/common/check.hpp"
#include "src/common/socket.hpp"

namespace ringlet::transport::tcp {
namespace {

// How long a wait spins on non-blocking attempts before it blocks in poll(2).
constexpr auto kSpin = std::chrono::microseconds(20);
// Then this many rounds of sched_yield(2) and a non-blocking poll, before blocking.
constexpr int kYieldRounds = 200;
// Reads at least this large re-arm TCP_QUICKACK.
constexpr std::size_t kQuickackMinBytes = 16 * 1024;
// Longest single poll(2): an abort flag set without interrupt() is seen within this.
using net::kMaxPollMs;
constexpr int kMaxIov = 32;
constexpr std::size_t kMaxErrorText = 64 * 1024;
constexpr auto kSendErrorBudget = std::chrono::milliseconds(1000);
// Sealed sends are sealed this far ahead of what the socket has taken: enough to refill the
// socket when it drains, little enough that sealing overlaps the wire.
constexpr std::size_t kSealAhead = 4 * (kSealRecordBytes + kTagBytes);
constexpr std::size_t kSealStride = kSealRecordBytes + kTagBytes;
// An error frame is one sealed record.
static_assert(kMaxErrorText <= kSealRecordBytes);

bool would_block(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

}  // namespace

Loop::Loop(int rank, const std::atomic<bool>* abort_flag, bool quickack, bool oversubscribed)
    : rank_(rank),
      abort_flag_(abort_flag),
      quickack_(quickack),
      oversubscribed_(oversubscribed),
      event_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (!event_fd_) detail::throw_errno("tcp: eventfd");
}

void Loop::rearm_quickack(const Lane& lane, std::size_t bytes) const noexcept {
  // The kernel leaves quick-ACK mode on its own; setting it again acknowledges at once. Only
  // bulk reads need it (a delayed ACK stalls a stream); a small message is answered soon
  // enough, and the extra system call costs latency.
  if (!quickack_ || bytes < kQuickackMinBytes) return;
  int one = 1;
  ::setsockopt(lane.fd.get(), IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

void Loop::add(Channel* channel) { channels_.push_back(channel); }

void Loop::remove(Channel* channel) noexcept {
  channels_.erase(std::remove(channels_.begin(), channels_.end(), channel), channels_.end());
}

void Loop::interrupt() noexcept {
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(event_fd_.get(), &one, sizeof(one));
}

void Loop::check() const {
  if (abort_flag_ != nullptr && abort_flag_->load(std::memory_order_acquire)) {
    throw Error(ErrorCode::aborted, str_cat("tcp: rank ", rank_, " was aborted"), {rank_});
  }
}

void Loop::fail(Error error) { throw std::move(error); }

void Loop::settle(Channel& c, const std::function<bool()>& done) {
  if (!c.failure) return;
  // Drain what the peer sent before it failed; give up once a round brings nothing new.
  for (int rounds = 0; rounds < 1000; ++rounds) {
    if (done()) return;
    std::uint64_t before = c.bytes_read;
    poll_once(rounds == 0 ? 0 : 10);
    if (done()) return;
    if (c.bytes_read == before) break;
  }
  throw *c.failure;
}

namespace {
// How long a lost connection waits for the peer's failure report on its control socket.
constexpr auto kReportGrace = std::chrono::milliseconds(250);
}  // namespace

void Loop::fail_lost(Channel& c, Error e) {
  if (!in_fail_lost_ && c.control != nullptr && c.control->fd && !c.control->eof) {
    in_fail_lost_ = true;
    // A peer that fails reports why on its control socket and then closes every socket; its
    // data socket's close can be read here before the report has arrived on the other
    // connection. Wait briefly for the report, or for the control socket's own close (a
    // killed peer closes both at once), so that the error names the rank the failure began
    // with rather than the rank that passed it on.
    const Deadline until = Clock::now() + kReportGrace;
    try {
      for (;;) {
        read_control(c, *c.control);
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
        if (c.control->eof || !c.control->fd || left <= 0) break;
        pollfd p{c.control->fd.get(), POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(left));
      }
    } catch (const Error& report) {
      in_fail_lost_ = false;
      if (report.origin_rank() >= 0) throw report;
    } catch (...) {
      in_fail_lost_ = false;
      throw;
    }
    in_fail_lost_ = false;
  }
  throw std::move(e);
}

void Loop::fail_io(Channel& c, const char* what, int err) {
  if (err == ECONNRESET || err == EPIPE || err == ENOTCONN || err == ETIMEDOUT ||
      err == EHOSTUNREACH || err == ENETUNREACH || err == ECONNABORTED) {
    fail_lost(c, Error(ErrorCode::peer_lost,
                       str_cat("tcp: peer ", c.peer, " (", c.address, ") reset the connection (",
                               what, ": ", std::strerror(err), ")"),
                       {c.peer}));
  }
  fail(Error(
      ErrorCode::transport,
      str_cat("tcp: ", what, " peer ", c.peer, " (", c.address, ") failed: ", std::strerror(err)),
      {c.peer}));
}

std::uint64_t Loop::post_send(Channel& c, std::span<const std::byte> data) {
  const std::uint64_t id = ++c.sends_posted;
  SendOp& op = c.sends[id];
  op.id = id;
  op.data = data.data();
  op.length = data.size();
  Lane& lane = c.small != nullptr && data.size() <= kSmallMessageBytes
                   ? *c.small
                   : *c.send_lanes[c.bulk_sends++ % c.send_lanes.size()];
  // The frame carries the low 32 bits of the id, so that the receiver checks that frames
  // arrive in the order of its receives even though small and bulk messages take different
  // sockets (both ends pick a socket from the length).
  FrameHeader{FrameKind::data, static_cast<std::uint32_t>(id), data.size()}.encode(op.header);
  if (lane.sealer) {
    // Sealed by write_lane, record by record in the order of the socket's frames (the
    // receiver opens them in that order), while the socket sends what is already sealed.
    op.header_length = kFrameHeaderBytes + kTagBytes;
    op.plain = data;
    op.length = sealed_wire_bytes(data.size());
    op.sealed = std::make_unique_for_overwrite<std::byte[]>(op.length);
    op.data = op.sealed.get();
    op.ready = 0;
  } else {
    op.ready = op.header_length + op.length;
  }
  lane.sendq.push_back(&op);
  ++c.sends_pending;
  if (c.failure) return id;
  try {
    if (c.peer_closed || lane.eof) {
      fail(Error(ErrorCode::peer_lost,
                 str_cat("tcp: peer ", c.peer, " (", c.address, ") closed the connection"),
                 {c.peer}));
    }
    // Eager write: a small message leaves now, without waiting for the next poll.
    if (lane.sendq.size() == 1) write_lane(c, lane);
  } catch (const Error& e) {
    // Kept on the channel; a test or wait that cannot complete without this peer throws it.
    if (!c.failure) c.failure = e;
  }
  return id;
}

std::uint64_t Loop::post_recv(Channel& c, std::span<std::byte> data) {
  const std::uint64_t id = ++c.recvs_posted;
  RecvOp& op = c.recvs[id];
  op.id = id;
  op.data = data.data();
  op.length = data.size();
  Lane& lane = c.small != nullptr && data.size() <= kSmallMessageBytes
                   ? *c.small
                   : *c.recv_lanes[c.bulk_recvs++ % c.recv_lanes.size()];
  lane.recvq.push_back(&op);
  if (c.failure) return id;
  try {
    if (lane.eof) {
      fail(Error(ErrorCode::peer_lost,
                 str_cat("tcp: peer ", c.peer, " (", c.address, ") closed the connection"),
                 {c.peer}));
    }
    // The frame header may already be here (read while no receive was posted); the rest of
    // the frame may be too, or be empty, so poll(2) would not report it: read now.
    if (lane.header_ready && lane.recvq.size() == 1) read_lane(c, lane);
  } catch (const Error& e) {
    // Kept on the channel; a test or wait that cannot complete without this peer throws it.
    if (!c.failure) c.failure = e;
  }
  return id;
}

bool Loop::test_send(Channel& c, std::uint64_t id) {
  auto it = c.sends.find(id);
  RINGLET_CHECK(it != c.sends.end(), "tcp: no outstanding send #", id, " to peer ", c.peer);
  const SendOp& op = it->second;
  try {
    check();
    poll_once(0);
    if (!op.done) settle(c, [&op] { return op.done; });
  } catch (const Error& e) {
    release_failed_send(c, id, e);
    throw;
  }
  if (!op.done) return false;
  c.sends.erase(it);
  return true;
}

bool Loop::test_recv(Channel& c, std::uint64_t id) {
  auto it = c.recvs.find(id);
  RINGLET_CHECK(it != c.recvs.end(), "tcp: no outstanding receive #", id, " from peer ", c.peer);
  const RecvOp& op = it->second;
  try {
    check();
    poll_once(0);
    if (!op.done) settle(c, [&op] { return op.done; });
  } catch (const Error& e) {
    release_failed_recv(c, id, e);
    throw;
  }
  if (!op.done) return false;
  c.recvs.erase(it);
  return true;
}

void Loop::wait_send(Channel& c, std::uint64_t id, Deadline deadline) {
  auto it = c.sends.find(id);
  RINGLET_CHECK(it != c.sends.end(), "tcp: no outstanding send #", id, " to peer ", c.peer);
  const SendOp& op = it->second;
  try {
    wait_until(
        c, [&op] { return op.done; }, deadline, "send", id);
  } catch (const Error& e) {
    release_failed_send(c, id, e);
    throw;
  }
  c.sends.erase(it);
}

void Loop::wait_recv(Channel& c, std::uint64_t id, Deadline deadline) {
  auto it = c.recvs.find(id);
  RINGLET_CHECK(it != c.recvs.end(), "tcp: no outstanding receive #", id, " from peer ", c.peer);
  const RecvOp& op = it->second;
  try {
    wait_until(
        c, [&op] { return op.done; }, deadline, "receive", id);
  } catch (const Error& e) {
    release_failed_recv(c, id, e);
    throw;
  }
  c.recvs.erase(it);
}

void Loop::release_failed_send(Channel& c, std::uint64_t id, const Error& error) noexcept {
  auto it = c.sends.find(id);
  if (it == c.sends.end()) return;
  SendOp* op = &it->second;
  // No round writes on a failed channel, so a frame left half-written stays so.
  if (!c.failure) c.failure = error;
  for (Lane* l : c.send_lanes) std::erase(l->sendq, op);
  if (c.small != nullptr) std::erase(c.small->sendq, op);
  if (!op->done) --c.sends_pending;
  c.sends.erase(it);
}

void Loop::release_failed_recv(Channel& c, std::uint64_t id, const Error& error) noexcept {
  auto it = c.recvs.find(id);
  if (it == c.recvs.end()) return;
  RecvOp* op = &it->second;
  if (!c.failure) c.failure = error;
  auto release_from = [op](Lane& l) {
    if (l.recvq.empty()) return;
    if (l.recvq.front() == op) {
      // The socket's next bytes belong to this operation's frame: read nothing more from
      // it, as if the peer had closed it (a failed channel only drains, and the operations
      // queued behind this one can no longer complete).
      l.eof = true;
    }
    std::erase(l.recvq, op);
  };
  for (Lane* l : c.recv_lanes) release_from(*l);
  if (c.small != nullptr) release_from(*c.small);
  c.recvs.erase(it);
}

void Loop::wait_until(Channel& c, const std::function<bool()>& done, Deadline deadline,
                      const char* what, std::uint64_t id) {
  const auto start = Clock::now();
  int yields = 0;
  unsigned spins = 0;
  for (;;) {
    check();
    if (done()) return;
    settle(c, done);
    if (done()) return;
    int timeout_ms = 0;
    auto now = Clock::now();
    const bool spun = oversubscribed_ || now - start >= kSpin;
    if (spun && yields < kYieldRounds) {
      // Ranks may outnumber cores: let the peer we wait for run before we sleep in poll(2),
      // whose wake-up costs a scheduler round trip.
      ++yields;
      sched_yield();
    } else if (spun) {
      if (now >= deadline) {
        throw Error(
            ErrorCode::timeout,
            str_cat("tcp: rank ", rank_, " waited ", ms_between(start, now), " ms for peer ",
                    c.peer, " (", c.address, ") to complete ", what, " #", id),
            {rank_, c.peer});
      }
      timeout_ms = ms_until(deadline, kMaxPollMs);
    } else if ((++spins & 7) != 0) {
      // Spinning: try the awaited peer's sockets directly (one system call instead of a
      // poll over every socket and then the read); every 8th round polls them all, so that
      // the other peers' sends and receives move too.
      progress_channel(c);
      continue;
    }
    poll_once(timeout_ms);
  }
}

void Loop::progress_channel(Channel& c) {
  if (c.failure) return;
  try {
    for (Lane* l : c.recv_lanes) {
      if (!l->eof && !l->recvq.empty()) read_lane(c, *l);
    }
    if (c.small != nullptr && !c.small->eof && !c.small->recvq.empty()) read_lane(c, *c.small);
    for (Lane* l : c.send_lanes) {
      if (!l->sendq.empty()) write_lane(c, *l);
    }
    if (c.small != nullptr && !c.small->sendq.empty()) write_lane(c, *c.small);
  } catch (const Error& e) {
    if (!c.failure) c.failure = e;
  }
}

void Loop::wait_any(std::chrono::milliseconds timeout) noexcept {
  const int ms = static_cast<int>(std::clamp<long long>(timeout.count(), 0, kMaxPollMs));
  try {
    poll_once(ms);
  } catch (...) {
    // poll(2) itself failed (out of memory): the caller's next test() polls again.
  }
}

void Loop::poll_once(int timeout_ms) {
  pollfds_.clear();
  poll_lanes_.clear();
  pollfds_.push_back({event_fd_.get(), POLLIN, 0});
  for (Channel* c : channels_) {
    const bool failed = c->failure.has_value();
    for (auto& lp : c->lanes) {
      Lane& l = *lp;
      short events = 0;
      // After a failure only the data of posted receives is still read (draining).
      if (!l.eof && (failed ? (!l.control && l.reads && !l.recvq.empty())
                            : (l.control || (l.reads && (!l.header_ready || !l.recvq.empty()))))) {
        events |= POLLIN;
      }
      if (!failed && l.writes && !l.sendq.empty()) events |= POLLOUT;
      if (failed && events == 0) continue;
      if (events == 0 && l.eof) continue;
      pollfds_.push_back({l.fd.get(), events, 0});
      poll_lanes_.emplace_back(c, &l);
    }
  }
  int n = ::poll(pollfds_.data(), pollfds_.size(), timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return;
    detail::throw_errno("tcp: poll");
  }
  if (n == 0) return;
  if (pollfds_[0].revents != 0) {
    std::uint64_t count = 0;
    [[maybe_unused]] ssize_t r = ::read(event_fd_.get(), &count, sizeof(count));
  }
  for (std::size_t i = 1; i < pollfds_.size(); ++i) {
    short revents = pollfds_[i].revents;
    if (revents == 0) continue;
    auto [c, l] = poll_lanes_[i - 1];
    try {
      bool broken = (revents & (POLLERR | POLLHUP)) != 0;
      if (!c->failure && ((revents & POLLOUT) || (broken && !l->sendq.empty()))) {
        write_lane(*c, *l);
      }
      if ((revents & POLLIN) || broken) {
        if (l->control) {
          read_control(*c, *l);
        } else if (l->reads) {
          read_lane(*c, *l);
        }
      }
      if (broken && !l->eof && !c->failure) {
        int err = 0;
        socklen_t len = sizeof(err);
        ::getsockopt(l->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        fail_io(*c, "poll on the socket to", err != 0 ? err : ECONNRESET);
      }
    } catch (const Error& e) {
      // Kept on the channel: operations on other peers go on.
      if (!c->failure) c->failure = e;
    }
  }
}

void Loop::seal_until(Lane& lane, SendOp& op, std::size_t upto) {
  const std::size_t total = op.header_length + op.length;
  upto = std::min(upto, total);
  if (op.ready >= upto) return;
  auto& aead = lane.sealer->aead();
  std::array<unsigned char, kTagBytes> tag{};
  if (op.ready == 0) {
    aead.seal(lane.sealer->next(), {}, {op.header, kFrameHeaderBytes}, op.header, tag);
    std::copy(tag.begin(), tag.end(), op.header + kFrameHeaderBytes);
    op.ready = op.header_length;
  }
  const std::size_t length = op.plain.size();
  const std::size_t records = sealed_records(length);
  const auto* in = reinterpret_cast<const unsigned char*>(op.plain.data());
  auto* out = reinterpret_cast<unsigned char*>(op.sealed.get());
  while (op.ready < upto && op.records_sealed < records) {
    const std::size_t i = op.records_sealed;
    const std::size_t n = sealed_record_length(length, i);
    unsigned char* record = out + i * kSealStride;
    aead.seal(lane.sealer->next(), {}, {in + i * kSealRecordBytes, n}, record, tag);
    std::copy(tag.begin(), tag.end(), record + n);
    op.ready += n + kTagBytes;
    ++op.records_sealed;
  }
}

void Loop::seal_ahead(Lane& lane) {
  // A later send's first record is sealed only once every earlier one is: the counters
  // follow the order of the frames on the socket.
  for (SendOp* op : lane.sendq) {
    seal_until(lane, *op, op->sent + kSealAhead);
    if (op->ready < op->header_length + op->length) return;
  }
}

void Loop::write_lane(Channel& c, Lane& lane) {
  while (!lane.sendq.empty()) {
    if (lane.sealer) seal_ahead(lane);
    iovec iov[kMaxIov];
    int count = 0;
    std::size_t want = 0;
    for (SendOp* op : lane.sendq) {
      if (count + 2 > kMaxIov) break;
      // Only what is sealed (everything, on a socket in clear).
      const std::size_t ready = op->ready;
      std::size_t payload_from = 0;
      if (op->sent < op->header_length) {
        iov[count++] = {op->header + op->sent, op->header_length - op->sent};
      } else {
        payload_from = op->sent - op->header_length;
      }
      const std::size_t payload_ready = ready - op->header_length;
      if (payload_ready > payload_from) {
        iov[count++] = {const_cast<std::byte*>(op->data) + payload_from,
                        payload_ready - payload_from};
      }
      if (ready < op->header_length + op->length) break;
    }
    for (int i = 0; i < count; ++i) want += iov[i].iov_len;
    if (want == 0) return;
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(count);
    ssize_t n = ::sendmsg(lane.fd.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (would_block(errno)) return;
      fail_io(c, "send to", errno);
    }
    auto left = static_cast<std::size_t>(n);
    while (!lane.sendq.empty()) {
      SendOp* op = lane.sendq.front();
      std::size_t total = op->header_length + op->length;
      std::size_t take = std::min(left, total - op->sent);
      op->sent += take;
      left -= take;
      if (op->sent < total) break;
      op->done = true;
      --c.sends_pending;
      lane.sendq.pop_front();
    }
    if (static_cast<std::size_t>(n) < want) {
      // The socket buffer is full: seal the next records while the kernel sends.
      if (lane.sealer) seal_ahead(lane);
      return;
    }
  }
}

void Loop::on_eof(Channel& c, Lane& lane) {
  lane.eof = true;
  bool mid_frame = lane.header_got > 0 || lane.header_ready;
  if (lane.control) {
    c.peer_closed = true;
    mid_frame = lane.header_got > 0;
  }
  if (mid_frame || !lane.recvq.empty() || !lane.sendq.empty() ||
      (lane.control && c.sends_pending > 0)) {
    Error e(ErrorCode::peer_lost,
            str_cat("tcp: peer ", c.peer, " (", c.address, ") closed the connection",
                    mid_frame ? " in the middle of a message" : ""),
            {c.peer});
    if (lane.control) fail(std::move(e));
    fail_lost(c, std::move(e));
  }
}

void Loop::open_header(Channel& c, Lane& lane) {
  if (!lane.opener) return;
  std::array<unsigned char, kTagBytes> tag{};
  std::copy(lane.header + kFrameHeaderBytes, lane.header + kFrameHeaderBytes + kTagBytes,
            tag.begin());
  if (!lane.opener->aead().open(lane.opener->next(), {}, {lane.header, kFrameHeaderBytes},
                                lane.header, tag)) {
    fail(Error(ErrorCode::transport,
               str_cat("tcp: a frame header from peer ", c.peer, " (", c.address,
                       ") failed authentication: altered in flight (RINGLET_ENCRYPT=1)"),
               {c.peer}));
  }
}

void Loop::open_payload(Channel& c, Lane& lane, std::byte* data, std::size_t length,
                        std::size_t message_length) {
  if (!lane.opener) return;
  std::array<unsigned char, kTagBytes> tag{};
  std::copy(std::begin(lane.tag), std::end(lane.tag), tag.begin());
  auto* p = reinterpret_cast<unsigned char*>(data);
  if (!lane.opener->aead().open(lane.opener->next(), {}, {p, length}, p, tag)) {
    fail(Error(ErrorCode::transport,
               str_cat("tcp: a message of ", message_length, " bytes from peer ", c.peer, " (",
                       c.address, ") failed authentication: altered in flight (RINGLET_ENCRYPT=1)"),
               {c.peer}));
  }
}

void Loop::read_lane(Channel& c, Lane& lane) {
  const std::size_t header_bytes = lane.header_bytes();
  const std::size_t tag_bytes = lane.tag_bytes();
  bool drained = false;
  for (;;) {
    if (!lane.header_ready) {
      if (drained) return;
      iovec iov[3];
      int count = 1;
      iov[0] = {lane.header + lane.header_got, header_bytes - lane.header_got};
      // Speculatively read the payload straight into the posted buffer: one system call per
      // small message. A wrong length is a mismatch, which ends the job anyway.
      // Sealed: its first record and that record's tag.
      RecvOp* op = lane.recvq.empty() ? nullptr : lane.recvq.front();
      const std::size_t first =
          op == nullptr ? 0 : (tag_bytes > 0 ? sealed_record_length(op->length, 0) : op->length);
      if (first > 0) iov[count++] = {op->data, first};
      if (op != nullptr && tag_bytes > 0) iov[count++] = {lane.tag, tag_bytes};
      std::size_t want = 0;
      for (int i = 0; i < count; ++i) want += iov[i].iov_len;
      ssize_t n = ::readv(lane.fd.get(), iov, count);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (would_block(errno)) return;
        fail_io(c, "receive from", errno);
      }
      if (n == 0) return on_eof(c, lane);
      rearm_quickack(lane, static_cast<std::size_t>(n));
      c.bytes_read += static_cast<std::uint64_t>(n);
      drained = static_cast<std::size_t>(n) < want;
      auto got = static_cast<std::size_t>(n);
      std::size_t h = std::min(got, header_bytes - lane.header_got);
      lane.header_got += h;
      if (lane.header_got < header_bytes) continue;
      open_header(c, lane);
      lane.frame = FrameHeader::decode(lane.header);
      if (lane.frame.kind != FrameKind::data) {
        fail(Error(ErrorCode::transport,
                   str_cat("tcp: peer ", c.peer, " (", c.address, ") sent a frame of kind ",
                           static_cast<std::uint32_t>(lane.frame.kind), " on a data socket"),
                   {c.peer}));
      }
      lane.header_ready = true;
      lane.payload_got = got - h;
      lane.records_opened = 0;
    }
    if (lane.recvq.empty()) return;  // no POLLIN on this socket until a receive is posted
    RecvOp* op = lane.recvq.front();
    if (lane.frame.length != op->length) {
      // Best effort: read as much of the message's start as fits, so that the caller can see
      // what the peer sent (its collective's fingerprint leads every message; sealed frames
      // show only ciphertext there).
      const std::size_t fits = std::min<std::size_t>(lane.frame.length, op->length);
      while (lane.payload_got < fits) {
        ssize_t n = ::recv(lane.fd.get(), op->data + lane.payload_got, fits - lane.payload_got,
                           MSG_DONTWAIT);
        if (n <= 0) break;
        lane.payload_got += static_cast<std::size_t>(n);
      }
      fail(Error(ErrorCode::mismatch,
                 str_cat("tcp: peer ", c.peer, " sent a message of ", lane.frame.length,
                         " bytes where ", op->length, " were expected"),
                 {rank_, c.peer}));
    }
    if (lane.frame.code != static_cast<std::uint32_t>(op->id)) {
      // Same length, wrong place in the order: the two ends posted messages of different
      // sizes earlier, so they picked different sockets.
      fail(Error(ErrorCode::mismatch,
                 str_cat("tcp: peer ", c.peer, " sent its message #", lane.frame.code,
                         " where rank ", rank_, " expected #", static_cast<std::uint32_t>(op->id),
                         " (the ranks posted messages of different sizes)"),
                 {rank_, c.peer}));
    }
    if (tag_bytes > 0) {
      if (!read_sealed_payload(c, lane, *op, drained)) return;
    } else {
      while (lane.payload_got < op->length) {
        if (drained) {
          op->got = lane.payload_got;
          return;
        }
        const std::size_t want = op->length - lane.payload_got;
        ssize_t n = ::recv(lane.fd.get(), op->data + lane.payload_got, want, MSG_DONTWAIT);
        if (n < 0) {
          if (errno == EINTR) continue;
          if (would_block(errno)) {
            op->got = lane.payload_got;
            return;
          }
          fail_io(c, "receive from", errno);
        }
        if (n == 0) return on_eof(c, lane);
        rearm_quickack(lane, static_cast<std::size_t>(n));
        c.bytes_read += static_cast<std::uint64_t>(n);
        lane.payload_got += static_cast<std::size_t>(n);
        drained = static_cast<std::size_t>(n) < want;
      }
    }
    op->got = op->length;
    op->done = true;
    lane.recvq.pop_front();
    lane.header_ready = false;
    lane.header_got = 0;
    lane.payload_got = 0;
    lane.records_opened = 0;
  }
}

bool Loop::read_sealed_payload(Channel& c, Lane& lane, RecvOp& op, bool drained) {
  const std::size_t records = sealed_records(op.length);
  const std::size_t wire = sealed_wire_bytes(op.length);
  for (;;) {
    // Open each record whose tag has arrived (no read goes past a record's tag, so it is in
    // lane.tag), while the next one is still on the wire.
    while (lane.records_opened < records) {
      const std::size_t i = lane.records_opened;
      const std::size_t n = sealed_record_length(op.length, i);
      if (lane.payload_got < i * kSealStride + n + kTagBytes) break;
      open_payload(c, lane, op.data + i * kSealRecordBytes, n, op.length);
      ++lane.records_opened;
    }
    if (lane.payload_got >= wire) return true;
    if (drained) return false;
    const std::size_t i = lane.payload_got / kSealStride;
    const std::size_t within = lane.payload_got % kSealStride;
    const std::size_t n = sealed_record_length(op.length, i);
    iovec iov[2];
    int count = 0;
    if (within < n) {
      iov[count++] = {op.data + i * kSealRecordBytes + within, n - within};
      iov[count++] = {lane.tag, kTagBytes};
    } else {
      iov[count++] = {lane.tag + (within - n), kTagBytes - (within - n)};
    }
    std::size_t want = 0;
    for (int k = 0; k < count; ++k) want += iov[k].iov_len;
    ssize_t r = ::readv(lane.fd.get(), iov, count);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (would_block(errno)) return false;
      fail_io(c, "receive from", errno);
    }
    if (r == 0) {
      on_eof(c, lane);
      return false;
    }
    rearm_quickack(lane, static_cast<std::size_t>(r));
    c.bytes_read += static_cast<std::uint64_t>(r);
    lane.payload_got += static_cast<std::size_t>(r);
    drained = static_cast<std::size_t>(r) < want;
  }
}

void Loop::read_control(Channel& c, Lane& lane) {
  const std::size_t header_bytes = lane.header_bytes();
  const std::size_t tag_bytes = lane.tag_bytes();
  for (;;) {
    if (!lane.header_ready) {
      ssize_t n = ::recv(lane.fd.get(), lane.header + lane.header_got,
                         header_bytes - lane.header_got, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (would_block(errno)) return;
        fail_io(c, "receive from", errno);
      }
      if (n == 0) return on_eof(c, lane);
      lane.header_got += static_cast<std::size_t>(n);
      if (lane.header_got < header_bytes) continue;
      open_header(c, lane);
      lane.frame = FrameHeader::decode(lane.header);
      if (lane.frame.kind != FrameKind::error || lane.frame.length > kMaxErrorText ||
          lane.frame.length < kErrorOriginBytes) {
        fail(Error(ErrorCode::transport,
                   str_cat("tcp: peer ", c.peer, " (", c.address,
                           ") sent a malformed frame on its control socket"),
                   {c.peer}));
      }
      lane.header_ready = true;
      lane.error_text.assign(lane.frame.length, '\0');
      lane.payload_got = 0;
    }
    const std::size_t text = lane.error_text.size();
    while (lane.payload_got < text + tag_bytes) {
      const bool in_text = lane.payload_got < text;
      char* dst = in_text ? lane.error_text.data() + lane.payload_got
                          : reinterpret_cast<char*>(lane.tag) + (lane.payload_got - text);
      const std::size_t want =
          in_text ? text - lane.payload_got : text + tag_bytes - lane.payload_got;
      ssize_t n = ::recv(lane.fd.get(), dst, want, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (would_block(errno)) return;
        fail_io(c, "receive from", errno);
      }
      if (n == 0) return on_eof(c, lane);
      lane.payload_got += static_cast<std::size_t>(n);
    }
    open_payload(c, lane, reinterpret_cast<std::byte*>(lane.error_text.data()), text, text);
    std::uint32_t code = lane.frame.code;
    if (code < static_cast<std::uint32_t>(ErrorCode::invalid_argument) ||
        code > static_cast<std::uint32_t>(ErrorCode::aborted)) {
      code = static_cast<std::uint32_t>(ErrorCode::transport);
    }
    const auto* text_bytes = reinterpret_cast<const unsigned char*>(lane.error_text.data());
    auto origin = static_cast<std::int32_t>(get_u32(text_bytes));
    if (origin < 0) origin = c.peer;
    const auto lost = static_cast<std::int32_t>(get_u32(text_bytes + 4));
    std::vector<int> ranks{origin};
    if (lost >= 0 && lost != origin) ranks.insert(ranks.begin(), lost);
    Error e(static_cast<ErrorCode>(code), lane.error_text.substr(kErrorOriginBytes),
            std::move(ranks));
    fail(std::move(e.reported_by(origin)));
  }
}

void Loop::report_failure(ErrorCode code, int origin_rank, int lost_rank,
                          std::string_view cause) noexcept {
  // Every channel's frame is offered at once, then the rest of each is written as its
  // socket takes it, all within one budget: a peer whose buffers are full costs the others
  // nothing (it used to be up to a second per peer, one after another).
  struct Out {
    int fd;
    std::string frame;
    std::size_t sent = 0;
  };
  std::vector<Out> outs;
  try {
    for (Channel* c : channels_) {
      std::string f = error_frame(*c, code, origin_rank, lost_rank, cause);
      if (!f.empty()) outs.push_back({c->control->fd.get(), std::move(f)});
    }
  } catch (...) {
    // Out of memory: send what could be built.
  }
  const Deadline give_up = Clock::now() + kSendErrorBudget;
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    for (Out& o : outs) {
      while (o.fd >= 0 && o.sent < o.frame.size()) {
        const ssize_t n = ::send(o.fd, o.frame.data() + o.sent, o.frame.size() - o.sent,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          o.sent += static_cast<std::size_t>(n);
        } else if (n < 0 && errno == EINTR) {
          continue;
        } else if (n < 0 && would_block(errno)) {
          fds.push_back({o.fd, POLLOUT, 0});
          break;
        } else {
          o.fd = -1;  // the peer is gone: nothing to tell it
        }
      }
    }
    if (fds.empty() || Clock::now() >= give_up) return;
    if (::poll(fds.data(), fds.size(), ms_until(give_up, 100)) < 0 && errno != EINTR) return;
  }
}

std::string Loop::error_frame(Channel& c, ErrorCode code, int origin_rank, int lost_rank,
                              std::string_view cause) {
  if (c.control == nullptr || !c.control->fd) return {};
  // Payload: the origin rank and the lost rank (u32, little-endian), then the cause's text.
  std::string_view text = cause.substr(0, kMaxErrorText - kErrorOriginBytes);
  std::string frame(kFrameHeaderBytes + kErrorOriginBytes, '\0');
  auto* p = reinterpret_cast<unsigned char*>(frame.data());
  FrameHeader{FrameKind::error, static_cast<std::uint32_t>(code), kErrorOriginBytes + text.size()}
      .encode(p);
  put_u32(p + kFrameHeaderBytes, static_cast<std::uint32_t>(origin_rank));
  put_u32(p + kFrameHeaderBytes + 4, static_cast<std::uint32_t>(lost_rank));
  frame.append(text);
  if (c.control->sealer) {
    // Header and its tag, then the payload and its tag.
    auto& aead = c.control->sealer->aead();
    std::array<unsigned char, kTagBytes> tag{};
    std::string sealed(kFrameHeaderBytes + kTagBytes + frame.size() - kFrameHeaderBytes + kTagBytes,
                       '\0');
    auto* out = reinterpret_cast<unsigned char*>(sealed.data());
    const auto* head = reinterpret_cast<const unsigned char*>(frame.data());
    aead.seal(c.control->sealer->next(), {}, {head, kFrameHeaderBytes}, out, tag);
    std::copy(tag.begin(), tag.end(), out + kFrameHeaderBytes);
    const std::size_t body = frame.size() - kFrameHeaderBytes;
    unsigned char* body_out = out + kFrameHeaderBytes + kTagBytes;
    aead.seal(c.control->sealer->next(), {}, {head + kFrameHeaderBytes, body}, body_out, tag);
    std::copy(tag.begin(), tag.end(), body_out + body);
    frame = std::move(sealed);
  }
  return frame;
}

}  // namespace ringlet::transport::tcp
