// SPDX-License-Identifier: Apache-2.0
// The factory's choices: which network transport, where it listens, which local group per
// memory kind, and when none.
#include "transports/factory.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "src/bootstrap/store.hpp"

namespace ringlet::transport {
namespace {

using namespace std::chrono_literals;

JobContext job_of(int rank, int size) {
  JobContext job;
  job.rank = rank;
  job.size = size;
  job.job_id = 0x77;
  return job;
}

TEST(FactoryTest, AutoAndTcpPickTheTcpTransportWithItsTraits) {
  const JobLayout layout = JobLayout::from_node_ids(0, {"a", "b"});
  for (const char* choice : {"auto", "tcp"}) {
    Config config;
    config.transport = choice;
    NetworkChoice net = make_network_transport(config, layout, job_of(0, 2), "127.0.0.1");
    ASSERT_NE(net.transport, nullptr);
    EXPECT_EQ(net.transport->name(), "tcp");
    const TransportTraits t = net.transport->traits();
    EXPECT_EQ(t.slice_bytes, std::size_t{1} << 20);
    EXPECT_EQ(t.max_outstanding, 0u);
    EXPECT_FALSE(t.needs_registration);
    EXPECT_FALSE(t.device_memory);
  }
}

TEST(FactoryTest, SocketIfnameChoosesTheListeningInterface) {
  Config config;
  config.socket_ifname = "=lo";
  const JobLayout layout = JobLayout::from_node_ids(0, {"a", "b"});
  NetworkChoice net = make_network_transport(config, layout, job_of(0, 2), "192.0.2.1");
  // The address blob names the loopback interface, not the store route.
  EXPECT_EQ(net.transport->name(), "tcp");
  EXPECT_FALSE(net.transport->local_address().empty());
  config.socket_ifname = "=no-such-interface0";
  EXPECT_THROW(make_network_transport(config, layout, job_of(0, 2), ""), Error);
}

TEST(FactoryTest, NoLocalGroupWhereNoneServes) {
  Config config;
  auto store = bootstrap::make_hash_store();
  const Deadline deadline = Clock::now() + 10s;
  // One rank on its node.
  EXPECT_EQ(make_local_group(MemoryKind::host, config, JobLayout::from_node_ids(0, {"a", "b"}),
                             job_of(0, 2), store, deadline),
            nullptr);
  // CUDA memory: no group in this build (the NCCL group comes later).
  EXPECT_EQ(make_local_group(MemoryKind::cuda, config, JobLayout::from_node_ids(0, {"a", "a"}),
                             job_of(0, 2), store, deadline),
            nullptr);
  // Shared memory disabled.
  config.shm = false;
  EXPECT_EQ(make_local_group(MemoryKind::host, config, JobLayout::from_node_ids(0, {"a", "a"}),
                             job_of(0, 2), store, deadline),
            nullptr);
}

TEST(FactoryTest, HostMemoryOnOneNodeGetsTheSharedMemoryGroup) {
  Config config;
  auto store = bootstrap::make_hash_store();
  const std::vector<std::string> ids = {"a", "a", "a"};
  std::vector<std::unique_ptr<groups::LocalGroup>> made(ids.size());
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      made[static_cast<std::size_t>(r)] =
          make_local_group(MemoryKind::host, config, JobLayout::from_node_ids(r, ids), job_of(r, 3),
                           store, Clock::now() + 20s);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 3; ++r) {
    const auto& g = made[static_cast<std::size_t>(r)];
    ASSERT_NE(g, nullptr) << "rank " << r;
    EXPECT_EQ(g->name(), "shm");
    EXPECT_EQ(g->memory(), MemoryKind::host);
    EXPECT_EQ(g->local_rank(), r);
    EXPECT_EQ(g->local_size(), 3);
  }
}

}  // namespace
}  // namespace ringlet::transport
