// SPDX-License-Identifier: Apache-2.0
// The job's secret (docs/security.md): the store handshake, the tcp socket handshake and
// sealed frames, attacked from raw sockets and a byte-flipping relay on loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/bootstrap/store.hpp"
#include "src/bootstrap/tcp_store_protocol.hpp"
#include "src/common/crypto.hpp"
#include "src/common/unique_fd.hpp"
#include "src/config.hpp"
#include "tests/common/raw_socket.hpp"
#include "transports/tcp/handshake.hpp"
#include "transports/tcp/transport.hpp"
#include "transports/tcp/wire.hpp"

namespace ringlet {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kJob = 0x5ec0;
const std::string kSecret = "0123456789abcdef0123456789abcdef";
const std::string kOtherSecret = "fedcba9876543210fedcba9876543210";

Deadline in(std::chrono::milliseconds ms) { return Clock::now() + ms; }

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

using test::recv_bytes;
using test::send_bytes;
UniqueFd dial(int port) { return test::dial_loopback(port); }

// --- Configuration ----------------------------------------------------------------------

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::string secret_file(const std::string& contents, mode_t mode) {
  std::string path = (std::filesystem::temp_directory_path() /
                      ("ringlet-secret-" + std::to_string(::getpid()) + "-" + std::to_string(mode)))
                         .string();
  {
    std::ofstream out(path, std::ios::trunc);
    out << contents;
  }
  ::chmod(path.c_str(), mode);
  return path;
}

TEST(SecretConfigTest, ComesFromOptionsThenEnvironmentThenFile) {
  EXPECT_TRUE(resolve_config({}, 2, env_of({})).secret.empty());
  Options o;
  o.secret = kSecret;
  EXPECT_EQ(resolve_config(o, 2, env_of({{"RINGLET_SECRET", kOtherSecret}})).secret, kSecret);
  EXPECT_EQ(resolve_config({}, 2, env_of({{"RINGLET_SECRET", kOtherSecret}})).secret, kOtherSecret);
  const std::string path = secret_file(kSecret + "\n", 0600);
  Config c = resolve_config({}, 2, env_of({{"RINGLET_SECRET_FILE", path}}));
  EXPECT_EQ(c.secret, kSecret);  // without its newline
  EXPECT_FALSE(contains(describe(c), kSecret)) << "the secret must never be printed";
  std::filesystem::remove(path);
}

TEST(SecretConfigTest, AFileOthersMayReadOrAShortSecretIsRefused) {
  const std::string path = secret_file(kSecret, 0644);
  try {
    resolve_config({}, 2, env_of({{"RINGLET_SECRET_FILE", path}}));
    FAIL() << "resolve_config returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::invalid_argument);
    EXPECT_TRUE(contains(e.what(), "RINGLET_SECRET_FILE")) << e.what();
    EXPECT_TRUE(contains(e.what(), "0644")) << e.what();
  }
  std::filesystem::remove(path);
  EXPECT_THROW(resolve_config({}, 2, env_of({{"RINGLET_SECRET", "short"}})), Error);
}

TEST(SecretConfigTest, EncryptionNeedsASecret) {
  try {
    resolve_config({}, 2, env_of({{"RINGLET_ENCRYPT", "1"}}));
    FAIL() << "resolve_config returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::invalid_argument);
    EXPECT_TRUE(contains(e.what(), "RINGLET_SECRET")) << e.what();
  }
  Config c = resolve_config({}, 2, env_of({{"RINGLET_ENCRYPT", "1"}, {"RINGLET_SECRET", kSecret}}));
  EXPECT_TRUE(c.encrypt);
}

// --- The store handshake ------------------------------------------------------------------

namespace store = bootstrap;

std::shared_ptr<store::Store> make_store(bool server, int port, const std::string& secret,
                                         std::chrono::milliseconds wait = 5000ms) {
  store::TcpStoreOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.is_server = server;
  o.deadline = in(wait);
  o.job_identity = "security-test";
  o.secret = secret;
  return store::make_tcp_store(o);
}

// A raw client's hello of the current protocol; returns the server's status and nonce.
struct RawHello {
  std::vector<std::byte> hello;
  std::uint8_t status = 255;
  std::array<std::byte, 32> server_nonce{};
  bool server_has_secret = false;
};
RawHello raw_hello(int fd, bool claim_secret, const std::string& identity = "security-test") {
  using namespace store::detail;
  RawHello h;
  h.hello = test::store_hello(kStoreProtocolVersion, identity, claim_secret ? kHelloFlagSecret : 0);
  EXPECT_TRUE(send_bytes(fd, h.hello.data(), h.hello.size()));
  std::array<std::byte, kHelloReplyBytes> r{};
  if (!recv_bytes(fd, r.data(), r.size())) return h;
  h.status = static_cast<std::uint8_t>(r[12]);
  h.server_has_secret = r[13] != std::byte{0};
  std::memcpy(h.server_nonce.data(), r.data() + 16, 32);
  std::string server_identity(get_u16(r.data() + 14), '\0');
  recv_bytes(fd, server_identity.data(), server_identity.size());
  return h;
}

// A raw set request; true when the server answered it with ok.
bool raw_set(int fd, const std::string& key, const std::string& value) {
  using namespace store::detail;
  std::vector<std::byte> f(kFrameHeaderBytes + key.size() + value.size());
  f[0] = static_cast<std::byte>(StoreOp::set);
  put_u32(f.data() + 4, static_cast<std::uint32_t>(key.size()));
  put_u64(f.data() + 8, value.size());
  std::memcpy(f.data() + kFrameHeaderBytes, key.data(), key.size());
  std::memcpy(f.data() + kFrameHeaderBytes + key.size(), value.data(), value.size());
  if (!send_bytes(fd, f.data(), f.size())) return false;
  std::array<std::byte, kFrameHeaderBytes> r{};
  return recv_bytes(fd, r.data(), r.size()) && r[0] == std::byte{0};
}

TEST(StoreAuthTest, TheRightSecretWorksBothWays) {
  auto server = make_store(true, 0, kSecret);
  const int port = store::tcp_store_port(*server);
  auto client = make_store(false, port, kSecret);
  client->set_string("k", "v");
  EXPECT_EQ(server->get_string("k", in(2s)), "v");
}

TEST(StoreAuthTest, AWrongSecretFailsAtOnceNamingRingletSecretAndIsRecorded) {
  auto server = make_store(true, 0, kSecret);
  const int port = store::tcp_store_port(*server);
  const auto start = Clock::now();
  try {
    make_store(false, port, kOtherSecret, 30000ms);
    FAIL() << "a client with another secret connected";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::transport);
    EXPECT_TRUE(contains(e.what(), "authentication failed")) << e.what();
    EXPECT_TRUE(contains(e.what(), "RINGLET_SECRET")) << e.what();
  }
  EXPECT_LT(Clock::now() - start, 5s);  // at once, not at the deadline
  // The store is undisturbed, and a rank that waits in vain for the refused one hears why.
  auto client = make_store(false, port, kSecret);
  client->set_string("a", "1");
  EXPECT_EQ(client->get_string("a", in(2s)), "1");
  try {
    client->get_string("c/info/1", in(300ms));
    FAIL() << "get returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::timeout);
    EXPECT_TRUE(contains(e.what(), "failed authentication")) << e.what();
  }
}

TEST(StoreAuthTest, NoSecretAgainstAJobWithOneFailsEitherWay) {
  auto server = make_store(true, 0, kSecret);
  const int port = store::tcp_store_port(*server);
  try {
    make_store(false, port, "");
    FAIL() << "a client without a secret connected";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::transport);
    EXPECT_TRUE(contains(e.what(), "RINGLET_SECRET")) << e.what();
  }
  auto open_server = make_store(true, 0, "");
  try {
    make_store(false, store::tcp_store_port(*open_server), kSecret);
    FAIL() << "a client with a secret trusted a server without one";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::transport);
    EXPECT_TRUE(contains(e.what(), "RINGLET_SECRET")) << e.what();
  }
}

// Experiment E6 of the robustness review, first step: rewrite a rank's address in the store.
TEST(StoreAuthTest, AnUnauthenticatedClientCannotRewriteAnAddress) {
  auto server = make_store(true, 0, kSecret);
  const int port = store::tcp_store_port(*server);
  server->set_string("c/addr/2", "the real address");
  {
    // Claims no secret: refused at the hello.
    UniqueFd fd = dial(port);
    RawHello h = raw_hello(fd.get(), false);
    EXPECT_EQ(h.status, static_cast<std::uint8_t>(store::detail::HelloStatus::secret_required));
    EXPECT_FALSE(raw_set(fd.get(), "c/addr/2", "the attacker's proxy"));
  }
  {
    // Claims one and sends a made-up proof: "authentication failed", then closed.
    UniqueFd fd = dial(port);
    RawHello h = raw_hello(fd.get(), true);
    EXPECT_EQ(h.status, 0);
    std::array<unsigned char, 32> proof{};
    ASSERT_TRUE(send_bytes(fd.get(), proof.data(), proof.size()));
    std::array<unsigned char, 4> verdict{};
    ASSERT_TRUE(recv_bytes(fd.get(), verdict.data(), verdict.size()));
    EXPECT_EQ(verdict[0], static_cast<unsigned char>(store::detail::AuthStatus::auth_failed));
    EXPECT_FALSE(raw_set(fd.get(), "c/addr/2", "the attacker's proxy"));
  }
  {
    // Skips authentication and sends a request at once: never served.
    UniqueFd fd = dial(port);
    RawHello h = raw_hello(fd.get(), true);
    EXPECT_FALSE(raw_set(fd.get(), "c/addr/2", "the attacker's proxy"));
  }
  EXPECT_EQ(server->get_string("c/addr/2", in(2s)), "the real address");
}

TEST(StoreAuthTest, AReplayedClientProofIsRefused) {
  auto server = make_store(true, 0, kSecret);
  const int port = store::tcp_store_port(*server);
  // What an eavesdropper recorded of a genuine hello: its bytes and the client's proof over
  // the nonce the server chose then.
  UniqueFd first = dial(port);
  RawHello h = raw_hello(first.get(), true);
  crypto::Mac recorded = crypto::hmac_sha256(
      kSecret, {crypto::bytes("ringlet store v2 client"),
                {reinterpret_cast<const unsigned char*>(h.hello.data()), h.hello.size()},
                {reinterpret_cast<const unsigned char*>(h.server_nonce.data()), 32}});
  first.reset();
  // Replayed on a new connection: the server's nonce is new, so the proof no longer fits.
  UniqueFd fd = dial(port);
  RawHello again = raw_hello(fd.get(), true);
  EXPECT_NE(again.server_nonce, h.server_nonce);
  ASSERT_TRUE(send_bytes(fd.get(), recorded.data(), recorded.size()));
  std::array<unsigned char, 4> verdict{};
  ASSERT_TRUE(recv_bytes(fd.get(), verdict.data(), verdict.size()));
  EXPECT_EQ(verdict[0], static_cast<unsigned char>(store::detail::AuthStatus::auth_failed));
}

// A raw client that passes the handshake with the job's secret; the keys of its sealed frames.
struct RawSession {
  UniqueFd fd;
  std::unique_ptr<store::detail::FrameSealer> out;  // client to server
  std::unique_ptr<store::detail::FrameSealer> in;   // server to client
};
RawSession raw_authenticate(int port) {
  RawSession s;
  s.fd = dial(port);
  RawHello h = raw_hello(s.fd.get(), true);
  EXPECT_EQ(h.status, 0);
  crypto::Mac proof = crypto::hmac_sha256(
      kSecret, {crypto::bytes("ringlet store v2 client"),
                {reinterpret_cast<const unsigned char*>(h.hello.data()), h.hello.size()},
                {reinterpret_cast<const unsigned char*>(h.server_nonce.data()), 32}});
  EXPECT_TRUE(send_bytes(s.fd.get(), proof.data(), proof.size()));
  std::array<unsigned char, 4 + 32> verdict{};
  EXPECT_TRUE(recv_bytes(s.fd.get(), verdict.data(), verdict.size()));
  EXPECT_EQ(verdict[0], 0);
  const auto keys = store::detail::derive_store_keys(kSecret, h.hello, h.server_nonce);
  s.out = std::make_unique<store::detail::FrameSealer>(keys.client_to_server);
  s.in = std::make_unique<store::detail::FrameSealer>(keys.server_to_client);
  return s;
}

std::vector<std::byte> set_frame(const std::string& key, const std::string& value) {
  using namespace store::detail;
  std::vector<std::byte> f(kFrameHeaderBytes + key.size() + value.size());
  f[0] = static_cast<std::byte>(StoreOp::set);
  put_u32(f.data() + 4, static_cast<std::uint32_t>(key.size()));
  put_u64(f.data() + 8, value.size());
  std::memcpy(f.data() + kFrameHeaderBytes, key.data(), key.size());
  std::memcpy(f.data() + kFrameHeaderBytes + key.size(), value.data(), value.size());
  return f;
}

// After the handshake, requests and replies are sealed: an on-path attacker can neither read
// nor rewrite an address, and a client that skips the sealing is not served.
TEST(StoreAuthTest, RequestsAfterTheHandshakeAreSealed) {
  using namespace store::detail;
  auto server = make_store(true, 0, kSecret);
  const int port = store::tcp_store_port(*server);
  server->set_string("c/addr/2", "the real address");
  {
    // A sealed request with the connection's keys is served, and its reply opens.
    RawSession s = raw_authenticate(port);
    std::vector<std::byte> f = set_frame("c/extra", "sealed value");
    std::vector<std::byte> sealed =
        s.out->seal(std::span(f).first(kFrameHeaderBytes), std::span(f).subspan(kFrameHeaderBytes));
    // The value does not travel in clear.
    const std::string wire(reinterpret_cast<const char*>(sealed.data()), sealed.size());
    EXPECT_FALSE(contains(wire, "sealed value"));
    ASSERT_TRUE(send_bytes(s.fd.get(), sealed.data(), sealed.size()));
    std::array<std::byte, kSealedHeaderBytes + kSealTagBytes> r{};
    ASSERT_TRUE(recv_bytes(s.fd.get(), r.data(), r.size()));
    ASSERT_TRUE(s.in->open_header(std::span(r).first(kSealedHeaderBytes)));
    EXPECT_EQ(r[0], std::byte{0});
    EXPECT_EQ(get_u64(r.data() + 8), 0u);
    EXPECT_TRUE(s.in->open_body(std::span(r).subspan(kSealedHeaderBytes)));
    EXPECT_EQ(server->get_string("c/extra", in(2s)), "sealed value");
  }
  {
    // An authenticated connection that sends a request in clear is dropped unserved.
    RawSession s = raw_authenticate(port);
    EXPECT_FALSE(raw_set(s.fd.get(), "c/addr/2", "the attacker's proxy"));
  }
  {
    // A sealed request with one byte flipped in flight is dropped unserved.
    RawSession s = raw_authenticate(port);
    std::vector<std::byte> f = set_frame("c/addr/2", "the attacker's proxy");
    std::vector<std::byte> sealed =
        s.out->seal(std::span(f).first(kFrameHeaderBytes), std::span(f).subspan(kFrameHeaderBytes));
    sealed[kSealedHeaderBytes + 3] ^= std::byte{0x20};
    ASSERT_TRUE(send_bytes(s.fd.get(), sealed.data(), sealed.size()));
    std::byte b{};
    EXPECT_FALSE(recv_bytes(s.fd.get(), &b, 1));
  }
  EXPECT_EQ(server->get_string("c/addr/2", in(2s)), "the real address");
  // The store's own clients still work after the refused ones.
  auto client = make_store(false, port, kSecret);
  client->set_string("big", std::string(100000, 'x'));
  EXPECT_EQ(client->get_string("big", in(2s)), std::string(100000, 'x'));
}

// The client side: a server that does not hold the secret cannot pass itself off as rank 0.
TEST(StoreAuthTest, AServerThatCannotProveTheSecretIsRefused) {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&sin), sizeof(sin)), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  socklen_t len = sizeof(sin);
  ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&sin), &len);
  const int port = ntohs(sin.sin_port);
  std::thread fake([&] {
    using namespace store::detail;
    UniqueFd c(::accept(listener.get(), nullptr, nullptr));
    std::vector<std::byte> hello(kHelloBytes + 13);
    if (!recv_bytes(c.get(), hello.data(), hello.size())) return;
    std::array<std::byte, kHelloReplyBytes> r{};
    put_u32(r.data(), kStoreMagic0);
    put_u32(r.data() + 4, kStoreMagic1);
    put_u32(r.data() + 8, kStoreProtocolVersion);
    r[13] = std::byte{1};
    put_u16(r.data() + 14, 13);
    send_bytes(c.get(), r.data(), r.size());
    send_bytes(c.get(), "security-test", 13);
    std::array<std::byte, 32> proof{};
    if (!recv_bytes(c.get(), proof.data(), proof.size())) return;
    std::array<std::byte, 4 + 32> ok{};  // "ok" and a proof it cannot compute
    send_bytes(c.get(), ok.data(), ok.size());
    std::array<std::byte, 1> more{};
    recv_bytes(c.get(), more.data(), 1);
  });
  try {
    make_store(false, port, kSecret);
    ADD_FAILURE() << "the client trusted a server without the secret";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::transport);
    EXPECT_TRUE(contains(e.what(), "failed authentication")) << e.what();
  }
  fake.join();
}

// --- The tcp socket handshake --------------------------------------------------------------

using transport::Connection;
using transport::Transport;
namespace tcp = transport::tcp;

struct GroupOptions {
  std::vector<std::string> secrets;  // per rank; empty: none
  std::vector<bool> encrypt;         // per rank
  int sockets = 1;
};

struct Group {
  std::vector<std::unique_ptr<Transport>> transports;
  std::vector<std::vector<std::byte>> blobs;
};

Group make_group(int n, const GroupOptions& g) {
  Group group;
  for (int r = 0; r < n; ++r) {
    transport::TcpOptions o;
    o.rank = r;
    o.size = n;
    o.job_id = kJob;
    o.bind_address = "127.0.0.1";
    o.sockets = g.sockets;
    if (static_cast<std::size_t>(r) < g.secrets.size()) o.secret = g.secrets[r];
    if (static_cast<std::size_t>(r) < g.encrypt.size()) o.encrypt = g.encrypt[r];
    group.transports.push_back(transport::make_tcp_transport(o));
    group.blobs.push_back(group.transports.back()->local_address());
  }
  return group;
}

int port_of(const std::vector<std::byte>& blob) { return tcp::AddressBlob::decode(blob).port; }

std::vector<std::byte> with_port(std::vector<std::byte> blob, int port) {
  tcp::put_u16(reinterpret_cast<unsigned char*>(blob.data()) + 18,
               static_cast<std::uint16_t>(port));
  return blob;
}

// Rank 0 connects to rank 1 (through `address0to1` when given) while rank 1 accepts; each
// side's exception, if any, is returned.
struct PairResult {
  std::unique_ptr<Connection> c0, c1;
  std::exception_ptr e0, e1;
};
PairResult connect_pair(Group& g, std::chrono::milliseconds wait,
                        std::optional<std::vector<std::byte>> address0to1 = std::nullopt) {
  PairResult r;
  const Deadline deadline = in(wait);
  std::thread t1([&] {
    try {
      r.c1 = g.transports[1]->connect(0, g.blobs[0], deadline);
    } catch (...) {
      r.e1 = std::current_exception();
    }
  });
  try {
    r.c0 = g.transports[0]->connect(1, address0to1 ? *address0to1 : g.blobs[1], deadline);
  } catch (...) {
    r.e0 = std::current_exception();
  }
  t1.join();
  return r;
}

Error error_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    return err;
  }
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::byte>(x >> 24);
  }
  return v;
}

// Sends each size from 0 to 1 and back, and checks every byte.
void ping_pong(PairResult& p, const std::vector<std::size_t>& sizes) {
  unsigned seed = 1;
  for (std::size_t n : sizes) {
    auto a = pattern(n, seed++);
    auto b = pattern(n, seed++);
    std::vector<std::byte> got1(n), got0(n);
    auto s0 = p.c0->post_send(a, nullptr);
    auto r1 = p.c1->post_recv(got1, nullptr);
    auto s1 = p.c1->post_send(b, nullptr);
    auto r0 = p.c0->post_recv(got0, nullptr);
    std::thread t([&] {
      p.c1->wait(r1, in(20s));
      p.c1->wait(s1, in(20s));
    });
    p.c0->wait(s0, in(20s));
    p.c0->wait(r0, in(20s));
    t.join();
    EXPECT_EQ(got1, a) << "0 -> 1, " << n << " bytes";
    EXPECT_EQ(got0, b) << "1 -> 0, " << n << " bytes";
  }
}

TEST(TcpAuthTest, SameSecretConnectsAndCarriesExactBytes) {
  Group g = make_group(2, {{kSecret, kSecret}, {}, 1});
  PairResult p = connect_pair(g, 10s);
  ASSERT_FALSE(p.e0);
  ASSERT_FALSE(p.e1);
  ping_pong(p, {0, 1, 4097, std::size_t{300} << 10, std::size_t{3} << 20});
}

TEST(TcpAuthTest, AWrongSecretFailsTheConnectorAtOnceAndTheAcceptorSaysWhy) {
  Group g = make_group(2, {{kOtherSecret, kSecret}, {}, 1});
  const auto start = Clock::now();
  PairResult p = connect_pair(g, 1500ms);
  ASSERT_TRUE(p.e0);
  Error e0 = error_of(p.e0);
  EXPECT_EQ(e0.error_code(), ErrorCode::transport);
  EXPECT_TRUE(contains(e0.what(), "RINGLET_SECRET")) << e0.what();
  EXPECT_TRUE(contains(e0.what(), "authentication")) << e0.what();
  ASSERT_TRUE(p.e1);
  Error e1 = error_of(p.e1);
  EXPECT_EQ(e1.error_code(), ErrorCode::timeout);  // the job is not failed by a stranger
  EXPECT_TRUE(contains(e1.what(), "refused")) << e1.what();
  EXPECT_LT(Clock::now() - start, 5s);
}

TEST(TcpAuthTest, NoSecretAgainstASecretIsRefusedBothWays) {
  for (int flip = 0; flip < 2; ++flip) {
    GroupOptions o;
    o.secrets =
        flip == 0 ? std::vector<std::string>{"", kSecret} : std::vector<std::string>{kSecret, ""};
    Group g = make_group(2, o);
    PairResult p = connect_pair(g, 1000ms);
    ASSERT_TRUE(p.e0) << flip;
    Error e = error_of(p.e0);
    EXPECT_EQ(e.error_code(), ErrorCode::transport) << e.what();
    EXPECT_TRUE(contains(e.what(), "RINGLET_SECRET")) << e.what();
  }
}

// A raw hello claiming to be rank 0 on socket `index`; returns the acceptor's reply.
tcp::Reply send_hello(int fd, std::uint32_t index, std::uint32_t count, std::uint32_t flags,
                      unsigned char (&hello)[tcp::kHelloBytes],
                      std::uint32_t version = tcp::kProtocolVersion) {
  tcp::Hello h;
  h.version = version;
  h.job_id = kJob;
  h.from_rank = 0;
  h.to_rank = 1;
  h.index = index;
  h.count = count;
  h.flags = flags;
  h.nonce = crypto::random_nonce();
  h.encode(hello);
  EXPECT_TRUE(send_bytes(fd, hello, sizeof(hello)));
  unsigned char buf[tcp::kReplyBytes] = {};
  tcp::Reply r;
  r.magic = 0;
  if (recv_bytes(fd, buf, sizeof(buf))) r = tcp::Reply::decode(buf);
  return r;
}

tcp::Verdict send_proof(int fd, const crypto::Mac& proof) {
  EXPECT_TRUE(send_bytes(fd, proof.data(), proof.size()));
  unsigned char buf[tcp::kVerdictBytes] = {};
  tcp::Verdict v;
  v.magic = 0;
  if (recv_bytes(fd, buf, sizeof(buf))) v = tcp::Verdict::decode(buf);
  return v;
}

// Socket count of a pair with one data socket per direction: control, 2 data, small.
constexpr std::uint32_t kCount = 4;

TEST(TcpAuthTest, AReplayedHandshakeIsDroppedAndTheRealPeerConnects) {
  Group g = make_group(2, {{kSecret, kSecret}, {}, 1});
  // Rank 1 waits for rank 0 in the background.
  std::unique_ptr<Connection> c1;
  std::exception_ptr e1;
  std::thread acceptor([&] {
    try {
      c1 = g.transports[1]->connect(0, g.blobs[0], in(10s));
    } catch (...) {
      e1 = std::current_exception();
    }
  });
  // A recording of a genuine exchange: the hello and rank 0's proof over the nonce rank 1
  // chose then. Replayed, it meets a fresh nonce.
  UniqueFd fd = dial(port_of(g.blobs[1]));
  unsigned char hello[tcp::kHelloBytes];
  tcp::Reply r = send_hello(fd.get(), 0, kCount, tcp::kFlagSecret, hello);
  ASSERT_EQ(r.status, tcp::HandshakeStatus::ok);
  crypto::Nonce old_nonce = crypto::random_nonce();
  tcp::Verdict v = send_proof(fd.get(), tcp::connector_proof(kSecret, hello, old_nonce));
  EXPECT_EQ(v.status, tcp::HandshakeStatus::auth_failed);
  // The job goes on: the real rank 0 connects.
  std::unique_ptr<Connection> c0 = g.transports[0]->connect(1, g.blobs[1], in(10s));
  acceptor.join();
  ASSERT_FALSE(e1);
  PairResult p;
  p.c0 = std::move(c0);
  p.c1 = std::move(c1);
  ping_pong(p, {8, 1 << 20});
}

// The acceptor's side of a connector that proves the secret: the verdict binds the socket.
TEST(TcpAuthTest, ASecondAuthenticatedSocketForAnIndexIsALoudConflict) {
  Group g = make_group(2, {{kSecret, kSecret}, {}, 1});
  std::exception_ptr e1;
  std::thread acceptor([&] {
    try {
      g.transports[1]->connect(0, g.blobs[0], in(10s));
    } catch (...) {
      e1 = std::current_exception();
    }
  });
  std::vector<UniqueFd> keep;
  for (int twice = 0; twice < 2; ++twice) {
    UniqueFd fd = dial(port_of(g.blobs[1]));
    unsigned char hello[tcp::kHelloBytes];
    tcp::Reply r = send_hello(fd.get(), 0, kCount, tcp::kFlagSecret, hello);
    ASSERT_EQ(r.status, tcp::HandshakeStatus::ok);
    ASSERT_TRUE(crypto::equal(r.proof, tcp::acceptor_proof(kSecret, hello, r.nonce)));
    tcp::Verdict v = send_proof(fd.get(), tcp::connector_proof(kSecret, hello, r.nonce));
    EXPECT_EQ(v.status, twice == 0 ? tcp::HandshakeStatus::ok : tcp::HandshakeStatus::conflict);
    keep.push_back(std::move(fd));
  }
  acceptor.join();
  ASSERT_TRUE(e1);
  Error e = error_of(e1);
  EXPECT_EQ(e.error_code(), ErrorCode::mismatch);
  EXPECT_TRUE(contains(e.what(), "twice")) << e.what();
}

// Finding 5 of the robustness review: silent sockets leave by their deadline and never push
// out a real peer.
TEST(TcpAuthTest, AFloodOfSilentSocketsDoesNotEvictTheRealPeer) {
  Group g = make_group(2, {{kSecret, kSecret}, {}, 1});
  std::vector<UniqueFd> flood;
  for (int i = 0; i < 160; ++i) flood.push_back(dial(port_of(g.blobs[1])));
  PairResult p = connect_pair(g, 20s);
  ASSERT_FALSE(p.e0) << error_of(p.e0).what();
  ASSERT_FALSE(p.e1) << error_of(p.e1).what();
  ping_pong(p, {16});
}

TEST(TcpAuthTest, EncryptionSettingsMustAgree) {
  GroupOptions o;
  o.secrets = {kSecret, kSecret};
  o.encrypt = {true, false};
  Group g = make_group(2, o);
  PairResult p = connect_pair(g, 5s);
  ASSERT_TRUE(p.e0);
  ASSERT_TRUE(p.e1);
  for (const auto& e : {error_of(p.e0), error_of(p.e1)}) {
    EXPECT_EQ(e.error_code(), ErrorCode::mismatch) << e.what();
    EXPECT_TRUE(contains(e.what(), "RINGLET_ENCRYPT")) << e.what();
  }
}

TEST(TcpEncryptTest, SealedFramesCarryExactBytesAndErrorReports) {
  GroupOptions o;
  o.secrets = {kSecret, kSecret};
  o.encrypt = {true, true};
  o.sockets = 2;
  Group g = make_group(2, o);
  PairResult p = connect_pair(g, 10s);
  ASSERT_FALSE(p.e0);
  ASSERT_FALSE(p.e1);
  ping_pong(p, {0, 1, 15, 16, 17, 4097, std::size_t{256} << 10, (std::size_t{256} << 10) + 1,
                std::size_t{5} << 20});
  // The control plane's error frames are sealed too, and still name their origin.
  g.transports[0]->control().report_failure(ErrorCode::mismatch, 0, "rank 0 saw a mismatch");
  std::vector<std::byte> buf(8);
  auto r = p.c1->post_recv(buf, nullptr);
  try {
    p.c1->wait(r, in(5s));
    FAIL() << "wait returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::mismatch) << e.what();
    EXPECT_TRUE(contains(e.what(), "rank 0 saw a mismatch")) << e.what();
  }
}

// A relay between rank 0 and rank 1's real port that flips one byte of what rank 0 sends
// on each socket, `flip_at` bytes after its handshake.
class FlippingRelay {
 public:
  FlippingRelay(int target_port, std::size_t flip_at) : target_(target_port), flip_at_(flip_at) {
    listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&sin), sizeof(sin)), 0);
    EXPECT_EQ(::listen(listener_.get(), 16), 0);
    socklen_t len = sizeof(sin);
    ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&sin), &len);
    port_ = ntohs(sin.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~FlippingRelay() {
    stop_ = true;
    thread_.join();
  }
  int port() const { return port_; }

 private:
  struct Pair {
    UniqueFd a, b;  // a: from rank 0; b: to rank 1
    std::size_t a_to_b = 0;
  };
  void run() {
    std::vector<Pair> pairs;
    const Deadline end = in(30s);
    while (!stop_ && Clock::now() < end) {
      std::vector<pollfd> fds{{listener_.get(), POLLIN, 0}};
      for (auto& p : pairs) {
        fds.push_back({p.a.get(), POLLIN, 0});
        fds.push_back({p.b.get(), POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        Pair p;
        p.a.reset(::accept(listener_.get(), nullptr, nullptr));
        p.b = dial(target_);
        pairs.push_back(std::move(p));
        continue;
      }
      for (std::size_t i = 0; i < pairs.size(); ++i) {
        for (int side = 0; side < 2; ++side) {
          if ((fds[1 + 2 * i + side].revents & (POLLIN | POLLHUP)) == 0) continue;
          Pair& p = pairs[i];
          unsigned char buf[65536];
          ssize_t n = ::recv(side == 0 ? p.a.get() : p.b.get(), buf, sizeof(buf), MSG_DONTWAIT);
          if (n <= 0) continue;
          if (side == 0) {
            const std::size_t at = tcp::kHelloBytes + tcp::kMacBytes + flip_at_;
            if (p.a_to_b <= at && at < p.a_to_b + static_cast<std::size_t>(n)) {
              buf[at - p.a_to_b] ^= 0x01;
            }
            p.a_to_b += static_cast<std::size_t>(n);
          }
          send_bytes(side == 0 ? p.b.get() : p.a.get(), buf, static_cast<std::size_t>(n));
        }
      }
    }
  }

  int target_;
  std::size_t flip_at_;
  int port_ = 0;
  UniqueFd listener_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(TcpEncryptTest, AByteFlippedInFlightIsATransportErrorNamingThePeer) {
  for (std::size_t flip_at : {std::size_t{5}, std::size_t{1000}}) {  // in a header; a payload
    GroupOptions o;
    o.secrets = {kSecret, kSecret};
    o.encrypt = {true, true};
    Group g = make_group(2, o);
    FlippingRelay relay(port_of(g.blobs[1]), flip_at);
    PairResult p = connect_pair(g, 10s, with_port(g.blobs[1], relay.port()));
    ASSERT_FALSE(p.e0);
    ASSERT_FALSE(p.e1);
    auto data = pattern(std::size_t{1} << 20, 7);
    std::vector<std::byte> got(data.size());
    auto s = p.c0->post_send(data, nullptr);
    auto r = p.c1->post_recv(got, nullptr);
    std::thread sender([&] {
      try {
        p.c0->wait(s, in(10s));
      } catch (const Error&) {
      }
    });
    try {
      p.c1->wait(r, in(10s));
      ADD_FAILURE() << "an altered frame was delivered (flip at " << flip_at << ")";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_code(), ErrorCode::transport) << e.what();
      EXPECT_TRUE(contains(e.what(), "peer 0")) << e.what();
      EXPECT_TRUE(contains(e.what(), "altered")) << e.what();
    }
    sender.join();  // its send completes (or times out) on its own: the relay keeps reading
    p.c0.reset();
  }
}

// Without encryption the same relay changes data silently: what RINGLET_ENCRYPT is for.
TEST(TcpEncryptTest, WithoutEncryptionTheRelayGoesUnnoticed) {
  Group g = make_group(2, {{kSecret, kSecret}, {}, 1});
  FlippingRelay relay(port_of(g.blobs[1]), 1000);
  PairResult p = connect_pair(g, 10s, with_port(g.blobs[1], relay.port()));
  ASSERT_FALSE(p.e0);
  ASSERT_FALSE(p.e1);
  auto data = pattern(std::size_t{1} << 20, 7);
  std::vector<std::byte> got(data.size());
  auto s = p.c0->post_send(data, nullptr);
  auto r = p.c1->post_recv(got, nullptr);
  std::thread sender([&] { p.c0->wait(s, in(10s)); });
  p.c1->wait(r, in(10s));
  sender.join();
  EXPECT_NE(got, data);
}

// --- Communicators end to end ---------------------------------------------------------------

// `n` ranks as threads with a TCP store at 127.0.0.1:port; secrets[r] per rank.
std::vector<std::exception_ptr> run_job(int n, const std::vector<std::string>& secrets,
                                        const std::vector<int>& encrypt,
                                        std::chrono::milliseconds timeout) {
  UniqueFd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(probe.get(), reinterpret_cast<sockaddr*>(&sin), sizeof(sin));
  socklen_t len = sizeof(sin);
  ::getsockname(probe.get(), reinterpret_cast<sockaddr*>(&sin), &len);
  const int port = ntohs(sin.sin_port);
  probe.reset();
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      try {
        Options o;
        o.rank = r;
        o.size = n;
        o.store = "127.0.0.1:" + std::to_string(port);
        o.node_id = "node" + std::to_string(r);  // one rank per node: tcp between all
        o.timeout = timeout;
        o.secret = secrets[static_cast<std::size_t>(r)];
        o.encrypt = encrypt.empty() ? -1 : encrypt[static_cast<std::size_t>(r)];
        Communicator c = Communicator::create(o);
        std::vector<float> x(300001);
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i % 7) + r);
        c.allreduce(Tensor(x.data(), x.size()), ReduceOp::sum);
        for (std::size_t i = 0; i < x.size(); ++i) {
          // Exact in float: small integers.
          const float want = static_cast<float>(n * static_cast<int>(i % 7) + n * (n - 1) / 2);
          if (x[i] != want)
            throw std::runtime_error("allreduce result differs at " + std::to_string(i));
        }
      } catch (...) {
        errors[static_cast<std::size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

TEST(CommunicatorSecurityTest, ASecretJobAndAnEncryptedOneComputeExactSums) {
  for (int enc : {0, 1}) {
    auto errors = run_job(3, {kSecret, kSecret, kSecret}, {enc, enc, enc}, 60s);
    for (std::size_t r = 0; r < errors.size(); ++r) {
      if (errors[r]) {
        try {
          std::rethrow_exception(errors[r]);
        } catch (const std::exception& e) {
          ADD_FAILURE() << "encrypt=" << enc << " rank " << r << ": " << e.what();
        }
      }
    }
  }
}

TEST(CommunicatorSecurityTest, ARankWithAnotherSecretFailsAtOnceAndTheOthersSayWhy) {
  auto errors = run_job(3, {kSecret, kSecret, kOtherSecret}, {}, 4s);
  ASSERT_TRUE(errors[2]);
  Error e2 = error_of(errors[2]);
  EXPECT_EQ(e2.error_code(), ErrorCode::transport) << e2.what();
  EXPECT_TRUE(contains(e2.what(), "RINGLET_SECRET")) << e2.what();
  // Rank 0 times out waiting for rank 2 and says why; rank 1 does too, unless rank 0 has
  // already closed the store (then peer_lost).
  ASSERT_TRUE(errors[0]);
  Error e0 = error_of(errors[0]);
  EXPECT_EQ(e0.error_code(), ErrorCode::timeout) << e0.what();
  EXPECT_TRUE(contains(e0.what(), "failed authentication")) << e0.what();
  ASSERT_TRUE(errors[1]);
  Error e1 = error_of(errors[1]);
  if (e1.error_code() == ErrorCode::timeout) {
    // Says why, or that rank 0's store, which knows why, had closed by the time it asked.
    EXPECT_TRUE(contains(e1.what(), "failed authentication") ||
                contains(e1.what(), "(rank 0) could not say why: it has closed"))
        << e1.what();
  } else {
    EXPECT_EQ(e1.error_code(), ErrorCode::peer_lost) << e1.what();
  }
}

TEST(CommunicatorSecurityTest, EncryptionThatDiffersAcrossRanksIsAMismatchNamingTheVariable) {
  // Every rank fails at the rendezvous, well within the timeout, naming the variable and the
  // rank that differs (rank 0 included: it does not wait for a rank that gave up).
  auto errors = run_job(3, {kSecret, kSecret, kSecret}, {0, 0, 1}, 30s);
  for (std::size_t r = 0; r < errors.size(); ++r) {
    ASSERT_TRUE(errors[r]) << "rank " << r;
    Error e = error_of(errors[r]);
    EXPECT_EQ(e.error_code(), ErrorCode::mismatch) << e.what();
    EXPECT_TRUE(contains(e.what(), "RINGLET_ENCRYPT")) << e.what();
    EXPECT_TRUE(contains(e.what(), r == 2 ? "rank 0" : "rank 2")) << e.what();
    EXPECT_NE(std::find(e.ranks().begin(), e.ranks().end(), 2), e.ranks().end()) << e.what();
  }
}

}  // namespace
}  // namespace ringlet
