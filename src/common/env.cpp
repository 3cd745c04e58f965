// SPDX-License-Identifier: Apache-2.0
// Raw environment lookups and RINGLET_DEBUG (the tunables are resolved in src/config.cpp).
#include "src/common/env.hpp"

#include <cstdlib>

#include "src/common/check.hpp"

namespace ringlet::env {

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
  std::string s = ascii_lower(*v);
  if (s == "warn" || s == "warning") return log::Level::warn;
  if (s == "info") return log::Level::info;
  if (s == "trace") return log::Level::trace;
  throw Error(ErrorCode::invalid_argument,
              str_cat("RINGLET_DEBUG=", *v, " is not one of warn, info, trace"));
}

}  // namespace ringlet::env
