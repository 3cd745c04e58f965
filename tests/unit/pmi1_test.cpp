// SPDX-License-Identifier: Apache-2.0
// The PMI-1 client (src/bootstrap/pmi1.cpp) against a scripted fake of Hydra's proxy on a
// socketpair: the command lines it sends, the replies it parses, and its errors.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "src/bootstrap/launcher_kvs.hpp"

namespace ringlet::bootstrap {
namespace {

// Reads one line from fd ("" at EOF).
std::string read_line(int fd) {
  std::string line;
  char c = 0;
  while (::read(fd, &c, 1) == 1) {
    if (c == '\n') return line;
    line += c;
  }
  return line;
}

void write_line(int fd, const std::string& s) {
  std::string l = s + "\n";
  ASSERT_EQ(::write(fd, l.data(), l.size()), static_cast<ssize_t>(l.size()));
}

struct Pair {
  int client = -1;
  int server = -1;
  Pair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    client = fds[0];
    server = fds[1];
  }
  ~Pair() {
    if (client >= 0) ::close(client);
    if (server >= 0) ::close(server);
  }
};

Deadline soon() { return Clock::now() + std::chrono::seconds(5); }

TEST(Pmi1Test, InitPutBarrierGetFinalize) {
  Pair p;
  std::vector<std::string> seen;
  std::thread hydra([&] {
    seen.push_back(read_line(p.server));
    write_line(p.server, "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0");
    seen.push_back(read_line(p.server));
    write_line(p.server, "cmd=my_kvsname kvsname=kvs_7_0");
    seen.push_back(read_line(p.server));
    write_line(p.server, "cmd=put_result rc=0 msg=success");
    seen.push_back(read_line(p.server));
    write_line(p.server, "cmd=barrier_out");
    seen.push_back(read_line(p.server));
    write_line(p.server, "cmd=get_result rc=0 msg=success value=10.0.0.1:4000");
    seen.push_back(read_line(p.server));
    write_line(p.server, "cmd=finalize_ack");
  });
  {
    auto kvs = pmi1_connect(p.client, 3, soon());
    EXPECT_EQ(kvs->job_name(), "kvs_7_0");
    kvs->put("ringlet.store", "10.0.0.1:4000");
    kvs->fence(soon());
    EXPECT_EQ(kvs->get(0, "ringlet.store", soon()), "10.0.0.1:4000");
  }
  hydra.join();
  ASSERT_EQ(seen.size(), 6u);
  EXPECT_EQ(seen[0], "cmd=init pmi_version=1 pmi_subversion=1");
  EXPECT_EQ(seen[1], "cmd=get_my_kvsname");
  EXPECT_EQ(seen[2], "cmd=put kvsname=kvs_7_0 key=ringlet.store.3 value=10.0.0.1:4000");
  EXPECT_EQ(seen[3], "cmd=barrier_in");
  EXPECT_EQ(seen[4], "cmd=get kvsname=kvs_7_0 key=ringlet.store.0");
  EXPECT_EQ(seen[5], "cmd=finalize");
}

TEST(Pmi1Test, RefusedInitAndMissingKeyAreErrors) {
  {
    Pair p;
    std::thread hydra([&] {
      read_line(p.server);
      write_line(p.server, "cmd=response_to_init rc=-1");
    });
    EXPECT_THROW(pmi1_connect(p.client, 0, soon()), Error);
    hydra.join();
  }
  Pair p;
  std::thread hydra([&] {
    read_line(p.server);
    write_line(p.server, "cmd=response_to_init rc=0");
    read_line(p.server);
    write_line(p.server, "cmd=my_kvsname kvsname=k");
    read_line(p.server);
    write_line(p.server, "cmd=get_result rc=-1 msg=key_not_found");
    read_line(p.server);
    write_line(p.server, "cmd=finalize_ack");
  });
  {
    auto kvs = pmi1_connect(p.client, 1, soon());
    try {
      kvs->get(0, "ringlet.store", soon());
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("key_not_found"), std::string::npos) << e.what();
    }
  }
  hydra.join();
}

TEST(Pmi1Test, SilentOrClosedProxyEndsByTheDeadline) {
  Pair p;
  std::thread hydra([&] {
    read_line(p.server);
    write_line(p.server, "cmd=response_to_init rc=0");
    read_line(p.server);
    write_line(p.server, "cmd=my_kvsname kvsname=k");
    read_line(p.server);  // barrier_in: never answered
    read_line(p.server);  // finalize: then the proxy goes away
    ::close(p.server);
    p.server = -1;
  });
  {
    auto kvs = pmi1_connect(p.client, 2, soon());
    const auto start = Clock::now();
    try {
      kvs->fence(Clock::now() + std::chrono::milliseconds(300));
      ADD_FAILURE() << "no timeout";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::timeout);
      EXPECT_NE(std::string(e.what()).find("barrier_in"), std::string::npos) << e.what();
    }
    EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
  }  // finalize meets a closed socket: swallowed
  hydra.join();
}

}  // namespace
}  // namespace ringlet::bootstrap
