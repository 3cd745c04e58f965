// SPDX-License-Identifier: Apache-2.0
// Config: every tunable of one communicator, resolved once from Options, then the
// environment, then measured defaults. Only resolve_config() reads the environment; the
// layers below receive the values they need.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "include/ringlet/ringlet.hpp"

namespace ringlet {

struct Config {
  // Algorithm selection, RINGLET_ALGO's syntax (src/algo/select.hpp): "auto", a name, or
  // ranges "rd:0-64K;ring:64K-max".
  std::string algorithm = "auto";
  // Network transport: "auto", "tcp" or, in builds with the ibverbs feature, "rdma"
  // (RINGLET_TRANSPORT). auto takes rdma where an active port exists, tcp otherwise.
  std::string transport = "auto";
  // Deadline of every blocking call (RINGLET_TIMEOUT).
  std::chrono::milliseconds timeout{300000};
  // The signal that asks every communicator for a hang report (RINGLET_HANG_SIGNAL: a name
  // such as SIGUSR2 or USR2, or a number); 0: none (docs/reliability.md).
  int hang_signal = 0;
  // RINGLET_REPORT_FD, set by ringlet-run: a pipe to it that hang reports are also written
  // to (src/hang_report.hpp); -1: none.
  int report_fd = -1;
  // Largest allreduce served by recursive doubling under "auto" (RINGLET_CROSSOVER_BYTES);
  // measured default: 64 KiB up to 4 ranks, 128 KiB above (docs/perf/crossover.md).
  std::size_t crossover_bytes = std::size_t{64} << 10;
  // Pipeline slice of the ring (RINGLET_SLICE_BYTES); 0: the transport's recommendation.
  std::size_t slice_bytes = 0;
  // Receive slots of the pipelined ring.
  int ring_slots = 4;
  // Pipeline chunk of the hierarchical allreduce (measured: docs/perf/hierarchical-hosts.md).
  std::size_t hier_pipeline_bytes = std::size_t{1} << 20;
  // Fusion buffer of the many-tensor allreduce (RINGLET_FUSION_BYTES): tensors of one type
  // are packed into buffers of at most this size, each reduced as one collective.
  // 4 MiB, measured (docs/perf/engine.md): as fast as 8-64 MiB between two 1 Gbit/s hosts,
  // fastest on loopback, where packing a cache-sized buffer is cheaper.
  std::size_t fusion_bytes = std::size_t{4} << 20;
  // Bucket of the GradientReducer (RINGLET_BUCKET_BYTES): gradients are grouped into buckets
  // of at most this many bytes, each reduced as one collective; 0: fusion_bytes.
  std::size_t bucket_bytes = 0;
  // RINGLET_TIMELINE=PATH: each rank records its collectives and their phases and writes
  // PATH.<rank>.json (src/timeline.hpp); empty: off.
  std::string timeline;
  // Shared memory among the ranks of a node (RINGLET_SHM).
  bool shm = true;
  // Shared-memory slot per rank; 0: the group's measured default.
  std::size_t shm_chunk_bytes = 0;
  // Spin and yield rounds of a shared-memory wait before it sleeps (RINGLET_SHM_SPIN,
  // RINGLET_SHM_YIELDS).
  int shm_spin = 50;
  int shm_yields = 100;
  // TCP data sockets per peer and direction (RINGLET_SOCKETS); 0: the transport's default.
  int tcp_sockets = 0;
  // Interface selection as NCCL_SOCKET_IFNAME (RINGLET_SOCKET_IFNAME); empty: automatic.
  std::string socket_ifname;
  // The job's shared secret (Options::secret, RINGLET_SECRET, RINGLET_SECRET_FILE); empty:
  // unauthenticated. Never printed.
  std::string secret;
  // Where the secret came from, for messages: "Options::secret", "RINGLET_SECRET", the file.
  std::string secret_source;
  // Encrypt and authenticate every TCP frame (RINGLET_ENCRYPT); needs a secret.
  bool encrypt = false;
  // rdma: the verbs library to load (RINGLET_IBVERBS_LIBRARY, test-only; empty:
  // libibverbs.so.1), the devices and ports (RINGLET_IB_HCA, NCCL_IB_HCA's syntax), the GID
  // index (RINGLET_IB_GID_INDEX; -1: automatic) and queue pairs per connection
  // (RINGLET_IB_QPS_PER_CONNECTION; 0: the transport's default).
  std::string ibverbs_library;
  std::string ib_hca;
  int ib_gid_index = -1;
  int ib_qps = 0;
};

// Secrets shorter than this are refused (ringlet-run generates 64 hexadecimal digits).
inline constexpr std::size_t kMinSecretBytes = 16;

// True in builds with the rdma transport (the ibverbs feature).
bool rdma_built() noexcept;

// How a variable is looked up: the process environment in production, a map in tests.
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;
EnvLookup process_env_lookup();

// Resolves the configuration of a communicator of `size` ranks. A malformed value throws
// Error(invalid_argument) naming the variable or option.
Config resolve_config(const Options& options, int size, const EnvLookup& env);

// One line per value, "name=value (source)", for the INFO log.
std::string describe(const Config& config);

// The settings that every rank must share (they change what goes over the wire or which
// ranks meet where), as "RINGLET_SHM=1\nRINGLET_ALGO=auto\n...", compared at rendezvous.
std::string agreed_settings(const Config& config);
// A short digest of agreed_settings(), for the rendezvous record.
std::string settings_digest(const std::string& settings);
// The first setting that differs between two agreed_settings() texts: "RINGLET_SHM is 1
// here and 0 at rank 2"; empty when they agree.
std::string settings_difference(const std::string& mine, const std::string& theirs, int their_rank);

}  // namespace ringlet
