// SPDX-License-Identifier: Apache-2.0
// The tcp transport's progress loop: every socket of every connection of one transport,
// driven by the calling thread inside test_*() and wait_*().
#pragma once

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/common/deadline.hpp"
#include "src/common/unique_fd.hpp"
#include "transports/tcp/handshake.hpp"
#include "transports/tcp/wire.hpp"

namespace ringlet::transport::tcp {

// Operations are named by their per-connection sequence number: the n-th send posted on a
// channel has id n, and so does the n-th receive (FIFO matching).
// A sealed frame (RINGLET_ENCRYPT) is its header and its tag, then its payload as records
// with their tags (wire.hpp); `data` then points at `sealed`, and `length` counts the tags.
// Sealing is lazy: the loop seals a send's records in the socket's frame order, a few ahead
// of what the socket has taken, so that the wire is busy while the next record is sealed.
struct SendOp {
  std::uint64_t id = 0;
  const std::byte* data = nullptr;
  std::size_t length = 0;  // on the wire, after the header
  unsigned char header[kFrameHeaderBytes + kTagBytes] = {};
  std::size_t header_length = kFrameHeaderBytes;
  // Sealed frames: the caller's payload, the sealed copy, and how far it is sealed.
  std::span<const std::byte> plain;
  std::unique_ptr<std::byte[]> sealed;
  std::size_t ready = 0;  // of header + payload, ready to be written
  std::size_t records_sealed = 0;
  std::size_t sent = 0;  // of header + payload
  bool done = false;
};

struct RecvOp {
  std::uint64_t id = 0;
  std::byte* data = nullptr;
  std::size_t length = 0;
  std::size_t got = 0;  // payload bytes
  bool done = false;
};

// One socket of a channel. A data lane carries the frames of one or both directions; the
// control lane carries only error frames (both directions) and notices the peer's close.
struct Lane {
  UniqueFd fd;
  bool control = false;
  bool reads = false;   // frames from the peer arrive here
  bool writes = false;  // this rank's frames leave here
  std::deque<SendOp*> sendq;
  std::deque<RecvOp*> recvq;
  unsigned char header[kFrameHeaderBytes + kTagBytes] = {};
  std::size_t header_got = 0;
  bool header_ready = false;
  FrameHeader frame;
  // Into recvq.front() (or error_text on the control lane), then into `tag` when sealed.
  std::size_t payload_got = 0;
  std::string error_text;
  bool eof = false;
  // RINGLET_ENCRYPT: this socket's keys, one per direction (null: frames travel in clear).
  std::unique_ptr<FrameCipher> sealer;
  std::unique_ptr<FrameCipher> opener;
  unsigned char tag[kTagBytes] = {};
  std::size_t records_opened = 0;  // of the frame being read
  std::size_t header_bytes() const noexcept { return kFrameHeaderBytes + (opener ? kTagBytes : 0); }
  std::size_t tag_bytes() const noexcept { return opener ? kTagBytes : 0; }
};

// Everything about one peer: its sockets and its outstanding operations. Owned by its
// TcpConnection; registered with the Loop of its transport while it lives.
struct Channel {
  int peer = -1;
  std::string address;  // the peer's numeric address, for messages
  std::vector<std::unique_ptr<Lane>> lanes;
  Lane* control = nullptr;
  // With direction-separated data sockets: one more socket carrying small messages both ways,
  // so that a reply carries the ACK of the request (latency). Null otherwise.
  Lane* small = nullptr;
  std::vector<Lane*> send_lanes;
  std::vector<Lane*> recv_lanes;
  std::uint64_t sends_posted = 0;  // the id of the last send posted
  std::uint64_t recvs_posted = 0;  // the id of the last receive posted
  std::uint64_t bulk_sends = 0;    // sends posted on the data sockets (round robin)
  std::uint64_t bulk_recvs = 0;
  std::unordered_map<std::uint64_t, SendOp> sends;  // outstanding until observed complete
  std::unordered_map<std::uint64_t, RecvOp> recvs;
  std::size_t sends_pending = 0;  // not yet completed
  bool peer_closed = false;       // the control lane saw the peer's orderly close
  // The first failure seen on this peer's sockets: its error frame, a reset, a close in the
  // middle of a message, a malformed frame. It fails only operations on this channel that can
  // no longer complete: whatever the peer sent before it failed is still delivered, so an
  // error about a later collective never fails an earlier one that has all its data.
  std::optional<Error> failure;
  std::uint64_t bytes_read = 0;  // progress marker, for draining after a failure
};

// Owned (shared) by a TcpTransport and its connections. Used from one thread at a time,
// except interrupt(), which only writes the eventfd.
class Loop {
 public:
  Loop(int rank, const std::atomic<bool>* abort_flag, bool quickack, bool oversubscribed);
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  int rank() const noexcept { return rank_; }
  int event_fd() const noexcept { return event_fd_.get(); }
  void add(Channel* channel);
  void remove(Channel* channel) noexcept;

  // Posts return the operation's id on its channel (1, 2, ... per direction).
  std::uint64_t post_send(Channel& c, std::span<const std::byte> data);
  std::uint64_t post_recv(Channel& c, std::span<std::byte> data);
  bool test_send(Channel& c, std::uint64_t id);
  bool test_recv(Channel& c, std::uint64_t id);
  void wait_send(Channel& c, std::uint64_t id, Deadline deadline);
  void wait_recv(Channel& c, std::uint64_t id, Deadline deadline);
  // The control plane: an error frame to every channel's peer, all sent together within one
  // short deadline (a peer that does not read cannot delay the others). lost_rank: the rank
  // that was lost, or -1. Never throws.
  void report_failure(ErrorCode code, int origin_rank, int lost_rank,
                      std::string_view cause) noexcept;

  void interrupt() noexcept;
  // One poll(2) over every socket and the eventfd, blocking up to `timeout` (at most the
  // longest poll), moving whatever is ready. Failures stay on their channels. Never throws.
  void wait_any(std::chrono::milliseconds timeout) noexcept;
  // Throws Error(aborted) when the abort flag is set.
  void check() const;

 private:
  // One round: poll every socket (timeout_ms: 0 spins) and move whatever is ready.
  void poll_once(int timeout_ms);
  // Non-blocking reads and writes on one peer's sockets that have work posted.
  void progress_channel(Channel& c);
  void write_lane(Channel& c, Lane& lane);
  void read_lane(Channel& c, Lane& lane);
  void read_control(Channel& c, Lane& lane);
  void on_eof(Channel& c, Lane& lane);
  [[noreturn]] static void fail(Error error);
  // Throws the channel's failure unless `done` becomes true while the data the peer sent
  // before failing is drained.
  void settle(Channel& c, const std::function<bool()>& done);
  [[noreturn]] void fail_io(Channel& c, const char* what, int err);
  void wait_until(Channel& c, const std::function<bool()>& done, Deadline deadline,
                  const char* what, std::uint64_t id);
  // The error frame for one channel (sealed when the channel's frames are); empty when the
  // channel has no control socket.
  std::string error_frame(Channel& c, ErrorCode code, int origin_rank, int lost_rank,
                          std::string_view cause);
  // A data socket closed or reset: the peer's own report may already wait on its control
  // socket (a rank that fails tells its peers, then exits), and it names the rank that was
  // lost where the close names only this neighbour. Throws that report if it is there,
  // else `e`.
  [[noreturn]] void fail_lost(Channel& c, Error e);
  bool in_fail_lost_ = false;
  // A request whose test or wait threw is released: its memory is the caller's again. Its
  // operation leaves the socket queues, so that no later round reads into or writes from that
  // memory, and the channel keeps `error` (its order of messages is broken from here on).
  void release_failed_send(Channel& c, std::uint64_t id, const Error& error) noexcept;
  void release_failed_recv(Channel& c, std::uint64_t id, const Error& error) noexcept;

  void rearm_quickack(const Lane& lane, std::size_t bytes) const noexcept;
  // Sealed frames: the header as it arrived (decrypted in place), and the payload.
  void open_header(Channel& c, Lane& lane);
  void open_payload(Channel& c, Lane& lane, std::byte* data, std::size_t length,
                    std::size_t message_length);
  // Sealed sends: seal `op` up to `upto` bytes of its header and payload; seal the socket's
  // queue, in order, up to kSealAhead bytes beyond what each send has written.
  static void seal_until(Lane& lane, SendOp& op, std::size_t upto);
  static void seal_ahead(Lane& lane);
  // Sealed receives: read the records of the front receive, opening each as it completes.
  // False when the socket has no more bytes for now.
  bool read_sealed_payload(Channel& c, Lane& lane, RecvOp& op, bool drained);

  int rank_;
  const std::atomic<bool>* abort_flag_;
  bool quickack_;
  bool oversubscribed_;
  UniqueFd event_fd_;
  std::vector<Channel*> channels_;
  std::vector<pollfd> pollfds_;
  std::vector<std::pair<Channel*, Lane*>> poll_lanes_;
};

}  // namespace ringlet::transport::tcp
