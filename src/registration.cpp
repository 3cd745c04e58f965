// SPDX-License-Identifier: Apache-2.0
// Communicator::register_buffer and its Registration handle: a user buffer registered with
// the communicator's transport (an RDMA memory region), used in place by posts while the
// handle lives; nothing where the transport needs no registration.
#include <memory>
#include <span>

#include "src/communicator_impl.hpp"
#include "transports/transport.hpp"

namespace ringlet {

namespace detail {
struct RegistrationState {
  // Holds the transport's engine alive through its region, so the handle may outlive the
  // communicator.
  std::unique_ptr<transport::MemoryRegion> region;
};
}  // namespace detail

Registration::Registration() noexcept = default;
Registration::Registration(std::shared_ptr<detail::RegistrationState> state) noexcept
    : state_(std::move(state)) {}
Registration::Registration(Registration&&) noexcept = default;
Registration& Registration::operator=(Registration&&) noexcept = default;
Registration::~Registration() = default;

bool Registration::registered() const noexcept { return state_ && state_->region; }

void Registration::reset() noexcept { state_.reset(); }

Registration Communicator::register_buffer(Tensor buffer) { return impl_->register_buffer(buffer); }

Registration Communicator::Impl::register_buffer(Tensor buffer) {
  check_tensor(buffer, "register_buffer");
  auto state = std::make_shared<detail::RegistrationState>();
  if (transport_ && buffer.count > 0 && transport_->traits().needs_registration) {
    state->region = transport_->register_user_memory(
        {static_cast<std::byte*>(buffer.data), buffer.bytes()}, buffer.memory);
  }
  return Registration(std::move(state));
}

}  // namespace ringlet
