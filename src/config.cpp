// SPDX-License-Identifier: Apache-2.0
// The configuration resolver: Options, then the environment, then measured defaults. The
// only reader of the RINGLET_* tunables (the launcher variables are read by
// src/bootstrap/launch_env.cpp, which resolves who the rank is, not how it runs).
#include "src/config.hpp"

#include <cerrno>
#include <cstdlib>

#include "src/algo/select.hpp"
#include "src/common/check.hpp"

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

// Measured over TCP loopback with bench/crossover.sh (docs/perf/crossover.md): recursive
// doubling wins up to 64 KiB and the ring from 128 KiB at 2-4 ranks; at 8 ranks recursive
// doubling still wins at 128 KiB.
std::size_t default_crossover_bytes(int size) {
  return size <= 4 ? std::size_t{64} << 10 : std::size_t{128} << 10;
}

}  // namespace

EnvLookup process_env_lookup() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

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
    c.timeout = std::chrono::milliseconds(static_cast<long long>(s * 1000.0));
  }
  c.crossover_bytes = default_crossover_bytes(size);
  if (auto v = read.integer("RINGLET_CROSSOVER_BYTES", 0, (1LL << 62))) {
    c.crossover_bytes = static_cast<std::size_t>(*v);
  }
  if (auto v = read.integer("RINGLET_SLICE_BYTES", 4096, 1LL << 30)) {
    c.slice_bytes = static_cast<std::size_t>(*v);
  }
  if (auto v = read.integer("RINGLET_SHM", 0, 1)) c.shm = *v == 1;
  if (auto v = read.integer("RINGLET_SHM_SPIN", 0, 1 << 30)) c.shm_spin = static_cast<int>(*v);
  if (auto v = read.integer("RINGLET_SHM_YIELDS", 0, 1 << 30)) c.shm_yields = static_cast<int>(*v);
  if (auto v = read.integer("RINGLET_SOCKETS", 1, 64)) c.tcp_sockets = static_cast<int>(*v);
  if (auto v = read.text("RINGLET_SOCKET_IFNAME")) c.socket_ifname = *v;
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
      " shm=", c.shm ? 1 : 0, " shm_chunk_bytes=",
      c.shm_chunk_bytes == 0 ? std::string("default") : std::to_string(c.shm_chunk_bytes),
      " shm_spin=", c.shm_spin, " shm_yields=", c.shm_yields,
      " tcp_sockets=", c.tcp_sockets == 0 ? std::string("default") : std::to_string(c.tcp_sockets),
      " socket_ifname=", c.socket_ifname.empty() ? std::string("auto") : c.socket_ifname,
      rdma_built()
          ? str_cat(
                " ib_hca=", c.ib_hca.empty() ? std::string("auto") : c.ib_hca, " ib_gid_index=",
                c.ib_gid_index < 0 ? std::string("auto") : std::to_string(c.ib_gid_index),
                " ib_qps=", c.ib_qps == 0 ? std::string("default") : std::to_string(c.ib_qps),
                c.ibverbs_library.empty() ? std::string() : " ibverbs_library=" + c.ibverbs_library)
          : std::string());
}

bool rdma_built() noexcept {
#ifdef RINGLET_HAVE_RDMA_TRANSPORT
  return true;
#else
  return false;
#endif
}

}  // namespace ringlet
