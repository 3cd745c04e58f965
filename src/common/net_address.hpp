// SPDX-License-Identifier: Apache-2.0
// Host names in "host:port" text: IPv6 literals are written in brackets ("[::1]:29500").
#pragma once

#include <string>
#include <string_view>

#include "src/common/str_cat.hpp"

namespace ringlet::net {

// "[::1]" -> "::1"; any other host is returned as it is.
inline std::string strip_brackets(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    return std::string(host.substr(1, host.size() - 2));
  }
  return std::string(host);
}

// "host:port", or "[host]:port" when host is an IPv6 literal (contains a colon).
inline std::string join_host_port(std::string_view host, int port) {
  if (host.find(':') != std::string_view::npos) return str_cat("[", host, "]:", port);
  return str_cat(host, ":", port);
}

}  // namespace ringlet::net
