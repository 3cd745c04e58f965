// SPDX-License-Identifier: Apache-2.0
// Tests of the TCP transport: ranks run as threads of one process over loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "src/common/unique_fd.hpp"
#include "transports/tcp/transport.hpp"
#include "transports/tcp/wire.hpp"

namespace ringlet::transport {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kJob = 0x5eed;
constexpr std::size_t kMiB = std::size_t{1} << 20;

Deadline in(std::chrono::milliseconds ms) { return Clock::now() + ms; }

bool have_ipv6_loopback() {
  UniqueFd fd(::socket(AF_INET6, SOCK_STREAM, 0));
  if (!fd) return false;
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_addr = in6addr_loopback;
  return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sin6), sizeof(sin6)) == 0;
}

// The byte pattern of message `seed`: position-dependent so that shifts and swaps show.
std::vector<std::byte> pattern(std::size_t size, std::uint64_t seed) {
  std::vector<std::byte> v(size);
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (std::size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v[i] = static_cast<std::byte>(x);
  }
  return v;
}

// Exact comparison that reports the first differing index.
::testing::AssertionResult same_bytes(const std::vector<std::byte>& got,
                                      const std::vector<std::byte>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      return ::testing::AssertionFailure()
             << "first difference at byte " << i << " of " << got.size() << ": "
             << static_cast<int>(got[i]) << " != " << static_cast<int>(want[i]);
    }
  }
  return ::testing::AssertionSuccess();
}

struct GroupOptions {
  std::string address = "127.0.0.1";
  int sockets = 2;
  bool separate_directions = true;
  const std::atomic<bool>* abort_flag = nullptr;
};

// n transports, one per rank, and their address blobs.
struct Group {
  std::vector<std::unique_ptr<Transport>> transports;
  std::vector<std::vector<std::byte>> blobs;
  // conns[rank][peer]
  std::vector<std::vector<std::unique_ptr<Connection>>> conns;
};

Group make_group(int n, const GroupOptions& g = {}) {
  Group group;
  for (int r = 0; r < n; ++r) {
    TcpOptions o;
    o.rank = r;
    o.size = n;
    o.job_id = kJob;
    o.bind_address = g.address;
    o.sockets = g.sockets;
    o.separate_directions = g.separate_directions;
    o.abort_flag = g.abort_flag;
    group.transports.push_back(make_tcp_transport(o));
    group.blobs.push_back(group.transports.back()->local_address());
  }
  group.conns.resize(static_cast<std::size_t>(n));
  for (auto& row : group.conns) row.resize(static_cast<std::size_t>(n));
  return group;
}

// Runs body(rank) on one thread per rank; rethrows the first failure of a rank.
void run_ranks(int n, const std::function<void(int)>& body) {
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

// Connects every rank to each peer in peers_of(rank), in that order, all ranks at once.
void connect(Group& group, const std::function<std::vector<int>(int)>& peers_of) {
  const Deadline deadline = in(20s);
  run_ranks(static_cast<int>(group.transports.size()), [&](int r) {
    for (int p : peers_of(r)) {
      group.conns[r][p] = group.transports[r]->connect(p, group.blobs[p], deadline);
      ASSERT_EQ(group.conns[r][p]->peer(), p);
    }
  });
}

void connect_all(Group& group) {
  const int n = static_cast<int>(group.transports.size());
  connect(group, [n](int r) {
    std::vector<int> peers;
    // Different orders on different ranks: descending on odd ranks.
    for (int i = 1; i < n; ++i) peers.push_back(r % 2 ? (r + n - i) % n : (r + i) % n);
    return peers;
  });
}

// Sends each size from rank 0 to rank 1 and back; checks every byte.
void ping_pong(Group& group, const std::vector<std::size_t>& sizes) {
  run_ranks(2, [&](int r) {
    Connection& c = *group.conns[r][1 - r];
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      std::vector<std::byte> want = pattern(sizes[i], i);
      std::vector<std::byte> got(sizes[i]);
      if (r == 0) {
        c.post_send(nullptr, want, 1);
        c.post_recv(nullptr, got, 2);
        c.wait_send(1, in(60s));
        c.wait_recv(2, in(60s));
      } else {
        c.post_recv(nullptr, got, 1);
        c.wait_recv(1, in(60s));
        c.post_send(nullptr, got, 2);
        c.wait_send(2, in(60s));
      }
      ASSERT_TRUE(same_bytes(got, want)) << "size " << sizes[i] << " rank " << r;
    }
  });
}

class TcpFamilyTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "::1" && !have_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  }
};

TEST_P(TcpFamilyTest, PingPongExactContent) {
  GroupOptions g;
  g.address = GetParam();
  Group group = make_group(2, g);
  connect_all(group);
  ping_pong(group, {0, 1, 4097, kMiB, 64 * kMiB});
}

INSTANTIATE_TEST_SUITE_P(Loopback, TcpFamilyTest, ::testing::Values("127.0.0.1", "::1"),
                         [](const auto& info) {
                           return std::string(info.param == "::1" ? "ipv6" : "ipv4");
                         });

class TcpDuplexTest : public ::testing::TestWithParam<bool> {};

TEST_P(TcpDuplexTest, BothSend64MiBAtOnce) {
  GroupOptions g;
  g.separate_directions = GetParam();
  Group group = make_group(2, g);
  connect_all(group);
  run_ranks(2, [&](int r) {
    Connection& c = *group.conns[r][1 - r];
    std::vector<std::byte> out = pattern(64 * kMiB, 10 + r);
    std::vector<std::byte> in_buf(64 * kMiB);
    c.post_send(nullptr, out, 7);
    c.post_recv(nullptr, in_buf, 7);
    c.wait_recv(7, in(60s));
    c.wait_send(7, in(60s));
    ASSERT_TRUE(same_bytes(in_buf, pattern(64 * kMiB, 11 - r))) << "rank " << r;
  });
}

INSTANTIATE_TEST_SUITE_P(Layouts, TcpDuplexTest, ::testing::Bool(), [](const auto& info) {
  return std::string(info.param ? "separate" : "shared");
});

TEST(TcpTransportTest, RingOfFourPipelinedWithTagReuse) {
  constexpr int kRanks = 4;
  constexpr std::size_t kSlices = 64;
  constexpr std::size_t kSlice = 64 * 1024 + 3;
  constexpr std::uint64_t kWindow = 4;  // tags 0..3, reused
  Group group = make_group(kRanks);
  connect(group, [](int r) {
    return std::vector<int>{(r + 1) % kRanks, (r + kRanks - 1) % kRanks};
  });
  run_ranks(kRanks, [&](int r) {
    Connection& right = *group.conns[r][(r + 1) % kRanks];
    Connection& left = *group.conns[r][(r + kRanks - 1) % kRanks];
    const int from = (r + kRanks - 1) % kRanks;
    std::vector<std::vector<std::byte>> out(kSlices);
    std::vector<std::vector<std::byte>> got(kSlices, std::vector<std::byte>(kSlice));
    for (std::size_t s = 0; s < kSlices; ++s) out[s] = pattern(kSlice, 1000 * r + s);
    for (std::size_t s = 0; s < kSlices; ++s) {
      if (s >= kWindow) {
        right.wait_send((s - kWindow) % kWindow, in(30s));
        left.wait_recv((s - kWindow) % kWindow, in(30s));
      }
      right.post_send(nullptr, out[s], s % kWindow);
      left.post_recv(nullptr, got[s], s % kWindow);
    }
    for (std::size_t s = kSlices - kWindow; s < kSlices; ++s) {
      right.wait_send(s % kWindow, in(30s));
      left.wait_recv(s % kWindow, in(30s));
    }
    for (std::size_t s = 0; s < kSlices; ++s) {
      ASSERT_TRUE(same_bytes(got[s], pattern(kSlice, 1000 * from + s)))
          << "rank " << r << " slice " << s;
    }
  });
}

class TcpSocketsTest : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(TcpSocketsTest, ManyMessagesAcrossSockets) {
  GroupOptions g;
  g.sockets = std::get<0>(GetParam());
  g.separate_directions = std::get<1>(GetParam());
  Group group = make_group(2, g);
  connect_all(group);
  // 7 messages of different sizes: not a multiple of any socket count; all posted at once.
  const std::vector<std::size_t> sizes = {5, 0, 300000, 1, 4097, 2 * kMiB + 1, 17};
  run_ranks(2, [&](int r) {
    Connection& c = *group.conns[r][1 - r];
    std::vector<std::vector<std::byte>> out, got;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      out.push_back(pattern(sizes[i], 100 * r + i));
      got.emplace_back(sizes[i]);
    }
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      c.post_send(nullptr, out[i], 1000 + i);
      c.post_recv(nullptr, got[i], 2000 + i);
    }
    // Complete in reverse order, partly through test_*.
    for (std::size_t k = sizes.size(); k-- > 0;) {
      c.wait_recv(2000 + k, in(30s));
      while (!c.test_send(1000 + k)) {
      }
    }
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      ASSERT_TRUE(same_bytes(got[i], pattern(sizes[i], 100 * (1 - r) + i)))
          << "rank " << r << " message " << i;
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Counts, TcpSocketsTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4), ::testing::Bool()),
                         [](const auto& info) {
                           return "k" + std::to_string(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "_separate" : "_shared");
                         });

// The header of an empty message is read while no receive is posted; the receive posted
// afterwards must complete although poll(2) has nothing more to report.
TEST(TcpTransportTest, MessageThatArrivedBeforeItsReceiveCompletes) {
  GroupOptions g;
  g.sockets = 1;
  Group group = make_group(2, g);
  connect_all(group);
  std::vector<std::byte> one = pattern(1, 9), got_one(1), got_empty, got_tail(3);
  std::vector<std::byte> tail = pattern(3, 8);
  Connection& tx = *group.conns[0][1];
  Connection& rx = *group.conns[1][0];
  tx.post_send(nullptr, one, 1);
  tx.post_send(nullptr, std::span<const std::byte>(), 2);
  tx.wait_send(1, in(5s));
  tx.wait_send(2, in(5s));
  std::this_thread::sleep_for(50ms);
  rx.post_recv(nullptr, got_one, 1);
  rx.wait_recv(1, in(5s));
  rx.post_recv(nullptr, got_empty, 2);
  rx.wait_recv(2, in(5s));
  tx.post_send(nullptr, tail, 3);
  tx.wait_send(3, in(5s));
  rx.post_recv(nullptr, got_tail, 3);
  rx.wait_recv(3, in(5s));
  EXPECT_TRUE(same_bytes(got_one, one));
  EXPECT_TRUE(same_bytes(got_tail, tail));
}

TEST(TcpTransportTest, PeerClosingMidTransferIsPeerLostQuickly) {
  Group group = make_group(2);
  connect_all(group);
  std::vector<std::byte> out = pattern(64 * kMiB, 3);
  std::vector<std::byte> got(64 * kMiB);
  group.conns[1][0]->post_recv(nullptr, got, 1);
  group.conns[0][1]->post_send(nullptr, out, 1);
  EXPECT_FALSE(group.conns[0][1]->test_send(1));
  group.conns[0][1].reset();
  group.transports[0].reset();
  auto start = Clock::now();
  try {
    group.conns[1][0]->wait_recv(1, in(60s));
    FAIL() << "wait_recv returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::peer_lost) << e.what();
    EXPECT_NE(std::string(e.what()).find("peer 0"), std::string::npos) << e.what();
    EXPECT_EQ(e.ranks(), std::vector<int>{0});
  }
  EXPECT_LT(Clock::now() - start, 5s);
}

TEST(TcpTransportTest, SendingToAPeerThatClosedIsPeerLost) {
  Group group = make_group(2);
  connect_all(group);
  std::vector<std::byte> out = pattern(64 * kMiB, 4);
  group.conns[0][1]->post_send(nullptr, out, 1);  // more than the socket buffers hold
  group.conns[1][0].reset();
  group.transports[1].reset();
  auto start = Clock::now();
  try {
    group.conns[0][1]->wait_send(1, in(60s));
    FAIL() << "wait_send returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::peer_lost) << e.what();
    EXPECT_EQ(e.ranks(), std::vector<int>{1});
  }
  EXPECT_LT(Clock::now() - start, 5s);
}

TEST(TcpTransportTest, PeerLostFailsOnlyItsOwnConnection) {
  Group group = make_group(3);
  connect_all(group);
  std::vector<std::byte> from0(1000), from2(1000);
  group.conns[1][0]->post_recv(nullptr, from0, 1);
  group.conns[1][2]->post_recv(nullptr, from2, 1);
  group.conns[0][1].reset();
  group.conns[0][2].reset();
  group.transports[0].reset();
  // The wait on the lost peer fails at once, naming it.
  auto start = Clock::now();
  try {
    group.conns[1][0]->wait_recv(1, in(60s));
    FAIL() << "wait_recv returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::peer_lost) << e.what();
    EXPECT_EQ(e.ranks(), std::vector<int>{0});
  }
  EXPECT_LT(Clock::now() - start, 5s);
  // The healthy peer's message still arrives.
  std::vector<std::byte> out = pattern(1000, 9);
  group.conns[2][1]->post_send(nullptr, out, 1);
  group.conns[2][1]->wait_send(1, in(10s));
  group.conns[1][2]->wait_recv(1, in(10s));
  EXPECT_EQ(from2, out);
}

TEST(TcpTransportTest, ErrorFrameFailsItsConnectionAfterEarlierData) {
  Group group = make_group(3);
  connect_all(group);
  // Rank 0 sends a message, then reports an error (as a rank that finished one collective
  // and failed in the next); rank 1 is meanwhile busy with rank 2.
  std::vector<std::byte> out = pattern(64 * 1024, 3);  // fits the socket buffers
  group.conns[0][1]->post_send(nullptr, out, 1);
  group.conns[0][1]->wait_send(1, in(10s));
  group.conns[0][1]->send_error(ErrorCode::mismatch, "rank 0 disagrees on the count");
  std::vector<std::byte> from2(10);
  group.conns[1][2]->post_recv(nullptr, from2, 5);
  std::thread sender([&] {
    std::this_thread::sleep_for(50ms);
    std::vector<std::byte> ten = pattern(10, 4);
    group.conns[2][1]->post_send(nullptr, ten, 5);
    group.conns[2][1]->wait_send(5, in(10s));
  });
  // Rank 0's error does not fail the wait on rank 2.
  group.conns[1][2]->wait_recv(5, in(10s));
  sender.join();
  EXPECT_EQ(from2, pattern(10, 4));
  // What rank 0 sent before its error is delivered whole.
  std::vector<std::byte> got(out.size());
  group.conns[1][0]->post_recv(nullptr, got, 1);
  group.conns[1][0]->wait_recv(1, in(10s));
  EXPECT_EQ(got, out);
  // The next receive from rank 0 can never complete: it throws rank 0's error at once.
  auto start = Clock::now();
  std::vector<std::byte> more(1);
  group.conns[1][0]->post_recv(nullptr, more, 6);
  try {
    group.conns[1][0]->wait_recv(6, in(30s));
    FAIL() << "wait_recv returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::mismatch);
    // std::system_error appends the category's text.
    EXPECT_EQ(std::string(e.what()).rfind("rank 0 disagrees on the count", 0), 0u) << e.what();
    EXPECT_EQ(e.ranks(), std::vector<int>{0});
  }
  EXPECT_LT(Clock::now() - start, 5s);
  // The error sticks on that connection.
  std::vector<std::byte> again(1);
  group.conns[1][0]->post_recv(nullptr, again, 7);
  EXPECT_THROW(group.conns[1][0]->test_recv(7), Error);
}

TEST(TcpTransportTest, LengthMismatchIsMismatch) {
  Group group = make_group(2);
  connect_all(group);
  std::vector<std::byte> out = pattern(100, 1);
  std::vector<std::byte> got(200);
  group.conns[0][1]->post_send(nullptr, out, 1);
  group.conns[1][0]->post_recv(nullptr, got, 1);
  try {
    group.conns[1][0]->wait_recv(1, in(10s));
    FAIL() << "wait_recv returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::mismatch);
    EXPECT_NE(std::string(e.what()).find("peer 0 sent a message of 100 bytes where 200 were "
                                         "expected"),
              std::string::npos)
        << e.what();
  }
}

TEST(TcpTransportTest, WaitTimesOutWhenThePeerNeverSends) {
  Group group = make_group(2);
  connect_all(group);
  std::vector<std::byte> got(8);
  group.conns[1][0]->post_recv(nullptr, got, 1);
  auto start = Clock::now();
  try {
    group.conns[1][0]->wait_recv(1, in(200ms));
    FAIL() << "wait_recv returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::timeout);
    EXPECT_NE(std::string(e.what()).find("for peer 0"), std::string::npos) << e.what();
  }
  auto took = Clock::now() - start;
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 2s);
}

TEST(TcpTransportTest, AbortAndInterruptWakeABlockedWait) {
  std::atomic<bool> abort_flag{false};
  GroupOptions g;
  g.abort_flag = &abort_flag;
  Group group = make_group(2, g);
  connect_all(group);
  std::vector<std::byte> got(8);
  group.conns[1][0]->post_recv(nullptr, got, 1);
  std::thread aborter([&] {
    std::this_thread::sleep_for(100ms);
    abort_flag.store(true);
    group.transports[1]->interrupt();
  });
  auto start = Clock::now();
  try {
    group.conns[1][0]->wait_recv(1, in(30s));
    FAIL() << "wait_recv returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::aborted);
  }
  aborter.join();
  EXPECT_LT(Clock::now() - start, 2s);
}

TEST(TcpTransportTest, AbortWakesAConnectThatWaitsForItsPeer) {
  std::atomic<bool> abort_flag{false};
  GroupOptions g;
  g.abort_flag = &abort_flag;
  Group group = make_group(2, g);
  std::thread aborter([&] {
    std::this_thread::sleep_for(100ms);
    abort_flag.store(true);
    group.transports[1]->interrupt();
  });
  auto start = Clock::now();
  try {
    group.transports[1]->connect(0, group.blobs[0], in(30s));
    FAIL() << "connect returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::aborted);
  }
  aborter.join();
  EXPECT_LT(Clock::now() - start, 2s);
}

// A raw client socket to a transport's listening address.
UniqueFd dial(const std::vector<std::byte>& blob) {
  auto b = tcp::AddressBlob::decode(blob);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(b.port);
  std::memcpy(&sin.sin_addr, b.addr.data(), 4);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
  EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof(sin)), 0);
  return fd;
}

TEST(TcpTransportTest, StrangersAreDroppedAndTheJobConnects) {
  Group group = make_group(2);
  // Rank 1 accepts. Before rank 0 connects: garbage, a silent client, a wrong job.
  UniqueFd garbage = dial(group.blobs[1]);
  std::vector<unsigned char> junk(200, 0xab);
  ASSERT_EQ(::send(garbage.get(), junk.data(), junk.size(), 0), 200);
  UniqueFd silent = dial(group.blobs[1]);
  UniqueFd other_job = dial(group.blobs[1]);
  tcp::Handshake h;
  h.job_id = kJob + 1;
  h.from_rank = 0;
  h.to_rank = 1;
  h.count = 5;
  unsigned char buf[tcp::kHandshakeBytes];
  h.encode(buf);
  ASSERT_EQ(::send(other_job.get(), buf, sizeof(buf), 0), 64);
  auto start = Clock::now();
  connect_all(group);
  EXPECT_LT(Clock::now() - start, 2s);  // not held up by the silent client
  ping_pong(group, {1, 4097});
}

TEST(TcpTransportTest, ProtocolVersionMismatchNamesBothVersions) {
  Group group = make_group(2);
  UniqueFd fake = dial(group.blobs[1]);
  tcp::Handshake h;
  h.version = 99;
  h.job_id = kJob;
  h.from_rank = 0;
  h.to_rank = 1;
  h.count = 5;
  unsigned char buf[tcp::kHandshakeBytes];
  h.encode(buf);
  ASSERT_EQ(::send(fake.get(), buf, sizeof(buf), 0), 64);
  try {
    group.transports[1]->connect(0, group.blobs[0], in(10s));
    FAIL() << "connect returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::mismatch);
    std::string what = e.what();
    EXPECT_NE(what.find("version 99"), std::string::npos) << what;
    EXPECT_NE(what.find("version 1"), std::string::npos) << what;
  }
  // The active side sees the version in the address blob.
  auto blob = group.blobs[1];
  tcp::put_u32(reinterpret_cast<unsigned char*>(blob.data()) + 4, 7);
  try {
    group.transports[0]->connect(1, blob, in(10s));
    FAIL() << "connect returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::mismatch);
    EXPECT_NE(std::string(e.what()).find("version 7"), std::string::npos) << e.what();
  }
}

TEST(TcpTransportTest, ConnectTimesOutWhenThePeerNeverConnects) {
  Group group = make_group(2);
  auto start = Clock::now();
  try {
    group.transports[1]->connect(0, group.blobs[0], in(300ms));
    FAIL() << "connect returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::timeout);
  }
  EXPECT_LT(Clock::now() - start, 3s);
}

TEST(TcpInterfacesTest, Selection) {
  auto lo = select_interfaces("lo");
  ASSERT_FALSE(lo.empty());
  for (const auto& a : lo) EXPECT_EQ(a.name.rfind("lo", 0), 0u) << a.name;
  EXPECT_EQ(lo.front().address, "127.0.0.1");
  auto exact = select_interfaces("=lo");
  ASSERT_FALSE(exact.empty());
  for (const auto& a : exact) EXPECT_EQ(a.name, "lo");
  try {
    for (const auto& a : select_interfaces("^lo")) EXPECT_NE(a.name.rfind("lo", 0), 0u);
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::invalid_argument);  // only loopback on this host
  }
  try {
    select_interfaces("=no-such-interface0");
    FAIL() << "select_interfaces returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::invalid_argument);
    std::string what = e.what();
    EXPECT_NE(what.find("=no-such-interface0"), std::string::npos) << what;
    EXPECT_NE(what.find("lo (127.0.0.1)"), std::string::npos) << what;
  }
  EXPECT_FALSE(select_interfaces("").empty());
}

}  // namespace
}  // namespace ringlet::transport
