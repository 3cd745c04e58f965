// SPDX-License-Identifier: Apache-2.0
// RdmaTransport: device and port selection, connection set-up through the rendezvous store,
// registration, and the factory.
#include "transports/rdma/transport.hpp"

#include <algorithm>
#include <cstring>

#include "src/common/check.hpp"
#include "src/common/log.hpp"
#include "transports/rdma/connection.hpp"
#include "transports/rdma/engine.hpp"
#include "transports/rdma/memory_region.hpp"
#include "transports/rdma/verbs.hpp"
#include "transports/rdma/wire.hpp"

namespace ringlet::transport {
namespace rdma {
namespace {

struct Selection {
  std::vector<PortInfo> found;     // every port seen
  std::vector<PortInfo> eligible;  // active and selected by the spec
};

Selection select_ports(const Verbs& v, const std::string& spec) {
  Selection s;
  s.found = list_ports(v);
  for (const PortInfo& p : s.found) {
    if (p.state == IBV_PORT_ACTIVE && hca_selects(spec, p.device, p.port)) s.eligible.push_back(p);
  }
  return s;
}

std::string why_none(const Selection& s, const RdmaOptions& o, const std::string& library) {
  if (s.found.empty()) return str_cat(library, " lists no RDMA devices");
  std::string seen;
  for (const PortInfo& p : s.found) seen += str_cat(seen.empty() ? "" : ", ", describe(p));
  return str_cat("no active port",
                 o.hca.empty() ? "" : str_cat(" selected by RINGLET_IB_HCA=", o.hca), " (found ",
                 seen, ")");
}

// The port of this rank: the preferred device's first, else round robin by local rank.
const PortInfo& pick(const Selection& s, const RdmaOptions& o) {
  if (!o.preferred_device.empty()) {
    for (const PortInfo& p : s.eligible) {
      if (p.device == o.preferred_device) return p;
    }
  }
  return s.eligible[static_cast<std::size_t>(std::max(o.local_rank, 0)) % s.eligible.size()];
}

class RdmaTransport final : public Transport {
 public:
  RdmaTransport(const RdmaOptions& options, std::shared_ptr<Engine> engine)
      : options_(options), engine_(std::move(engine)) {
    qps_ = options.qps > 0 ? options.qps : kRdmaDefaultQpsPerConnection;
    connected_.assign(static_cast<std::size_t>(options.size), false);
  }

  std::string_view name() const noexcept override { return "rdma"; }
  TransportTraits traits() const noexcept override {
    TransportTraits t;
    t.slice_bytes = kRdmaSlotBytes;
    // Posts beyond the credits wait in user space and flow as credits return (as tcp's
    // queue): a limit here would make the ring wait for a send whose credit needs the peer to
    // post a receive while the peer waits in its own send loop.
    t.max_outstanding = 0;
    t.needs_registration = true;
    t.device_memory = false;  // GPUDirect (dma-buf) unverified: see docs/rdma.md
    return t;
  }
  std::vector<std::byte> local_address() const override {
    AddressBlob b;
    b.job_id = options_.job_id;
    return b.encode();
  }
  std::unique_ptr<Connection> connect(int peer, std::span<const std::byte> peer_address,
                                      Deadline deadline) override;
  std::unique_ptr<MemoryRegion> register_memory(std::span<std::byte> buf,
                                                MemoryKind kind) override {
    return register_region(buf, kind, false);
  }
  std::unique_ptr<MemoryRegion> register_user_memory(std::span<std::byte> buf,
                                                     MemoryKind kind) override {
    return register_region(buf, kind, true);
  }
  ControlPlane& control() noexcept override { return control_; }
  void interrupt() noexcept override { engine_->interrupt(); }

 private:
  std::unique_ptr<MemoryRegion> register_region(std::span<std::byte> buf, MemoryKind kind,
                                                bool user) {
    if (kind != MemoryKind::host) {
      throw Error(ErrorCode::invalid_argument,
                  "rdma: device memory cannot be registered (GPUDirect RDMA through dma-buf is "
                  "not enabled: unverified, see docs/rdma.md)");
    }
    ibv_mr* mr = engine_->verbs().register_mr(engine_->pd(), buf.data(),
                                              std::max<std::size_t>(buf.size(), 1),
                                              IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    if (mr == nullptr) {
      throw Error(ErrorCode::transport,
                  str_cat("rdma: rank ", options_.rank, " cannot register ", buf.size(),
                          " bytes: ibv_reg_mr: ", std::strerror(errno)),
                  {options_.rank});
    }
    return std::make_unique<RdmaMemoryRegion>(engine_, mr, buf, user);
  }

  // Error records written into each connected peer's error area.
  class Control final : public ControlPlane {
   public:
    explicit Control(RdmaTransport& t) : transport_(t) {}
    void report_failure(ErrorCode code, int origin_rank, std::string_view cause) noexcept override {
      transport_.engine_->report_failure(code, origin_rank, cause);
    }

   private:
    RdmaTransport& transport_;
  };

  std::vector<std::byte> lookup(const std::string& key, int peer, Deadline deadline,
                                const char* what) {
    try {
      return options_.lookup(key, deadline);
    } catch (const Error& e) {
      throw Error(e.error_code(),
                  str_cat("rdma: rank ", options_.rank, " did not get the ", what, " of peer ",
                          peer, " from the rendezvous store (", e.cause(), ")"),
                  {options_.rank, peer});
    }
  }

  RdmaOptions options_;
  std::shared_ptr<Engine> engine_;
  Control control_{*this};
  int qps_ = 1;
  std::vector<bool> connected_;
};

std::unique_ptr<Connection> RdmaTransport::connect(int peer,
                                                   std::span<const std::byte> peer_address,
                                                   Deadline deadline) {
  const int rank = options_.rank;
  RINGLET_CHECK(peer >= 0 && peer < options_.size && peer != rank, "rdma: rank ", rank,
                " cannot connect to peer ", peer, " in a job of size ", options_.size);
  RINGLET_CHECK(!connected_[static_cast<std::size_t>(peer)], "rdma: rank ", rank,
                " is already connected to peer ", peer);
  AddressBlob blob;
  if (peer_address.size() == kBlobBytes) blob = AddressBlob::decode(peer_address);
  if (peer_address.size() != kBlobBytes || blob.magic != kBlobMagic) {
    throw Error(ErrorCode::mismatch,
                str_cat("rdma: peer ", peer, " does not use the rdma transport (rank ", rank,
                        " does): every rank must choose the same transport (RINGLET_TRANSPORT; "
                        "with auto, every node needs an active RDMA port)"),
                {rank, peer});
  }
  if (blob.version != kProtocolVersion || blob.job_id != options_.job_id) {
    throw Error(ErrorCode::mismatch,
                str_cat("rdma: peer ", peer, " speaks rdma protocol version ", blob.version,
                        " in job ", blob.job_id, ", rank ", rank, " version ", kProtocolVersion,
                        " in job ", options_.job_id),
                {rank, peer});
  }
  std::unique_ptr<Channel> channel = engine_->make_channel(peer, qps_);
  struct Guard {
    Engine* engine;
    Channel* channel;
    ~Guard() {
      if (channel != nullptr) engine->destroy_channel(*channel);
    }
  } guard{engine_.get(), channel.get()};

  ConnectionInfo mine;
  mine.job_id = options_.job_id;
  mine.from = static_cast<std::uint32_t>(rank);
  mine.to = static_cast<std::uint32_t>(peer);
  mine.link_layer = engine_->port_attr().link_layer;
  mine.lid = engine_->port_attr().lid;
  std::memcpy(mine.gid.data(), engine_->gid().raw, 16);
  mine.gid_index = static_cast<std::uint32_t>(engine_->gid_index());
  mine.mtu = static_cast<std::uint32_t>(engine_->port_attr().active_mtu);
  mine.slots = static_cast<std::uint32_t>(channel->slots);
  mine.slot_bytes = static_cast<std::uint32_t>(channel->slot_bytes);
  mine.slot_addr = reinterpret_cast<std::uintptr_t>(channel->recv_area.data);
  mine.rkey = channel->recv_mr->rkey;
  mine.qps = static_cast<std::uint32_t>(channel->qps.size());
  for (std::size_t i = 0; i < channel->qps.size(); ++i) {
    mine.qpn[i] = channel->qps[i].qp->qp_num;
    mine.psn[i] = channel->qps[i].psn;
  }
  options_.publish(str_cat("rdma/", rank, "-", peer), mine.encode());
  ConnectionInfo theirs;
  const auto record =
      lookup(str_cat("rdma/", peer, "-", rank), peer, deadline, "connection record");
  if (!ConnectionInfo::decode(record, &theirs) || theirs.magic != kInfoMagic ||
      theirs.version != kProtocolVersion || theirs.job_id != options_.job_id ||
      theirs.from != static_cast<std::uint32_t>(peer) ||
      theirs.to != static_cast<std::uint32_t>(rank)) {
    throw Error(ErrorCode::mismatch,
                str_cat("rdma: the connection record of peer ", peer, " for rank ", rank,
                        " is malformed or belongs to another job or protocol version"),
                {rank, peer});
  }
  if (theirs.qps != mine.qps || theirs.slots != mine.slots ||
      theirs.slot_bytes != mine.slot_bytes) {
    throw Error(
        ErrorCode::mismatch,
        str_cat("rdma: peer ", peer, " uses ", theirs.qps, " queue pairs and ", theirs.slots,
                " slots of ", theirs.slot_bytes, " bytes, rank ", rank, " ", mine.qps, " and ",
                mine.slots, " of ", mine.slot_bytes, " (RINGLET_IB_QPS_PER_CONNECTION must agree)"),
        {rank, peer});
  }
  engine_->connect_channel(*channel, theirs);
  // Both sides are ready to receive before either writes.
  const std::byte ready[1] = {std::byte{1}};
  options_.publish(str_cat("rdma/", rank, "-", peer, "/ready"), ready);
  (void)lookup(str_cat("rdma/", peer, "-", rank, "/ready"), peer, deadline, "readiness");
  guard.channel = nullptr;
  connected_[static_cast<std::size_t>(peer)] = true;
  RINGLET_LOG(trace, "rdma: rank ", rank, " connected to peer ", peer, " with ", mine.qps,
              " queue pairs");
  return std::make_unique<RdmaConnection>(engine_, std::move(channel));
}

}  // namespace
}  // namespace rdma

bool hca_selects(std::string_view spec, std::string_view device, int port) {
  if (spec.empty()) return true;
  bool exclude = false, exact = false;
  if (spec.front() == '^') {
    exclude = true;
    spec.remove_prefix(1);
  }
  if (!spec.empty() && spec.front() == '=') {
    exact = true;
    spec.remove_prefix(1);
  }
  bool any = false;
  while (!spec.empty() && !any) {
    const std::size_t comma = spec.find(',');
    std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    int want_port = -1;
    if (const std::size_t colon = item.find(':'); colon != std::string_view::npos) {
      want_port = std::atoi(std::string(item.substr(colon + 1)).c_str());
      item = item.substr(0, colon);
    }
    if (item.empty()) continue;
    const bool name_ok = exact ? device == item : device.substr(0, item.size()) == item;
    any = name_ok && (want_port < 0 || want_port == port);
  }
  return exclude ? !any : any;
}

RdmaProbe probe_rdma(const RdmaOptions& options) {
  RdmaProbe out;
  try {
    const rdma::Verbs& v = rdma::load_verbs(options.library);
    rdma::Selection s = rdma::select_ports(v, options.hca);
    if (s.eligible.empty()) {
      out.reason = rdma::why_none(s, options, v.library);
      return out;
    }
    const rdma::PortInfo& p = rdma::pick(s, options);
    out.usable = true;
    out.device = p.device;
    out.port = p.port;
    out.reason = rdma::describe(p);
  } catch (const Error& e) {
    out.reason = e.cause();
  } catch (const std::exception& e) {
    out.reason = e.what();
  }
  return out;
}

std::unique_ptr<Transport> make_rdma_transport(const RdmaOptions& options) {
  RINGLET_CHECK(options.publish && options.lookup,
                "rdma: the transport needs the rendezvous store to exchange connection records");
  const rdma::Verbs& v = rdma::load_verbs(options.library);
  rdma::Selection s = rdma::select_ports(v, options.hca);
  if (s.eligible.empty()) {
    throw Error(ErrorCode::transport,
                str_cat("rdma: rank ", options.rank, ": ", rdma::why_none(s, options, v.library)),
                {options.rank});
  }
  const rdma::PortInfo& p = rdma::pick(s, options);
  auto engine = std::make_shared<rdma::Engine>(v, p.device, p.port, options.gid_index, options.rank,
                                               options.abort_flag, options.oversubscribed);
  return std::make_unique<rdma::RdmaTransport>(options, std::move(engine));
}

}  // namespace ringlet::transport
