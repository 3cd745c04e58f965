// SPDX-License-Identifier: Apache-2.0
// ringlet-run's supervisor.
//
// A plain process supervisor: standard library and POSIX only, no ringlet library. One thread,
// one poll() loop over a signalfd and (with --tag-output) the ranks' output pipes. Each rank
// is the leader of its own process group; a rank's exit is observed with waitid(WNOWAIT), so
// the zombie keeps its pid (and so its process group id) reserved until the job ends, and a
// kill(-pgid) can never reach an unrelated group.
#include "tools/run/supervisor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "src/common/deadline.hpp"
#include "src/common/str_cat.hpp"
#include "src/common/unique_fd.hpp"
#include "tools/run/hang_diagnosis.hpp"

namespace ringlet::run {
namespace {

constexpr auto kGrace = std::chrono::seconds(3);                      // SIGTERM -> SIGKILL
constexpr auto kKillWait = std::chrono::seconds(5);                   // SIGKILL -> give up waiting
constexpr auto kDrainLimit = std::chrono::seconds(2);                 // output of exited ranks
constexpr std::size_t kMaxLine = 64 * 1024;                           // longer lines are split
constexpr int kTagJobId = 1;                                          // mpirun's "[1,rank]" prefix
constexpr auto kReportWait = std::chrono::milliseconds(1500);         // hang signal -> SIGTERM
constexpr auto kFailureReportWait = std::chrono::milliseconds(1000);  // the same, after a failure
// What a rank's library writes first on its report pipe once its signal handler is in place.
constexpr std::string_view kReportsOn = "hang reports: on";

std::string plural(long n, std::string_view word) {
  return str_cat(n, " ", word, n == 1 ? "" : "s");
}

// What happened to one rank, and its process.
struct Rank {
  int rank = 0;
  pid_t pid = -1;  // also its process group id
  bool exited = false;
  int status = 0;  // 0..255, 128+S when killed by signal S
  int signal = 0;
  bool reports = false;  // said "hang reports: on" on its report pipe: the signal is handled
  bool asked = false;    // was sent the hang signal last time reports were asked for
};

// One stream of a rank: the read end of its stdout or stderr pipe (--tag-output), or of its
// report pipe (RINGLET_REPORT_FD: hang reports only, read and not echoed).
struct Stream {
  UniqueFd fd;
  int rank = 0;
  int out_fd = 1;  // where tagged lines go: 1 or 2; -1: nowhere (the report pipe)
  std::string prefix;
  std::string pending;  // bytes after the last newline
};

class Supervisor {
 public:
  Supervisor(const RunOptions& opts, std::vector<std::vector<std::string>> argvs,
             std::vector<std::vector<std::string>> envs, std::vector<std::string> stdin_data)
      : opts_(opts),
        argvs_(std::move(argvs)),
        envs_(std::move(envs)),
        stdin_data_(std::move(stdin_data)) {}

  int run();

 private:
  bool spawn(int r);
  void reap();
  void on_exit(Rank& rank);
  void begin_termination(int signo);
  void kill_all(int signo);
  long alive() const;
  void read_stream(Stream& s);
  void emit(Stream& s, std::string_view line);
  void flush(Stream& s);
  void handle_signals();
  void finish();

  const RunOptions& opts_;
  std::vector<std::vector<std::string>> argvs_;
  std::vector<std::vector<std::string>> envs_;
  std::vector<std::string> stdin_data_;
  std::vector<Rank> ranks_;
  std::vector<Stream> streams_;
  UniqueFd sigfd_;
  std::optional<int> job_status_;  // set once, by the first event that ends the job
  bool terminating_ = false;
  bool killed_ = false;
  std::optional<Deadline> job_deadline_;
  std::optional<Deadline> kill_deadline_;    // SIGKILL at this time
  std::optional<Deadline> give_up_;          // stop waiting for ranks that survive SIGKILL
  std::optional<Deadline> drain_deadline_;   // stop reading output of exited ranks
  std::optional<Deadline> report_deadline_;  // hang reports asked for; SIGTERM at this time
  std::map<int, HangReport> reports_;        // the latest hang report of each rank
  std::map<int, Deadline> report_time_;      // when it came
  std::optional<Deadline> asked_at_;         // when the hang signal was last sent
  bool ask_for_reports(Deadline now, bool every_rank);
  bool reports_in() const;
};

long Supervisor::alive() const {
  long n = 0;
  for (const auto& r : ranks_) n += r.exited ? 0 : 1;
  return n;
}

void Supervisor::kill_all(int signo) {
  for (const auto& r : ranks_) {
    if (!r.exited) ::kill(-r.pid, signo);
  }
}

void Supervisor::begin_termination(int signo) {
  if (!terminating_) {
    terminating_ = true;
    kill_all(signo);
    kill_deadline_ = Clock::now() + kGrace;
  } else if (!killed_) {
    kill_all(SIGKILL);  // a second request does not wait for the grace period
    killed_ = true;
    give_up_ = Clock::now() + kKillWait;
  }
}

bool Supervisor::spawn(int r) {
  std::vector<char*> argv, envp;
  for (auto& a : argvs_[static_cast<std::size_t>(r)]) argv.push_back(a.data());
  argv.push_back(nullptr);

  auto make_pipe = [](UniqueFd& rd, UniqueFd& wr) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      say(str_cat("pipe: ", std::strerror(errno)));
      return false;
    }
    rd.reset(fds[0]);
    wr.reset(fds[1]);
    return true;
  };
  UniqueFd out_rd, out_wr, err_rd, err_wr, exec_rd, exec_wr, rep_rd, rep_wr;
  if (opts_.tag_output && (!make_pipe(out_rd, out_wr) || !make_pipe(err_rd, err_wr))) {
    return false;
  }
  // Hang reports come through a pipe of their own, named to the rank by RINGLET_REPORT_FD:
  // untagged output goes straight to our terminal, and the library says on it that it
  // handles the hang signal (not for ssh: an fd does not cross it; there --tag-output lets
  // the diagnosis read the reports). A RINGLET_REPORT_FD of our own (ringlet-run under
  // ringlet-run) is never passed on.
  const bool report_pipe = opts_.mode != LaunchMode::ssh;
  auto& env = envs_[static_cast<std::size_t>(r)];
  std::erase_if(env, [](const std::string& e) { return e.starts_with("RINGLET_REPORT_FD="); });
  if (report_pipe) {
    if (!make_pipe(rep_rd, rep_wr)) return false;
    env.push_back(str_cat("RINGLET_REPORT_FD=", rep_wr.get()));
  }
  envp.clear();
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  // The child reports a failed exec through this pipe; a successful exec closes it.
  if (!make_pipe(exec_rd, exec_wr)) return false;
  // stdin goes to rank 0 only, and only when it is not a terminal: a rank runs in a
  // background process group, and reading the terminal would stop it (SIGTTIN).
  bool give_stdin = r == 0 && !::isatty(0);
  const auto ri = static_cast<std::size_t>(r);
  const bool feed = ri < stdin_data_.size() && !stdin_data_[ri].empty();
  UniqueFd in_rd, in_wr;
  if (feed && !make_pipe(in_rd, in_wr)) return false;
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) {
    say(str_cat("fork: ", std::strerror(errno)));
    return false;
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls from here on.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(kExitSetupFailure);  // the launcher died already
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    if (opts_.tag_output) {
      ::dup2(out_wr.get(), 1);
      ::dup2(err_wr.get(), 2);
    }
    if (report_pipe) ::fcntl(rep_wr.get(), F_SETFD, 0);  // inherited across exec
    if (feed) {
      ::dup2(in_rd.get(), 0);
    } else if (!give_stdin) {
      // Close-on-exec: the rank gets /dev/null as fd 0 only, not a second copy of it.
      int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (null_fd >= 0) ::dup2(null_fd, 0);
    }
    ::execvpe(argv[0], argv.data(), envp.data());
    int err = errno;
    ssize_t ignored = ::write(exec_wr.get(), &err, sizeof err);
    (void)ignored;
    ::_exit(err == ENOENT ? kExitNotFound : kExitCannotExecute);
  }
  ::setpgid(pid, pid);  // also from the parent, so kill(-pid) works at once
  if (feed) {
    // A line or two: far below a pipe's capacity, so this never blocks.
    in_rd.reset();
    write_all(in_wr.get(), stdin_data_[ri]);
    in_wr.reset();
  }
  ranks_.push_back({r, pid});
  exec_wr.reset();
  int err = 0;
  ssize_t n;
  do {
    n = ::read(exec_rd.get(), &err, sizeof err);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof err)) {
    say(str_cat("rank ", r, ": cannot execute '", argv[0], "': ", std::strerror(err)));
    job_status_ = err == ENOENT ? kExitNotFound : kExitCannotExecute;
    return false;
  }
  if (report_pipe) {
    rep_wr.reset();
    Stream s;
    s.fd = std::move(rep_rd);
    s.rank = r;
    s.out_fd = -1;
    streams_.push_back(std::move(s));
  }
  if (opts_.tag_output) {
    for (int k = 0; k < 2; ++k) {
      Stream s;
      s.fd = std::move(k == 0 ? out_rd : err_rd);
      s.rank = r;
      s.out_fd = k == 0 ? 1 : 2;
      s.prefix = str_cat("[", kTagJobId, ",", r, "]", k == 0 ? "<stdout>: " : "<stderr>: ");
      streams_.push_back(std::move(s));
    }
  }
  return true;
}

void Supervisor::reap() {
  for (auto& rank : ranks_) {
    if (rank.exited) continue;
    siginfo_t info{};
    // WNOWAIT: leave the zombie, so that its pid and process group id stay reserved.
    if (::waitid(P_PID, static_cast<id_t>(rank.pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
      if (errno == ECHILD) rank.exited = true;
      continue;
    }
    if (info.si_pid != rank.pid) continue;
    rank.exited = true;
    if (info.si_code == CLD_EXITED) {
      rank.status = info.si_status & 0xff;
    } else {
      rank.signal = info.si_status;
      rank.status = 128 + info.si_status;
    }
    on_exit(rank);
  }
}

void Supervisor::on_exit(Rank& rank) {
  if (rank.status == 0 || job_status_) return;
  job_status_ = rank.status;
  std::string how = rank.signal != 0 ? str_cat("killed by signal ", rank.signal, " (",
                                               ::strsignal(rank.signal), ")")
                                     : str_cat("exited with status ", rank.status);
  long others = alive();
  if (others > 0) {
    say(str_cat("rank ", rank.rank, " (pid ", rank.pid, ") ", how, "; terminating the other ",
                plural(others, "rank")));
  } else {
    say(str_cat("rank ", rank.rank, " (pid ", rank.pid, ") ", how));
  }
  // The survivors say where they stand before they go, so that the diagnosis sees the whole
  // chain of waits (the rank that failed first is often not the culprit: it only timed out
  // first); at most kFailureReportWait, less once every rank asked has answered.
  if (ask_for_reports(Clock::now(), false)) {
    report_deadline_ = Clock::now() + kFailureReportWait;
    return;
  }
  begin_termination(SIGTERM);
}

// Sends the hang signal to the live ranks that handle it (every_rank: with --tag-output, every
// live rank, as the --timeout path always did). False when no rank was asked.
bool Supervisor::ask_for_reports(Deadline now, bool every_rank) {
  if (opts_.hang_signal <= 0) return false;
  long asked = 0;
  for (auto& r : ranks_) {
    r.asked = !r.exited && (r.reports || (every_rank && opts_.tag_output));
    if (r.asked) {
      ::kill(-r.pid, opts_.hang_signal);
      ++asked;
    }
  }
  if (asked > 0) asked_at_ = now;
  return asked > 0;
}

// Whether every rank asked has answered since (or has exited).
bool Supervisor::reports_in() const {
  if (!asked_at_) return true;
  for (const auto& r : ranks_) {
    if (!r.asked || r.exited) continue;
    auto it = report_time_.find(r.rank);
    if (it == report_time_.end() || it->second < *asked_at_) return false;
  }
  return true;
}

void Supervisor::emit(Stream& s, std::string_view line) {
  if (auto report = parse_hang_report(line); report && report->rank == s.rank) {
    reports_[s.rank] = *report;
    report_time_[s.rank] = Clock::now();
  }
  if (s.out_fd < 0) {
    if (line.starts_with(kReportsOn)) {
      for (auto& rank : ranks_) rank.reports = rank.reports || rank.rank == s.rank;
    }
    return;
  }
  std::string out;
  out.reserve(s.prefix.size() + line.size() + 1);
  out += s.prefix;
  out += line;
  if (out.back() != '\n') out += '\n';
  write_all(s.out_fd, out);
}

void Supervisor::read_stream(Stream& s) {
  char buf[65536];
  ssize_t n = ::read(s.fd.get(), buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    flush(s);
    return;
  }
  s.pending.append(buf, static_cast<std::size_t>(n));
  std::size_t start = 0;
  for (;;) {
    std::size_t nl = s.pending.find('\n', start);
    if (nl == std::string::npos) break;
    emit(s, std::string_view(s.pending).substr(start, nl + 1 - start));
    start = nl + 1;
  }
  s.pending.erase(0, start);
  while (s.pending.size() >= kMaxLine) {  // a very long line is cut into tagged pieces
    emit(s, std::string_view(s.pending).substr(0, kMaxLine));
    s.pending.erase(0, kMaxLine);
  }
}

// Writes the partial last line, if any, and closes the stream.
void Supervisor::flush(Stream& s) {
  if (!s.pending.empty()) emit(s, s.pending);
  s.pending.clear();
  s.fd.reset();
}

void Supervisor::handle_signals() {
  signalfd_siginfo info{};
  while (::read(sigfd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    int signo = static_cast<int>(info.ssi_signo);
    if (signo == SIGCHLD) continue;  // reap() runs every loop
    if (!job_status_) {
      job_status_ = 128 + signo;
      const char* abbrev = ::sigabbrev_np(signo);
      say(str_cat("received ",
                  abbrev != nullptr ? str_cat("SIG", abbrev) : str_cat("signal ", signo),
                  "; terminating ", plural(alive(), "rank")));
    }
    begin_termination(signo == SIGHUP ? SIGTERM : signo);
  }
}

int Supervisor::run() {
  // Signals arrive through a signalfd; the mask is restored in each child before exec.
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGCHLD, SIGINT, SIGTERM, SIGHUP}) sigaddset(&mask, s);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  sigfd_.reset(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd_) {
    say(str_cat("signalfd: ", std::strerror(errno)));
    return kExitSetupFailure;
  }

  for (int r = 0; r < opts_.np; ++r) {
    if (!spawn(r)) {
      if (!job_status_) job_status_ = kExitSetupFailure;
      if (alive() > 0) say(str_cat("terminating the ", plural(alive(), "rank"), " started"));
      begin_termination(SIGTERM);
      break;
    }
  }
  if (opts_.timeout_s && !terminating_) {
    job_deadline_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(*opts_.timeout_s));
  }

  for (;;) {
    reap();
    Deadline now = Clock::now();
    bool streams_open = false;
    for (const auto& s : streams_) streams_open = streams_open || static_cast<bool>(s.fd);
    if (alive() == 0) {
      if (!streams_open) break;
      if (!drain_deadline_) drain_deadline_ = now + kDrainLimit;
      if (now >= *drain_deadline_) break;  // something in a rank's group holds its pipe
    }
    if (job_deadline_ && !terminating_ && !report_deadline_ && now >= *job_deadline_) {
      job_status_ = kExitTimeout;
      // Who is asked for a report: with --tag-output every rank (as it always was); else
      // the ranks whose library said on its report pipe that it handles the signal (the
      // signal's default action would kill any other program, or a rank before create()).
      long asked = 0;
      for (const auto& rank : ranks_) {
        asked += !rank.exited && (opts_.tag_output || rank.reports) ? 1 : 0;
      }
      if (opts_.hang_signal > 0 && asked > 0) {
        // Each rank logs where it stands (RINGLET_HANG_SIGNAL) before the job ends.
        say(str_cat("job exceeded --timeout ", opts_.timeout_text, " s; asking ",
                    plural(asked, "rank"), " for hang reports, then terminating"));
        ask_for_reports(now, true);
        report_deadline_ = now + kReportWait;
      } else {
        say(str_cat("job exceeded --timeout ", opts_.timeout_text, " s; terminating ",
                    plural(alive(), "rank")));
        begin_termination(SIGTERM);
      }
    }
    if (report_deadline_ && !terminating_ && (now >= *report_deadline_ || reports_in())) {
      begin_termination(SIGTERM);
    }
    if (kill_deadline_ && !killed_ && now >= *kill_deadline_) {
      say(str_cat(plural(alive(), "rank"), " still running ", kGrace.count(),
                  " s after SIGTERM; sending SIGKILL"));
      killed_ = true;
      kill_all(SIGKILL);
      give_up_ = now + kKillWait;
    }
    if (give_up_ && now >= *give_up_) {
      say(str_cat(plural(alive(), "rank"), " did not exit after SIGKILL; giving up"));
      break;
    }

    Deadline wake = now + std::chrono::seconds(1);
    for (auto d : {job_deadline_, kill_deadline_, give_up_, drain_deadline_, report_deadline_}) {
      if (d && *d < wake) wake = *d;
    }
    std::vector<pollfd> fds{{sigfd_.get(), POLLIN, 0}};
    std::vector<Stream*> owners{nullptr};
    for (auto& s : streams_) {
      if (!s.fd) continue;
      fds.push_back({s.fd.get(), POLLIN, 0});
      owners.push_back(&s);
    }
    int ready = ::poll(fds.data(), fds.size(), ms_until(wake));
    if (ready <= 0) continue;
    if (fds[0].revents != 0) handle_signals();
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents != 0) read_stream(*owners[i]);
    }
  }
  finish();
  if (job_status_.value_or(0) != 0) {
    const std::string d = diagnose(reports_, opts_.np);
    if (!d.empty()) say(str_cat("diagnosis: ", d));
  }
  return job_status_.value_or(0);
}

// Ends the job: drains what is left of the output, kills every rank's process group
// (leftover background processes included) and reaps the ranks.
void Supervisor::finish() {
  for (auto& s : streams_) {
    if (!s.fd) continue;
    int flags = ::fcntl(s.fd.get(), F_GETFL);
    ::fcntl(s.fd.get(), F_SETFL, flags | O_NONBLOCK);
    char buf[65536];
    ssize_t n;
    while ((n = ::read(s.fd.get(), buf, sizeof buf)) > 0) {
      s.pending.append(buf, static_cast<std::size_t>(n));
    }
    std::size_t start = 0;
    for (std::size_t nl; (nl = s.pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      emit(s, std::string_view(s.pending).substr(start, nl + 1 - start));
    }
    s.pending.erase(0, start);
    flush(s);
  }
  for (auto& rank : ranks_) {
    ::kill(-rank.pid, SIGKILL);  // the group id is still reserved by the unreaped leader
    if (rank.exited) {
      ::waitpid(rank.pid, nullptr, WNOHANG);
    }
  }
  // Ranks that were still alive were just sent SIGKILL; wait briefly for them.
  Deadline deadline = Clock::now() + std::chrono::seconds(2);
  for (auto& rank : ranks_) {
    while (!rank.exited && Clock::now() < deadline) {
      if (::waitpid(rank.pid, nullptr, WNOHANG) != 0) break;
      ::usleep(10000);
    }
  }
}

}  // namespace

void write_all(int fd, std::string_view data) {
  Deadline give_up = Clock::now() + std::chrono::seconds(30);
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN && Clock::now() < give_up) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 100);
    } else {
      return;
    }
  }
}

void say(std::string_view message) { write_all(2, str_cat("ringlet-run: ", message, "\n")); }

int supervise(const RunOptions& opts, std::vector<std::vector<std::string>> argvs,
              std::vector<std::vector<std::string>> envs, std::vector<std::string> stdin_data) {
  Supervisor supervisor(opts, std::move(argvs), std::move(envs), std::move(stdin_data));
  return supervisor.run();
}

}  // namespace ringlet::run
