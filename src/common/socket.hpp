// SPDX-License-Identifier: Apache-2.0
// Socket helpers shared by the TCP transport and the TCP store: address text, socket options
// and "send everything by a deadline" on a non-blocking socket.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <string>

#include "src/common/deadline.hpp"

namespace ringlet::net {

// The longest single poll() wait of a loop that also watches a deadline or an interrupt.
inline constexpr int kMaxPollMs = 100;

// The numeric host of an AF_INET or AF_INET6 address ("10.0.0.1", "fe80::1"); empty for other
// families.
std::string numeric_host(const sockaddr_storage& address);

// The port of an AF_INET or AF_INET6 address, in host order; 0 for other families.
int port_of(const sockaddr_storage& address);

// "10.0.0.1:29500" or "[fe80::1]:29500", for logs and error messages.
std::string format_address(const sockaddr_storage& address);

// TCP_NODELAY: ringlet's messages are latency-bound headers or large, already batched slices.
void set_nodelay(int fd) noexcept;

// SO_SNDBUF and SO_RCVBUF; bytes <= 0 keeps the kernel's (auto-tuned) defaults.
void set_buffer_bytes(int fd, int bytes) noexcept;

enum class SendStatus {
  ok,
  timeout,  // the deadline passed with bytes left to send
  closed,   // the peer reset or closed the connection (EPIPE, ECONNRESET)
  failed,   // another error; errno says which
};

// Sends all `size` bytes on a socket (made non-blocking per call), waiting in poll() while it
// is full, by `deadline`. Never raises SIGPIPE.
SendStatus send_all(int fd, const void* data, std::size_t size, Deadline deadline) noexcept;

// Raises this process's RLIMIT_NOFILE soft limit to its hard limit (once per process; later
// calls do nothing), so that rank 0's store and the data listeners are not capped at the
// usual soft limit of 1024 descriptors. Returns the soft limit now in force (0: unknown).
std::size_t raise_descriptor_limit() noexcept;

}  // namespace ringlet::net
