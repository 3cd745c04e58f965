// SPDX-License-Identifier: Apache-2.0
// select_interfaces(): NCCL_SOCKET_IFNAME-style interface selection over the addresses that
// topo::list_interface_addresses() reads from getifaddrs().
#include <sys/socket.h>

#include <algorithm>
#include <string>
#include <vector>

#include "src/common/check.hpp"
#include "src/topo/topology.hpp"
#include "transports/tcp/transport.hpp"

namespace ringlet::transport {
namespace {

struct Seen {
  InterfaceAddress address;
  bool loopback = false;
};

// The usable addresses (interface up; IPv6 link-local skipped, it needs a scope id), IPv4
// first, each family in getifaddrs() order.
std::vector<Seen> list_addresses() {
  std::vector<Seen> out;
  for (const topo::IfAddr& a : topo::list_interface_addresses()) {
    if (!a.up || (a.family == AF_INET6 && a.link_local)) continue;
    out.push_back({{a.name, a.address, a.family}, a.loopback});
  }
  std::stable_sort(out.begin(), out.end(), [](const Seen& a, const Seen& b) {
    return a.address.family == AF_INET && b.address.family != AF_INET;
  });
  return out;
}

std::vector<std::string> split(std::string_view s) {
  std::vector<std::string> parts;
  while (!s.empty()) {
    auto comma = s.find(',');
    std::string_view part = s.substr(0, comma);
    if (!part.empty()) parts.emplace_back(part);
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return parts;
}

}  // namespace

std::vector<InterfaceAddress> select_interfaces(std::string_view spec) {
  std::vector<Seen> seen = list_addresses();
  std::vector<InterfaceAddress> chosen;
  if (spec.empty()) {
    for (const Seen& s : seen) {
      if (!s.loopback && s.address.name.rfind("docker", 0) != 0) chosen.push_back(s.address);
    }
    if (chosen.empty()) {
      for (const Seen& s : seen) {
        if (s.loopback) chosen.push_back(s.address);
      }
    }
  } else {
    std::string_view rest = spec;
    bool exclude = false;
    bool exact = false;
    if (!rest.empty() && rest.front() == '^') {
      exclude = true;
      rest.remove_prefix(1);
    }
    if (!rest.empty() && rest.front() == '=') {
      exact = true;
      rest.remove_prefix(1);
    }
    std::vector<std::string> items = split(rest);
    for (const Seen& s : seen) {
      bool match = std::any_of(items.begin(), items.end(), [&](const std::string& item) {
        return exact ? s.address.name == item : s.address.name.rfind(item, 0) == 0;
      });
      if (match != exclude) chosen.push_back(s.address);
    }
  }
  if (chosen.empty()) {
    std::string names;
    for (const Seen& s : seen) {
      names += str_cat(names.empty() ? "" : ", ", s.address.name, " (", s.address.address, ")");
    }
    throw Error(ErrorCode::invalid_argument,
                str_cat("interface spec \"", spec, "\" matches no usable interface; seen: ",
                        names.empty() ? std::string("none") : names));
  }
  return chosen;
}

}  // namespace ringlet::transport
