// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the TCP store's server, through a socket, as any client on the network
// can reach it. One server (in this process, as rank 0 runs it) serves every input. An input
// whose first byte is odd is sent after a valid hello of the server's job (so the fuzzer
// reaches the request parser); otherwise the input is the whole byte stream, hello included.
// The client then half-closes, reads what comes back for a few milliseconds and closes. Every
// 64 inputs a real client sets, reads and removes a key: the server must still serve it.
// A crash, a leak (ASan), an abort or a server that stops serving is a finding.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "src/bootstrap/store.hpp"
#include "src/bootstrap/tcp_store_protocol.hpp"
#include "tests/fuzz/dial.hpp"

namespace {

namespace bs = ringlet::bootstrap;
namespace d = ringlet::bootstrap::detail;
constexpr const char* kJob = "fuzz-job";
constexpr const char* kHealthKey = "fuzz/health-4f1d9a";

struct Server {
  std::shared_ptr<bs::Store> store;
  int port = 0;
  long inputs = 0;
};

Server& server() {
  static Server* s = [] {
    auto* p = new Server;
    bs::TcpStoreOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    o.is_server = true;
    o.deadline = ringlet::Clock::now() + std::chrono::seconds(10);
    o.job_identity = kJob;
    o.limits.max_bytes = std::size_t{64} << 20;
    o.limits.max_input_bytes = std::size_t{64} << 20;
    p->store = bs::make_tcp_store(o);
    p->port = bs::tcp_store_port(*p->store);
    p->store->set_string(kHealthKey, "ok");
    return p;
  }();
  return *s;
}

std::vector<std::uint8_t> valid_hello() {
  const std::string job = kJob;
  std::vector<std::uint8_t> h(d::kHelloBytes + job.size());
  d::put_u32(h.data(), d::kStoreMagic0);
  d::put_u32(h.data() + 4, d::kStoreMagic1);
  d::put_u32(h.data() + 8, d::kStoreProtocolVersion);
  d::put_u16(h.data() + 12, static_cast<std::uint16_t>(job.size()));
  d::put_u16(h.data() + 14, 0);
  for (std::size_t i = 0; i < d::kNonceBytes; ++i) h[16 + i] = static_cast<std::uint8_t>(i * 13);
  std::memcpy(h.data() + d::kHelloBytes, job.data(), job.size());
  return h;
}

void send_all(int fd, const std::uint8_t* p, std::size_t n) {
  while (n > 0) {
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, 50) <= 0) return;  // the server stopped reading: fine
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k <= 0) return;
    p += k;
    n -= static_cast<std::size_t>(k);
  }
}

// The server still answers a real client: the key set at start-up reads back (fuzzed
// requests may fill the store, so nothing new is written here).
void health_check(Server& s) {
  if (s.store->get_string(kHealthKey, ringlet::Clock::now() + std::chrono::seconds(5)) != "ok") {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Server& s = server();
  if (size == 0) return 0;
  const int fd = ringlet::fuzz::dial_loopback(static_cast<std::uint16_t>(s.port));
  if ((data[0] & 1) != 0) {
    const auto h = valid_hello();
    send_all(fd, h.data(), h.size());
  }
  send_all(fd, data + 1, size - 1);
  ::shutdown(fd, SHUT_WR);
  // Read what comes back until the server closes, for at most ~20 ms.
  char buf[4096];
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          end - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) break;
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) break;
    if (::recv(fd, buf, sizeof buf, 0) <= 0) break;
  }
  ::close(fd);
  if (++s.inputs % 64 == 0) health_check(s);
  return 0;
}
