// SPDX-License-Identifier: Apache-2.0
// The contract every network transport implements (gloo's nouns, NCCL's post-then-test
// rules). One folder per transport under transports/; transports/factory.hpp picks one.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/common/deadline.hpp"

namespace ringlet::transport {

using ringlet::Deadline;

// Memory registered with a transport (an RDMA memory region; nothing for tcp). Deregisters on
// destruction; the caller keeps the memory alive and registered while posts use it.
class MemoryRegion {
 public:
  virtual ~MemoryRegion() = default;
  virtual std::span<std::byte> memory() const noexcept = 0;
};

// What the algorithms and the communicator need to know about a transport.
struct TransportTraits {
  // Pipeline slice the ring cuts its chunks into over this transport (measured per transport).
  std::size_t slice_bytes = std::size_t{1} << 20;
  // Posts a connection may have outstanding per direction (an RC queue pair's depth); the
  // algorithms clamp their windows to it. 0: no limit.
  std::size_t max_outstanding = 0;
  // Posts of unregistered memory are staged through the transport's own registered memory
  // (a copy); registered memory is used in place.
  bool needs_registration = false;
  // Device (CUDA) memory may be posted directly (GPUDirect).
  bool device_memory = false;
};

// A posted send or receive; valid until test() returned true or wait() returned (or threw).
// It is not the public asynchronous handle of the API (ringlet::Work).
struct [[nodiscard]] Request {
  std::uint64_t id = 0;
};

// One reliable channel to one peer.
//
// Posts never block. Matching is FIFO per connection: the n-th send posted on one side is
// matched with the n-th receive posted on the other, whatever their sizes; both must have
// the same length (a different length is Error(mismatch), with as much of the message's start
// as fits read into the receive buffer, best effort, so that a collective's fingerprint at
// the start of a message can still explain the disagreement).
//
// `mr` is the registration of the posted memory, or null: the transport then stages the
// bytes through its own registered memory (a copy where the transport needs registration).
// The posted memory must stay untouched (sends) or unread (receives) until the request
// completes.
//
// test() and wait() make progress on every connection of the same Transport, so a send
// posted to the right neighbour moves while the caller waits for a receive from the left.
// They throw ringlet::Error: peer_lost when the peer closed or reset the connection,
// transport for other failures, timeout at the deadline, aborted when the communicator's
// abort flag is set, and the peer's own code and message when the peer reported a failure
// through the control plane. A peer's failure is kept on its connection and fails only the
// requests on that connection that can no longer complete: what the peer sent before it
// failed is still delivered, so an error about a later collective never fails an earlier one.
class Connection {
 public:
  virtual ~Connection() = default;
  virtual int peer() const noexcept = 0;
  virtual Request post_send(std::span<const std::byte> data, const MemoryRegion* mr) = 0;
  virtual Request post_recv(std::span<std::byte> data, const MemoryRegion* mr) = 0;
  // True once `r` has completed; the request is then released.
  virtual bool test(Request r) = 0;
  // Returns once `r` has completed (the request is then released), or throws.
  virtual void wait(Request r, Deadline deadline) = 0;
};

// The communicator's control plane: how a failure reaches the peers, apart from the data
// connections (an RDMA queue pair in the error state cannot carry it). A peer's report
// surfaces as an Error from test()/wait() on the data plane of the peer's communicator.
class ControlPlane {
 public:
  virtual ~ControlPlane() = default;
  // Best effort, bounded by a short internal deadline, never throws: tells every connected
  // peer that this rank failed with `code` and `cause`, first seen by `origin_rank` (this
  // rank, or the peer that reported it here), so that none waits for it. The peers' error is
  // Error(code, cause).reported_by(origin_rank).
  virtual void report_failure(ErrorCode code, int origin_rank, std::string_view cause) noexcept = 0;
  // As report_failure(), naming also the rank that was lost (`lost_rank`, -1: none), which
  // the peers' error then lists first: Error(code, cause, {lost_rank, origin_rank}). A
  // transport that cannot carry it reports without it.
  virtual void report_failure_about(ErrorCode code, int origin_rank, int lost_rank,
                                    std::string_view cause) noexcept {
    (void)lost_rank;
    report_failure(code, origin_rank, cause);
  }
};

// One NIC or node-local domain: listens, connects to peers, owns their connections.
// Used from one thread at a time, except interrupt().
class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string_view name() const noexcept = 0;
  virtual TransportTraits traits() const noexcept = 0;
  // Opaque blob the peers need to reach this rank; exchanged through the bootstrap Store.
  virtual std::vector<std::byte> local_address() const = 0;
  // Connects to `peer` (both ranks call connect() for each other, in any order).
  virtual std::unique_ptr<Connection> connect(int peer, std::span<const std::byte> peer_address,
                                              Deadline deadline) = 0;
  // Registers `buf` for posts on every connection of this transport (RDMA: one memory region
  // per protection domain). Throws Error(transport) when the memory cannot be registered.
  virtual std::unique_ptr<MemoryRegion> register_memory(std::span<std::byte> buf,
                                                        MemoryKind kind) = 0;
  // A user buffer (Communicator::register_buffer): like register_memory, and while the region
  // lives, a post with no region of memory inside `buf` uses it in place. Null where the
  // transport needs no registration (tcp). Thread-safe, also against posts on another thread;
  // the caller destroys the region only while no post uses its memory.
  virtual std::unique_ptr<MemoryRegion> register_user_memory(std::span<std::byte> buf,
                                                             MemoryKind kind) {
    (void)buf;
    (void)kind;
    return nullptr;
  }
  // The control plane over the peers connected so far (tcp: one control socket per peer).
  virtual ControlPlane& control() noexcept = 0;
  // Thread-safe: wakes any test()/wait() blocked in this transport so that it sees the
  // abort flag. Never throws.
  virtual void interrupt() noexcept = 0;
  // Sleeps until something may progress on a connection of this transport (a descriptor is
  // ready: a send can move, bytes or a peer's report arrived), interrupt() is called, or
  // `timeout` passes, moving whatever is ready; it completes nothing itself. The progress
  // engine waits here while its collective awaits a request, instead of spinning on test().
  // Failures stay on their connections for test() to report. Never throws. The default,
  // for a transport without descriptors to sleep on, naps for at most 50 microseconds.
  virtual void wait_any(std::chrono::milliseconds timeout) noexcept {
    std::this_thread::sleep_for(
        std::min<std::chrono::microseconds>(timeout, std::chrono::microseconds(50)));
  }
};

}  // namespace ringlet::transport
