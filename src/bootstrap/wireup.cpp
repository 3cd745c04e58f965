// SPDX-License-Identifier: Apache-2.0
// The wire-up: from the launcher's environment (or its PMIx / PMI-1 service) to a connected
// rendezvous store.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "src/bootstrap/launcher_kvs.hpp"
#include "src/common/check.hpp"
#include "src/common/log.hpp"
#include "src/common/net_address.hpp"

namespace ringlet::bootstrap {
namespace {

constexpr std::size_t kMaxAddresses = 16;

struct Ipv4 {
  std::uint32_t addr = 0;  // host order
  int prefix = 32;
  std::uint32_t mask() const { return prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix); }
  bool same_subnet(const Ipv4& other) const { return (addr & mask()) == (other.addr & mask()); }
  std::string text() const {
    in_addr a{htonl(addr)};
    char buf[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &a, buf, sizeof buf);
    return buf;
  }
};

// This host's IPv4 addresses on interfaces that are up, loopback excluded.
std::vector<Ipv4> local_ipv4() {
  std::vector<Ipv4> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr && out.size() < kMaxAddresses; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    if ((i->ifa_flags & IFF_UP) == 0 || (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
    Ipv4 a;
    a.addr = ntohl(reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
    if (i->ifa_netmask != nullptr) {
      std::uint32_t m =
          ntohl(reinterpret_cast<const sockaddr_in*>(i->ifa_netmask)->sin_addr.s_addr);
      a.prefix = __builtin_popcount(m);
    }
    out.push_back(a);
  }
  ::freeifaddrs(list);
  return out;
}

// "node|a.b.c.d/24,e.f.g.h/16"
std::string encode(const std::string& node, const std::vector<Ipv4>& addrs) {
  std::string out = node + "|";
  for (std::size_t i = 0; i < addrs.size(); ++i) {
    out += str_cat(i ? "," : "", addrs[i].text(), "/", addrs[i].prefix);
  }
  return out;
}

std::pair<std::string, std::vector<Ipv4>> decode(const std::string& text) {
  std::size_t bar = text.rfind('|');
  std::pair<std::string, std::vector<Ipv4>> out;
  out.first = text.substr(0, bar);
  if (bar == std::string::npos) return out;
  std::size_t pos = bar + 1;
  while (pos < text.size()) {
    std::size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(pos, end - pos);
    std::size_t slash = item.find('/');
    in_addr a{};
    if (slash != std::string::npos &&
        ::inet_pton(AF_INET, item.substr(0, slash).c_str(), &a) == 1) {
      Ipv4 x;
      x.addr = ntohl(a.s_addr);
      x.prefix = std::atoi(item.c_str() + slash + 1);
      if (x.prefix >= 0 && x.prefix <= 32) out.second.push_back(x);
    }
    pos = end + 1;
  }
  return out;
}

// Rank 0's store address: loopback when every rank shares its node; else its address that
// shares a subnet with the most ranks of other nodes (the first on a tie); else its first.
std::string choose_store_host(LauncherKvs& kvs, int size, const std::string& my_node,
                              const std::vector<Ipv4>& mine, Deadline deadline) {
  std::vector<int> score(mine.size(), 0);
  bool remote = false;
  for (int r = 1; r < size; ++r) {
    auto [node, addrs] = decode(kvs.get(r, "ringlet.node", deadline));
    if (node == my_node) continue;
    remote = true;
    for (std::size_t i = 0; i < mine.size(); ++i) {
      for (const Ipv4& a : addrs) {
        if (mine[i].same_subnet(a)) {
          ++score[i];
          break;
        }
      }
    }
  }
  if (!remote || mine.empty()) return "127.0.0.1";
  std::size_t best = 0;
  for (std::size_t i = 1; i < mine.size(); ++i) {
    if (score[i] > score[best]) best = i;
  }
  return mine[best].text();
}

}  // namespace

Launch start_launch(const Options& options, const EnvLookup& env) {
  Launch launch;
  PmixView view;
  bool connected = false;
  if (choose_wireup(options, env) == Wireup::pmix && pmix_built()) {
    launch.kvs = pmix_connect(view);
    connected = true;
  }
  launch.info = resolve_launch(options, env, connected ? &view : nullptr);
  if (launch.info.wireup != Wireup::pmix) launch.kvs.reset();
  return launch;
}

std::shared_ptr<Store> connect_store(Launch& launch, Deadline deadline, const std::string& secret,
                                     std::stop_token stop) {
  LaunchInfo& info = launch.info;
  if (info.size == 1 && info.store_host.empty()) {
    launch.kvs.reset();
    launch.rendezvous = "none (one rank)";
    return make_hash_store();
  }
  if (info.wireup == Wireup::address) {
    TcpStoreOptions so;
    so.host = info.store_host;
    so.port = info.store_port;
    so.is_server = info.serves_store;
    so.deadline = deadline;
    so.job_identity = info.job_identity;
    so.secret = secret;
    so.stop = stop;
    launch.rendezvous = str_cat(net::join_host_port(info.store_host, info.store_port),
                                " (port from ", info.port_from, ", served by ",
                                info.serves_store ? "this rank" : "another rank", ")");
    return make_tcp_store(so);
  }
  if (info.wireup == Wireup::pmi1) launch.kvs = pmi1_connect(info.pmi_fd, info.rank, deadline);
  RINGLET_CHECK(launch.kvs != nullptr, "connect_store: no process manager connection");
  LauncherKvs& kvs = *launch.kvs;
  if (info.job_identity_source == "rendezvous parameters" && !kvs.job_name().empty()) {
    // Hydra sets no job id variable, but its KVS name is one per job.
    info.job_identity = str_cat("pmi1:", kvs.job_name());
    info.job_identity_source = "the PMI-1 KVS name";
  }
  const std::string node = detect_node_identity();
  const std::vector<Ipv4> mine = local_ipv4();
  const auto start = Clock::now();
  kvs.put("ringlet.node", encode(node, mine));
  kvs.fence(deadline);
  std::shared_ptr<Store> store;
  std::string address;
  if (info.rank == 0) {
    std::string host = choose_store_host(kvs, info.size, node, mine, deadline);
    TcpStoreOptions so;
    so.host = host;
    so.port = 0;  // ephemeral: no collision with another job
    so.is_server = true;
    so.deadline = deadline;
    so.job_identity = info.job_identity;
    so.secret = secret;
    so.stop = stop;
    store = make_tcp_store(so);
    address = net::join_host_port(host, tcp_store_port(*store));
    kvs.put("ringlet.store", address);
    kvs.fence(deadline);
  } else {
    kvs.fence(deadline);
    address = kvs.get(0, "ringlet.store", deadline);
    std::size_t colon = address.rfind(':');
    RINGLET_CHECK(colon != std::string::npos, "rank 0 published a malformed store address '",
                  address, "'");
    TcpStoreOptions so;
    so.host = net::strip_brackets(address.substr(0, colon));
    so.port = std::atoi(address.c_str() + colon + 1);
    so.is_server = false;
    so.deadline = deadline;
    so.job_identity = info.job_identity;
    so.secret = secret;
    so.stop = stop;
    store = make_tcp_store(so);
  }
  auto ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  launch.rendezvous = str_cat(address, " (ephemeral port published through ", kvs.name(), ", ",
                              static_cast<int>(ms + 0.5), " ms)");
  launch.kvs.reset();  // PMIx_Finalize / PMI-1 finalize: not needed any more
  return store;
}

}  // namespace ringlet::bootstrap
