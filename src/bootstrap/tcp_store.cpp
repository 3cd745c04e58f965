// SPDX-License-Identifier: Apache-2.0
// TcpStore: the rendezvous store served by rank 0 over TCP, and its client.
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <thread>
#include <unordered_map>

#include "src/bootstrap/store.hpp"
#include "src/bootstrap/store_detail.hpp"
#include "src/bootstrap/store_value.hpp"
#include "src/bootstrap/tcp_store_protocol.hpp"
#include "src/common/check.hpp"
#include "src/common/crypto.hpp"
#include "src/common/log.hpp"
#include "src/common/net_address.hpp"
#include "src/common/socket.hpp"
#include "src/common/unique_fd.hpp"

namespace ringlet::bootstrap {

namespace detail {
namespace {
const unsigned char* u(std::span<const std::byte> b) {
  return reinterpret_cast<const unsigned char*>(b.data());
}
unsigned char* u(std::span<std::byte> b) { return reinterpret_cast<unsigned char*>(b.data()); }
}  // namespace

StoreKeys derive_store_keys(std::string_view secret, std::span<const std::byte> hello,
                            std::span<const std::byte> server_nonce) {
  std::vector<unsigned char> salt(u(hello), u(hello) + hello.size());
  salt.insert(salt.end(), u(server_nonce), u(server_nonce) + server_nonce.size());
  return {crypto::hkdf_sha256(secret, salt, kSealInfoClient),
          crypto::hkdf_sha256(secret, salt, kSealInfoServer)};
}

std::vector<std::byte> FrameSealer::seal(std::span<const std::byte> header,
                                         std::span<const std::byte> body) {
  std::vector<std::byte> out(kSealedHeaderBytes + body.size() + kSealTagBytes);
  std::array<unsigned char, kSealTagBytes> tag{};
  unsigned char* o = u(std::span(out));
  aead_.seal(counter_++, {}, {u(header), kFrameHeaderBytes}, o, tag);
  std::memcpy(o + kFrameHeaderBytes, tag.data(), tag.size());
  aead_.seal(counter_++, {}, {u(body), body.size()}, o + kSealedHeaderBytes, tag);
  std::memcpy(o + kSealedHeaderBytes + body.size(), tag.data(), tag.size());
  return out;
}

bool FrameSealer::open_header(std::span<std::byte> sealed_header) {
  if (sealed_header.size() != kSealedHeaderBytes) return false;
  std::array<unsigned char, kSealTagBytes> tag{};
  std::memcpy(tag.data(), u(sealed_header) + kFrameHeaderBytes, tag.size());
  return aead_.open(counter_++, {}, {u(sealed_header), kFrameHeaderBytes}, u(sealed_header), tag);
}

bool FrameSealer::open_body(std::span<std::byte> body_and_tag) {
  if (body_and_tag.size() < kSealTagBytes) return false;
  const std::size_t n = body_and_tag.size() - kSealTagBytes;
  std::array<unsigned char, kSealTagBytes> tag{};
  std::memcpy(tag.data(), u(body_and_tag) + n, tag.size());
  return aead_.open(counter_++, {}, {u(body_and_tag), n}, u(body_and_tag), tag);
}

std::vector<std::byte> encode_owned_value(std::string_view claim_key,
                                          std::span<const std::byte> token,
                                          std::span<const std::byte> value) {
  std::vector<std::byte> out(8 + claim_key.size() + token.size() + value.size());
  std::byte* p = out.data();
  put_u32(p, static_cast<std::uint32_t>(claim_key.size()));
  if (!claim_key.empty()) std::memcpy(p + 4, claim_key.data(), claim_key.size());
  p += 4 + claim_key.size();
  put_u32(p, static_cast<std::uint32_t>(token.size()));
  if (!token.empty()) std::memcpy(p + 4, token.data(), token.size());
  p += 4 + token.size();
  if (!value.empty()) std::memcpy(p, value.data(), value.size());
  return out;
}

std::optional<OwnedValue> decode_owned_value(std::span<const std::byte> bytes) {
  OwnedValue v;
  if (bytes.size() < 4) return std::nullopt;
  const std::size_t claim_len = get_u32(bytes.data());
  bytes = bytes.subspan(4);
  if (claim_len > kMaxKeyBytes || bytes.size() < claim_len + 4) return std::nullopt;
  v.claim_key = {reinterpret_cast<const char*>(bytes.data()), claim_len};
  bytes = bytes.subspan(claim_len);
  const std::size_t token_len = get_u32(bytes.data());
  bytes = bytes.subspan(4);
  if (token_len > kMaxClaimTokenBytes || bytes.size() < token_len) return std::nullopt;
  v.token = bytes.first(token_len);
  v.value = bytes.subspan(token_len);
  return v;
}

}  // namespace detail

namespace {

using detail::AuthStatus;
using detail::get_u16;
using detail::get_u32;
using detail::get_u64;
using detail::HelloStatus;
using detail::kAuthFailuresKey;
using detail::kAuthVerdictBytes;
using detail::kFrameHeaderBytes;
using detail::kHelloBytes;
using detail::kHelloFlagSecret;
using detail::kHelloPrefixBytes;
using detail::kHelloReplyBytes;
using detail::kMaxJobIdentityBytes;
using detail::kMaxKeyBytes;
using detail::kMaxValueBytes;
using detail::kNonceBytes;
using detail::kProofBytes;
using detail::kSealedHeaderBytes;
using detail::kSealTagBytes;
using detail::kStoreMagic0;
using detail::kStoreMagic1;
using detail::kStoreProtocolVersion;
using detail::put_u16;
using detail::put_u32;
using detail::put_u64;
using detail::StoreOp;
using detail::StoreStatus;
using net::join_host_port;
using net::numeric_host;
using net::port_of;
using net::set_nodelay;
using net::strip_brackets;
using std::chrono::milliseconds;

constexpr auto kHandshakeTimeout = std::chrono::seconds(30);      // server drops silent clients
constexpr auto kRequestTimeout = std::chrono::seconds(60);        // set/add/remove round trip
constexpr auto kCancelGrace = std::chrono::seconds(10);           // reply to a cancelled get
constexpr auto kReconnectWindow = std::chrono::seconds(10);       // extra connections
constexpr auto kClosedReconnectWindow = std::chrono::seconds(2);  // after a pooled one closed
constexpr std::size_t kMaxClients = 4096;
constexpr std::size_t kMaxIdleConnections = 8;
constexpr std::size_t kOutputHighWater = std::size_t{1} << 20;
// A pooled connection that rested longer than this is closed rather than reused: the server
// drops greeted clients idle for TcpStoreLimits::idle_timeout (120 s by default).
constexpr auto kPoolRest = std::chrono::seconds(30);
constexpr auto kResolveAgain = std::chrono::seconds(5);

struct AddrInfoDeleter {
  void operator()(addrinfo* ai) const noexcept { ::freeaddrinfo(ai); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

// Resolves host:port; on failure returns null and sets `error`.
AddrInfoPtr resolve(const std::string& host, int port, bool passive, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* out = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &out);
  if (rc != 0) {
    error = rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc);
    return nullptr;
  }
  return AddrInfoPtr(out);
}

// Fills `out` from the kernel's random source (getrandom(2); blocks only before the pool is
// initialised at boot).
void fill_random(std::span<std::byte> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      ringlet::detail::throw_errno("tcp store: getrandom");
    }
    done += static_cast<std::size_t>(n);
  }
}

// The two proofs of the store handshake (tcp_store_protocol.hpp), over the client's whole
// hello and the server's nonce.
crypto::Mac store_proof(std::string_view label, std::string_view secret,
                        std::span<const std::byte> hello, std::span<const std::byte> server_nonce) {
  auto u = [](std::span<const std::byte> b) {
    return std::span<const unsigned char>(reinterpret_cast<const unsigned char*>(b.data()),
                                          b.size());
  };
  return crypto::hmac_sha256(secret, {crypto::bytes(label), u(hello), u(server_nonce)});
}
constexpr std::string_view kClientProofLabel = "ringlet store v2 client";
constexpr std::string_view kServerProofLabel = "ringlet store v2 server";

// Waits until `fd` is ready for `events` or the deadline passes; returns whether it is ready.
bool wait_fd(int fd, short events, Deadline deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int timeout = ms_until(deadline);
    int rc = ::poll(&p, 1, timeout);
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) ringlet::detail::throw_errno("tcp store: poll");
    if (rc == 0 && Clock::now() >= deadline) return false;
  }
}

// ---------------------------------------------------------------------------------------
// Server

// A stored value, shared between data_ and the replies that send it, so that N clients that
// get one 64 MiB value cost one copy, not N. Its bytes count against the server's budget
// until the last reference goes (a value replaced while a reply still sends it included).
struct StoredValue {
  std::vector<std::byte> bytes;
  std::size_t* budget = nullptr;  // the server's pinned_bytes_
  StoredValue(std::span<const std::byte> v, std::size_t* b) : bytes(v.begin(), v.end()), budget(b) {
    *budget += bytes.size();
  }
  StoredValue(const StoredValue&) = delete;
  StoredValue& operator=(const StoredValue&) = delete;
  ~StoredValue() { *budget -= bytes.size(); }
};
using ValuePtr = std::shared_ptr<const StoredValue>;

// Owned by the rank-0 TcpStore client through a shared_ptr; lives as long as that store.
// All state below the constructor is touched only by thread_, which runs a poll() loop over
// the listener, the clients and wake_ (an eventfd written by the destructor). No exception
// leaves thread_: one raised while serving a client drops that client, and one raised
// anywhere else is logged and the loop goes on.
class TcpStoreServer {
 public:
  TcpStoreServer(const std::string& host, int port, std::string job_identity, std::string secret,
                 const TcpStoreLimits& limits)
      : limits_(limits), job_identity_(std::move(job_identity)), secret_(std::move(secret)) {
    std::string error;
    AddrInfoPtr addrs = resolve(host, port, true, error);
    if (!addrs) {
      throw Error(ErrorCode::transport,
                  str_cat("tcp store: cannot resolve ", join_host_port(host, port),
                          " to serve the rendezvous store: ", error));
    }
    int last_errno = 0;
    for (addrinfo* ai = addrs.get(); ai != nullptr; ai = ai->ai_next) {
      UniqueFd fd(
          ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
      if (!fd) {
        last_errno = errno;
        continue;
      }
      int one = 1;
      ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 ||
          ::listen(fd.get(), SOMAXCONN) != 0) {
        last_errno = errno;
        continue;
      }
      listener_ = std::move(fd);
      break;
    }
    if (!listener_) {
      ringlet::detail::throw_errno(
          str_cat("tcp store: cannot serve the rendezvous store on ", join_host_port(host, port)),
          last_errno);
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
    port_ = port_of(bound);
    wake_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!wake_) ringlet::detail::throw_errno("tcp store: eventfd");
    thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
  }

  ~TcpStoreServer() {
    thread_.request_stop();
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
    if (thread_.joinable()) thread_.join();
  }

  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  int port() const noexcept { return port_; }

 private:
  // Queued output: reply headers, and values shared with data_.
  struct Segment {
    std::vector<std::byte> bytes;  // a header (or a small reply)
    ValuePtr value;                // or a stored value, sent after `bytes`
    std::size_t off = 0;           // sent so far, over bytes then value
    std::size_t size() const { return bytes.size() + (value ? value->bytes.size() : 0); }
  };

  struct Client {
    UniqueFd fd;
    std::vector<std::byte> in;
    std::size_t in_off = 0;
    std::deque<Segment> out;
    std::size_t out_bytes = 0;  // queued, not yet sent
    bool greeted = false;
    bool authenticating = false;   // hello answered; the client's proof is awaited
    std::vector<std::byte> hello;  // the client's whole hello, which both proofs cover
    std::string peer;              // the client's address, for the failure record
    std::array<std::byte, kNonceBytes> client_nonce{};
    std::array<std::byte, kNonceBytes> server_nonce{};
    // With a secret, once authenticated: replies are sealed, requests opened.
    std::unique_ptr<detail::FrameSealer> sealer;
    std::unique_ptr<detail::FrameSealer> opener;
    bool header_open = false;  // the next request's header is opened (in place) already
    bool close_after_flush = false;
    bool dead = false;
    bool waiting = false;  // a get is pending on waiting_key
    std::string waiting_key;
    Clock::time_point accepted;
    Clock::time_point last_active;  // last byte read or written
  };

  void run(const std::stop_token& stop) {
    std::vector<pollfd> fds;
    std::vector<std::uint64_t> ids;
    while (!stop.stop_requested()) {
      try {
        if (!serve_once(fds, ids)) break;
      } catch (const std::exception& e) {
        // Only allocation of the poll set can get here (clients throw inside serve_client).
        RINGLET_LOG(warn, "tcp store server: ", e.what(), "; retrying");
        std::this_thread::sleep_for(milliseconds(10));
      }
    }
  }

  // One poll round; false when the destructor asked the thread to stop.
  bool serve_once(std::vector<pollfd>& fds, std::vector<std::uint64_t>& ids) {
    fds.clear();
    ids.clear();
    const auto now = Clock::now();
    const bool listen = now >= accept_paused_until_;
    fds.push_back({wake_.get(), POLLIN, 0});
    fds.push_back({listener_.get(), static_cast<short>(listen ? POLLIN : 0), 0});
    for (auto& [id, c] : clients_) {
      short events = 0;
      if (c.out_bytes > 0) events |= POLLOUT;
      if (!c.close_after_flush && c.out_bytes < kOutputHighWater && may_read(c)) events |= POLLIN;
      fds.push_back({c.fd.get(), events, 0});
      ids.push_back(id);
    }
    int timeout = listen ? 1000 : 100;
    int rc = ::poll(fds.data(), fds.size(), timeout);
    if (rc < 0) {
      if (errno == EINTR) return true;
      RINGLET_LOG(warn, "tcp store server: poll failed: ", std::strerror(errno));
      std::this_thread::sleep_for(milliseconds(10));
      return true;
    }
    if (fds[0].revents != 0) return false;
    if (fds[1].revents & POLLIN) accept_clients();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      auto it = clients_.find(ids[i]);
      if (it == clients_.end() || it->second.dead) continue;
      serve_client(it->second, ids[i], fds[i + 2].revents);
    }
    expire_clients();
    sweep();
    return true;
  }

  void serve_client(Client& c, std::uint64_t id, short re) {
    try {
      if (re & POLLOUT) flush(c);
      if (!c.dead && (re & (POLLIN | POLLHUP | POLLERR))) {
        read_input(c);
        if (!c.dead) process(id);
      }
    } catch (const std::exception& e) {
      // Out of memory (or any other failure) while serving this client: drop it and free
      // what it holds; the store and the other clients go on.
      RINGLET_LOG(warn, "tcp store server: dropping a client: ", e.what());
      drop(c);
    }
  }

  // Whether to read more from `c`: not while the input of all clients is over its budget,
  // unless this client has nothing buffered (small requests always get through).
  bool may_read(const Client& c) const {
    return input_bytes_ <= limits_.max_input_bytes || c.in.size() == c.in_off;
  }

  void accept_clients() {
    for (;;) {
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const int err = errno;
        if (err == EINTR || err == ECONNABORTED) continue;
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
          // Out of descriptors or memory: the level-triggered listener would wake the loop
          // at once, so stop watching it for a while instead of spinning.
          if (!accept_paused_logged_) {
            RINGLET_LOG(warn, "tcp store server: accept: ", std::strerror(err),
                        "; pausing new connections for ", kAcceptBackoff.count(), " ms (",
                        clients_.size(), " clients connected)");
            accept_paused_logged_ = true;
          }
          accept_paused_until_ = Clock::now() + kAcceptBackoff;
        }
        return;  // EAGAIN: all accepted; network errors of one connection: the next wake-up
      }
      accept_paused_logged_ = false;
      if (clients_.size() >= kMaxClients) {
        ::close(fd);
        continue;
      }
      UniqueFd owned(fd);
      set_nodelay(fd);
      Client c;
      c.fd = std::move(owned);
      c.accepted = c.last_active = Clock::now();
      clients_.emplace(next_id_++, std::move(c));
    }
  }

  void drop(Client& c) noexcept {
    if (c.dead) return;
    if (c.waiting) unwait(c);
    c.dead = true;
    c.fd.reset();
    input_bytes_ -= c.in.size();
    std::vector<std::byte>().swap(c.in);
    c.in_off = 0;
    c.out.clear();
    c.out_bytes = 0;
  }

  void sweep() {
    std::erase_if(clients_, [](const auto& kv) { return kv.second.dead; });
  }

  // Drops clients that never greeted within the handshake timeout, and greeted ones that
  // neither sent nor received anything for the idle timeout while no get of theirs waits.
  void expire_clients() {
    auto now = Clock::now();
    for (auto& [id, c] : clients_) {
      if (c.dead) continue;
      if (!c.greeted && now - c.accepted > kHandshakeTimeout) {
        drop(c);
      } else if (c.greeted && !c.waiting && now - c.last_active > limits_.idle_timeout) {
        drop(c);
      }
    }
  }

  void unwait(Client& c) noexcept {
    auto it = waiters_.find(c.waiting_key);
    if (it != waiters_.end()) {
      std::erase(it->second, &c);
      if (it->second.empty()) waiters_.erase(it);
    }
    c.waiting = false;
    c.waiting_key.clear();
  }

  void flush(Client& c) {
    while (!c.out.empty()) {
      Segment& s = c.out.front();
      if (s.off == s.size()) {
        c.out.pop_front();
        continue;
      }
      const std::byte* p;
      std::size_t n;
      if (s.off < s.bytes.size()) {
        p = s.bytes.data() + s.off;
        n = s.bytes.size() - s.off;
      } else {
        std::size_t v = s.off - s.bytes.size();
        p = s.value->bytes.data() + v;
        n = s.value->bytes.size() - v;
      }
      ssize_t sent = n == 0 ? 0 : ::send(c.fd.get(), p, n, MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        drop(c);
        return;
      }
      c.last_active = Clock::now();
      s.off += static_cast<std::size_t>(sent);
      c.out_bytes -= static_cast<std::size_t>(sent);
      if (s.off == s.size()) c.out.pop_front();
    }
    if (c.close_after_flush) drop(c);
  }

  void read_input(Client& c) {
    std::byte buf[65536];
    for (;;) {
      ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        drop(c);
        return;
      }
      if (n == 0) {
        drop(c);
        return;
      }
      c.last_active = Clock::now();
      c.in.insert(c.in.end(), buf, buf + n);
      input_bytes_ += static_cast<std::size_t>(n);
      // Never buffer more than one largest frame plus one read: a client that sends more
      // than that without reading its replies is broken or hostile.
      if (c.in.size() - c.in_off > kFrameHeaderBytes + kMaxKeyBytes + kMaxValueBytes + sizeof buf) {
        drop(c);
        return;
      }
      if (static_cast<std::size_t>(n) < sizeof buf || !may_read(c)) return;
    }
  }

  void queue(Client& c, std::span<const std::byte> bytes, ValuePtr value = nullptr) {
    if (bytes.empty() && (!value || value->bytes.empty())) return;  // flush() needs bytes
    Segment s;
    s.bytes.assign(bytes.begin(), bytes.end());
    s.value = std::move(value);
    c.out_bytes += s.size();
    c.out.push_back(std::move(s));
  }

  void reply(Client& c, StoreStatus status, std::span<const std::byte> value) {
    if (c.sealer) {
      std::array<std::byte, kFrameHeaderBytes> head{};
      head[0] = static_cast<std::byte>(status);
      put_u64(head.data() + 8, value.size());
      queue(c, c.sealer->seal(head, value));
      return;
    }
    std::vector<std::byte> h(kFrameHeaderBytes + value.size());
    h[0] = static_cast<std::byte>(status);
    put_u64(h.data() + 8, value.size());
    if (!value.empty()) std::memcpy(h.data() + kFrameHeaderBytes, value.data(), value.size());
    queue(c, h);
  }

  // A reply that sends a stored value by reference.
  void reply_value(Client& c, const ValuePtr& value) {
    if (c.sealer) return reply(c, StoreStatus::ok, value->bytes);  // a sealed copy
    std::array<std::byte, kFrameHeaderBytes> h{};
    h[0] = static_cast<std::byte>(StoreStatus::ok);
    put_u64(h.data() + 8, value->bytes.size());
    queue(c, h, value);
  }

  // Handles every complete frame of client `id`, then tries to send the replies.
  void process(std::uint64_t id) {
    Client& c = clients_.at(id);
    while (!c.dead) {
      std::size_t avail = c.in.size() - c.in_off;
      const std::byte* p = c.in.data() + c.in_off;
      if (!c.greeted && !c.authenticating) {
        if (avail >= 8 && (get_u32(p) != kStoreMagic0 || get_u32(p + 4) != kStoreMagic1)) {
          drop(c);  // not a ringlet store client: dropped as soon as its magic is wrong
          break;
        }
        if (avail < kHelloPrefixBytes) break;
        if (get_u32(p + 8) != kStoreProtocolVersion) {
          // Another version: answer with magic and version only (what every version reads).
          std::array<std::byte, kHelloPrefixBytes> r{};
          put_u32(r.data(), kStoreMagic0);
          put_u32(r.data() + 4, kStoreMagic1);
          put_u32(r.data() + 8, kStoreProtocolVersion);
          queue(c, r);
          c.in_off = c.in.size();
          c.close_after_flush = true;
          break;
        }
        if (avail < kHelloBytes) break;
        std::size_t id_len = get_u16(p + 12);
        const std::uint16_t flags = get_u16(p + 14);
        if (id_len > kMaxJobIdentityBytes || (flags & ~kHelloFlagSecret) != 0) {
          drop(c);
          break;
        }
        if (avail < kHelloBytes + id_len) break;
        std::memcpy(c.client_nonce.data(), p + 16, kNonceBytes);
        std::string_view identity(reinterpret_cast<const char*>(p + kHelloBytes), id_len);
        bool same_job = identity == job_identity_;
        const bool client_secret = (flags & kHelloFlagSecret) != 0;
        const bool server_secret = !secret_.empty();
        HelloStatus status = !same_job                        ? HelloStatus::job_mismatch
                             : client_secret == server_secret ? HelloStatus::ok
                             : server_secret                  ? HelloStatus::secret_required
                                                              : HelloStatus::secret_missing;
        fill_random(c.server_nonce);
        std::array<std::byte, kHelloReplyBytes> r{};
        put_u32(r.data(), kStoreMagic0);
        put_u32(r.data() + 4, kStoreMagic1);
        put_u32(r.data() + 8, kStoreProtocolVersion);
        r[12] = static_cast<std::byte>(status);
        r[13] = static_cast<std::byte>(server_secret ? 1 : 0);
        put_u16(r.data() + 14, static_cast<std::uint16_t>(job_identity_.size()));
        std::memcpy(r.data() + 16, c.server_nonce.data(), kNonceBytes);
        queue(c, r);
        queue(c, std::as_bytes(std::span(job_identity_)));
        c.hello.assign(p, p + kHelloBytes + id_len);
        c.in_off += kHelloBytes + id_len;
        if (status != HelloStatus::ok) {
          // Another job's client, or one that disagrees on having a secret: told why, then
          // closed; nothing else changes.
          if (status != HelloStatus::job_mismatch) record_auth_failure(c, "no secret on one side");
          c.in_off = c.in.size();
          c.close_after_flush = true;
          break;
        }
        if (server_secret) {
          c.authenticating = true;
        } else {
          c.greeted = true;
        }
        continue;
      }
      if (c.authenticating) {
        if (avail < kProofBytes) break;
        crypto::Mac proof{};
        std::memcpy(proof.data(), p, kProofBytes);
        c.in_off += kProofBytes;
        std::array<std::byte, kAuthVerdictBytes> v{};
        if (!crypto::equal(proof,
                           store_proof(kClientProofLabel, secret_, c.hello, c.server_nonce))) {
          v[0] = static_cast<std::byte>(AuthStatus::auth_failed);
          queue(c, v);
          record_auth_failure(c, "wrong secret");
          c.in_off = c.in.size();
          c.close_after_flush = true;
          break;
        }
        crypto::Mac mine = store_proof(kServerProofLabel, secret_, c.hello, c.server_nonce);
        queue(c, v);
        queue(c, std::as_bytes(std::span(mine)));
        const detail::StoreKeys keys = detail::derive_store_keys(secret_, c.hello, c.server_nonce);
        c.opener = std::make_unique<detail::FrameSealer>(keys.client_to_server);
        c.sealer = std::make_unique<detail::FrameSealer>(keys.server_to_client);
        c.authenticating = false;
        c.greeted = true;
        continue;
      }
      if (c.out_bytes >= kOutputHighWater) break;
      // Sealed requests: the header and its tag, the body and its tag.
      const std::size_t head = c.opener ? kSealedHeaderBytes : kFrameHeaderBytes;
      const std::size_t tail = c.opener ? kSealTagBytes : 0;
      if (avail < head) break;
      if (c.opener && !c.header_open) {
        if (!c.opener->open_header(std::span(c.in.data() + c.in_off, head))) {
          drop_altered(c);
          break;
        }
        c.header_open = true;
      }
      auto op = static_cast<StoreOp>(p[0]);
      std::uint64_t key_len = get_u32(p + 4);
      std::uint64_t value_len = get_u64(p + 8);
      bool valid = p[1] == std::byte{0} && p[2] == std::byte{0} && p[3] == std::byte{0} &&
                   key_len <= kMaxKeyBytes && value_len <= kMaxValueBytes;
      switch (op) {
        case StoreOp::set:
          break;
        case StoreOp::get:
        case StoreOp::remove:
          valid = valid && value_len == 0;
          break;
        case StoreOp::add:
          valid = valid && value_len == 8;
          break;
        case StoreOp::cancel:
          valid = valid && key_len == 0 && value_len == 0;
          break;
        case StoreOp::claim:
          valid = valid && value_len >= 1 && value_len <= kMaxClaimTokenBytes;
          break;
        case StoreOp::set_owned:
          valid = valid && value_len >= 8;
          break;
        default:
          valid = false;
      }
      // While a get is pending the client may only cancel it.
      if (!valid || (c.waiting && op != StoreOp::cancel)) {
        drop(c);
        break;
      }
      if (avail < head + key_len + value_len + tail) break;
      if (c.opener) {
        c.header_open = false;
        if (!c.opener->open_body(
                std::span(c.in.data() + c.in_off + head, key_len + value_len + tail))) {
          drop_altered(c);
          break;
        }
      }
      std::string key(reinterpret_cast<const char*>(p + head), key_len);
      std::span<const std::byte> value(p + head + key_len, value_len);
      handle(c, op, std::move(key), value);
      c.in_off += head + key_len + value_len + tail;
    }
    if (!c.dead) {
      compact_input(c);
      flush(c);
    }
  }

  // Drops consumed input; a buffer that grew past 1 MiB (one large set) is given back once
  // it is empty, so that an idle connection does not keep its peak size.
  void compact_input(Client& c) {
    const std::size_t before = c.in.size();
    if (c.in_off == c.in.size()) {
      c.in.clear();
      c.in_off = 0;
      if (c.in.capacity() > kKeepInputCapacity) std::vector<std::byte>().swap(c.in);
    } else if (c.in_off > 65536 && c.in_off * 2 > c.in.size()) {
      c.in.erase(c.in.begin(), c.in.begin() + static_cast<std::ptrdiff_t>(c.in_off));
      c.in_off = 0;
    }
    input_bytes_ -= before - c.in.size();
  }

  // Whether storing `value_bytes` more under a new or existing key fits the limits; if not,
  // replies with an error naming the limit.
  bool admit(Client& c, const std::string& key, std::size_t value_bytes, bool new_key) {
    if (new_key && data_.size() >= limits_.max_keys) {
      reply_error(c, str_cat("the rendezvous store is full: ", data_.size(),
                             " keys, the limit; key '", key, "' not stored"));
      return false;
    }
    const std::size_t extra = value_bytes + (new_key ? key.size() : 0);
    if (pinned_bytes_ + key_bytes_ + extra > limits_.max_bytes) {
      reply_error(c, str_cat("the rendezvous store is full: ", pinned_bytes_ + key_bytes_,
                             " bytes held of ", limits_.max_bytes, "; key '", key, "' (",
                             value_bytes, " bytes) not stored"));
      return false;
    }
    return true;
  }

  void store(const std::string& key, std::span<const std::byte> value) {
    auto v = std::make_shared<const StoredValue>(value, &pinned_bytes_);
    auto [it, inserted] = data_.insert_or_assign(key, std::move(v));
    if (inserted) key_bytes_ += key.size();
  }

  const detail::KeyOwner* owner_of(std::string_view key) const {
    auto it = owners_.find(key);
    return it == owners_.end() ? nullptr : &it->second;
  }

  // Whether a plain `op` of `key` may go on; if not (a claim or an owned key), replies
  // refused with the reason.
  bool plain_write_allowed(Client& c, std::string_view op, const std::string& key) {
    const detail::KeyOwner* owner = owner_of(key);
    if (owner == nullptr) return true;
    reply_refused(c, detail::plain_write_refusal(op, key, *owner));
    return false;
  }

  // Records `owner` for `key`; its bytes count as the key's.
  void own(const std::string& key, std::string_view claim, std::span<const std::byte> token) {
    auto [it, inserted] = owners_.try_emplace(key);
    if (!inserted) return;  // rewritten by its owner: the same record
    it->second.claim = std::string(claim);
    it->second.token.assign(token.begin(), token.end());
    key_bytes_ += claim.size() + token.size();
  }

  void handle(Client& c, StoreOp op, std::string key, std::span<const std::byte> value) {
    switch (op) {
      case StoreOp::set:
        if (!plain_write_allowed(c, "set", key)) return;
        if (!admit(c, key, value.size(), !data_.contains(key))) return;
        store(key, value);
        reply(c, StoreStatus::ok, {});
        wake_waiters(key);
        return;
      case StoreOp::get: {
        auto it = data_.find(key);
        if (it != data_.end()) {
          reply_value(c, it->second);
        } else {
          c.waiting = true;
          c.waiting_key = key;
          waiters_[key].push_back(&c);
        }
        return;
      }
      case StoreOp::add: {
        if (!plain_write_allowed(c, "add", key)) return;
        auto delta = static_cast<std::int64_t>(get_u64(value.data()));
        std::int64_t old = 0;
        auto it = data_.find(key);
        if (it != data_.end()) {
          auto parsed = detail::parse_counter(it->second->bytes);
          if (!parsed) {
            reply_error(c, str_cat("add() on key '", key, "', whose value is not an integer"));
            return;
          }
          old = *parsed;
        }
        auto sum = detail::checked_add(old, delta);
        if (!sum) {
          reply_error(c, str_cat("add(", delta, ") on key '", key, "' overflows int64"));
          return;
        }
        const std::vector<std::byte> counter = detail::encode_counter(*sum);
        if (!admit(c, key, counter.size(), it == data_.end())) return;
        store(key, counter);
        std::array<std::byte, 8> r{};
        put_u64(r.data(), static_cast<std::uint64_t>(*sum));
        reply(c, StoreStatus::ok, r);
        wake_waiters(key);
        return;
      }
      case StoreOp::remove: {
        if (!plain_write_allowed(c, "remove", key)) return;
        auto it = data_.find(key);
        const bool found = it != data_.end();
        if (found) {
          key_bytes_ -= it->first.size();
          data_.erase(it);
        }
        reply(c, found ? StoreStatus::ok : StoreStatus::missing, {});
        return;
      }
      case StoreOp::cancel:
        if (c.waiting) {
          unwait(c);
          reply(c, StoreStatus::cancelled, {});
        }
        return;
      case StoreOp::claim: {
        const bool exists = data_.contains(key);
        const bool granted = detail::claim_granted(key, value, exists, owner_of(key));
        if (granted && !exists) {
          if (!admit(c, key, 2 * value.size() + key.size(), true)) return;
          store(key, value);
          own(key, key, value);
        }
        const std::array<std::byte, 1> r{granted ? std::byte{1} : std::byte{0}};
        reply(c, StoreStatus::ok, r);
        if (granted && !exists) wake_waiters(key);
        return;
      }
      case StoreOp::set_owned: {
        const std::optional<detail::OwnedValue> v = detail::decode_owned_value(value);
        if (!v || v->token.empty()) {
          drop(c);  // malformed: not what a ringlet client sends
          return;
        }
        auto it = data_.find(key);
        const std::string why = detail::owned_write_refusal(
            v->claim_key, v->token, owner_of(v->claim_key), key, it != data_.end(), owner_of(key));
        if (!why.empty()) {
          reply_refused(c, why);
          return;
        }
        const bool new_owner = !owners_.contains(key);
        const std::size_t extra =
            v->value.size() + (new_owner ? v->claim_key.size() + v->token.size() : 0);
        if (!admit(c, key, extra, it == data_.end())) return;
        store(key, v->value);
        own(key, v->claim_key, v->token);
        reply(c, StoreStatus::ok, {});
        wake_waiters(key);
        return;
      }
    }
  }

  // A sealed request that does not open: altered in flight, or a client that skipped the
  // sealing. Not counted as a failed authentication (the client proved the secret).
  void drop_altered(Client& c) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    std::string from = "?";
    if (::getpeername(c.fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      from = net::format_address(ss);
    }
    RINGLET_LOG(warn, "tcp store server: a sealed request from ", from,
                " failed authentication (altered in flight, or not sealed); dropped");
    drop(c);
  }

  // Counts a client that failed authentication under kAuthFailuresKey, so that ranks whose
  // get() times out can say why (the failing rank's keys never come).
  void record_auth_failure(Client& c, std::string_view why) {
    ++auth_failures_;
    if (c.peer.empty()) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      if (::getpeername(c.fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
        c.peer = net::format_address(ss);
      }
    }
    RINGLET_LOG(warn, "tcp store: refused a client from ", c.peer.empty() ? "?" : c.peer, ": ", why,
                " (RINGLET_SECRET)");
    std::string text = str_cat(auth_failures_, " ", c.peer.empty() ? "?" : c.peer, " (", why, ")");
    std::string key(kAuthFailuresKey);
    store(key, std::as_bytes(std::span(text)));  // one small key, replaced in place
    wake_waiters(key);
  }

  void reply_error(Client& c, const std::string& message) {
    reply(c, StoreStatus::error, std::as_bytes(std::span(message.data(), message.size())));
  }
  void reply_refused(Client& c, const std::string& message) {
    reply(c, StoreStatus::refused, std::as_bytes(std::span(message.data(), message.size())));
  }

  // Answers every get waiting on `key`, each by reference to the one stored value: a waiter
  // has at most one get pending, so this queues one header per waiter.
  void wake_waiters(const std::string& key) {
    auto it = waiters_.find(key);
    if (it == waiters_.end()) return;
    std::vector<Client*> woken = std::move(it->second);
    waiters_.erase(it);
    const ValuePtr value = data_.at(key);
    for (Client* w : woken) {
      w->waiting = false;
      w->waiting_key.clear();
      try {
        reply_value(*w, value);
        flush(*w);
      } catch (const std::exception& e) {
        RINGLET_LOG(warn, "tcp store server: dropping a client: ", e.what());
        drop(*w);
      }
    }
  }

  static constexpr auto kAcceptBackoff = milliseconds(100);
  static constexpr std::size_t kKeepInputCapacity = std::size_t{1} << 20;

  const TcpStoreLimits limits_;
  UniqueFd listener_;
  UniqueFd wake_;
  int port_ = 0;
  std::string job_identity_;
  std::string secret_;
  std::uint64_t auth_failures_ = 0;
  std::uint64_t next_id_ = 1;
  std::size_t pinned_bytes_ = 0;  // bytes of every StoredValue alive (stored or being sent)
  std::size_t key_bytes_ = 0;     // bytes of the keys of data_
  std::size_t input_bytes_ = 0;   // bytes buffered in the clients' `in`
  Clock::time_point accept_paused_until_{};
  bool accept_paused_logged_ = false;
  // data_ before clients_: the clients' queued replies hold values that count against
  // pinned_bytes_, and are destroyed first.
  std::map<std::string, ValuePtr, std::less<>> data_;
  std::map<std::string, detail::KeyOwner, std::less<>> owners_;  // claims and owned keys
  std::unordered_map<std::uint64_t, Client> clients_;            // node-based: Client* stay valid
  std::map<std::string, std::vector<Client*>, std::less<>> waiters_;
  std::jthread thread_;  // last: starts after, and stops before, the members it uses
};

// ---------------------------------------------------------------------------------------
// Client

void send_all(int fd, std::span<const std::byte> data, Deadline deadline,
              const std::string& where) {
  switch (net::send_all(fd, data.data(), data.size(), deadline)) {
    case net::SendStatus::ok:
      return;
    case net::SendStatus::timeout:
      throw Error(ErrorCode::timeout,
                  str_cat("rendezvous store at ", where, " (rank 0) stopped reading requests"));
    case net::SendStatus::closed:
      throw Error(ErrorCode::peer_lost,
                  str_cat("rendezvous store at ", where, " (rank 0) closed the connection"));
    case net::SendStatus::failed:
      break;
  }
  ringlet::detail::throw_errno(str_cat("tcp store: send to ", where));
}

void recv_all(int fd, std::span<std::byte> data, Deadline deadline, const std::string& where) {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::recv(fd, data.data() + done, data.size() - done, 0);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0 || errno == ECONNRESET) {
      throw Error(ErrorCode::peer_lost,
                  str_cat("rendezvous store at ", where, " (rank 0) closed the connection"));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(fd, POLLIN, deadline)) {
        throw Error(ErrorCode::timeout,
                    str_cat("rendezvous store at ", where, " (rank 0) did not answer in time"));
      }
      continue;
    }
    ringlet::detail::throw_errno(str_cat("tcp store: recv from ", where));
  }
}

struct Reply {
  StoreStatus status = StoreStatus::ok;
  std::vector<std::byte> value;
};

// One connection to the server, and its sealed frames' state when the job has a secret.
struct Session {
  explicit Session(const detail::StoreKeys& keys)
      : out(keys.client_to_server), in(keys.server_to_client) {}
  detail::FrameSealer out;
  detail::FrameSealer in;
};
struct Conn {
  UniqueFd fd;
  std::unique_ptr<Session> session;  // null: frames in clear (no secret)
};

[[noreturn]] void throw_altered(const std::string& where) {
  throw Error(ErrorCode::transport, str_cat("a reply from the rendezvous store at ", where,
                                            " (rank 0) failed authentication: altered in flight"));
}

void send_frame(const Conn& c, const std::vector<std::byte>& frame, Deadline deadline,
                const std::string& where) {
  if (!c.session) return send_all(c.fd.get(), frame, deadline, where);
  const std::span<const std::byte> f(frame);
  send_all(c.fd.get(),
           c.session->out.seal(f.first(kFrameHeaderBytes), f.subspan(kFrameHeaderBytes)), deadline,
           where);
}

Reply read_reply(const Conn& c, Deadline deadline, const std::string& where) {
  const int fd = c.fd.get();
  std::array<std::byte, kSealedHeaderBytes> sealed{};
  const std::span<std::byte> h =
      std::span(sealed).first(c.session ? kSealedHeaderBytes : kFrameHeaderBytes);
  recv_all(fd, h, deadline, where);
  if (c.session && !c.session->in.open_header(h)) throw_altered(where);
  std::uint64_t len = get_u64(h.data() + 8);
  auto status = static_cast<StoreStatus>(h[0]);
  if (len > kMaxValueBytes || static_cast<std::uint8_t>(status) > 4) {
    throw Error(ErrorCode::transport,
                str_cat("rendezvous store at ", where, " sent a malformed reply"));
  }
  Reply r;
  r.status = status;
  r.value.resize(len + (c.session ? kSealTagBytes : 0));
  recv_all(fd, r.value, deadline, where);
  if (c.session) {
    if (!c.session->in.open_body(r.value)) throw_altered(where);
    r.value.resize(len);
  }
  return r;
}

std::vector<std::byte> request_frame(StoreOp op, std::string_view key,
                                     std::span<const std::byte> value) {
  if (key.size() > kMaxKeyBytes) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("store: key of ", key.size(), " bytes is longer than ", kMaxKeyBytes));
  }
  if (value.size() > kMaxValueBytes) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("store: value of ", value.size(), " bytes for key '", key,
                        "' is larger than ", kMaxValueBytes));
  }
  std::vector<std::byte> f(kFrameHeaderBytes + key.size() + value.size());
  f[0] = static_cast<std::byte>(op);
  put_u32(f.data() + 4, static_cast<std::uint32_t>(key.size()));
  put_u64(f.data() + 8, value.size());
  if (!key.empty()) std::memcpy(f.data() + kFrameHeaderBytes, key.data(), key.size());
  if (!value.empty()) {
    std::memcpy(f.data() + kFrameHeaderBytes + key.size(), value.data(), value.size());
  }
  return f;
}

// Thread-safe: each operation borrows a connection from idle_ (under mutex_) or opens a
// new one, so a blocked get() on one thread never holds up a set() on another. A connection
// that saw an error is closed, never returned to idle_. The server, when this rank serves,
// is owned here and declared first, so that it outlives the connections.
class TcpStore final : public Store, public detail::TcpStoreInfo {
 public:
  explicit TcpStore(const TcpStoreOptions& options)
      : host_(strip_brackets(options.host)),
        job_identity_(options.job_identity),
        secret_(options.secret),
        stop_(options.stop) {
    RINGLET_CHECK(job_identity_.size() <= detail::kMaxJobIdentityBytes,
                  "make_tcp_store: the job identity is longer than ", detail::kMaxJobIdentityBytes,
                  " bytes");
    port_ = options.port;
    if (options.is_server) {
      server_ = std::make_unique<TcpStoreServer>(host_, options.port, options.job_identity,
                                                 options.secret, options.limits);
      if (options.secret.empty()) {
        RINGLET_LOG(warn, "no secret (RINGLET_SECRET): the rendezvous store on port ",
                    server_->port(),
                    " and the job's connections are not authenticated; anything that reaches "
                    "them can join, read or alter this job (docs/security.md)");
      }
      port_ = server_->port();
      if (host_.empty()) host_ = "localhost";
    }
    RINGLET_CHECK(!host_.empty(), "make_tcp_store: empty host");
    RINGLET_CHECK(port_ > 0 && port_ < 65536, "make_tcp_store: port ", port_,
                  " is outside 1..65535");
    where_ = join_host_port(host_, port_);
    Conn conn = connect(options.deadline, true);
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    if (::getsockname(conn.fd.get(), reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      local_address_ = numeric_host(local);
    }
    idle_.push_back({std::move(conn), Clock::now()});
  }

  void set(std::string_view key, std::span<const std::byte> value) override {
    Reply r = round_trip(request_frame(StoreOp::set, key, value));
    expect_ok(r, key);
  }

  std::vector<std::byte> get(std::string_view key, Deadline deadline) override {
    return get_interruptible(key, deadline, {});
  }

  // One request, whatever the wait: the reply, the deadline and a stop are waited for
  // together (a stop writes to an eventfd polled with the socket), and the two last withdraw
  // the request with cancel.
  std::vector<std::byte> get_interruptible(std::string_view key, Deadline deadline,
                                           const std::stop_token& stop) override {
    const auto start = Clock::now();
    std::vector<std::byte> frame = request_frame(StoreOp::get, key, {});
    UniqueFd wake;
    if (stop.stop_possible()) {
      wake = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
      if (!wake) ringlet::detail::throw_errno("tcp store: eventfd");
    }
    auto poke = [fd = wake.get()] {
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
    };
    std::optional<std::stop_callback<decltype(poke)>> on_stop;  // destroyed before `wake`
    if (wake) on_stop.emplace(stop, poke);
    Conn conn = acquire();
    send_frame(conn, frame, Clock::now() + kRequestTimeout, where_);
    Reply r;
    const Woken woken = wait_reply(conn.fd.get(), wake.get(), deadline);
    if (woken == Woken::reply) {
      r = read_reply(conn, std::max(deadline, Clock::now() + kCancelGrace), where_);
    } else {
      // Withdraw the pending get; the server answers it with `cancelled`, or has already
      // answered it with the value, which we then return.
      std::vector<std::byte> cancel = request_frame(StoreOp::cancel, {}, {});
      auto grace = Clock::now() + kCancelGrace;
      send_frame(conn, cancel, grace, where_);
      r = read_reply(conn, grace, where_);
    }
    release(std::move(conn));
    if (r.status == StoreStatus::cancelled) {
      if (woken == Woken::stop) {
        throw Error(ErrorCode::aborted,
                    str_cat("store: the wait for key '", key, "' was interrupted"));
      }
      auto ms = std::chrono::duration_cast<milliseconds>(deadline - start).count();
      throw Error(ErrorCode::timeout, str_cat("store: key '", key, "' not set within ",
                                              ms < 0 ? 0 : ms, " ms", auth_failure_note(key)));
    }
    expect_ok(r, key);
    return std::move(r.value);
  }

  std::int64_t add(std::string_view key, std::int64_t delta) override {
    std::array<std::byte, 8> v{};
    put_u64(v.data(), static_cast<std::uint64_t>(delta));
    Reply r = round_trip(request_frame(StoreOp::add, key, v));
    if (r.status == StoreStatus::error) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat("store: ", std::string(reinterpret_cast<const char*>(r.value.data()),
                                                 r.value.size())));
    }
    expect_ok(r, key);
    if (r.value.size() != 8) {
      throw Error(ErrorCode::transport,
                  str_cat("rendezvous store at ", where_, " sent a malformed add() reply"));
    }
    return static_cast<std::int64_t>(get_u64(r.value.data()));
  }

  bool remove(std::string_view key) override {
    Reply r = round_trip(request_frame(StoreOp::remove, key, {}));
    if (r.status == StoreStatus::missing) return false;
    expect_ok(r, key);
    return true;
  }

  bool claim(std::string_view key, std::span<const std::byte> token) override {
    detail::check_claim_token(token);
    Reply r = round_trip(request_frame(StoreOp::claim, key, token));
    expect_ok(r, key);
    if (r.value.size() != 1) {
      throw Error(ErrorCode::transport,
                  str_cat("rendezvous store at ", where_, " sent a malformed claim() reply"));
    }
    return r.value[0] == std::byte{1};
  }

  void set_owned(std::string_view claim_key, std::span<const std::byte> token, std::string_view key,
                 std::span<const std::byte> value) override {
    detail::check_claim_token(token);
    if (claim_key.size() > kMaxKeyBytes) {
      throw Error(ErrorCode::invalid_argument, str_cat("store: key of ", claim_key.size(),
                                                       " bytes is longer than ", kMaxKeyBytes));
    }
    Reply r = round_trip(request_frame(StoreOp::set_owned, key,
                                       detail::encode_owned_value(claim_key, token, value)));
    expect_ok(r, key);
  }

  void close_idle() override {
    std::lock_guard lock(mutex_);
    idle_.clear();
  }

  std::string local_address() const override { return local_address_; }
  int port() const noexcept override { return port_; }

 private:
  void expect_ok(const Reply& r, std::string_view key) const {
    if (r.status == StoreStatus::refused) {
      // The rule of claims (store_value.hpp): the server's words, as every store says them.
      throw Error(ErrorCode::mismatch,
                  std::string(reinterpret_cast<const char*>(r.value.data()), r.value.size()));
    }
    if (r.status == StoreStatus::error) {
      throw Error(
          ErrorCode::transport,
          str_cat(
              "rendezvous store at ", where_, " (rank 0) refused a request on key '", key,
              "': ", std::string(reinterpret_cast<const char*>(r.value.data()), r.value.size())));
    }
    if (r.status != StoreStatus::ok) {
      throw Error(ErrorCode::transport,
                  str_cat("rendezvous store at ", where_, " failed a request on key '", key,
                          "' (status ", static_cast<int>(r.status), ")"));
    }
  }

  // Why a key may never have come: clients the server refused for their secret.
  std::string missing_key_note(std::string_view key) override { return auth_failure_note(key); }
  std::string auth_failure_note(std::string_view key) {
    if (key == kAuthFailuresKey) return {};
    try {
      // The count is set before any rank can time out on it, so the server answers at once;
      // a short grace keeps a loaded machine from turning that answer into a timeout.
      std::vector<std::byte> v = get(kAuthFailuresKey, Clock::now() + kAuthNoteGrace);
      std::string text(reinterpret_cast<const char*>(v.data()), v.size());
      std::size_t space = text.find(' ');
      return str_cat("; the store refused ", text.substr(0, space),
                     " client(s) that failed authentication, the last from ",
                     space == std::string::npos ? "?" : text.substr(space + 1),
                     ": a rank whose RINGLET_SECRET differs cannot join");
    } catch (const Error& e) {
      if (e.error_code() == ErrorCode::timeout) return {};
      // Rank 0 has gone (it failed first, and its store with it): say so rather than nothing.
      return str_cat("; the store at ", where_, " (rank 0) could not say why: it has closed (",
                     e.cause(), ")");
    }
  }

  static constexpr auto kAuthNoteGrace = std::chrono::milliseconds(500);

  enum class Woken { reply, deadline, stop };
  // Waits until `fd` is readable (the reply), `wake` (an eventfd; -1: none) is, or the
  // deadline passes.
  static Woken wait_reply(int fd, int wake, Deadline deadline) {
    for (;;) {
      std::array<pollfd, 2> p{pollfd{fd, POLLIN, 0}, pollfd{wake, POLLIN, 0}};
      const int rc = ::poll(p.data(), wake >= 0 ? 2 : 1, ms_until(deadline));
      if (rc < 0 && errno != EINTR) ringlet::detail::throw_errno("tcp store: poll");
      if (rc > 0 && p[0].revents != 0) return Woken::reply;
      if (rc > 0 && p[1].revents != 0) return Woken::stop;
      if (rc == 0 && Clock::now() >= deadline) return Woken::deadline;
    }
  }

  Reply round_trip(const std::vector<std::byte>& frame) {
    Conn conn = acquire();
    auto deadline = Clock::now() + kRequestTimeout;
    send_frame(conn, frame, deadline, where_);
    Reply r = read_reply(conn, deadline, where_);
    release(std::move(conn));
    return r;
  }

  // A pooled connection, unless it rested long enough for the server to expire it or the
  // server has closed it (readable while no request is out: EOF); else a new one.
  Conn acquire() {
    auto window = kReconnectWindow;
    for (;;) {
      Pooled p;
      {
        std::lock_guard lock(mutex_);
        if (idle_.empty()) break;
        p = std::move(idle_.back());
        idle_.pop_back();
      }
      if (Clock::now() - p.since > kPoolRest) continue;
      pollfd q{p.conn.fd.get(), POLLIN, 0};
      if (::poll(&q, 1, 0) != 0) {
        // Closed by the server: it expired the connection (then it answers a new one at
        // once), or it is gone (then waiting long for it helps nobody).
        window = kClosedReconnectWindow;
        continue;
      }
      return std::move(p.conn);
    }
    return connect(Clock::now() + window, false);
  }

  void release(Conn conn) {
    std::lock_guard lock(mutex_);
    if (idle_.size() < kMaxIdleConnections) idle_.push_back({std::move(conn), Clock::now()});
  }

  // Connects and shakes hands, retrying refused or unreachable attempts, and handshakes
  // that end by EOF (a server at its client limit, a rank 0 still starting), with a short
  // backoff until `deadline`. The name is resolved once per call, and again only after
  // every address failed and kResolveAgain has passed: waiting ranks make no DNS storm.
  Conn connect(Deadline deadline, bool first) {
    const auto start = Clock::now();
    auto pause = milliseconds(10);
    std::string last_error = "no attempt made";
    AddrInfoPtr addrs;
    auto resolved_at = Clock::time_point{};
    for (;;) {
      std::string error;
      if (!addrs || Clock::now() - resolved_at > kResolveAgain) {
        addrs = resolve(host_, port_, false, error);
        resolved_at = Clock::now();
      }
      if (addrs) {
        for (addrinfo* ai = addrs.get(); ai != nullptr; ai = ai->ai_next) {
          UniqueFd fd = try_connect(ai, deadline, error, first ? stop_ : std::stop_token{});
          if (!fd) continue;
          try {
            Conn conn;
            conn.session =
                handshake(fd.get(), std::max(deadline, Clock::now() + milliseconds(100)));
            conn.fd = std::move(fd);
            return conn;
          } catch (const Error& e) {
            if (e.error_code() != ErrorCode::peer_lost) throw;
            error = e.cause();
          }
        }
      }
      last_error = error;
      if (first && stop_.stop_requested()) {
        throw Error(ErrorCode::aborted,
                    str_cat("interrupted while reaching the rendezvous store at ", where_));
      }
      auto now = Clock::now();
      if (now >= deadline) break;
      std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - now));
      pause = std::min(pause * 2, milliseconds(250));
    }
    if (!first) {
      throw Error(
          ErrorCode::peer_lost,
          str_cat("rendezvous store at ", where_,
                  " (rank 0) closed the connection and cannot be reached again: ", last_error));
    }
    auto s = std::chrono::duration_cast<std::chrono::duration<double>>(deadline - start).count();
    throw Error(ErrorCode::timeout, str_cat("could not reach rendezvous store at ", where_,
                                            " within ", s < 0 ? 0.0 : s, " s: ", last_error));
  }

  // One connection attempt. It waits in slices, so that `stop` interrupts an attempt whose
  // SYN goes unanswered (a host that is down, a link that is down), which the kernel would
  // otherwise retry for about two minutes.
  static UniqueFd try_connect(const addrinfo* ai, Deadline deadline, std::string& error,
                              const std::stop_token& stop) {
    UniqueFd fd(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd) {
      error = std::strerror(errno);
      return {};
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS && errno != EINTR) {
        error = std::strerror(errno);
        return {};
      }
      for (;;) {
        if (wait_fd(fd.get(), POLLOUT, std::min(deadline, Clock::now() + milliseconds(200)))) break;
        if (stop.stop_requested()) {
          error = "interrupted";
          return {};
        }
        if (Clock::now() >= deadline) {
          error = "connect timed out";
          return {};
        }
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        error = std::strerror(err);
        return {};
      }
    }
    set_nodelay(fd.get());
    return fd;
  }

  // The session of sealed frames when both sides hold the secret; null otherwise.
  std::unique_ptr<Session> handshake(int fd, Deadline deadline) {
    std::vector<std::byte> hello(kHelloBytes + job_identity_.size());
    put_u32(hello.data(), kStoreMagic0);
    put_u32(hello.data() + 4, kStoreMagic1);
    put_u32(hello.data() + 8, kStoreProtocolVersion);
    put_u16(hello.data() + 12, static_cast<std::uint16_t>(job_identity_.size()));
    put_u16(hello.data() + 14, secret_.empty() ? 0 : kHelloFlagSecret);
    std::array<std::byte, detail::kNonceBytes> nonce{};
    fill_random(nonce);
    std::memcpy(hello.data() + 16, nonce.data(), nonce.size());
    std::memcpy(hello.data() + kHelloBytes, job_identity_.data(), job_identity_.size());
    send_all(fd, hello, deadline, where_);
    std::array<std::byte, kHelloReplyBytes> r{};
    recv_all(fd, std::span(r).first(detail::kHelloPrefixBytes), deadline, where_);
    if (get_u32(r.data()) != kStoreMagic0 || get_u32(r.data() + 4) != kStoreMagic1) {
      throw Error(ErrorCode::mismatch,
                  str_cat("the server at ", where_, " is not a ringlet rendezvous store"));
    }
    std::uint32_t version = get_u32(r.data() + 8);
    if (version != kStoreProtocolVersion) {
      throw Error(ErrorCode::mismatch,
                  str_cat("store at ", where_, " speaks protocol version ", version,
                          ", this rank speaks ", kStoreProtocolVersion));
    }
    recv_all(fd, std::span(r).subspan(detail::kHelloPrefixBytes), deadline, where_);
    std::size_t id_len = get_u16(r.data() + 14);
    if (id_len > detail::kMaxJobIdentityBytes) {
      throw Error(ErrorCode::mismatch,
                  str_cat("the server at ", where_, " sent a malformed store greeting"));
    }
    std::string server_identity(id_len, '\0');
    recv_all(fd, std::as_writable_bytes(std::span(server_identity)), deadline, where_);
    const auto status = static_cast<HelloStatus>(r[12]);
    if (status == HelloStatus::secret_required || status == HelloStatus::secret_missing) {
      throw Error(ErrorCode::transport,
                  str_cat("the rendezvous store at ", where_, " (rank 0) ",
                          status == HelloStatus::secret_required
                              ? "requires the job's secret and this rank has none"
                              : "has no secret and this rank has one",
                          ": authentication failed (set the same RINGLET_SECRET or "
                          "RINGLET_SECRET_FILE on every rank)"));
    }
    if (status != HelloStatus::ok || server_identity != job_identity_) {
      throw Error(ErrorCode::mismatch,
                  str_cat("the rendezvous store at ", where_, " serves job '", server_identity,
                          "', but this rank belongs to job '", job_identity_,
                          "': two jobs share this address and port (set RINGLET_PORT or "
                          "RINGLET_ADDR apart, or RINGLET_JOB_ID alike)"));
    }
    if (secret_.empty()) return nullptr;
    // Both hold a secret: this rank proves it first, then checks the server's proof.
    const std::span<const std::byte> server_nonce(r.data() + 16, kNonceBytes);
    crypto::Mac proof = store_proof(kClientProofLabel, secret_, hello, server_nonce);
    send_all(fd, std::as_bytes(std::span(proof)), deadline, where_);
    std::array<std::byte, kAuthVerdictBytes> v{};
    recv_all(fd, v, deadline, where_);
    if (static_cast<AuthStatus>(v[0]) != AuthStatus::ok) {
      throw Error(ErrorCode::transport,
                  str_cat("the rendezvous store at ", where_,
                          " (rank 0) says: authentication failed; this rank's secret differs "
                          "from rank 0's (RINGLET_SECRET or RINGLET_SECRET_FILE)"));
    }
    crypto::Mac theirs{};
    recv_all(fd, std::as_writable_bytes(std::span(theirs)), deadline, where_);
    if (!crypto::equal(theirs, store_proof(kServerProofLabel, secret_, hello, server_nonce))) {
      throw Error(ErrorCode::transport,
                  str_cat("the rendezvous store at ", where_,
                          " failed authentication: it does not hold this job's secret "
                          "(RINGLET_SECRET); it is not this job's rank 0"));
    }
    return std::make_unique<Session>(detail::derive_store_keys(secret_, hello, server_nonce));
  }

  std::unique_ptr<TcpStoreServer> server_;  // first: destroyed after the connections
  std::string host_;
  std::string job_identity_;
  std::string secret_;
  int port_ = 0;
  std::string where_;
  std::string local_address_;
  std::stop_token stop_;  // of the initial connection
  struct Pooled {
    Conn conn;
    Clock::time_point since;  // returned to the pool
  };
  std::mutex mutex_;
  std::vector<Pooled> idle_;
};

}  // namespace

std::shared_ptr<Store> make_tcp_store(const TcpStoreOptions& options) {
  return std::make_shared<TcpStore>(options);
}

std::string local_address_of(const Store& store) {
  const auto* tcp = dynamic_cast<const detail::TcpStoreInfo*>(&detail::unwrap(store));
  return tcp != nullptr ? tcp->local_address() : std::string();
}

int tcp_store_port(const Store& store) {
  const auto* tcp = dynamic_cast<const detail::TcpStoreInfo*>(&detail::unwrap(store));
  return tcp != nullptr ? tcp->port() : 0;
}

}  // namespace ringlet::bootstrap
