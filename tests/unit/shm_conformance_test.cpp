// SPDX-License-Identifier: Apache-2.0
// The local-group conformance suite (local_group_conformance.hpp) run on ShmGroup: ranks as
// threads over one hash store, with the default chunk and with small chunks (many chunks per
// call, pieces of 64 bytes).
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "groups/shm/group.hpp"
#include "src/bootstrap/store.hpp"
#include "tests/unit/local_group_conformance.hpp"

namespace ringlet::groups::testing {
namespace {

std::shared_ptr<const GroupFactory> shm_factory(std::string name, std::size_t chunk_bytes) {
  auto f = std::make_shared<GroupFactory>();
  f->name = std::move(name);
  f->boundary_bytes = shm::ShmGroup::kSmallBytes;
  f->start = [chunk_bytes](int local_size) {
    static std::atomic<std::uint32_t> jobs{0};
    const std::uint64_t job = (static_cast<std::uint64_t>(::getpid()) << 32) | jobs++;
    auto store = bootstrap::make_hash_store();
    return [=](int local_rank) -> std::unique_ptr<LocalGroup> {
      shm::ShmOptions o;
      o.job.rank = 10 + local_rank;
      o.job.size = 10 + local_size;
      o.job.job_id = job;
      o.local_rank = local_rank;
      o.local_size = local_size;
      for (int j = 0; j < local_size; ++j) o.local_to_global.push_back(10 + j);
      o.store = store;
      o.chunk_bytes = chunk_bytes;
      return shm::ShmGroup::create(o, Clock::now() + std::chrono::seconds(30));
    };
  };
  return f;
}

INSTANTIATE_TEST_SUITE_P(Shm, LocalGroupConformance,
                         ::testing::ValuesIn(conformance_params(shm_factory("shm", 0),
                                                                {1, 2, 3, 4})),
                         conformance_name);
INSTANTIATE_TEST_SUITE_P(ShmSmallChunks, LocalGroupConformance,
                         ::testing::ValuesIn(conformance_params(shm_factory("shm_chunk4096", 4096),
                                                                {2, 3})),
                         conformance_name);

}  // namespace
}  // namespace ringlet::groups::testing
