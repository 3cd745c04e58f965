// SPDX-License-Identifier: Apache-2.0
// RdmaConnection: forwards to the transport's Engine, which progresses every connection.
#include "transports/rdma/connection.hpp"

#include <utility>

#include "transports/rdma/memory_region.hpp"

namespace ringlet::transport::rdma {
namespace {

// A request's id is the operation's id on its channel, shifted, with the direction in bit 0.
constexpr std::uint64_t kRecvBit = 1;

}  // namespace

RdmaConnection::RdmaConnection(std::shared_ptr<Engine> engine, std::unique_ptr<Channel> channel)
    : engine_(std::move(engine)), channel_(std::move(channel)) {
  engine_->add(channel_.get());
}

RdmaConnection::~RdmaConnection() { engine_->destroy_channel(*channel_); }

Request RdmaConnection::post_send(std::span<const std::byte> data, const MemoryRegion* mr) {
  std::uint32_t lkey = 0;
  if (const auto* r = dynamic_cast<const RdmaMemoryRegion*>(mr);
      r != nullptr && r->engine() == engine_.get()) {
    lkey = r->lkey_for(data.data(), data.size());
  }
  // No region given (the algorithms post user buffers so): a live user registration that
  // covers the memory is used in place; otherwise the engine stages it.
  if (lkey == 0 && !data.empty()) lkey = engine_->user_lkey(data.data(), data.size());
  return Request{engine_->post_send(*channel_, data, lkey) << 1};
}

Request RdmaConnection::post_recv(std::span<std::byte> data, const MemoryRegion*) {
  return Request{(engine_->post_recv(*channel_, data) << 1) | kRecvBit};
}

bool RdmaConnection::test(Request r) {
  return (r.id & kRecvBit) != 0 ? engine_->test_recv(*channel_, r.id >> 1)
                                : engine_->test_send(*channel_, r.id >> 1);
}

void RdmaConnection::wait(Request r, Deadline deadline) {
  if ((r.id & kRecvBit) != 0) {
    engine_->wait_recv(*channel_, r.id >> 1, deadline);
  } else {
    engine_->wait_send(*channel_, r.id >> 1, deadline);
  }
}

}  // namespace ringlet::transport::rdma
