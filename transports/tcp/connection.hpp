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
  void post_send(const MemoryRegion* mr, std::span<const std::byte> data,
                 std::uint64_t tag) override;
  void post_recv(const MemoryRegion* mr, std::span<std::byte> data, std::uint64_t tag) override;
  bool test_send(std::uint64_t tag) override;
  bool test_recv(std::uint64_t tag) override;
  void wait_send(std::uint64_t tag, Deadline deadline) override;
  void wait_recv(std::uint64_t tag, Deadline deadline) override;
  void send_error(ErrorCode code, std::string_view what) noexcept override;

 private:
  std::shared_ptr<Loop> loop_;
  std::unique_ptr<Channel> channel_;
};

}  // namespace ringlet::transport::tcp
