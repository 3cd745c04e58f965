// SPDX-License-Identifier: Apache-2.0
// ringlet-run: starts N ranks (locally, in network namespaces or over ssh) and supervises them.
//
// A plain process supervisor: standard library and POSIX only, no ringlet library (it uses only
// header-only helpers from src/common). This file sets up the job (addresses, the store port,
// each rank's argv and environment); supervisor.cpp runs it; options.cpp parses the command
// line.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "src/common/deadline.hpp"
#include "src/common/str_cat.hpp"
#include "src/common/unique_fd.hpp"
#include "tools/run/hang_diagnosis.hpp"
#include "tools/run/supervisor.hpp"

extern char** environ;

namespace ringlet::run {
namespace {

constexpr auto kResolveLimit = std::chrono::seconds(5);  // `ip -n HOST addr show`

std::string make_job_id() {
  std::random_device rd;
  std::string id;
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < 4; ++i) {
    unsigned v = rd();
    for (int k = 0; k < 4; ++k) id += hex[(v >> (4 * k)) & 0xf];
  }
  return id;
}

// The job's secret: 32 bytes from the kernel, as 64 hexadecimal digits. It reaches the ranks
// through their environment (local, netns) or ssh's standard input, never a command line.
std::optional<std::string> make_secret() {
  unsigned char raw[32];
  std::size_t done = 0;
  while (done < sizeof raw) {
    ssize_t n = ::getrandom(raw + done, sizeof raw - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    done += static_cast<std::size_t>(n);
  }
  const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char b : raw) {
    s += hex[b >> 4];
    s += hex[b & 15];
  }
  return s;
}

// Asks the kernel for a free TCP port on 127.0.0.1 and closes it again. Racy by nature:
// another process may take the port before rank 0's store binds it (docs/guide/launcher.md).
std::optional<int> pick_free_port() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return std::nullopt;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return std::nullopt;
  socklen_t len = sizeof addr;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) return std::nullopt;
  return ntohs(addr.sin_port);
}

// Finds `name` the way execvp would; true if an executable file exists.
bool command_exists(const std::string& name) {
  auto executable = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
           ::access(path.c_str(), X_OK) == 0;
  };
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), F_OK) == 0;
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t colon = dirs.find(':', start);
    if (colon == std::string_view::npos) colon = dirs.size();
    std::string dir(dirs.substr(start, colon - start));
    if (executable((dir.empty() ? std::string(".") : dir) + "/" + name)) return true;
    start = colon + 1;
  }
  return false;
}

// Runs `ip -n HOST -4 -o addr show` (bounded) and returns the first global IPv4 address.
std::optional<std::string> netns_address(const std::string& host, std::string& error) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    error = str_cat("pipe: ", std::strerror(errno));
    return std::nullopt;
  }
  UniqueFd rd(fds[0]), wr(fds[1]);
  std::vector<std::string> argv = {"ip", "-n", host, "-4", "-o", "addr", "show"};
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    error = str_cat("fork: ", std::strerror(errno));
    return std::nullopt;
  }
  if (pid == 0) {
    ::dup2(wr.get(), 1);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::execvp("ip", cargv.data());
    ::_exit(kExitNotFound);
  }
  wr.reset();
  std::string out;
  Deadline deadline = Clock::now() + kResolveLimit;
  char buf[4096];
  while (Clock::now() < deadline) {
    pollfd p{rd.get(), POLLIN, 0};
    if (::poll(&p, 1, ms_until(deadline)) <= 0) continue;
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  int status = 0;
  pid_t done = 0;
  while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 && Clock::now() < deadline) {
    ::usleep(5000);
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    error = str_cat("`ip -n ", host, " -4 -o addr show` did not finish within 5 s");
    return std::nullopt;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    error = str_cat("`ip -n ", host, " -4 -o addr show` failed (is '", host,
                    "' a network namespace? see `ip netns list`)");
    return std::nullopt;
  }
  std::size_t start = 0;
  while (start < out.size()) {
    std::size_t nl = out.find('\n', start);
    if (nl == std::string::npos) nl = out.size();
    std::string_view line(out.data() + start, nl - start);
    start = nl + 1;
    std::size_t inet = line.find(" inet ");
    if (inet == std::string_view::npos || line.find(" scope global") == std::string_view::npos) {
      continue;
    }
    std::string_view rest = line.substr(inet + 6);
    std::size_t end = rest.find_first_of("/ ");
    return std::string(rest.substr(0, end));
  }
  error = str_cat("network namespace '", host, "' has no global IPv4 address");
  return std::nullopt;
}

// argv of one rank, as started on this machine.
std::vector<std::string> rank_argv(const RunOptions& opts, const HostSpec& host,
                                   const std::vector<std::string>& env_for_ssh, bool with_secret) {
  std::vector<std::string> argv;
  switch (opts.mode) {
    case LaunchMode::local:
      argv = opts.command;
      break;
    case LaunchMode::netns:
      // Its own UTS namespace, so that `hostname` in the rank says HOST.
      argv = {"ip",      "netns",   "exec",
              host.name, "unshare", "--uts",
              "sh",      "-c",      "hostname \"$1\" && shift && exec \"$@\"",
              "sh",      host.name};
      argv.insert(argv.end(), opts.command.begin(), opts.command.end());
      break;
    case LaunchMode::ssh: {
      const char* ssh = std::getenv("RINGLET_RUN_SSH");
      // The secret arrives as the first line of standard input (a POSIX shell on the remote
      // side reads it), so that it never appears in a command line on either end.
      std::string remote =
          with_secret ? "IFS= read -r RINGLET_SECRET && export RINGLET_SECRET && exec env" : "env";
      for (const auto& e : env_for_ssh) remote += " " + shell_quote(e);
      for (const auto& a : opts.command) remote += " " + shell_quote(a);
      argv = {ssh != nullptr && *ssh != '\0' ? ssh : "ssh",
              "-o",
              "BatchMode=yes",
              "-o",
              "ConnectTimeout=10",
              "--",  // a host name that starts with '-' is a host, never an ssh option
              host.addr.empty() ? host.name : host.addr,
              remote};
      break;
    }
  }
  return argv;
}

int launch(const RunOptions& opts) {
  // Addresses: each netns host's IPv4 address, or the given one, or the name itself.
  std::vector<HostSpec> hosts = opts.hosts;
  if (opts.mode == LaunchMode::netns) {
    for (auto& h : hosts) {
      if (!h.addr.empty()) continue;
      std::string error;
      auto addr = netns_address(h.name, error);
      if (!addr) {
        say(error);
        return kExitSetupFailure;
      }
      h.addr = *addr;
    }
  }
  if (opts.mode != LaunchMode::ssh && !command_exists(opts.command[0])) {
    say(str_cat("command not found: ", opts.command[0]));
    return kExitNotFound;
  }

  // The store port: --port, else RINGLET_PORT, else a free local port (ssh: a random port in
  // 20000-29999, below Linux's ephemeral range: a port cannot be probed on the remote host,
  // and a fixed default collided between concurrent jobs and was predictable).
  int port = 20000 + static_cast<int>(std::random_device{}() % 10000);
  if (opts.port) {
    port = *opts.port;
  } else if (const char* p = std::getenv("RINGLET_PORT"); p != nullptr && *p != '\0') {
    char* end = nullptr;
    long v = std::strtol(p, &end, 10);
    if (*end != '\0' || v < 1 || v > 65535) {
      say(str_cat("RINGLET_PORT='", p, "' is not a port in 1..65535"));
      return kExitUsage;
    }
    port = static_cast<int>(v);
  } else if (opts.mode != LaunchMode::ssh) {
    auto free_port = pick_free_port();
    if (!free_port) {
      say(str_cat("cannot find a free port on 127.0.0.1: ", std::strerror(errno)));
      return kExitSetupFailure;
    }
    port = *free_port;
  }
  std::string store_host = "127.0.0.1";
  if (opts.mode != LaunchMode::local) {
    store_host = hosts[0].addr.empty() ? hosts[0].name : hosts[0].addr;
  }
  std::string store_addr = store_host.find(':') != std::string::npos
                               ? str_cat("[", store_host, "]:", port)
                               : str_cat(store_host, ":", port);
  std::string job_id = make_job_id();
  auto placement = place_ranks(opts.np, hosts);

  // The job's secret: the caller's RINGLET_SECRET (ours or -x), else a file the caller named
  // with RINGLET_SECRET_FILE (passed on as it is), else a new one for this job.
  std::string secret;
  bool secret_file = false;
  auto lookup = [&](const std::string& name) -> std::optional<std::string> {
    for (const auto& x : opts.exports) {
      std::size_t eq = x.find('=');
      if (eq != std::string::npos && x.substr(0, eq) == name) return x.substr(eq + 1);
    }
    const char* v = std::getenv(name.c_str());
    if (v != nullptr && *v != '\0') return std::string(v);
    return std::nullopt;
  };
  if (auto v = lookup("RINGLET_SECRET")) {
    secret = *v;
  } else if (lookup("RINGLET_SECRET_FILE")) {
    secret_file = true;
  } else if (auto made = make_secret()) {
    secret = *made;
  } else {
    say(str_cat("cannot generate the job's secret: getrandom: ", std::strerror(errno)));
    return kExitSetupFailure;
  }
  const bool feed_secret = opts.mode == LaunchMode::ssh && !secret_file;
  // Hang reports on request (docs/reliability.md): SIGUSR2 unless the caller chose one.
  const std::string hang_signal = lookup("RINGLET_HANG_SIGNAL").value_or("SIGUSR2");
  RunOptions run_opts = opts;
  run_opts.hang_signal = signal_number(hang_signal);
  std::vector<std::string> stdin_data;

  // The environment of each rank: ours (not for ssh), then -x, then RINGLET_*.
  std::vector<std::vector<std::string>> argvs, envs;
  for (int r = 0; r < opts.np; ++r) {
    const Placement& p = placement[static_cast<std::size_t>(r)];
    std::vector<std::pair<std::string, std::string>> set;
    for (const auto& x : opts.exports) {
      std::size_t eq = x.find('=');
      if (x.substr(0, eq) == "RINGLET_SECRET") continue;  // set below, never on a command line
      if (eq != std::string::npos) {
        set.emplace_back(x.substr(0, eq), x.substr(eq + 1));
      } else if (const char* v = std::getenv(x.c_str()); v != nullptr) {
        set.emplace_back(x, v);
      } else if (r == 0) {
        say(str_cat("warning: -x ", x, ": ", x, " is not set here; not exported"));
      }
    }
    set.emplace_back("RINGLET_RANK", std::to_string(r));
    set.emplace_back("RINGLET_SIZE", std::to_string(opts.np));
    set.emplace_back("RINGLET_LOCAL_RANK", std::to_string(p.local_rank));
    set.emplace_back("RINGLET_LOCAL_SIZE", std::to_string(p.local_size));
    set.emplace_back("RINGLET_ADDR", store_addr);
    set.emplace_back("RINGLET_JOB_ID", job_id);
    if (!secret.empty() && !feed_secret) set.emplace_back("RINGLET_SECRET", secret);
    set.emplace_back("RINGLET_HANG_SIGNAL", hang_signal);
    if (!hosts.empty())
      set.emplace_back("RINGLET_NODE_ID", hosts[static_cast<std::size_t>(p.host)].name);

    // Local and netns ranks get our environment plus `set`; ssh itself runs with our
    // environment, and the ranks' variables travel in the remote command.
    std::vector<std::string> env, remote_env;
    for (char** e = environ; *e != nullptr; ++e) {
      std::string_view entry(*e);
      std::string_view name = entry.substr(0, entry.find('='));
      bool replaced = false;
      for (const auto& kv : set) replaced = replaced || kv.first == name;
      if (!replaced || opts.mode == LaunchMode::ssh) env.emplace_back(entry);
    }
    for (const auto& kv : set) {
      (opts.mode == LaunchMode::ssh ? remote_env : env).push_back(kv.first + "=" + kv.second);
    }
    const HostSpec local_host{"localhost", "", opts.np};
    const HostSpec& host = hosts.empty() ? local_host : hosts[static_cast<std::size_t>(p.host)];
    argvs.push_back(rank_argv(opts, host, remote_env, feed_secret));
    envs.push_back(std::move(env));
    stdin_data.push_back(feed_secret ? secret + "\n" : std::string());
  }
  return supervise(run_opts, std::move(argvs), std::move(envs), std::move(stdin_data));
}

}  // namespace
}  // namespace ringlet::run

int main(int argc, char** argv) {
  using namespace ringlet::run;
  std::vector<std::string> args(argv + 1, argv + argc);
  RunOptions opts;
  try {
    opts = parse_args(args);
  } catch (const UsageError& e) {
    write_all(2, ringlet::str_cat("ringlet-run: ", e.what(), "\n", usage_text()));
    return kExitUsage;
  }
  if (opts.help) {
    write_all(1, usage_text());
    return 0;
  }
  return launch(opts);
}
