// SPDX-License-Identifier: Apache-2.0
// The one interface every transport implements (gloo's nouns, NCCL's post-then-test rules).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/common/deadline.hpp"

namespace ringlet::transport {

using ringlet::Deadline;

// Pinned or registered memory; deregisters on destruction. Trivial for tcp and shm.
class MemoryRegion {
 public:
  virtual ~MemoryRegion() = default;
};

// One reliable, ordered channel to one peer.
//
// Posts never block. The n-th send posted on one side is matched with the n-th receive
// posted on the other (a transport may keep separate orders per message-size class, since
// both ends know the size); both must have the same length (a different length is
// Error(mismatch), with as much of the message's start as fits read into the receive buffer,
// best effort). Tags name operations for test()/wait() and must be unique among a
// connection's outstanding sends, and among its outstanding receives.
//
// test() and wait() make progress on every connection of the same Transport, so a send
// posted to the right neighbour moves while the caller waits for a receive from the left.
// They throw ringlet::Error: peer_lost when the peer closed or reset the connection,
// transport for other failures, timeout at the deadline, aborted when the transport's abort
// flag is set, and the peer's own code and message when the peer sent an error frame
// (send_error). A peer's failure is kept on its connection and fails only the operations on
// that connection that can no longer complete: what the peer sent before it failed is still
// delivered, so an error about a later collective never fails an earlier one. Errors spread
// because every rank that fails sends its error to all its peers.
class Connection {
 public:
  virtual ~Connection() = default;
  virtual int peer() const noexcept = 0;
  virtual void post_send(const MemoryRegion* mr, std::span<const std::byte> data,
                         std::uint64_t tag) = 0;
  virtual void post_recv(const MemoryRegion* mr, std::span<std::byte> data, std::uint64_t tag) = 0;
  virtual bool test_send(std::uint64_t tag) = 0;  // true once the send has completed
  virtual bool test_recv(std::uint64_t tag) = 0;  // true once the receive has completed
  virtual void wait_send(std::uint64_t tag, Deadline deadline) = 0;
  virtual void wait_recv(std::uint64_t tag, Deadline deadline) = 0;
  // Best effort, bounded by a short internal deadline, never throws: tells the peer that
  // this rank failed with `code` and `what`; the peer's next test()/wait() on any connection
  // of its transport rethrows it. Used to spread an error (mismatch, peer_lost) around the
  // group so that no rank waits for a peer that has given up.
  virtual void send_error(ErrorCode code, std::string_view what) noexcept = 0;
};

// One NIC or node-local domain: listens, connects to peers, owns their connections.
// Used from one thread at a time, except interrupt().
class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string_view name() const noexcept = 0;
  // Opaque blob the peers need to reach this rank; exchanged through the bootstrap Store.
  virtual std::vector<std::byte> local_address() const = 0;
  // Connects to `peer` (both ranks call connect() for each other, in any order).
  virtual std::unique_ptr<Connection> connect(int peer, std::span<const std::byte> peer_address,
                                              Deadline deadline) = 0;
  virtual std::unique_ptr<MemoryRegion> register_memory(std::span<std::byte> buf,
                                                        MemoryKind kind) = 0;
  // Thread-safe: wakes any test()/wait() blocked in this transport so that it sees the
  // abort flag. Never throws.
  virtual void interrupt() noexcept = 0;
};

// The ranks of one node, reducing through node-local memory (shared memory for host
// buffers). Collective over the local ranks: every local rank makes the same calls in the
// same order. Shard i of `count` elements is [split_begin(count, L, i), split_begin(count, L,
// i + 1)) as in src/algo/context.hpp: contiguous, in local-rank order, the first count % L
// shards one element longer. Errors as for Connection.
class LocalGroup {
 public:
  virtual ~LocalGroup() = default;
  virtual std::string_view name() const noexcept = 0;
  // In place; avg reduces as sum (the caller divides).
  virtual void allreduce(void* data, std::size_t count, DataType type, ReduceOp op,
                         Deadline deadline) = 0;
  // Afterwards this local rank's shard of `data` holds the reduction over the local ranks.
  virtual void reduce_scatter(void* data, std::size_t count, DataType type, ReduceOp op,
                              Deadline deadline) = 0;
  // Every local rank contributes its shard of `data`; afterwards `data` is whole everywhere.
  virtual void allgather(void* data, std::size_t count, DataType type, Deadline deadline) = 0;
  virtual void broadcast(void* data, std::size_t bytes, int local_root, Deadline deadline) = 0;
  virtual void barrier(Deadline deadline) = 0;
};

// What a transport needs to know about the job.
struct TransportOptions {
  int rank = 0;
  int size = 1;
  std::uint64_t job_id = 0;                       // from the rendezvous; in every handshake
  const std::atomic<bool>* abort_flag = nullptr;  // checked on every wait loop
  std::chrono::milliseconds timeout{300000};
};

}  // namespace ringlet::transport
