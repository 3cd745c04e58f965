// SPDX-License-Identifier: Apache-2.0
// The job is one node: allreduce through the node's local group alone.
#pragma once

#include <cstddef>

#include "src/algo/context.hpp"

namespace ringlet::algo {

// Copies `src` into `dst` (when they differ), reduces it in place over `local`, then applies
// the post-scale step to the whole buffer (every rank holds the whole result). Time ~ the
// group's cost model (groups/shm/group.cpp). Call it when the step runs: it copies at once
// and returns the task that reduces (the group's own one when there is no post-scale), whose
// waits block or suspend as `driver` says (its deadline applies).
// Takes the few things it needs rather than a whole Context: it serves the smallest messages
// of one-node jobs, where building a Context is a measurable part of the latency.
engine::Task local_allreduce(groups::LocalGroup& local, const exec::Executor& exec,
                             const Fingerprint& fp, PostScale post_scale, const std::byte* src,
                             std::byte* dst, std::size_t count, DataType type, ReduceOp op,
                             engine::Driver& driver);

}  // namespace ringlet::algo
