// SPDX-License-Identifier: Apache-2.0
// RdmaConnection: the queue pairs to one peer, progressed by the transport's Engine.
#pragma once

#include <memory>

#include "transports/rdma/engine.hpp"
#include "transports/transport.hpp"

namespace ringlet::transport::rdma {

// Made by RdmaTransport::connect(); owns its Channel (queue pairs, slots, outstanding
// operations) and shares the transport's Engine, so it may outlive the transport. Used from
// the thread that uses the transport.
class RdmaConnection final : public Connection {
 public:
  RdmaConnection(std::shared_ptr<Engine> engine, std::unique_ptr<Channel> channel);
  ~RdmaConnection() override;

  int peer() const noexcept override { return channel_->peer; }
  // Memory covered by `mr` (a region of this transport) is posted in place; other memory is
  // staged through the connection's registered slots (or posted inline when small).
  Request post_send(std::span<const std::byte> data, const MemoryRegion* mr) override;
  // Receives are copied out of the registered receive slots (`mr` is not needed).
  Request post_recv(std::span<std::byte> data, const MemoryRegion* mr) override;
  bool test(Request r) override;
  void wait(Request r, Deadline deadline) override;

  // For the fault tests (tests/rdma): the queue pairs and the peer's slots.
  Channel& channel_for_testing() noexcept { return *channel_; }

 private:
  std::shared_ptr<Engine> engine_;
  std::unique_ptr<Channel> channel_;
};

}  // namespace ringlet::transport::rdma
