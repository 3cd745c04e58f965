// SPDX-License-Identifier: Apache-2.0
// FNV-1a, 64 bits: the one digest of values that ranks compare for equality (the settings
// that must agree, the job identity, a tensor list's counts and types). Not cryptographic:
// never for anything an attacker may choose to collide (src/common/crypto.hpp is for that).
#pragma once

#include <cstdint>
#include <string_view>

namespace ringlet {

inline constexpr std::uint64_t kFnv1a64Basis = 14695981039346656037ULL;
inline constexpr std::uint64_t kFnv1a64Prime = 1099511628211ULL;

// The digest of `bytes`, continuing from `h` (the basis to start one).
constexpr std::uint64_t fnv1a64(std::string_view bytes, std::uint64_t h = kFnv1a64Basis) noexcept {
  for (char ch : bytes) h = (h ^ static_cast<unsigned char>(ch)) * kFnv1a64Prime;
  return h;
}

// Continues `h` over the 8 bytes of `v`, least significant first.
constexpr std::uint64_t fnv1a64(std::uint64_t v, std::uint64_t h) noexcept {
  for (int i = 0; i < 8; ++i) h = (h ^ ((v >> (8 * i)) & 0xff)) * kFnv1a64Prime;
  return h;
}

}  // namespace ringlet
