// SPDX-License-Identifier: Apache-2.0
// A blocking loopback connection for the socket-driven fuzz targets. libFuzzer's -timeout
// alarm (SIGALRM, every second) can interrupt connect(); the connection then completes in
// the background, so an EINTR waits for it as connect(2) says. Any other failure aborts.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ringlet::fuzz {

inline int dial_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) std::abort();
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
  int err = errno;
  if (err == EINTR) {
    pollfd pfd{fd, POLLOUT, 0};
    socklen_t len = sizeof err;
    if (::poll(&pfd, 1, 5000) != 1 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
      err = ETIMEDOUT;
    }
  }
  if (err != 0) {
    std::fprintf(stderr, "fuzz: connect to 127.0.0.1:%u: %s\n", port, std::strerror(err));
    std::abort();
  }
  return fd;
}

}  // namespace ringlet::fuzz
