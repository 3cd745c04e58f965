// SPDX-License-Identifier: Apache-2.0
// The TCP transport: factory, options and interface selection (design:
// docs/design/transport-tcp.md).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "src/common/job_context.hpp"
#include "transports/transport.hpp"

namespace ringlet::transport {

// Pipeline slice size the ring should cut its chunks into when it runs over this transport
// (its traits().slice_bytes), picked from bench/tcp_p2p_bench on loopback (docs/perf/tcp.md).
inline constexpr std::size_t kTcpRecommendedSliceBytes = std::size_t{1} << 20;

// Sockets per peer and direction when neither TcpOptions::sockets nor RINGLET_SOCKETS says
// otherwise; measured on loopback at 2 and 4 processes (docs/perf/tcp.md).
inline constexpr int kTcpDefaultSockets = 1;

struct TcpOptions : JobContext {
  std::string bind_address;  // numeric IPv4/IPv6 to listen on and advertise; "" -> interfaces
  // Interface selection (select_interfaces' syntax) when bind_address is empty.
  std::string socket_ifname;
  int sockets = 0;  // data sockets per peer (Config::tcp_sockets); 0 -> kTcpDefaultSockets
  // true: each data socket carries one direction (sockets per direction); false: each data
  // socket carries both directions. Both ranks of a pair must agree. For measurements.
  bool separate_directions = true;
  // SO_SNDBUF and SO_RCVBUF of every socket; 0 keeps the kernel's autotuning.
  int buffer_bytes = 0;
  // Re-arms TCP_QUICKACK after every read that returned data, so that the receiver never
  // holds back an ACK (delayed-ACK stalls of ~40 ms on loopback's 64 KiB MTU).
  bool quickack = true;
  // More ranks than cores on this machine: waits yield the CPU from the start instead of
  // spinning first, so that the peer being waited for gets to run.
  bool oversubscribed = false;
  // The job's secret (docs/security.md): every socket's handshake proves it both ways.
  // Empty: the handshake proves nothing (both ends of a pair must agree).
  std::string secret;
  // Seal every frame with AES-256-GCM under keys derived per socket; needs `secret`.
  bool encrypt = false;
};

// Makes a TcpTransport that listens at once (on an ephemeral port) on options.bind_address,
// or on the first address of select_interfaces(options.socket_ifname) when that is empty.
// Throws invalid_argument (bad options) and transport (socket calls failed).
std::unique_ptr<Transport> make_tcp_transport(const TcpOptions& options);

// One address of a network interface, numeric ("192.0.2.2", "fd00::2").
struct InterfaceAddress {
  std::string name;
  std::string address;
  int family = 0;  // AF_INET or AF_INET6
};

// NCCL_SOCKET_IFNAME-style selection over topo::list_interface_addresses(): "eth,ib" keeps
// interfaces whose name starts with a prefix, "^docker" excludes those prefixes, "=eth0" (or
// "^=eth0") matches exact names. Only interfaces that are up; IPv6 link-local addresses are
// skipped. IPv4 addresses come first. An empty spec selects every non-loopback, non-docker
// interface, and loopback when there is nothing else. Throws Error(invalid_argument) naming the
// spec and the interfaces seen when nothing matches.
std::vector<InterfaceAddress> select_interfaces(std::string_view spec);

}  // namespace ringlet::transport
