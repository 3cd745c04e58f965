// SPDX-License-Identifier: Apache-2.0
// Communicator and Communicator::Impl: rendezvous, validation, fingerprints, dispatch of each
// collective to its plan, and error propagation.
#include "src/communicator.hpp"

#include <algorithm>
#include <cstring>
#include <random>

#include "src/algo/hierarchical.hpp"
#include "src/algo/local.hpp"
#include "src/algo/recursive_doubling.hpp"
#include "src/algo/ring.hpp"
#include "src/bootstrap/launch_env.hpp"
#include "src/common/check.hpp"
#include "src/common/log.hpp"
#include "src/communicator_impl.hpp"
#include "src/reduce/reduce.hpp"
#include "src/topo/topology.hpp"
#include "transports/factory.hpp"

namespace ringlet {
namespace {

bool overlaps(const void* a, std::size_t an, const void* b, std::size_t bn) {
  auto pa = reinterpret_cast<std::uintptr_t>(a);
  auto pb = reinterpret_cast<std::uintptr_t>(b);
  return an > 0 && bn > 0 && pa < pb + bn && pb < pa + an;
}

// The text of a failure as this rank tells it: where it began and what happened.
std::string reason_of(const Error& e) {
  return e.origin_rank() >= 0 ? str_cat("rank ", e.origin_rank(), ": ", e.cause()) : e.cause();
}

}  // namespace

// --- Communicator::Impl -----------------------------------------------------------------

Communicator::Impl::Impl(const Identity& id, const Config& config,
                         std::shared_ptr<bootstrap::Store> base_store, std::string prefix)
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
  store_ = bootstrap::make_prefix_store(prefix_, base_store_);
  if (node_id_.empty()) node_id_ = bootstrap::detect_node_identity();

  const Deadline deadline = Clock::now() + config_.timeout;
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
  table_ = algo::SelectTable::build(in);
  register_scratch();
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
  // Every rank has read what it needs from the store once this barrier completes, so rank
  // 0 may tear the store down afterwards.
  barrier();
}

Communicator::Impl::~Impl() = default;

void Communicator::Impl::rendezvous(const Identity& id, Deadline deadline) {
  // The job id names this communicator in every transport handshake.
  if (id.rank == 0) {
    std::random_device rd;
    job_.job_id = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    store_->set_string("job", std::to_string(job_.job_id));
  } else {
    job_.job_id = std::stoull(store_->get_string("job", deadline));
  }
  // Every rank states its protocol version, its idea of the job size, and its node.
  store_->set_string(str_cat("info/", id.rank),
                     str_cat(kCollectiveProtocolVersion, " ", id.size, " ", node_id_));
  std::vector<std::string> node_ids(static_cast<std::size_t>(id.size));
  for (int r = 0; r < id.size; ++r) {
    std::string v = store_->get_string(str_cat("info/", r), deadline);
    std::size_t a = v.find(' ');
    std::size_t b = v.find(' ', a == std::string::npos ? 0 : a + 1);
    if (a == std::string::npos || b == std::string::npos) {
      throw Error(ErrorCode::transport,
                  str_cat("rank ", r, " published a malformed rendezvous record"), {r});
    }
    unsigned long version = std::stoul(v.substr(0, a));
    int size = std::stoi(v.substr(a + 1, b - a - 1));
    if (version != kCollectiveProtocolVersion) {
      throw Error(ErrorCode::mismatch,
                  str_cat("rank ", r, " speaks ringlet protocol version ", version, ", rank ",
                          id.rank, " speaks version ", kCollectiveProtocolVersion),
                  {r, id.rank});
    }
    if (size != id.size) {
      throw Error(ErrorCode::mismatch,
                  str_cat("rank ", r, " believes the job has ", size, " ranks, rank ", id.rank,
                          " believes ", id.size),
                  {r, id.rank});
    }
    node_ids[static_cast<std::size_t>(r)] = v.substr(b + 1);
  }
  layout_ = JobLayout::from_node_ids(id.rank, node_ids, id.local_rank, id.local_size);
  if (layout_.shape == JobShape::flat) {
    RINGLET_LOG(info,
                "nodes hold different numbers of ranks (or one each): the hierarchical "
                "allreduce does not apply, the flat ring serves large messages");
  }
}

void Communicator::Impl::connect_peers(Deadline deadline) {
  peers_.assign(static_cast<std::size_t>(size()), nullptr);
  if (size() == 1) return;
  transport::NetworkChoice net = transport::make_network_transport(
      config_, layout_, job_, bootstrap::local_address_of(*base_store_), store_);
  transport_ = std::move(net.transport);
  numa_node_ = net.numa_node;
  traits_ = transport_->traits();
  store_->set(str_cat("addr/", rank()), transport_->local_address());

  // Ring neighbours, the partners of recursive doubling, and the inter-node ring of this
  // rank's local index.
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

void Communicator::Impl::register_scratch() {
  slice_bytes_ = config_.slice_bytes != 0 ? config_.slice_bytes : traits_.slice_bytes;
  slice_bytes_ = std::max<std::size_t>(64, slice_bytes_ / 64 * 64);
  if (size() == 1) return;
  // Allocated, touched and registered once, here, never per call.
  ring_scratch_.assign(slice_bytes_ * static_cast<std::size_t>(config_.ring_slots), std::byte{0});
  small_scratch_.assign(2 * (config_.crossover_bytes + sizeof(WireFingerprint)), std::byte{0});
  ring_scratch_mr_ = transport_->register_memory(ring_scratch_, MemoryKind::host);
  small_scratch_mr_ = transport_->register_memory(small_scratch_, MemoryKind::host);
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

void Communicator::Impl::check_fingerprints(FingerprintExchange& x, const Fingerprint& fp,
                                            Deadline deadline, bool only_arrived) {
  for (int i = 0; i < x.n; ++i) {
    if (x.received[i]) continue;
    auto* c = peers_[static_cast<std::size_t>(x.neighbours[i])];
    if (only_arrived) {
      try {
        if (!c->test(x.recv[i])) continue;
      } catch (const Error&) {
        continue;
      }
    } else {
      c->wait(x.recv[i], deadline);
    }
    x.received[i] = true;
    check_agreement(x.neighbours[i], x.theirs[i], rank(), fp);
  }
  if (only_arrived) return;
  for (int i = 0; i < x.n; ++i) {
    peers_[static_cast<std::size_t>(x.neighbours[i])]->wait(x.send[i], deadline);
  }
}

void Communicator::Impl::explain_with_fingerprints(FingerprintExchange& x, const Fingerprint& fp,
                                                   Deadline deadline, const Error& e) {
  // One that came whole, or the start of a longer message (every collective's first message
  // leads with its fingerprint, and the transport reads the start of a message of the wrong
  // length).
  for (int i = 0; i < x.n; ++i) {
    if (!x.received[i] && looks_like_fingerprint(x.theirs[i])) {
      check_agreement(x.neighbours[i], x.theirs[i], rank(), fp);
    }
  }
  if (e.error_code() != ErrorCode::mismatch) check_fingerprints(x, fp, deadline, true);
}

void Communicator::Impl::fail_and_throw(const Error& e, const Fingerprint& fp) {
  fail(e);
  Error out = e;
  throw std::move(out.in_collective(to_string(fp.kind), fp.seq));
}

void Communicator::Impl::fail_out_of_memory(const Fingerprint& fp) {
  fail_and_throw(Error(ErrorCode::transport, str_cat("rank ", rank(), ": out of memory"), {rank()}),
                 fp);
}

template <class Body>
void Communicator::Impl::run(Fingerprint& fp, Body&& body, Check check) {
  check_usable();
  fp.seq = ++seq_;
  const Deadline deadline = Clock::now() + config_.timeout;
  if (size() == 1 || check != Check::before) {
    // No exchange with the neighbours here (the body or the local group compares the
    // fingerprints): the latency path of small and one-node collectives, without its state.
    try {
      // On one node, allreduce runs in the local group and checks fingerprints there;
      // agreeing there first makes a rank in such an allreduce and a rank in another
      // collective disagree there too, so both get mismatch.
      if (size() > 1 && check != Check::none && table_.agree_locally()) {
        local_->agree(fp, deadline);
      }
      body(deadline);
    } catch (const Error& e) {
      fail_and_throw(e, fp);
    } catch (const std::bad_alloc&) {
      fail_out_of_memory(fp);
    }
    return;
  }
  FingerprintExchange x;
  try {
    if (table_.agree_locally()) local_->agree(fp, deadline);
    post_fingerprints(x, fp);
    check_fingerprints(x, fp, deadline, false);
    body(deadline);
  } catch (const Error& e) {
    // A neighbour's fingerprint that has arrived explains a failure better than the failure.
    try {
      explain_with_fingerprints(x, fp, deadline, e);
    } catch (const Error& m) {
      fail_and_throw(m, fp);
    }
    fail_and_throw(e, fp);
  } catch (const std::bad_alloc&) {
    fail_out_of_memory(fp);
  }
}

void Communicator::Impl::recursive_doubling(algo::Context& ctx, std::byte* buf, std::size_t count,
                                            DataType type, ReduceOp op, const Fingerprint& fp) {
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
    algo::recursive_doubling_allreduce(ctx, buf, count, type, op, &prefix);
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
                                          const Fingerprint* fp, const algo::Plan* plan) {
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
  return ctx;
}

void Communicator::Impl::execute_allreduce(const algo::Plan& plan, const std::byte* src,
                                           std::byte* dst, std::size_t count, DataType type,
                                           const Fingerprint& fp, Deadline deadline) {
  const std::size_t bytes = count * size_of(type);
  if (plan.algorithm == algo::Algorithm::local && size() > 1) {
    algo::local_allreduce(*local_, exec::executor_for(plan.memory), fp, plan.post_scale, src, dst,
                          count, type, plan.op, deadline);
    return;
  }
  algo::Context ctx = context(deadline, plan.memory, &fp, &plan);
  if (size() == 1) {
    ctx.exec->copy(dst, src, bytes);
    return;
  }
  switch (plan.algorithm) {
    case algo::Algorithm::local:  // served above
      break;
    case algo::Algorithm::recursive_doubling:
      ctx.exec->copy(dst, src, bytes);
      recursive_doubling(ctx, dst, count, type, plan.op, fp);
      return;
    case algo::Algorithm::hierarchical: {
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
      algo::hierarchical_allreduce(h, dst, count, type, plan.op);
      return;
    }
    case algo::Algorithm::ring:
      algo::ring_allreduce(ctx, src, dst, count, type, plan.op);
      return;
  }
}

void Communicator::Impl::allreduce(Tensor in, Tensor out, ReduceOp op) {
  check_usable();
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
  run(
      fp,
      [&](Deadline deadline) {
        execute_allreduce(plan, src, dst, in.count, in.type, fp, deadline);
      },
      check);
}

void Communicator::Impl::broadcast(Tensor in, Tensor out, int root) {
  check_usable();
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
  run(
      fp,
      [&](Deadline deadline) {
        algo::Context ctx = context(deadline, out.memory, &fp, nullptr);
        auto* dst = static_cast<std::byte*>(out.data);
        if (rank() == root) ctx.exec->copy(dst, in.data, out.bytes());
        algo::ring_broadcast(ctx, dst, out.bytes(), root);
      },
      Check::before);
}

void Communicator::Impl::allgather(Tensor in, Tensor out) {
  check_usable();
  check_tensor(in, "allgather");
  check_tensor(out, "allgather");
  if (in.type != out.type || out.count != in.count * static_cast<std::size_t>(size())) {
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
  run(
      fp,
      [&](Deadline deadline) {
        algo::Context ctx = context(deadline, out.memory, &fp, nullptr);
        ctx.exec->copy(own, in.data, block);
        algo::ChunkLayout layout{out.count, size()};
        algo::ring_allgather(ctx, static_cast<std::byte*>(out.data), layout, in.type, rank());
      },
      Check::before);
}

void Communicator::Impl::reduce_scatter(Tensor in, Tensor out, ReduceOp op) {
  check_usable();
  check_tensor(in, "reduce_scatter");
  check_tensor(out, "reduce_scatter");
  if (in.type != out.type || in.count != out.count * static_cast<std::size_t>(size())) {
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
  run(
      fp,
      [&](Deadline deadline) {
        // In place, the input itself accumulates; out of place, a staging copy kept by the
        // communicator does, so that the input is never written.
        std::byte* acc = src;
        if (!in_place) {
          if (staging_.size() < in.bytes()) staging_.resize(in.bytes());
          acc = staging_.data();
        }
        algo::Context ctx = context(deadline, in.memory, &fp, &plan);
        algo::ChunkLayout layout{in.count, size()};
        algo::ring_reduce_scatter(ctx, src, acc, layout, in.type, plan.op, -1);
        std::byte* mine = acc + static_cast<std::size_t>(rank()) * block;
        ctx.post_scale(*ctx.exec, mine, out.count, in.type);
        if (!in_place) ctx.exec->copy(out.data, mine, block);
      },
      Check::before);
}

void Communicator::Impl::barrier() {
  Fingerprint fp;
  fp.kind = CollectiveKind::barrier;
  fp.type = DataType::uint8;
  fp.op = ReduceOp::max;
  if (size() > 1 && table_.barrier() == algo::Algorithm::local) {
    run(
        fp, [&](Deadline deadline) { local_->barrier(fp, deadline); }, Check::none);
    return;
  }
  run(
      fp,
      [&](Deadline deadline) {
        if (size() == 1) return;
        std::byte token{0};
        algo::Context ctx = context(deadline, MemoryKind::host, &fp, nullptr);
        recursive_doubling(ctx, &token, 1, DataType::uint8, ReduceOp::max, fp);
      },
      Check::in_body);
}

std::unique_ptr<Communicator::Impl> Communicator::Impl::dup() {
  Fingerprint fp;
  fp.kind = CollectiveKind::dup;
  fp.type = DataType::uint8;
  std::unique_ptr<Impl> child;
  const std::string child_prefix = str_cat(prefix_, ".", ++dups_);
  run(
      fp,
      [&](Deadline) {
        Identity id{rank(), size(), layout_.local_rank, layout_.local_size, node_id_};
        child = std::make_unique<Impl>(id, config_, base_store_, child_prefix);
      },
      Check::before);
  return child;
}

void Communicator::Impl::abort() noexcept {
  aborted_.store(true, std::memory_order_release);
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

void Communicator::Impl::check_usable() {
  if (aborted_.load(std::memory_order_acquire)) {
    // abort() came from another thread between calls: tell the peers now.
    if (!propagated_) {
      // The peers read "rank R: aborted its communicator" (the origin rank leads).
      Error e(ErrorCode::aborted, "aborted its communicator", {rank()});
      fail(e.reported_by(rank()));
      abort_reason_.clear();  // this rank's own abort(): the message below says so
    }
    throw Error(ErrorCode::aborted,
                str_cat("rank ", rank(), ": the communicator was aborted",
                        abort_reason_.empty() ? std::string(" by abort()") : ": " + abort_reason_),
                {rank()});
  }
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
  if (propagated_) return;
  propagated_ = true;
  try {
    abort_reason_ = reason_of(e);
    ErrorCode code = e.error_code();
    // An abort is seen by the peers as a lost peer.
    if (code == ErrorCode::aborted) code = ErrorCode::peer_lost;
    const int origin = e.origin_rank() >= 0 ? e.origin_rank() : rank();
    if (transport_) transport_->control().report_failure(code, origin, e.cause());
    if (local_) local_->mark_failed(code);
  } catch (...) {
  }
}

// --- Communicator ------------------------------------------------------------------------

// Makes a Communicator from an Impl, for the factory functions outside the class.
struct CommunicatorAccess {
  static Communicator make(std::unique_ptr<Communicator::Impl> impl) {
    return Communicator(std::move(impl));
  }
};

Communicator::Communicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Communicator::Communicator(Communicator&&) noexcept = default;
Communicator& Communicator::operator=(Communicator&&) noexcept = default;
Communicator::~Communicator() = default;

namespace {

Communicator::Impl::Identity identity_of(int rank, int size, int local_rank, int local_size,
                                         const std::string& node_id) {
  return Communicator::Impl::Identity{rank, size, local_rank, local_size, node_id};
}

}  // namespace

Communicator Communicator::create(const Options& options) {
  bootstrap::LaunchInfo info = bootstrap::resolve_launch(options, bootstrap::process_env());
  log::set_thread_rank(info.rank);
  const Config config = resolve_config(options, info.size, process_env_lookup());
  std::shared_ptr<bootstrap::Store> store;
  if (info.size == 1 && info.store_host.empty()) {
    store = bootstrap::make_hash_store();
  } else {
    bootstrap::TcpStoreOptions so;
    so.host = info.store_host;
    so.port = info.store_port;
    so.is_server = info.rank == 0;
    so.deadline = Clock::now() + config.timeout;
    store = bootstrap::make_tcp_store(so);
  }
  RINGLET_LOG(info, "rank ", info.rank, " of ", info.size, " from ", info.source,
              " environment, rendezvous at ", info.store_host, ":", info.store_port);
  return Communicator(std::make_unique<Impl>(
      identity_of(info.rank, info.size, info.local_rank, info.local_size, info.node_id), config,
      std::move(store), "c"));
}

int Communicator::rank() const noexcept { return impl_->rank(); }
int Communicator::size() const noexcept { return impl_->size(); }
int Communicator::local_rank() const noexcept { return impl_->local_rank(); }
int Communicator::local_size() const noexcept { return impl_->local_size(); }
int Communicator::node_count() const noexcept { return impl_->node_count(); }

Communicator Communicator::dup() { return Communicator(impl_->dup()); }

void Communicator::allreduce(Tensor inout, ReduceOp op) { impl_->allreduce(inout, inout, op); }
void Communicator::allreduce(Tensor in, Tensor out, ReduceOp op) { impl_->allreduce(in, out, op); }
void Communicator::broadcast(Tensor inout, int root) { impl_->broadcast(inout, inout, root); }
void Communicator::broadcast(Tensor in, Tensor out, int root) { impl_->broadcast(in, out, root); }
void Communicator::allgather(Tensor in, Tensor out) { impl_->allgather(in, out); }
void Communicator::reduce_scatter(Tensor in, Tensor out, ReduceOp op) {
  impl_->reduce_scatter(in, out, op);
}
void Communicator::barrier() { impl_->barrier(); }
void Communicator::abort() noexcept { impl_->abort(); }

namespace detail {

Communicator create_with_store(const Options& options, std::shared_ptr<bootstrap::Store> store) {
  RINGLET_CHECK(options.rank >= 0 && options.size >= 1,
                "create_with_store needs Options::rank and Options::size");
  const Config config = resolve_config(options, options.size, process_env_lookup());
  return CommunicatorAccess::make(std::make_unique<Communicator::Impl>(
      identity_of(options.rank, options.size, options.local_rank, options.local_size,
                  options.node_id),
      config, std::move(store), "c"));
}

}  // namespace detail
}  // namespace ringlet
