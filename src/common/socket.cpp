// SPDX-License-Identifier: Apache-2.0
#include "src/common/socket.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>

#include <cerrno>

#include "src/common/net_address.hpp"

namespace ringlet::net {

std::string numeric_host(const sockaddr_storage& address) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    const auto& sin = reinterpret_cast<const sockaddr_in&>(address);
    ::inet_ntop(AF_INET, &sin.sin_addr, buf, sizeof buf);
  } else if (address.ss_family == AF_INET6) {
    const auto& sin6 = reinterpret_cast<const sockaddr_in6&>(address);
    ::inet_ntop(AF_INET6, &sin6.sin6_addr, buf, sizeof buf);
  }
  return buf;
}

int port_of(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
  }
  if (address.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port);
  }
  return 0;
}

std::string format_address(const sockaddr_storage& address) {
  return join_host_port(numeric_host(address), port_of(address));
}

void set_nodelay(int fd) noexcept {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void set_buffer_bytes(int fd, int bytes) noexcept {
  if (bytes <= 0) return;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

SendStatus send_all(int fd, const void* data, std::size_t size, Deadline deadline) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::send(fd, p + done, size - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) {  // not for a stream socket with bytes to send; do not spin on it
      errno = EIO;
      return SendStatus::failed;
    }
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) return SendStatus::closed;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return SendStatus::failed;
    if (Clock::now() >= deadline) return SendStatus::timeout;
    pollfd pfd{fd, POLLOUT, 0};
    if (::poll(&pfd, 1, ms_until(deadline, kMaxPollMs)) < 0 && errno != EINTR) {
      return SendStatus::failed;
    }
  }
  return SendStatus::ok;
}

std::size_t raise_descriptor_limit() noexcept {
  static const std::size_t limit = [] {
    rlimit r{};
    if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return std::size_t{0};
    if (r.rlim_cur < r.rlim_max) {
      rlimit raised = r;
      raised.rlim_cur = r.rlim_max;
      if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) r = raised;
    }
    return r.rlim_cur == RLIM_INFINITY ? SIZE_MAX : static_cast<std::size_t>(r.rlim_cur);
  }();
  return limit;
}

}  // namespace ringlet::net
