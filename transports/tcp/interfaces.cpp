// SPDX-License-Identifier: Apache-2.0
// select_interfaces(): NCCL_SOCKET_IFNAME-style interface selection over getifaddrs().
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "src/common/check.hpp"
#include "transports/tcp/transport.hpp"

namespace ringlet::transport {
namespace {

struct Seen {
  InterfaceAddress address;
  bool loopback = false;
};

std::vector<Seen> list_addresses() {
  ifaddrs* raw = nullptr;
  if (::getifaddrs(&raw) != 0) detail::throw_errno("getifaddrs");
  std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> list(raw, ::freeifaddrs);
  std::vector<Seen> out;
  for (ifaddrs* ifa = raw; ifa != nullptr; ifa = ifa->ifa_next) {
    if (ifa->ifa_addr == nullptr || (ifa->ifa_flags & IFF_UP) == 0) continue;
    int family = ifa->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    socklen_t len = sizeof(sockaddr_in);
    if (family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(ifa->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr)) continue;  // needs a scope id to be used
      len = sizeof(sockaddr_in6);
    }
    char host[NI_MAXHOST];
    if (::getnameinfo(ifa->ifa_addr, len, host, sizeof(host), nullptr, 0, NI_NUMERICHOST) != 0) {
      continue;
    }
    out.push_back({{ifa->ifa_name, host, family}, (ifa->ifa_flags & IFF_LOOPBACK) != 0});
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
