// SPDX-License-Identifier: Apache-2.0
// Faults: a rank killed or stopped during a collective, abort() from another thread, and
// garbage clients on the listening ports. Nobody hangs; every rank gets an error in time.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "src/bootstrap/store.hpp"
#include "src/common/str_cat.hpp"
#include "src/common/unique_fd.hpp"
#include "src/communicator.hpp"
#include "tests/multirank/rank_group.hpp"

namespace ringlet::testing {
namespace {

using namespace std::chrono_literals;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

// The slack beyond the timeout within which every rank must have its error (gloo checks
// twice the timeout; we allow the timeout plus a few seconds).
constexpr auto kSlack = 5s;

long long now_ns() {
  return duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// steady_clock is CLOCK_MONOTONIC, one clock for every process of the machine, so a time
// written to the store by one rank can be compared by another.
void publish_time(const RankContext& ctx, const std::string& key) {
  ctx.store->set_string(key, std::to_string(now_ns()));
}

milliseconds since_published(const RankContext& ctx, const std::string& key) {
  const long long then = std::stoll(ctx.store->get_string(key, Clock::now() + 30s));
  return duration_cast<milliseconds>(std::chrono::nanoseconds(now_ns() - then));
}

bool is_neighbour(int a, int b, int n) { return (a + 1) % n == b || (b + 1) % n == a; }

// Runs large allreduces until one throws; returns the error. Fails the test if none does
// within `limit`.
std::optional<Error> allreduce_until_error(Communicator& comm, std::vector<float>& buf,
                                           Clock::duration limit) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    try {
      comm.allreduce(std::span<float>(buf));
    } catch (const Error& e) {
      return e;
    }
  }
  ADD_FAILURE() << "rank " << comm.rank() << ": no error within "
                << duration_cast<milliseconds>(limit).count() << " ms";
  return std::nullopt;
}

// --- SIGKILL and SIGSTOP (processes) ---------------------------------------------------

class KillTest : public ::testing::TestWithParam<int> {};

TEST_P(KillTest, SigkillDuringLargeAllreduceGivesPeerLostEverywhere) {
  const int ranks = GetParam();
  const int victim = 1;
  constexpr auto kTimeout = 20s;
  GroupOptions go;
  go.victims = {victim};
  go.limit = 120s;
  auto group = make_rank_group(RankMode::processes);
  auto outcomes = group->run(
      ranks,
      [&](RankContext& ctx) {
        Options o;
        o.timeout = kTimeout;
        Communicator comm = ctx.create(o);
        std::vector<float> buf(std::size_t{4} << 20, 1.0f);  // 16 MiB: the ring path
        comm.allreduce(std::span<float>(buf));
        if (ctx.rank == victim) {
          std::thread killer([&] {
            std::this_thread::sleep_for(300ms);
            publish_time(ctx, "killed_at");
            ::kill(::getpid(), SIGKILL);
          });
          killer.detach();
          for (;;) comm.allreduce(std::span<float>(buf));  // ends with the process
        }
        auto err = allreduce_until_error(comm, buf, kTimeout + 60s);
        if (!err) return;
        const milliseconds took = since_published(ctx, "killed_at");
        std::cerr << "rank " << ctx.rank << " got error code "
                  << static_cast<int>(err->error_code()) << " " << took.count()
                  << " ms after the kill: " << err->what() << "\n";
        if (is_neighbour(ctx.rank, victim, ctx.size)) {
          EXPECT_EQ(err->code(), ErrorCode::peer_lost) << err->what();
        } else {
          EXPECT_TRUE(err->code() == ErrorCode::peer_lost || err->code() == ErrorCode::timeout)
              << err->what();
        }
        EXPECT_LE(took, kTimeout + kSlack) << err->what();
        // The communicator is aborted now.
        try {
          comm.barrier();
          ADD_FAILURE() << "barrier after the error succeeded";
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::aborted) << e.what();
        }
      },
      go);
  EXPECT_EQ(outcomes[victim].signal, SIGKILL);
}

INSTANTIATE_TEST_SUITE_P(Processes, KillTest, ::testing::Values(2, 3, 4),
                         [](const auto& info) { return str_cat(info.param, "ranks"); });

TEST(StopTest, SigstoppedRankGivesTimeoutOnTheOthers) {
  const int ranks = 3;
  const int victim = 2;
  constexpr auto kTimeout = 4s;
  GroupOptions go;
  go.victims = {victim};
  go.limit = 90s;
  auto group = make_rank_group(RankMode::processes);
  auto outcomes = group->run(
      ranks,
      [&](RankContext& ctx) {
        Options o;
        o.timeout = kTimeout;
        Communicator comm = ctx.create(o);
        std::vector<float> buf(std::size_t{1} << 20, 1.0f);
        comm.allreduce(std::span<float>(buf));
        if (ctx.rank == victim) {
          publish_time(ctx, "stopped_at");
          ::raise(SIGSTOP);  // the parent kills it with SIGKILL once the others have ended
          return;
        }
        auto err = allreduce_until_error(comm, buf, kTimeout + 30s);
        if (!err) return;
        const milliseconds took = since_published(ctx, "stopped_at");
        std::cerr << "rank " << ctx.rank << " got error code "
                  << static_cast<int>(err->error_code()) << " " << took.count()
                  << " ms after the stop: " << err->what() << "\n";
        EXPECT_EQ(err->code(), ErrorCode::timeout) << err->what();
        EXPECT_LE(took, kTimeout + kSlack) << err->what();
      },
      go);
  EXPECT_EQ(outcomes[victim].signal, SIGKILL);
}

// --- abort() from another thread -------------------------------------------------------

class AbortTest : public ::testing::TestWithParam<RankMode> {};

TEST_P(AbortTest, AbortFromAnotherThreadUnblocksTheCallAndThePeersGetAnError) {
  constexpr auto kTimeout = 20s;
  constexpr auto kPromptly = 5s;
  auto group = make_rank_group(GetParam());
  group->run(3, [&](RankContext& ctx) {
    Options o;
    o.timeout = kTimeout;
    Communicator comm = ctx.create(o);
    std::vector<float> buf(std::size_t{1} << 20, 1.0f);
    comm.allreduce(std::span<float>(buf));
    if (ctx.rank == 2) {
      // Rank 2 stays away, so ranks 0 and 1 block in their allreduce; it joins after the abort.
      ctx.store->get("rank0_failed", Clock::now() + 60s);
      const auto start = Clock::now();
      try {
        comm.allreduce(std::span<float>(buf));
        ADD_FAILURE() << "rank 2's allreduce after rank 0's abort succeeded";
      } catch (const Error& e) {
        EXPECT_NE(e.code(), ErrorCode::timeout) << e.what();
        EXPECT_LT(Clock::now() - start, kPromptly) << e.what();
      }
      return;
    }
    std::thread aborter;
    if (ctx.rank == 0) {
      aborter = std::thread([&] {
        std::this_thread::sleep_for(300ms);
        publish_time(ctx, "aborted_at");
        comm.abort();
      });
    }
    try {
      comm.allreduce(std::span<float>(buf));
      ADD_FAILURE() << "rank " << ctx.rank << ": the blocked allreduce returned normally";
    } catch (const Error& e) {
      const milliseconds took = since_published(ctx, "aborted_at");
      if (ctx.rank == 0) {
        EXPECT_EQ(e.code(), ErrorCode::aborted) << e.what();
      } else {
        EXPECT_EQ(e.code(), ErrorCode::peer_lost) << e.what();
      }
      EXPECT_LT(took, kPromptly) << e.what();
    }
    if (aborter.joinable()) aborter.join();
    if (ctx.rank == 0) ctx.store->set_string("rank0_failed", "1");
    try {
      comm.allreduce(std::span<float>(buf));
      ADD_FAILURE() << "rank " << ctx.rank << ": a call after the abort succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::aborted) << e.what();
    }
  });
}

TEST_P(AbortTest, AbortBeforeACallFailsItAtOnce) {
  auto group = make_rank_group(GetParam());
  group->run(2, [&](RankContext& ctx) {
    Options o;
    o.timeout = 20s;
    Communicator comm = ctx.create(o);
    if (ctx.rank == 0) comm.abort();
    std::vector<float> buf(10, 1.0f);
    const auto start = Clock::now();
    try {
      comm.allreduce(std::span<float>(buf));
      ADD_FAILURE() << "rank " << ctx.rank << ": allreduce after abort() succeeded";
    } catch (const Error& e) {
      const ErrorCode want = ctx.rank == 0 ? ErrorCode::aborted : ErrorCode::peer_lost;
      EXPECT_EQ(e.code(), want) << e.what();
      EXPECT_LT(Clock::now() - start, 5s) << e.what();
    }
  });
}

INSTANTIATE_TEST_SUITE_P(All, AbortTest, ::testing::Values(RankMode::threads, RankMode::processes),
                         [](const auto& info) { return to_string(info.param); });

// --- garbage clients -------------------------------------------------------------------

// Opens connections to 127.0.0.1:`port` that misbehave in different ways and keeps the
// ones that stay open in `keep`.
void send_garbage(int port, std::vector<UniqueFd>& keep) {
  auto open = [&]() {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return UniqueFd();
    }
    return fd;
  };
  auto send_bytes = [](const UniqueFd& fd, const std::vector<unsigned char>& data) {
    std::size_t off = 0;
    while (off < data.size()) {
      ssize_t n =
          ::send(fd.get(), data.data() + off, data.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n <= 0) return;  // the peer dropped us or its buffer is full: both fine
      off += static_cast<std::size_t>(n);
    }
  };
  // Connect and close at once.
  { UniqueFd fd = open(); }
  // Connect and say nothing.
  if (UniqueFd fd = open()) keep.push_back(std::move(fd));
  // A short burst of noise.
  if (UniqueFd fd = open()) {
    std::vector<unsigned char> noise(64);
    for (std::size_t i = 0; i < noise.size(); ++i)
      noise[i] = static_cast<unsigned char>(i * 37 + 11);
    send_bytes(fd, noise);
    keep.push_back(std::move(fd));
  }
  // A long stream of 0xff (huge lengths if read as a header).
  if (UniqueFd fd = open()) {
    send_bytes(fd, std::vector<unsigned char>(std::size_t{1} << 20, 0xff));
    keep.push_back(std::move(fd));
  }
  // Something that starts like a ringlet handshake, then stops half way.
  if (UniqueFd fd = open()) {
    send_bytes(fd, {0x52, 0x54, 0x53, 0x48, 1, 0, 0, 0, 9, 9});
    keep.push_back(std::move(fd));
  }
  // A text protocol.
  if (UniqueFd fd = open()) {
    const char* http = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    send_bytes(fd, std::vector<unsigned char>(http, http + std::strlen(http)));
    keep.push_back(std::move(fd));
  }
}

class GarbageTest : public ::testing::TestWithParam<RankMode> {};

TEST_P(GarbageTest, GarbageClientsAreDroppedAndTheJobCompletes) {
  constexpr int kRanks = 3;
  GroupOptions go;
  go.store = StoreKind::tcp;
  go.limit = 120s;
  auto group = make_rank_group(GetParam());
  group->run(
      kRanks,
      [&](RankContext& ctx) {
        const auto start = Clock::now();
        // In threads every rank shares this process's sockets: rank 0 sends for all.
        const bool sender = ctx.mode == RankMode::processes || ctx.rank == 0;
        std::vector<UniqueFd> keep;
        const int store_port = bootstrap::tcp_store_port(*ctx.store);
        ASSERT_GT(store_port, 0);
        if (sender) send_garbage(store_port, keep);
        Options o;
        o.timeout = 30s;
        Communicator comm = ctx.create(o);
        ctx.sync("created");
        if (sender) {
          auto ports = listening_ports_of_this_process();
          // Threads: the store and every rank's transport; processes: this rank's transport.
          const std::size_t want = ctx.mode == RankMode::threads ? ctx.size + 1 : 1;
          EXPECT_GE(ports.size(), want);
          EXPECT_NE(std::find(ports.begin(), ports.end(), store_port), ports.end())
              << "the store's port is not among this process's listening ports";
          for (int port : ports) send_garbage(port, keep);
        }
        ctx.sync("garbage-sent");
        const auto n = static_cast<float>(ctx.size);
        for (std::size_t count : {std::size_t{7}, std::size_t{1} << 18}) {
          std::vector<float> buf(count, static_cast<float>(ctx.rank + 1));
          comm.allreduce(std::span<float>(buf));
          for (std::size_t i = 0; i < count; ++i) {
            ASSERT_EQ(buf[i], n * (n + 1) / 2) << "index " << i;
          }
        }
        // New connections (through the store) while the garbage clients are still there.
        Communicator again = comm.dup();
        std::vector<std::int32_t> v(1000, ctx.rank);
        again.allreduce(std::span<std::int32_t>(v), ReduceOp::max);
        for (auto x : v) ASSERT_EQ(x, ctx.size - 1);
        comm.barrier();
        EXPECT_LT(Clock::now() - start, 25s);
      },
      go);
}

INSTANTIATE_TEST_SUITE_P(All, GarbageTest,
                         ::testing::Values(RankMode::threads, RankMode::processes),
                         [](const auto& info) { return to_string(info.param); });

// --- Set-up robustness (issue 17) -------------------------------------------------------

Options two_rank_options(int rank) {
  Options o;
  o.rank = rank;
  o.size = 2;
  o.timeout = std::chrono::seconds(30);
  return o;
}

TEST(SetupTest, AMalformedStoreValueIsAnErrorNamingTheKey) {
  // Review finding 6: "x y z" under info/1 made create() throw std::invalid_argument("stoul").
  auto store = bootstrap::make_hash_store();
  store->set_string("c/info/1", "x y z");
  try {
    detail::create_with_store(two_rank_options(0), store);
    FAIL() << "create() accepted a malformed rendezvous record";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::transport) << e.what();
    EXPECT_NE(std::string(e.what()).find("'info/1'"), std::string::npos) << e.what();
  }
  auto other = bootstrap::make_hash_store();
  other->set_string("c/job", "not a number");
  try {
    detail::create_with_store(two_rank_options(1), other);
    FAIL() << "create() accepted a malformed job id";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'job'"), std::string::npos) << e.what();
  }
}

TEST(SetupTest, ASecondProcessWithTheSameRankIsMismatchClaimedTwice) {
  // Review finding 10: a duplicate rank 1 read stale keys and waited out its timeout.
  make_rank_group(RankMode::threads)->run(2, [](RankContext& ctx) {
    Communicator comm = ctx.create();
    ctx.sync("created");
    if (ctx.rank == 1) {
      const auto start = std::chrono::steady_clock::now();
      try {
        Options o;
        o.timeout = std::chrono::seconds(30);
        ctx.create(o);
        ADD_FAILURE() << "a second rank 1 joined";
      } catch (const Error& e) {
        EXPECT_EQ(e.error_code(), ErrorCode::mismatch) << e.what();
        EXPECT_NE(std::string(e.what()).find("rank 1 claimed twice"), std::string::npos)
            << e.what();
      }
      EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
    }
    ctx.sync("checked");
  });
}

TEST(SetupTest, ConfigurationThatMustAgreeIsMismatchNamingTheVariable) {
  // Review L4: disagreement showed only as a timeout (RINGLET_SHM) or at the first call.
  make_rank_group(RankMode::threads)->run(2, [](RankContext& ctx) {
    Options o;
    o.timeout = std::chrono::seconds(30);
    if (ctx.rank == 1) o.algorithm = "ring";
    try {
      ctx.create(o);
      ADD_FAILURE() << "ranks with different RINGLET_ALGO connected";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_code(), ErrorCode::mismatch) << e.what();
      EXPECT_NE(std::string(e.what()).find("RINGLET_ALGO is "), std::string::npos) << e.what();
    }
  });
}

TEST(SetupTest, AStopTokenInterruptsACreateThatWaitsForAMissingRank) {
  // Review finding 8: nothing could interrupt create() while it waited for a rank.
  auto store = bootstrap::make_hash_store();
  std::stop_source stop;
  Options o = two_rank_options(0);
  o.stop = stop.get_token();
  std::jthread watchdog([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop.request_stop();
  });
  const auto start = std::chrono::steady_clock::now();
  try {
    detail::create_with_store(o, store);
    FAIL() << "create() returned without rank 1";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::aborted) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST(SetupTest, AbortInterruptsADupThatAPeerNeverJoins) {
  // Review finding 8: abort() did not reach a dup() waiting for a peer.
  make_rank_group(RankMode::threads)->run(2, [](RankContext& ctx) {
    Options o;
    o.timeout = std::chrono::seconds(60);
    Communicator comm = ctx.create(o);
    if (ctx.rank == 0) {
      std::jthread watchdog([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        comm.abort();
      });
      const auto start = std::chrono::steady_clock::now();
      EXPECT_THROW(static_cast<void>(comm.dup()), Error);
      EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
    }
    ctx.sync("dup-done", std::chrono::seconds(60));
  });
}

}  // namespace
}  // namespace ringlet::testing
