// SPDX-License-Identifier: Apache-2.0
// The TCP store's wire format: handshake, request and reply frames (little-endian).
//
// Handshake, client to server (44 bytes): u32 kStoreMagic0, u32 kStoreMagic1, u32 version,
// 32 bytes reserved for an authentication token (zeros). Server to client (12 bytes): its
// magic and version. A server that sees a wrong magic drops the client without a reply; a
// server that sees another version replies, then closes.
// Request (16-byte header): u8 op, 3 zero bytes, u32 key length, u64 value length, then key
// and value. Reply (16-byte header): u8 status, 7 zero bytes, u64 value length, then value.
// Every request gets exactly one reply, except cancel, which only turns a pending get's reply
// into status cancelled (and gets none itself when no get is pending).
#pragma once

#include <cstddef>
#include <cstdint>

#include "src/common/le.hpp"

namespace ringlet::bootstrap::detail {

inline constexpr std::uint32_t kStoreMagic0 = 0x524E474C;  // "RNGL"
inline constexpr std::uint32_t kStoreMagic1 = 0x53544F52;  // "STOR"
inline constexpr std::uint32_t kStoreProtocolVersion = 1;
inline constexpr std::size_t kStoreTokenBytes = 32;
inline constexpr std::size_t kHelloBytes = 12 + kStoreTokenBytes;
inline constexpr std::size_t kHelloReplyBytes = 12;
inline constexpr std::size_t kFrameHeaderBytes = 16;
inline constexpr std::size_t kMaxKeyBytes = 4096;
inline constexpr std::size_t kMaxValueBytes = std::size_t{64} << 20;

enum class StoreOp : std::uint8_t { set = 1, get = 2, add = 3, remove = 4, cancel = 5 };
enum class StoreStatus : std::uint8_t { ok = 0, missing = 1, cancelled = 2, error = 3 };

// The frames are little-endian (src/common/le.hpp).
using le::get_u32;
using le::get_u64;
using le::put_u32;
using le::put_u64;

}  // namespace ringlet::bootstrap::detail
