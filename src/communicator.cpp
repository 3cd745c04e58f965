// SPDX-License-Identifier: Apache-2.0
// Communicator and Communicator::Impl: rendezvous, validation, fingerprints, dispatch of each
// collective to its plan, and error propagation.
#include "src/communicator.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <random>
#include <string_view>
#include <thread>
#include <type_traits>

#include "src/algo/cost_model.hpp"
#include "src/algo/hierarchical.hpp"
#include "src/algo/local.hpp"
#include "src/algo/probe.hpp"
#include "src/algo/rabenseifner.hpp"
#include "src/algo/recursive_doubling.hpp"
#include "src/algo/ring.hpp"
#include "src/bootstrap/launch_env.hpp"
#include "src/bootstrap/launcher_kvs.hpp"
#include "src/common/check.hpp"
#include "src/common/fnv1a.hpp"
#include "src/common/log.hpp"
#include "src/common/socket.hpp"
#include "src/communicator_impl.hpp"
#include "src/reduce/reduce.hpp"
#include "src/timeline.hpp"
#include "src/topo/topology.hpp"
#include "transports/factory.hpp"

namespace ringlet {
namespace {

bool overlaps(const void* a, std::size_t an, const void* b, std::size_t bn) {
  auto pa = reinterpret_cast<std::uintptr_t>(a);
  auto pb = reinterpret_cast<std::uintptr_t>(b);
  return an > 0 && bn > 0 && pa < pb + bn && pb < pa + an;
}

// A decimal number read from the store under `key` (published by rank `from`), at most `max`:
// anything else is Error(transport) naming the key, never std::invalid_argument.
std::uint64_t parse_store_number(std::string_view text, std::string_view key, std::uint64_t max,
                                 int from) {
  std::uint64_t v = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || p != end || text.empty() || v > max) {
    const std::string shown(text.substr(0, 64));
    throw Error(
        ErrorCode::transport,
        str_cat("the rendezvous store holds a malformed value under '", key, "' (\"", shown,
                text.size() > 64 ? "..." : "", "\", rank ", from, "'s): not a number up to ", max,
                "; another job or a stray client may be using this store address"),
        {from});
  }
  return v;
}

// The text of a failure as this rank tells it: where it began and what happened.
std::string reason_of(const Error& e) {
  return e.origin_rank() >= 0 ? str_cat("rank ", e.origin_rank(), ": ", e.cause()) : e.cause();
}

}  // namespace

// --- Communicator::Impl -----------------------------------------------------------------

Communicator::Impl::Impl(const Identity& id, const Config& config,
                         std::shared_ptr<bootstrap::Store> base_store, std::string prefix,
                         std::stop_token stop)
    : config_(config),
      node_id_(id.node_id),
      base_store_(std::move(base_store)),
      prefix_(std::move(prefix)) {
  RINGLET_CHECK(id.size >= 1, "size ", id.size, " must be at least 1");
  RINGLET_CHECK(id.rank >= 0 && id.rank < id.size, "rank ", id.rank, " is outside [0, ", id.size,
                ")");
  log::set_thread_rank(id.rank);
  job_.rank = id.rank;
  job_.size = id.size;
  job_.abort_flag = &aborted_;
  // Every set-up wait polls aborted_ (the transport's and the local group's at least every
  // 100 ms), so setting it is enough to interrupt them; a store wait ends at once on
  // store_stop_.
  std::stop_callback on_stop(stop, [this] {
    aborted_.store(true, std::memory_order_release);
    store_stop_.request_stop();
  });
  try {
    set_up(id);
  } catch (const Error& e) {
    fail(e);
    throw;
  } catch (const std::bad_alloc&) {
    Error e(ErrorCode::transport, str_cat("rank ", id.rank, ": out of memory during set-up"),
            {id.rank});
    fail(e);
    throw e;
  } catch (const std::exception& x) {
    // std::system_error (a thread that cannot start), std::invalid_argument, ...: an Error,
    // and the peers hear of it now rather than at their deadline.
    Error e(ErrorCode::transport, str_cat("rank ", id.rank, ": set-up failed: ", x.what()),
            {id.rank});
    fail(e);
    throw e;
  }
  set_hang_report_fd(config_.report_fd);
  hang_id_ = register_hang_source(config_.hang_signal,
                                  [this] { return format_hang_report(snapshot(nullptr, -1)); });
}

void Communicator::Impl::set_up(const Identity& id) {
  store_ = bootstrap::make_interruptible_store(
      bootstrap::make_prefix_store(prefix_, base_store_),
      [this, rank = id.rank] {
        if (aborted_.load(std::memory_order_acquire)) {
          throw Error(ErrorCode::aborted,
                      str_cat("rank ", rank,
                              ": set-up was interrupted (abort) while waiting "
                              "in the rendezvous store"),
                      {rank});
        }
      },
      store_stop_.get_token());
  if (node_id_.empty()) node_id_ = bootstrap::detect_node_identity();

  const Deadline deadline = Clock::now() + config_.timeout;
  if (!config_.timeline.empty()) {
    // The lane's label: "comm" for the first communicator, "comm.1" for its first dup().
    const std::size_t slash = prefix_.rfind('/');
    const std::size_t dot = prefix_.find('.', slash == std::string::npos ? 0 : slash);
    timeline_ = std::make_unique<timeline::Lane>(
        config_.timeline, id.rank,
        str_cat("comm", dot == std::string::npos ? std::string() : prefix_.substr(dot)));
  }
  rendezvous(id, deadline);
  connect_peers(deadline);
  // The host-memory local group is made here rather than at its first use: making it is
  // collective over the node's ranks, and on one node every collective agrees through it.
  local_ = transport::make_local_group(MemoryKind::host, config_, layout_, job_, store_, deadline);
  algo::SelectInputs in;
  in.spec = algo::parse_algorithm_spec(config_.algorithm, "RINGLET_ALGO");
  in.crossover_bytes = config_.crossover_bytes;
  in.shape = layout_.shape;
  in.local_group = local_ != nullptr;
  in.traits = traits_;
  register_scratch();
  if (in.spec.model) in.model_ranges = model_ranges(in, deadline);
  table_ = algo::SelectTable::build(in);
  RINGLET_LOG(info, "rank ", rank(), "/", size(), " on node ", layout_.node_index, " of ",
              node_count(), " (local rank ", local_rank(), "/", local_size(), ", ",
              to_string(layout_.shape), "), transport ",
              transport_ ? transport_->name() : std::string_view("none"), ", local group ",
              local_ ? local_->name() : std::string_view("none"), ", ring slice ", slice_bytes_,
              " bytes x ", config_.ring_slots, " slots, reduce kernels ", reduce::host_isa());
  if (local_) {
    const bool hier_used = std::any_of(
        table_.allreduce_ranges().begin(), table_.allreduce_ranges().end(),
        [](const algo::Range& r) { return r.algorithm == algo::Algorithm::hierarchical; });
    RINGLET_LOG(info, "local group ", local_->name(), " of ", local_->local_size(), " ranks: ",
                table_.agree_locally() ? "allreduce and barrier run in shared memory"
                : hier_used            ? "large allreduces are hierarchical"
                                       : "not used by allreduce");
  }
  RINGLET_LOG(info, "config: ", describe(config_));
  RINGLET_LOG(info, describe(table_));
  for (const auto& note : table_.fallbacks()) RINGLET_LOG(info, note);
  // Every rank has read what it needs from the store once this barrier completes. The
  // store's server stays up for dup(), but this rank's connections to it close: rank 0
  // holds no descriptor per rank for the life of the job, and dup() reconnects.
  barrier(false);
  base_store_->close_idle();
}

Communicator::Impl::~Impl() {
  unregister_hang_source(hang_id_);
  stop_engine();
}

void Communicator::Impl::disagreement_seen(const Identity& id, Deadline deadline) noexcept {
  constexpr std::string_view key = "disagreement";
  try {
    if (id.rank != 0) {
      store_->add(key, 1);
      return;
    }
    const Deadline until = std::min(deadline, Clock::now() + std::chrono::seconds(5));
    while (store_->add(key, 0) < id.size - 1 && Clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } catch (...) {
    // Best effort: the mismatch is thrown either way.
  }
}

void Communicator::Impl::rendezvous(const Identity& id, Deadline deadline) {
  // Each rank claims its number: a second process with the same rank (a double launch, a
  // restarted rank while the old one lingers) fails here, instead of reading stale keys.
  // The claim holds a random token, and this rank's records are written as its holder
  // (publish()): no other process can replace them.
  {
    std::random_device rd;
    for (int i = 0; i < 4; ++i) claim_token_ += str_cat(std::hex, rd());
  }
  claim_key_ = str_cat("claim/", id.rank);
  if (!store_->claim(claim_key_, std::as_bytes(std::span(claim_token_)))) {
    throw Error(ErrorCode::mismatch,
                str_cat("rank ", id.rank, " claimed twice: another process already joined ",
                        "this job (store keys '", prefix_, "/...') as rank ", id.rank,
                        "; look for a duplicate launch or a restarted rank"),
                {id.rank});
  }
  // The job id names this communicator in every transport handshake.
  if (id.rank == 0) {
    std::random_device rd;
    job_.job_id = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    publish("job", std::to_string(job_.job_id));
  } else {
    job_.job_id = parse_store_number(store_->get_string("job", deadline), "job",
                                     std::numeric_limits<std::uint64_t>::max(), 0);
  }
  // Every rank states its protocol version, its idea of the job size, a digest of the
  // settings that must agree (the full text under cfg/<rank>), and its node.
  const std::string settings = agreed_settings(config_);
  const std::string digest = settings_digest(settings);
  publish(str_cat("cfg/", id.rank), settings);
  publish(str_cat("info/", id.rank),
          str_cat(kCollectiveProtocolVersion, " ", id.size, " ", digest, " ", node_id_));
  std::vector<std::string> node_ids(static_cast<std::size_t>(id.size));
  for (int r = 0; r < id.size; ++r) {
    const std::string key = str_cat("info/", r);
    std::string v = store_->get_string(key, deadline);
    std::size_t a = v.find(' ');
    std::size_t b = v.find(' ', a == std::string::npos ? 0 : a + 1);
    std::size_t c = v.find(' ', b == std::string::npos ? 0 : b + 1);
    const std::uint64_t version =
        parse_store_number(v.substr(0, a), key, std::numeric_limits<std::uint32_t>::max(), r);
    if (version == kCollectiveProtocolVersion &&
        (a == std::string::npos || b == std::string::npos || c == std::string::npos)) {
      throw Error(ErrorCode::transport,
                  str_cat("rank ", r, " published a malformed rendezvous record under '", key, "'"),
                  {r});
    }
    if (version != kCollectiveProtocolVersion) {
      throw Error(ErrorCode::mismatch,
                  str_cat("rank ", r, " speaks ringlet protocol version ", version, ", rank ",
                          id.rank, " speaks version ", kCollectiveProtocolVersion),
                  {r, id.rank});
    }
    const std::uint64_t size =
        parse_store_number(v.substr(a + 1, b - a - 1), key, std::numeric_limits<int>::max(), r);
    if (size != static_cast<std::uint64_t>(id.size)) {
      throw Error(ErrorCode::mismatch,
                  str_cat("rank ", r, " believes the job has ", size, " ranks, rank ", id.rank,
                          " believes ", id.size),
                  {r, id.rank});
    }
    if (v.compare(b + 1, c - b - 1, digest) != 0) {
      const std::string theirs = store_->get_string(str_cat("cfg/", r), deadline);
      std::string diff = settings_difference(settings, theirs, r);
      // Every rank compares every record, so every rank finds this; rank 0 serves the store
      // and waits (briefly) until the others have read what they need, so that each names
      // the difference instead of losing the store.
      disagreement_seen(id, deadline);
      throw Error(ErrorCode::mismatch,
                  str_cat("ranks disagree on configuration that must be the same everywhere: ",
                          diff.empty() ? std::string("settings differ") : diff, " (rank ", id.rank,
                          "); set it alike for every rank"),
                  {r, id.rank});
    }
    node_ids[static_cast<std::size_t>(r)] = v.substr(c + 1);
  }
  layout_ = JobLayout::from_node_ids(id.rank, node_ids, id.local_rank, id.local_size);
  if (layout_.shape == JobShape::flat) {
    RINGLET_LOG(info,
                "nodes hold different numbers of ranks (or one each): the hierarchical "
                "allreduce does not apply, the flat ring serves large messages");
  }
}

void Communicator::Impl::publish(std::string_view key, std::span<const std::byte> value) {
  try {
    store_->set_owned(claim_key_, std::as_bytes(std::span(claim_token_)), key, value);
  } catch (const Error& e) {
    if (e.error_code() != ErrorCode::mismatch) throw;
    throw Error(ErrorCode::mismatch,
                str_cat("rank ", job_.rank, " cannot publish its record '", key,
                        "': another process (a duplicate or stale rank ", job_.rank,
                        ") wrote it first (", e.cause(), "); look for a duplicate launch"),
                {job_.rank});
  }
}

void Communicator::Impl::connect_peers(Deadline deadline) {
  peers_.assign(static_cast<std::size_t>(size()), nullptr);
  if (size() == 1) return;
  transport::NetworkChoice net = transport::make_network_transport(
      config_, layout_, job_, bootstrap::local_address_of(*base_store_), store_,
      [this](const std::string& key, std::span<const std::byte> value) { publish(key, value); });
  transport_ = std::move(net.transport);
  numa_node_ = net.numa_node;
  traits_ = transport_->traits();
  publish(str_cat("addr/", rank()), transport_->local_address());

  // Ring neighbours, the partners of recursive doubling (Rabenseifner's allreduce has the
  // same: rabenseifner_peers), and the inter-node ring of this rank's local index.
  std::vector<int> wanted = algo::recursive_doubling_peers(rank(), size());
  wanted.push_back(mod(rank() - 1, size()));
  wanted.push_back(mod(rank() + 1, size()));
  if (layout_.shape == JobShape::uniform) {
    wanted.push_back(layout_.node_ring_peer(-1));
    wanted.push_back(layout_.node_ring_peer(+1));
  }
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  for (int peer : wanted) {
    auto address = store_->get(str_cat("addr/", peer), deadline);
    auto conn = transport_->connect(peer, address, deadline);
    peers_[static_cast<std::size_t>(peer)] = conn.get();
    connections_[peer] = std::move(conn);
  }
}

std::vector<algo::Range> Communicator::Impl::model_ranges(const algo::SelectInputs& in,
                                                          Deadline deadline) {
  const bool one_node_local = in.shape == JobShape::one_node && in.local_group;
  if (size() == 1 || one_node_local) return {};  // the local group serves every size
  // Measured on this job's ring links, agreed by every rank (the slowest rank's figures), so
  // that every rank builds the same table.
  const algo::ProbeOptions options;
  std::vector<std::byte> buf(2 * options.large_bytes);
  auto mr = transport_->register_memory(buf, MemoryKind::host);
  engine::Driver driver;
  driver.blocking = true;
  driver.deadline = deadline;
  driver.rank = rank();
  algo::Context ctx = context(deadline, MemoryKind::host, nullptr, nullptr, &driver);
  algo::ProbeResult probe;
  engine::run_blocking(algo::probe_links(ctx, buf, mr.get(), options, &probe), driver);
  algo::CostModel model;
  model.net = {probe.alpha_s, probe.beta_s_per_byte};
  model.slice_bytes = slice_bytes_;
  if (config_.shm_chunk_bytes != 0) model.local_chunk_bytes = config_.shm_chunk_bytes;
  model.hier_pipeline_bytes = config_.hier_pipeline_bytes;
  algo::ModelShape shape;
  shape.nodes = node_count();
  shape.ranks_per_node = (size() + node_count() - 1) / node_count();
  shape.local_group = in.local_group;
  std::vector<algo::Algorithm> candidates = {algo::Algorithm::recursive_doubling,
                                             algo::Algorithm::ring, algo::Algorithm::rabenseifner};
  if (in.shape == JobShape::uniform && in.local_group) {
    candidates.push_back(algo::Algorithm::hierarchical);
  }
  std::vector<algo::Range> ranges = algo::predicted_ranges(model, shape, candidates);
  RINGLET_LOG(info, "cost model: alpha ", probe.alpha_s * 1e6, " us, beta ",
              probe.beta_s_per_byte * 1e9, " ns/byte (",
              probe.beta_s_per_byte > 0 ? 1e-9 / probe.beta_s_per_byte : 0.0,
              " GB/s) on the ring's links, the slowest rank's; probe took ",
              probe.seconds_spent * 1e3, " ms");
  return ranges;
}

void Communicator::Impl::register_scratch() {
  slice_bytes_ = config_.slice_bytes != 0 ? config_.slice_bytes : traits_.slice_bytes;
  slice_bytes_ = std::max<std::size_t>(64, slice_bytes_ / 64 * 64);
  if (size() == 1) return;
  // Allocated, touched and registered once, here, never per call.
  ring_scratch_.assign(slice_bytes_ * static_cast<std::size_t>(config_.ring_slots), std::byte{0});
  small_scratch_.assign(2 * (config_.crossover_bytes + sizeof(WireFingerprint)), std::byte{0});
  ring_scratch_mr_ = transport_->register_memory(ring_scratch_, MemoryKind::host);
  small_scratch_mr_ = transport_->register_memory(small_scratch_, MemoryKind::host);
  // The fusion buffer of the many-tensor allreduce: its size is the bound, allocated and
  // touched here so that no list call allocates or faults pages in.
  fusion_.assign(std::max<std::size_t>(config_.fusion_bytes, 64), std::byte{0});
}

void Communicator::Impl::post_fingerprints(FingerprintExchange& x, const Fingerprint& fp) {
  x.mine = encode(fp);
  x.neighbours[0] = mod(rank() - 1, size());
  x.neighbours[1] = mod(rank() + 1, size());
  x.n = x.neighbours[0] == x.neighbours[1] ? 1 : 2;
  for (int i = 0; i < x.n; ++i) {
    auto* c = peers_[static_cast<std::size_t>(x.neighbours[i])];
    x.recv[i] = c->post_recv({reinterpret_cast<std::byte*>(&x.theirs[i]), sizeof(WireFingerprint)},
                             nullptr);
    x.send[i] = c->post_send({reinterpret_cast<const std::byte*>(&x.mine), sizeof(WireFingerprint)},
                             nullptr);
  }
}

engine::Task Communicator::Impl::exchange_fingerprints(FingerprintExchange& x, Fingerprint fp,
                                                       Deadline deadline, engine::Driver& d) {
  if (fp.kind == CollectiveKind::allreduce_list) {
    // Two lists whose digests differ: exchange the lists with those neighbours, so that the
    // error names the first differing tensor on both sides.
    std::vector<int> differ;
    for (int i = 0; i < x.n; ++i) {
      if (!x.received[i]) {
        co_await engine::received(d, peers_[static_cast<std::size_t>(x.neighbours[i])], x.recv[i]);
        x.received[i] = true;
      }
      const Fingerprint theirs = decode(x.theirs[i]);
      if (looks_like_fingerprint(x.theirs[i]) &&
          x.theirs[i].version == kCollectiveProtocolVersion &&
          theirs.kind == CollectiveKind::allreduce_list && theirs.seq == fp.seq &&
          theirs.op == fp.op && theirs != fp) {
        differ.push_back(x.neighbours[i]);
      }
    }
    // A blocking step, bounded, on the way to a mismatch error only.
    if (!differ.empty()) name_list_difference(differ, fp, deadline);
    for (int i = 0; i < x.n; ++i) check_agreement(x.neighbours[i], x.theirs[i], rank(), fp);
    for (int i = 0; i < x.n; ++i) {
      co_await engine::sent(d, peers_[static_cast<std::size_t>(x.neighbours[i])], x.send[i]);
    }
    co_return;
  }
  for (int i = 0; i < x.n; ++i) {
    if (x.received[i]) continue;
    co_await engine::received(d, peers_[static_cast<std::size_t>(x.neighbours[i])], x.recv[i]);
    x.received[i] = true;
    check_agreement(x.neighbours[i], x.theirs[i], rank(), fp);
  }
  for (int i = 0; i < x.n; ++i) {
    co_await engine::sent(d, peers_[static_cast<std::size_t>(x.neighbours[i])], x.send[i]);
  }
}

void Communicator::Impl::check_arrived_fingerprints(FingerprintExchange& x, const Fingerprint& fp) {
  for (int i = 0; i < x.n; ++i) {
    if (x.received[i]) continue;
    auto* c = peers_[static_cast<std::size_t>(x.neighbours[i])];
    try {
      if (!c->test(x.recv[i])) continue;
    } catch (const Error&) {
      continue;
    }
    x.received[i] = true;
    check_agreement(x.neighbours[i], x.theirs[i], rank(), fp);
  }
}

void Communicator::Impl::explain_with_fingerprints(FingerprintExchange& x, const Fingerprint& fp,
                                                   const Error& e) {
  // One that came whole, or the start of a longer message (every collective's first message
  // leads with its fingerprint, and the transport reads the start of a message of the wrong
  // length).
  for (int i = 0; i < x.n; ++i) {
    if (!x.received[i] && looks_like_fingerprint(x.theirs[i])) {
      check_agreement(x.neighbours[i], x.theirs[i], rank(), fp);
    }
  }
  if (e.error_code() != ErrorCode::mismatch) check_arrived_fingerprints(x, fp);
}

void Communicator::Impl::set_phase(Phase phase) noexcept {
  progress_.phase.store(phase, std::memory_order_relaxed);
  if (timeline_) [[unlikely]] {
    switch (phase) {
      case idle:
        timeline_->end();
        break;
      case local_agreement:
        timeline_->phase("local agreement");
        break;
      case fingerprint_exchange:
        timeline_->phase("fingerprint exchange");
        break;
      case algorithm:
        timeline_->phase("algorithm");
        break;
    }
  }
}

void Communicator::Impl::trace_step(const char* step) noexcept {
  if (timeline_) [[unlikely]]
    timeline_->phase(step);
}

namespace {

const char* phase_text(int phase) {
  switch (phase) {
    case 1:
      return "agreeing in the local group";
    case 2:
      return "exchanging fingerprints";
    case 3:
      return "moving data";
    default:
      return "idle";
  }
}

}  // namespace

ProgressSnapshot Communicator::Impl::progress_snapshot() const {
  ProgressSnapshot s;
  s.seq = progress_.seq.load(std::memory_order_relaxed);
  Fingerprint fp;
  fp.seq = s.seq;
  fp.kind = static_cast<CollectiveKind>(progress_.kind.load(std::memory_order_relaxed));
  fp.type = static_cast<DataType>(progress_.type.load(std::memory_order_relaxed));
  fp.op = static_cast<ReduceOp>(progress_.op.load(std::memory_order_relaxed));
  fp.root = progress_.root.load(std::memory_order_relaxed);
  fp.count = progress_.count.load(std::memory_order_relaxed);
  if (s.seq != 0) s.fingerprint = describe(fp);
  s.phase = phase_text(progress_.phase.load(std::memory_order_relaxed));
  s.step = progress_.await.step.load(std::memory_order_relaxed);
  s.peer = progress_.await.peer.load(std::memory_order_relaxed);
  s.peer_send = progress_.await.direction.load(std::memory_order_relaxed) == 1;
  s.started_ns = progress_.since_ns.load(std::memory_order_relaxed);
  s.since_ns =
      s.peer >= 0 ? progress_.await.since_ns.load(std::memory_order_relaxed) : s.started_ns;
  return s;
}

std::string Communicator::Impl::describe_progress(const Fingerprint& fp) const {
  const ProgressSnapshot s = progress_snapshot();
  const long long now = engine::steady_ns();
  std::string phase = s.phase;
  if (progress_.phase.load(std::memory_order_relaxed) == fingerprint_exchange) {
    phase = str_cat("exchanging fingerprints with ranks ", mod(rank() - 1, size()), " and ",
                    mod(rank() + 1, size()));
  }
  std::string awaited;
  if (s.peer >= 0) {
    awaited = str_cat(", waiting ", (now - s.since_ns) / 1000000, " ms for ",
                      s.peer_send ? "a send to rank " : "a receive from rank ", s.peer);
  }
  return str_cat("progress: collective #", s.seq, " ", describe(fp), ", ", phase, ", step ", s.step,
                 awaited, ", started ", (now - s.started_ns) / 1000000, " ms ago");
}

HangSnapshot Communicator::Impl::snapshot(const Fingerprint* fp, int peer) const {
  // The hang report's reading of the progress record: the step and the peer awaited come
  // from the record (a deadline's error may name the peer instead); the phase is one word,
  // which the diagnosis of ringlet-run parses.
  const ProgressSnapshot p = progress_snapshot();
  HangSnapshot s;
  s.rank = rank();
  s.size = size();
  s.seq = p.seq;
  const int phase = progress_.phase.load(std::memory_order_relaxed);
  s.active = phase != idle;
  static constexpr std::string_view kPhases[] = {"idle", "local_agreement", "fingerprint_exchange",
                                                 "algorithm"};
  s.phase = phase >= 0 && phase <= algorithm ? kPhases[phase] : "unknown";
  s.call = fp != nullptr ? describe(*fp) : p.fingerprint;
  s.step = static_cast<int>(p.step);
  s.peer = peer >= 0 ? peer : p.peer;
  s.since_ms = (engine::steady_ns() - p.started_ns) / 1000000;
  return s;
}

void Communicator::Impl::fail_and_throw(const Error& e, const Fingerprint& fp) {
  Error out = e;
  // A deadline this rank saw quotes where the collective stood, and logs the hang report
  // that ringlet-run turns into a diagnosis (the peer awaited: the error's other rank).
  if (e.error_code() == ErrorCode::timeout && e.origin_rank() < 0) {
    int peer = -1;
    for (int r : e.ranks()) {
      if (r != rank()) {
        peer = r;
        break;
      }
    }
    emit_hang_report(format_hang_report(snapshot(&fp, peer)));
    out =
        Error(ErrorCode::timeout, str_cat(e.cause(), " [", describe_progress(fp), "]"), e.ranks());
  } else if (e.error_code() == ErrorCode::timeout && e.origin_rank() >= 0 &&
             e.origin_rank() != rank()) {
    // Another rank's deadline reached this one first, while it waited for some peer itself:
    // deadlines along a chain of waits fire within milliseconds, and the first report to
    // arrive need not be the one that names the culprit. Say, and report, whom this rank
    // was waiting for.
    const int awaited = progress_.await.peer.load(std::memory_order_relaxed);
    if (awaited >= 0 && awaited != e.origin_rank()) {
      emit_hang_report(format_hang_report(snapshot(&fp, awaited)));
      out = Error(ErrorCode::timeout,
                  str_cat(e.cause(), " [rank ", rank(), "'s ", describe_progress(fp), "]"),
                  e.ranks());
      out.reported_by(e.origin_rank());
    }
  }
  if (timeline_) [[unlikely]]
    timeline_->end(out.cause());
  set_phase(idle);
  fail(out);
  throw std::move(out.in_collective(to_string(fp.kind), fp.seq));
}

void Communicator::Impl::fail_out_of_memory(const Fingerprint& fp) {
  fail_and_throw(Error(ErrorCode::transport, str_cat("rank ", rank(), ": out of memory"), {rank()}),
                 fp);
}

template <class Body>
engine::Task Communicator::Impl::run(Fingerprint fp, Body& body, Check check,
                                     engine::Driver& driver) {
  check_usable(true);
  // The deadline to the kernel's tick (coarse_now(): a few ms early on a timeout of seconds),
  // except under a timeline, whose spans start here and are shown in microseconds.
  const Deadline deadline = (timeline_ ? Clock::now() : coarse_now()) + config_.timeout;
  driver.deadline = deadline;
  driver.rank = rank();
  driver.record = &progress_.await;
  // The record takes no clock reading of its own: the start is the deadline's.
  progress_.seq.store(fp.seq, std::memory_order_relaxed);
  progress_.kind.store(static_cast<int>(fp.kind), std::memory_order_relaxed);
  progress_.type.store(static_cast<int>(fp.type), std::memory_order_relaxed);
  progress_.op.store(static_cast<int>(fp.op), std::memory_order_relaxed);
  progress_.root.store(fp.root, std::memory_order_relaxed);
  progress_.count.store(fp.count, std::memory_order_relaxed);
  progress_.await.reset();
  progress_.since_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                               (deadline - config_.timeout).time_since_epoch())
                               .count(),
                           std::memory_order_relaxed);
  if (timeline_) [[unlikely]] {
    timeline_->begin(
        to_string(fp.kind),
        str_cat("\"seq\": ", fp.seq, ", \"call\": \"", timeline::json_escape(describe(fp)), "\""),
        progress_.since_ns.load(std::memory_order_relaxed));
  }
  // The body: a task to await, or a plain call (dup()'s set-up).
  auto run_body = [&]() -> engine::Task {
    if constexpr (std::is_void_v<decltype(body(deadline, fp, driver))>) {
      body(deadline, fp, driver);
      return {};
    } else {
      return body(deadline, fp, driver);
    }
  };
  // Every exception becomes a ringlet::Error that aborts the communicator and tells the
  // peers: an Error as it is, out of memory and any other exception (a thread that could not
  // start, a bad value) as a transport failure of this rank.
  auto other = [&](const std::exception& e) {
    fail_and_throw(Error(ErrorCode::transport, str_cat("rank ", rank(), ": ", e.what()), {rank()}),
                   fp);
  };
  if (size() == 1 || check != Check::before) {
    // No exchange with the neighbours here (the body or the local group compares the
    // fingerprints): the latency path of small and one-node collectives, without its state.
    try {
      // On one node, allreduce runs in the local group and checks fingerprints there;
      // agreeing there first makes a rank in such an allreduce and a rank in another
      // collective disagree there too, so both get mismatch.
      if (size() > 1 && check != Check::none && table_.agree_locally()) {
        set_phase(local_agreement);
        co_await local_->agree(fp, driver);
      }
      set_phase(algorithm);
      co_await run_body();
      set_phase(idle);
    } catch (const Error& e) {
      fail_and_throw(e, fp);
    } catch (const std::bad_alloc&) {
      fail_out_of_memory(fp);
    } catch (const std::exception& e) {
      other(e);
    }
    co_return;
  }
  FingerprintExchange& x = fx_;
  x = FingerprintExchange{};
  try {
    if constexpr (requires { body.prepare(); }) body.prepare();
    if (table_.agree_locally()) {
      // The list's digest is compared with the neighbours, who then name the first differing
      // tensor; in shared memory only the kind and the sequence number.
      Fingerprint local = fp;
      if (fp.kind == CollectiveKind::allreduce_list) {
        local.count = 0;
        local.root = 0;
        local.type = DataType::uint8;
      }
      set_phase(local_agreement);
      co_await local_->agree(local, driver);
    }
    set_phase(fingerprint_exchange);
    post_fingerprints(x, fp);
    co_await exchange_fingerprints(x, fp, deadline, driver);
    set_phase(algorithm);
    co_await run_body();
    set_phase(idle);
  } catch (const Error& e) {
    // A neighbour's fingerprint that has arrived explains a failure better than the failure.
    try {
      explain_with_fingerprints(x, fp, e);
    } catch (const Error& m) {
      fail_and_throw(m, fp);
    }
    fail_and_throw(e, fp);
  } catch (const std::bad_alloc&) {
    fail_out_of_memory(fp);
  } catch (const std::exception& e) {
    other(e);
  }
}

template <class Body>
Communicator::Impl::WorkPtr Communicator::Impl::issue(Fingerprint fp, Body&& body, Check check,
                                                      bool async, bool small) {
  fp.seq = ++seq_;
  if (next_hook_) {
    // A collective on a CUDA stream: always queued, and the call returns once it is (NCCL's
    // semantics); the hook brackets the body on the engine (src/exec/stream.hpp).
    auto work = std::make_shared<detail::WorkState>();
    StreamBody<std::decay_t<Body>> hooked{std::move(next_hook_), std::forward<Body>(body)};
    next_hook_.reset();
    enqueue(Task{[this, fp, body = std::move(hooked), check](engine::Driver& driver) mutable {
                   return run(fp, body, check, driver);
                 },
                 work});
    return work;
  }
  // Nothing pending (only this thread adds work, so the engine stays idle): the task runs
  // to completion here, its awaits being the transport's blocking waits, as before the
  // engine existed; the latency path takes no lock.
  if (pending_.load(std::memory_order_acquire) == 0 && (!async || small)) {
    engine::Driver driver;
    driver.blocking = true;
    if (!async) {
      engine::run_blocking(run(fp, body, check, driver), driver);
      return nullptr;
    }
    try {
      engine::run_blocking(run(fp, body, check, driver), driver);
    } catch (...) {
      auto work = std::make_shared<detail::WorkState>();
      work->complete(std::current_exception());
      return work;
    }
    return nullptr;
  }
  auto work = std::make_shared<detail::WorkState>();
  enqueue(Task{[this, fp, body = std::forward<Body>(body), check](engine::Driver& driver) mutable {
                 return run(fp, body, check, driver);
               },
               work});
  if (!async) {
    Work(work).wait();
    return nullptr;
  }
  return work;
}

void Communicator::Impl::enqueue(Task task) {
  std::lock_guard lock(engine_mutex_);
  if (!engine_.joinable()) {
    try {
      engine_ = std::thread([this] { engine_main(); });
    } catch (const std::exception& e) {
      // Nothing runs yet: this thread may tell the peers.
      Error err(ErrorCode::transport,
                str_cat("rank ", rank(), ": cannot start the progress engine thread: ", e.what()),
                {rank()});
      fail(err);
      throw err;
    }
  }
  pending_.fetch_add(1, std::memory_order_acq_rel);
  queue_.push_back(std::move(task));
  engine_cv_.notify_one();
}

void Communicator::Impl::engine_main() noexcept {
  log::set_thread_rank(rank());
  on_helper_thread();
  std::unique_lock lock(engine_mutex_);
  for (;;) {
    // Idle: asleep on the condition variable, no polling.
    engine_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;
    Task task = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    std::exception_ptr error;
    try {
      // Step by step: between steps the engine sleeps on the transport's descriptors, and
      // the task sees abort() (the transport's interrupt) and its deadline.
      engine::Driver driver;
      driver.blocking = false;
      engine::Task t = task.start(driver);
      while (!engine::advance(t, driver)) sleep_until_progress(driver);
    } catch (...) {
      error = std::current_exception();
    }
    task.start = nullptr;
    lock.lock();
    pending_.fetch_sub(1, std::memory_order_acq_rel);
    drained_cv_.notify_all();
    lock.unlock();
    // The callbacks run without the lock: they may issue or wait on other communicators.
    task.work->complete(error);
    task.work.reset();
    lock.lock();
  }
}

void Communicator::Impl::sleep_until_progress(const engine::Driver& driver) noexcept {
  if (driver.pollable != nullptr) {
    // A wait on a word another process or thread advances (shared memory, the hierarchical
    // pipeline's helper): a short spin, then a futex wait on it of at most kPollSleep, woken
    // by the peer's publish, abort() (the local group's interrupt) and failure reports; the
    // engine then polls again (abort flag, deadline, liveness). Every kPollSleep it also lets
    // the transport move what is ready, for network requests the task has posted, unless
    // another thread drives the transport now.
    driver.pollable->sleep(kPollSleep);
    if (transport_ && !driver.transport_busy) {
      const auto now = Clock::now();
      if (now - last_transport_poll_ >= kPollSleep) {
        last_transport_poll_ = now;
        transport_->wait_any(std::chrono::milliseconds(0));
      }
    }
    return;
  }
  if (!transport_) {
    std::this_thread::yield();
    return;
  }
  // Until a descriptor is ready, interrupt() (abort), or the task's deadline (the longest
  // poll bounds it; the engine then checks the deadline and polls again).
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(driver.deadline - Clock::now());
  transport_->wait_any(std::max(left, std::chrono::milliseconds(0)));
}

void Communicator::Impl::stop_engine() noexcept {
  std::unique_lock lock(engine_mutex_);
  if (!engine_.joinable()) return;
  auto drained = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!drained_cv_.wait_until(lock, Clock::now() + config_.timeout, drained)) {
    lock.unlock();
    RINGLET_LOG(warn, "rank ", rank(), ": communicator destroyed with ", pending_.load(),
                " collectives still pending after the deadline: aborting them");
    abort();
    lock.lock();
    // Aborted, each pending collective fails at once.
    drained_cv_.wait(lock, drained);
  }
  stopping_ = true;
  engine_cv_.notify_all();
  lock.unlock();
  engine_.join();
}

HelperThread* Communicator::Impl::helper() noexcept {
  try {
    if (!helper_) helper_ = std::make_unique<HelperThread>([this] { on_helper_thread(); });
  } catch (...) {
    return nullptr;
  }
  return helper_.get();
}

engine::Task Communicator::Impl::recursive_doubling(algo::Context& ctx, std::byte* buf,
                                                    std::size_t count, DataType type, ReduceOp op,
                                                    Fingerprint fp) {
  const std::size_t message = sizeof(WireFingerprint) + count * size_of(type);
  if (small_scratch_.size() < 2 * message) {
    // Only when RINGLET_ALGO forces recursive doubling past the crossover.
    small_scratch_mr_.reset();
    small_scratch_.resize(2 * message);
    small_scratch_mr_ = transport_->register_memory(small_scratch_, MemoryKind::host);
    ctx.small_scratch = small_scratch_;
    ctx.small_scratch_mr = small_scratch_mr_.get();
  }
  const WireFingerprint mine = encode(fp);
  algo::MessagePrefix prefix;
  prefix.mine = {reinterpret_cast<const std::byte*>(&mine), sizeof(mine)};
  prefix.check = [&](int peer, std::span<const std::byte> theirs) {
    WireFingerprint h;
    std::memcpy(&h, theirs.data(), sizeof(h));
    check_agreement(peer, h, rank(), fp);
  };
  try {
    co_await algo::recursive_doubling_allreduce(ctx, buf, count, type, op, &prefix);
  } catch (const Error& e) {
    // A message of another length: the peer disagrees. Its fingerprint leads its message, and
    // has usually been read into the receive staging area: name both calls if it is there.
    if (e.error_code() != ErrorCode::mismatch) throw;
    for (int peer : e.ranks()) {
      if (peer == rank()) continue;
      WireFingerprint h;
      std::memcpy(&h, small_scratch_.data() + message, sizeof(h));
      if (looks_like_fingerprint(h)) check_agreement(peer, h, rank(), fp);
    }
    throw;
  }
}

algo::Context Communicator::Impl::context(Deadline deadline, MemoryKind memory,
                                          const Fingerprint* fp, const algo::Plan* plan,
                                          engine::Driver* driver) {
  algo::Context ctx;
  ctx.rank = rank();
  ctx.size = size();
  ctx.peers = peers_;
  if (size() > 1) {
    ctx.left = peers_[static_cast<std::size_t>(mod(rank() - 1, size()))];
    ctx.right = peers_[static_cast<std::size_t>(mod(rank() + 1, size()))];
  }
  ctx.ring_scratch = ring_scratch_;
  ctx.ring_scratch_mr = ring_scratch_mr_.get();
  ctx.slice_bytes = slice_bytes_;
  ctx.slots = config_.ring_slots;
  ctx.max_outstanding = traits_.max_outstanding;
  ctx.small_scratch = small_scratch_;
  ctx.small_scratch_mr = small_scratch_mr_.get();
  ctx.exec = &exec::executor_for(memory);
  ctx.local = local_.get();
  ctx.fp = fp;
  if (plan != nullptr) ctx.post_scale = plan->post_scale;
  ctx.runtime = this;
  ctx.deadline = deadline;
  ctx.driver = driver;
  return ctx;
}

engine::Task Communicator::Impl::execute_allreduce(algo::Plan plan, const std::byte* src,
                                                   std::byte* dst, std::size_t count, DataType type,
                                                   Fingerprint fp, Deadline deadline,
                                                   engine::Driver& driver) {
  const std::size_t bytes = count * size_of(type);
  if (plan.algorithm == algo::Algorithm::local && size() > 1) {
    co_await algo::local_allreduce(*local_, exec::executor_for(plan.memory), fp, plan.post_scale,
                                   src, dst, count, type, plan.op, driver);
    co_return;
  }
  algo::Context ctx = context(deadline, plan.memory, &fp, &plan, &driver);
  if (size() == 1) {
    ctx.exec->copy(dst, src, bytes);
    co_return;
  }
  switch (plan.algorithm) {
    case algo::Algorithm::local:  // served above
      break;
    case algo::Algorithm::recursive_doubling:
      ctx.exec->copy(dst, src, bytes);
      co_await recursive_doubling(ctx, dst, count, type, plan.op, fp);
      co_return;
    case algo::Algorithm::hierarchical: {
      // The local group's stages are awaits of this task, the rings run on the helper.
      ctx.exec->copy(dst, src, bytes);
      algo::HierContext h;
      h.ring = ctx;
      h.ring.rank = layout_.node_index;
      h.ring.size = layout_.node_count();
      h.ring.left = peers_[static_cast<std::size_t>(layout_.node_ring_peer(-1))];
      h.ring.right = peers_[static_cast<std::size_t>(layout_.node_ring_peer(+1))];
      h.local_rank = layout_.node_position;
      h.local_size = static_cast<int>(layout_.my_node().size());
      h.pipeline_bytes = config_.hier_pipeline_bytes;
      co_await algo::hierarchical_allreduce(h, dst, count, type, plan.op);
      co_return;
    }
    case algo::Algorithm::ring:
      co_await algo::ring_allreduce(ctx, src, dst, count, type, plan.op);
      co_return;
    case algo::Algorithm::rabenseifner:
      co_await algo::rabenseifner_allreduce(ctx, src, dst, count, type, plan.op);
      co_return;
  }
}

Communicator::Impl::WorkPtr Communicator::Impl::allreduce(Tensor in, Tensor out, ReduceOp op,
                                                          bool async) {
  check_usable(pending_.load(std::memory_order_acquire) == 0);
  check_tensor(in, "allreduce");
  check_tensor(out, "allreduce");
  if (in.count != out.count || in.type != out.type) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("allreduce: rank ", rank(), " passed input of ", in.count, " ",
                        to_string(in.type), " and output of ", out.count, " ", to_string(out.type)),
                {rank()});
  }
  check_op(in.type, op, "allreduce");
  const std::size_t bytes = in.bytes();
  if (in.data != out.data && overlaps(in.data, bytes, out.data, bytes)) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat("allreduce: rank ", rank(), " passed input and output buffers that partly overlap"),
        {rank()});
  }
  Fingerprint fp;
  fp.kind = CollectiveKind::allreduce;
  fp.type = in.type;
  fp.op = op;
  fp.count = in.count;
  const algo::Plan plan = algo::select(table_, {fp.kind, bytes, op, in.memory}, size());
  const Check check = plan.algorithm == algo::Algorithm::local                ? Check::none
                      : plan.algorithm == algo::Algorithm::recursive_doubling ? Check::in_body
                                                                              : Check::before;
  auto* src = static_cast<const std::byte*>(in.data);
  auto* dst = static_cast<std::byte*>(out.data);
  const std::size_t count = in.count;
  const DataType type = in.type;
  return issue(
      fp,
      [this, plan, src, dst, count, type](Deadline deadline, const Fingerprint& f,
                                          engine::Driver& d) -> engine::Task {
        if (plan.algorithm == algo::Algorithm::local && size() > 1) {
          // The local group's task, returned from here rather than awaited from
          // execute_allreduce: one frame less on the shared-memory latency path.
          (void)deadline;  // the driver's
          return algo::local_allreduce(*local_, exec::executor_for(plan.memory), f, plan.post_scale,
                                       src, dst, count, type, plan.op, d);
        }
        return execute_allreduce(plan, src, dst, count, type, f, deadline, d);
      },
      check, async, bytes <= config_.crossover_bytes);
}

namespace {

// FNV-1a over the list's length and (count, type) pairs, folded to the fingerprint's 32 bits.
std::uint32_t list_digest(std::span<const Tensor> tensors) {
  std::uint64_t h = fnv1a64(tensors.size(), kFnv1a64Basis);
  for (const Tensor& t : tensors) {
    h = fnv1a64(t.count, h);
    h = fnv1a64(static_cast<std::uint64_t>(t.type), h);
  }
  return static_cast<std::uint32_t>(h ^ (h >> 32));
}

}  // namespace

Communicator::Impl::WorkPtr Communicator::Impl::allreduce_list(std::span<const Tensor> tensors,
                                                               ReduceOp op, bool async) {
  check_usable(pending_.load(std::memory_order_acquire) == 0);
  std::uint64_t total = 0;
  std::size_t total_bytes = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    const std::string what = str_cat("allreduce (tensor #", i, " of the list)");
    check_tensor(t, what.c_str());
    check_op(t.type, op, what.c_str());
    total += t.count;
    total_bytes += t.bytes();
  }
  Fingerprint fp;
  fp.kind = CollectiveKind::allreduce_list;
  fp.type = tensors.empty() ? DataType::uint8 : tensors.front().type;
  fp.op = op;
  fp.count = total;
  fp.root = static_cast<std::int32_t>(list_digest(tensors));
  // The list is copied at the call.
  auto list = std::make_shared<std::vector<Tensor>>(tensors.begin(), tensors.end());
  // run() calls prepare() before the fingerprint exchange: the (count, type) pairs that are
  // compared with a neighbour's when the digests differ.
  struct ListBody {
    Impl* self;
    std::shared_ptr<std::vector<Tensor>> list;
    ReduceOp op;
    void prepare() {
      self->list_mine_.clear();
      for (const Tensor& t : *list) {
        self->list_mine_.push_back({t.count, static_cast<std::uint64_t>(t.type)});
      }
    }
    engine::Task operator()(Deadline deadline, const Fingerprint& f, engine::Driver& d) {
      return self->reduce_list(*list, op, f, deadline, d);
    }
  };
  return issue(fp, ListBody{this, std::move(list), op}, Check::before, async,
               total_bytes <= config_.crossover_bytes);
}

engine::Task Communicator::Impl::reduce_list(const std::vector<Tensor>& tensors, ReduceOp op,
                                             Fingerprint fp, Deadline deadline,
                                             engine::Driver& driver) {
  const exec::Executor& exec = exec::host_executor();
  // The buffer was allocated and touched at set-up (its size is the cap); one rank reduces
  // nothing.
  if (size() == 1) co_return;
  const std::size_t cap = fusion_.size();
  // The pieces first: a tensor alone (or larger than the buffer) is reduced where it lies,
  // the others of a type are packed into buffers of at most `cap` bytes. By type, in the
  // order the types first appear; within a type, in list order.
  struct Piece {
    DataType type;
    std::vector<const Tensor*> tensors;
    std::size_t bytes = 0;
  };
  std::vector<Piece> pieces;
  std::vector<DataType> types;
  for (const Tensor& t : tensors) {
    if (std::find(types.begin(), types.end(), t.type) == types.end()) types.push_back(t.type);
  }
  for (DataType type : types) {
    Piece open{type, {}, 0};
    auto flush = [&] {
      if (!open.tensors.empty()) pieces.push_back(std::move(open));
      open = Piece{type, {}, 0};
    };
    for (const Tensor& t : tensors) {
      if (t.type != type || t.count == 0) continue;
      const std::size_t b = t.bytes();
      if (b > cap) {
        flush();
        pieces.push_back(Piece{type, {&t}, b});
        continue;
      }
      if (open.bytes + b > cap) flush();
      open.tensors.push_back(&t);
      open.bytes += b;
    }
    flush();
  }
  // One collective per piece, in place, as allreduce would plan it. The list's fingerprint
  // has been agreed on; each piece carries its own where the algorithm checks one (recursive
  // doubling, the local group), the same on every rank.
  for (const Piece& p : pieces) {
    Fingerprint piece;
    piece.seq = fp.seq;
    piece.kind = CollectiveKind::allreduce;
    piece.type = p.type;
    piece.op = op;
    piece.count = p.bytes / size_of(p.type);
    const algo::Plan plan =
        algo::select(table_, {CollectiveKind::allreduce, p.bytes, op, MemoryKind::host}, size());
    if (p.tensors.size() == 1) {
      // Alone in its buffer: reduced where it lies, no copy.
      auto* data = static_cast<std::byte*>(p.tensors[0]->data);
      co_await execute_allreduce(plan, data, data, piece.count, p.type, piece, deadline, driver);
      continue;
    }
    const long long pack_ns = timeline_ ? timeline::now_ns() : 0;
    std::size_t off = 0;
    for (const Tensor* t : p.tensors) {
      exec.copy(fusion_.data() + off, t->data, t->bytes());
      off += t->bytes();
    }
    if (timeline_) [[unlikely]] {
      timeline_->span("fusion pack", "fusion", pack_ns, timeline::now_ns(),
                      str_cat("\"tensors\": ", p.tensors.size(), ", \"bytes\": ", p.bytes));
    }
    co_await execute_allreduce(plan, fusion_.data(), fusion_.data(), piece.count, p.type, piece,
                               deadline, driver);
    const long long unpack_ns = timeline_ ? timeline::now_ns() : 0;
    off = 0;
    for (const Tensor* t : p.tensors) {
      exec.copy(t->data, fusion_.data() + off, t->bytes());
      off += t->bytes();
    }
    if (timeline_) [[unlikely]] {
      timeline_->span("fusion unpack", "fusion", unpack_ns, timeline::now_ns(),
                      str_cat("\"tensors\": ", p.tensors.size(), ", \"bytes\": ", p.bytes));
    }
  }
}

void Communicator::Impl::name_list_difference(const std::vector<int>& peers, const Fingerprint& fp,
                                              Deadline deadline) {
  // Both sides of a pair whose digests differ come here, so the exchange is symmetric; it is
  // bounded, and any failure leaves the plain fingerprint mismatch to be reported.
  const Deadline d = std::min(deadline, Clock::now() + std::chrono::seconds(10));
  constexpr std::uint64_t kMaxList = std::uint64_t{1} << 24;
  try {
    list_lengths_.assign(1 + peers.size(), 0);
    list_lengths_[0] = list_mine_.size();
    list_theirs_.assign(peers.size(), {});
    std::vector<std::pair<transport::Connection*, transport::Request>> sends;
    std::vector<transport::Request> recvs;
    for (std::size_t k = 0; k < peers.size(); ++k) {
      auto* c = peers_[static_cast<std::size_t>(peers[k])];
      recvs.push_back(
          c->post_recv({reinterpret_cast<std::byte*>(&list_lengths_[1 + k]), 8}, nullptr));
      sends.emplace_back(
          c, c->post_send({reinterpret_cast<const std::byte*>(&list_lengths_[0]), 8}, nullptr));
      if (!list_mine_.empty()) {
        sends.emplace_back(c, c->post_send({reinterpret_cast<const std::byte*>(list_mine_.data()),
                                            list_mine_.size() * sizeof(ListEntry)},
                                           nullptr));
      }
    }
    for (std::size_t k = 0; k < peers.size(); ++k) {
      auto* c = peers_[static_cast<std::size_t>(peers[k])];
      c->wait(recvs[k], d);
      const std::uint64_t n = list_lengths_[1 + k];
      if (n > kMaxList) return;
      list_theirs_[k].resize(n);
      if (n > 0) {
        auto r = c->post_recv(
            {reinterpret_cast<std::byte*>(list_theirs_[k].data()), n * sizeof(ListEntry)}, nullptr);
        c->wait(r, d);
      }
    }
    for (auto& [c, r] : sends) c->wait(r, d);
  } catch (const Error&) {
    return;
  }
  const int peer = peers[0];
  const auto& theirs = list_theirs_[0];
  const auto& mine = list_mine_;
  auto pair = [](const ListEntry& e) {
    return str_cat("(count=", e.count, ", ", to_string(static_cast<DataType>(e.type)), ")");
  };
  std::size_t i = 0;
  while (i < mine.size() && i < theirs.size() && mine[i].count == theirs[i].count &&
         mine[i].type == theirs[i].type) {
    ++i;
  }
  std::string what;
  if (i < mine.size() && i < theirs.size()) {
    what = str_cat("tensor #", i, " differs: rank ", peer, " passed ", pair(theirs[i]),
                   " while rank ", rank(), " passed ", pair(mine[i]));
  } else {
    what = str_cat("the lists differ in length: rank ", peer, " passed ", theirs.size(),
                   " tensors while rank ", rank(), " passed ", mine.size(), " (tensor #", i,
                   " is the first one missing)");
  }
  throw Error(ErrorCode::mismatch,
              str_cat("allreduce of a tensor list (collective #", fp.seq, "): ", what),
              {peer, rank()});
}

Communicator::Impl::WorkPtr Communicator::Impl::broadcast(Tensor in, Tensor out, int root,
                                                          bool async) {
  check_usable(pending_.load(std::memory_order_acquire) == 0);
  if (root < 0 || root >= size()) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat("broadcast: rank ", rank(), " passed root ", root, " outside [0, ", size(), ")"),
        {rank()});
  }
  check_tensor(out, "broadcast");
  if (rank() == root) {
    check_tensor(in, "broadcast");
    if (in.count != out.count || in.type != out.type) {
      throw Error(
          ErrorCode::invalid_argument,
          str_cat("broadcast: root ", rank(), " passed input of ", in.count, " ",
                  to_string(in.type), " and output of ", out.count, " ", to_string(out.type)),
          {rank()});
    }
  }
  Fingerprint fp;
  fp.kind = CollectiveKind::broadcast;
  fp.type = out.type;
  fp.root = root;
  fp.count = out.count;
  return issue(
      fp,
      [this, in, out, root](Deadline deadline, const Fingerprint& f,
                            engine::Driver& d) -> engine::Task {
        algo::Context ctx = context(deadline, out.memory, &f, nullptr, &d);
        auto* dst = static_cast<std::byte*>(out.data);
        if (rank() == root) ctx.exec->copy(dst, in.data, out.bytes());
        co_await algo::ring_broadcast(ctx, dst, out.bytes(), root);
      },
      Check::before, async, out.bytes() <= config_.crossover_bytes);
}

Communicator::Impl::WorkPtr Communicator::Impl::allgather(Tensor in, Tensor out, bool async) {
  check_usable(pending_.load(std::memory_order_acquire) == 0);
  check_tensor(in, "allgather");
  check_tensor(out, "allgather");
  if (in.type != out.type ||
      in.count > std::numeric_limits<std::size_t>::max() / static_cast<std::size_t>(size()) /
                     size_of(in.type) ||
      out.count != in.count * static_cast<std::size_t>(size())) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat("allgather: rank ", rank(), " passed input of ", in.count, " ", to_string(in.type),
                " and output of ", out.count, " ", to_string(out.type), "; the output needs ",
                size(), " x ", in.count, " elements of the input's type"),
        {rank()});
  }
  const std::size_t block = in.bytes();
  auto* own = static_cast<std::byte*>(out.data) + static_cast<std::size_t>(rank()) * block;
  if (in.data != own && overlaps(in.data, block, out.data, out.bytes())) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("allgather: rank ", rank(),
                        " passed an input that overlaps the output but is not its own block"),
                {rank()});
  }
  Fingerprint fp;
  fp.kind = CollectiveKind::allgather;
  fp.type = in.type;
  fp.count = in.count;
  return issue(
      fp,
      [this, in, out, own, block](Deadline deadline, const Fingerprint& f,
                                  engine::Driver& d) -> engine::Task {
        algo::Context ctx = context(deadline, out.memory, &f, nullptr, &d);
        ctx.exec->copy(own, in.data, block);
        algo::ChunkLayout layout{out.count, size()};
        co_await algo::ring_allgather(ctx, static_cast<std::byte*>(out.data), layout, in.type,
                                      rank());
      },
      Check::before, async, out.bytes() <= config_.crossover_bytes);
}

Communicator::Impl::WorkPtr Communicator::Impl::reduce_scatter(Tensor in, Tensor out, ReduceOp op,
                                                               bool async) {
  check_usable(pending_.load(std::memory_order_acquire) == 0);
  check_tensor(in, "reduce_scatter");
  check_tensor(out, "reduce_scatter");
  if (in.type != out.type ||
      out.count > std::numeric_limits<std::size_t>::max() / static_cast<std::size_t>(size()) /
                      size_of(in.type) ||
      in.count != out.count * static_cast<std::size_t>(size())) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat("reduce_scatter: rank ", rank(), " passed input of ", in.count, " ",
                to_string(in.type), " and output of ", out.count, " ", to_string(out.type),
                "; the input needs ", size(), " x ", out.count, " elements of the output's type"),
        {rank()});
  }
  check_op(in.type, op, "reduce_scatter");
  const std::size_t block = out.bytes();
  auto* src = static_cast<std::byte*>(in.data);
  std::byte* own = src + static_cast<std::size_t>(rank()) * block;
  const bool in_place = out.data == own;
  if (!in_place && overlaps(in.data, in.bytes(), out.data, block)) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("reduce_scatter: rank ", rank(),
                        " passed an output that overlaps the input but is not its own block"),
                {rank()});
  }
  Fingerprint fp;
  fp.kind = CollectiveKind::reduce_scatter;
  fp.type = in.type;
  fp.op = op;
  fp.count = out.count;
  const algo::Plan plan = algo::select(table_, {fp.kind, in.bytes(), op, in.memory}, size());
  return issue(
      fp,
      [this, in, out, src, in_place, block, plan](Deadline deadline, const Fingerprint& f,
                                                  engine::Driver& d) -> engine::Task {
        // In place, the input itself accumulates; out of place, a staging copy kept by the
        // communicator does, so that the input is never written.
        std::byte* acc = src;
        if (!in_place) {
          if (staging_.size() < in.bytes()) staging_.resize(in.bytes());
          acc = staging_.data();
        }
        algo::Context ctx = context(deadline, in.memory, &f, &plan, &d);
        algo::ChunkLayout layout{in.count, size()};
        co_await algo::ring_reduce_scatter(ctx, src, acc, layout, in.type, plan.op, -1);
        std::byte* mine = acc + static_cast<std::size_t>(rank()) * block;
        ctx.post_scale(*ctx.exec, mine, out.count, in.type);
        if (!in_place) ctx.exec->copy(out.data, mine, block);
      },
      Check::before, async, in.bytes() <= config_.crossover_bytes);
}

Communicator::Impl::WorkPtr Communicator::Impl::barrier(bool async) {
  check_usable(pending_.load(std::memory_order_acquire) == 0);
  Fingerprint fp;
  fp.kind = CollectiveKind::barrier;
  fp.type = DataType::uint8;
  fp.op = ReduceOp::max;
  if (size() > 1 && table_.barrier() == algo::Algorithm::local) {
    return issue(
        fp,
        [this](Deadline, const Fingerprint& f, engine::Driver& d) -> engine::Task {
          co_await local_->barrier(f, d);
        },
        Check::none, async, true);
  }
  return issue(
      fp,
      [this](Deadline deadline, const Fingerprint& f, engine::Driver& d) -> engine::Task {
        if (size() == 1) co_return;
        std::byte token{0};
        algo::Context ctx = context(deadline, MemoryKind::host, &f, nullptr, &d);
        co_await recursive_doubling(ctx, &token, 1, DataType::uint8, ReduceOp::max, f);
      },
      Check::in_body, async, true);
}

std::unique_ptr<Communicator::Impl> Communicator::Impl::dup() {
  check_usable(pending_.load(std::memory_order_acquire) == 0);
  Fingerprint fp;
  fp.kind = CollectiveKind::dup;
  fp.type = DataType::uint8;
  std::unique_ptr<Impl> child;
  const std::string child_prefix = str_cat(prefix_, ".", ++dups_);
  // Blocking; behind the pending collectives when there are any (the child is then built on
  // the engine thread).
  auto* slot = &child;
  issue(
      fp,
      [this, slot, child_prefix](Deadline, const Fingerprint&, engine::Driver&) {
        Identity id{rank(), size(), layout_.local_rank, layout_.local_size, node_id_};
        // The parent's abort() interrupts the child's set-up through abort_source_.
        *slot = std::make_unique<Impl>(id, config_, base_store_, child_prefix,
                                       abort_source_.get_token());
      },
      Check::before, false, false);
  return child;
}

void Communicator::Impl::abort() noexcept {
  aborted_.store(true, std::memory_order_release);
  abort_source_.request_stop();
  store_stop_.request_stop();
  if (transport_) transport_->interrupt();
  if (local_) local_->interrupt();
}

void Communicator::Impl::on_helper_thread() noexcept {
  // The network thread runs on the NUMA node of this rank's NIC (or GPU), where known.
  if (numa_node_ < 0) return;
  try {
    if (const topo::Topology* machine = topo::machine_topology()) {
      topo::pin_current_thread_to_numa(*machine, numa_node_);
    }
  } catch (...) {
  }
}

void Communicator::Impl::check_usable(bool exclusive) {
  if (!aborted_.load(std::memory_order_acquire)) return;
  bool propagate = false;
  {
    std::lock_guard lock(fail_mutex_);
    propagate = exclusive && !propagated_;
  }
  if (propagate) {
    // abort() came from another thread between calls: tell the peers now (only the thread
    // that runs collectives uses the transport; the engine does it for queued ones).
    // The peers read "rank R: aborted its communicator" (the origin rank leads).
    Error e(ErrorCode::aborted, "aborted its communicator", {rank()});
    fail(e.reported_by(rank()));
    std::lock_guard lock(fail_mutex_);
    abort_reason_.clear();  // this rank's own abort(): the message below says so
  }
  std::string reason;
  {
    std::lock_guard lock(fail_mutex_);
    reason = abort_reason_;
  }
  throw Error(ErrorCode::aborted,
              str_cat("rank ", rank(), ": the communicator was aborted",
                      reason.empty() ? std::string(" by abort()") : ": " + reason),
              {rank()});
}

void Communicator::Impl::check_tensor(const Tensor& t, const char* what) const {
  if (t.memory != MemoryKind::host) {
    throw Error(ErrorCode::invalid_argument,
                str_cat(what, ": rank ", rank(),
                        " passed CUDA memory; this build reduces host memory only"),
                {rank()});
  }
  if (t.count > 0 && t.data == nullptr) {
    throw Error(ErrorCode::invalid_argument,
                str_cat(what, ": rank ", rank(), " passed a null pointer with count ", t.count),
                {rank()});
  }
  if (size_of(t.type) == 0) {
    throw Error(ErrorCode::invalid_argument,
                str_cat(what, ": rank ", rank(), " passed an unknown data type"), {rank()});
  }
  // Before any arithmetic on the count: its size in bytes must be representable.
  if (t.count > std::numeric_limits<std::size_t>::max() / size_of(t.type)) {
    throw Error(ErrorCode::invalid_argument,
                str_cat(what, ": rank ", rank(), " passed a count of ", t.count, " ",
                        to_string(t.type), " elements, more bytes than memory can hold"),
                {rank()});
  }
}

void Communicator::Impl::check_op(DataType type, ReduceOp op, const char* what) const {
  if (op == ReduceOp::avg && !is_floating(type)) {
    throw Error(ErrorCode::invalid_argument,
                str_cat(what, ": avg is not defined for ", to_string(type),
                        " (integer types); use sum and divide"),
                {rank()});
  }
}

void Communicator::Impl::fail(const Error& e) noexcept {
  aborted_.store(true, std::memory_order_release);
  try {
    {
      std::lock_guard lock(fail_mutex_);
      if (propagated_) return;
      propagated_ = true;
      abort_reason_ = reason_of(e);
    }
    ErrorCode code = e.error_code();
    // An abort is seen by the peers as a lost peer.
    if (code == ErrorCode::aborted) code = ErrorCode::peer_lost;
    const int origin = e.origin_rank() >= 0 ? e.origin_rank() : rank();
    // The rank that was lost (the first other rank a peer_lost error names, which a relayed
    // report lists first) is the one the peers and the local ranks hear about, rather than
    // this rank or the one that relayed it.
    int lost = -1;
    if (code == ErrorCode::peer_lost) {
      for (int r : e.ranks()) {
        if (r != rank() && r != origin) {
          lost = r;
          break;
        }
      }
    }
    if (transport_) transport_->control().report_failure_about(code, origin, lost, e.cause());
    if (local_ && lost >= 0) {
      local_->mark_lost(code, lost);
    } else if (local_) {
      local_->mark_failed(code);
    }
  } catch (...) {
  }
}

// --- Communicator ------------------------------------------------------------------------

// Makes a Communicator from an Impl, for the factory functions outside the class.
struct CommunicatorAccess {
  static Communicator make(std::unique_ptr<Communicator::Impl> impl) {
    return Communicator(std::move(impl));
  }
  static Communicator::Impl& impl(Communicator& comm) { return *comm.impl_; }
  static const Communicator::Impl& impl(const Communicator& comm) { return *comm.impl_; }
};

ProgressSnapshot progress_snapshot(const Communicator& comm) {
  return CommunicatorAccess::impl(comm).progress_snapshot();
}

Communicator::Communicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Communicator::Communicator(Communicator&&) noexcept = default;
Communicator& Communicator::operator=(Communicator&&) noexcept = default;
Communicator::~Communicator() = default;

namespace {

// The store keys of a job's first communicator carry the job's identity, so that ranks of
// two jobs that reach one store never read each other's keys (the store's hello refuses
// another job's ranks first; the prefix keeps even a forced meeting apart).
std::string key_prefix_of(const bootstrap::LaunchInfo& info) {
  return str_cat("c@", info.job_identity, "/", info.size);
}

Communicator::Impl::Identity identity_of(int rank, int size, int local_rank, int local_size,
                                         const std::string& node_id) {
  return Communicator::Impl::Identity{rank, size, local_rank, local_size, node_id};
}

}  // namespace

Communicator Communicator::create(const Options& options) {
  // Rank 0 serves one store connection per rank during set-up, and every rank holds
  // sockets per peer: the usual soft limit of 1024 would cap the job's size.
  net::raise_descriptor_limit();
  bootstrap::Launch launch = bootstrap::start_launch(options, bootstrap::process_env());
  const bootstrap::LaunchInfo& info = launch.info;
  log::set_thread_rank(info.rank);
  const Config config = resolve_config(options, info.size, process_env_lookup());
  std::shared_ptr<bootstrap::Store> store =
      bootstrap::connect_store(launch, Clock::now() + config.timeout, config.secret, options.stop);
  RINGLET_LOG(info, "rank ", info.rank, " of ", info.size, " from ", info.source,
              " environment, wire-up ", bootstrap::wireup_name(info.wireup), ", rendezvous at ",
              launch.rendezvous, ", job ", info.job_identity, " (from ", info.job_identity_source,
              ")");
  return Communicator(std::make_unique<Impl>(
      identity_of(info.rank, info.size, info.local_rank, info.local_size, info.node_id), config,
      std::move(store), key_prefix_of(info), options.stop));
}

int Communicator::rank() const noexcept { return impl_->rank(); }
int Communicator::size() const noexcept { return impl_->size(); }
int Communicator::local_rank() const noexcept { return impl_->local_rank(); }
int Communicator::local_size() const noexcept { return impl_->local_size(); }
int Communicator::node_count() const noexcept { return impl_->node_count(); }

Communicator Communicator::dup() { return Communicator(impl_->dup()); }

// The forms without a stream: the CudaStream forms (src/communicator_stream.cpp) with the
// legacy default stream, which CUDA tensors then use; host tensors run here as before.
void Communicator::allreduce(Tensor inout, ReduceOp op) { allreduce(inout, op, CudaStream{}); }
void Communicator::allreduce(Tensor in, Tensor out, ReduceOp op) {
  allreduce(in, out, op, CudaStream{});
}
void Communicator::allreduce(std::span<const Tensor> tensors, ReduceOp op) {
  allreduce(tensors, op, CudaStream{});
}
void Communicator::broadcast(Tensor inout, int root) { broadcast(inout, root, CudaStream{}); }
void Communicator::broadcast(Tensor in, Tensor out, int root) {
  broadcast(in, out, root, CudaStream{});
}
void Communicator::allgather(Tensor in, Tensor out) { allgather(in, out, CudaStream{}); }
void Communicator::reduce_scatter(Tensor in, Tensor out, ReduceOp op) {
  reduce_scatter(in, out, op, CudaStream{});
}
void Communicator::barrier() { impl_->barrier(false); }
Work Communicator::allreduce_async(Tensor inout, ReduceOp op) {
  return allreduce_async(inout, op, CudaStream{});
}
Work Communicator::allreduce_async(Tensor in, Tensor out, ReduceOp op) {
  return allreduce_async(in, out, op, CudaStream{});
}
Work Communicator::allreduce_async(std::span<const Tensor> tensors, ReduceOp op) {
  return allreduce_async(tensors, op, CudaStream{});
}
Work Communicator::broadcast_async(Tensor inout, int root) {
  return broadcast_async(inout, root, CudaStream{});
}
Work Communicator::broadcast_async(Tensor in, Tensor out, int root) {
  return broadcast_async(in, out, root, CudaStream{});
}
Work Communicator::allgather_async(Tensor in, Tensor out) {
  return allgather_async(in, out, CudaStream{});
}
Work Communicator::reduce_scatter_async(Tensor in, Tensor out, ReduceOp op) {
  return reduce_scatter_async(in, out, op, CudaStream{});
}
Work Communicator::barrier_async() { return Work(impl_->barrier(true)); }
void Communicator::abort() noexcept { impl_->abort(); }

namespace detail {

std::size_t bucket_bytes_of(Communicator& comm) {
  const Config& c = CommunicatorAccess::impl(comm).config();
  return c.bucket_bytes != 0 ? c.bucket_bytes : c.fusion_bytes;
}

timeline::Lane* timeline_of(Communicator& comm) {
  return CommunicatorAccess::impl(comm).timeline();
}

Communicator create_with_store(const Options& options, std::shared_ptr<bootstrap::Store> store) {
  RINGLET_CHECK(options.rank >= 0 && options.size >= 1,
                "create_with_store needs Options::rank and Options::size");
  const Config config = resolve_config(options, options.size, process_env_lookup());
  return CommunicatorAccess::make(std::make_unique<Communicator::Impl>(
      identity_of(options.rank, options.size, options.local_rank, options.local_size,
                  options.node_id),
      config, std::move(store), "c", options.stop));
}

}  // namespace detail
}  // namespace ringlet
