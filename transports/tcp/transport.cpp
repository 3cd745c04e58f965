// SPDX-License-Identifier: Apache-2.0
// TcpTransport: listens, connects to peers over several sockets each, and the factory.
#include "transports/tcp/transport.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>

#include "src/common/check.hpp"
#include "src/common/crypto.hpp"
#include "src/common/log.hpp"
#include "src/common/socket.hpp"
#include "transports/tcp/connection.hpp"
#include "transports/tcp/handshake.hpp"
#include "transports/tcp/loop.hpp"
#include "transports/tcp/memory_region.hpp"
#include "transports/tcp/wire.hpp"

namespace ringlet::transport {
namespace tcp {
namespace {

// How long an accepted socket may take to complete its handshake before it is dropped.
constexpr auto kHandshakeTimeout = std::chrono::seconds(3);
// Accepted sockets still in their handshake. Beyond this, connections wait in the kernel's
// backlog until a pending one completes or passes its deadline: a flood of silent clients
// delays a real peer by at most kHandshakeTimeout per round, and never evicts it.
constexpr std::size_t kMaxPendingHandshakes = 128;
// Refused sockets remembered per claimed rank, for the message of a connect that times out.
constexpr std::size_t kMaxRefusalNotes = 4;

using net::format_address;
using net::kMaxPollMs;

// Socket options of every data and control socket.
void tune(int fd, int buffer_bytes) {
  net::set_nodelay(fd);
  net::set_buffer_bytes(fd, buffer_bytes);
}

constexpr int kAcceptPauseMs = 100;  // after EMFILE, before the listener is watched again

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(const TcpOptions& options);

  std::string_view name() const noexcept override { return "tcp"; }
  TransportTraits traits() const noexcept override {
    TransportTraits t;
    t.slice_bytes = kTcpRecommendedSliceBytes;
    t.max_outstanding = 0;  // posts queue in user space: no limit
    t.needs_registration = false;
    t.device_memory = false;
    return t;
  }
  std::vector<std::byte> local_address() const override { return blob_.encode(); }
  std::unique_ptr<Connection> connect(int peer, std::span<const std::byte> peer_address,
                                      Deadline deadline) override;
  std::unique_ptr<MemoryRegion> register_memory(std::span<std::byte> buf,
                                                MemoryKind kind) override {
    if (kind != MemoryKind::host) {
      throw Error(ErrorCode::invalid_argument,
                  "tcp: only host memory can be registered (sockets cannot read device memory)");
    }
    return std::make_unique<TcpMemoryRegion>(buf);
  }
  ControlPlane& control() noexcept override { return control_; }
  void interrupt() noexcept override { loop_->interrupt(); }
  void wait_any(std::chrono::milliseconds timeout) noexcept override { loop_->wait_any(timeout); }

 private:
  struct Pending {
    UniqueFd fd;
    Deadline deadline;
    std::string from;
    unsigned char hello[kHelloBytes] = {};
    unsigned char proof[kMacBytes] = {};
    std::size_t got = 0;
    bool proof_phase = false;  // the hello was answered; its proof is awaited
    crypto::Nonce nonce{};     // nonce_a
  };
  struct Accepted {
    std::uint32_t index = 0;
    Socket socket;
  };
  struct Stash {
    std::vector<Accepted> sockets;
    std::string address;
    std::optional<Error> error;
    std::vector<std::string> refused;  // why sockets claiming this rank were refused
    std::size_t refused_count = 0;
  };

  std::uint32_t socket_count() const {
    // Control, then data sockets, then (direction-separated) the small-message socket.
    return 1 +
           static_cast<std::uint32_t>(options_.separate_directions ? 2 * sockets_ + 1 : sockets_);
  }
  std::vector<Socket> connect_active(int peer, const AddressBlob& blob, Deadline deadline,
                                     std::string* address);
  void recv_exact(int fd, int peer, const std::string& address, unsigned char* buf,
                  std::size_t size, Deadline deadline, const char* what);
  [[noreturn]] void refused_by(int peer, const std::string& address, const Reply& r,
                               const char* phase);
  UniqueFd connect_one(int peer, const sockaddr_storage& addr, socklen_t len, Deadline start,
                       Deadline deadline);
  std::vector<Socket> accept_passive(int peer, Deadline deadline, std::string* address);
  void service_listener(int timeout_ms);
  void on_hello(Pending& p);
  void on_proof(Pending& p);
  void refuse(Pending& p, HandshakeStatus status, std::uint32_t value, bool after_hello);
  void note_refusal(std::uint32_t from, const std::string& address, std::string why);
  std::unique_ptr<Connection> make_connection(int peer, std::string address,
                                              std::vector<Socket> sockets);
  void check_abort() const;
  void drain_event_fd() const noexcept {
    std::uint64_t count = 0;
    [[maybe_unused]] ssize_t r = ::read(loop_->event_fd(), &count, sizeof(count));
  }

  // Error frames on each peer's control socket (the Loop knows every live connection).
  class Control final : public ControlPlane {
   public:
    explicit Control(TcpTransport& t) : transport_(t) {}
    void report_failure(ErrorCode code, int origin_rank, std::string_view cause) noexcept override {
      transport_.loop_->report_failure(code, origin_rank, -1, cause);
    }
    void report_failure_about(ErrorCode code, int origin_rank, int lost_rank,
                              std::string_view cause) noexcept override {
      transport_.loop_->report_failure(code, origin_rank, lost_rank, cause);
    }

   private:
    TcpTransport& transport_;
  };

  TcpOptions options_;
  Control control_{*this};
  int sockets_ = 0;
  UniqueFd listen_fd_;
  AddressBlob blob_;
  std::shared_ptr<Loop> loop_;
  std::vector<Pending> pending_;
  // Out of descriptors (EMFILE): the listener is not watched until then, so that the
  // level-triggered poll does not spin while the condition lasts.
  Clock::time_point accept_paused_until_{};
  bool accept_pause_logged_ = false;
  std::map<int, Stash> stash_;
  std::vector<bool> connected_;
};

TcpTransport::TcpTransport(const TcpOptions& options) : options_(options) {
  RINGLET_CHECK(options.size >= 1 && options.rank >= 0 && options.rank < options.size, "tcp: rank ",
                options.rank, " is outside a job of size ", options.size);
  RINGLET_CHECK(options.sockets >= 0 && options.sockets <= 64, "tcp: sockets=", options.sockets,
                " is outside 0..64");
  if (options.encrypt && options.secret.empty()) {
    throw Error(ErrorCode::invalid_argument,
                "tcp: encryption (RINGLET_ENCRYPT=1) needs the job's secret (RINGLET_SECRET)");
  }
  sockets_ = options.sockets > 0 ? options.sockets : kTcpDefaultSockets;
  connected_.assign(static_cast<std::size_t>(options.size), false);
  loop_ = std::make_shared<Loop>(options.rank, options.abort_flag, options.quickack,
                                 options.oversubscribed);

  std::string bind = options.bind_address;
  if (bind.empty()) bind = select_interfaces(options.socket_ifname).front().address;
  sockaddr_storage ss{};
  socklen_t len = 0;
  blob_.job_id = options.job_id;
  if (auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
      ::inet_pton(AF_INET, bind.c_str(), &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    len = sizeof(sockaddr_in);
  } else if (auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
             ::inet_pton(AF_INET6, bind.c_str(), &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    len = sizeof(sockaddr_in6);
  } else {
    throw Error(ErrorCode::invalid_argument,
                str_cat("tcp: bind address \"", bind, "\" is not a numeric IPv4 or IPv6 address"));
  }
  listen_fd_.reset(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd_) detail::throw_errno("tcp: socket");
  int one = 1;
  ::setsockopt(listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    detail::throw_errno(str_cat("tcp: bind to ", bind));
  }
  if (::listen(listen_fd_.get(), 512) != 0) detail::throw_errno("tcp: listen");
  socklen_t got = sizeof(ss);
  if (::getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&ss), &got) != 0) {
    detail::throw_errno("tcp: getsockname");
  }
  blob_.family = ss.ss_family;
  if (ss.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    blob_.port = ntohs(sin->sin_port);
    std::memcpy(blob_.addr.data(), &sin->sin_addr, 4);
  } else {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    blob_.port = ntohs(sin6->sin6_port);
    std::memcpy(blob_.addr.data(), &sin6->sin6_addr, 16);
  }
  RINGLET_LOG(info, "tcp: rank ", options.rank, " listens on ", format_address(ss), " with ",
              sockets_, " sockets per peer", options.separate_directions ? " and direction" : "");
}

void TcpTransport::check_abort() const {
  if (options_.abort_flag != nullptr && options_.abort_flag->load(std::memory_order_acquire)) {
    throw Error(ErrorCode::aborted, str_cat("tcp: rank ", options_.rank, " was aborted"),
                {options_.rank});
  }
}

std::unique_ptr<Connection> TcpTransport::connect(int peer, std::span<const std::byte> peer_address,
                                                  Deadline deadline) {
  const int rank = options_.rank;
  RINGLET_CHECK(peer >= 0 && peer < options_.size && peer != rank, "tcp: rank ", rank,
                " cannot connect to peer ", peer, " in a job of size ", options_.size);
  RINGLET_CHECK(!connected_[static_cast<std::size_t>(peer)], "tcp: rank ", rank,
                " is already connected to peer ", peer);
  RINGLET_CHECK(peer_address.size() == kBlobBytes, "tcp: the address of peer ", peer, " has ",
                peer_address.size(), " bytes, expected ", kBlobBytes);
  AddressBlob blob = AddressBlob::decode(peer_address);
  RINGLET_CHECK(blob.magic == kBlobMagic, "tcp: the address of peer ", peer,
                " is not a tcp transport address");
  if (blob.version != kProtocolVersion) {
    throw Error(ErrorCode::mismatch,
                str_cat("tcp: peer ", peer, " speaks tcp protocol version ", blob.version,
                        ", rank ", rank, " speaks version ", kProtocolVersion),
                {rank, peer});
  }
  if (blob.job_id != options_.job_id) {
    throw Error(ErrorCode::mismatch,
                str_cat("tcp: peer ", peer, " belongs to job ", blob.job_id, ", rank ", rank,
                        " to job ", options_.job_id),
                {rank, peer});
  }
  std::string address;
  std::vector<Socket> sockets = rank < peer ? connect_active(peer, blob, deadline, &address)
                                            : accept_passive(peer, deadline, &address);
  connected_[static_cast<std::size_t>(peer)] = true;
  return make_connection(peer, std::move(address), std::move(sockets));
}

void TcpTransport::recv_exact(int fd, int peer, const std::string& address, unsigned char* buf,
                              std::size_t size, Deadline deadline, const char* what) {
  const Deadline start = Clock::now();
  std::size_t got = 0;
  while (got < size) {
    check_abort();
    ssize_t n = ::recv(fd, buf + got, size - got, MSG_DONTWAIT);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      throw Error(ErrorCode::peer_lost,
                  str_cat("tcp: peer ", peer, " (", address, ") closed the connection before its ",
                          what, " (rank ", options_.rank, " connecting)"),
                  {options_.rank, peer});
    }
    if (n < 0 && errno == EINTR) continue;
    auto now = Clock::now();
    if (now >= deadline) {
      throw Error(ErrorCode::timeout,
                  str_cat("tcp: rank ", options_.rank, " waited ", ms_between(start, now),
                          " ms for the ", what, " of peer ", peer, " (", address, ")"),
                  {options_.rank, peer});
    }
    pollfd p[2] = {{fd, POLLIN, 0}, {loop_->event_fd(), POLLIN, 0}};
    if (::poll(p, 2, ms_until(deadline, kMaxPollMs)) > 0 && p[1].revents != 0) drain_event_fd();
  }
}

void TcpTransport::refused_by(int peer, const std::string& address, const Reply& r,
                              const char* phase) {
  const int rank = options_.rank;
  const std::vector<int> ranks = {rank, peer};
  const std::string who = str_cat("tcp: peer ", peer, " (", address, ") refused rank ", rank,
                                  "'s socket at its ", phase, ": ");
  switch (r.status) {
    case HandshakeStatus::version:
      throw Error(ErrorCode::mismatch,
                  str_cat(who, "peer ", peer, " speaks tcp protocol version ", r.value, ", rank ",
                          rank, " speaks version ", kProtocolVersion),
                  ranks);
    case HandshakeStatus::job:
      throw Error(ErrorCode::mismatch,
                  str_cat(who, "it belongs to another job (a stale address in the store?)"), ranks);
    case HandshakeStatus::secret_required:
      throw Error(ErrorCode::transport,
                  str_cat(who, "it requires the job's secret and rank ", rank,
                          " has none (set RINGLET_SECRET or RINGLET_SECRET_FILE on every rank)"),
                  ranks);
    case HandshakeStatus::secret_missing:
      throw Error(ErrorCode::transport,
                  str_cat(who, "it has no secret and rank ", rank,
                          " has one (set RINGLET_SECRET or RINGLET_SECRET_FILE on every rank)"),
                  ranks);
    case HandshakeStatus::auth_failed:
      throw Error(ErrorCode::transport,
                  str_cat(who, "authentication failed (RINGLET_SECRET differs between ranks ", rank,
                          " and ", peer, ")"),
                  ranks);
    case HandshakeStatus::encrypt:
      throw Error(ErrorCode::mismatch,
                  str_cat(who, "RINGLET_ENCRYPT=", r.value, " on rank ", peer,
                          " but RINGLET_ENCRYPT=", options_.encrypt ? 1 : 0, " on rank ", rank),
                  ranks);
    case HandshakeStatus::count:
      throw Error(ErrorCode::mismatch,
                  str_cat(who, "it expects ", r.value, " sockets per peer, rank ", rank, " opens ",
                          socket_count(), " (RINGLET_SOCKETS and the socket layout must agree)"),
                  ranks);
    case HandshakeStatus::conflict:
      throw Error(ErrorCode::mismatch,
                  str_cat(who, "it already has this socket of rank ", rank,
                          " (two processes started as rank ", rank, "?)"),
                  ranks);
    case HandshakeStatus::unexpected:
    default:
      throw Error(ErrorCode::transport,
                  str_cat(who, "unexpected socket (status ", static_cast<std::uint32_t>(r.status),
                          "; is the address in the store stale?)"),
                  ranks);
  }
}

std::vector<Socket> TcpTransport::connect_active(int peer, const AddressBlob& blob,
                                                 Deadline deadline, std::string* address) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (blob.family == AF_INET) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(blob.port);
    std::memcpy(&sin->sin_addr, blob.addr.data(), 4);
    len = sizeof(sockaddr_in);
  } else if (blob.family == AF_INET6) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(blob.port);
    std::memcpy(&sin6->sin6_addr, blob.addr.data(), 16);
    len = sizeof(sockaddr_in6);
  } else {
    throw Error(ErrorCode::invalid_argument,
                str_cat("tcp: the address of peer ", peer, " has address family ", blob.family));
  }
  *address = format_address(ss);
  const Deadline start = Clock::now();
  const std::uint32_t count = socket_count();
  const std::string& secret = options_.secret;
  // Every socket's hello first, then the replies, proofs and verdicts: one round trip in all.
  struct Opening {
    UniqueFd fd;
    unsigned char hello[kHelloBytes] = {};
  };
  std::vector<Opening> open(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    open[i].fd = connect_one(peer, ss, len, start, deadline);
    Hello h;
    h.job_id = options_.job_id;
    h.from_rank = static_cast<std::uint32_t>(options_.rank);
    h.to_rank = static_cast<std::uint32_t>(peer);
    h.index = i;
    h.count = count;
    h.flags = (secret.empty() ? 0 : kFlagSecret) | (options_.encrypt ? kFlagEncrypt : 0);
    h.nonce = crypto::random_nonce();
    h.encode(open[i].hello);
    if (net::send_all(open[i].fd.get(), open[i].hello, kHelloBytes, deadline) !=
        net::SendStatus::ok) {
      check_abort();
      throw Error(ErrorCode::peer_lost,
                  str_cat("tcp: rank ", options_.rank, " could not send its handshake to peer ",
                          peer, " (", *address, ")"),
                  {options_.rank, peer});
    }
  }
  std::vector<crypto::Nonce> nonces(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    unsigned char buf[kReplyBytes];
    recv_exact(open[i].fd.get(), peer, *address, buf, sizeof(buf), deadline, "handshake reply");
    Reply r = Reply::decode(buf);
    if (r.magic != kReplyMagic) {
      throw Error(ErrorCode::transport,
                  str_cat("tcp: ", *address, " (the address of peer ", peer,
                          " in the store) did not answer like a ringlet rank"),
                  {options_.rank, peer});
    }
    if (r.status != HandshakeStatus::ok) refused_by(peer, *address, r, "hello");
    if (!crypto::equal(r.proof, acceptor_proof(secret, open[i].hello, r.nonce))) {
      // Whoever answers does not hold the secret: never send it our proof over its nonce.
      throw Error(ErrorCode::transport,
                  str_cat("tcp: ", *address, " (the address of peer ", peer,
                          " in the store) failed authentication: it does not hold the job's "
                          "secret (RINGLET_SECRET differs between ranks ",
                          options_.rank, " and ", peer, ", or something else answered)"),
                  {options_.rank, peer});
    }
    nonces[i] = r.nonce;
    crypto::Mac proof = connector_proof(secret, open[i].hello, r.nonce);
    if (net::send_all(open[i].fd.get(), proof.data(), proof.size(), deadline) !=
        net::SendStatus::ok) {
      check_abort();
      throw Error(ErrorCode::peer_lost,
                  str_cat("tcp: rank ", options_.rank, " could not send its handshake to peer ",
                          peer, " (", *address, ")"),
                  {options_.rank, peer});
    }
  }
  std::vector<Socket> sockets(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    unsigned char buf[kVerdictBytes];
    recv_exact(open[i].fd.get(), peer, *address, buf, sizeof(buf), deadline, "handshake verdict");
    Verdict v = Verdict::decode(buf);
    if (v.magic != kReplyMagic) {
      throw Error(ErrorCode::transport,
                  str_cat("tcp: peer ", peer, " (", *address, ") sent a malformed verdict"),
                  {options_.rank, peer});
    }
    if (v.status != HandshakeStatus::ok) {
      Reply r;
      r.status = v.status;
      r.value = v.value;
      refused_by(peer, *address, r, "verdict");
    }
    sockets[i].fd = std::move(open[i].fd);
    if (options_.encrypt) sockets[i].keys = derive_socket_keys(secret, open[i].hello, nonces[i]);
  }
  return sockets;
}
UniqueFd TcpTransport::connect_one(int peer, const sockaddr_storage& addr, socklen_t len,
                                   Deadline start, Deadline deadline) {
  auto backoff = std::chrono::milliseconds(5);
  for (;;) {
    check_abort();
    UniqueFd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) detail::throw_errno("tcp: socket");
    tune(fd.get(), options_.buffer_bytes);
    int err = 0;
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
      err = errno;
      while (err == EINPROGRESS || err == EINTR) {
        check_abort();
        if (Clock::now() >= deadline) break;
        pollfd p[2] = {{fd.get(), POLLOUT, 0}, {loop_->event_fd(), POLLIN, 0}};
        if (::poll(p, 2, ms_until(deadline, kMaxPollMs)) > 0) {
          if (p[1].revents != 0) drain_event_fd();
          if (p[0].revents != 0) {
            socklen_t el = sizeof(err);
            ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &el);
          }
        }
      }
    }
    if (err == 0) return fd;
    auto now = Clock::now();
    bool retry = err == ECONNREFUSED || err == EINPROGRESS || err == ETIMEDOUT || err == EAGAIN ||
                 err == ECONNRESET || err == EINTR;
    if (!retry || now >= deadline) {
      if (retry) {
        throw Error(ErrorCode::timeout,
                    str_cat("tcp: rank ", options_.rank, " waited ", ms_between(start, now),
                            " ms to connect to peer ", peer, " (", format_address(addr),
                            "): ", std::strerror(err)),
                    {options_.rank, peer});
      }
      throw Error(ErrorCode::transport,
                  str_cat("tcp: rank ", options_.rank, " cannot connect to peer ", peer, " (",
                          format_address(addr), "): ", std::strerror(err)),
                  {options_.rank, peer});
    }
    pollfd p{loop_->event_fd(), POLLIN, 0};
    if (::poll(&p, 1, std::min<int>(static_cast<int>(backoff.count()), ms_until(deadline))) > 0) {
      drain_event_fd();
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(200));
  }
}

std::vector<Socket> TcpTransport::accept_passive(int peer, Deadline deadline,
                                                 std::string* address) {
  const Deadline start = Clock::now();
  const std::uint32_t count = socket_count();
  for (;;) {
    auto it = stash_.find(peer);
    if (it != stash_.end()) {
      if (it->second.error) {
        Error e = *it->second.error;
        stash_.erase(it);
        throw e;
      }
      if (it->second.sockets.size() == count) {
        std::vector<Accepted> accepted = std::move(it->second.sockets);
        *address = it->second.address;
        stash_.erase(it);
        std::sort(accepted.begin(), accepted.end(),
                  [](const Accepted& a, const Accepted& b) { return a.index < b.index; });
        std::vector<Socket> sockets;
        for (Accepted& a : accepted) sockets.push_back(std::move(a.socket));
        return sockets;
      }
    }
    check_abort();
    auto now = Clock::now();
    if (now >= deadline) {
      std::size_t got = it == stash_.end() ? 0 : it->second.sockets.size();
      std::string refused;
      if (it != stash_.end() && it->second.refused_count > 0) {
        refused = str_cat("; refused ", it->second.refused_count, " socket(s) claiming to be rank ",
                          peer, ":");
        for (const auto& why : it->second.refused) refused += " " + why + ";";
      }
      throw Error(
          ErrorCode::timeout,
          str_cat("tcp: rank ", options_.rank, " waited ", ms_between(start, now), " ms for peer ",
                  peer, " to connect (", got, " of ", count, " sockets arrived", refused, ")"),
          {options_.rank, peer});
    }
    Deadline next = deadline;
    for (const Pending& p : pending_) next = std::min(next, p.deadline);
    service_listener(ms_until(next, kMaxPollMs));
  }
}

void TcpTransport::service_listener(int timeout_ms) {
  std::vector<pollfd> fds;
  fds.push_back({loop_->event_fd(), POLLIN, 0});
  // A full table of pending handshakes leaves new connections in the backlog (pending ones
  // leave by their deadline, not by arrival order); after EMFILE and the like the listener
  // rests for kAcceptPauseMs instead of spinning.
  const bool paused = Clock::now() < accept_paused_until_;
  const bool listen = !paused && pending_.size() < kMaxPendingHandshakes;
  fds.push_back({listen_fd_.get(), static_cast<short>(listen ? POLLIN : 0), 0});
  for (const Pending& p : pending_) fds.push_back({p.fd.get(), POLLIN, 0});
  int n =
      ::poll(fds.data(), fds.size(), paused ? std::min(timeout_ms, kAcceptPauseMs) : timeout_ms);
  if (n < 0 && errno != EINTR) detail::throw_errno("tcp: poll");
  if (n > 0 && fds[0].revents != 0) drain_event_fd();
  // Read what the pending sockets sent; complete messages are handled, broken ones dropped.
  auto now = Clock::now();
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    Pending& p = pending_[i];
    if (n > 0 && fds[i + 2].revents != 0) {
      unsigned char* buf = p.proof_phase ? p.proof : p.hello;
      const std::size_t want = p.proof_phase ? kMacBytes : kHelloBytes;
      ssize_t r = ::recv(p.fd.get(), buf + p.got, want - p.got, MSG_DONTWAIT);
      if (r > 0) {
        p.got += static_cast<std::size_t>(r);
        if (p.got == want) {
          if (p.proof_phase) {
            on_proof(p);
          } else {
            on_hello(p);
          }
        }
      } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        RINGLET_LOG(info, "tcp: dropped ", p.from, ": closed during its handshake");
        if (p.proof_phase) {
          // It gave up on this rank's proof: it holds another secret (or is not a rank).
          Hello h = Hello::decode(p.hello);
          note_refusal(h.from_rank, p.from,
                       "it could not verify this rank's proof (another RINGLET_SECRET?)");
        }
        p.fd.reset();
      }
    }
    if (p.fd && now >= p.deadline) {
      RINGLET_LOG(info, "tcp: dropped ", p.from, ": no complete handshake within ",
                  std::chrono::duration_cast<std::chrono::seconds>(kHandshakeTimeout).count(),
                  " s");
      p.fd.reset();
    }
  }
  std::erase_if(pending_, [](const Pending& p) { return !p.fd; });
  // Accept what waits in the backlog, as far as the table has room.
  while (listen && pending_.size() < kMaxPendingHandshakes) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int fd = ::accept4(listen_fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == EINTR || err == ECONNABORTED) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      // accept(2): Linux passes a new connection's pending network errors to accept; they
      // are that connection's, and the listener is fine: treat them like EAGAIN.
      if (err == ENETDOWN || err == EPROTO || err == ENOPROTOOPT || err == EHOSTDOWN ||
          err == ENONET || err == EHOSTUNREACH || err == EOPNOTSUPP || err == ENETUNREACH ||
          err == ETIMEDOUT || err == ECONNRESET) {
        continue;
      }
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        if (!accept_pause_logged_) {
          RINGLET_LOG(warn, "tcp: accept: ", std::strerror(err), "; rank ", options_.rank,
                      " pauses accepting for ", kAcceptPauseMs,
                      " ms at a time (raise the descriptor limit: ulimit -n)");
          accept_pause_logged_ = true;
        }
        accept_paused_until_ = Clock::now() + std::chrono::milliseconds(kAcceptPauseMs);
        break;
      }
      detail::throw_errno("tcp: accept");
    }
    accept_pause_logged_ = false;
    Pending p;
    p.fd.reset(fd);
    p.deadline = Clock::now() + kHandshakeTimeout;
    p.from = format_address(ss);
    pending_.push_back(std::move(p));
  }
}

void TcpTransport::note_refusal(std::uint32_t from, const std::string& address, std::string why) {
  if (from >= static_cast<std::uint32_t>(options_.rank)) return;
  Stash& s = stash_[static_cast<int>(from)];
  ++s.refused_count;
  if (s.refused.size() < kMaxRefusalNotes) s.refused.push_back(str_cat(address, ": ", why));
}

void TcpTransport::refuse(Pending& p, HandshakeStatus status, std::uint32_t value,
                          bool after_hello) {
  unsigned char buf[kReplyBytes] = {};
  std::size_t size = 0;
  if (after_hello) {
    Reply r;
    r.status = status;
    r.value = value;
    r.encode(buf);
    size = kReplyBytes;
  } else {
    Verdict v;
    v.status = status;
    v.value = value;
    v.encode(buf);
    size = kVerdictBytes;
  }
  // Best effort, never blocking: the socket is closed right after.
  [[maybe_unused]] ssize_t n = ::send(p.fd.get(), buf, size, MSG_NOSIGNAL | MSG_DONTWAIT);
  p.fd.reset();
}

void TcpTransport::on_hello(Pending& p) {
  Hello h = Hello::decode(p.hello);
  const int rank = options_.rank;
  if (h.magic != kHandshakeMagic) {
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": not a ringlet handshake");
    p.fd.reset();
    return;
  }
  // Nothing in a hello is authenticated yet: whatever is wrong with it, the socket is only
  // dropped (with a reply that tells a real peer why), and never fails this rank.
  const bool ours = h.job_id == options_.job_id && h.to_rank == static_cast<std::uint32_t>(rank) &&
                    h.from_rank < h.to_rank;
  if (h.version != kProtocolVersion) {
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": tcp protocol version ", h.version, ", not ",
                kProtocolVersion);
    if (ours) note_refusal(h.from_rank, p.from, str_cat("tcp protocol version ", h.version));
    return refuse(p, HandshakeStatus::version, kProtocolVersion, true);
  }
  if (h.job_id != options_.job_id) {
    // The job ids stay out of the log: until the handshake is authenticated, the id is what
    // a connection must present.
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": its handshake names another job");
    return refuse(p, HandshakeStatus::job, 0, true);
  }
  if (!ours || connected_[h.from_rank]) {
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": unexpected socket from rank ", h.from_rank,
                " to rank ", h.to_rank);
    return refuse(p, HandshakeStatus::unexpected, 0, true);
  }
  const bool theirs = (h.flags & kFlagSecret) != 0;
  const bool mine = !options_.secret.empty();
  if (theirs != mine) {
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": ", mine ? "no secret" : "a secret",
                " on the connecting side");
    note_refusal(h.from_rank, p.from,
                 mine ? "it has no secret (RINGLET_SECRET)" : "it has a secret and this rank none");
    return refuse(p, mine ? HandshakeStatus::secret_required : HandshakeStatus::secret_missing, 0,
                  true);
  }
  Reply r;
  r.nonce = crypto::random_nonce();
  r.proof = acceptor_proof(options_.secret, p.hello, r.nonce);
  unsigned char buf[kReplyBytes];
  r.encode(buf);
  if (::send(p.fd.get(), buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT) !=
      static_cast<ssize_t>(sizeof(buf))) {
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": could not answer its hello");
    p.fd.reset();
    return;
  }
  p.nonce = r.nonce;
  p.proof_phase = true;
  p.got = 0;
}

void TcpTransport::on_proof(Pending& p) {
  Hello h = Hello::decode(p.hello);
  const auto from = static_cast<int>(h.from_rank);
  const int rank = options_.rank;
  crypto::Mac proof{};
  std::copy(std::begin(p.proof), std::end(p.proof), proof.begin());
  if (!crypto::equal(proof, connector_proof(options_.secret, p.hello, p.nonce))) {
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": authentication failed (claimed rank ", from, ")");
    note_refusal(h.from_rank, p.from, "authentication failed (another RINGLET_SECRET?)");
    return refuse(p, HandshakeStatus::auth_failed, 0, false);
  }
  // Authenticated (or, without a secret, as trusted as anything here): from now on what it
  // says fails this rank's connect loudly.
  Stash& s = stash_[from];
  if (h.count != socket_count()) {
    s.error = Error(
        ErrorCode::mismatch,
        str_cat("tcp: peer ", from, " opens ", h.count, " sockets per peer, rank ", rank,
                " expects ", socket_count(), " (RINGLET_SOCKETS and the socket layout must agree)"),
        {rank, from});
    return refuse(p, HandshakeStatus::count, socket_count(), false);
  }
  const bool encrypt = (h.flags & kFlagEncrypt) != 0;
  if (encrypt != options_.encrypt) {
    s.error = Error(ErrorCode::mismatch,
                    str_cat("tcp: RINGLET_ENCRYPT=", encrypt ? 1 : 0, " on rank ", from,
                            " but RINGLET_ENCRYPT=", options_.encrypt ? 1 : 0, " on rank ", rank),
                    {rank, from});
    return refuse(p, HandshakeStatus::encrypt, options_.encrypt ? 1 : 0, false);
  }
  if (h.index >= h.count) {
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": bad socket index ", h.index);
    return refuse(p, HandshakeStatus::unexpected, 0, false);
  }
  bool duplicate = std::any_of(s.sockets.begin(), s.sockets.end(),
                               [&](const Accepted& a) { return a.index == h.index; });
  if (duplicate || connected_[h.from_rank]) {
    RINGLET_LOG(warn, "tcp: rank ", from, " opened socket ", h.index, " to rank ", rank,
                " twice (second from ", p.from, ")");
    if (!connected_[h.from_rank]) {
      s.error = Error(ErrorCode::mismatch,
                      str_cat("tcp: rank ", from, " opened its socket ", h.index, " to rank ", rank,
                              " twice (from ", s.address, " and ", p.from,
                              "): two processes started as rank ", from, "?"),
                      {rank, from});
    }
    return refuse(p, HandshakeStatus::conflict, 0, false);
  }
  Verdict v;
  unsigned char buf[kVerdictBytes];
  v.encode(buf);
  if (::send(p.fd.get(), buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT) !=
      static_cast<ssize_t>(sizeof(buf))) {
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": could not send its verdict");
    p.fd.reset();
    return;
  }
  Accepted a;
  a.index = h.index;
  a.socket.fd = std::move(p.fd);
  if (options_.encrypt) a.socket.keys = derive_socket_keys(options_.secret, p.hello, p.nonce);
  tune(a.socket.fd.get(), options_.buffer_bytes);
  if (s.address.empty()) s.address = p.from;
  s.sockets.push_back(std::move(a));
}

std::unique_ptr<Connection> TcpTransport::make_connection(int peer, std::string address,
                                                          std::vector<Socket> fds) {
  auto channel = std::make_unique<Channel>();
  channel->peer = peer;
  channel->address = std::move(address);
  const bool lower = options_.rank < peer;
  const auto k = static_cast<std::size_t>(sockets_);
  for (std::size_t i = 0; i < fds.size(); ++i) {
    auto lane = std::make_unique<Lane>();
    lane->fd = std::move(fds[i].fd);
    if (fds[i].keys) {
      // The lower rank connected: its frames go connector to acceptor.
      const SocketKeys& k = *fds[i].keys;
      lane->sealer =
          std::make_unique<FrameCipher>(lower ? k.connector_to_acceptor : k.acceptor_to_connector);
      lane->opener =
          std::make_unique<FrameCipher>(lower ? k.acceptor_to_connector : k.connector_to_acceptor);
    }
    if (i == 0) {
      lane->control = true;
      channel->control = lane.get();
    } else if (options_.separate_directions && i == 2 * k + 1) {
      lane->reads = lane->writes = true;
      channel->small = lane.get();
      channel->lanes.push_back(std::move(lane));
      continue;
    } else if (!options_.separate_directions) {
      lane->reads = lane->writes = true;
    } else {
      // Sockets 1..k carry data from the lower rank to the higher, k+1..2k the other way.
      lane->writes = (i <= k) == lower;
      lane->reads = !lane->writes;
    }
    if (lane->writes) channel->send_lanes.push_back(lane.get());
    if (lane->reads) channel->recv_lanes.push_back(lane.get());
    channel->lanes.push_back(std::move(lane));
  }
  return std::make_unique<TcpConnection>(loop_, std::move(channel));
}

}  // namespace
}  // namespace tcp

std::unique_ptr<Transport> make_tcp_transport(const TcpOptions& options) {
  return std::make_unique<tcp::TcpTransport>(options);
}

}  // namespace ringlet::transport
