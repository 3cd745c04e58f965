// SPDX-License-Identifier: Apache-2.0
#include "transports/tcp/handshake.hpp"

namespace ringlet::transport::tcp {
namespace {

constexpr std::string_view kAcceptorLabel = "ringlet tcp v3 acceptor proof";
constexpr std::string_view kConnectorLabel = "ringlet tcp v3 connector proof";

crypto::Mac proof(std::string_view label, std::string_view secret,
                  const unsigned char (&hello)[kHelloBytes], const crypto::Nonce& nonce_a) {
  return crypto::hmac_sha256(
      secret, {crypto::bytes(label), std::span<const unsigned char>(hello, kHelloBytes),
               crypto::bytes(nonce_a)});
}

}  // namespace

crypto::Mac acceptor_proof(std::string_view secret, const unsigned char (&hello)[kHelloBytes],
                           const crypto::Nonce& nonce_a) {
  return proof(kAcceptorLabel, secret, hello, nonce_a);
}

crypto::Mac connector_proof(std::string_view secret, const unsigned char (&hello)[kHelloBytes],
                            const crypto::Nonce& nonce_a) {
  return proof(kConnectorLabel, secret, hello, nonce_a);
}

SocketKeys derive_socket_keys(std::string_view secret, const unsigned char (&hello)[kHelloBytes],
                              const crypto::Nonce& nonce_a) {
  unsigned char salt[kHelloBytes + kNonceBytes];
  std::copy(hello, hello + kHelloBytes, salt);
  std::copy(nonce_a.begin(), nonce_a.end(), salt + kHelloBytes);
  SocketKeys k;
  k.connector_to_acceptor =
      crypto::hkdf_sha256(secret, salt, "ringlet tcp v3 connector to acceptor");
  k.acceptor_to_connector =
      crypto::hkdf_sha256(secret, salt, "ringlet tcp v3 acceptor to connector");
  return k;
}

}  // namespace ringlet::transport::tcp
