// SPDX-License-Identifier: Apache-2.0
// Internal hooks that let local_address_of() and tcp_store_port() see through store wrappers.
#pragma once

#include <string>

#include "src/bootstrap/store.hpp"

namespace ringlet::bootstrap::detail {

// Implemented by stores that forward to another store (PrefixStore), so that the free
// functions of store.hpp can reach the store underneath.
class StoreWrapper {
 public:
  virtual ~StoreWrapper() = default;
  virtual const Store& wrapped() const noexcept = 0;
};

// Implemented by the TCP store's client.
class TcpStoreInfo {
 public:
  virtual ~TcpStoreInfo() = default;
  virtual std::string local_address() const = 0;
  virtual int port() const noexcept = 0;
};

// The innermost store under any number of wrappers.
const Store& unwrap(const Store& store) noexcept;

}  // namespace ringlet::bootstrap::detail
