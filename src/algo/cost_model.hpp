// SPDX-License-Identifier: Apache-2.0
// The alpha-beta-gamma cost model of the allreduce algorithms: the predicted time of each
// algorithm for a job's shape and links, the fastest one per message size as selection
// ranges (the same algo::Range the selection table holds), and the bandwidth lower bound.
// Pure computation: no sockets, no clock, no configuration. docs/perf/planner.md has the
// formulas with worked numbers; tools/plan (ringlet-plan) prints them.
//
// Notation. N nodes, L ranks per node, p = N L ranks, S the message in bytes. A message of m
// bytes over a link costs alpha + m beta (Hockney's model); reducing m bytes of input into an
// accumulator costs m gamma. q is the largest power of two <= p, e = p - q the ranks left
// over, k = log2 q. The flat algorithms (ring, recursive doubling, Rabenseifner) run over the
// network transport between every pair of ranks, also between two ranks of one node (tcp
// loopback): they use `net`. Only the local group (shared memory) uses `local`.
//
// Sources of the reasoning (the formulas below are derived here, not copied):
//  - R. Thakur, R. Rabenseifner, W. Gropp, "Optimization of Collective Communication
//    Operations in MPICH", IJHPCA 19(1), 2005: the alpha-beta-gamma costs of recursive
//    doubling and of reduce-scatter + allgather (Rabenseifner), and the fold of the ranks
//    beyond the largest power of two into it (two extra steps of the whole message).
//  - P. Patarasuk, X. Yuan, "Bandwidth optimal all-reduce algorithms for clusters of
//    workstations", JPDC 69(2), 2009: every rank must send, and receive, at least
//    2 (p-1)/p S bytes, which the pipelined ring attains whatever p is; applied here to nodes
//    (a node's NIC must carry 2 (N-1)/N S when the ranks inside it are free to combine).
//
// The formulas (each is one function below; a step's time is the slowest pair's):
//
//  ring (p ranks, chunk c = S/p, pipeline slice b = slice_bytes): p-1 reduce-scatter steps,
//    each a receive of c bytes reduced as it arrives, then p-1 allgather steps of c bytes.
//    Cut into slices, a reduce-scatter step is a two-stage pipeline (transfer, reduce): its
//    bottleneck stage runs for the whole chunk, the other only for the last slice, so
//      step_rs = alpha + c max(beta, gamma) + min(c, b) min(beta, gamma)
//      step_ag = alpha + c beta
//      T_ring  = (p-1) (step_rs + step_ag)
//    With c <= b (one slice) this is Thakur's 2(p-1) alpha + 2(p-1)/p S beta + (p-1)/p S gamma.
//    One rank of each node sends across the node boundary per step, so no NIC is shared.
//
//  recursive doubling: k exchanges of the whole message, each alpha + S beta + S gamma; when
//    e > 0, the fold adds a hand-off before (alpha + S beta + S gamma: the partner reduces)
//    and one after (alpha + S beta). That is floor(log2 p) + 2 steps for p not a power of
//    two: src/algo/recursive_doubling.cpp folds into the largest power of two below p, which
//    needs one exchange fewer than ceil(log2 p). NIC sharing: ranks are numbered node by node;
//    a step of distance d stays inside every node when 2d divides L, otherwise all L ranks of a
//    node cross at once and share its NIC, so that step's beta becomes L beta (exact for L a
//    power of two, an upper bound otherwise). The fold's pairs (2i, 2i+1) stay inside a node
//    when L is even.
//
//  Rabenseifner: the fold as above, then a reduce-scatter by recursive halving (step j, at
//    distance 2^j, exchanges and reduces S / 2^(j+1) bytes: the nearest partner takes the
//    largest half, MPICH's order) and an allgather by recursive doubling (the same sizes in
//    reverse):
//      T = 2 k alpha + 2 (q-1)/q S beta + (q-1)/q S gamma   (+ fold; NIC sharing as above)
//
//  hierarchical (N > 1, L > 1, a local group): per pipeline chunk of P = hier_pipeline_bytes,
//    three stages: the local reduce-scatter (shared memory, below), L inter-node rings in
//    parallel, one per local rank, each on S/L over the N nodes (the ring formula with p = N;
//    the L rings share the node's NIC, so each sees L beta, and together they carry
//    2 (N-1)/N S through it: the node-level bound), and the local allgather. Chunks overlap
//    stage by stage: the bottleneck stage runs for all of S, the other two only for the first
//    chunk:  T_hier = max_j T_j(S) + (sum of the two smaller T_j(min(S, P))).
//
//  the shared-memory path (groups/shm, docs/design/transport-shm.md; m_l = ceil(S / C)
//    chunks of C = local_chunk_bytes, each synchronising through published counters, one
//    local alpha each):
//      reduce-scatter = 2 m_l alpha_l + S beta_l + (L-1)/L S gamma    (copy in, reduce own shard)
//      allgather      = 2 m_l alpha_l + S beta_l                      (write own piece, copy out)
//      local allreduce, S <= 16 KiB (one publish, every rank reduces all L slots):
//                       alpha_l + 2 S beta_l + (L-1) S gamma
//      local allreduce, larger: 3 m_l alpha_l + 2 S beta_l + (L-1)/L S gamma
//    (each time is nondecreasing in S within its path; at 16 KiB the switch of paths may step
//    down when gamma is large, which is what the implementation does).
//
//  lower bound (bandwidth only): N > 1: 2 (N-1)/N S beta; one node: 2 (p-1)/p S times the
//    cheaper of beta and (with a local group) beta_l; 0 for one rank.
//  busbw (nccl-tests): algbw = S / T, busbw = algbw 2 (p-1)/p.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "src/algo/select.hpp"

namespace ringlet::algo {

// One kind of link: the time of a message of m bytes is alpha_s + m beta_s_per_byte.
struct LinkModel {
  double alpha_s = 0;
  double beta_s_per_byte = 0;
  friend bool operator==(const LinkModel&, const LinkModel&) = default;
};

struct CostModel {
  LinkModel net;                // the network transport between ranks
  LinkModel local;              // the node's local group (shared memory)
  double gamma_s_per_byte = 0;  // reducing one byte of input into the accumulator
  std::size_t slice_bytes = std::size_t{1} << 20;          // the ring's pipeline slice (tcp)
  std::size_t local_chunk_bytes = std::size_t{256} << 10;  // shm chunk (Config::shm_chunk_bytes)
  std::size_t local_small_bytes = std::size_t{16} << 10;   // shm single-publish path
  std::size_t hier_pipeline_bytes = std::size_t{1} << 20;  // Config::hier_pipeline_bytes
};

// The job: N nodes of L ranks each, and whether a local group serves each node.
struct ModelShape {
  std::int64_t nodes = 1;
  std::int64_t ranks_per_node = 1;
  bool local_group = true;
  std::int64_t ranks() const noexcept { return nodes * ranks_per_node; }
};

// Largest rank count the model accepts (10,000 nodes of 64 ranks fit with room to spare).
inline constexpr std::int64_t kMaxModelRanks = std::int64_t{1} << 24;

// Throws Error(invalid_argument) for a shape or model the formulas do not cover: no nodes or
// ranks, more than kMaxModelRanks ranks, a negative or non-finite alpha, beta or gamma, a zero
// slice or chunk.
void validate(const CostModel& model, const ModelShape& shape);

// The algorithms in the order ties are broken (earlier wins): the local paths first, then
// the implemented flat ones, Rabenseifner last.
inline constexpr Algorithm kModelAlgorithms[] = {Algorithm::local, Algorithm::hierarchical,
                                                 Algorithm::recursive_doubling, Algorithm::ring,
                                                 Algorithm::rabenseifner};

// Whether `a` can run for `shape`: local needs one node of L > 1 ranks with a local group,
// hierarchical N > 1 nodes of L > 1 ranks with one; the flat algorithms always can.
bool available(Algorithm a, const ModelShape& shape) noexcept;

// Predicted seconds (formulas above); 0 for one rank, +infinity for an algorithm that is not
// available for the shape.
double ring_time(const CostModel& m, const ModelShape& s, std::size_t bytes) noexcept;
double recursive_doubling_time(const CostModel& m, const ModelShape& s, std::size_t bytes) noexcept;
double rabenseifner_time(const CostModel& m, const ModelShape& s, std::size_t bytes) noexcept;
double hierarchical_time(const CostModel& m, const ModelShape& s, std::size_t bytes) noexcept;
double local_time(const CostModel& m, const ModelShape& s, std::size_t bytes) noexcept;
double predicted_time(Algorithm a, const CostModel& m, const ModelShape& s,
                      std::size_t bytes) noexcept;

// The ring formula alone, for p ranks on one kind of link (used by the ring and by the
// hierarchical algorithm's inter-node rings).
double ring_formula(std::int64_t p, double bytes, double alpha, double beta, double gamma,
                    double slice_bytes) noexcept;

double bandwidth_lower_bound(const CostModel& m, const ModelShape& s, std::size_t bytes) noexcept;
// nccl-tests' bus bandwidth in bytes per second of `bytes` in `seconds` over the shape's ranks.
double bus_bandwidth(const ModelShape& s, std::size_t bytes, double seconds) noexcept;

// The fastest of `candidates` (empty: kModelAlgorithms) that is available for the shape.
Algorithm fastest(const CostModel& m, const ModelShape& s, std::size_t bytes,
                  const std::vector<Algorithm>& candidates = {});

struct SizeChoice {
  std::size_t bytes = 0;
  Algorithm algorithm = Algorithm::ring;
  double seconds = 0;
};
// The fastest algorithm at 1 B, 2 B, 4 B, ... 1 GiB (31 sizes).
std::vector<SizeChoice> fastest_by_size(const CostModel& m, const ModelShape& s,
                                        const std::vector<Algorithm>& candidates = {});

// Ranges covering 0..kMaxBytes without gaps or overlaps, neighbours with different
// algorithms: where the fastest algorithm changes between two sampled sizes, the boundary is
// found to the byte by bisection; 0 takes the choice at 1 B, sizes above 1 GiB the choice
// at 1 GiB.
std::vector<Range> predicted_ranges(const CostModel& m, const ModelShape& s,
                                    const std::vector<Algorithm>& candidates = {});

// The model file (docs/perf/planner.md): key=value lines, '#' starts a comment. Keys: alpha,
// beta, local_alpha, local_beta, gamma (seconds, seconds per byte), nodes, ranks_per_node,
// slice_bytes, local_group (0 or 1). Every key is optional; later lines win.
struct ModelFile {
  CostModel model;
  ModelShape shape;
  bool has_alpha = false, has_beta = false, has_local_alpha = false, has_local_beta = false,
       has_gamma = false, has_nodes = false, has_ranks_per_node = false;
};
// Throws Error(invalid_argument) naming `what` and the line for an unknown key or bad value.
// Values not given keep those already in `into`.
void parse_model_text(std::string_view text, std::string_view what, ModelFile& into);
// The file's text for `m` and `s`, all keys, %.9g numbers: what allreduce_perf --write-model
// writes and parse_model_text reads back.
std::string format_model_text(const CostModel& m, const ModelShape& s);

}  // namespace ringlet::algo
