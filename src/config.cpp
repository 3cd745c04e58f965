// SPDX-License-Identifier: Apache-2.0
// The configuration resolver: Options, then the environment, then measured defaults. The
// only reader of the RINGLET_* tunables (the launcher variables are read by
// src/bootstrap/launch_env.cpp, which resolves who the rank is, not how it runs).
#include "src/config.hpp"

#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <utility>
#include <vector>

#include "src/algo/select.hpp"
#include "src/common/check.hpp"
#include "src/common/fnv1a.hpp"

namespace ringlet {
namespace {

class Reader {
 public:
  explicit Reader(const EnvLookup& env) : env_(env) {}

  std::optional<std::string> text(std::string_view name) const {
    auto v = env_(name);
    if (!v || v->empty()) return std::nullopt;
    return v;
  }
  std::optional<long long> integer(std::string_view name, long long lo, long long hi) const {
    auto v = text(name);
    if (!v) return std::nullopt;
    char* end = nullptr;
    errno = 0;
    long long x = std::strtoll(v->c_str(), &end, 10);
    if (errno != 0 || end == v->c_str() || *end != '\0') {
      throw Error(ErrorCode::invalid_argument, str_cat(name, "=", *v, " is not an integer"));
    }
    if (x < lo || x > hi) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat(name, "=", *v, " is outside ", lo, "..", hi));
    }
    return x;
  }

 private:
  const EnvLookup& env_;
};

// The longest deadline: one year. Longer (or inf) timeouts are clamped to it.
constexpr long long kMaxTimeoutSeconds = 365LL * 24 * 3600;

// Measured over TCP loopback with bench/crossover.sh (docs/perf/crossover.md): recursive
// doubling wins up to 64 KiB and the ring from 128 KiB at 2-4 ranks; at 8 ranks recursive
// doubling still wins at 128 KiB.
std::size_t default_crossover_bytes(int size) {
  return size <= 4 ? std::size_t{64} << 10 : std::size_t{128} << 10;
}

// The contents of RINGLET_SECRET_FILE, which must be a regular file that only its owner may
// read (like ssh's keys); one trailing newline is not part of the secret.
std::string read_secret_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("RINGLET_SECRET_FILE=", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("RINGLET_SECRET_FILE=", path, " is not a regular file"));
  }
  if ((st.st_mode & 077) != 0) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat("RINGLET_SECRET_FILE=", path, " may be read by other users (mode 0",
                (st.st_mode >> 6) & 7, (st.st_mode >> 3) & 7, st.st_mode & 7, "); chmod 600 it"));
  }
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    throw Error(ErrorCode::invalid_argument, str_cat("RINGLET_SECRET_FILE=", path, ": unreadable"));
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  return text;
}

}  // namespace

EnvLookup process_env_lookup() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

namespace {
// RINGLET_HANG_SIGNAL: "SIGUSR2", "USR2", "usr2" or a number; "0" or "" turns it off.
// SIGKILL and SIGSTOP cannot be caught; SIGSEGV and the like are not requests.
int parse_hang_signal(const std::string& v) {
  if (v.empty() || v == "0") return 0;
  std::string name = ascii_lower(v);
  if (name.rfind("sig", 0) == 0) name = name.substr(3);
  static constexpr std::pair<std::string_view, int> kNames[] = {
      {"usr1", SIGUSR1}, {"usr2", SIGUSR2},   {"hup", SIGHUP}, {"quit", SIGQUIT},
      {"urg", SIGURG},   {"winch", SIGWINCH}, {"pwr", SIGPWR}, {"cont", SIGCONT}};
  for (const auto& [n, s] : kNames) {
    if (name == n) return s;
  }
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  const bool allowed = n == SIGUSR1 || n == SIGUSR2 || n == SIGHUP || n == SIGQUIT || n == SIGURG ||
                       n == SIGWINCH || n == SIGPWR || n == SIGCONT ||
                       (n >= SIGRTMIN && n <= SIGRTMAX);
  if (end == v.c_str() || *end != '\0' || !allowed) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("RINGLET_HANG_SIGNAL=", v,
                        " is not a signal that may ask for hang reports (SIGUSR1, SIGUSR2, HUP, "
                        "QUIT, URG, WINCH, PWR, CONT, a real-time signal, or 0)"));
  }
  return static_cast<int>(n);
}
}  // namespace

Config resolve_config(const Options& options, int size, const EnvLookup& env) {
  const Reader read(env);
  Config c;
  if (!options.algorithm.empty()) {
    c.algorithm = options.algorithm;
    algo::parse_algorithm_spec(c.algorithm, "Options::algorithm");
  } else if (auto v = read.text("RINGLET_ALGO")) {
    c.algorithm = *v;
    algo::parse_algorithm_spec(c.algorithm, "RINGLET_ALGO");
  }
  const auto check_transport = [](const std::string& t, std::string_view what) {
    if (t != "auto" && t != "tcp" && !(t == "rdma" && rdma_built())) {
      throw Error(
          ErrorCode::invalid_argument,
          str_cat(what, "=", t, " is not one of ", rdma_built() ? "auto, tcp, rdma" : "auto, tcp",
                  " (this build's transports",
                  rdma_built() ? "" : "; rdma needs the ibverbs feature", ")"));
    }
  };
  if (!options.transport.empty()) {
    c.transport = ascii_lower(options.transport);
    check_transport(c.transport, "Options::transport");
  } else if (auto v = read.text("RINGLET_TRANSPORT")) {
    c.transport = ascii_lower(*v);
    check_transport(c.transport, "RINGLET_TRANSPORT");
  }
  if (options.timeout.count() > 0) {
    c.timeout = options.timeout;
  } else if (auto v = read.text("RINGLET_TIMEOUT")) {
    char* end = nullptr;
    double s = std::strtod(v->c_str(), &end);
    if (end == v->c_str() || *end != '\0' || !(s > 0)) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat("RINGLET_TIMEOUT=", *v, " is not a positive number of seconds"));
    }
    // inf and huge values: clamped (a cast of inf is undefined, and now() + a huge
    // timeout overflows into the past, which made every wait time out at once).
    c.timeout = s >= kMaxTimeoutSeconds
                    ? std::chrono::milliseconds(kMaxTimeoutSeconds * 1000LL)
                    : std::chrono::milliseconds(static_cast<long long>(s * 1000.0));
  }
  c.timeout = std::min(c.timeout, std::chrono::milliseconds(kMaxTimeoutSeconds * 1000LL));
  if (auto v = read.text("RINGLET_HANG_SIGNAL")) c.hang_signal = parse_hang_signal(*v);
  if (auto v = read.integer("RINGLET_REPORT_FD", 3, 1 << 20)) c.report_fd = static_cast<int>(*v);
  if (c.timeout.count() < 1) c.timeout = std::chrono::milliseconds(1);
  c.crossover_bytes = default_crossover_bytes(size);
  if (auto v = read.integer("RINGLET_CROSSOVER_BYTES", 0, (1LL << 62))) {
    c.crossover_bytes = static_cast<std::size_t>(*v);
  }
  if (auto v = read.integer("RINGLET_SLICE_BYTES", 4096, 1LL << 30)) {
    c.slice_bytes = static_cast<std::size_t>(*v);
  }
  if (auto v = read.integer("RINGLET_FUSION_BYTES", 4096, 1LL << 32)) {
    c.fusion_bytes = static_cast<std::size_t>(*v);
  }
  if (auto v = read.integer("RINGLET_BUCKET_BYTES", 4096, 1LL << 32)) {
    c.bucket_bytes = static_cast<std::size_t>(*v);
  }
  if (auto v = read.text("RINGLET_TIMELINE")) c.timeline = *v;
  if (auto v = read.integer("RINGLET_SHM", 0, 1)) c.shm = *v == 1;
  if (auto v = read.integer("RINGLET_SHM_SPIN", 0, 1 << 30)) c.shm_spin = static_cast<int>(*v);
  if (auto v = read.integer("RINGLET_SHM_YIELDS", 0, 1 << 30)) c.shm_yields = static_cast<int>(*v);
  if (auto v = read.integer("RINGLET_SOCKETS", 1, 64)) c.tcp_sockets = static_cast<int>(*v);
  if (auto v = read.text("RINGLET_SOCKET_IFNAME")) c.socket_ifname = *v;
  if (!options.secret.empty()) {
    c.secret = options.secret;
    c.secret_source = "Options::secret";
  } else if (auto v = read.text("RINGLET_SECRET")) {
    c.secret = *v;
    c.secret_source = "RINGLET_SECRET";
  } else if (auto f = read.text("RINGLET_SECRET_FILE")) {
    c.secret = read_secret_file(*f);
    c.secret_source = str_cat("RINGLET_SECRET_FILE=", *f);
  }
  if (!c.secret_source.empty() && c.secret.size() < kMinSecretBytes) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("the secret from ", c.secret_source, " has ", c.secret.size(),
                        " bytes; at least ", kMinSecretBytes, " are needed (RINGLET_SECRET)"));
  }
  if (options.encrypt == 0 || options.encrypt == 1) {
    c.encrypt = options.encrypt == 1;
  } else if (options.encrypt != -1) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("Options::encrypt=", options.encrypt, " is not -1, 0 or 1"));
  } else if (auto v = read.integer("RINGLET_ENCRYPT", 0, 1)) {
    c.encrypt = *v == 1;
  }
  if (c.encrypt && c.secret.empty()) {
    throw Error(ErrorCode::invalid_argument,
                "RINGLET_ENCRYPT=1 needs the job's secret (RINGLET_SECRET or RINGLET_SECRET_FILE): "
                "the keys are derived from it");
  }
  if (c.encrypt && c.transport == "rdma") {
    throw Error(ErrorCode::invalid_argument,
                "RINGLET_ENCRYPT=1 is not available with RINGLET_TRANSPORT=rdma (RDMA writes "
                "bypass the CPU); use tcp or leave RINGLET_ENCRYPT unset");
  }
  if (auto v = read.text("RINGLET_IBVERBS_LIBRARY")) c.ibverbs_library = *v;
  if (auto v = read.text("RINGLET_IB_HCA")) c.ib_hca = *v;
  if (auto v = read.integer("RINGLET_IB_GID_INDEX", 0, 255)) c.ib_gid_index = static_cast<int>(*v);
  if (auto v = read.integer("RINGLET_IB_QPS_PER_CONNECTION", 1, 16))
    c.ib_qps = static_cast<int>(*v);
  return c;
}

std::string describe(const Config& c) {
  return str_cat(
      "algorithm=", c.algorithm, " transport=", c.transport, " timeout=", c.timeout.count(),
      "ms crossover_bytes=", c.crossover_bytes, " slice_bytes=",
      c.slice_bytes == 0 ? std::string("transport") : std::to_string(c.slice_bytes),
      " ring_slots=", c.ring_slots, " hier_pipeline_bytes=", c.hier_pipeline_bytes,
      " fusion_bytes=", c.fusion_bytes, " bucket_bytes=",
      c.bucket_bytes == 0 ? std::string("fusion") : std::to_string(c.bucket_bytes),
      " timeline=", c.timeline.empty() ? std::string("off") : c.timeline, " shm=", c.shm ? 1 : 0,
      " shm_chunk_bytes=",
      c.shm_chunk_bytes == 0 ? std::string("default") : std::to_string(c.shm_chunk_bytes),
      " shm_spin=", c.shm_spin, " shm_yields=", c.shm_yields,
      " tcp_sockets=", c.tcp_sockets == 0 ? std::string("default") : std::to_string(c.tcp_sockets),
      " socket_ifname=", c.socket_ifname.empty() ? std::string("auto") : c.socket_ifname,
      " secret=", c.secret.empty() ? std::string("none") : str_cat("set (", c.secret_source, ")"),
      " encrypt=", c.encrypt ? 1 : 0,
      rdma_built()
          ? str_cat(
                " ib_hca=", c.ib_hca.empty() ? std::string("auto") : c.ib_hca, " ib_gid_index=",
                c.ib_gid_index < 0 ? std::string("auto") : std::to_string(c.ib_gid_index),
                " ib_qps=", c.ib_qps == 0 ? std::string("default") : std::to_string(c.ib_qps),
                c.ibverbs_library.empty() ? std::string() : " ibverbs_library=" + c.ibverbs_library)
          : std::string());
}

std::string agreed_settings(const Config& c) {
  // RINGLET_ENCRYPT: sealed and clear frames cannot meet; compared here, before any connection,
  // so that every rank names the one that differs.
  return str_cat("RINGLET_SHM=", c.shm ? 1 : 0, "\nRINGLET_ALGO=", c.algorithm,
                 "\nRINGLET_TRANSPORT=", c.transport,
                 "\nRINGLET_CROSSOVER_BYTES=", c.crossover_bytes,
                 "\nRINGLET_SLICE_BYTES=", c.slice_bytes, "\nRINGLET_SOCKETS=", c.tcp_sockets,
                 "\nring_slots=", c.ring_slots, "\nhier_pipeline_bytes=", c.hier_pipeline_bytes,
                 "\nshm_chunk_bytes=", c.shm_chunk_bytes, "\nRINGLET_FUSION_BYTES=", c.fusion_bytes,
                 "\nRINGLET_ENCRYPT=", c.encrypt ? 1 : 0, "\n");
}

std::string settings_digest(const std::string& settings) {
  std::uint64_t h = fnv1a64(settings);
  static const char* hex = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) out[static_cast<std::size_t>(i)] = hex[h & 15];
  return out;
}

std::string settings_difference(const std::string& mine, const std::string& theirs,
                                int their_rank) {
  const auto lines = [](const std::string& s) {
    std::vector<std::pair<std::string, std::string>> out;
    std::size_t pos = 0;
    while (pos < s.size()) {
      std::size_t end = s.find('\n', pos);
      if (end == std::string::npos) end = s.size();
      std::string line = s.substr(pos, end - pos);
      std::size_t eq = line.find('=');
      if (eq != std::string::npos) out.emplace_back(line.substr(0, eq), line.substr(eq + 1));
      pos = end + 1;
    }
    return out;
  };
  const auto a = lines(mine), b = lines(theirs);
  for (const auto& entry : a) {
    // Not a structured binding: clang before 16 cannot capture one in the lambda.
    const std::string& name = entry.first;
    const std::string& value = entry.second;
    auto it = std::find_if(b.begin(), b.end(), [&](const auto& kv) { return kv.first == name; });
    if (it == b.end())
      return str_cat(name, " is ", value, " here and unknown to rank ", their_rank);
    if (it->second != value) {
      return str_cat(name, " is ", value, " here and ", it->second, " at rank ", their_rank);
    }
  }
  return mine == theirs ? std::string()
                        : str_cat("the settings differ from rank ", their_rank, "'s");
}

bool rdma_built() noexcept {
#ifdef RINGLET_HAVE_RDMA_TRANSPORT
  return true;
#else
  return false;
#endif
}

}  // namespace ringlet
