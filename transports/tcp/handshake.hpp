// SPDX-License-Identifier: Apache-2.0
// The cryptography of the tcp socket handshake (wire.hpp describes the messages): the two
// proofs and the per-socket keys of sealed frames, all bound to the hello (job, both ranks,
// socket index and count, settings, nonce_c) and to nonce_a.
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "src/common/crypto.hpp"
#include "src/common/unique_fd.hpp"
#include "transports/tcp/wire.hpp"

namespace ringlet::transport::tcp {

// proof_a: what the acceptor sends; proof_c: what the connector answers.
crypto::Mac acceptor_proof(std::string_view secret, const unsigned char (&hello)[kHelloBytes],
                           const crypto::Nonce& nonce_a);
crypto::Mac connector_proof(std::string_view secret, const unsigned char (&hello)[kHelloBytes],
                            const crypto::Nonce& nonce_a);

// The two directions' AES-256-GCM keys of one socket (HKDF-SHA-256 from the secret, salted
// with the whole handshake).
struct SocketKeys {
  crypto::Key connector_to_acceptor{};
  crypto::Key acceptor_to_connector{};
};
SocketKeys derive_socket_keys(std::string_view secret, const unsigned char (&hello)[kHelloBytes],
                              const crypto::Nonce& nonce_a);

// A socket whose handshake completed; keys when its frames are sealed.
struct Socket {
  UniqueFd fd;
  std::optional<SocketKeys> keys;
};

// One direction of one socket: seals or opens its frames in order (each header and each
// payload record takes the next counter, so no IV repeats under the key).
class FrameCipher {
 public:
  explicit FrameCipher(const crypto::Key& key) : aead_(key) {}
  std::uint64_t next() noexcept { return counter_++; }
  crypto::Aead& aead() noexcept { return aead_; }

 private:
  crypto::Aead aead_;
  std::uint64_t counter_ = 0;
};

}  // namespace ringlet::transport::tcp
