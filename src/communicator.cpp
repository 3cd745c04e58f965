// SPDX-License-Identifier: Apache-2.0
// Communicator and Communicator::Impl: rendezvous, connections, validation, fingerprints,
// algorithm selection and error propagation.
#include "src/communicator.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <random>
#include <thread>

#include "src/algo/hierarchical.hpp"
#include "src/algo/recursive_doubling.hpp"
#include "src/algo/ring.hpp"
#include "src/bootstrap/launch_env.hpp"
#include "src/common/check.hpp"
#include "src/common/env.hpp"
#include "src/common/log.hpp"
#include "src/communicator_impl.hpp"
#include "src/reduce/reduce.hpp"
#include "src/topo/topology.hpp"
#include "transports/tcp/transport.hpp"

namespace ringlet {
namespace {

constexpr std::uint32_t kHeaderMagic = 0x524c4348;  // "RLCH"
constexpr std::uint32_t kProtocolVersion = 1;
constexpr std::uint64_t kHeaderTag = std::uint64_t{1} << 62;
// Up to this many bytes allreduce uses recursive doubling (RINGLET_CROSSOVER_BYTES), measured
// over TCP loopback with bench/crossover.sh (docs/performance.md): recursive doubling wins up
// to 64 KiB and the ring from 128 KiB at 2-4 ranks; at 8 ranks recursive doubling still wins
// at 128 KiB.
std::size_t default_crossover_bytes(int size) {
  return size <= 4 ? std::size_t{64} << 10 : std::size_t{128} << 10;
}
constexpr int kRingSlots = 4;
// Pipeline chunk of the hierarchical allreduce: the shared-memory stages of one chunk overlap
// the inter-node ring of another.
constexpr std::size_t kHierPipelineBytes = 1 << 20;  // measured: docs/performance-hosts.md

std::string_view kind_name(CollectiveKind k) {
  switch (k) {
    case CollectiveKind::allreduce:
      return "allreduce";
    case CollectiveKind::broadcast:
      return "broadcast";
    case CollectiveKind::allgather:
      return "allgather";
    case CollectiveKind::reduce_scatter:
      return "reduce_scatter";
    case CollectiveKind::barrier:
      return "barrier";
    case CollectiveKind::dup:
      return "dup";
  }
  return "unknown";
}

// The message of an Error without the category's text that std::system_error appends.
// The machine's topology, probed once per process (ranks run as threads share it).
const topo::Topology* machine_topology() {
  static const std::optional<topo::Topology> topology = []() -> std::optional<topo::Topology> {
    try {
      return topo::load_topology();
    } catch (const std::exception& e) {
      RINGLET_LOG(info, "topology probe failed (", e.what(), "); placement uses defaults");
      return std::nullopt;
    }
  }();
  return topology ? &*topology : nullptr;
}

std::string raw_message(const Error& e) {
  std::string what = e.what();
  std::string suffix = ": " + e.code().message();
  if (what.size() >= suffix.size() &&
      what.compare(what.size() - suffix.size(), suffix.size(), suffix) == 0) {
    what.resize(what.size() - suffix.size());
  }
  return what;
}

bool is_float(DataType t) {
  return t == DataType::float32 || t == DataType::float64 || t == DataType::float16 ||
         t == DataType::bfloat16;
}

bool overlaps(const void* a, std::size_t an, const void* b, std::size_t bn) {
  auto pa = reinterpret_cast<std::uintptr_t>(a);
  auto pb = reinterpret_cast<std::uintptr_t>(b);
  return an > 0 && bn > 0 && pa < pb + bn && pb < pa + an;
}

}  // namespace

WireHeader wire_header(const Fingerprint& fp) {
  return WireHeader{kHeaderMagic,
                    kProtocolVersion,
                    static_cast<std::uint8_t>(fp.kind),
                    static_cast<std::uint8_t>(fp.type),
                    static_cast<std::uint8_t>(fp.op),
                    0,
                    fp.root,
                    fp.seq,
                    fp.count};
}

std::string describe(const Fingerprint& f) {
  std::string s = str_cat(kind_name(f.kind), "(");
  switch (f.kind) {
    case CollectiveKind::allreduce:
    case CollectiveKind::reduce_scatter:
      return str_cat(s, "count=", f.count, ", ", to_string(f.type), ", ", to_string(f.op), ")");
    case CollectiveKind::broadcast:
      return str_cat(s, "count=", f.count, ", ", to_string(f.type), ", root=", f.root, ")");
    case CollectiveKind::allgather:
      return str_cat(s, "count=", f.count, ", ", to_string(f.type), ")");
    case CollectiveKind::barrier:
    case CollectiveKind::dup:
      return s + ")";
  }
  return s + ")";
}

// --- Communicator::Impl -----------------------------------------------------------------

Communicator::Impl::Impl(const Identity& id, std::shared_ptr<bootstrap::Store> base_store,
                         std::string prefix)
    : rank_(id.rank),
      size_(id.size),
      local_rank_(id.local_rank),
      local_size_(id.local_size),
      node_id_(id.node_id),
      timeout_(id.timeout),
      base_store_(std::move(base_store)),
      prefix_(std::move(prefix)) {
  RINGLET_CHECK(size_ >= 1, "size ", size_, " must be at least 1");
  RINGLET_CHECK(rank_ >= 0 && rank_ < size_, "rank ", rank_, " is outside [0, ", size_, ")");
  log::set_thread_rank(rank_);
  store_ = bootstrap::make_prefix_store(prefix_, base_store_);
  algo_ = env::algo();
  crossover_bytes_ = env::crossover_bytes().value_or(default_crossover_bytes(size_));
  slice_bytes_ = env::slice_bytes();
  if (slice_bytes_ == 0) slice_bytes_ = transport::kTcpRecommendedSliceBytes;
  slice_bytes_ = std::max<std::size_t>(64, slice_bytes_ / 64 * 64);
  slots_ = kRingSlots;
  if (node_id_.empty()) node_id_ = bootstrap::detect_node_identity();

  const Deadline deadline = Clock::now() + timeout_;
  rendezvous(deadline);
  connect_peers(deadline);
  create_local_group(deadline);
  // Scratch memory is allocated and touched once, here, never per call.
  if (size_ > 1) {
    ring_scratch_.assign(slice_bytes_ * static_cast<std::size_t>(slots_), std::byte{0});
    small_scratch_.assign(2 * (crossover_bytes_ + sizeof(WireHeader)), std::byte{0});
  }
  RINGLET_LOG(info, "rank ", rank_, "/", size_, " on node ",
              node_of_rank_[static_cast<std::size_t>(rank_)], " of ", node_count_, " (local rank ",
              local_rank_, "/", local_size_, "), transport ",
              transport_ ? transport_->name() : std::string_view("none"), ", algorithm ", algo_,
              ", crossover ", crossover_bytes_, " bytes (recursive doubling below, ring above)",
              ", ring slice ", slice_bytes_, " bytes x ", slots_, " slots, timeout ",
              timeout_.count(), " ms, reduce kernels ", reduce::host_isa());
  RINGLET_LOG(info, "allreduce: ",
              algo_ == "hier" && hier_ok_ && local_ ? std::string("hierarchical (forced)")
              : algo_ != "auto" && !(algo_ == "hier" && shm_only_)
                  ? str_cat("forced to ", algo_ == "hier" ? "ring (hier does not apply)" : algo_)
              : shm_only_ && local_
                  ? std::string("shared memory (one node)")
                  : str_cat("recursive doubling up to ", crossover_bytes_, " bytes, ",
                            hier_ok_ && local_ ? "hierarchical" : "ring", " above"));
  // Every rank has read what it needs from the store once this barrier completes, so rank
  // 0 may tear the store down afterwards.
  barrier();
}

Communicator::Impl::~Impl() = default;

void Communicator::Impl::rendezvous(Deadline deadline) {
  // The job id names this communicator in every transport handshake.
  if (rank_ == 0) {
    std::random_device rd;
    job_id_ = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    store_->set_string("job", std::to_string(job_id_));
  } else {
    job_id_ = std::stoull(store_->get_string("job", deadline));
  }
  // Every rank states its protocol version, its idea of the job size, and its node.
  store_->set_string(str_cat("info/", rank_), str_cat(kProtocolVersion, " ", size_, " ", node_id_));
  node_of_rank_.assign(static_cast<std::size_t>(size_), 0);
  std::vector<std::string> nodes;
  int computed_local_rank = 0;
  int computed_local_size = 0;
  for (int r = 0; r < size_; ++r) {
    std::string v = store_->get_string(str_cat("info/", r), deadline);
    std::size_t a = v.find(' ');
    std::size_t b = v.find(' ', a == std::string::npos ? 0 : a + 1);
    if (a == std::string::npos || b == std::string::npos) {
      throw Error(ErrorCode::transport,
                  str_cat("rank ", r, " published a malformed rendezvous record"), {r});
    }
    unsigned long version = std::stoul(v.substr(0, a));
    int size = std::stoi(v.substr(a + 1, b - a - 1));
    std::string node = v.substr(b + 1);
    if (version != kProtocolVersion) {
      throw Error(ErrorCode::mismatch,
                  str_cat("rank ", r, " speaks ringlet protocol version ", version, ", rank ",
                          rank_, " speaks version ", kProtocolVersion),
                  {r, rank_});
    }
    if (size != size_) {
      throw Error(ErrorCode::mismatch,
                  str_cat("rank ", r, " believes the job has ", size, " ranks, rank ", rank_,
                          " believes ", size_),
                  {r, rank_});
    }
    auto it = std::find(nodes.begin(), nodes.end(), node);
    int node_index = static_cast<int>(it - nodes.begin());
    if (it == nodes.end()) nodes.push_back(node);
    node_of_rank_[static_cast<std::size_t>(r)] = node_index;
    if (node == node_id_) {
      if (r < rank_) ++computed_local_rank;
      ++computed_local_size;
    }
  }
  node_count_ = static_cast<int>(nodes.size());
  if (local_rank_ < 0) local_rank_ = computed_local_rank;
  if (local_size_ < 0) local_size_ = computed_local_size;
  members_.assign(nodes.size(), {});
  for (int r = 0; r < size_; ++r)
    members_[static_cast<std::size_t>(node_of_rank_[static_cast<std::size_t>(r)])].push_back(r);
  node_index_ = node_of_rank_[static_cast<std::size_t>(rank_)];
  node_position_ = computed_local_rank;
  const std::size_t per_node = members_[0].size();
  hier_ok_ = node_count_ > 1 && per_node > 1 &&
             std::all_of(members_.begin(), members_.end(),
                         [&](const std::vector<int>& m) { return m.size() == per_node; });
  shm_only_ = node_count_ == 1 && size_ > 1;
  if (node_count_ > 1 && !hier_ok_) {
    RINGLET_LOG(info,
                "nodes hold different numbers of ranks (or one each): the hierarchical "
                "allreduce does not apply, the flat ring serves large messages");
  }
}

void Communicator::Impl::connect_peers(Deadline deadline) {
  peers_.assign(static_cast<std::size_t>(size_), nullptr);
  if (size_ == 1) return;
  transport::TcpOptions options;
  options.rank = rank_;
  options.size = size_;
  options.job_id = job_id_;
  options.abort_flag = &aborted_;
  options.timeout = timeout_;
  options.oversubscribed = static_cast<unsigned>(std::max(local_size_, 1)) >
                           std::max(1u, std::thread::hardware_concurrency());
  std::string spec = env::socket_ifname();
  if (!spec.empty()) {
    auto interfaces = transport::select_interfaces(spec);
    const auto& pick =
        interfaces[static_cast<std::size_t>(std::max(local_rank_, 0)) % interfaces.size()];
    options.bind_address = pick.address;
    RINGLET_LOG(info, "RINGLET_SOCKET_IFNAME=", spec, " selects interface ", pick.name, " (",
                pick.address, ")");
  } else {
    options.bind_address = bootstrap::local_address_of(*base_store_);
    if (options.bind_address.empty()) options.bind_address = "127.0.0.1";
    std::string why = "the address that reaches the rendezvous store";
    // Where the node has several NICs, each local rank takes the one nearest its GPU (one
    // rail per local rank); the route to the store is the default otherwise.
    if (const topo::Topology* machine = machine_topology()) {
      topo::PlacementChoice place =
          topo::choose_placement(*machine, std::max(local_rank_, 0), std::max(local_size_, 1), "");
      numa_node_ = place.numa_node;
      RINGLET_LOG(info, "placement: ", place.reason);
      std::size_t usable_nics = 0;
      for (const auto& nic : machine->nics) usable_nics += nic.interfaces.empty() ? 0 : 1;
      if (usable_nics > 1 && !place.ifname.empty() && options.bind_address != "127.0.0.1") {
        try {
          auto interfaces = transport::select_interfaces("=" + place.ifname);
          const bool want_v6 = options.bind_address.find(':') != std::string::npos;
          for (const auto& itf : interfaces) {
            if ((itf.address.find(':') != std::string::npos) == want_v6) {
              options.bind_address = itf.address;
              why = str_cat("interface ", place.ifname, " of the NIC nearest local rank ",
                            local_rank_);
              break;
            }
          }
        } catch (const Error& e) {
          RINGLET_LOG(info, "interface ", place.ifname, " unusable (", e.what(), ")");
        }
      }
    }
    RINGLET_LOG(info, "listening on ", options.bind_address, " (", why, ")");
  }
  transport_ = transport::make_tcp_transport(options);
  auto blob = transport_->local_address();
  store_->set(str_cat("addr/", rank_), blob);

  // Ring neighbours, and the partners of recursive doubling.
  std::vector<int> wanted = algo::recursive_doubling_peers(rank_, size_);
  wanted.push_back(algo::mod(rank_ - 1, size_));
  wanted.push_back(algo::mod(rank_ + 1, size_));
  if (hier_ok_) {
    // The inter-node ring of this rank's local index.
    const auto pos = static_cast<std::size_t>(node_position_);
    wanted.push_back(
        members_[static_cast<std::size_t>(algo::mod(node_index_ - 1, node_count_))][pos]);
    wanted.push_back(
        members_[static_cast<std::size_t>(algo::mod(node_index_ + 1, node_count_))][pos]);
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

void Communicator::Impl::create_local_group(Deadline deadline) {
  const auto& mine = members_[static_cast<std::size_t>(node_index_)];
  if (mine.size() < 2) return;
  if (!env::shm_enabled()) {
    shm_only_ = false;
    hier_ok_ = false;
    RINGLET_LOG(info, "RINGLET_SHM=0: the ranks of this node use TCP among themselves");
    return;
  }
  transport::shm::ShmOptions o;
  o.local_rank = node_position_;
  o.local_size = static_cast<int>(mine.size());
  o.rank = rank_;
  o.local_to_global = mine;
  o.job_id = str_cat(std::hex, job_id_);
  o.store = store_;
  o.abort_flag = &aborted_;
  o.timeout = timeout_;
  o.oversubscribed = mine.size() > std::max(1u, std::thread::hardware_concurrency());
  local_ = transport::shm::ShmGroup::create(o, deadline);
  RINGLET_LOG(info, "shared memory among the ", mine.size(), " ranks of this node (segment ",
              local_->segment_name(), ", unlinked once mapped); ",
              shm_only_
                  ? "allreduce and barrier run in shared memory"
                  : (hier_ok_ ? "large allreduces are hierarchical" : "not used by allreduce"));
}

void Communicator::Impl::hierarchical_allreduce(std::byte* buf, std::size_t count, DataType type,
                                                ReduceOp op, Deadline deadline) {
  algo::HierContext h;
  h.ring = context(deadline);
  h.ring.rank = node_index_;
  h.ring.size = node_count_;
  const auto pos = static_cast<std::size_t>(node_position_);
  h.ring.left = peers_[static_cast<std::size_t>(
      members_[static_cast<std::size_t>(algo::mod(node_index_ - 1, node_count_))][pos])];
  h.ring.right = peers_[static_cast<std::size_t>(
      members_[static_cast<std::size_t>(algo::mod(node_index_ + 1, node_count_))][pos])];
  h.local = local_.get();
  h.local_rank = node_position_;
  h.local_size = static_cast<int>(members_[static_cast<std::size_t>(node_index_)].size());
  h.world_size = size_;
  h.pipeline_bytes = kHierPipelineBytes;
  // The network thread runs on the NUMA node of this rank's NIC (or GPU), where known.
  if (numa_node_ >= 0) {
    h.on_network_thread = [this] {
      if (const topo::Topology* machine = machine_topology()) {
        topo::pin_current_thread_to_numa(*machine, numa_node_);
      }
    };
  }
  h.interrupt = [this] {
    aborted_.store(true, std::memory_order_release);
    if (transport_) transport_->interrupt();
    if (local_) local_->interrupt();
  };
  algo::hierarchical_allreduce(h, buf, count, type, op);
}

algo::Context Communicator::Impl::context(Deadline deadline) {
  algo::Context ctx;
  ctx.rank = rank_;
  ctx.size = size_;
  ctx.peers = peers_;
  if (size_ > 1) {
    ctx.left = peers_[static_cast<std::size_t>(algo::mod(rank_ - 1, size_))];
    ctx.right = peers_[static_cast<std::size_t>(algo::mod(rank_ + 1, size_))];
  }
  ctx.ring_scratch = ring_scratch_;
  ctx.slice_bytes = slice_bytes_;
  ctx.slots = slots_;
  ctx.small_scratch = small_scratch_;
  ctx.deadline = deadline;
  return ctx;
}

void Communicator::Impl::check_usable() {
  if (aborted_.load(std::memory_order_acquire)) {
    // abort() came from another thread between calls: tell the peers now.
    if (!propagated_) {
      fail(
          Error(ErrorCode::aborted, str_cat("rank ", rank_, " aborted its communicator"), {rank_}));
    }
    throw Error(ErrorCode::aborted,
                str_cat("rank ", rank_, ": the communicator was aborted",
                        abort_reason_.empty() ? std::string(" by abort()") : ": " + abort_reason_),
                {rank_});
  }
}

void Communicator::Impl::check_tensor(const Tensor& t, const char* what) const {
  if (t.memory != MemoryKind::host) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat(what, ": rank ", rank_, " passed CUDA memory; this build reduces host memory only"),
        {rank_});
  }
  if (t.count > 0 && t.data == nullptr) {
    throw Error(ErrorCode::invalid_argument,
                str_cat(what, ": rank ", rank_, " passed a null pointer with count ", t.count),
                {rank_});
  }
  if (size_of(t.type) == 0) {
    throw Error(ErrorCode::invalid_argument,
                str_cat(what, ": rank ", rank_, " passed an unknown data type"), {rank_});
  }
}

void Communicator::Impl::check_op(DataType type, ReduceOp op, const char* what) const {
  if (op == ReduceOp::avg && !is_float(type)) {
    throw Error(ErrorCode::invalid_argument,
                str_cat(what, ": avg is not defined for ", to_string(type),
                        " (integer types); use sum and divide"),
                {rank_});
  }
}

void Communicator::Impl::fail(const Error& e) noexcept {
  aborted_.store(true, std::memory_order_release);
  if (propagated_) return;
  propagated_ = true;
  try {
    abort_reason_ = raw_message(e);
    ErrorCode code = e.error_code();
    // An abort is seen by the peers as a lost peer.
    if (code == ErrorCode::aborted) code = ErrorCode::peer_lost;
    std::string text = abort_reason_;
    if (text.rfind("rank ", 0) != 0) text = str_cat("rank ", rank_, ": ", text);
    for (auto& [peer, conn] : connections_) conn->send_error(code, text);
    if (local_) local_->mark_failed(code);
  } catch (...) {
  }
}

void Communicator::Impl::post_fingerprints(FingerprintExchange& x, const Fingerprint& fp) {
  x.mine = wire_header(fp);
  x.neighbours[0] = algo::mod(rank_ - 1, size_);
  x.neighbours[1] = algo::mod(rank_ + 1, size_);
  x.n = x.neighbours[0] == x.neighbours[1] ? 1 : 2;
  for (int i = 0; i < x.n; ++i) {
    auto* c = peers_[static_cast<std::size_t>(x.neighbours[i])];
    c->post_recv(nullptr, {reinterpret_cast<std::byte*>(&x.theirs[i]), sizeof(WireHeader)},
                 kHeaderTag);
    c->post_send(nullptr, {reinterpret_cast<const std::byte*>(&x.mine), sizeof(WireHeader)},
                 kHeaderTag);
  }
}

void Communicator::Impl::compare_fingerprint(int peer, const WireHeader& h,
                                             const Fingerprint& fp) const {
  if (h.magic != kHeaderMagic || h.version != kProtocolVersion) {
    throw Error(ErrorCode::mismatch,
                str_cat("rank ", peer, " sent a collective header of protocol version ", h.version,
                        " (magic ", h.magic, ") where rank ", rank_, " expected version ",
                        kProtocolVersion),
                {peer, rank_});
  }
  Fingerprint other{h.seq,
                    static_cast<CollectiveKind>(h.kind),
                    static_cast<DataType>(h.type),
                    static_cast<ReduceOp>(h.op),
                    h.root,
                    h.count};
  if (h.seq != fp.seq || h.kind != static_cast<std::uint8_t>(fp.kind) ||
      h.type != static_cast<std::uint8_t>(fp.type) || h.op != static_cast<std::uint8_t>(fp.op) ||
      h.root != fp.root || h.count != fp.count) {
    throw Error(
        ErrorCode::mismatch,
        str_cat("rank ", peer, " called ", describe(other), " as collective #", h.seq,
                " while rank ", rank_, " called ", describe(fp), " as collective #", fp.seq),
        {peer, rank_});
  }
}

void Communicator::Impl::recursive_doubling(algo::Context& ctx, std::byte* buf, std::size_t count,
                                            DataType type, ReduceOp op, const Fingerprint& fp) {
  const std::size_t message = sizeof(WireHeader) + count * size_of(type);
  if (small_scratch_.size() < 2 * message) {
    small_scratch_.resize(2 * message);  // only when RINGLET_ALGO forces it past the crossover
    ctx.small_scratch = small_scratch_;
  }
  const WireHeader mine = wire_header(fp);
  algo::MessagePrefix prefix;
  prefix.mine = {reinterpret_cast<const std::byte*>(&mine), sizeof(mine)};
  prefix.check = [&](int peer, std::span<const std::byte> theirs) {
    WireHeader h;
    std::memcpy(&h, theirs.data(), sizeof(h));
    compare_fingerprint(peer, h, fp);
  };
  try {
    algo::recursive_doubling_allreduce(ctx, buf, count, type, op, &prefix);
  } catch (const Error& e) {
    // A message of another length: the peer disagrees. Its fingerprint leads its message, and
    // has usually been read into the receive staging area: name both calls if it is there.
    if (e.error_code() != ErrorCode::mismatch) throw;
    for (int peer : e.ranks()) {
      if (peer == rank_) continue;
      WireHeader h;
      std::memcpy(&h, small_scratch_.data() + message, sizeof(h));
      if (h.magic == kHeaderMagic) compare_fingerprint(peer, h, fp);
    }
    throw;
  }
}

void Communicator::Impl::check_fingerprints(FingerprintExchange& x, const Fingerprint& fp,
                                            Deadline deadline, bool only_arrived) {
  for (int i = 0; i < x.n; ++i) {
    if (x.received[i]) continue;
    auto* c = peers_[static_cast<std::size_t>(x.neighbours[i])];
    if (only_arrived) {
      try {
        if (!c->test_recv(kHeaderTag)) continue;
      } catch (const Error&) {
        continue;
      }
    } else {
      c->wait_recv(kHeaderTag, deadline);
    }
    x.received[i] = true;
    compare_fingerprint(x.neighbours[i], x.theirs[i], fp);
  }
  if (only_arrived) return;
  for (int i = 0; i < x.n; ++i) {
    peers_[static_cast<std::size_t>(x.neighbours[i])]->wait_send(kHeaderTag, deadline);
  }
}

template <class Body>
void Communicator::Impl::run(Fingerprint& fp, Body&& body, Check check) {
  check_usable();
  fp.seq = ++seq_;
  const Deadline deadline = Clock::now() + timeout_;
  FingerprintExchange x;
  const bool exchange = size_ > 1 && (check == Check::before || check == Check::after);
  try {
    if (size_ > 1 && check != Check::none) {
      // On one node, allreduce runs in shared memory and checks fingerprints there; agreeing
      // in shared memory first makes a rank in such an allreduce and a rank here disagree
      // there too, so both get mismatch.
      if (shm_only_ && local_) {
        using Call = transport::shm::ShmGroup::Call;
        Call call = Call::allreduce;
        switch (fp.kind) {
          case CollectiveKind::broadcast:
            call = Call::broadcast;
            break;
          case CollectiveKind::allgather:
            call = Call::allgather;
            break;
          case CollectiveKind::reduce_scatter:
            call = Call::reduce_scatter;
            break;
          case CollectiveKind::dup:
            call = Call::dup;
            break;
          default:
            break;
        }
        local_->agree(call, fp.count, fp.type, fp.op, fp.root, deadline);
      }
    }
    if (exchange) {
      post_fingerprints(x, fp);
      if (check == Check::before) check_fingerprints(x, fp, deadline, false);
    }
    body(deadline);
    if (exchange && check == Check::after) check_fingerprints(x, fp, deadline, false);
  } catch (const Error& e) {
    // A neighbour's fingerprint that has arrived explains a failure better than the failure:
    // one that came whole, or the start of a longer message (every collective's first message
    // leads with its fingerprint, and the transport reads the start of a message of the
    // wrong length).
    if (exchange) {
      try {
        for (int i = 0; i < x.n; ++i) {
          if (!x.received[i] && x.theirs[i].magic == kHeaderMagic) {
            compare_fingerprint(x.neighbours[i], x.theirs[i], fp);
          }
        }
        if (e.error_code() != ErrorCode::mismatch) check_fingerprints(x, fp, deadline, true);
      } catch (const Error& m) {
        fail(m);
        throw Error(m.error_code(), str_cat(kind_name(fp.kind), " #", fp.seq, ": ", raw_message(m)),
                    m.ranks());
      }
    }
    fail(e);
    std::string text = raw_message(e);
    std::string name = str_cat(kind_name(fp.kind), " #", fp.seq, ": ");
    if (text.find(name) != std::string::npos) throw;
    throw Error(e.error_code(), name + text, e.ranks());
  } catch (const std::bad_alloc&) {
    Error e(ErrorCode::transport, str_cat("rank ", rank_, ": out of memory"), {rank_});
    fail(e);
    throw e;
  }
}

void Communicator::Impl::allreduce(Tensor in, Tensor out, ReduceOp op) {
  check_usable();
  check_tensor(in, "allreduce");
  check_tensor(out, "allreduce");
  if (in.count != out.count || in.type != out.type) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("allreduce: rank ", rank_, " passed input of ", in.count, " ",
                        to_string(in.type), " and output of ", out.count, " ", to_string(out.type)),
                {rank_});
  }
  check_op(in.type, op, "allreduce");
  const std::size_t bytes = in.bytes();
  if (in.data != out.data && overlaps(in.data, bytes, out.data, bytes)) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat("allreduce: rank ", rank_, " passed input and output buffers that partly overlap"),
        {rank_});
  }
  Fingerprint fp;
  fp.kind = CollectiveKind::allreduce;
  fp.type = in.type;
  fp.op = op;
  fp.count = in.count;
  auto* src = static_cast<const std::byte*>(in.data);
  auto* dst = static_cast<std::byte*>(out.data);
  // Pick the algorithm: shared memory when the job is one node; recursive doubling below the
  // crossover; hierarchical across nodes of several ranks each; the flat ring otherwise.
  const bool auto_or_hier = algo_ == "auto" || algo_ == "hier";
  if (auto_or_hier && shm_only_ && local_) {
    run(
        fp,
        [&](Deadline deadline) {
          if (dst != src && bytes > 0) std::memcpy(dst, src, bytes);
          local_->allreduce(dst, in.count, in.type, op, deadline);
          if (op == ReduceOp::avg && in.count > 0)
            reduce::divide_host(dst, in.count, in.type, size_);
        },
        Check::none);
    return;
  }
  const bool small =
      algo_ == "recursive_doubling" || (algo_ == "auto" && bytes <= crossover_bytes_);
  const bool hier = auto_or_hier && !small && hier_ok_ && local_ != nullptr;
  if (algo_ == "hier" && !hier && !hier_fallback_logged_) {
    hier_fallback_logged_ = true;
    RINGLET_LOG(info, "RINGLET_ALGO=hier: the job's shape (", node_count_,
                " nodes, ranks per node ", "unequal or 1) does not allow it; using the flat ring");
  }
  run(
      fp,
      [&](Deadline deadline) {
        if (size_ == 1) {
          if (dst != src && bytes > 0) std::memcpy(dst, src, bytes);
          return;
        }
        algo::Context ctx = context(deadline);
        if (small) {
          if (dst != src && bytes > 0) std::memcpy(dst, src, bytes);
          recursive_doubling(ctx, dst, in.count, in.type, op, fp);
          if (op == ReduceOp::avg && in.count > 0)
            reduce::divide_host(dst, in.count, in.type, size_);
        } else if (hier) {
          if (dst != src && bytes > 0) std::memcpy(dst, src, bytes);
          hierarchical_allreduce(dst, in.count, in.type, op, deadline);
        } else {
          algo::ring_allreduce(ctx, src, dst, in.count, in.type, op);
        }
      },
      small ? Check::in_body : Check::before);
}

void Communicator::Impl::broadcast(Tensor in, Tensor out, int root) {
  check_usable();
  if (root < 0 || root >= size_) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat("broadcast: rank ", rank_, " passed root ", root, " outside [0, ", size_, ")"),
        {rank_});
  }
  check_tensor(out, "broadcast");
  if (rank_ == root) {
    check_tensor(in, "broadcast");
    if (in.count != out.count || in.type != out.type) {
      throw Error(
          ErrorCode::invalid_argument,
          str_cat("broadcast: root ", rank_, " passed input of ", in.count, " ", to_string(in.type),
                  " and output of ", out.count, " ", to_string(out.type)),
          {rank_});
    }
  }
  Fingerprint fp;
  fp.kind = CollectiveKind::broadcast;
  fp.type = out.type;
  fp.root = root;
  fp.count = out.count;
  run(fp, [&](Deadline deadline) {
    auto* dst = static_cast<std::byte*>(out.data);
    if (rank_ == root && in.data != out.data && out.bytes() > 0)
      std::memmove(dst, in.data, out.bytes());
    algo::Context ctx = context(deadline);
    algo::ring_broadcast(ctx, dst, out.bytes(), root);
  });
}

void Communicator::Impl::allgather(Tensor in, Tensor out) {
  check_usable();
  check_tensor(in, "allgather");
  check_tensor(out, "allgather");
  if (in.type != out.type || out.count != in.count * static_cast<std::size_t>(size_)) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat("allgather: rank ", rank_, " passed input of ", in.count, " ", to_string(in.type),
                " and output of ", out.count, " ", to_string(out.type), "; the output needs ",
                size_, " x ", in.count, " elements of the input's type"),
        {rank_});
  }
  const std::size_t block = in.bytes();
  auto* own = static_cast<std::byte*>(out.data) + static_cast<std::size_t>(rank_) * block;
  if (in.data != own && overlaps(in.data, block, out.data, out.bytes())) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("allgather: rank ", rank_,
                        " passed an input that overlaps the output but is not "
                        "its own block"),
                {rank_});
  }
  Fingerprint fp;
  fp.kind = CollectiveKind::allgather;
  fp.type = in.type;
  fp.count = in.count;
  run(fp, [&](Deadline deadline) {
    if (in.data != own && block > 0) std::memcpy(own, in.data, block);
    algo::Context ctx = context(deadline);
    algo::ChunkLayout layout{out.count, size_};
    algo::ring_allgather(ctx, static_cast<std::byte*>(out.data), layout, in.type, rank_);
  });
}

void Communicator::Impl::reduce_scatter(Tensor in, Tensor out, ReduceOp op) {
  check_usable();
  check_tensor(in, "reduce_scatter");
  check_tensor(out, "reduce_scatter");
  if (in.type != out.type || in.count != out.count * static_cast<std::size_t>(size_)) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat("reduce_scatter: rank ", rank_, " passed input of ", in.count, " ",
                to_string(in.type), " and output of ", out.count, " ", to_string(out.type),
                "; the input needs ", size_, " x ", out.count, " elements of the output's type"),
        {rank_});
  }
  check_op(in.type, op, "reduce_scatter");
  const std::size_t block = out.bytes();
  auto* src = static_cast<std::byte*>(in.data);
  std::byte* own = src + static_cast<std::size_t>(rank_) * block;
  const bool in_place = out.data == own;
  if (!in_place && overlaps(in.data, in.bytes(), out.data, block)) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("reduce_scatter: rank ", rank_,
                        " passed an output that overlaps the input but "
                        "is not its own block"),
                {rank_});
  }
  Fingerprint fp;
  fp.kind = CollectiveKind::reduce_scatter;
  fp.type = in.type;
  fp.op = op;
  fp.count = out.count;
  run(fp, [&](Deadline deadline) {
    // In place, the input itself accumulates; out of place, a staging copy kept by the
    // communicator does, so that the input is never written.
    std::byte* acc = src;
    if (!in_place) {
      if (work_.size() < in.bytes()) work_.resize(in.bytes());
      acc = work_.data();
    }
    algo::Context ctx = context(deadline);
    algo::ChunkLayout layout{in.count, size_};
    algo::ring_reduce_scatter(ctx, src, acc, layout, in.type, op, -1);
    std::byte* mine = acc + static_cast<std::size_t>(rank_) * block;
    if (op == ReduceOp::avg && out.count > 0) reduce::divide_host(mine, out.count, in.type, size_);
    if (!in_place && block > 0) std::memcpy(out.data, mine, block);
  });
}

void Communicator::Impl::barrier() {
  Fingerprint fp;
  fp.kind = CollectiveKind::barrier;
  fp.type = DataType::uint8;
  fp.op = ReduceOp::max;
  if (shm_only_ && local_) {
    run(
        fp, [&](Deadline deadline) { local_->barrier(deadline); }, Check::none);
    return;
  }
  run(
      fp,
      [&](Deadline deadline) {
        if (size_ == 1) return;
        std::byte token{0};
        algo::Context ctx = context(deadline);
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
  run(fp, [&](Deadline) {
    Identity id{rank_, size_, local_rank_, local_size_, node_id_, timeout_};
    child = std::make_unique<Impl>(id, base_store_, child_prefix);
  });
  return child;
}

void Communicator::Impl::abort() noexcept {
  aborted_.store(true, std::memory_order_release);
  if (transport_) transport_->interrupt();
  if (local_) local_->interrupt();
}

// --- Communicator ------------------------------------------------------------------------

Communicator::Communicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Communicator::Communicator(Communicator&&) noexcept = default;
Communicator& Communicator::operator=(Communicator&&) noexcept = default;
Communicator::~Communicator() = default;

Communicator Communicator::create(const Options& options) {
  bootstrap::LaunchInfo info = bootstrap::resolve_launch(options, bootstrap::process_env());
  Impl::Identity id;
  id.rank = info.rank;
  id.size = info.size;
  id.local_rank = info.local_rank;
  id.local_size = info.local_size;
  id.node_id = info.node_id;
  id.timeout = options.timeout.count() > 0 ? options.timeout : env::timeout();
  log::set_thread_rank(id.rank);
  std::shared_ptr<bootstrap::Store> store;
  if (info.size == 1 && info.store_host.empty()) {
    store = bootstrap::make_hash_store();
  } else {
    bootstrap::TcpStoreOptions so;
    so.host = info.store_host;
    so.port = info.store_port;
    so.is_server = info.rank == 0;
    so.deadline = Clock::now() + id.timeout;
    store = bootstrap::make_tcp_store(so);
  }
  RINGLET_LOG(info, "rank ", info.rank, " of ", info.size, " from ", info.source,
              " environment, rendezvous at ", info.store_host, ":", info.store_port);
  return Communicator(std::make_unique<Impl>(id, std::move(store), "c"));
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
  Communicator::Impl::Identity id;
  id.rank = options.rank;
  id.size = options.size;
  id.local_rank = options.local_rank;
  id.local_size = options.local_size;
  id.node_id = options.node_id;
  id.timeout = options.timeout.count() > 0 ? options.timeout : env::timeout();
  return Communicator(std::make_unique<Communicator::Impl>(id, std::move(store), "c"));
}

}  // namespace detail
}  // namespace ringlet
