// SPDX-License-Identifier: Apache-2.0
// Collective fingerprints: names, wire form and the agreement check.
#include "src/fingerprint.hpp"

#include "src/common/str_cat.hpp"

namespace ringlet {
namespace {

constexpr std::uint32_t kMagic = kFingerprintMagic;

}  // namespace

std::string_view to_string(CollectiveKind kind) noexcept {
  switch (kind) {
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
    case CollectiveKind::allreduce_list:
      return "allreduce";
  }
  return "unknown";
}

std::string describe(const Fingerprint& f) {
  std::string s = str_cat(to_string(f.kind), "(");
  switch (f.kind) {
    case CollectiveKind::allreduce:
    case CollectiveKind::reduce_scatter:
      return str_cat(s, "count=", f.count, ", ", to_string(f.type), ", ", to_string(f.op), ")");
    case CollectiveKind::broadcast:
      return str_cat(s, "count=", f.count, ", ", to_string(f.type), ", root=", f.root, ")");
    case CollectiveKind::allgather:
      return str_cat(s, "count=", f.count, ", ", to_string(f.type), ")");
    case CollectiveKind::allreduce_list:
      return str_cat(s, "list of total count=", f.count,
                     ", digest=", static_cast<std::uint32_t>(f.root), ", ", to_string(f.op), ")");
    case CollectiveKind::barrier:
    case CollectiveKind::dup:
      break;
  }
  return s + ")";
}

Fingerprint decode(const WireFingerprint& w) noexcept {
  return Fingerprint{w.seq,
                     static_cast<CollectiveKind>(w.kind),
                     static_cast<DataType>(w.type),
                     static_cast<ReduceOp>(w.op),
                     w.root,
                     w.count};
}

bool looks_like_fingerprint(const WireFingerprint& w) noexcept { return w.magic == kMagic; }

void check_agreement(int peer, const WireFingerprint& h, int self, const Fingerprint& mine) {
  if (h.magic != kMagic || h.version != kCollectiveProtocolVersion) {
    throw Error(ErrorCode::mismatch,
                str_cat("rank ", peer, " sent a collective header of protocol version ", h.version,
                        " (magic ", h.magic, ") where rank ", self, " expected version ",
                        kCollectiveProtocolVersion),
                {peer, self});
  }
  const Fingerprint theirs = decode(h);
  if (theirs != mine) {
    throw Error(
        ErrorCode::mismatch,
        str_cat("rank ", peer, " called ", describe(theirs), " as collective #", h.seq,
                " while rank ", self, " called ", describe(mine), " as collective #", mine.seq),
        {peer, self});
  }
}

}  // namespace ringlet
