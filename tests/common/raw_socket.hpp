// SPDX-License-Identifier: Apache-2.0
// Raw loopback sockets for the tests that talk to ringlet's servers byte by byte (the store's
// garbage and authentication tests, the tcp handshake attacks): connect, send, receive
// exactly, and the store's hello as a client would send it.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "src/bootstrap/tcp_store_protocol.hpp"
#include "src/common/unique_fd.hpp"

namespace ringlet::test {

// A blocking client socket to 127.0.0.1:port; its receives give up after 5 s.
inline UniqueFd dial_loopback(int port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<std::uint16_t>(port));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof(sin)), 0);
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// Sends all `n` bytes; false when the peer has dropped the socket.
inline bool send_bytes(int fd, const void* p, std::size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  std::size_t done = 0;
  while (done < n) {
    ssize_t r = ::send(fd, b + done, n - done, MSG_NOSIGNAL);
    if (r <= 0) return false;
    done += static_cast<std::size_t>(r);
  }
  return true;
}

// Reads exactly `n` bytes (5 s at most per read); false on close or timeout.
inline bool recv_bytes(int fd, void* p, std::size_t n) {
  auto* b = static_cast<unsigned char*>(p);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, b + got, n - got, 0);
    if (r <= 0) return false;
    got += static_cast<std::size_t>(r);
  }
  return true;
}

// A store client's hello (src/bootstrap/tcp_store_protocol.hpp): protocol `version`, the job
// `identity`, `flags` (kHelloFlagSecret), a zero nonce.
inline std::vector<std::byte> store_hello(std::uint32_t version, std::string_view identity = {},
                                          std::uint16_t flags = 0) {
  using namespace bootstrap::detail;
  std::vector<std::byte> h(kHelloBytes + identity.size());
  put_u32(h.data(), kStoreMagic0);
  put_u32(h.data() + 4, kStoreMagic1);
  put_u32(h.data() + 8, version);
  put_u16(h.data() + 12, static_cast<std::uint16_t>(identity.size()));
  put_u16(h.data() + 14, flags);
  if (!identity.empty()) std::memcpy(h.data() + kHelloBytes, identity.data(), identity.size());
  return h;
}

}  // namespace ringlet::test
