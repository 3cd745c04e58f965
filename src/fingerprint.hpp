// SPDX-License-Identifier: Apache-2.0
// What a rank is calling, so that ranks that disagree fail with ErrorCode::mismatch instead
// of exchanging garbage: one definition for the communicator and every local group.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "include/ringlet/ringlet.hpp"

namespace ringlet {

enum class CollectiveKind : std::uint8_t {
  allreduce = 1,
  broadcast,
  allgather,
  reduce_scatter,
  barrier,
  dup,
  // The many-tensor allreduce: count is the total element count, root a digest of the
  // list's counts and types, type the first tensor's type.
  allreduce_list
};

std::string_view to_string(CollectiveKind kind) noexcept;

struct Fingerprint {
  std::uint64_t seq = 0;  // the communicator's sequence number of the collective
  CollectiveKind kind = CollectiveKind::allreduce;
  DataType type = DataType::float32;
  ReduceOp op = ReduceOp::sum;
  std::int32_t root = -1;
  std::uint64_t count = 0;

  friend bool operator==(const Fingerprint&, const Fingerprint&) = default;
};

// "allreduce(count=1024, float32, sum)"; only the fields that matter for the kind.
std::string describe(const Fingerprint& f);

// The fingerprint as it travels between ranks: 32 bytes, host byte order (all ranks of a job
// share one architecture). A local group may keep the same bytes in shared memory.
struct WireFingerprint {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint8_t kind;
  std::uint8_t type;
  std::uint8_t op;
  std::uint8_t reserved;
  std::int32_t root;
  std::uint64_t seq;
  std::uint64_t count;
};
static_assert(sizeof(WireFingerprint) == 32);

// The version of the collective protocol; also checked at the rendezvous.
inline constexpr std::uint32_t kCollectiveProtocolVersion = 1;

inline constexpr std::uint32_t kFingerprintMagic = 0x524c4348;  // "RLCH"

// Inline: every collective encodes its fingerprint on the latency path.
inline WireFingerprint encode(const Fingerprint& fp) noexcept {
  return WireFingerprint{kFingerprintMagic,
                         kCollectiveProtocolVersion,
                         static_cast<std::uint8_t>(fp.kind),
                         static_cast<std::uint8_t>(fp.type),
                         static_cast<std::uint8_t>(fp.op),
                         0,
                         fp.root,
                         fp.seq,
                         fp.count};
}
// The inverse of encode() (magic and version are not checked: see check_agreement).
Fingerprint decode(const WireFingerprint& w) noexcept;
// True when `w` carries the magic of a fingerprint (whatever its version).
bool looks_like_fingerprint(const WireFingerprint& w) noexcept;

// Compares what `peer` sent with what `self` calls; throws Error(mismatch) naming both ranks
// and both calls when they differ, or when the peer speaks another protocol version.
void check_agreement(int peer, const WireFingerprint& theirs, int self, const Fingerprint& mine);

}  // namespace ringlet
