// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the tcp transport's acceptor, through sockets, as a peer (or anyone who
// reaches its listener) sends bytes. Each input makes a fresh transport as rank 1 of 2,
// listening on 127.0.0.1, and a peer thread plays rank 0:
//   first byte even: the rest is sent raw on an extra socket (a forged or broken handshake),
//     while rank 0 performs the real handshake on its two sockets (control, data);
//   first byte odd: rank 0 performs the real handshake, then sends the rest on its data
//     socket (bit 1 clear) or its control socket (bit 1 set) as frames.
// Rank 1 connects to rank 0 within 300 ms, receives one 256-byte message within 30 ms, and
// may fail only with a ringlet::Error. A crash, an abort, an exception that is not a
// ringlet::Error or a sanitizer report is a finding.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "tests/fuzz/dial.hpp"
#include "transports/tcp/handshake.hpp"
#include "transports/tcp/transport.hpp"
#include "transports/tcp/wire.hpp"

namespace {

using namespace ringlet::transport;
using namespace ringlet::transport::tcp;
constexpr std::uint64_t kJob = 0x5eed0f0f;

int dial(std::uint16_t port) { return ringlet::fuzz::dial_loopback(port); }

bool send_all(int fd, const unsigned char* p, std::size_t n) {
  while (n > 0) {
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, 100) <= 0) return false;
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

bool recv_all(int fd, unsigned char* p, std::size_t n) {
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 300) <= 0) return false;
    const ssize_t k = ::recv(fd, p, n, MSG_DONTWAIT);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

// Rank 0's side of the handshake on socket `index` of `count` (no secret, no encryption).
bool handshake(int fd, std::uint32_t index, std::uint32_t count) {
  Hello h;
  h.job_id = kJob;
  h.from_rank = 0;
  h.to_rank = 1;
  h.index = index;
  h.count = count;
  unsigned char hello[kHelloBytes];
  h.encode(hello);
  if (!send_all(fd, hello, sizeof hello)) return false;
  unsigned char rb[kReplyBytes];
  if (!recv_all(fd, rb, sizeof rb)) return false;
  const Reply r = Reply::decode(rb);
  if (r.status != HandshakeStatus::ok) return false;
  const auto proof = connector_proof("", hello, r.nonce);
  if (!send_all(fd, proof.data(), proof.size())) return false;
  unsigned char vb[kVerdictBytes];
  if (!recv_all(fd, vb, sizeof vb)) return false;
  return Verdict::decode(vb).status == HandshakeStatus::ok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  const unsigned char* rest = data + 1;
  const std::size_t rest_size = size - 1;
  TcpOptions o;
  o.rank = 1;
  o.size = 2;
  o.job_id = kJob;
  o.bind_address = "127.0.0.1";
  o.sockets = 1;
  o.separate_directions = false;
  std::unique_ptr<ringlet::transport::Transport> t = make_tcp_transport(o);
  const std::vector<std::byte> mine = t->local_address();
  const AddressBlob me = AddressBlob::decode(mine);
  AddressBlob peer = me;  // the acceptor never dials: any well-formed blob of the job
  const std::vector<std::byte> peer_blob = peer.encode();
  constexpr std::uint32_t kCount = 2;  // control + one data socket
  std::thread rank0([&] {
    std::array<int, kCount> fds{};
    int extra = -1;
    if ((mode & 1) == 0) {
      extra = dial(me.port);
      send_all(extra, rest, rest_size);
    }
    bool ok = true;
    for (std::uint32_t i = 0; i < kCount; ++i) {
      fds[i] = dial(me.port);
      ok = ok && handshake(fds[i], i, kCount);
    }
    if (ok && (mode & 1) != 0) send_all(fds[(mode & 2) != 0 ? 0 : 1], rest, rest_size);
    // Give rank 1 a moment to read before the sockets close.
    ::usleep(2000);
    for (int fd : fds) ::close(fd);
    if (extra >= 0) ::close(extra);
  });
  try {
    auto c = t->connect(0, peer_blob, ringlet::Clock::now() + std::chrono::milliseconds(300));
    std::vector<std::byte> buf(256);
    auto r = c->post_recv(buf, nullptr);
    c->wait(r, ringlet::Clock::now() + std::chrono::milliseconds(30));
  } catch (const ringlet::Error&) {
    // Expected for most inputs: the peer's bytes were refused, or nothing complete came.
  }
  rank0.join();
  return 0;
}
