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
// Version 3: the socket handshake is a mutual challenge-response (HMAC-SHA-256 under the
// job's secret, docs/security.md) that ends in the acceptor's verdict; frames may be sealed
// with AES-256-GCM.
// Version 4: a sealed payload is a sequence of records of kSealRecordBytes, each with its own
// tag, so that the sender seals record k + 1 while record k is on the wire and the receiver
// opens each record as it arrives. Version 5: error frames also name the lost rank.
inline constexpr std::uint32_t kProtocolVersion = 5;
inline constexpr std::uint32_t kBlobMagic = 0x424c5452;       // "RTLB" little-endian
inline constexpr std::uint32_t kHandshakeMagic = 0x48535452;  // "RTSH" little-endian
inline constexpr std::uint32_t kReplyMagic = 0x50525452;      // "RTRP" little-endian
inline constexpr std::size_t kBlobBytes = 36;
inline constexpr std::size_t kFrameHeaderBytes = 16;
// Messages up to this many bytes travel on the small-message socket, which carries both
// directions (the recursive-doubling path of the communicator stays below it).
inline constexpr std::size_t kSmallMessageBytes = std::size_t{256} << 10;
inline constexpr std::size_t kNonceBytes = 32;
inline constexpr std::size_t kMacBytes = 32;
// Sealed frames: the GCM tag after the header and after the payload.
inline constexpr std::size_t kTagBytes = 16;
// Sealed payloads are split into records of this many bytes (the last one shorter; an empty
// payload is one empty record), each followed by its tag.
inline constexpr std::size_t kSealRecordBytes = std::size_t{64} << 10;
constexpr std::size_t sealed_records(std::size_t length) noexcept {
  return length == 0 ? 1 : (length + kSealRecordBytes - 1) / kSealRecordBytes;
}
// Plaintext bytes of record `i` of a payload of `length` bytes.
constexpr std::size_t sealed_record_length(std::size_t length, std::size_t i) noexcept {
  const std::size_t from = i * kSealRecordBytes;
  return length - from < kSealRecordBytes ? length - from : kSealRecordBytes;
}
// A sealed payload's bytes on the wire: the records and their tags.
constexpr std::size_t sealed_wire_bytes(std::size_t length) noexcept {
  return length + sealed_records(length) * kTagBytes;
}
// Error frames: the rank where the failure began and the rank that was lost (0xffffffff:
// none), before the text.
inline constexpr std::size_t kErrorOriginBytes = 8;

// The formats below are little-endian (src/common/le.hpp).
using le::get_u16;
using le::get_u32;
using le::get_u64;
using le::put_u16;
using le::put_u32;
using le::put_u64;

// The socket handshake, four messages:
//   1. connector -> acceptor: Hello (who it is, which socket, its settings, nonce_c)
//   2. acceptor -> connector: Reply (status; nonce_a and proof_a = HMAC(secret, "acceptor",
//      hello, nonce_a) when the status is ok)
//   3. connector -> acceptor: proof_c = HMAC(secret, "connector", hello, nonce_a)
//   4. acceptor -> connector: Verdict (ok, or why the socket is refused)
// A connector that cannot verify proof_a gives up (the acceptor does not hold the secret);
// an acceptor that cannot verify proof_c drops the socket. Both proofs cover both nonces,
// the job, both ranks and the socket's index and count, so a recorded handshake is useless
// on any other socket or later. Without a secret the proofs are HMACs under the empty key:
// the exchange is the same, and it proves nothing (the rank 0 warning says so).
inline constexpr std::uint32_t kFlagSecret = 1;   // the connector holds a secret
inline constexpr std::uint32_t kFlagEncrypt = 2;  // the connector seals its frames
inline constexpr std::size_t kHelloBytes = 40 + kNonceBytes;
inline constexpr std::size_t kReplyBytes = 16 + kNonceBytes + kMacBytes;
inline constexpr std::size_t kVerdictBytes = 16;

struct Hello {
  std::uint32_t magic = kHandshakeMagic;
  std::uint32_t version = kProtocolVersion;
  std::uint64_t job_id = 0;
  std::uint32_t from_rank = 0;
  std::uint32_t to_rank = 0;
  std::uint32_t index = 0;
  std::uint32_t count = 0;
  std::uint32_t flags = 0;
  std::uint32_t reserved = 0;
  std::array<unsigned char, kNonceBytes> nonce{};

  void encode(unsigned char* p) const {
    put_u32(p, magic);
    put_u32(p + 4, version);
    put_u64(p + 8, job_id);
    put_u32(p + 16, from_rank);
    put_u32(p + 20, to_rank);
    put_u32(p + 24, index);
    put_u32(p + 28, count);
    put_u32(p + 32, flags);
    put_u32(p + 36, reserved);
    for (std::size_t i = 0; i < kNonceBytes; ++i) p[40 + i] = nonce[i];
  }
  static Hello decode(const unsigned char* p) {
    Hello h;
    h.magic = get_u32(p);
    h.version = get_u32(p + 4);
    h.job_id = get_u64(p + 8);
    h.from_rank = get_u32(p + 16);
    h.to_rank = get_u32(p + 20);
    h.index = get_u32(p + 24);
    h.count = get_u32(p + 28);
    h.flags = get_u32(p + 32);
    h.reserved = get_u32(p + 36);
    for (std::size_t i = 0; i < kNonceBytes; ++i) h.nonce[i] = p[40 + i];
    return h;
  }
};

// The acceptor's answers (Reply::status and Verdict::status).
enum class HandshakeStatus : std::uint32_t {
  ok = 0,
  version = 1,          // value: the acceptor's protocol version
  job = 2,              // another job
  unexpected = 3,       // not a socket the acceptor expects (ranks, index)
  secret_required = 4,  // the acceptor holds a secret, the connector none
  secret_missing = 5,   // the connector holds a secret, the acceptor none
  auth_failed = 6,      // proof_c is wrong: another secret, or a replay
  encrypt = 7,          // RINGLET_ENCRYPT differs; value: the acceptor's setting
  count = 8,            // sockets per peer differ; value: the acceptor's count
  conflict = 9,         // this socket index of this rank arrived twice
};

struct Reply {
  std::uint32_t magic = kReplyMagic;
  HandshakeStatus status = HandshakeStatus::ok;
  std::uint32_t value = 0;
  std::uint32_t reserved = 0;
  std::array<unsigned char, kNonceBytes> nonce{};
  std::array<unsigned char, kMacBytes> proof{};

  void encode(unsigned char* p) const {
    put_u32(p, magic);
    put_u32(p + 4, static_cast<std::uint32_t>(status));
    put_u32(p + 8, value);
    put_u32(p + 12, reserved);
    for (std::size_t i = 0; i < kNonceBytes; ++i) p[16 + i] = nonce[i];
    for (std::size_t i = 0; i < kMacBytes; ++i) p[16 + kNonceBytes + i] = proof[i];
  }
  static Reply decode(const unsigned char* p) {
    Reply r;
    r.magic = get_u32(p);
    r.status = static_cast<HandshakeStatus>(get_u32(p + 4));
    r.value = get_u32(p + 8);
    r.reserved = get_u32(p + 12);
    for (std::size_t i = 0; i < kNonceBytes; ++i) r.nonce[i] = p[16 + i];
    for (std::size_t i = 0; i < kMacBytes; ++i) r.proof[i] = p[16 + kNonceBytes + i];
    return r;
  }
};

struct Verdict {
  std::uint32_t magic = kReplyMagic;
  HandshakeStatus status = HandshakeStatus::ok;
  std::uint32_t value = 0;
  std::uint32_t reserved = 0;

  void encode(unsigned char* p) const {
    put_u32(p, magic);
    put_u32(p + 4, static_cast<std::uint32_t>(status));
    put_u32(p + 8, value);
    put_u32(p + 12, reserved);
  }
  static Verdict decode(const unsigned char* p) {
    Verdict v;
    v.magic = get_u32(p);
    v.status = static_cast<HandshakeStatus>(get_u32(p + 4));
    v.value = get_u32(p + 8);
    v.reserved = get_u32(p + 12);
    return v;
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
