// SPDX-License-Identifier: Apache-2.0
// Pipelined ring algorithms. Ring allreduce = reduce-scatter + allgather: 2(N-1) steps, each
// rank sends 2(N-1)/N * S bytes, time ~ 2(N-1) a + 2(N-1)/N * S/B. Every step is cut into
// slices: while slice k+1 is on the wire, slice k is being reduced.
#include "src/algo/ring.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "src/common/check.hpp"
#include "src/reduce/reduce.hpp"

namespace ringlet::algo {
namespace {

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

// Waits for every send in `tags` that was posted.
void wait_sends(transport::Connection* conn, const std::vector<bool>& posted, Deadline deadline) {
  for (std::size_t u = 0; u < posted.size(); ++u) {
    if (posted[u]) conn->wait_send(u, deadline);
  }
}

}  // namespace

void ring_reduce_scatter(Context& ctx, const std::byte* src, std::byte* dst,
                         const ChunkLayout& layout, DataType type, ReduceOp op, int shift) {
  const int n = ctx.size;
  const int r = ctx.rank;
  const std::size_t elem = size_of(type);
  if (n == 1) {
    if (dst != src && layout.count > 0) std::memmove(dst, src, layout.count * elem);
    return;
  }
  const auto kernel = reduce::host_kernel3(type, op);
  const std::size_t slices = slices_per_chunk(ctx, layout, elem);
  const std::size_t units = static_cast<std::size_t>(n - 1) * slices;
  const std::size_t slots = static_cast<std::size_t>(ctx.slots);
  // Unit u = (step s, slice j): send chunk (r - s + shift) and receive chunk (r - s - 1 + shift).
  auto send_piece = [&](std::size_t u) {
    long long s = static_cast<long long>(u / slices);
    return piece(layout, mod(r - s + shift, n), slices, u % slices, elem);
  };
  auto recv_piece = [&](std::size_t u) {
    long long s = static_cast<long long>(u / slices);
    return piece(layout, mod(r - s - 1 + shift, n), slices, u % slices, elem);
  };
  std::vector<bool> sent(units, false);
  std::size_t next_recv = 0;
  std::size_t next_send = 0;
  std::size_t done = 0;
  while (done < units) {
    // Post receives into free slots: a slot frees once its slice has been reduced.
    for (; next_recv < units && next_recv < done + slots; ++next_recv) {
      Piece p = recv_piece(next_recv);
      if (p.bytes == 0) continue;
      std::byte* slot = ctx.ring_scratch.data() + (next_recv % slots) * ctx.slice_bytes;
      ctx.left->post_recv(nullptr, {slot, p.bytes}, next_recv);
    }
    // Post sends whose data is ready: step 0 sends our own input, later steps forward what
    // the previous step reduced.
    for (; next_send < units && (next_send < slices || next_send - slices < done); ++next_send) {
      Piece p = send_piece(next_send);
      if (p.bytes == 0) continue;
      const std::byte* from = (next_send < slices ? src : dst) + p.offset;
      ctx.right->post_send(nullptr, {from, p.bytes}, next_send);
      sent[next_send] = true;
    }
    // Wait for the slice from the left, then reduce it into our copy of that chunk.
    Piece p = recv_piece(done);
    if (p.bytes > 0) {
      ctx.left->wait_recv(done, ctx.deadline);
      const std::byte* slot = ctx.ring_scratch.data() + (done % slots) * ctx.slice_bytes;
      kernel(dst + p.offset, src + p.offset, slot, p.bytes / elem);
    }
    ++done;
  }
  for (; next_send < units; ++next_send) {
    Piece p = send_piece(next_send);
    if (p.bytes == 0) continue;
    ctx.right->post_send(nullptr, {dst + p.offset, p.bytes}, next_send);
    sent[next_send] = true;
  }
  wait_sends(ctx.right, sent, ctx.deadline);
}

void ring_allgather(Context& ctx, std::byte* buf, const ChunkLayout& layout, DataType type,
                    int owned) {
  const int n = ctx.size;
  if (n == 1) return;
  const std::size_t elem = size_of(type);
  const std::size_t slices = slices_per_chunk(ctx, layout, elem);
  const std::size_t units = static_cast<std::size_t>(n - 1) * slices;
  const std::size_t window = 2 * static_cast<std::size_t>(ctx.slots) + slices;
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
  std::vector<bool> sent(units, false);
  std::size_t next_recv = 0;
  std::size_t next_send = 0;
  std::size_t done = 0;
  while (done < units) {
    for (; next_recv < units && next_recv < done + window; ++next_recv) {
      Piece p = recv_piece(next_recv);
      if (p.bytes > 0) ctx.left->post_recv(nullptr, {buf + p.offset, p.bytes}, next_recv);
    }
    // Forward a slice as soon as it has arrived from the left.
    for (; next_send < units && (next_send < slices || next_send - slices < done); ++next_send) {
      Piece p = send_piece(next_send);
      if (p.bytes == 0) continue;
      ctx.right->post_send(nullptr, {buf + p.offset, p.bytes}, next_send);
      sent[next_send] = true;
    }
    if (recv_piece(done).bytes > 0) ctx.left->wait_recv(done, ctx.deadline);
    ++done;
  }
  for (; next_send < units; ++next_send) {
    Piece p = send_piece(next_send);
    if (p.bytes == 0) continue;
    ctx.right->post_send(nullptr, {buf + p.offset, p.bytes}, next_send);
    sent[next_send] = true;
  }
  wait_sends(ctx.right, sent, ctx.deadline);
}

void ring_allreduce(Context& ctx, const std::byte* src, std::byte* dst, std::size_t count,
                    DataType type, ReduceOp op) {
  const int n = ctx.size;
  ChunkLayout layout{count, n};
  // Reduce-scatter: afterwards this rank owns chunk rank + 1, reduced over all ranks.
  ring_reduce_scatter(ctx, src, dst, layout, type, op, 0);
  const int owned = mod(ctx.rank + 1, n);
  // avg: divide the owned chunk once, before it is copied everywhere.
  if (op == ReduceOp::avg) {
    reduce::divide_host(dst + layout.begin(owned) * size_of(type), layout.length(owned), type, n);
  }
  // Allgather: pass the reduced chunks around the ring.
  ring_allgather(ctx, dst, layout, type, owned);
}

void ring_broadcast(Context& ctx, std::byte* buf, std::size_t bytes, int root) {
  const int n = ctx.size;
  if (n == 1 || bytes == 0) return;
  const int pos = mod(ctx.rank - root, n);  // hops from the root
  const std::size_t slices =
      std::max<std::size_t>(1, (bytes + ctx.slice_bytes - 1) / ctx.slice_bytes);
  const std::size_t window = 2 * static_cast<std::size_t>(ctx.slots);
  auto range = [&](std::size_t j) {
    std::size_t b = split_begin(bytes, slices, j);
    return Piece{b, split_begin(bytes, slices, j + 1) - b};
  };
  const bool receives = pos != 0;
  const bool forwards = pos != n - 1;
  std::vector<bool> sent(slices, false);
  std::size_t next_recv = 0;
  std::size_t done = receives ? 0 : slices;
  for (std::size_t j = 0; j < slices; ++j) {
    if (receives) {
      // Keep a window of receives posted straight into the buffer.
      for (; next_recv < slices && next_recv < done + window; ++next_recv) {
        Piece p = range(next_recv);
        ctx.left->post_recv(nullptr, {buf + p.offset, p.bytes}, next_recv);
      }
      ctx.left->wait_recv(j, ctx.deadline);
      done = j + 1;
    }
    // Forward slice j to the right as soon as we have it.
    if (forwards) {
      Piece p = range(j);
      ctx.right->post_send(nullptr, {buf + p.offset, p.bytes}, j);
      sent[j] = true;
    }
  }
  if (forwards) wait_sends(ctx.right, sent, ctx.deadline);
}

}  // namespace ringlet::algo
