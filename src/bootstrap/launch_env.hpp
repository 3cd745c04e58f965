// SPDX-License-Identifier: Apache-2.0
// Launcher environments: where a rank learns its rank, size, local rank and store address.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "include/ringlet/ringlet.hpp"

namespace ringlet::bootstrap {

// Looks up one environment variable; tests pass a map instead of the process environment.
using EnvLookup = std::function<std::optional<std::string>(std::string_view)>;
EnvLookup process_env();

// How the ranks find the rendezvous store.
enum class Wireup {
  address,  // a known host:port (Options::store, RINGLET_ADDR, MASTER_ADDR, SLURM's first node)
  pmix,     // rank 0 serves on an ephemeral port and publishes it through PMIx (Put, Fence, Get)
  pmi1,     // the same through MPICH Hydra's PMI-1 wire protocol on PMI_FD
};
const char* wireup_name(Wireup w);

// What a PMIx server told this process (src/bootstrap/pmix.cpp fills it). Unknown: -1.
struct PmixView {
  int rank = -1;
  int size = -1;
  int local_rank = -1;
  int local_size = -1;
  std::string nspace;
};

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
  Wireup wireup = Wireup::address;
  bool serves_store = false;  // this process serves the store (rank 0, or SLURM's first task)
  std::string port_from;      // where store_port came from, for logs and errors
  int pmi_fd = -1;            // Wireup::pmi1: Hydra's PMI_FD
  // The job's identity, sent in the clear in the store's hello so that a rank of another
  // job that reaches this store is refused (Error(mismatch) naming both); see
  // resolve_job_identity(). job_identity_source names where it came from, for logs.
  std::string job_identity;
  std::string job_identity_source;
};

// Whether a PMIx server announces itself: PMIX_NAMESPACE, PMIX_RANK and a PMIX_SERVER_URI*.
bool pmix_announced(const EnvLookup& env);

// The wire-up create() should use: address when Options::store or RINGLET_ADDR is set, else
// pmix when a PMIx server is announced, else pmi1 when Hydra's PMI_FD and PMI_RANK are set,
// else address.
Wireup choose_wireup(const Options& options, const EnvLookup& env);

// SLURM without PMIx: the store port for a step, 29501 + ((job * 16 + step % 16) % 1024),
// so in [29501, 30524]; concurrent steps of one job and neighbouring jobs get different ports.
int slurm_store_port(std::uint64_t job_id, std::uint64_t step_id);

// The job's identity: RINGLET_JOB_ID, else the PMIx namespace ("pmix:NS"), else
// SLURM_JOB_ID.SLURM_STEP_ID ("slurm:J.S"), else TORCHELASTIC_RUN_ID ("torchrun:ID"), else
// Open MPI's job id ("openmpi:ID"), else a hash of the rendezvous parameters ("rdv-HEX" of
// host:port/size, which cannot tell apart two jobs of one size on one host and port). At
// most 256 bytes (RINGLET_JOB_ID longer: Error(invalid_argument)). Sets both fields.
void resolve_job_identity(LaunchInfo& info, const EnvLookup& env, const PmixView* pmix);

// Resolves, per field: Options first, then RINGLET_*, then PMIx (when `pmix` is given), then
// torchrun (MASTER_ADDR,
// MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE), then Open MPI
// (OMPI_COMM_WORLD_*), MPICH/Hydra and PMI (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID,
// MPI_LOCALNRANKS), then SLURM (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
// SLURM_NTASKS_PER_NODE, first host of SLURM_STEP_NODELIST as the store host, served by the
// task with SLURM_NODEID=0 and SLURM_LOCALID=0 on slurm_store_port()).
// Under torchrun (TORCHELASTIC_RUN_ID set) MASTER_PORT belongs to torch's store: the port
// must come from RINGLET_PORT, else Error(invalid_argument) says so.
// RINGLET_ADDR is "host:port", "[v6]:port" or a bare host (then RINGLET_PORT, default 29500).
// Throws Error(invalid_argument) with the exact variable to set when rank, size or the
// store address is missing or malformed, or rank is outside [0, size).
LaunchInfo resolve_launch(const Options& options, const EnvLookup& env,
                          const PmixView* pmix = nullptr);

// Expands a SLURM host list ("node[01-03,7],gpu5") and returns its hosts in order.
std::vector<std::string> expand_slurm_nodelist(std::string_view nodelist);

// This host's identity for grouping ranks into nodes: hostname, boot id and the network
// namespace's inode, so that namespaced test hosts on one machine are different nodes.
std::string detect_node_identity();

}  // namespace ringlet::bootstrap
