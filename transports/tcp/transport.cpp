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
#include "src/common/log.hpp"
#include "src/common/socket.hpp"
#include "transports/tcp/connection.hpp"
#include "transports/tcp/loop.hpp"
#include "transports/tcp/memory_region.hpp"
#include "transports/tcp/wire.hpp"

namespace ringlet::transport {
namespace tcp {
namespace {

// How long an accepted socket may take to deliver its handshake before it is dropped.
constexpr auto kHandshakeTimeout = std::chrono::seconds(3);
// Accepted sockets still owing a handshake; the oldest is dropped beyond this.
constexpr std::size_t kMaxPendingHandshakes = 128;

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

 private:
  struct Pending {
    UniqueFd fd;
    Deadline deadline;
    std::string from;
    unsigned char buf[kHandshakeBytes] = {};
    std::size_t got = 0;
  };
  struct Accepted {
    std::uint32_t index = 0;
    UniqueFd fd;
  };
  struct Stash {
    std::vector<Accepted> sockets;
    std::string address;
    std::optional<Error> error;
  };

  std::uint32_t socket_count() const {
    // Control, then data sockets, then (direction-separated) the small-message socket.
    return 1 +
           static_cast<std::uint32_t>(options_.separate_directions ? 2 * sockets_ + 1 : sockets_);
  }
  std::vector<UniqueFd> connect_active(int peer, const AddressBlob& blob, Deadline deadline,
                                       std::string* address);
  UniqueFd connect_one(int peer, const sockaddr_storage& addr, socklen_t len, Deadline start,
                       Deadline deadline);
  std::vector<UniqueFd> accept_passive(int peer, Deadline deadline, std::string* address);
  void service_listener(int timeout_ms);
  void on_handshake(Pending& p);
  std::unique_ptr<Connection> make_connection(int peer, std::string address,
                                              std::vector<UniqueFd> fds);
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
      transport_.loop_->report_failure(code, origin_rank, cause);
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
  std::vector<UniqueFd> fds = rank < peer ? connect_active(peer, blob, deadline, &address)
                                          : accept_passive(peer, deadline, &address);
  connected_[static_cast<std::size_t>(peer)] = true;
  return make_connection(peer, std::move(address), std::move(fds));
}

std::vector<UniqueFd> TcpTransport::connect_active(int peer, const AddressBlob& blob,
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
  std::vector<UniqueFd> fds;
  const std::uint32_t count = socket_count();
  for (std::uint32_t i = 0; i < count; ++i) {
    UniqueFd fd = connect_one(peer, ss, len, start, deadline);
    Handshake h;
    h.job_id = options_.job_id;
    h.from_rank = static_cast<std::uint32_t>(options_.rank);
    h.to_rank = static_cast<std::uint32_t>(peer);
    h.index = i;
    h.count = count;
    unsigned char buf[kHandshakeBytes];
    h.encode(buf);
    if (net::send_all(fd.get(), buf, sizeof(buf), deadline) != net::SendStatus::ok) {
      check_abort();
      throw Error(ErrorCode::peer_lost,
                  str_cat("tcp: rank ", options_.rank, " could not send its handshake to peer ",
                          peer, " (", *address, ")"),
                  {options_.rank, peer});
    }
    fds.push_back(std::move(fd));
  }
  return fds;
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

std::vector<UniqueFd> TcpTransport::accept_passive(int peer, Deadline deadline,
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
        std::vector<UniqueFd> fds;
        for (Accepted& a : accepted) fds.push_back(std::move(a.fd));
        return fds;
      }
    }
    check_abort();
    auto now = Clock::now();
    if (now >= deadline) {
      std::size_t got = it == stash_.end() ? 0 : it->second.sockets.size();
      throw Error(
          ErrorCode::timeout,
          str_cat("tcp: rank ", options_.rank, " waited ", ms_between(start, now), " ms for peer ",
                  peer, " to connect (", got, " of ", count, " sockets arrived)"),
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
  const bool listen = Clock::now() >= accept_paused_until_;
  fds.push_back({listen_fd_.get(), static_cast<short>(listen ? POLLIN : 0), 0});
  for (const Pending& p : pending_) fds.push_back({p.fd.get(), POLLIN, 0});
  int n =
      ::poll(fds.data(), fds.size(), listen ? timeout_ms : std::min(timeout_ms, kAcceptPauseMs));
  if (n < 0 && errno != EINTR) detail::throw_errno("tcp: poll");
  if (n > 0 && fds[0].revents != 0) drain_event_fd();
  // Read what the pending sockets sent; complete handshakes are handled, broken ones dropped.
  auto now = Clock::now();
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    Pending& p = pending_[i];
    if (n > 0 && fds[i + 2].revents != 0) {
      ssize_t r = ::recv(p.fd.get(), p.buf + p.got, kHandshakeBytes - p.got, MSG_DONTWAIT);
      if (r > 0) {
        p.got += static_cast<std::size_t>(r);
        if (p.got == kHandshakeBytes) on_handshake(p);
      } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        RINGLET_LOG(info, "tcp: dropped ", p.from, ": closed before its handshake");
        p.fd.reset();
      }
    } else if (now >= p.deadline) {
      RINGLET_LOG(info, "tcp: dropped ", p.from, ": no handshake within ",
                  std::chrono::duration_cast<std::chrono::seconds>(kHandshakeTimeout).count(),
                  " s");
      p.fd.reset();
    }
  }
  std::erase_if(pending_, [](const Pending& p) { return !p.fd; });
  // Accept every connection waiting in the backlog.
  for (; listen;) {
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
    if (pending_.size() >= kMaxPendingHandshakes) {
      RINGLET_LOG(info, "tcp: dropped ", pending_.front().from, ": too many pending handshakes");
      pending_.erase(pending_.begin());
    }
    Pending p;
    p.fd.reset(fd);
    p.deadline = Clock::now() + kHandshakeTimeout;
    p.from = format_address(ss);
    pending_.push_back(std::move(p));
  }
}

void TcpTransport::on_handshake(Pending& p) {
  Handshake h = Handshake::decode(p.buf);
  UniqueFd fd = std::move(p.fd);
  const auto from = static_cast<int>(h.from_rank);
  const int rank = options_.rank;
  if (h.magic != kHandshakeMagic) {
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": not a ringlet handshake");
    return;
  }
  if (h.job_id != options_.job_id) {
    // The job ids stay out of the log: until the handshake is authenticated, the id is what
    // a connection must present.
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": its handshake names another job");
    return;
  }
  if (h.to_rank != static_cast<std::uint32_t>(rank) || h.from_rank >= h.to_rank ||
      connected_[h.from_rank]) {
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": unexpected socket from rank ", h.from_rank,
                " to rank ", h.to_rank);
    return;
  }
  Stash& s = stash_[from];
  if (h.version != kProtocolVersion) {
    s.error = Error(ErrorCode::mismatch,
                    str_cat("tcp: peer ", from, " speaks tcp protocol version ", h.version,
                            ", rank ", rank, " speaks version ", kProtocolVersion),
                    {rank, from});
    return;
  }
  if (h.count != socket_count()) {
    s.error = Error(
        ErrorCode::mismatch,
        str_cat("tcp: peer ", from, " opens ", h.count, " sockets per peer, rank ", rank,
                " expects ", socket_count(), " (RINGLET_SOCKETS and the socket layout must agree)"),
        {rank, from});
    return;
  }
  bool duplicate = std::any_of(s.sockets.begin(), s.sockets.end(),
                               [&](const Accepted& a) { return a.index == h.index; });
  if (h.index >= h.count || duplicate) {
    RINGLET_LOG(info, "tcp: dropped ", p.from, ": bad socket index ", h.index);
    return;
  }
  tune(fd.get(), options_.buffer_bytes);
  if (s.address.empty()) s.address = p.from;
  s.sockets.push_back({h.index, std::move(fd)});
}

std::unique_ptr<Connection> TcpTransport::make_connection(int peer, std::string address,
                                                          std::vector<UniqueFd> fds) {
  auto channel = std::make_unique<Channel>();
  channel->peer = peer;
  channel->address = std::move(address);
  const bool lower = options_.rank < peer;
  const auto k = static_cast<std::size_t>(sockets_);
  for (std::size_t i = 0; i < fds.size(); ++i) {
    auto lane = std::make_unique<Lane>();
    lane->fd = std::move(fds[i]);
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
