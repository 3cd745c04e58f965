// SPDX-License-Identifier: Apache-2.0
// What every transport and local group needs to know about its communicator.
#pragma once

#include <atomic>
#include <cstdint>

namespace ringlet {

struct JobContext {
  int rank = 0;
  int size = 1;
  std::uint64_t job_id = 0;                       // from the rendezvous; names the communicator
  const std::atomic<bool>* abort_flag = nullptr;  // checked on every wait loop
};

}  // namespace ringlet
