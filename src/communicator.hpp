// SPDX-License-Identifier: Apache-2.0
// Internal entry points of the communicator, for tests and tools inside the repository.
#pragma once

#include <cstddef>
#include <memory>

#include "include/ringlet/ringlet.hpp"
#include "src/bootstrap/store.hpp"

namespace ringlet::timeline {
class Lane;
}

namespace ringlet::detail {

// The GradientReducer's bucket size on `comm` (RINGLET_BUCKET_BYTES, else the fusion size)
// and its timeline lane (null unless RINGLET_TIMELINE is set).
std::size_t bucket_bytes_of(Communicator& comm);
timeline::Lane* timeline_of(Communicator& comm);

// Like Communicator::create, but rendezvous through `store` (for example a hash store shared
// by ranks that run as threads of one process, or a file store) instead of rank 0's TCP
// store. options.rank and options.size must be set.
Communicator create_with_store(const Options& options, std::shared_ptr<bootstrap::Store> store);

}  // namespace ringlet::detail
