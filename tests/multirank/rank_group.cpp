// SPDX-License-Identifier: Apache-2.0
// ThreadRankGroup and ProcessRankGroup: one body, run as threads or as forked processes.
#include "tests/multirank/rank_group.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "src/common/str_cat.hpp"
#include "src/common/unique_fd.hpp"
#include "src/communicator.hpp"

namespace ringlet::testing {
namespace {

using namespace std::chrono_literals;

constexpr std::chrono::milliseconds kDefaultTimeout = 60s;

std::string describe_exception(std::exception_ptr p) {
  try {
    std::rethrow_exception(p);
  } catch (const Error& e) {
    return str_cat("ringlet::Error (code ", static_cast<int>(e.error_code()), "): ", e.what());
  } catch (const std::exception& e) {
    return str_cat("std::exception: ", e.what());
  } catch (...) {
    return "unknown exception";
  }
}

// A temporary directory for a file store, removed with its files on destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ringlet-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::shared_ptr<bootstrap::Store> make_tcp_server_store() {
  bootstrap::TcpStoreOptions so;
  so.host = "127.0.0.1";
  so.port = 0;
  so.is_server = true;
  so.deadline = Clock::now() + 30s;
  return bootstrap::make_tcp_store(so);
}

std::shared_ptr<bootstrap::Store> make_tcp_client_store(int port) {
  bootstrap::TcpStoreOptions so;
  so.host = "127.0.0.1";
  so.port = port;
  so.is_server = false;
  so.deadline = Clock::now() + 30s;
  return bootstrap::make_tcp_store(so);
}

// --- threads ----------------------------------------------------------------------------

class ThreadRankGroup final : public RankGroup {
 public:
  RankMode mode() const noexcept override { return RankMode::threads; }

  std::vector<RankOutcome> run(int size, const RankBody& body,
                               const GroupOptions& options) override {
    std::unique_ptr<TempDir> dir;
    std::shared_ptr<bootstrap::Store> store;
    switch (options.store) {
      case StoreKind::hash:
        store = bootstrap::make_hash_store();
        break;
      case StoreKind::file:
        dir = std::make_unique<TempDir>();
        store = bootstrap::make_file_store(dir->path());
        break;
      case StoreKind::tcp:
        store = make_tcp_server_store();
        break;
    }
    std::vector<RankOutcome> outcomes(static_cast<std::size_t>(size));
    // A watchdog: threads cannot be killed, so a run past its limit ends the process with a
    // message instead of hanging until meson's timeout.
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::thread watchdog([&] {
      std::unique_lock lock(mu);
      if (!cv.wait_for(lock, options.limit, [&] { return done; })) {
        std::fprintf(stderr, "rank group of %d threads exceeded its limit of %lld ms\n", size,
                     static_cast<long long>(options.limit.count()));
        std::fflush(stderr);
        std::_Exit(3);
      }
    });
    std::vector<std::thread> threads;
    for (int r = 0; r < size; ++r) {
      threads.emplace_back([&, r] {
        SCOPED_TRACE(str_cat("rank ", r, " of ", size, " (thread)"));
        RankContext ctx{r, size, RankMode::threads, store};
        try {
          body(ctx);
        } catch (...) {
          ADD_FAILURE() << "rank " << r << ": " << describe_exception(std::current_exception());
        }
        outcomes[static_cast<std::size_t>(r)].finished = true;
        outcomes[static_cast<std::size_t>(r)].exit_code = 0;
      });
    }
    for (auto& t : threads) t.join();
    {
      std::lock_guard lock(mu);
      done = true;
    }
    cv.notify_all();
    watchdog.join();
    return outcomes;
  }
};

// --- processes ----------------------------------------------------------------------------

void write_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<std::size_t>(n);
  }
}

// Runs one rank in a forked child and never returns. Failures go to `fd` as text.
[[noreturn]] void child_main(int rank, int size, const RankBody& body, StoreKind kind,
                             const std::string& dir, int port, int fd) {
  std::string report;
  bool failed = false;
  {
    // Failures of the body's own threads go to the process-wide reporter; those of this
    // thread go to its per-thread reporter, which a test around the group may have replaced
    // before fork() (EXPECT_NONFATAL_FAILURE does): intercept both.
    ::testing::TestPartResultArray all_threads;
    ::testing::TestPartResultArray this_thread;
    {
      ::testing::ScopedFakeTestPartResultReporter all_reporter(
          ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ALL_THREADS, &all_threads);
      ::testing::ScopedFakeTestPartResultReporter this_reporter(
          ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &this_thread);
      try {
        std::shared_ptr<bootstrap::Store> store =
            kind == StoreKind::tcp ? make_tcp_client_store(port) : bootstrap::make_file_store(dir);
        RankContext ctx{rank, size, RankMode::processes, std::move(store)};
        body(ctx);
      } catch (...) {
        failed = true;
        report += str_cat(
            "exception escaped the body: ", describe_exception(std::current_exception()), "\n");
      }
    }
    for (const auto* results : {&this_thread, &all_threads}) {
      for (int i = 0; i < results->size(); ++i) {
        const auto& r = results->GetTestPartResult(i);
        if (!r.failed()) continue;
        failed = true;
        report += str_cat(r.file_name() ? r.file_name() : "?", ":", r.line_number(), ": ",
                          r.message(), "\n");
      }
    }
  }
  write_all(fd, report);
  ::close(fd);
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(failed ? 1 : 0);
}

class ProcessRankGroup final : public RankGroup {
 public:
  RankMode mode() const noexcept override { return RankMode::processes; }

  std::vector<RankOutcome> run(int size, const RankBody& body,
                               const GroupOptions& options) override {
    StoreKind kind = options.store == StoreKind::hash ? StoreKind::file : options.store;
    TempDir dir;
    std::shared_ptr<bootstrap::Store> server;
    int port = 0;
    if (kind == StoreKind::tcp) {
      server = make_tcp_server_store();
      port = bootstrap::tcp_store_port(*server);
    }
    struct Child {
      pid_t pid = -1;
      UniqueFd out;
      std::string report;
      bool exited = false;
      bool eof = false;
    };
    std::vector<Child> children(static_cast<std::size_t>(size));
    std::fflush(stdout);
    std::fflush(stderr);
    for (int r = 0; r < size; ++r) {
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC) != 0) {
        ADD_FAILURE() << "pipe2: " << std::strerror(errno);
        break;
      }
      pid_t pid = ::fork();
      if (pid == 0) {
        ::close(fds[0]);
        child_main(r, size, body, kind, dir.path(), port, fds[1]);
      }
      ::close(fds[1]);
      auto& c = children[static_cast<std::size_t>(r)];
      c.out.reset(fds[0]);
      if (pid < 0) {
        ADD_FAILURE() << "fork: " << std::strerror(errno);
        c.exited = c.eof = true;
        continue;
      }
      c.pid = pid;
    }

    std::vector<RankOutcome> outcomes(static_cast<std::size_t>(size));
    const auto deadline = Clock::now() + options.limit;
    bool over_limit = false;
    for (;;) {
      // Read whatever the children have written.
      std::vector<pollfd> pfds;
      std::vector<std::size_t> who;
      for (std::size_t i = 0; i < children.size(); ++i) {
        if (!children[i].eof) {
          pfds.push_back({children[i].out.get(), POLLIN, 0});
          who.push_back(i);
        }
      }
      if (!pfds.empty()) ::poll(pfds.data(), pfds.size(), 20);
      for (std::size_t k = 0; k < pfds.size(); ++k) {
        if ((pfds[k].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        char buf[4096];
        ssize_t n = ::read(pfds[k].fd, buf, sizeof(buf));
        if (n > 0) {
          children[who[k]].report.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
          children[who[k]].eof = true;
        }
      }
      // Reap the children that have ended.
      bool all_exited = true;
      bool others_exited = true;
      for (std::size_t i = 0; i < children.size(); ++i) {
        auto& c = children[i];
        if (!c.exited) {
          int status = 0;
          pid_t got = ::waitpid(c.pid, &status, WNOHANG);
          if (got == c.pid) {
            c.exited = true;
            auto& o = outcomes[i];
            o.finished = true;
            if (WIFEXITED(status)) o.exit_code = WEXITSTATUS(status);
            if (WIFSIGNALED(status)) o.signal = WTERMSIG(status);
          }
        }
        if (!c.exited) {
          all_exited = false;
          if (options.victims.count(static_cast<int>(i)) == 0) others_exited = false;
        }
      }
      if (all_exited) break;
      if (others_exited) {
        for (std::size_t i = 0; i < children.size(); ++i) {
          if (!children[i].exited) ::kill(children[i].pid, SIGKILL);
        }
      }
      if (Clock::now() > deadline && !over_limit) {
        over_limit = true;
        for (auto& c : children) {
          if (!c.exited) ::kill(c.pid, SIGKILL);
        }
      }
    }
    // Drain what is left in the pipes (a child writes its report just before it exits).
    for (auto& c : children) {
      char buf[4096];
      for (ssize_t n; !c.eof && (n = ::read(c.out.get(), buf, sizeof(buf))) > 0;) {
        c.report.append(buf, static_cast<std::size_t>(n));
      }
    }
    if (over_limit) {
      ADD_FAILURE() << "the group of " << size << " processes exceeded its limit of "
                    << options.limit.count() << " ms; the remaining ranks were killed";
    }
    for (std::size_t i = 0; i < children.size(); ++i) {
      const auto& o = outcomes[i];
      const bool victim = options.victims.count(static_cast<int>(i)) > 0;
      if (!children[i].report.empty()) {
        ADD_FAILURE() << "rank " << i << " of " << size << " (process " << children[i].pid
                      << ") failed:\n"
                      << children[i].report;
      }
      if (victim || (over_limit && o.signal == SIGKILL)) continue;  // reported above
      if (o.signal != 0) {
        ADD_FAILURE() << "rank " << i << " (process " << children[i].pid << ") died by signal "
                      << o.signal << " (" << ::strsignal(o.signal) << ")";
      } else if (o.exit_code != 0 && children[i].report.empty()) {
        ADD_FAILURE() << "rank " << i << " (process " << children[i].pid << ") exited with "
                      << o.exit_code;
      }
    }
    return outcomes;
  }
};

}  // namespace

std::string to_string(RankMode mode) { return mode == RankMode::threads ? "threads" : "processes"; }

Communicator RankContext::create(Options options, const std::string& key_prefix) const {
  options.rank = rank;
  options.size = size;
  if (options.timeout.count() == 0) options.timeout = kDefaultTimeout;
  if (key_prefix.empty()) return detail::create_with_store(options, store);
  return detail::create_with_store(options, bootstrap::make_prefix_store(key_prefix, store));
}

void RankContext::sync(const std::string& name, std::chrono::milliseconds limit) const {
  const std::string key = "test-sync/" + name;
  if (store->add(key, 1) == size) store->set_string(key + "/done", "1");
  store->get(key + "/done", Clock::now() + limit);
}

std::unique_ptr<RankGroup> make_rank_group(RankMode mode) {
  if (mode == RankMode::threads) return std::make_unique<ThreadRankGroup>();
  return std::make_unique<ProcessRankGroup>();
}

std::vector<int> listening_ports_of_this_process() {
  // Socket inodes this process owns.
  std::set<std::string> inodes;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      char target[256];
      std::string path = std::string("/proc/self/fd/") + e->d_name;
      ssize_t n = ::readlink(path.c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      std::string t(target);
      if (t.rfind("socket:[", 0) == 0) inodes.insert(t.substr(8, t.size() - 9));
    }
    ::closedir(d);
  }
  std::vector<int> ports;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string sl, local, remote, state, queues, timer, retr, uid, timeout, inode;
      fields >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >>
          inode;
      if (state != "0A" || inodes.count(inode) == 0) continue;  // 0A: LISTEN
      auto colon = local.rfind(':');
      if (colon == std::string::npos) continue;
      ports.push_back(static_cast<int>(std::stoul(local.substr(colon + 1), nullptr, 16)));
    }
  }
  return ports;
}

int free_tcp_port() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return 0;
  socklen_t len = sizeof(addr);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
  return ntohs(addr.sin_port);
}

ScopedEnv::ScopedEnv(std::string name, const std::string& value) : name_(std::move(name)) {
  if (const char* v = std::getenv(name_.c_str())) {
    had_ = true;
    old_ = v;
  }
  ::setenv(name_.c_str(), value.c_str(), 1);
}

ScopedEnv::~ScopedEnv() {
  if (had_) {
    ::setenv(name_.c_str(), old_.c_str(), 1);
  } else {
    ::unsetenv(name_.c_str());
  }
}

}  // namespace ringlet::testing
