// SPDX-License-Identifier: Apache-2.0
// TcpConnection: forwards to the transport's Loop, which progresses every connection.
#include "transports/tcp/connection.hpp"

#include <utility>

namespace ringlet::transport::tcp {

TcpConnection::TcpConnection(std::shared_ptr<Loop> loop, std::unique_ptr<Channel> channel)
    : loop_(std::move(loop)), channel_(std::move(channel)) {
  loop_->add(channel_.get());
}

TcpConnection::~TcpConnection() { loop_->remove(channel_.get()); }

void TcpConnection::post_send(const MemoryRegion*, std::span<const std::byte> data,
                              std::uint64_t tag) {
  loop_->post_send(*channel_, data, tag);
}

void TcpConnection::post_recv(const MemoryRegion*, std::span<std::byte> data, std::uint64_t tag) {
  loop_->post_recv(*channel_, data, tag);
}

bool TcpConnection::test_send(std::uint64_t tag) { return loop_->test_send(*channel_, tag); }

bool TcpConnection::test_recv(std::uint64_t tag) { return loop_->test_recv(*channel_, tag); }

void TcpConnection::wait_send(std::uint64_t tag, Deadline deadline) {
  loop_->wait_send(*channel_, tag, deadline);
}

void TcpConnection::wait_recv(std::uint64_t tag, Deadline deadline) {
  loop_->wait_recv(*channel_, tag, deadline);
}

void TcpConnection::send_error(ErrorCode code, std::string_view what) noexcept {
  loop_->send_error(*channel_, code, what);
}

}  // namespace ringlet::transport::tcp
