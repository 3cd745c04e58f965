// SPDX-License-Identifier: Apache-2.0
// The tcp transport's wire formats: address blob, socket handshake and frame header.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "src/common/le.hpp"

namespace ringlet::transport::tcp {

// Bumped on any change of the formats below.
// Version 2: data frames carry their send's sequence number in `code`; error frames lead
// with the origin rank.
inline constexpr std::uint32_t kProtocolVersion = 2;
inline constexpr std::uint32_t kBlobMagic = 0x424c5452;       // "RTLB" little-endian
inline constexpr std::uint32_t kHandshakeMagic = 0x48535452;  // "RTSH" little-endian
inline constexpr std::size_t kBlobBytes = 36;
inline constexpr std::size_t kHandshakeBytes = 64;
inline constexpr std::size_t kFrameHeaderBytes = 16;
// Messages up to this many bytes travel on the small-message socket, which carries both
// directions (the recursive-doubling path of the communicator stays below it).
inline constexpr std::size_t kSmallMessageBytes = std::size_t{256} << 10;
inline constexpr std::size_t kAuthBytes = 32;
// Error frames: the rank where the failure began, before the text.
inline constexpr std::size_t kErrorOriginBytes = 4;

// The formats below are little-endian (src/common/le.hpp).
using le::get_u16;
using le::get_u32;
using le::get_u64;
using le::put_u16;
using le::put_u32;
using le::put_u64;

// The first bytes on every socket, sent by the connecting side: who it is, which socket
// of which peer pair this is. `auth` is reserved for the per-job secret (zero for now).
struct Handshake {
  std::uint32_t magic = kHandshakeMagic;
  std::uint32_t version = kProtocolVersion;
  std::uint64_t job_id = 0;
  std::uint32_t from_rank = 0;
  std::uint32_t to_rank = 0;
  std::uint32_t index = 0;
  std::uint32_t count = 0;
  std::array<unsigned char, kAuthBytes> auth{};

  void encode(unsigned char* p) const {
    put_u32(p, magic);
    put_u32(p + 4, version);
    put_u64(p + 8, job_id);
    put_u32(p + 16, from_rank);
    put_u32(p + 20, to_rank);
    put_u32(p + 24, index);
    put_u32(p + 28, count);
    for (std::size_t i = 0; i < kAuthBytes; ++i) p[32 + i] = auth[i];
  }
  static Handshake decode(const unsigned char* p) {
    Handshake h;
    h.magic = get_u32(p);
    h.version = get_u32(p + 4);
    h.job_id = get_u64(p + 8);
    h.from_rank = get_u32(p + 16);
    h.to_rank = get_u32(p + 20);
    h.index = get_u32(p + 24);
    h.count = get_u32(p + 28);
    for (std::size_t i = 0; i < kAuthBytes; ++i) h.auth[i] = p[32 + i];
    return h;
  }
};

enum class FrameKind : std::uint32_t { data = 1, error = 2 };

// Precedes every message: data frames carry the payload of one post_send and the low 32 bits
// of its sequence number on the connection (in `code`); error frames an ErrorCode (in
// `code`), the origin rank and the text.
struct FrameHeader {
  FrameKind kind = FrameKind::data;
  std::uint32_t code = 0;
  std::uint64_t length = 0;

  void encode(unsigned char* p) const {
    put_u32(p, static_cast<std::uint32_t>(kind));
    put_u32(p + 4, code);
    put_u64(p + 8, length);
  }
  static FrameHeader decode(const unsigned char* p) {
    FrameHeader h;
    h.kind = static_cast<FrameKind>(get_u32(p));
    h.code = get_u32(p + 4);
    h.length = get_u64(p + 8);
    return h;
  }
};

// What local_address() returns: the listening address and port, the job and the version.
struct AddressBlob {
  std::uint32_t magic = kBlobMagic;
  std::uint32_t version = kProtocolVersion;
  std::uint64_t job_id = 0;
  std::uint16_t family = 0;              // AF_INET or AF_INET6
  std::uint16_t port = 0;                // host order
  std::array<unsigned char, 16> addr{};  // network order, 4 or 16 bytes used

  std::vector<std::byte> encode() const {
    std::vector<std::byte> out(kBlobBytes);
    auto* p = reinterpret_cast<unsigned char*>(out.data());
    put_u32(p, magic);
    put_u32(p + 4, version);
    put_u64(p + 8, job_id);
    put_u16(p + 16, family);
    put_u16(p + 18, port);
    for (std::size_t i = 0; i < 16; ++i) p[20 + i] = addr[i];
    return out;
  }
  // The caller checks magic and the size (decode requires kBlobBytes bytes).
  static AddressBlob decode(std::span<const std::byte> in) {
    const auto* p = reinterpret_cast<const unsigned char*>(in.data());
    AddressBlob b;
    b.magic = get_u32(p);
    b.version = get_u32(p + 4);
    b.job_id = get_u64(p + 8);
    b.family = get_u16(p + 16);
    b.port = get_u16(p + 18);
    for (std::size_t i = 0; i < 16; ++i) b.addr[i] = p[20 + i];
    return b;
  }
};

}  // namespace ringlet::transport::tcp
