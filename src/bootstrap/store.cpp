// SPDX-License-Identifier: Apache-2.0
// Store conveniences shared by every implementation.
#include "src/bootstrap/store.hpp"

#include <algorithm>
#include <cstring>

#include "src/bootstrap/store_detail.hpp"
#include "src/common/check.hpp"

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

std::vector<std::byte> Store::get_interruptible(std::string_view key, Deadline deadline,
                                                const std::stop_token& stop) {
  constexpr auto kSlice = std::chrono::milliseconds(200);
  for (;;) {
    if (stop.stop_requested()) {
      throw Error(ErrorCode::aborted,
                  str_cat("store: the wait for key '", key, "' was interrupted"));
    }
    const Deadline slice = std::min<Deadline>(deadline, Clock::now() + kSlice);
    try {
      return get(key, slice);
    } catch (const Error& e) {
      if (e.error_code() != ErrorCode::timeout || slice >= deadline) throw;
    }
  }
}

namespace detail {

const Store& unwrap(const Store& store) noexcept {
  const Store* s = &store;
  while (const auto* w = dynamic_cast<const StoreWrapper*>(s)) s = &w->wrapped();
  return *s;
}

}  // namespace detail
}  // namespace ringlet::bootstrap
