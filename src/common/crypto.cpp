// SPDX-License-Identifier: Apache-2.0
// Wrappers over OpenSSL's libcrypto (EVP): the only file that includes its headers.
#include "src/common/crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>

#include "include/ringlet/ringlet.hpp"
#include "src/common/str_cat.hpp"

namespace ringlet::crypto {
namespace {

[[noreturn]] void fail(const char* what) {
  throw Error(ErrorCode::transport, str_cat("libcrypto: ", what, " failed"));
}

int checked_int(std::size_t n) {
  if (n > static_cast<std::size_t>(INT_MAX)) fail("a buffer larger than 2 GiB");
  return static_cast<int>(n);
}

}  // namespace

void random_bytes(std::span<unsigned char> out) {
  if (RAND_bytes(out.data(), checked_int(out.size())) != 1) fail("RAND_bytes");
}

Nonce random_nonce() {
  Nonce n{};
  random_bytes(n);
  return n;
}

Mac hmac_sha256(std::string_view key, std::initializer_list<std::span<const unsigned char>> parts) {
  struct Free {
    void operator()(EVP_MAC* m) const noexcept { EVP_MAC_free(m); }
    void operator()(EVP_MAC_CTX* c) const noexcept { EVP_MAC_CTX_free(c); }
  };
  static EVP_MAC* const hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (hmac == nullptr) fail("EVP_MAC_fetch(HMAC)");
  std::unique_ptr<EVP_MAC_CTX, Free> ctx(EVP_MAC_CTX_new(hmac));
  if (!ctx) fail("EVP_MAC_CTX_new");
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                         OSSL_PARAM_construct_end()};
  // An empty key is legal HMAC; ringlet never authenticates without a secret.
  static const unsigned char empty = 0;
  const auto* k = key.empty() ? &empty : reinterpret_cast<const unsigned char*>(key.data());
  if (EVP_MAC_init(ctx.get(), k, key.size(), params) != 1) fail("EVP_MAC_init");
  for (auto part : parts) {
    if (!part.empty() && EVP_MAC_update(ctx.get(), part.data(), part.size()) != 1) {
      fail("EVP_MAC_update");
    }
  }
  Mac out{};
  std::size_t len = 0;
  if (EVP_MAC_final(ctx.get(), out.data(), &len, out.size()) != 1 || len != out.size()) {
    fail("EVP_MAC_final");
  }
  return out;
}

bool equal(const Mac& a, const Mac& b) noexcept {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Key hkdf_sha256(std::string_view secret, std::span<const unsigned char> salt,
                std::string_view info) {
  struct Free {
    void operator()(EVP_PKEY_CTX* c) const noexcept { EVP_PKEY_CTX_free(c); }
  };
  std::unique_ptr<EVP_PKEY_CTX, Free> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  Key out{};
  std::size_t len = out.size();
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), salt.data(), checked_int(salt.size())) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), reinterpret_cast<const unsigned char*>(secret.data()),
                                 checked_int(secret.size())) != 1 ||
      EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), reinterpret_cast<const unsigned char*>(info.data()),
                                  checked_int(info.size())) != 1 ||
      EVP_PKEY_derive(ctx.get(), out.data(), &len) != 1 || len != out.size()) {
    fail("HKDF-SHA-256");
  }
  return out;
}

struct Aead::State {
  EVP_CIPHER_CTX* enc = nullptr;
  EVP_CIPHER_CTX* dec = nullptr;
  ~State() {
    EVP_CIPHER_CTX_free(enc);
    EVP_CIPHER_CTX_free(dec);
  }
};

Aead::Aead(const Key& key) : state_(std::make_unique<State>()) {
  state_->enc = EVP_CIPHER_CTX_new();
  state_->dec = EVP_CIPHER_CTX_new();
  if (state_->enc == nullptr || state_->dec == nullptr ||
      EVP_EncryptInit_ex(state_->enc, EVP_aes_256_gcm(), nullptr, key.data(), nullptr) != 1 ||
      EVP_DecryptInit_ex(state_->dec, EVP_aes_256_gcm(), nullptr, key.data(), nullptr) != 1) {
    fail("AES-256-GCM set-up");
  }
}

Aead::~Aead() = default;

namespace {

std::array<unsigned char, kGcmIvBytes> iv_of(std::uint64_t counter) {
  std::array<unsigned char, kGcmIvBytes> iv{};
  for (int i = 0; i < 8; ++i) iv[4 + i] = static_cast<unsigned char>(counter >> (8 * i));
  return iv;
}

// GCM in pieces below 2 GiB each (EVP's lengths are int).
constexpr std::size_t kPiece = std::size_t{1} << 30;

}  // namespace

void Aead::seal(std::uint64_t counter, std::span<const unsigned char> aad,
                std::span<const unsigned char> in, unsigned char* out,
                std::array<unsigned char, kGcmTagBytes>& tag) {
  EVP_CIPHER_CTX* c = state_->enc;
  auto iv = iv_of(counter);
  int n = 0;
  if (EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, iv.data()) != 1) fail("GCM init");
  if (!aad.empty() && EVP_EncryptUpdate(c, nullptr, &n, aad.data(), checked_int(aad.size())) != 1) {
    fail("GCM aad");
  }
  for (std::size_t off = 0; off < in.size(); off += kPiece) {
    const int len = checked_int(std::min(kPiece, in.size() - off));
    if (EVP_EncryptUpdate(c, out + off, &n, in.data() + off, len) != 1) fail("GCM encrypt");
  }
  if (EVP_EncryptFinal_ex(c, out + in.size(), &n) != 1) fail("GCM final");
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, static_cast<int>(tag.size()), tag.data()) != 1) {
    fail("GCM tag");
  }
}

bool Aead::open(std::uint64_t counter, std::span<const unsigned char> aad,
                std::span<const unsigned char> in, unsigned char* out,
                const std::array<unsigned char, kGcmTagBytes>& tag) {
  EVP_CIPHER_CTX* c = state_->dec;
  auto iv = iv_of(counter);
  int n = 0;
  if (EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, iv.data()) != 1) fail("GCM init");
  if (!aad.empty() && EVP_DecryptUpdate(c, nullptr, &n, aad.data(), checked_int(aad.size())) != 1) {
    fail("GCM aad");
  }
  for (std::size_t off = 0; off < in.size(); off += kPiece) {
    const int len = checked_int(std::min(kPiece, in.size() - off));
    if (EVP_DecryptUpdate(c, out + off, &n, in.data() + off, len) != 1) fail("GCM decrypt");
  }
  auto t = tag;
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, static_cast<int>(t.size()), t.data()) != 1) {
    fail("GCM tag");
  }
  return EVP_DecryptFinal_ex(c, out + in.size(), &n) == 1;
}

std::string to_hex(std::span<const unsigned char> data) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(2 * data.size());
  for (unsigned char b : data) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

}  // namespace ringlet::crypto
