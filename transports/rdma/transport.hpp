// SPDX-License-Identifier: Apache-2.0
// The rdma transport: RC queue pairs over libibverbs, loaded at run time (design and how to
// run it on hardware: docs/rdma.md). Built when the `ibverbs` feature finds the headers.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "src/common/deadline.hpp"
#include "src/common/job_context.hpp"
#include "transports/transport.hpp"

namespace ringlet::transport {

// Receive slots per connection (the credits a sender starts with) and their size; the ring's
// slice is one slot. See docs/rdma.md for the line-rate reasoning.
inline constexpr std::size_t kRdmaSlots = 8;
inline constexpr std::size_t kRdmaSlotBytes = std::size_t{512} << 10;
// Messages (chunks) up to this size are posted inline (no gather DMA, no staging copy).
inline constexpr std::size_t kRdmaInlineBytes = 128;
inline constexpr int kRdmaDefaultQpsPerConnection = 2;

struct RdmaOptions : JobContext {
  std::string library;  // Config::ibverbs_library ("" -> libibverbs.so.1)
  std::string hca;      // Config::ib_hca, NCCL_IB_HCA's syntax; "" -> automatic
  int gid_index = -1;   // Config::ib_gid_index; -1 -> automatic (RoCE v2 where it exists)
  int qps = 0;          // queue pairs per connection; 0 -> kRdmaDefaultQpsPerConnection
  int local_rank = 0;   // which of several selected ports this rank takes (round robin)
  // Preferred device (the one nearest this rank's GPU or NUMA node), "" when unknown.
  std::string preferred_device;
  bool oversubscribed = false;  // more ranks than cores: waits block at once
  // The rendezvous store, through which the per-pair connection records travel.
  std::function<void(const std::string& key, std::span<const std::byte> value)> publish;
  std::function<std::vector<std::byte>(const std::string& key, Deadline deadline)> lookup;
};

// What a probe found: the port this rank would use, or why none.
struct RdmaProbe {
  bool usable = false;
  std::string device;
  int port = 0;
  std::string reason;  // "mlx5_0:1 ACTIVE InfiniBand" or why nothing is usable
};

// Loads the library and lists the ports that RdmaOptions::hca selects; never throws.
RdmaProbe probe_rdma(const RdmaOptions& options);

// Opens the device and port the probe chose; connections are made by connect(). Throws
// Error(transport) naming what was found when no active port is selected.
std::unique_ptr<Transport> make_rdma_transport(const RdmaOptions& options);

// NCCL_IB_HCA's syntax: "mlx5_0:1,mlx5_1" (prefixes, optional port), "^mlx5_2" excludes,
// "=mlx5_0" exact names ("^=" both). An empty spec selects everything.
bool hca_selects(std::string_view spec, std::string_view device, int port);

}  // namespace ringlet::transport
