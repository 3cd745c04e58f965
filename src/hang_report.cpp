// SPDX-License-Identifier: Apache-2.0
#include "src/hang_report.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <mutex>
#include <thread>

#include "src/common/log.hpp"
#include "src/common/str_cat.hpp"

namespace ringlet {

std::string format_hang_report(const HangSnapshot& s) {
  if (!s.active) {
    return str_cat("hang report: rank ", s.rank, "/", s.size, " idle after collective #", s.seq);
  }
  auto num = [](long long v) { return v < 0 ? std::string("-") : std::to_string(v); };
  return str_cat("hang report: rank ", s.rank, "/", s.size, " collective #", s.seq, " ",
                 s.call.empty() ? std::string("?") : s.call, " phase=", s.phase,
                 " step=", num(s.step), " waits_for=", num(s.peer), " since_ms=", num(s.since_ms));
}

namespace {

struct Watch {
  std::mutex mutex;  // guards sources; held while a report is written
  std::map<int, std::function<std::string()>> sources;
  int next_id = 1;
  int signo = 0;
  int pipe_read = -1;
  int pipe_write = -1;
  struct sigaction previous {};
};

Watch& watch() {
  static Watch* w = new Watch;  // never destroyed: the handler may run during exit
  return *w;
}

std::atomic<int> report_fd{-1};
std::atomic<bool> report_fd_set{false};

void on_signal(int signo, siginfo_t* info, void* context) {
  Watch& w = watch();
  const int saved = errno;
  const char byte = 1;
  [[maybe_unused]] ssize_t n = ::write(w.pipe_write, &byte, 1);  // non-blocking; a full pipe
                                                                 // already asks for a report
  errno = saved;
  const struct sigaction& p = w.previous;
  if ((p.sa_flags & SA_SIGINFO) != 0) {
    if (p.sa_sigaction != nullptr) p.sa_sigaction(signo, info, context);
  } else if (p.sa_handler != SIG_DFL && p.sa_handler != SIG_IGN && p.sa_handler != nullptr) {
    p.sa_handler(signo);
  }
}

void watcher_main() {
  Watch& w = watch();
  char buf[64];
  for (;;) {
    const ssize_t n = ::read(w.pipe_read, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    std::lock_guard lock(w.mutex);
    for (auto& [id, source] : w.sources) {
      try {
        emit_hang_report(source());
      } catch (...) {
        // A report that cannot be built (out of memory) is skipped; the job goes on.
      }
    }
  }
}

// Installs the handler and starts the watcher; with w.mutex held. False when it could not.
bool install(Watch& w, int signo) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  ::fcntl(fds[1], F_SETFL, O_NONBLOCK);
  w.pipe_read = fds[0];
  w.pipe_write = fds[1];
  struct sigaction sa {};
  sa.sa_sigaction = on_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(signo, &sa, &w.previous) != 0) return false;
  w.signo = signo;
  std::thread(watcher_main).detach();
  return true;
}

}  // namespace

int register_hang_source(int signo, std::function<std::string()> source) {
  if (signo <= 0) return 0;
  Watch& w = watch();
  std::lock_guard lock(w.mutex);
  if (w.signo == 0) {
    if (!install(w, signo)) {
      RINGLET_LOG(warn, "RINGLET_HANG_SIGNAL: cannot install a handler for signal ", signo,
                  "; hang reports come only at deadlines");
      return 0;
    }
  } else if (w.signo != signo) {
    RINGLET_LOG(warn, "RINGLET_HANG_SIGNAL: signal ", w.signo, " already reports; ", signo,
                " is not installed as well");
  }
  const int id = w.next_id++;
  w.sources.emplace(id, std::move(source));
  // ringlet-run sends the signal only to ranks that said this (tools/run/supervisor.cpp).
  static bool announced = false;
  const int fd = report_fd.load(std::memory_order_acquire);
  if (!announced && fd >= 0 && w.signo == signo) {
    announced = true;
    static constexpr char kOn[] = "hang reports: on\n";
    [[maybe_unused]] ssize_t n = ::write(fd, kOn, sizeof kOn - 1);
  }
  return id;
}

void set_hang_report_fd(int fd) noexcept {
  if (fd < 0 || report_fd_set.exchange(true)) return;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {
    RINGLET_LOG(warn, "RINGLET_REPORT_FD=", fd, " is not a pipe; hang reports go to the log only");
    return;
  }
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  report_fd.store(fd, std::memory_order_release);
}

void emit_hang_report(const std::string& line) noexcept {
  try {
    log::write(log::Level::warn, line);
    const int fd = report_fd.load(std::memory_order_acquire);
    if (fd < 0) return;
    // One write of at most PIPE_BUF bytes is atomic: reports of several threads never mix.
    std::string out = line.substr(0, PIPE_BUF - 1) + "\n";
    [[maybe_unused]] ssize_t n = ::write(fd, out.data(), out.size());
  } catch (...) {
    // Out of memory: the report is lost, the job goes on.
  }
}

void unregister_hang_source(int id) noexcept {
  if (id <= 0) return;
  Watch& w = watch();
  std::lock_guard lock(w.mutex);
  w.sources.erase(id);
}

}  // namespace ringlet
