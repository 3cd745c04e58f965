// SPDX-License-Identifier: Apache-2.0
// The factory: network transport, listening address, local groups.
#include "transports/factory.hpp"

#include <algorithm>
#include <thread>

#include "groups/shm/group.hpp"
#include "src/common/log.hpp"
#include "src/topo/topology.hpp"
#include "transports/tcp/transport.hpp"
#ifdef RINGLET_HAVE_RDMA_TRANSPORT
#include "transports/rdma/transport.hpp"
#endif

namespace ringlet::transport {
namespace {

bool oversubscribed(int ranks_here) {
  return static_cast<unsigned>(std::max(ranks_here, 1)) >
         std::max(1u, std::thread::hardware_concurrency());
}

// Where the TCP transport listens: RINGLET_SOCKET_IFNAME when set; else the address that
// reaches the store, or on nodes with several NICs the one nearest this local rank.
std::string choose_bind_address(const Config& config, const JobLayout& layout,
                                const std::string& store_route, int* numa_node) {
  const int local_rank = std::max(layout.local_rank, 0);
  if (!config.socket_ifname.empty()) {
    auto interfaces = select_interfaces(config.socket_ifname);
    const auto& pick = interfaces[static_cast<std::size_t>(local_rank) % interfaces.size()];
    RINGLET_LOG(info, "RINGLET_SOCKET_IFNAME=", config.socket_ifname, " selects interface ",
                pick.name, " (", pick.address, ")");
    return pick.address;
  }
  std::string bind = store_route.empty() ? std::string("127.0.0.1") : store_route;
  std::string why = "the address that reaches the rendezvous store";
  // Where the node has several NICs, each local rank takes the one nearest its GPU (one rail
  // per local rank); the route to the store is the default otherwise.
  if (const topo::Topology* machine = topo::machine_topology()) {
    topo::PlacementChoice place =
        topo::choose_placement(*machine, local_rank, std::max(layout.local_size, 1), "");
    *numa_node = place.numa_node;
    RINGLET_LOG(info, "placement: ", place.reason);
    std::size_t usable_nics = 0;
    for (const auto& nic : machine->nics) usable_nics += nic.interfaces.empty() ? 0 : 1;
    if (usable_nics > 1 && !place.ifname.empty() && bind != "127.0.0.1") {
      try {
        auto interfaces = select_interfaces("=" + place.ifname);
        const bool want_v6 = bind.find(':') != std::string::npos;
        for (const auto& itf : interfaces) {
          if ((itf.address.find(':') != std::string::npos) == want_v6) {
            bind = itf.address;
            why = str_cat("interface ", place.ifname, " of the NIC nearest local rank ",
                          layout.local_rank);
            break;
          }
        }
      } catch (const Error& e) {
        RINGLET_LOG(info, "interface ", place.ifname, " unusable (", e.what(), ")");
      }
    }
  }
  RINGLET_LOG(info, "listening on ", bind, " (", why, ")");
  return bind;
}

#ifdef RINGLET_HAVE_RDMA_TRANSPORT
// The rdma transport when Config::transport allows it and a port is usable; null otherwise
// (auto), with the reason logged.
std::unique_ptr<Transport> try_rdma(const Config& config, const JobLayout& layout,
                                    const JobContext& job,
                                    const std::shared_ptr<bootstrap::Store>& store, int* numa_node,
                                    const PublishRecord& publish) {
  const bool forced = config.transport == "rdma";
  if (!store) {
    if (forced) {
      throw Error(ErrorCode::invalid_argument,
                  "RINGLET_TRANSPORT=rdma: no rendezvous store to exchange connection records");
    }
    return nullptr;
  }
  RdmaOptions o;
  static_cast<JobContext&>(o) = job;
  o.library = config.ibverbs_library;
  o.hca = config.ib_hca;
  o.gid_index = config.ib_gid_index;
  o.qps = config.ib_qps;
  o.local_rank = std::max(layout.local_rank, 0);
  o.oversubscribed = oversubscribed(layout.local_size);
  if (const topo::Topology* machine = topo::machine_topology(); machine && config.ib_hca.empty()) {
    topo::PlacementChoice place =
        topo::choose_placement(*machine, o.local_rank, std::max(layout.local_size, 1), "");
    o.preferred_device = place.rdma_device;
    *numa_node = place.numa_node;
  }
  if (publish) {
    o.publish = publish;
  } else {
    o.publish = [store](const std::string& key, std::span<const std::byte> value) {
      store->set(key, value);
    };
  }
  o.lookup = [store](const std::string& key, Deadline deadline) {
    return store->get(key, deadline);
  };
  const RdmaProbe probe = probe_rdma(o);
  if (!probe.usable) {
    if (forced) {
      throw Error(ErrorCode::transport,
                  str_cat("RINGLET_TRANSPORT=rdma but rank ", job.rank,
                          " has no usable RDMA port: ", probe.reason),
                  {job.rank});
    }
    RINGLET_LOG(info, "transport: tcp (RINGLET_TRANSPORT=auto; rdma unusable: ", probe.reason, ")");
    return nullptr;
  }
  RINGLET_LOG(info, "transport: rdma on ", probe.reason,
              forced ? " (RINGLET_TRANSPORT=rdma)" : " (RINGLET_TRANSPORT=auto: an active port)");
  return make_rdma_transport(o);
}
#endif

}  // namespace

NetworkChoice make_network_transport(const Config& config, const JobLayout& layout,
                                     const JobContext& job, const std::string& store_route,
                                     std::shared_ptr<bootstrap::Store> store,
                                     PublishRecord publish) {
  NetworkChoice choice;
#ifdef RINGLET_HAVE_RDMA_TRANSPORT
  if (config.transport != "tcp") {
    choice.transport = try_rdma(config, layout, job, store, &choice.numa_node, publish);
    if (choice.transport) return choice;
  }
#else
  (void)store;
  (void)publish;
#endif
  TcpOptions options;
  static_cast<JobContext&>(options) = job;
  options.sockets = config.tcp_sockets;
  options.socket_ifname = config.socket_ifname;
  options.oversubscribed = oversubscribed(layout.local_size);
  options.secret = config.secret;
  options.encrypt = config.encrypt;
  options.bind_address = choose_bind_address(config, layout, store_route, &choice.numa_node);
  choice.transport = make_tcp_transport(options);
  return choice;
}

std::unique_ptr<groups::LocalGroup> make_local_group(MemoryKind kind, const Config& config,
                                                     const JobLayout& layout, const JobContext& job,
                                                     std::shared_ptr<bootstrap::Store> store,
                                                     Deadline deadline) {
  const auto& mine = layout.my_node();
  if (mine.size() < 2) return nullptr;
  if (kind != MemoryKind::host) return nullptr;  // CUDA: the NCCL group of "GPU II"
  if (!config.shm) {
    RINGLET_LOG(info, "RINGLET_SHM=0: the ranks of this node use the network among themselves");
    return nullptr;
  }
  groups::shm::ShmOptions o;
  o.job = job;
  o.local_rank = layout.node_position;
  o.local_size = static_cast<int>(mine.size());
  o.local_to_global = mine;
  o.store = std::move(store);
  o.chunk_bytes = config.shm_chunk_bytes;
  o.spin = config.shm_spin;
  o.yields = config.shm_yields;
  o.oversubscribed = oversubscribed(static_cast<int>(mine.size()));
  auto group = groups::shm::ShmGroup::create(o, deadline);
  RINGLET_LOG(info, "shared memory among the ", mine.size(), " ranks of this node (segment ",
              group->segment_name(), ", unlinked once mapped)");
  return group;
}

}  // namespace ringlet::transport
