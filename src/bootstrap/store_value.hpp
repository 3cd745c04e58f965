// SPDX-License-Identifier: Apache-2.0
// What every store shares about values: add() counters, stored as decimal text so that
// get_string() shows them readably, and the rule of claims and owned keys (Store::claim,
// Store::set_owned), so that every store refuses the same writes with the same words.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ringlet::bootstrap::detail {

// Parses a counter value; nullopt when `value` is not a decimal int64.
std::optional<std::int64_t> parse_counter(std::span<const std::byte> value);

// Encodes a counter value.
std::vector<std::byte> encode_counter(std::int64_t value);

// old + delta, or nullopt on int64 overflow.
std::optional<std::int64_t> checked_add(std::int64_t old, std::int64_t delta);

// Who may write a claim or an owned key: the holder of claim `claim` with `token`. A claim
// owns itself (`claim` is its own key).
struct KeyOwner {
  std::string claim;
  std::vector<std::byte> token;
};

// Throws Error(invalid_argument) unless `token` is a valid claim token (1 to
// kMaxClaimTokenBytes bytes).
void check_claim_token(std::span<const std::byte> token);

// Whether claim(key, token) succeeds on a key that exists (`exists`) with owner `owner`
// (null: a plain key, or none).
bool claim_granted(std::string_view key, std::span<const std::byte> token, bool exists,
                   const KeyOwner* owner);

// Why a plain `op` ("set", "add", "remove") of `key`, which `owner` owns, is refused.
std::string plain_write_refusal(std::string_view op, std::string_view key, const KeyOwner& owner);

// Why set_owned(claim_key, token, key, ...) is refused, or empty when it is allowed:
// `claim` is the owner record of `claim_key` (null: `claim_key` is no claim), `exists`
// whether `key` holds a value, `owner` the owner record of `key` (null: none).
std::string owned_write_refusal(std::string_view claim_key, std::span<const std::byte> token,
                                const KeyOwner* claim, std::string_view key, bool exists,
                                const KeyOwner* owner);

}  // namespace ringlet::bootstrap::detail
