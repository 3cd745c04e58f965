// SPDX-License-Identifier: Apache-2.0
// ringlet-run tests: starts the launcher on loopback with rank_probe and checks env, exit codes,
// timeouts, tagged output, signals and cleanup. Paths come from meson (RINGLET_RUN, RANK_PROBE).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

std::string env_path(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

std::string launcher() { return env_path("RINGLET_RUN"); }
std::string probe() { return env_path("RANK_PROBE"); }

struct Result {
  int status = -1;  // exit status, 128+S for signal S, -1 if it had to be killed
  std::string out;
  std::string err;
  double seconds = 0;
};

// One ringlet-run process with its stdout and stderr captured through pipes.
class Launcher {
 public:
  Launcher(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {},
           const std::vector<std::string>& unset = {"RINGLET_PORT"}) {
    int out[2], err[2];
    EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
    EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
    std::vector<std::string> argv_s = {launcher()};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    start_ = Clock::now();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      for (const auto& k : unset) ::unsetenv(k.c_str());
      ::execv(argv[0], argv.data());
      ::_exit(99);
    }
    ::close(out[1]);
    ::close(err[1]);
    out_fd_ = out[0];
    err_fd_ = err[0];
  }
  ~Launcher() {
    if (pid_ > 0) finish(1);
  }

  pid_t pid() const { return pid_; }

  // Reads all output and waits for the exit, for at most `limit_s` seconds; then kills it.
  Result finish(double limit_s) {
    Result r;
    auto deadline = start_ + std::chrono::milliseconds(static_cast<long>(limit_s * 1000));
    int fds[2] = {out_fd_, err_fd_};
    std::string* sinks[2] = {&r.out, &r.err};
    while ((fds[0] >= 0 || fds[1] >= 0) && Clock::now() < deadline) {
      pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
      ::poll(p, 2, 50);
      for (int i = 0; i < 2; ++i) {
        if (fds[i] < 0 || p[i].revents == 0) continue;
        char buf[65536];
        ssize_t n = ::read(fds[i], buf, sizeof buf);
        if (n > 0) {
          sinks[i]->append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
          ::close(fds[i]);
          fds[i] = -1;
        }
      }
    }
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
    int status = 0;
    pid_t done = 0;
    while ((done = ::waitpid(pid_, &status, WNOHANG)) == 0 && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (done == 0) {
      ADD_FAILURE() << "ringlet-run did not finish within " << limit_s << " s; killing it";
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      r.status = -1;
    } else {
      r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    r.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    pid_ = -1;
    return r;
  }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  Clock::time_point start_;
};

Result run(const std::vector<std::string>& args, double limit_s = 30,
           const std::map<std::string, std::string>& env = {}) {
  Launcher l(args, env);
  return l.finish(limit_s);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Parses rank_probe's "key=value key=value" line.
std::map<std::string, std::string> fields(const std::string& line) {
  std::map<std::string, std::string> f;
  std::istringstream in(line);
  for (std::string word; in >> word;) {
    auto eq = word.find('=');
    if (eq != std::string::npos) f[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return f;
}

// Parses one probe line per rank and returns them indexed by rank.
std::vector<std::map<std::string, std::string>> by_rank(const std::string& out, int np) {
  std::vector<std::map<std::string, std::string>> ranks(static_cast<std::size_t>(np));
  for (const auto& line : lines_of(out)) {
    auto f = fields(line);
    int r = std::atoi(f["rank"].c_str());
    EXPECT_TRUE(r >= 0 && r < np) << line;
    if (r < 0 || r >= np) continue;
    EXPECT_TRUE(ranks[static_cast<std::size_t>(r)].empty()) << "rank " << r << " twice";
    ranks[static_cast<std::size_t>(r)] = f;
  }
  return ranks;
}

bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all;
  std::getline(stat, all);
  auto close = all.rfind(')');
  return close != std::string::npos && close + 2 < all.size() && all[close + 2] == 'Z';
}

bool wait_gone(pid_t pid, double limit_s) {
  auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<long>(limit_s * 1000));
  while (!process_gone(pid)) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// A fresh directory for pid files, removed by the test.
std::string make_temp_dir() {
  char path[] = "/tmp/ringlet_launcher_test_XXXXXX";
  EXPECT_NE(::mkdtemp(path), nullptr);
  return path;
}

// Waits for rank_probe's pid files rank0.pid .. rank<np-1>.pid and returns the pids.
std::vector<pid_t> wait_pid_files(const std::string& dir, int np, double limit_s) {
  auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<long>(limit_s * 1000));
  std::vector<pid_t> pids;
  while (Clock::now() < deadline) {
    pids.clear();
    for (int r = 0; r < np; ++r) {
      std::ifstream f(dir + "/rank" + std::to_string(r) + ".pid");
      long pid = 0;
      if (f >> pid) pids.push_back(static_cast<pid_t>(pid));
    }
    if (static_cast<int>(pids.size()) == np) return pids;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "only " << pids.size() << " of " << np << " pid files appeared in " << dir;
  return pids;
}

void remove_dir(const std::string& dir, int np) {
  for (int r = 0; r < np; ++r) ::unlink((dir + "/rank" + std::to_string(r) + ".pid").c_str());
  ::rmdir(dir.c_str());
}

TEST(LauncherTest, PathsFromMeson) {
  ASSERT_FALSE(launcher().empty()) << "RINGLET_RUN is not set";
  ASSERT_FALSE(probe().empty()) << "RANK_PROBE is not set";
}

TEST(LauncherTest, EnvironmentForOneToEightRanks) {
  for (int np = 1; np <= 8; ++np) {
    SCOPED_TRACE("np=" + std::to_string(np));
    Result r = run({"-np", std::to_string(np), probe(), "env"});
    ASSERT_EQ(r.status, 0) << r.err;
    auto ranks = by_rank(r.out, np);
    std::set<std::string> pids;
    const std::regex addr_re(R"(127\.0\.0\.1:(\d+))");
    const std::regex job_re("[0-9a-f]{16}");
    for (int i = 0; i < np; ++i) {
      auto& f = ranks[static_cast<std::size_t>(i)];
      ASSERT_FALSE(f.empty()) << "no line from rank " << i << "\n" << r.out;
      EXPECT_EQ(f["size"], std::to_string(np));
      EXPECT_EQ(f["local_rank"], std::to_string(i));
      EXPECT_EQ(f["local_size"], std::to_string(np));
      std::smatch m;
      ASSERT_TRUE(std::regex_match(f["addr"], m, addr_re)) << f["addr"];
      int port = std::stoi(m[1]);
      EXPECT_TRUE(port > 0 && port < 65536);
      EXPECT_EQ(f["addr"], ranks[0]["addr"]);
      EXPECT_TRUE(std::regex_match(f["job"], job_re)) << f["job"];
      EXPECT_EQ(f["job"], ranks[0]["job"]);
      EXPECT_EQ(f["node"], "(unset)");
      pids.insert(f["pid"]);
    }
    EXPECT_EQ(static_cast<int>(pids.size()), np);
  }
}

TEST(LauncherTest, PortFromFlagThenEnvironment) {
  Result r = run({"-np", "2", "--port", "23456", probe(), "env"}, 30, {{"RINGLET_PORT", "1"}});
  ASSERT_EQ(r.status, 0) << r.err;
  for (auto& f : by_rank(r.out, 2)) EXPECT_EQ(f["addr"], "127.0.0.1:23456");
  // RINGLET_PORT is honoured when --port is absent (the Launcher helper unsets it by default).
  Launcher l({"-np", "2", probe(), "env"}, {{"RINGLET_PORT", "23457"}}, {});
  Result r2 = l.finish(30);
  ASSERT_EQ(r2.status, 0) << r2.err;
  for (auto& f : by_rank(r2.out, 2)) EXPECT_EQ(f["addr"], "127.0.0.1:23457");
}

TEST(LauncherTest, JobIdDiffersBetweenJobs) {
  Result a = run({"-np", "1", probe(), "env"});
  Result b = run({"-np", "1", probe(), "env"});
  ASSERT_EQ(a.status, 0);
  ASSERT_EQ(b.status, 0);
  EXPECT_NE(fields(a.out)["job"], fields(b.out)["job"]);
}

TEST(LauncherTest, HostListPlacesRanksInOrder) {
  Result r = run({"-np", "4", "-H", "a:2,b:3", "--launcher", "local", probe(), "env"});
  ASSERT_EQ(r.status, 0) << r.err;
  auto ranks = by_rank(r.out, 4);
  const char* node[] = {"a", "a", "b", "b"};
  const char* local[] = {"0", "1", "0", "1"};
  for (int i = 0; i < 4; ++i) {
    auto& f = ranks[static_cast<std::size_t>(i)];
    EXPECT_EQ(f["node"], node[i]) << "rank " << i;
    EXPECT_EQ(f["local_rank"], local[i]) << "rank " << i;
    EXPECT_EQ(f["local_size"], "2") << "rank " << i;
    EXPECT_EQ(f["size"], "4");
  }
  // Default slots are 1; -np smaller than the slots uses the first ones.
  Result r2 = run({"-np", "2", "-H", "x,y:4", "--launcher", "local", probe(), "env"});
  ASSERT_EQ(r2.status, 0) << r2.err;
  auto ranks2 = by_rank(r2.out, 2);
  EXPECT_EQ(ranks2[0]["node"], "x");
  EXPECT_EQ(ranks2[0]["local_size"], "1");
  EXPECT_EQ(ranks2[1]["node"], "y");
  EXPECT_EQ(ranks2[1]["local_rank"], "0");
  EXPECT_EQ(ranks2[1]["local_size"], "1");
}

TEST(LauncherTest, ExportsVariables) {
  Result r = run({"-np", "2", "-x", "PROBE_X=hello", probe(), "env"});
  ASSERT_EQ(r.status, 0) << r.err;
  for (auto& f : by_rank(r.out, 2)) EXPECT_EQ(f["probe_x"], "hello");
}

TEST(LauncherTest, SshModeQuotesTheRemoteCommand) {
  // A value with every shell metacharacter that matters; no spaces, as the probe's line
  // format splits on them.
  std::string tricky = "it's\"$HOME`id`;|&<>*";
  Result r = run({"-np", "3", "-H", "h1:2,h2=127.0.0.1", "-x", "PROBE_X=" + tricky, probe(), "env"},
                 30, {{"RINGLET_RUN_SSH", env_path("FAKE_SSH")}});
  ASSERT_EQ(r.status, 0) << r.err;
  auto ranks = by_rank(r.out, 3);
  const char* node[] = {"h1", "h1", "h2"};
  for (int i = 0; i < 3; ++i) {
    auto& f = ranks[static_cast<std::size_t>(i)];
    EXPECT_EQ(f["probe_x"], tricky);
    EXPECT_EQ(f["node"], node[i]);
    // ssh: the first host's name, and a random port below the ephemeral range.
    ASSERT_EQ(f["addr"].rfind("h1:", 0), 0u) << f["addr"];
    const int port = std::stoi(f["addr"].substr(3));
    EXPECT_GE(port, 20000);
    EXPECT_LT(port, 30000);
    EXPECT_EQ(f["addr"], ranks[0]["addr"]);
    EXPECT_EQ(f["size"], "3");
  }
  EXPECT_EQ(ranks[2]["local_size"], "1");
}

// L11: the ssh-mode default port was a fixed 29500, predictable and shared by concurrent
// jobs on one head node. Three jobs do not all get the same port (a false failure: 1 in 10^8).
TEST(LauncherTest, SshModeDefaultPortIsNotFixed) {
  std::set<std::string> addrs;
  for (int i = 0; i < 3; ++i) {
    Result r = run({"-np", "1", "-H", "h1", probe(), "env"}, 30,
                   {{"RINGLET_RUN_SSH", env_path("FAKE_SSH")}});
    ASSERT_EQ(r.status, 0) << r.err;
    addrs.insert(by_rank(r.out, 1)[0]["addr"]);
  }
  EXPECT_GT(addrs.size(), 1u);
}

TEST(LauncherTest, SshModeExportsCurrentValue) {
  Result r = run({"-np", "1", "-H", "h1", "-x", "PROBE_X", probe(), "env"}, 30,
                 {{"RINGLET_RUN_SSH", env_path("FAKE_SSH")}, {"PROBE_X", "from-launcher"}});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(fields(r.out)["probe_x"], "from-launcher");
  EXPECT_EQ(fields(r.out)["node"], "h1");
}

// The job's secret (docs/security.md): new for every job, the same on every rank, and never
// on a command line (ssh mode sends it on ssh's standard input).
TEST(LauncherTest, EveryJobGetsItsOwnSecretInTheEnvironment) {
  Result a = run({"-np", "2", probe(), "env"});
  ASSERT_EQ(a.status, 0) << a.err;
  auto ranks = by_rank(a.out, 2);
  const std::string secret = ranks[0]["secret"];
  EXPECT_EQ(secret.size(), 64u) << secret;
  EXPECT_EQ(secret.find_first_not_of("0123456789abcdef"), std::string::npos) << secret;
  EXPECT_EQ(ranks[1]["secret"], secret);
  Result b = run({"-np", "1", probe(), "env"});
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_NE(fields(b.out)["secret"], secret);
  // The caller's own secret, or file, is used as it is.
  Result c = run({"-np", "1", probe(), "env"}, 30, {{"RINGLET_SECRET", "mine-mine-mine-mine"}});
  EXPECT_EQ(fields(c.out)["secret"], "mine-mine-mine-mine");
  Result d = run({"-np", "1", probe(), "env"}, 30, {{"RINGLET_SECRET_FILE", "/some/file"}});
  EXPECT_EQ(fields(d.out)["secret"], "(unset)");
  EXPECT_EQ(fields(d.out)["secret_file"], "/some/file");
}

TEST(LauncherTest, SshModeSendsTheSecretOnStandardInputNotTheCommandLine) {
  const std::string log =
      (std::filesystem::temp_directory_path() / ("fake-ssh-" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove(log);
  Result r = run({"-np", "2", "-H", "h1,h2=127.0.0.1", "-x", "RINGLET_SECRET", probe(), "env"}, 30,
                 {{"RINGLET_RUN_SSH", env_path("FAKE_SSH")},
                  {"FAKE_SSH_LOG", log},
                  {"RINGLET_SECRET", "ssh-secret-ssh-secret"}});
  ASSERT_EQ(r.status, 0) << r.err;
  auto ranks = by_rank(r.out, 2);
  EXPECT_EQ(ranks[0]["secret"], "ssh-secret-ssh-secret");
  EXPECT_EQ(ranks[1]["secret"], "ssh-secret-ssh-secret");
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("h1 "), std::string::npos) << text;
  EXPECT_EQ(text.find("ssh-secret"), std::string::npos) << text;
  std::filesystem::remove(log);
  // A generated secret travels the same way.
  Result g = run({"-np", "1", "-H", "h1", probe(), "env"}, 30,
                 {{"RINGLET_RUN_SSH", env_path("FAKE_SSH")}, {"FAKE_SSH_LOG", log}});
  ASSERT_EQ(g.status, 0) << g.err;
  const std::string made = fields(g.out)["secret"];
  EXPECT_EQ(made.size(), 64u);
  std::ifstream in2(log);
  std::string text2((std::istreambuf_iterator<char>(in2)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text2.find(made), std::string::npos) << text2;
  std::filesystem::remove(log);
}

TEST(LauncherTest, AllRanksSucceed) {
  Result r = run({"-np", "3", probe(), "sleep", "0.1"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
}

TEST(LauncherTest, FirstFailureEndsTheJob) {
  Result r = run({"-np", "4", probe(), "exit", "2", "3"});
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_LT(r.seconds, 3.0) << "the other ranks were not terminated quickly";
  EXPECT_TRUE(std::regex_search(
      r.err, std::regex(R"(ringlet-run: rank 2 \(pid \d+\) exited with status 3; )"
                        R"(terminating the other 3 ranks)")))
      << r.err;
}

TEST(LauncherTest, RankKilledBySignal) {
  Result r = run({"-np", "4", probe(), "signal", "1", "9"});
  EXPECT_EQ(r.status, 137) << r.err;
  EXPECT_LT(r.seconds, 3.0);
  EXPECT_TRUE(std::regex_search(
      r.err, std::regex(R"(ringlet-run: rank 1 \(pid \d+\) killed by signal 9 \(Killed\); )"
                        R"(terminating the other 3 ranks)")))
      << r.err;
}

TEST(LauncherTest, TimeoutExpires) {
  Result r = run({"--timeout", "1", "-np", "3", probe(), "sleep", "30"}, 20);
  EXPECT_EQ(r.status, 124) << r.err;
  EXPECT_GE(r.seconds, 1.0);
  EXPECT_LT(r.seconds, 1.0 + 3.0 + 2.0);  // timeout + grace + slack
  EXPECT_NE(r.err.find("ringlet-run: job exceeded --timeout 1 s; terminating 3 ranks\n"),
            std::string::npos)
      << r.err;
}

TEST(LauncherTest, SigkillAfterGraceForRanksIgnoringSigterm) {
  Result r = run({"-np", "3", probe(), "stubborn", "0", "4"}, 20);
  EXPECT_EQ(r.status, 4) << r.err;
  EXPECT_GE(r.seconds, 3.0) << "SIGKILL came before the 3 s grace period";
  EXPECT_LT(r.seconds, 3.0 + 3.0);
  EXPECT_NE(r.err.find("ringlet-run: 2 ranks still running 3 s after SIGTERM; sending SIGKILL\n"),
            std::string::npos)
      << r.err;
}

TEST(LauncherTest, LeftoverProcessesOfARankAreKilled) {
  // Each rank exits 0 but leaves a child that holds its output pipe open; the launcher must
  // finish within its 2 s drain limit and kill the children.
  for (bool tag : {false, true}) {
    SCOPED_TRACE(tag ? "tagged" : "untagged");
    constexpr int kRanks = 2;
    std::string dir = make_temp_dir();
    std::vector<std::string> args = {"-np", std::to_string(kRanks), probe(), "orphan", dir};
    if (tag) args.insert(args.begin(), "--tag-output");
    Result r = run(args, 20);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_LT(r.seconds, 6.0);
    auto pids = wait_pid_files(dir, kRanks, 1);
    for (pid_t pid : pids) EXPECT_TRUE(wait_gone(pid, 2)) << "leftover pid " << pid << " survived";
    remove_dir(dir, kRanks);
  }
}

TEST(LauncherTest, TagOutputSplitsVeryLongLines) {
  constexpr std::size_t kPiece = 64 * 1024;
  Result r = run({"--tag-output", "-np", "1", probe(), "longline", std::to_string(3 * kPiece + 5)});
  ASSERT_EQ(r.status, 0) << r.err;
  std::string piece = "[1,0]<stdout>: " + std::string(kPiece, 'x') + "\n";
  EXPECT_EQ(r.out, piece + piece + piece + "[1,0]<stdout>: xxxxx\n[1,0]<stdout>: end\n");
}

TEST(LauncherTest, TimeoutNotReachedLeavesStatusAlone) {
  Result r = run({"--timeout", "10", "-np", "2", probe(), "exit", "0", "5"}, 20);
  EXPECT_EQ(r.status, 5) << r.err;
}

// Checks that every line of `text` is "[1,R]<stream>: rank R line I <payload>", with I in order
// 0..n-1 for each of np ranks.
void check_tagged(const std::string& text, const std::string& stream, int np, int n) {
  const std::regex line_re(R"(\[1,(\d+)\]<)" + stream + R"(>: rank (\d+) line (\d+) ([a-z]+))");
  std::vector<int> next(static_cast<std::size_t>(np), 0);
  int bad = 0;
  for (const auto& line : lines_of(text)) {
    std::smatch m;
    if (!std::regex_match(line, m, line_re) || m[1] != m[2]) {
      if (++bad < 5) ADD_FAILURE() << "malformed or interleaved line: " << line.substr(0, 200);
      continue;
    }
    int rank = std::stoi(m[1]);
    ASSERT_LT(rank, np);
    EXPECT_EQ(std::stoi(m[3]), next[static_cast<std::size_t>(rank)]) << line.substr(0, 80);
    next[static_cast<std::size_t>(rank)] = std::stoi(m[3]) + 1;
    std::string payload = m[4];
    EXPECT_EQ(payload, std::string(100 + 13 * static_cast<std::size_t>(rank),
                                   static_cast<char>('a' + rank)));
  }
  EXPECT_EQ(bad, 0);
  for (int r = 0; r < np; ++r) EXPECT_EQ(next[static_cast<std::size_t>(r)], n) << "rank " << r;
}

TEST(LauncherTest, TagOutputPrefixesEveryLine) {
  constexpr int kLines = 2000;
  Result r = run({"--tag-output", "-np", "4", probe(), "lines", std::to_string(kLines)}, 60);
  ASSERT_EQ(r.status, 0) << r.err.substr(0, 500);
  check_tagged(r.out, "stdout", 4, kLines);
  check_tagged(r.err, "stderr", 4, kLines);
}

TEST(LauncherTest, TagOutputFlushesPartialLastLines) {
  Result r = run({"--tag-output", "-np", "2", probe(), "partial"});
  ASSERT_EQ(r.status, 0) << r.err;
  for (int i = 0; i < 2; ++i) {
    std::string tag = "[1," + std::to_string(i) + "]";
    EXPECT_NE(r.out.find(tag + "<stdout>: whole line\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(tag + "<stdout>: no newline from " + std::to_string(i) + "\n"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.err.find(tag + "<stderr>: err tail " + std::to_string(i) + "\n"), std::string::npos)
        << r.err;
  }
}

TEST(LauncherTest, OutputPassesThroughUntagged) {
  Result r = run({"-np", "1", probe(), "partial"});
  ASSERT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "whole line\nno newline from 0");
  EXPECT_EQ(r.err, "err tail 0");
}

// Starts 4 sleeping ranks, sends `signo` to the launcher and checks its status and that no
// rank survives it.
void signal_test(int signo, int expected_status) {
  constexpr int kRanks = 4;
  std::string dir = make_temp_dir();
  Launcher l({"-np", std::to_string(kRanks), probe(), "pidfile", dir});
  auto pids = wait_pid_files(dir, kRanks, 10);
  ASSERT_EQ(static_cast<int>(pids.size()), kRanks);
  ASSERT_EQ(::kill(l.pid(), signo), 0);
  Result r = l.finish(10);
  EXPECT_EQ(r.status, expected_status) << r.err;
  for (pid_t pid : pids) EXPECT_TRUE(wait_gone(pid, 1)) << "rank pid " << pid << " survived";
  remove_dir(dir, kRanks);
}

TEST(LauncherTest, SigintTerminatesAllRanks) { signal_test(SIGINT, 130); }

TEST(LauncherTest, SigtermTerminatesAllRanks) { signal_test(SIGTERM, 143); }

TEST(LauncherTest, SighupTerminatesAllRanks) { signal_test(SIGHUP, 129); }

TEST(LauncherTest, KilledLauncherTakesRanksDown) {
  constexpr int kRanks = 3;
  std::string dir = make_temp_dir();
  Launcher l({"-np", std::to_string(kRanks), probe(), "pidfile", dir});
  auto pids = wait_pid_files(dir, kRanks, 10);
  ASSERT_EQ(static_cast<int>(pids.size()), kRanks);
  ASSERT_EQ(::kill(l.pid(), SIGKILL), 0);
  Result r = l.finish(10);
  EXPECT_EQ(r.status, 137);
  for (pid_t pid : pids) EXPECT_TRUE(wait_gone(pid, 5)) << "rank pid " << pid << " orphaned";
  remove_dir(dir, kRanks);
}

TEST(LauncherTest, UsageErrorsExitTwo) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"true"},
      {"-np"},
      {"-np", "0", "true"},
      {"-np", "-3", "true"},
      {"-np", "two", "true"},
      {"-np", "2"},
      {"--bogus", "-np", "1", "true"},
      {"-np", "3", "-H", "a:1,b:1", "true"},
      {"-np", "1", "-H", "a:0", "true"},
      {"-np", "1", "-H", "a,,b", "true"},
      {"-np", "1", "--launcher", "netns", "true"},
      {"-np", "1", "--launcher", "rsh", "-H", "a", "true"},
      {"-np", "1", "--timeout", "0", "true"},
      {"-np", "1", "--port", "70000", "true"},
      {"-np", "1", "-x", "1BAD=x", "true"},
  };
  for (const auto& args : cases) {
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    Result r = run(args);
    EXPECT_EQ(r.status, 2) << "args: " << joined << "\n" << r.err;
    EXPECT_NE(r.err.find("usage: ringlet-run"), std::string::npos) << joined;
  }
  Result help = run({"--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.out.find("usage: ringlet-run"), std::string::npos);
}

TEST(LauncherTest, CommandNotExecutable) {
  std::string dir = make_temp_dir();
  std::string file = dir + "/not_executable";
  std::ofstream(file) << "#!/bin/sh\n";
  ::chmod(file.c_str(), 0644);
  Result r = run({"-np", "2", file});
  EXPECT_EQ(r.status, 126) << r.err;
  EXPECT_NE(r.err.find("cannot execute '" + file + "': Permission denied"), std::string::npos)
      << r.err;
  ::unlink(file.c_str());
  ::rmdir(dir.c_str());
}

TEST(LauncherTest, CommandNotFound) {
  for (std::string cmd : {"/nonexistent/ringlet_probe", "ringlet-no-such-command"}) {
    Result r = run({"-np", "2", cmd});
    EXPECT_EQ(r.status, 127) << r.err;
    EXPECT_NE(r.err.find("command not found: " + cmd), std::string::npos) << r.err;
  }
}

TEST(LauncherTest, OptionsAfterDoubleDash) {
  Result r = run({"-np", "1", "--", probe(), "env"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(fields(r.out)["rank"], "0");
}

}  // namespace
