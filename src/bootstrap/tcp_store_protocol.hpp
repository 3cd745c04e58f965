// SPDX-License-Identifier: Apache-2.0
// The TCP store's wire format: handshake, request and reply frames (little-endian).
//
// Handshake (protocol version 4; version 3 had no claims, version 2 no sealed frames). Client to
// server, 48 bytes then the job identity:
//   u32 kStoreMagic0, u32 kStoreMagic1, u32 version, u16 job identity length L (at most
//   kMaxJobIdentityBytes), u16 flags (zero; reserved for authentication), 32-byte client
//   nonce, L bytes of job identity (sent in clear; see LaunchInfo::job_identity).
// Server to client, 48 bytes then the server's job identity:
//   u32 magic0, u32 magic1, u32 version, u8 HelloStatus, u8 0, u16 L, 32-byte server nonce,
//   L bytes of the job identity the server serves.
// A server that sees a wrong magic drops the client without a reply. A server that sees
// another version replies with the first 12 bytes only (its magic and version, which is
// what a version-1 client reads), then closes. A client of another job gets
// HelloStatus::job_mismatch and the server's identity, then the server closes that client;
// nothing else in the store changes.
// Authentication (docs/security.md). The client's hello flags say whether it holds the job's
// secret (kHelloFlagSecret), and so does byte 13 of the server's reply. When exactly one side
// holds one, the status is secret_required or secret_missing and the server closes. When
// both do, the status is ok and the client then proves it first:
//   client: proof_c = HMAC-SHA-256(secret, "ringlet store v2 client" | hello | server nonce)
//   server: 4 bytes: u8 AuthStatus, 3 zero bytes; then, when ok, 32 bytes
//           proof_s = HMAC-SHA-256(secret, "ringlet store v2 server" | hello | server nonce)
// where `hello` is the client's whole hello (with its nonce and job identity). A wrong proof_c
// gets auth_failed and the close; the server counts it under kAuthFailuresKey, which a rank
// whose get() times out reads to say why the key never came. A client that cannot verify
// proof_s has reached something that does not hold the secret and gives up.
// Sealed frames: when both sides hold the secret, every request and reply after the server's
// proof is sealed (AES-256-GCM, src/common/crypto.hpp) as
//   header (16 bytes) | tag (16) | body (key and value, or the value) | tag (16)
// under one key per connection and direction, HKDF-SHA-256(secret, salt = the client's whole
// hello | server nonce, info = kSealInfoClient or kSealInfoServer); the header and the body take
// consecutive counters from 0 in each direction. A frame that fails to open ends the
// connection: the server drops the client, the client fails with Error(transport).
// Request (16-byte header): u8 op, 3 zero bytes, u32 key length, u64 value length, then key
// and value. Reply (16-byte header): u8 status, 7 zero bytes, u64 value length, then value.
// Every request gets exactly one reply, except cancel, which only turns a pending get's reply
// into status cancelled (and gets none itself when no get is pending).
// claim (version 4): the value is the token (1 to kMaxClaimTokenBytes bytes); the reply's
// value is one byte, 1 when the claim is this token's, 0 when another holds the key.
// set_owned (version 4): the key is the key written; the value is encode_owned_value(). A
// write that the rule of claims refuses (Store::set_owned), set/add/remove included, gets
// status refused and the reason as its value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "src/common/crypto.hpp"
#include "src/common/le.hpp"

namespace ringlet::bootstrap::detail {

inline constexpr std::uint32_t kStoreMagic0 = 0x524E474C;  // "RNGL"
inline constexpr std::uint32_t kStoreMagic1 = 0x53544F52;  // "STOR"
inline constexpr std::uint32_t kStoreProtocolVersion = 4;
inline constexpr std::size_t kHelloPrefixBytes = 12;  // magic, magic, version
inline constexpr std::size_t kNonceBytes = 32;
inline constexpr std::size_t kHelloBytes = kHelloPrefixBytes + 4 + kNonceBytes;
inline constexpr std::size_t kHelloReplyBytes = kHelloPrefixBytes + 4 + kNonceBytes;
inline constexpr std::size_t kMaxJobIdentityBytes = 256;
inline constexpr std::size_t kFrameHeaderBytes = 16;
inline constexpr std::size_t kMaxKeyBytes = 4096;
inline constexpr std::size_t kMaxValueBytes = std::size_t{64} << 20;

enum class StoreOp : std::uint8_t {
  set = 1,
  get = 2,
  add = 3,
  remove = 4,
  cancel = 5,
  claim = 6,
  set_owned = 7,
};
enum class HelloStatus : std::uint8_t {
  ok = 0,
  job_mismatch = 2,
  secret_required = 3,  // the server holds a secret, the client none
  secret_missing = 4,   // the client holds a secret, the server none
};
inline constexpr std::uint16_t kHelloFlagSecret = 1;
enum class AuthStatus : std::uint8_t { ok = 0, auth_failed = 1 };
inline constexpr std::size_t kAuthVerdictBytes = 4;
inline constexpr std::size_t kProofBytes = 32;
// Written by the server itself: "<count> <address of the last client that failed>".
inline constexpr std::string_view kAuthFailuresKey = "ringlet.store/auth-failures";
enum class StoreStatus : std::uint8_t {
  ok = 0,
  missing = 1,
  cancelled = 2,
  error = 3,
  refused = 4
};

// set_owned's request value: u32 claim key length, claim key, u32 token length, token, then
// the value written.
std::vector<std::byte> encode_owned_value(std::string_view claim_key,
                                          std::span<const std::byte> token,
                                          std::span<const std::byte> value);
struct OwnedValue {
  std::string_view claim_key;
  std::span<const std::byte> token;
  std::span<const std::byte> value;
};
// The parts of a set_owned request value (views into `bytes`); nullopt when malformed.
std::optional<OwnedValue> decode_owned_value(std::span<const std::byte> bytes);

inline constexpr std::size_t kSealTagBytes = crypto::kGcmTagBytes;
inline constexpr std::size_t kSealedHeaderBytes = kFrameHeaderBytes + kSealTagBytes;
inline constexpr std::string_view kSealInfoClient = "ringlet store v3 client to server";
inline constexpr std::string_view kSealInfoServer = "ringlet store v3 server to client";

struct StoreKeys {
  crypto::Key client_to_server{};
  crypto::Key server_to_client{};
};
// The keys of one connection, from the secret and its handshake.
StoreKeys derive_store_keys(std::string_view secret, std::span<const std::byte> hello,
                            std::span<const std::byte> server_nonce);

// One direction of one connection's sealed frames, in order. Functions over byte spans, so
// that a fuzzer can drive them without sockets.
class FrameSealer {
 public:
  explicit FrameSealer(const crypto::Key& key) : aead_(key) {}
  // The sealed frame of `header` (kFrameHeaderBytes) and `body`.
  std::vector<std::byte> seal(std::span<const std::byte> header, std::span<const std::byte> body);
  // Opens a sealed header (kSealedHeaderBytes) in place; false when it was altered.
  bool open_header(std::span<std::byte> sealed_header);
  // Opens a body followed by its tag (body + kSealTagBytes bytes) in place; false when it was
  // altered.
  bool open_body(std::span<std::byte> body_and_tag);

 private:
  crypto::Aead aead_;
  std::uint64_t counter_ = 0;
};

// The frames are little-endian (src/common/le.hpp).
using le::get_u16;
using le::get_u32;
using le::get_u64;
using le::put_u16;
using le::put_u32;
using le::put_u64;

}  // namespace ringlet::bootstrap::detail
