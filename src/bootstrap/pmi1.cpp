// SPDX-License-Identifier: Apache-2.0
// A small client of the PMI-1 wire protocol that MPICH's Hydra (mpiexec.hydra) serves on the
// socket it passes as PMI_FD: text lines "cmd=NAME key=value ...". Only what the wire-up
// needs: init, get_my_kvsname, put, barrier_in, get and finalize. Debian ships no separate
// PMI client library, hence this one.
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "src/bootstrap/launcher_kvs.hpp"
#include "src/common/check.hpp"

namespace ringlet::bootstrap {
namespace {

constexpr std::size_t kMaxLine = 4096;

class Pmi1Client final : public LauncherKvs {
 public:
  Pmi1Client(int fd, int rank, Deadline deadline) : fd_(fd), rank_(rank) {
    auto r = command("cmd=init pmi_version=1 pmi_subversion=1", "response_to_init", deadline);
    if (r["rc"] != "0") {
      throw Error(ErrorCode::transport,
                  str_cat("PMI-1 init on PMI_FD=", fd_, " refused (rc=", r["rc"], ")"));
    }
    initialized_ = true;
    kvsname_ = command("cmd=get_my_kvsname", "my_kvsname", deadline)["kvsname"];
    if (kvsname_.empty()) {
      throw Error(ErrorCode::transport, str_cat("PMI-1 on PMI_FD=", fd_, " gave no kvsname"));
    }
  }
  ~Pmi1Client() override {
    if (!initialized_) return;
    try {
      command("cmd=finalize", "finalize_ack", Clock::now() + std::chrono::seconds(5));
    } catch (const Error&) {
      // The process manager is gone; nothing left to tell it.
    }
  }
  Pmi1Client(const Pmi1Client&) = delete;
  Pmi1Client& operator=(const Pmi1Client&) = delete;

  const char* name() const override { return "PMI-1"; }

  void put(const std::string& key, const std::string& value) override {
    check_word(key);
    check_word(value);
    auto r =
        command(str_cat("cmd=put kvsname=", kvsname_, " key=", key, ".", rank_, " value=", value),
                "put_result", Clock::now() + std::chrono::seconds(60));
    if (r["rc"] != "0") {
      throw Error(ErrorCode::transport,
                  str_cat("PMI-1 put of '", key, "' by rank ", rank_, " failed: ", r["msg"]));
    }
  }

  std::string job_name() const override { return kvsname_; }

  void fence(Deadline deadline) override { command("cmd=barrier_in", "barrier_out", deadline); }

  std::string get(int rank, const std::string& key, Deadline deadline) override {
    auto r = command(str_cat("cmd=get kvsname=", kvsname_, " key=", key, ".", rank), "get_result",
                     deadline);
    if (r["rc"] != "0") {
      throw Error(ErrorCode::transport, str_cat("PMI-1 get of rank ", rank, "'s '", key,
                                                "' at rank ", rank_, " failed: ", r["msg"]));
    }
    return r["value"];
  }

 private:
  static void check_word(const std::string& s) {
    RINGLET_CHECK(!s.empty() && s.find_first_of(" =\n") == std::string::npos, "PMI-1: '", s,
                  "' has a space, '=' or newline");
  }

  // Sends one command line and reads reply lines until one with cmd=`expect`.
  std::map<std::string, std::string> command(const std::string& line, const char* expect,
                                             Deadline deadline) {
    std::string out = line + "\n";
    std::size_t sent = 0;
    while (sent < out.size()) {
      ssize_t n = ::write(fd_, out.data() + sent, out.size() - sent);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail(str_cat("writing '", line, "'"), errno);
      sent += static_cast<std::size_t>(n);
    }
    for (;;) {
      std::map<std::string, std::string> reply = parse(read_line(deadline, line));
      if (reply["cmd"] == expect) return reply;
    }
  }

  std::string read_line(Deadline deadline, const std::string& after) {
    for (;;) {
      std::size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      if (buffer_.size() > kMaxLine) fail("a reply line over 4 KiB", 0);
      pollfd p{fd_, POLLIN, 0};
      int rc = ::poll(&p, 1, ms_until(deadline));
      if (rc < 0 && errno == EINTR) continue;
      if (rc < 0) fail("poll", errno);
      if (rc == 0 && Clock::now() < deadline) continue;
      if (rc == 0) {
        throw Error(
            ErrorCode::timeout,
            str_cat("PMI-1: no answer from mpiexec.hydra on PMI_FD=", fd_, " to '", after,
                    "' at rank ", rank_, " (a rank did not reach create() in time, or exited)"));
      }
      char buf[1024];
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail(str_cat("reading the answer to '", after, "'"), n == 0 ? 0 : errno);
      buffer_.append(buf, static_cast<std::size_t>(n));
    }
  }

  static std::map<std::string, std::string> parse(const std::string& line) {
    std::map<std::string, std::string> out;
    std::size_t pos = 0;
    while (pos < line.size()) {
      std::size_t end = line.find(' ', pos);
      if (end == std::string::npos) end = line.size();
      std::string item = line.substr(pos, end - pos);
      std::size_t eq = item.find('=');
      if (eq != std::string::npos) out[item.substr(0, eq)] = item.substr(eq + 1);
      pos = end + 1;
    }
    return out;
  }

  [[noreturn]] void fail(const std::string& what, int err) {
    throw Error(ErrorCode::peer_lost,
                str_cat("PMI-1 on PMI_FD=", fd_, " at rank ", rank_, ": ", what, " failed",
                        err != 0 ? str_cat(": ", std::strerror(err)) : std::string(" (closed)")));
  }

  int fd_;
  int rank_;
  bool initialized_ = false;
  std::string kvsname_;
  std::string buffer_;
};

}  // namespace

std::unique_ptr<LauncherKvs> pmi1_connect(int fd, int rank, Deadline deadline) {
  return std::make_unique<Pmi1Client>(fd, rank, deadline);
}

}  // namespace ringlet::bootstrap
