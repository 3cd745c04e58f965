// SPDX-License-Identifier: Apache-2.0
// Internal entry points of the communicator, for tests and tools inside the repository.
#pragma once

#include <memory>

#include "include/ringlet/ringlet.hpp"
#include "src/bootstrap/store.hpp"

namespace ringlet::detail {

// Like Communicator::create, but rendezvous through `store` (for example a hash store shared
// by ranks that run as threads of one process, or a file store) instead of rank 0's TCP
// store. options.rank and options.size must be set.
Communicator create_with_store(const Options& options, std::shared_ptr<bootstrap::Store> store);

}  // namespace ringlet::detail
