// SPDX-License-Identifier: Apache-2.0
// Pipelined ring algorithms. Ring allreduce = reduce-scatter + allgather: 2(N-1) steps, each
// rank sends 2(N-1)/N * S bytes, time ~ 2(N-1) a + 2(N-1)/N * S/B. Every step is cut into
// slices: while slice k+1 is on the wire, slice k is being reduced.
#include "src/algo/ring.hpp"

#include <algorithm>
#include <vector>

#include "src/common/check.hpp"

namespace ringlet::algo {
namespace {

using transport::Request;

// One slice of one chunk: byte offset into the buffer and length.
struct Piece {
  std::size_t offset = 0;
  std::size_t bytes = 0;
};

// Slices per chunk so that no slice exceeds ctx.slice_bytes.
std::size_t slices_per_chunk(const Context& ctx, const ChunkLayout& layout, std::size_t elem) {
  std::size_t max_chunk = (layout.count + static_cast<std::size_t>(layout.chunks) - 1) /
                          static_cast<std::size_t>(layout.chunks) * elem;
  std::size_t per_slice = ctx.slice_bytes / elem * elem;
  RINGLET_CHECK(per_slice > 0, "slice of ", ctx.slice_bytes, " bytes is smaller than an element");
  return std::max<std::size_t>(1, (max_chunk + per_slice - 1) / per_slice);
}

Piece piece(const ChunkLayout& layout, int chunk, std::size_t slices, std::size_t j,
            std::size_t elem) {
  std::size_t len = layout.length(chunk);
  std::size_t b = split_begin(len, slices, j);
  std::size_t e = split_begin(len, slices, j + 1);
  return {(layout.begin(chunk) + b) * elem, (e - b) * elem};
}

// A window of receives: at most `limit` outstanding (the transport's limit clamps it).
std::size_t clamp_window(const Context& ctx, std::size_t window) {
  if (ctx.max_outstanding > 0) window = std::min(window, ctx.max_outstanding);
  return std::max<std::size_t>(window, 1);
}

// The sends in flight on one connection, oldest first. Sends complete in order (matching is
// FIFO), so at the transport's limit the oldest is awaited before another is posted:
//   while (sends.full()) co_await engine::sent(*ctx.driver, sends.conn(), sends.pop());
class SendWindow {
 public:
  SendWindow(const Context& ctx, transport::Connection* conn)
      : conn_(conn), limit_(ctx.max_outstanding) {}
  bool full() const noexcept { return limit_ > 0 && inflight_.size() - head_ >= limit_; }
  bool empty() const noexcept { return head_ == inflight_.size(); }
  Request pop() noexcept { return inflight_[head_++]; }
  transport::Connection* conn() const noexcept { return conn_; }
  void post(const std::byte* data, std::size_t bytes) {
    inflight_.push_back(conn_->post_send({data, bytes}, nullptr));
  }

 private:
  transport::Connection* conn_;
  std::size_t limit_;
  std::vector<Request> inflight_;
  std::size_t head_ = 0;
};

}  // namespace

engine::Task ring_reduce_scatter(Context& ctx, const std::byte* src, std::byte* dst,
                                 ChunkLayout layout, DataType type, ReduceOp op, int shift) {
  const int n = ctx.size;
  const int r = ctx.rank;
  const std::size_t elem = size_of(type);
  if (n == 1) {
    if (layout.count > 0) ctx.exec->copy(dst, src, layout.count * elem);
    co_return;
  }
  const exec::Reducer reduce = ctx.exec->reducer(type, op);
  const std::size_t slices = slices_per_chunk(ctx, layout, elem);
  const std::size_t units = static_cast<std::size_t>(n - 1) * slices;
  const std::size_t slots = clamp_window(ctx, static_cast<std::size_t>(ctx.slots));
  // Unit u = (step s, slice j): send chunk (r - s + shift) and receive chunk (r - s - 1 + shift).
  auto send_piece = [&](std::size_t u) {
    long long s = static_cast<long long>(u / slices);
    return piece(layout, mod(r - s + shift, n), slices, u % slices, elem);
  };
  auto recv_piece = [&](std::size_t u) {
    long long s = static_cast<long long>(u / slices);
    return piece(layout, mod(r - s - 1 + shift, n), slices, u % slices, elem);
  };
  engine::Driver& d = *ctx.driver;
  SendWindow sends(ctx, ctx.right);
  std::vector<Request> slot_recv(slots);  // the receive posted into each slot
  std::size_t next_recv = 0;
  std::size_t next_send = 0;
  std::size_t done = 0;
  while (done < units) {
    // Post receives into free slots: a slot frees once its slice has been reduced.
    for (; next_recv < units && next_recv < done + slots; ++next_recv) {
      Piece p = recv_piece(next_recv);
      if (p.bytes == 0) continue;
      std::byte* slot = ctx.ring_scratch.data() + (next_recv % slots) * ctx.slice_bytes;
      slot_recv[next_recv % slots] = ctx.left->post_recv({slot, p.bytes}, ctx.ring_scratch_mr);
    }
    // Post sends whose data is ready: step 0 sends our own input, later steps forward what
    // the previous step reduced.
    for (; next_send < units && (next_send < slices || next_send - slices < done); ++next_send) {
      Piece p = send_piece(next_send);
      if (p.bytes == 0) continue;
      while (sends.full()) co_await engine::sent(d, sends.conn(), sends.pop());
      sends.post((next_send < slices ? src : dst) + p.offset, p.bytes);
    }
    // Wait for the slice from the left, then reduce it into our copy of that chunk.
    Piece p = recv_piece(done);
    if (p.bytes > 0) {
      co_await engine::received(d, ctx.left, slot_recv[done % slots]);
      const std::byte* slot = ctx.ring_scratch.data() + (done % slots) * ctx.slice_bytes;
      reduce(dst + p.offset, src + p.offset, slot, p.bytes / elem);
    }
    ++done;
  }
  for (; next_send < units; ++next_send) {
    Piece p = send_piece(next_send);
    if (p.bytes == 0) continue;
    while (sends.full()) co_await engine::sent(d, sends.conn(), sends.pop());
    sends.post(dst + p.offset, p.bytes);
  }
  while (!sends.empty()) co_await engine::sent(d, sends.conn(), sends.pop());
}

engine::Task ring_allgather(Context& ctx, std::byte* buf, ChunkLayout layout, DataType type,
                            int owned) {
  const int n = ctx.size;
  if (n == 1) co_return;
  const std::size_t elem = size_of(type);
  const std::size_t slices = slices_per_chunk(ctx, layout, elem);
  const std::size_t units = static_cast<std::size_t>(n - 1) * slices;
  const std::size_t window = clamp_window(ctx, 2 * static_cast<std::size_t>(ctx.slots) + slices);
  // Unit u = (step s, slice j): send chunk (owned - s), receive chunk (owned - s - 1)
  // straight into place.
  auto send_piece = [&](std::size_t u) {
    long long s = static_cast<long long>(u / slices);
    return piece(layout, mod(owned - s, n), slices, u % slices, elem);
  };
  auto recv_piece = [&](std::size_t u) {
    long long s = static_cast<long long>(u / slices);
    return piece(layout, mod(owned - s - 1, n), slices, u % slices, elem);
  };
  engine::Driver& d = *ctx.driver;
  SendWindow sends(ctx, ctx.right);
  std::vector<Request> recvs(units);
  std::size_t next_recv = 0;
  std::size_t next_send = 0;
  std::size_t done = 0;
  while (done < units) {
    for (; next_recv < units && next_recv < done + window; ++next_recv) {
      Piece p = recv_piece(next_recv);
      if (p.bytes > 0) recvs[next_recv] = ctx.left->post_recv({buf + p.offset, p.bytes}, nullptr);
    }
    // Forward a slice as soon as it has arrived from the left.
    for (; next_send < units && (next_send < slices || next_send - slices < done); ++next_send) {
      Piece p = send_piece(next_send);
      if (p.bytes == 0) continue;
      while (sends.full()) co_await engine::sent(d, sends.conn(), sends.pop());
      sends.post(buf + p.offset, p.bytes);
    }
    if (recv_piece(done).bytes > 0) co_await engine::received(d, ctx.left, recvs[done]);
    ++done;
  }
  for (; next_send < units; ++next_send) {
    Piece p = send_piece(next_send);
    if (p.bytes == 0) continue;
    while (sends.full()) co_await engine::sent(d, sends.conn(), sends.pop());
    sends.post(buf + p.offset, p.bytes);
  }
  while (!sends.empty()) co_await engine::sent(d, sends.conn(), sends.pop());
}

engine::Task ring_allreduce(Context& ctx, const std::byte* src, std::byte* dst, std::size_t count,
                            DataType type, ReduceOp op) {
  const int n = ctx.size;
  ChunkLayout layout{count, n};
  // Reduce-scatter: afterwards this rank owns chunk rank + 1, reduced over all ranks.
  if (ctx.runtime != nullptr) ctx.runtime->trace_step("ring reduce-scatter");
  co_await ring_reduce_scatter(ctx, src, dst, layout, type, op, 0);
  const int owned = mod(ctx.rank + 1, n);
  // The plan's post-scale on the owned chunk, once, before it is copied everywhere.
  ctx.post_scale(*ctx.exec, dst + layout.begin(owned) * size_of(type), layout.length(owned), type);
  // Allgather: pass the reduced chunks around the ring.
  if (ctx.runtime != nullptr) ctx.runtime->trace_step("ring allgather");
  co_await ring_allgather(ctx, dst, layout, type, owned);
}

engine::Task ring_broadcast(Context& ctx, std::byte* buf, std::size_t bytes, int root) {
  const int n = ctx.size;
  if (n == 1 || bytes == 0) co_return;
  const int pos = mod(ctx.rank - root, n);  // hops from the root
  const std::size_t slices =
      std::max<std::size_t>(1, (bytes + ctx.slice_bytes - 1) / ctx.slice_bytes);
  const std::size_t window = clamp_window(ctx, 2 * static_cast<std::size_t>(ctx.slots));
  auto range = [&](std::size_t j) {
    std::size_t b = split_begin(bytes, slices, j);
    return Piece{b, split_begin(bytes, slices, j + 1) - b};
  };
  const bool receives = pos != 0;
  const bool forwards = pos != n - 1;
  engine::Driver& d = *ctx.driver;
  SendWindow sends(ctx, ctx.right);
  std::vector<Request> recvs(receives ? slices : 0);
  std::size_t next_recv = 0;
  std::size_t done = receives ? 0 : slices;
  for (std::size_t j = 0; j < slices; ++j) {
    if (receives) {
      // Keep a window of receives posted straight into the buffer.
      for (; next_recv < slices && next_recv < done + window; ++next_recv) {
        Piece p = range(next_recv);
        recvs[next_recv] = ctx.left->post_recv({buf + p.offset, p.bytes}, nullptr);
      }
      co_await engine::received(d, ctx.left, recvs[j]);
      done = j + 1;
    }
    // Forward slice j to the right as soon as we have it.
    if (forwards) {
      Piece p = range(j);
      while (sends.full()) co_await engine::sent(d, sends.conn(), sends.pop());
      sends.post(buf + p.offset, p.bytes);
    }
  }
  while (!sends.empty()) co_await engine::sent(d, sends.conn(), sends.pop());
}

}  // namespace ringlet::algo
