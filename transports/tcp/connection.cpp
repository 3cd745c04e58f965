// SPDX-License-Identifier: Apache-2.0
// TcpConnection: forwards to the transport's Loop, which progresses every connection.
#include "transports/tcp/connection.hpp"

#include <utility>

namespace ringlet::transport::tcp {
namespace {

// A request's id is the operation's id on its channel, shifted, with the direction in bit 0.
constexpr std::uint64_t kRecvBit = 1;

Request send_request(std::uint64_t id) { return Request{id << 1}; }
Request recv_request(std::uint64_t id) { return Request{(id << 1) | kRecvBit}; }

}  // namespace

TcpConnection::TcpConnection(std::shared_ptr<Loop> loop, std::unique_ptr<Channel> channel)
    : loop_(std::move(loop)), channel_(std::move(channel)) {
  loop_->add(channel_.get());
}

TcpConnection::~TcpConnection() { loop_->remove(channel_.get()); }

Request TcpConnection::post_send(std::span<const std::byte> data, const MemoryRegion*) {
  return send_request(loop_->post_send(*channel_, data));
}

Request TcpConnection::post_recv(std::span<std::byte> data, const MemoryRegion*) {
  return recv_request(loop_->post_recv(*channel_, data));
}

bool TcpConnection::test(Request r) {
  return (r.id & kRecvBit) != 0 ? loop_->test_recv(*channel_, r.id >> 1)
                                : loop_->test_send(*channel_, r.id >> 1);
}

void TcpConnection::wait(Request r, Deadline deadline) {
  if ((r.id & kRecvBit) != 0) {
    loop_->wait_recv(*channel_, r.id >> 1, deadline);
  } else {
    loop_->wait_send(*channel_, r.id >> 1, deadline);
  }
}

}  // namespace ringlet::transport::tcp
