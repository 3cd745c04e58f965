// SPDX-License-Identifier: Apache-2.0
// One rank of the cross-host test: exchanges endpoints over TCP on the test link, then runs the
// ping-pong of every opcode over the emulated NICs, whose wire is the shared socket folder.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>

#include "emu_test_util.hpp"

using namespace emutest;

namespace {

int tcp_server(const char* ip, int port) {
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, ip, &a.sin_addr);
  if (::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(ls, 1) != 0)
    return -1;
  pollfd p{ls, POLLIN, 0};
  if (::poll(&p, 1, 20000) != 1) return -1;
  int fd = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(ls);
  return fd;
}

int tcp_client(const char* ip, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, ip, &a.sin_addr);
  // The server may not listen yet: retry for a bounded time.
  for (int i = 0; i < 200; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) return fd;
    ::close(fd);
    ::usleep(50000);
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s server|client IP PORT\n", argv[0]);
    return 2;
  }
  bool server = std::string(argv[1]) == "server";
  int port = std::atoi(argv[3]);
  int oob = server ? tcp_server(argv[2], port) : tcp_client(argv[2], port);
  if (oob < 0) {
    std::perror("out-of-band connection");
    return 1;
  }
  // Proof that the ranks sit in different network namespaces (so no abstract socket between
  // them would work): each sends the inode of its own.
  struct stat st {};
  ::stat("/proc/self/ns/net", &st);
  uint64_t mine = st.st_ino, theirs = 0;
  if (!oob_io(oob, &mine, sizeof(mine), true) || !oob_io(oob, &theirs, sizeof(theirs), false))
    return 1;
  if (mine == theirs) {
    std::fprintf(stderr, "both ranks are in one network namespace\n");
    return 1;
  }
  const ibv_wr_opcode ops[] = {IBV_WR_SEND, IBV_WR_SEND_WITH_IMM, IBV_WR_RDMA_WRITE,
                               IBV_WR_RDMA_WRITE_WITH_IMM};
  int failures = 0;
  for (ibv_wr_opcode op : ops) {
    for (bool inl : {false, true}) {
      Rank r;
      Endpoint peer;
      std::string err;
      if (!r.open() || !r.exchange_and_connect(oob, &peer))
        err = r.error;
      else
        err = pingpong(r, peer, server ? 0 : 1, op, inl, 40, inl ? 100 : 20000);
      char done = 1;
      if (!oob_io(oob, &done, 1, true) || !oob_io(oob, &done, 1, false)) err += " final sync";
      std::printf("%s op %d inline %d: %s\n", server ? "server" : "client", static_cast<int>(op),
                  inl ? 1 : 0, err.empty() ? "ok" : err.c_str());
      if (!err.empty()) ++failures;
    }
  }
  ::close(oob);
  return failures ? 1 : 0;
}
