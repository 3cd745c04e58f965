// SPDX-License-Identifier: Apache-2.0
// The few cryptographic primitives ringlet needs, from OpenSSL's libcrypto (the only file
// that includes its headers is crypto.cpp): random nonces, HMAC-SHA-256, HKDF-SHA-256 and
// AES-256-GCM. Nothing here is home-made: each function is a thin wrapper over one EVP call.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace ringlet::crypto {

inline constexpr std::size_t kNonceBytes = 32;
inline constexpr std::size_t kMacBytes = 32;
inline constexpr std::size_t kKeyBytes = 32;
inline constexpr std::size_t kGcmIvBytes = 12;
inline constexpr std::size_t kGcmTagBytes = 16;

using Nonce = std::array<unsigned char, kNonceBytes>;
using Mac = std::array<unsigned char, kMacBytes>;
using Key = std::array<unsigned char, kKeyBytes>;

// Fills `out` from the operating system's generator (RAND_bytes); throws Error(transport)
// when it fails.
void random_bytes(std::span<unsigned char> out);
Nonce random_nonce();

// HMAC-SHA-256 of the concatenation of `parts` under `key`.
Mac hmac_sha256(std::string_view key, std::initializer_list<std::span<const unsigned char>> parts);

// Constant-time comparison of two MACs.
bool equal(const Mac& a, const Mac& b) noexcept;

// HKDF-SHA-256 (RFC 5869): a 32-byte key from `secret`, `salt` and `info`.
Key hkdf_sha256(std::string_view secret, std::span<const unsigned char> salt,
                std::string_view info);

// AES-256-GCM with one key for one direction of one connection. The 12-byte IV is the
// message counter (never reused under one key: the counter only grows). Not thread-safe.
class Aead {
 public:
  explicit Aead(const Key& key);
  ~Aead();
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;

  // Encrypts `in` into `out` (same size; may be the same memory) with `aad` authenticated
  // but not encrypted; writes the tag. `counter` must differ for every call under this key.
  void seal(std::uint64_t counter, std::span<const unsigned char> aad,
            std::span<const unsigned char> in, unsigned char* out,
            std::array<unsigned char, kGcmTagBytes>& tag);
  // Decrypts and verifies; false when the tag does not match (the output is then garbage
  // and must not be used).
  bool open(std::uint64_t counter, std::span<const unsigned char> aad,
            std::span<const unsigned char> in, unsigned char* out,
            const std::array<unsigned char, kGcmTagBytes>& tag);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Views for the primitives above.
inline std::span<const unsigned char> bytes(std::string_view s) {
  return {reinterpret_cast<const unsigned char*>(s.data()), s.size()};
}
template <std::size_t N>
std::span<const unsigned char> bytes(const std::array<unsigned char, N>& a) {
  return {a.data(), a.size()};
}

// Hexadecimal text of `data` (for secrets that ringlet-run writes; never for logs).
std::string to_hex(std::span<const unsigned char> data);

}  // namespace ringlet::crypto
