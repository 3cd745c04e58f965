// SPDX-License-Identifier: Apache-2.0
// Launcher environments: where a rank learns its rank, size, local rank and store address.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "include/ringlet/ringlet.hpp"

namespace ringlet::bootstrap {

// Looks up one environment variable; tests pass a map instead of the process environment.
using EnvLookup = std::function<std::optional<std::string>(std::string_view)>;
EnvLookup process_env();

// What a rank knows before the rendezvous. Unknown integers are -1.
struct LaunchInfo {
  int rank = -1;
  int size = -1;
  int local_rank = -1;
  int local_size = -1;
  std::string store_host;  // rank 0's store host, without brackets
  int store_port = 29500;
  std::string node_id;  // RINGLET_NODE_ID or Options::node_id; empty: detect
  std::string source;   // which launcher the rank came from, for logs: "ringlet", "torchrun", ...
  // The job's identity, sent in the clear in the store's hello so that a rank of another
  // job that reaches this store is refused (Error(mismatch) naming both): RINGLET_JOB_ID,
  // else a hash of the rendezvous parameters (store host, port and size), which cannot
  // tell apart two jobs of one size on one host and port. job_identity_source names where
  // it came from, for logs.
  std::string job_identity;
  std::string job_identity_source;
};

// Resolves, per field: Options first, then RINGLET_*, then torchrun (MASTER_ADDR,
// MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE), then Open MPI
// (OMPI_COMM_WORLD_*), MPICH/Hydra and PMI (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID,
// MPI_LOCALNRANKS), then SLURM (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
// SLURM_NTASKS_PER_NODE, first host of SLURM_NODELIST as the store host).
// RINGLET_ADDR is "host:port", "[v6]:port" or a bare host (then RINGLET_PORT, default 29500).
// Throws Error(invalid_argument) with the exact variable to set when rank, size or the
// store address is missing or malformed, or rank is outside [0, size).
LaunchInfo resolve_launch(const Options& options, const EnvLookup& env);

// Expands a SLURM host list ("node[01-03,7],gpu5") and returns its hosts in order.
std::vector<std::string> expand_slurm_nodelist(std::string_view nodelist);

// This host's identity for grouping ranks into nodes: hostname, boot id and the network
// namespace's inode, so that namespaced test hosts on one machine are different nodes.
std::string detect_node_identity();

}  // namespace ringlet::bootstrap
