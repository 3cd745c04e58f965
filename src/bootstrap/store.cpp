// SPDX-License-Identifier: Apache-2.0
// Store conveniences shared by every implementation.
#include "src/bootstrap/store.hpp"

#include <cstring>

#include "src/bootstrap/store_detail.hpp"

namespace ringlet::bootstrap {

void Store::set_string(std::string_view key, std::string_view value) {
  set(key, std::as_bytes(std::span(value.data(), value.size())));
}

std::string Store::get_string(std::string_view key, Deadline deadline) {
  std::vector<std::byte> bytes = get(key, deadline);
  std::string out(bytes.size(), '\0');
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

namespace detail {

const Store& unwrap(const Store& store) noexcept {
  const Store* s = &store;
  while (const auto* w = dynamic_cast<const StoreWrapper*>(s)) s = &w->wrapped();
  return *s;
}

}  // namespace detail
}  // namespace ringlet::bootstrap
