// SPDX-License-Identifier: Apache-2.0
// Tunables: one typed function per environment variable, read once (NCCL_PARAM's idea,
// without the macro). Every variable is listed in docs/env.md.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "src/common/log.hpp"

namespace ringlet::env {

// Raw lookups, for the launcher environments (bootstrap/launch_env.cpp), which must be
// re-read per communicator and are injectable in tests.
std::optional<std::string> get(std::string_view name);

// Parses an integer variable; a malformed value throws Error(invalid_argument) naming it.
std::optional<long long> get_int(std::string_view name);

// RINGLET_DEBUG: warn (default), info or trace, case-insensitive.
log::Level debug_level();

// RINGLET_TIMEOUT: seconds; default 300.
std::chrono::milliseconds timeout();

// RINGLET_SOCKETS: TCP sockets per neighbour; 0 means the measured default.
int sockets();

// RINGLET_SOCKET_IFNAME: interface selection as NCCL_SOCKET_IFNAME; empty: automatic.
std::string socket_ifname();

// RINGLET_ALGO: auto, ring, recursive_doubling or hier.
std::string algo();

// RINGLET_SHM: 0 keeps ranks of one node off shared memory (TCP only); default 1.
bool shm_enabled();

// RINGLET_SLICE_BYTES: pipeline slice size of the ring; 0 means the default.
std::size_t slice_bytes();

// RINGLET_CROSSOVER_BYTES: message size below which the latency-optimal allreduce runs;
// unset means the measured default.
std::optional<std::size_t> crossover_bytes();

}  // namespace ringlet::env
