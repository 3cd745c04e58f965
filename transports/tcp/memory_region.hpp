// SPDX-License-Identifier: Apache-2.0
// The tcp transport's memory region: nothing to register, sockets read and write any memory.
#pragma once

#include "transports/transport.hpp"

namespace ringlet::transport::tcp {

class TcpMemoryRegion final : public MemoryRegion {
 public:
  explicit TcpMemoryRegion(std::span<std::byte> memory) : memory_(memory) {}
  std::span<std::byte> memory() const noexcept override { return memory_; }

 private:
  std::span<std::byte> memory_;
};

}  // namespace ringlet::transport::tcp
