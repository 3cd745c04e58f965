// SPDX-License-Identifier: Apache-2.0
// The rdma transport's memory region: one ibv_mr in the transport's protection domain,
// deregistered on destruction (after which the NIC never touches the memory again).
#pragma once

#include <memory>

#include "transports/rdma/engine.hpp"
#include "transports/transport.hpp"

namespace ringlet::transport::rdma {

class RdmaMemoryRegion final : public MemoryRegion {
 public:
  // `user`: a user buffer (register_user_memory), known to the engine's lookup while it lives.
  RdmaMemoryRegion(std::shared_ptr<Engine> engine, ibv_mr* mr, std::span<std::byte> memory,
                   bool user = false)
      : engine_(std::move(engine)), mr_(mr), memory_(memory), user_(user) {
    if (user_) engine_->add_user_region(memory_.data(), memory_.size(), mr_->lkey);
  }
  ~RdmaMemoryRegion() override {
    // Out of the lookup first, so that no post finds it while it is deregistered.
    if (user_) engine_->remove_user_region(mr_->lkey);
    engine_->verbs().dereg_mr(mr_);
  }
  RdmaMemoryRegion(const RdmaMemoryRegion&) = delete;
  RdmaMemoryRegion& operator=(const RdmaMemoryRegion&) = delete;

  std::span<std::byte> memory() const noexcept override { return memory_; }
  const Engine* engine() const noexcept { return engine_.get(); }
  std::uint32_t lkey() const noexcept { return mr_->lkey; }
  // The lkey to post [data, data + size) with, or 0 when the region does not cover it.
  std::uint32_t lkey_for(const std::byte* data, std::size_t size) const noexcept {
    const std::byte* b = memory_.data();
    return data >= b && size <= memory_.size() &&
                   static_cast<std::size_t>(data - b) <= memory_.size() - size
               ? mr_->lkey
               : 0;
  }

 private:
  std::shared_ptr<Engine> engine_;
  ibv_mr* mr_;
  std::span<std::byte> memory_;
  bool user_ = false;
};

}  // namespace ringlet::transport::rdma
