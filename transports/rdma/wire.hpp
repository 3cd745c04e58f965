// SPDX-License-Identifier: Apache-2.0
// The rdma transport's wire formats: the address blob (through the store), the per-pair
// connection record (through the store), the immediate data of every write, and the error
// record a failing rank writes into its peer's error area.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "src/common/le.hpp"

namespace ringlet::transport::rdma {

// Bumped on any change of the formats below.
inline constexpr std::uint32_t kProtocolVersion = 1;
inline constexpr std::uint32_t kBlobMagic = 0x424c5252;  // "RRLB" little-endian
inline constexpr std::uint32_t kInfoMagic = 0x49515252;  // "RRQI"
inline constexpr std::size_t kBlobBytes = 16;
inline constexpr int kMaxQps = 16;

using le::get_u32;
using le::get_u64;
using le::put_u32;
using le::put_u64;

// local_address(): says "rdma" so that a peer on another transport is a clear mismatch.
struct AddressBlob {
  std::uint32_t magic = kBlobMagic;
  std::uint32_t version = kProtocolVersion;
  std::uint64_t job_id = 0;

  std::vector<std::byte> encode() const {
    std::vector<std::byte> out(kBlobBytes);
    put_u32(out.data(), magic);
    put_u32(out.data() + 4, version);
    put_u64(out.data() + 8, job_id);
    return out;
  }
  static AddressBlob decode(std::span<const std::byte> in) {
    AddressBlob b;
    b.magic = get_u32(in.data());
    b.version = get_u32(in.data() + 4);
    b.job_id = get_u64(in.data() + 8);
    return b;
  }
};

// What one side of a pair publishes under "rdma/<from>-<to>": its queue pairs and where its
// receive slots are. Read only from the (authenticated) rendezvous store.
struct ConnectionInfo {
  std::uint32_t magic = kInfoMagic;
  std::uint32_t version = kProtocolVersion;
  std::uint64_t job_id = 0;
  std::uint32_t from = 0, to = 0;
  std::uint32_t link_layer = 0;  // IBV_LINK_LAYER_*
  std::uint32_t lid = 0;
  std::array<std::uint8_t, 16> gid{};
  std::uint32_t gid_index = 0;
  std::uint32_t mtu = 0;  // enum ibv_mtu
  std::uint32_t slots = 0;
  std::uint32_t slot_bytes = 0;
  std::uint64_t slot_addr = 0;  // the receive slots, then the error area
  std::uint32_t rkey = 0;
  std::uint32_t qps = 0;
  std::array<std::uint32_t, kMaxQps> qpn{};
  std::array<std::uint32_t, kMaxQps> psn{};

  static constexpr std::size_t kBytes = 4 * 12 + 16 + 8 * 2 + 8 * kMaxQps;

  std::vector<std::byte> encode() const {
    std::vector<std::byte> out(kBytes);
    std::byte* p = out.data();
    auto u32 = [&p](std::uint32_t v) {
      put_u32(p, v);
      p += 4;
    };
    u32(magic);
    u32(version);
    put_u64(p, job_id);
    p += 8;
    u32(from);
    u32(to);
    u32(link_layer);
    u32(lid);
    for (std::uint8_t g : gid) *p++ = static_cast<std::byte>(g);
    u32(gid_index);
    u32(mtu);
    u32(slots);
    u32(slot_bytes);
    put_u64(p, slot_addr);
    p += 8;
    u32(rkey);
    u32(qps);
    for (int i = 0; i < kMaxQps; ++i) u32(qpn[static_cast<std::size_t>(i)]);
    for (int i = 0; i < kMaxQps; ++i) u32(psn[static_cast<std::size_t>(i)]);
    return out;
  }
  // False when `in` is not a record of this size.
  static bool decode(std::span<const std::byte> in, ConnectionInfo* c) {
    if (in.size() != kBytes) return false;
    const std::byte* p = in.data();
    auto u32 = [&p]() {
      std::uint32_t v = get_u32(p);
      p += 4;
      return v;
    };
    c->magic = u32();
    c->version = u32();
    c->job_id = get_u64(p);
    p += 8;
    c->from = u32();
    c->to = u32();
    c->link_layer = u32();
    c->lid = u32();
    for (auto& g : c->gid) g = static_cast<std::uint8_t>(*p++);
    c->gid_index = u32();
    c->mtu = u32();
    c->slots = u32();
    c->slot_bytes = u32();
    c->slot_addr = get_u64(p);
    p += 8;
    c->rkey = u32();
    c->qps = u32();
    for (auto& q : c->qpn) q = u32();
    for (auto& q : c->psn) q = u32();
    return true;
  }
};

// The 32-bit immediate of every RDMA WRITE WITH IMM (host order here; big-endian on the
// wire as verbs carry it):
//   bits 30-31  kind: data chunk, last chunk of a message, credits only, error record
//   bits 16-29  receive slots the writer has freed since its last write (credits returned)
//   bits  0-15  the chunk's sequence number modulo 2^16 (data kinds)
// A chunk's slot is its sequence number modulo the slot count, so the receiver reorders
// chunks that arrive out of order across several queue pairs.
enum class ImmKind : std::uint32_t { data = 0, last = 1, credits = 2, error = 3 };
inline constexpr std::uint32_t kMaxCreditsPerImm = (1u << 14) - 1;

inline std::uint32_t make_imm(ImmKind kind, std::uint32_t credits, std::uint64_t seq) {
  return (static_cast<std::uint32_t>(kind) << 30) | ((credits & kMaxCreditsPerImm) << 16) |
         static_cast<std::uint32_t>(seq & 0xffff);
}
inline ImmKind imm_kind(std::uint32_t imm) { return static_cast<ImmKind>(imm >> 30); }
inline std::uint32_t imm_credits(std::uint32_t imm) { return (imm >> 16) & kMaxCreditsPerImm; }
inline std::uint32_t imm_seq(std::uint32_t imm) { return imm & 0xffff; }

// The error area after the receive slots: one record, written once by a failing peer.
//   u32 code, i32 origin rank, u64 chunks the writer had sent before it, u32 text bytes, text
inline constexpr std::size_t kErrorAreaBytes = 1024;
inline constexpr std::size_t kErrorHeaderBytes = 20;

}  // namespace ringlet::transport::rdma
