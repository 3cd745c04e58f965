// SPDX-License-Identifier: Apache-2.0
// Counter values of add() (decimal int64 text) and the rule of claims, shared by every store.
#include "src/bootstrap/store_value.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>

#include "src/bootstrap/store.hpp"
#include "src/common/check.hpp"

namespace ringlet::bootstrap::detail {

std::optional<std::int64_t> parse_counter(std::span<const std::byte> value) {
  const char* begin = reinterpret_cast<const char*>(value.data());
  const char* end = begin + value.size();
  if (begin == end) return std::nullopt;
  std::int64_t x = 0;
  auto [ptr, ec] = std::from_chars(begin, end, x);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return x;
}

std::vector<std::byte> encode_counter(std::int64_t value) {
  std::string s = std::to_string(value);
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

std::optional<std::int64_t> checked_add(std::int64_t old, std::int64_t delta) {
  std::int64_t out = 0;
  if (__builtin_add_overflow(old, delta, &out)) return std::nullopt;
  return out;
}

namespace {

bool same_token(const KeyOwner& owner, std::span<const std::byte> token) {
  return std::equal(owner.token.begin(), owner.token.end(), token.begin(), token.end());
}

}  // namespace

void check_claim_token(std::span<const std::byte> token) {
  if (token.empty() || token.size() > kMaxClaimTokenBytes) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("store: a claim token has 1 to ", kMaxClaimTokenBytes, " bytes, not ",
                        token.size()));
  }
}

bool claim_granted(std::string_view key, std::span<const std::byte> token, bool exists,
                   const KeyOwner* owner) {
  if (!exists) return true;
  return owner != nullptr && owner->claim == key && same_token(*owner, token);
}

std::string plain_write_refusal(std::string_view op, std::string_view key, const KeyOwner& owner) {
  if (owner.claim == key) {
    return str_cat("store: ", op, " of key '", key, "' refused: it is a claim, which nothing ",
                   "replaces or removes");
  }
  return str_cat("store: ", op, " of key '", key, "' refused: it belongs to the holder of claim '",
                 owner.claim, "', and only that claimant may write it");
}

std::string owned_write_refusal(std::string_view claim_key, std::span<const std::byte> token,
                                const KeyOwner* claim, std::string_view key, bool exists,
                                const KeyOwner* owner) {
  if (claim == nullptr || claim->claim != claim_key) {
    return str_cat("store: key '", key, "' not written: '", claim_key, "' is not a claim");
  }
  if (!same_token(*claim, token)) {
    return str_cat("store: key '", key, "' not written: claim '", claim_key,
                   "' is held by another claimant");
  }
  if (key == claim_key) {
    return str_cat("store: key '", key, "' not written: it is a claim, which nothing replaces");
  }
  if (owner != nullptr) {
    if (owner->claim == claim_key && same_token(*owner, token)) return {};
    return str_cat("store: key '", key, "' not written: it belongs to the holder of claim '",
                   owner->claim, "'");
  }
  if (exists) {
    return str_cat("store: key '", key, "' not written: another writer set it before the holder ",
                   "of claim '", claim_key, "' did");
  }
  return {};
}

}  // namespace ringlet::bootstrap::detail
