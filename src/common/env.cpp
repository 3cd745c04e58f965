// SPDX-License-Identifier: Apache-2.0
// Tunables read from the environment, with their defaults.
#include "src/common/env.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "src/common/check.hpp"

namespace ringlet::env {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

std::optional<std::string> get(std::string_view name) {
  const char* v = std::getenv(std::string(name).c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

std::optional<long long> get_int(std::string_view name) {
  auto v = get(name);
  if (!v || v->empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (errno != 0 || end == v->c_str() || *end != '\0') {
    throw Error(ErrorCode::invalid_argument, str_cat(name, "=", *v, " is not an integer"));
  }
  return x;
}

log::Level debug_level() {
  auto v = get("RINGLET_DEBUG");
  if (!v || v->empty()) return log::Level::warn;
  std::string s = lower(*v);
  if (s == "warn" || s == "warning") return log::Level::warn;
  if (s == "info") return log::Level::info;
  if (s == "trace") return log::Level::trace;
  throw Error(ErrorCode::invalid_argument,
              str_cat("RINGLET_DEBUG=", *v, " is not one of warn, info, trace"));
}

std::chrono::milliseconds timeout() {
  auto v = get("RINGLET_TIMEOUT");
  if (!v || v->empty()) return std::chrono::seconds(300);
  char* end = nullptr;
  double s = std::strtod(v->c_str(), &end);
  if (end == v->c_str() || *end != '\0' || !(s > 0)) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("RINGLET_TIMEOUT=", *v, " is not a positive number of seconds"));
  }
  return std::chrono::milliseconds(static_cast<long long>(s * 1000.0));
}

int sockets() {
  auto v = get_int("RINGLET_SOCKETS");
  if (!v) return 0;
  if (*v < 1 || *v > 64) {
    throw Error(ErrorCode::invalid_argument, str_cat("RINGLET_SOCKETS=", *v, " is outside 1..64"));
  }
  return static_cast<int>(*v);
}

std::string socket_ifname() { return get("RINGLET_SOCKET_IFNAME").value_or(""); }

std::string algo() {
  std::string s = lower(get("RINGLET_ALGO").value_or("auto"));
  if (s.empty()) s = "auto";
  if (s != "auto" && s != "ring" && s != "recursive_doubling" && s != "hier") {
    throw Error(ErrorCode::invalid_argument,
                str_cat("RINGLET_ALGO=", s, " is not one of auto, ring, recursive_doubling, hier"));
  }
  return s;
}

bool shm_enabled() {
  auto v = get_int("RINGLET_SHM");
  if (!v) return true;
  if (*v != 0 && *v != 1) {
    throw Error(ErrorCode::invalid_argument, str_cat("RINGLET_SHM=", *v, " is not 0 or 1"));
  }
  return *v == 1;
}

std::size_t slice_bytes() {
  auto v = get_int("RINGLET_SLICE_BYTES");
  if (!v) return 0;
  if (*v < 4096 || *v > (1LL << 30)) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("RINGLET_SLICE_BYTES=", *v, " is outside 4096..1G"));
  }
  return static_cast<std::size_t>(*v);
}

std::optional<std::size_t> crossover_bytes() {
  auto v = get_int("RINGLET_CROSSOVER_BYTES");
  if (!v) return std::nullopt;
  if (*v < 0) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("RINGLET_CROSSOVER_BYTES=", *v, " is negative"));
  }
  return static_cast<std::size_t>(*v);
}

}  // namespace ringlet::env
