// SPDX-License-Identifier: Apache-2.0
// The rdma transport on the emulated device (tests/verbs_emulator): ranks run as threads of
// one process, each with its own emulated NIC context, loaded through
// RINGLET_IBVERBS_LIBRARY exactly as production loads libibverbs.so.1.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "ringlet_verbs_emu.h"
#include "src/bootstrap/store.hpp"
#include "src/common/str_cat.hpp"
#include "src/job_layout.hpp"
#include "tests/common/bytes.hpp"
#include "transports/factory.hpp"
#include "transports/rdma/connection.hpp"
#include "transports/rdma/memory_region.hpp"
#include "transports/rdma/transport.hpp"

namespace ringlet::transport {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kJob = 0x5eed;
constexpr std::size_t kSlot = kRdmaSlotBytes;

Deadline in(std::chrono::milliseconds ms) { return Clock::now() + ms; }

std::string library() {
  const char* lib = std::getenv("RINGLET_IBVERBS_LIBRARY");
  return lib != nullptr ? lib : "";
}

using test::pattern;
using test::same_bytes;

// A TCP port free on loopback now (for a rendezvous store).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin));
  socklen_t len = sizeof(sin);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  ::close(fd);
  return ntohs(sin.sin_port);
}

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

struct Group {
  std::shared_ptr<bootstrap::Store> store = bootstrap::make_hash_store();
  std::vector<std::unique_ptr<Transport>> transports;
  std::vector<std::vector<std::byte>> blobs;
  std::vector<std::vector<std::unique_ptr<Connection>>> conns;  // [rank][peer]

  Connection& c(int r, int p) { return *conns[r][p]; }
  rdma::Channel& channel(int r, int p) {
    return dynamic_cast<rdma::RdmaConnection&>(*conns[r][p]).channel_for_testing();
  }
};

RdmaOptions options_for(Group& g, int r, int n, int qps, const std::atomic<bool>* abort_flag) {
  RdmaOptions o;
  o.rank = r;
  o.size = n;
  o.job_id = kJob;
  o.abort_flag = abort_flag;
  o.library = library();
  o.qps = qps;
  auto store = g.store;
  o.publish = [store](const std::string& key, std::span<const std::byte> v) { store->set(key, v); };
  o.lookup = [store](const std::string& key, Deadline d) { return store->get(key, d); };
  return o;
}

// n transports, every pair connected in ascending peer order (as the communicator does).
Group make_group(int n, int qps = 2, const std::atomic<bool>* abort_flag = nullptr) {
  Group g;
  for (int r = 0; r < n; ++r) {
    g.transports.push_back(make_rdma_transport(options_for(g, r, n, qps, abort_flag)));
    g.blobs.push_back(g.transports.back()->local_address());
  }
  g.conns.resize(static_cast<std::size_t>(n));
  for (auto& row : g.conns) row.resize(static_cast<std::size_t>(n));
  run_ranks(n, [&](int r) {
    for (int p = 0; p < n; ++p) {
      if (p != r) g.conns[r][p] = g.transports[r]->connect(p, g.blobs[p], in(20s));
    }
  });
  return g;
}

class RdmaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (library().empty()) GTEST_SKIP() << "RINGLET_IBVERBS_LIBRARY names no emulator";
  }
};

class RdmaQpsTest : public RdmaTest, public ::testing::WithParamInterface<int> {};

// Every size class (empty, inline, one slot, several slots, not a multiple of the slot)
// both ways, exact bytes, with 1 and 3 queue pairs per connection.
TEST_P(RdmaQpsTest, PingPongExactContent) {
  Group g = make_group(2, GetParam());
  const std::vector<std::size_t> sizes = {
      0,         1,     100,       128,           129,           4096,
      kSlot - 1, kSlot, kSlot + 1, 3 * kSlot + 7, 9 * kSlot + 3, 33 * kSlot};
  run_ranks(2, [&](int r) {
    Connection& c = g.c(r, 1 - r);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      std::vector<std::byte> want = pattern(sizes[i], i);
      std::vector<std::byte> got(sizes[i]);
      if (r == 0) {
        Request send = c.post_send(want, nullptr);
        Request recv = c.post_recv(got, nullptr);
        c.wait(send, in(60s));
        c.wait(recv, in(60s));
      } else {
        c.wait(c.post_recv(got, nullptr), in(60s));
        c.wait(c.post_send(got, nullptr), in(60s));
      }
      ASSERT_TRUE(same_bytes(got, want)) << "size " << sizes[i] << " rank " << r;
    }
  });
}
INSTANTIATE_TEST_SUITE_P(Qps, RdmaQpsTest, ::testing::Values(1, 3));

// A ring of n ranks, many messages in flight both ways, FIFO with exact content.
TEST_F(RdmaTest, RingsOfTwoToEightRanksAreFifoAndExact) {
  for (int n : {2, 3, 5, 8}) {
    Group g = make_group(n);
    run_ranks(n, [&](int r) {
      Connection& right = g.c(r, (r + 1) % n);
      Connection& left = g.c(r, (r + n - 1) % n);
      const int messages = 24;
      std::vector<std::vector<std::byte>> out, in_(messages);
      std::vector<Request> sends, recvs;
      for (int m = 0; m < messages; ++m) {
        const std::size_t size = (m * 37813u) % (3 * kSlot);
        out.push_back(pattern(size, static_cast<std::uint64_t>(r * 1000 + m)));
        in_[m].resize((m * 37813u) % (3 * kSlot));
      }
      for (int m = 0; m < messages; ++m) {
        recvs.push_back(left.post_recv(in_[m], nullptr));
        sends.push_back(right.post_send(out[m], nullptr));
      }
      for (int m = 0; m < messages; ++m) {
        left.wait(recvs[m], in(60s));
        right.wait(sends[m], in(60s));
        const int from = (r + n - 1) % n;
        ASSERT_TRUE(same_bytes(in_[m], pattern(in_[m].size(), from * 1000 + m)))
            << "ring of " << n << ", rank " << r << ", message " << m;
      }
    });
  }
}

// A receiver that posts late: the sender's 40 slot-sized sends wait for credits (8 slots),
// nothing is lost, nothing overruns, and the completions arrive in order.
TEST_F(RdmaTest, SlowReceiverExhaustsCreditsWithoutLoss) {
  Group g = make_group(2);
  const int messages = 40;
  run_ranks(2, [&](int r) {
    Connection& c = g.c(r, 1 - r);
    if (r == 0) {
      std::vector<std::vector<std::byte>> out;
      std::vector<Request> sends;
      for (int m = 0; m < messages; ++m) out.push_back(pattern(kSlot, m));
      for (int m = 0; m < messages; ++m) sends.push_back(c.post_send(out[m], nullptr));
      EXPECT_FALSE(c.test(sends.back()));
      for (auto& s : sends) c.wait(s, in(60s));
    } else {
      std::this_thread::sleep_for(300ms);
      for (int m = 0; m < messages; ++m) {
        std::vector<std::byte> got(kSlot);
        c.wait(c.post_recv(got, nullptr), in(60s));
        ASSERT_TRUE(same_bytes(got, pattern(kSlot, m))) << "message " << m;
      }
    }
  });
}

// A receiver that never posts: the sender's wait ends at its deadline, naming the peer.
TEST_F(RdmaTest, CreditsNeverReturnedIsATimeoutNamingThePeer) {
  Group g = make_group(2);
  std::vector<std::vector<std::byte>> out;
  std::vector<Request> sends;
  for (int m = 0; m < 12; ++m) out.push_back(pattern(kSlot, m));
  for (int m = 0; m < 12; ++m) sends.push_back(g.c(0, 1).post_send(out[m], nullptr));
  const auto start = Clock::now();
  try {
    g.c(0, 1).wait(sends.back(), in(800ms));
    FAIL() << "no timeout";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::timeout) << e.what();
    EXPECT_NE(std::string(e.what()).find("peer 1"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - start, 5s);
}

TEST_F(RdmaTest, LengthMismatchIsMismatch) {
  for (std::size_t sent : {std::size_t{100}, 2 * kSlot + 5}) {
    Group g = make_group(2);
    std::vector<std::byte> out = pattern(sent, 1);
    std::vector<std::byte> got(kSlot + 3);
    Request s = g.c(0, 1).post_send(out, nullptr);
    Request r = g.c(1, 0).post_recv(got, nullptr);
    try {
      g.c(1, 0).wait(r, in(20s));
      FAIL() << "no mismatch";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_code(), ErrorCode::mismatch) << e.what();
      EXPECT_NE(std::string(e.what()).find("peer 0"), std::string::npos) << e.what();
    }
    // The start of the message is readable (the fingerprint of a collective).
    EXPECT_EQ(std::memcmp(got.data(), out.data(), 64), 0);
    (void)s;
  }
}

// A failure reported by rank 0 reaches rank 1 after the data rank 0 sent before it, with its
// code, cause and origin.
TEST_F(RdmaTest, ReportedFailureArrivesAfterEarlierDataWithItsOrigin) {
  Group g = make_group(3);
  std::vector<std::byte> out = pattern(2 * kSlot + 9, 5);
  g.c(0, 1).wait(g.c(0, 1).post_send(out, nullptr), in(20s));
  g.transports[0]->control().report_failure(ErrorCode::transport, 2, "rank 2 broke");
  std::vector<std::byte> got(out.size()), more(10);
  g.c(1, 0).wait(g.c(1, 0).post_recv(got, nullptr), in(20s));
  EXPECT_TRUE(same_bytes(got, out));
  try {
    g.c(1, 0).wait(g.c(1, 0).post_recv(more, nullptr), in(20s));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::transport) << e.what();
    EXPECT_EQ(e.origin_rank(), 2) << e.what();
    EXPECT_EQ(e.cause(), "rank 2 broke");
  }
  // Rank 2's connection to rank 0 got the same report.
  std::vector<std::byte> none(1);
  EXPECT_THROW(g.c(2, 0).wait(g.c(2, 0).post_recv(none, nullptr), in(20s)), Error);
}

// A peer whose NIC context is gone: a blocked receive becomes peer_lost within seconds
// (the wait's liveness probe), and so does a send.
TEST_F(RdmaTest, LostPeerIsPeerLostNamingItQuickly) {
  Group g = make_group(2);
  g.conns[1][0].reset();
  g.transports[1].reset();
  std::vector<std::byte> got(64);
  const auto start = Clock::now();
  try {
    g.c(0, 1).wait(g.c(0, 1).post_recv(got, nullptr), in(30s));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::peer_lost) << e.what();
    EXPECT_NE(std::string(e.what()).find("peer 1"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - start, 10s);
  std::vector<std::byte> out(64);
  EXPECT_THROW(g.c(0, 1).wait(g.c(0, 1).post_send(out, nullptr), in(30s)), Error);
}

// A bad rkey: the writer gets a remote access error naming the peer; the peer's queue pair
// goes to the error state and its receive fails too, naming the writer.
TEST_F(RdmaTest, BadRkeyFailsBothSidesNamingThePeer) {
  Group g = make_group(2, 1);
  g.channel(0, 1).remote_rkey ^= 0x5a5a;
  std::vector<std::byte> out = pattern(4096, 3), got(4096);
  Request r = g.c(1, 0).post_recv(got, nullptr);
  try {
    g.c(0, 1).wait(g.c(0, 1).post_send(out, nullptr), in(20s));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::transport) << e.what();
    EXPECT_NE(std::string(e.what()).find("peer 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("remote access"), std::string::npos) << e.what();
  }
  try {
    g.c(1, 0).wait(r, in(20s));
    FAIL() << "no error on the responder";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("peer 0"), std::string::npos) << e.what();
  }
}

// A queue pair forced to the error state (a catastrophic error): both directions fail with
// transport errors naming the peer, nothing hangs.
TEST_F(RdmaTest, QueuePairInErrorStateIsTransportError) {
  Group g = make_group(2, 1);
  ASSERT_EQ(ringlet_emu_inject_qp_fatal(g.channel(0, 1).qps[0].qp), 0);
  std::vector<std::byte> got(100), out(100);
  try {
    g.c(0, 1).wait(g.c(0, 1).post_recv(got, nullptr), in(20s));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::transport) << e.what();
    EXPECT_NE(std::string(e.what()).find("peer 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(g.c(0, 1).wait(g.c(0, 1).post_send(out, nullptr), in(20s)), Error);
  // The peer notices too (its writes or its probe get no answer).
  EXPECT_THROW(g.c(1, 0).wait(g.c(1, 0).post_send(out, nullptr), in(20s)), Error);
}

// Registered memory is used in place by sends (the emulator reads it), other memory is
// staged; once deregistered, a buffer is never touched by the NIC again.
TEST_F(RdmaTest, RegisteredSendsAreInPlaceAndDeregisteredNeverTouched) {
  Group g = make_group(2);
  std::vector<std::byte> buf = pattern(3 * kSlot, 9), got(3 * kSlot);
  auto mr = g.transports[0]->register_memory(buf, MemoryKind::host);
  const std::uint64_t before = ringlet_emu_range_access_count(buf.data(), buf.size());
  Request r = g.c(1, 0).post_recv(got, nullptr);
  g.c(0, 1).wait(g.c(0, 1).post_send(buf, mr.get()), in(20s));
  g.c(1, 0).wait(r, in(20s));
  EXPECT_TRUE(same_bytes(got, buf));
  const std::uint64_t used = ringlet_emu_range_access_count(buf.data(), buf.size());
  EXPECT_GT(used, before) << "the registered buffer was not read in place";
  mr.reset();
  // Unregistered now: the same buffer is staged; the NIC never reads it again.
  for (int i = 0; i < 3; ++i) {
    Request r2 = g.c(1, 0).post_recv(got, nullptr);
    g.c(0, 1).wait(g.c(0, 1).post_send(buf, nullptr), in(20s));
    g.c(1, 0).wait(r2, in(20s));
    EXPECT_TRUE(same_bytes(got, buf));
  }
  EXPECT_EQ(ringlet_emu_range_access_count(buf.data(), buf.size()), used);
  // Device memory is not postable (GPUDirect is unverified).
  EXPECT_THROW(g.transports[0]->register_memory(buf, MemoryKind::cuda), Error);
}

// A user registration (Communicator::register_buffer) is found by posts that give no region,
// as the algorithms post user buffers: sends from inside it are read in place; once the
// region is destroyed the same posts are staged and the NIC never touches the buffer again.
TEST_F(RdmaTest, UserRegistrationsAreUsedInPlaceByPostsWithoutARegion) {
  Group g = make_group(2);
  std::vector<std::byte> buf = pattern(4 * kSlot + 100, 11);
  auto mr = g.transports[0]->register_user_memory(buf, MemoryKind::host);
  ASSERT_NE(mr, nullptr);
  const std::uint32_t lkey = dynamic_cast<const rdma::RdmaMemoryRegion&>(*mr).lkey();
  // A slice inside the buffer, as the ring posts it.
  const std::span<const std::byte> slice(buf.data() + 1000, 2 * kSlot + 7);
  std::vector<std::byte> got(slice.size());
  std::vector<std::byte> want(slice.begin(), slice.end());
  Request r = g.c(1, 0).post_recv(got, nullptr);
  g.c(0, 1).wait(g.c(0, 1).post_send(slice, nullptr), in(20s));
  g.c(1, 0).wait(r, in(20s));
  EXPECT_TRUE(same_bytes(got, want));
  ringlet_emu_access_counts counts{};
  ASSERT_EQ(ringlet_emu_mr_access_count(lkey, &counts), 0);
  EXPECT_GE(counts.local_reads, 1u) << "the user buffer was not read in place";
  EXPECT_GE(counts.bytes, 2 * kSlot);  // the two full chunks; the 7-byte tail goes inline
  const std::uint64_t used = ringlet_emu_range_access_count(buf.data(), buf.size());
  mr.reset();
  for (int i = 0; i < 2; ++i) {
    Request r2 = g.c(1, 0).post_recv(got, nullptr);
    g.c(0, 1).wait(g.c(0, 1).post_send(slice, nullptr), in(20s));
    g.c(1, 0).wait(r2, in(20s));
    EXPECT_TRUE(same_bytes(got, want));
  }
  EXPECT_EQ(ringlet_emu_range_access_count(buf.data(), buf.size()), used);
  ASSERT_EQ(ringlet_emu_mr_access_count(lkey, &counts), 0);
  EXPECT_EQ(counts.after_dereg, 0u);
  EXPECT_EQ(counts.registered, 0);
}

// The public API end to end: a registered buffer's allreduce over rdma is exact and its sends
// read the buffer in place; over tcp register_buffer is a no-op.
TEST_F(RdmaTest, CommunicatorRegisterBufferIsUsedInPlaceOverRdmaAndANoOpOverTcp) {
  for (const std::string transport : {"rdma", "tcp"}) {
    const int port = free_port();
    constexpr int n = 2;
    constexpr std::size_t count = (std::size_t{3} << 20) / sizeof(float) + 3;
    std::vector<std::vector<float>> data(n, std::vector<float>(count));
    std::vector<std::uint64_t> accesses(n);
    std::vector<bool> registered(n);
    run_ranks(n, [&](int r) {
      Options o;
      o.rank = r;
      o.size = n;
      o.store = "127.0.0.1:" + std::to_string(port);
      o.node_id = "node" + std::to_string(r);
      o.transport = transport;
      o.timeout = 60s;
      Communicator c = Communicator::create(o);
      auto& x = data[static_cast<std::size_t>(r)];
      for (std::size_t i = 0; i < count; ++i) x[i] = static_cast<float>((i % 13) + r);
      Registration reg = c.register_buffer(Tensor::of(std::span(x)));
      registered[static_cast<std::size_t>(r)] = reg.registered();
      const std::uint64_t before =
          ringlet_emu_range_access_count(x.data(), x.size() * sizeof(float));
      c.allreduce(std::span(x));
      accesses[static_cast<std::size_t>(r)] =
          ringlet_emu_range_access_count(x.data(), x.size() * sizeof(float)) - before;
      reg.reset();
      c.barrier();
    });
    for (int r = 0; r < n; ++r) {
      const auto& x = data[static_cast<std::size_t>(r)];
      for (std::size_t i = 0; i < count; ++i) {
        ASSERT_EQ(x[i], static_cast<float>(n * static_cast<int>(i % 13) + 1))
            << transport << " " << i;
      }
      EXPECT_EQ(registered[static_cast<std::size_t>(r)], transport == "rdma") << transport;
      if (transport == "rdma") {
        EXPECT_GT(accesses[static_cast<std::size_t>(r)], 0u) << "rank " << r << " staged its sends";
      } else {
        EXPECT_EQ(accesses[static_cast<std::size_t>(r)], 0u);
      }
    }
  }
}

TEST_F(RdmaTest, AbortAndInterruptWakeABlockedWait) {
  std::atomic<bool> abort_flag{false};
  Group g = make_group(2, 2, &abort_flag);
  std::vector<std::byte> got(10);
  Request r = g.c(0, 1).post_recv(got, nullptr);
  std::thread t([&] {
    std::this_thread::sleep_for(200ms);
    abort_flag = true;
    g.transports[0]->interrupt();
  });
  const auto start = Clock::now();
  try {
    g.c(0, 1).wait(r, in(30s));
    FAIL() << "no abort";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::aborted) << e.what();
  }
  t.join();
  EXPECT_LT(Clock::now() - start, 5s);
}

TEST_F(RdmaTest, TraitsOfRdma) {
  Group g = make_group(2);
  const TransportTraits t = g.transports[0]->traits();
  EXPECT_EQ(g.transports[0]->name(), "rdma");
  EXPECT_EQ(t.slice_bytes, kRdmaSlotBytes);
  EXPECT_EQ(t.max_outstanding, 0u);  // posts beyond the credits queue in user space
  EXPECT_TRUE(t.needs_registration);
  EXPECT_FALSE(t.device_memory);
}

TEST(RdmaSelectionTest, HcaSpecHasNcclSyntax) {
  EXPECT_TRUE(hca_selects("", "mlx5_0", 1));
  EXPECT_TRUE(hca_selects("mlx5", "mlx5_1", 1));
  EXPECT_TRUE(hca_selects("mlx5_0:1,mlx5_1", "mlx5_1", 2));
  EXPECT_FALSE(hca_selects("mlx5_0:1,mlx5_1", "mlx5_0", 2));
  EXPECT_FALSE(hca_selects("^mlx5_0", "mlx5_0", 1));
  EXPECT_TRUE(hca_selects("^mlx5_0", "mlx4_0", 1));
  EXPECT_FALSE(hca_selects("=mlx5", "mlx5_0", 1));
  EXPECT_TRUE(hca_selects("=mlx5_0", "mlx5_0", 1));
  EXPECT_TRUE(hca_selects("^=mlx5", "mlx5_0", 1));
}

TEST_F(RdmaTest, ProbeNamesWhatItFound) {
  RdmaOptions o;
  o.library = library();
  RdmaProbe p = probe_rdma(o);
  EXPECT_TRUE(p.usable) << p.reason;
  EXPECT_EQ(p.device, "rlemu0");
  o.hca = "^rlemu";
  p = probe_rdma(o);
  EXPECT_FALSE(p.usable);
  EXPECT_NE(p.reason.find("rlemu0:1 ACTIVE"), std::string::npos) << p.reason;
  o.hca = "";
  o.library = "/nonexistent/libibverbs.so.1";
  p = probe_rdma(o);
  EXPECT_FALSE(p.usable);
  EXPECT_NE(p.reason.find("cannot load"), std::string::npos) << p.reason;
}

// The factory: auto takes rdma with an active port, falls back to tcp without one; rdma
// without one is a clear transport error naming what was found, at once.
TEST_F(RdmaTest, FactoryChoosesRdmaOrFallsBackToTcp) {
  const JobLayout layout = JobLayout::from_node_ids(0, {"a", "b"});
  JobContext job;
  job.rank = 0;
  job.size = 2;
  job.job_id = kJob;
  auto store = bootstrap::make_hash_store();
  Config config;
  config.ibverbs_library = library();
  EXPECT_EQ(make_network_transport(config, layout, job, "127.0.0.1", store).transport->name(),
            "rdma");
  config.transport = "tcp";
  EXPECT_EQ(make_network_transport(config, layout, job, "127.0.0.1", store).transport->name(),
            "tcp");
  config.transport = "auto";
  config.ib_hca = "=no_such_hca";
  EXPECT_EQ(make_network_transport(config, layout, job, "127.0.0.1", store).transport->name(),
            "tcp");
  config.transport = "rdma";
  const auto start = Clock::now();
  try {
    (void)make_network_transport(config, layout, job, "127.0.0.1", store);
    FAIL() << "rdma without a selected port was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::transport) << e.what();
    EXPECT_NE(std::string(e.what()).find("rlemu0:1 ACTIVE"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - start, 5s);
}

}  // namespace
}  // namespace ringlet::transport
