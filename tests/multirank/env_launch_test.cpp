// SPDX-License-Identifier: Apache-2.0
// Ranks started as separate programs: through ringlet-run, with torchrun, Open MPI, PMI and
// SLURM variables set by hand, and under a real Open MPI mpirun when there is one.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "src/common/deadline.hpp"
#include "src/common/str_cat.hpp"
#include "tests/multirank/rank_group.hpp"

extern char** environ;

namespace ringlet::testing {
namespace {

using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

// The environment of this process without any variable a launcher would set, so that the
// test alone decides what the ranks see.
Env clean_env() {
  static const char* const kPrefixes[] = {
      "RINGLET_",   "MASTER_",          "OMPI_",  "PMI_",  "PMIX_",        "MPI_LOCAL", "SLURM_",
      "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_", "ROLE_", "TORCHELASTIC_"};
  static const char* const kExact[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"};
  Env env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    std::string name = kv.substr(0, eq);
    bool drop = false;
    for (const char* p : kPrefixes) drop |= name.rfind(p, 0) == 0;
    for (const char* x : kExact) drop |= name == x;
    if (!drop) env[name] = kv.substr(eq + 1);
  }
  env["RINGLET_TIMEOUT"] = "60";
  return env;
}

struct Finished {
  int exit_code = -1;
  int signal = 0;
  std::string output;  // stdout and stderr together
};

// Starts programs and collects their output; kills what is still running at the limit.
class Programs {
 public:
  void start(const std::vector<std::string>& argv, const Env& env) {
    int fds[2];
    ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    std::vector<std::string> kv;
    for (const auto& [k, v] : env) kv.push_back(k + "=" + v);
    std::vector<char*> cargv, cenv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    for (auto& e : kv) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    std::fflush(stdout);
    std::fflush(stderr);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::setpgid(0, 0);  // its own process group, so a launcher's children can be killed too
      ::dup2(fds[1], 1);
      ::dup2(fds[1], 2);
      ::execve(cargv[0], cargv.data(), cenv.data());
      std::fprintf(stderr, "execve %s: %s\n", cargv[0], std::strerror(errno));
      std::_Exit(127);
    }
    ::close(fds[1]);
    procs_.push_back({pid, fds[0], {}, false, false});
  }

  std::vector<Finished> wait(std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    bool killed = false;
    for (;;) {
      bool all = true;
      std::vector<pollfd> pfds;
      std::vector<Proc*> who;
      for (auto& p : procs_) {
        if (!p.eof) {
          pfds.push_back({p.fd, POLLIN, 0});
          who.push_back(&p);
        }
      }
      if (!pfds.empty()) ::poll(pfds.data(), pfds.size(), 20);
      for (std::size_t i = 0; i < pfds.size(); ++i) {
        if ((pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        char buf[4096];
        ssize_t n = ::read(pfds[i].fd, buf, sizeof(buf));
        if (n > 0) {
          who[i]->result.output.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
          who[i]->eof = true;
        }
      }
      for (auto& p : procs_) {
        if (!p.exited) {
          int status = 0;
          if (::waitpid(p.pid, &status, WNOHANG) == p.pid) {
            p.exited = true;
            if (WIFEXITED(status)) p.result.exit_code = WEXITSTATUS(status);
            if (WIFSIGNALED(status)) p.result.signal = WTERMSIG(status);
          }
        }
        all &= p.exited && p.eof;
      }
      if (all) break;
      if (!killed && Clock::now() > deadline) {
        killed = true;
        ADD_FAILURE() << "programs still running after " << limit.count() << " ms; killing them";
        for (auto& p : procs_) {
          if (!p.exited) ::kill(-p.pid, SIGKILL);
        }
      }
      if (killed && Clock::now() > deadline + 10s) break;
    }
    std::vector<Finished> out;
    for (auto& p : procs_) {
      ::close(p.fd);
      out.push_back(p.result);
    }
    procs_.clear();
    return out;
  }

  ~Programs() {
    for (auto& p : procs_) {
      ::kill(-p.pid, SIGKILL);
      ::waitpid(p.pid, nullptr, 0);
      ::close(p.fd);
    }
  }

 private:
  struct Proc {
    pid_t pid;
    int fd;
    Finished result;
    bool exited;
    bool eof;
  };
  std::vector<Proc> procs_;
};

std::string check_program() {
  const char* p = std::getenv("RINGLET_ALLREDUCE_CHECK");
  return p != nullptr ? p : "";
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

// Starts `size` ranks of allreduce_check, rank r with env(r), and expects each to print OK.
void run_ranks(int size, const std::function<Env(int)>& env_of,
               const std::vector<std::string>& extra_args = {}) {
  const std::string prog = check_program();
  ASSERT_FALSE(prog.empty()) << "RINGLET_ALLREDUCE_CHECK is not set (meson sets it)";
  Programs programs;
  for (int r = 0; r < size; ++r) {
    std::vector<std::string> argv = {prog, "--expect-size", std::to_string(size)};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    programs.start(argv, env_of(r));
  }
  auto results = programs.wait(120s);
  for (std::size_t r = 0; r < results.size(); ++r) {
    EXPECT_EQ(results[r].exit_code, 0) << "rank " << r << " output:\n" << results[r].output;
    EXPECT_NE(results[r].output.find(str_cat("rank ", r, "/", size)), std::string::npos)
        << "rank " << r << " output:\n"
        << results[r].output;
    EXPECT_NE(results[r].output.find(": OK"), std::string::npos) << results[r].output;
  }
}

TEST(EnvLaunchTest, RingletRun) {
  const char* run = std::getenv("RINGLET_RUN");
  if (run == nullptr || !std::filesystem::exists(run)) GTEST_SKIP() << "ringlet-run is not built";
  for (int np : {2, 3}) {
    Programs programs;
    programs.start({run, "-np", std::to_string(np), "--timeout", "120", check_program(),
                    "--expect-size", std::to_string(np), "--expect-local-size", std::to_string(np)},
                   clean_env());
    auto results = programs.wait(150s);
    ASSERT_EQ(results.size(), 1u);
    EXPECT_EQ(results[0].exit_code, 0) << results[0].output;
    EXPECT_EQ(count_of(results[0].output, ": OK"), static_cast<std::size_t>(np))
        << results[0].output;
  }
}

TEST(EnvLaunchTest, RingletRunPropagatesARankFailure) {
  const char* run = std::getenv("RINGLET_RUN");
  if (run == nullptr || !std::filesystem::exists(run)) GTEST_SKIP() << "ringlet-run is not built";
  // Expecting a size the job does not have makes every rank exit with 1.
  Programs programs;
  programs.start({run, "-np", "2", "--timeout", "120", check_program(), "--expect-size", "5"},
                 clean_env());
  auto results = programs.wait(150s);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].exit_code, 1) << results[0].output;
}

TEST(EnvLaunchTest, TorchrunVariables) {
  const int port = free_tcp_port();
  run_ranks(3, [&](int r) {
    Env env = clean_env();
    env["MASTER_ADDR"] = "127.0.0.1";
    env["MASTER_PORT"] = std::to_string(port);
    env["RANK"] = std::to_string(r);
    env["WORLD_SIZE"] = "3";
    env["LOCAL_RANK"] = std::to_string(r);
    env["LOCAL_WORLD_SIZE"] = "3";
    return env;
  });
}

TEST(EnvLaunchTest, TorchrunVariablesWithoutLocalRankUseTheNodeIdentity) {
  const int port = free_tcp_port();
  run_ranks(2,
            [&](int r) {
              Env env = clean_env();
              env["MASTER_ADDR"] = "127.0.0.1";
              env["MASTER_PORT"] = std::to_string(port);
              env["RANK"] = std::to_string(r);
              env["WORLD_SIZE"] = "2";
              return env;
            },
            {"--expect-local-size", "2"});
}

TEST(EnvLaunchTest, OpenMpiVariables) {
  const int port = free_tcp_port();
  run_ranks(3, [&](int r) {
    Env env = clean_env();
    env["OMPI_COMM_WORLD_RANK"] = std::to_string(r);
    env["OMPI_COMM_WORLD_SIZE"] = "3";
    env["OMPI_COMM_WORLD_LOCAL_RANK"] = std::to_string(r);
    env["OMPI_COMM_WORLD_LOCAL_SIZE"] = "3";
    env["RINGLET_ADDR"] = str_cat("127.0.0.1:", port);
    return env;
  });
}

TEST(EnvLaunchTest, PmiVariables) {
  const int port = free_tcp_port();
  run_ranks(3, [&](int r) {
    Env env = clean_env();
    env["PMI_RANK"] = std::to_string(r);
    env["PMI_SIZE"] = "3";
    env["MPI_LOCALRANKID"] = std::to_string(r);
    env["MPI_LOCALNRANKS"] = "3";
    env["RINGLET_ADDR"] = "127.0.0.1";
    env["RINGLET_PORT"] = std::to_string(port);
    return env;
  });
}

class SlurmTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SlurmTest, SlurmVariablesWithTheStoreOnTheFirstHost) {
  const int port = free_tcp_port();
  run_ranks(3, [&](int r) {
    Env env = clean_env();
    env["SLURM_PROCID"] = std::to_string(r);
    env["SLURM_NTASKS"] = "3";
    env["SLURM_LOCALID"] = std::to_string(r);
    env["SLURM_NTASKS_PER_NODE"] = "3";
    env["SLURM_NODELIST"] = GetParam();
    env["RINGLET_PORT"] = std::to_string(port);
    return env;
  });
}

INSTANTIATE_TEST_SUITE_P(All, SlurmTest,
                         ::testing::Values("localhost", "127.0.0.[1-3]", "127.0.0.1,node[02-04]"),
                         [](const auto& info) { return str_cat("list", info.index); });

TEST(EnvLaunchTest, LauncherRankWithoutAnAddressNamesTheVariableToSet) {
  Programs programs;
  Env env = clean_env();
  env["OMPI_COMM_WORLD_RANK"] = "1";
  env["OMPI_COMM_WORLD_SIZE"] = "2";
  programs.start({check_program()}, env);
  auto results = programs.wait(60s);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].exit_code, 1) << results[0].output;
  EXPECT_NE(results[0].output.find("RINGLET_ADDR"), std::string::npos) << results[0].output;
}

// Open MPI's own launcher: it sets OMPI_COMM_WORLD_*; the store address comes through -x.
std::optional<std::string> find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return std::nullopt;
  std::string p(path);
  for (std::size_t begin = 0; begin <= p.size();) {
    std::size_t end = p.find(':', begin);
    if (end == std::string::npos) end = p.size();
    std::filesystem::path candidate = std::filesystem::path(p.substr(begin, end - begin)) / name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    begin = end + 1;
  }
  return std::nullopt;
}

TEST(EnvLaunchTest, RealMpirun) {
  auto mpirun = find_in_path("mpirun");
  if (!mpirun) GTEST_SKIP() << "mpirun is not installed";
  const int port = free_tcp_port();
  Env env = clean_env();
  env["RINGLET_ADDR"] = str_cat("127.0.0.1:", port);
  Programs programs;
  programs.start({*mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "3", "--bind-to",
                  "none", "-x", "RINGLET_ADDR", "-x", "RINGLET_TIMEOUT", check_program(),
                  "--expect-size", "3", "--expect-local-size", "3"},
                 env);
  auto results = programs.wait(150s);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].exit_code, 0) << results[0].output;
  EXPECT_EQ(count_of(results[0].output, ": OK"), 3u) << results[0].output;
}

}  // namespace
}  // namespace ringlet::testing
