// SPDX-License-Identifier: Apache-2.0
// Hang reports: the line a rank logs, ringlet-run's parse of it and its one-line diagnosis,
// and RINGLET_HANG_SIGNAL's handler (reports on a watcher thread, the application's handler
// still called).
#include "src/hang_report.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "src/config.hpp"
#include "tools/run/hang_diagnosis.hpp"

namespace ringlet {
namespace {

using run::diagnose;
using run::HangReport;
using run::parse_hang_report;

HangSnapshot active(int rank, std::uint64_t seq, int peer) {
  HangSnapshot s;
  s.rank = rank;
  s.size = 4;
  s.active = true;
  s.seq = seq;
  s.call = "allreduce(count=1024, float32, sum)";
  s.phase = "algorithm";
  s.peer = peer;
  s.since_ms = 5003;
  return s;
}

TEST(HangReport, LineParsesBack) {
  const std::string line = "ringlet[2] WARN " + format_hang_report(active(2, 57, 3));
  EXPECT_NE(line.find("hang report: rank 2/4 collective #57 allreduce(count=1024, float32, sum) "
                      "phase=algorithm step=- waits_for=3 since_ms=5003"),
            std::string::npos)
      << line;
  auto r = parse_hang_report(line);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->rank, 2);
  EXPECT_EQ(r->size, 4);
  EXPECT_TRUE(r->active);
  EXPECT_EQ(r->seq, 57u);
  EXPECT_EQ(r->waits_for, 3);
  EXPECT_EQ(r->since_ms, 5003);
  HangSnapshot idle;
  idle.rank = 1;
  idle.size = 4;
  idle.seq = 9;
  auto i = parse_hang_report(format_hang_report(idle));
  ASSERT_TRUE(i);
  EXPECT_FALSE(i->active);
  EXPECT_EQ(i->seq, 9u);
  EXPECT_FALSE(parse_hang_report("ringlet[0] WARN something else"));
}

std::map<int, HangReport> reports(std::initializer_list<HangSnapshot> ss) {
  std::map<int, HangReport> m;
  for (const auto& s : ss) m[s.rank] = *parse_hang_report(format_hang_report(s));
  return m;
}

TEST(HangDiagnosis, NamesTheSilentRankEveryoneWaitsFor) {
  auto m = reports({active(0, 57, 3), active(1, 57, 3), active(2, 57, 3)});
  EXPECT_EQ(diagnose(m, 4),
            "ranks 0-2 wait for rank 3 in collective #57, which sent no report (stopped, hung "
            "outside ringlet, or gone); no report from rank 3");
}

// Ranks 0 and 2 wait for rank 1, which waits for the stopped rank 3: the chain ends there.
TEST(HangDiagnosis, FollowsTheChainOfWaits) {
  auto m = reports({active(0, 422, 1), active(1, 422, 3), active(2, 422, 1)});
  EXPECT_EQ(diagnose(m, 4),
            "ranks 0-2 wait for rank 3 in collective #422, which sent no report (stopped, hung "
            "outside ringlet, or gone); no report from rank 3");
}

TEST(HangDiagnosis, NamesARankThatHasNotEnteredTheCollective) {
  HangSnapshot behind;
  behind.rank = 3;
  behind.size = 4;
  behind.seq = 55;  // idle after #55: its next one is #56
  auto m = reports({active(0, 57, 3), active(1, 57, 3), active(2, 57, 3), behind});
  EXPECT_EQ(diagnose(m, 4),
            "ranks 0-2 wait for rank 3, which has not entered collective #57 (it is at #55, idle)");
}

TEST(HangDiagnosis, CountsCollectivesBehind) {
  auto m = reports({active(0, 57, -1), active(1, 57, -1), active(2, 57, -1), active(3, 55, -1)});
  EXPECT_EQ(diagnose(m, 4), "rank 3 is 2 collectives behind rank 0");
}

TEST(HangDiagnosis, SignalNames) {
  EXPECT_EQ(run::signal_number("SIGUSR2"), SIGUSR2);
  EXPECT_EQ(run::signal_number("usr1"), SIGUSR1);
  EXPECT_EQ(run::signal_number("12"), 12);
  EXPECT_EQ(run::signal_number("0"), 0);
  EXPECT_EQ(run::signal_number("nonsense"), 0);
}

TEST(HangSignal, ConfigParsesAndRefuses) {
  auto env = [](std::string v) {
    return [v](std::string_view name) -> std::optional<std::string> {
      if (name == "RINGLET_HANG_SIGNAL") return v;
      return std::nullopt;
    };
  };
  EXPECT_EQ(resolve_config({}, 2, env("SIGUSR2")).hang_signal, SIGUSR2);
  EXPECT_EQ(resolve_config({}, 2, env("usr1")).hang_signal, SIGUSR1);
  EXPECT_EQ(resolve_config({}, 2, env("0")).hang_signal, 0);
  EXPECT_THROW(resolve_config({}, 2, env("SIGKILL")), Error);
  EXPECT_THROW(resolve_config({}, 2, env("11")), Error);  // SIGSEGV is not a request
}

std::atomic<int> app_calls{0};
void app_handler(int) { app_calls.fetch_add(1); }

// The signal logs every registered source's report on the watcher thread, and the handler the
// application had installed before still runs.
TEST(HangSignal, ReportsAndChainsTheApplicationsHandler) {
  struct sigaction sa {};
  sa.sa_handler = app_handler;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(::sigaction(SIGUSR2, &sa, nullptr), 0);
  // Capture stderr, where the reports go.
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  const int saved = ::dup(2);
  ::dup2(fds[1], 2);
  const int id = register_hang_source(SIGUSR2, [] { return format_hang_report(active(1, 42, 0)); });
  ASSERT_GT(id, 0);
  ::raise(SIGUSR2);
  std::string got;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (got.find("collective #42") == std::string::npos &&
         std::chrono::steady_clock::now() < end) {
    char buf[512];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) got.append(buf, static_cast<std::size_t>(n));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  unregister_hang_source(id);
  ::dup2(saved, 2);
  ::close(saved);
  ::close(fds[0]);
  ::close(fds[1]);
  EXPECT_NE(got.find("hang report: rank 1/4 collective #42"), std::string::npos) << got;
  EXPECT_EQ(app_calls.load(), 1);
}

}  // namespace
}  // namespace ringlet
