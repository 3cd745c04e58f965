// SPDX-License-Identifier: Apache-2.0
// Store: the rendezvous key-value interface (gloo's Store). Used only for bootstrap: ranks
// exchange addresses and node identities through it; no collective data ever goes through it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "src/common/deadline.hpp"

namespace ringlet::bootstrap {

// The longest claim token (Store::claim).
inline constexpr std::size_t kMaxClaimTokenBytes = 256;

// Implementations are thread-safe: several threads (ranks of one process in tests) may share
// one Store. Errors are ringlet::Error: timeout when get() passes its deadline, transport or
// peer_lost when the store's server cannot be reached.
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(std::string_view key, std::span<const std::byte> value) = 0;
  // Blocks until `key` exists, then returns its value; Error(timeout) at the deadline,
  // naming the key.
  virtual std::vector<std::byte> get(std::string_view key, Deadline deadline) = 0;
  // Adds `delta` to the integer stored at `key` (absent: 0) and returns the new value.
  // Counters are stored as decimal text (get_string() reads "42"); add() on a value that is
  // not one, or an int64 overflow, throws Error(invalid_argument).
  virtual std::int64_t add(std::string_view key, std::int64_t delta) = 0;
  // Deletes `key`; returns whether it existed.
  virtual bool remove(std::string_view key) = 0;

  // Claims and owned keys tie a rank's records to the process that claimed the rank, so that
  // a duplicate or stale rank cannot replace them (review finding 10).
  //
  // claim() stores `token` (non-empty, at most kMaxClaimTokenBytes; random per claimant)
  // under `key` when the key is absent, and returns true; again true when `key` already
  // holds this claim with this token (a retry), false when it holds anything else. A claim
  // is permanent: get() reads its token, and nothing may replace or remove it.
  virtual bool claim(std::string_view key, std::span<const std::byte> token) = 0;
  // Writes `key` for the holder of claim `claim_key`: only while `claim_key` is a claim that
  // holds `token`, and only when `key` is absent or already owned by that claim (the
  // claimant may rewrite it). From then on `key` is owned. Every refusal is
  // Error(mismatch) naming the keys: an owned write without the claim's token, or over a key
  // that someone else wrote first, and any set(), add() or remove() of a claim or of an
  // owned key. get() reads owned keys as any other.
  virtual void set_owned(std::string_view claim_key, std::span<const std::byte> token,
                         std::string_view key, std::span<const std::byte> value) = 0;

  // get() that also ends when `stop` is requested: Error(aborted) "store: the wait for key
  // 'K' was interrupted". This default waits in slices of at most 200 ms and looks at `stop`
  // between them; the TCP and hash stores wake at once (the TCP store's one request waits
  // on its socket and an eventfd that the stop writes).
  virtual std::vector<std::byte> get_interruptible(std::string_view key, Deadline deadline,
                                                   const std::stop_token& stop);

  // Closes the connections this handle keeps for later requests (the TCP store's pool);
  // the next request opens a new one. Called once set-up is done, so that rank 0 does not
  // hold one descriptor per rank for the life of the job.
  virtual void close_idle() {}
  // Why `key` may never have come, for a timeout's message ("; the store refused 1 client
  // that failed authentication ..."); empty when the store knows of no reason.
  virtual std::string missing_key_note(std::string_view /*key*/) { return {}; }

  // Conveniences over set/get for text values.
  void set_string(std::string_view key, std::string_view value);
  std::string get_string(std::string_view key, Deadline deadline);
};

// In-process store shared by ranks that run as threads (tests).
std::shared_ptr<Store> make_hash_store();

// A store in a directory of a shared file system: one file per key, written atomically
// (write to a temporary name, then rename), polled by get().
std::shared_ptr<Store> make_file_store(const std::string& directory);

// Gives each communicator its own key space: every key is prefixed by `prefix` + "/".
std::shared_ptr<Store> make_prefix_store(std::string prefix, std::shared_ptr<Store> base);

// A store whose get() a stop interrupts: it calls `check` (which throws the caller's error,
// an abort's), then waits in base->get_interruptible(key, deadline, stop), and calls `check`
// again when `stop` ended the wait (a stop that `check` lets pass is the base's
// Error(aborted)). At the deadline get() throws Error(timeout) "store: key 'K' not set
// within N ms".
std::shared_ptr<Store> make_interruptible_store(std::shared_ptr<Store> base,
                                                std::function<void()> check, std::stop_token stop);

// The TCP store. Rank 0 serves it (is_server) on host:port, all ranks (rank 0 included)
// are clients. The server runs on its own thread for the life of the returned object,
// drops any client that fails the handshake (magic, protocol version), and never lets a
// bad client stall others. Connecting retries until the deadline (rank 0 may start last).
//
// Keys are at most 4 KiB and values at most 64 MiB (larger ones throw
// Error(invalid_argument)).
// set(), add() and remove() each end within 60 s or throw timeout; a get() that passes its
// deadline withdraws its request, so the store stays usable. A lost server connection
// throws peer_lost.
//
// The server bounds what clients can make it hold (TcpStoreLimits): a set() or add() past
// the byte or key budget gets Error(transport) "the rendezvous store is full"; a get()
// sends the stored value by reference, so many clients reading one value cost one copy; a
// client whose input or replies pass the buffers' bounds is slowed or dropped; a greeted
// client silent for idle_timeout, with no get() waiting, is dropped. No exception leaves
// the server's thread: a failure while serving one client (out of memory included) drops
// that client only. Clients reconnect transparently when a pooled connection was closed.
struct TcpStoreLimits {
  std::size_t max_bytes = std::size_t{512} << 20;        // keys and values held, in all
  std::size_t max_keys = std::size_t{1} << 20;           // distinct keys
  std::size_t max_input_bytes = std::size_t{256} << 20;  // requests buffered, all clients
  std::chrono::milliseconds idle_timeout{120000};        // greeted clients, no get waiting
};
struct TcpStoreOptions {
  std::string host;  // name or IPv4/IPv6 literal; "[::1]" brackets accepted
  int port = 29500;  // the server may pass 0 for a free port; see tcp_store_port()
  bool is_server = false;
  Deadline deadline;  // for the initial connection
  // The job this store belongs to (LaunchInfo::job_identity; at most 256 bytes), sent in
  // the clear in every hello. A server refuses clients of another job: their create()
  // fails with Error(mismatch) naming both identities, and the store is not disturbed.
  std::string job_identity;
  // The job's secret (Config::secret). Non-empty: client and server prove it to each other
  // (HMAC-SHA-256 over both nonces and the job identity) before any request; a client with
  // another secret fails at once with Error(transport) naming RINGLET_SECRET. Empty: no
  // authentication (the server logs one warning); both sides must agree.
  std::string secret;
  TcpStoreLimits limits{};  // the server's
  std::stop_token stop{};   // interrupts the initial connection: Error(aborted)
};
std::shared_ptr<Store> make_tcp_store(const TcpStoreOptions& options);

// The local IP address (numeric) of the client connection of a TCP store, i.e. the address
// this host uses to reach rank 0; empty for stores that are not TCP stores. The TCP
// transport listens on it by default.
std::string local_address_of(const Store& store);

// The port of a TCP store (the one the server bound, when it was asked for port 0); 0 for
// stores that are not TCP stores. Sees through prefix stores, as local_address_of() does.
int tcp_store_port(const Store& store);

}  // namespace ringlet::bootstrap
