// SPDX-License-Identifier: Apache-2.0
// TcpConnection: the sockets to one peer, progressed by the transport's Loop.
#pragma once

#include <memory>

#include "transports/tcp/loop.hpp"
#include "transports/transport.hpp"

namespace ringlet::transport::tcp {

// Made by TcpTransport::connect(); owns its Channel (the sockets and outstanding operations)
// and shares the transport's Loop, so it may outlive the transport. Used from the thread
// that uses the transport.
class TcpConnection final : public Connection {
 public:
  TcpConnection(std::shared_ptr<Loop> loop, std::unique_ptr<Channel> channel);
  ~TcpConnection() override;

  int peer() const noexcept override { return channel_->peer; }
  // Sockets read and write any memory: `mr` is not needed.
  Request post_send(std::span<const std::byte> data, const MemoryRegion* mr) override;
  Request post_recv(std::span<std::byte> data, const MemoryRegion* mr) override;
  bool test(Request r) override;
  void wait(Request r, Deadline deadline) override;

 private:
  std::shared_ptr<Loop> loop_;
  std::unique_ptr<Channel> channel_;
};

}  // namespace ringlet::transport::tcp
