// SPDX-License-Identifier: Apache-2.0
// The factory: the one place that knows the concrete transports and local groups. It picks
// the network transport (Config::transport), where it listens, and builds the local group of
// each memory kind. Adding a transport means a folder under transports/ and a case here.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>

#include "groups/local_group.hpp"
#include "src/bootstrap/store.hpp"
#include "src/common/job_context.hpp"
#include "src/config.hpp"
#include "src/job_layout.hpp"
#include "transports/transport.hpp"

namespace ringlet::transport {

struct NetworkChoice {
  std::unique_ptr<Transport> transport;
  // NUMA node of the NIC (or GPU) nearest this rank, for its helper threads; -1: anywhere.
  int numa_node = -1;
};

// Builds the network transport for `job` (size > 1). `store_route` is the local address this
// host uses to reach the rendezvous store (empty when unknown); the tcp transport listens on
// it unless Config::socket_ifname or the topology (one NIC per local rank) says otherwise.
// Config::transport "auto" takes rdma where this build has it, `store` is given (the rdma
// transport exchanges its connection records through it) and an active port exists, and tcp
// otherwise, with the reason at INFO; "rdma" without an active port is Error(transport)
// naming what was found.
// How a transport publishes its connection records (rdma: QPN, LID, GID per peer): the
// communicator's own writes, bound to this rank's claim (a duplicate or stale rank cannot
// replace them); null: plain store->set().
using PublishRecord = std::function<void(const std::string& key, std::span<const std::byte>)>;
NetworkChoice make_network_transport(const Config& config, const JobLayout& layout,
                                     const JobContext& job, const std::string& store_route,
                                     std::shared_ptr<bootstrap::Store> store = nullptr,
                                     PublishRecord publish = nullptr);

// Builds the local group of `kind` among the ranks of this rank's node (collective over
// them), or returns null when none serves `kind` here (shared memory disabled, one rank on the
// node, CUDA memory in this build).
std::unique_ptr<groups::LocalGroup> make_local_group(MemoryKind kind, const Config& config,
                                                     const JobLayout& layout, const JobContext& job,
                                                     std::shared_ptr<bootstrap::Store> store,
                                                     Deadline deadline);

}  // namespace ringlet::transport
