// SPDX-License-Identifier: Apache-2.0
// Rabenseifner's allreduce. The buffer is cut into p balanced blocks (p the largest power of
// two <= N); block g ends up owned by the rank of group index g. Reduce-scatter: at distance
// p/2, p/4, ..., 1 a rank sends the half of its current range that does not hold its block
// and reduces the half that does. Allgather: the same exchanges in the opposite order, each
// rank sending what it holds and receiving its partner's range into place. The N - p ranks
// beyond the group hand their input to a partner first and get the result from it last.
#include "src/algo/rabenseifner.hpp"

#include <algorithm>

#include "src/algo/pof2.hpp"
#include "src/algo/recursive_doubling.hpp"
#include "src/algo/ring.hpp"
#include "src/common/check.hpp"

namespace ringlet::algo {
namespace {

using transport::Request;

// Elements [begin, begin + count) of the buffer, cut into pieces of at most slice_bytes.
// Both ends of an exchange cut the same range the same way, so the n-th send matches the
// n-th receive (FIFO per connection) with the same length.
class Pieces {
 public:
  Pieces(const Context& ctx, std::size_t begin, std::size_t count, std::size_t elem)
      : begin_(begin), count_(count), elem_(elem) {
    const std::size_t per_slice = ctx.slice_bytes / elem;
    RINGLET_CHECK(per_slice > 0, "slice of ", ctx.slice_bytes, " bytes is smaller than an element");
    pieces_ = (count + per_slice - 1) / per_slice;
  }
  std::size_t size() const noexcept { return pieces_; }
  // Byte offset into the buffer and length of piece j.
  std::size_t offset(std::size_t j) const noexcept {
    return (begin_ + split_begin(count_, pieces_, j)) * elem_;
  }
  std::size_t bytes(std::size_t j) const noexcept {
    return (split_begin(count_, pieces_, j + 1) - split_begin(count_, pieces_, j)) * elem_;
  }

 private:
  std::size_t begin_;
  std::size_t count_;
  std::size_t elem_;
  std::size_t pieces_ = 0;
};

// A window of posts: at most `window`, clamped to the transport's limit.
std::size_t clamp_window(const Context& ctx, std::size_t window) {
  if (ctx.max_outstanding > 0) window = std::min(window, ctx.max_outstanding);
  return std::max<std::size_t>(window, 1);
}

// One exchange with one partner: send elements `send` of `from`, receive elements `recv`
// either into scratch slots, reduced into dst with `mine` (reduce), or straight into dst.
struct Step {
  transport::Connection* conn = nullptr;
  const std::byte* from = nullptr;
  std::size_t send_begin = 0;
  std::size_t send_count = 0;
  std::size_t recv_begin = 0;
  std::size_t recv_count = 0;
  bool reduce = false;
  // The operand this rank contributes (src before the first reduction, dst after).
  const std::byte* mine = nullptr;
  // The partner is the lower rank: its operand goes first.
  bool theirs_first = false;
};

// Runs one Step in lockstep: at iteration i, receives up to i + window - 1 and sends up to
// i + ahead - 1 are posted, then receive i is awaited. The sends are bounded by the
// transport's limit; a send is awaited only once it is at least `limit` older than the
// current iteration, whose receive the partner has posted by then, so two partners never
// wait for each other.
engine::Task exchange(Context& ctx, std::byte* dst, Step s, exec::Reducer reduce,
                      std::size_t elem) {
  engine::Driver& d = *ctx.driver;
  const exec::Executor& exec = *ctx.exec;
  const Pieces out(ctx, s.send_begin, s.send_count, elem);
  const Pieces in(ctx, s.recv_begin, s.recv_count, elem);
  const std::size_t nsend = out.size();
  const std::size_t nrecv = in.size();
  if (nsend == 0 && nrecv == 0) co_return;
  // Reductions receive into the slots; the allgather into place, as the ring's does.
  const std::size_t window =
      s.reduce ? clamp_window(ctx, static_cast<std::size_t>(ctx.slots))
               : clamp_window(ctx, 2 * static_cast<std::size_t>(ctx.slots) + nrecv);
  RINGLET_CHECK(!s.reduce || window * ctx.slice_bytes <= ctx.ring_scratch.size(),
                "Rabenseifner's window of ", window, " slices exceeds the ring scratch");
  const std::size_t limit = ctx.max_outstanding;
  const std::size_t ahead = limit == 0 ? nsend : std::min(window, limit);
  std::vector<Request> recvs(std::min(window, nrecv));
  std::vector<Request> sends(nsend);
  std::size_t next_recv = 0;
  std::size_t next_send = 0;
  std::size_t sent_done = 0;
  const std::size_t steps = std::max(nsend, nrecv);
  for (std::size_t i = 0; i < steps; ++i) {
    for (; next_recv < nrecv && next_recv < i + window; ++next_recv) {
      const std::size_t bytes = in.bytes(next_recv);
      if (s.reduce) {
        std::byte* slot = ctx.ring_scratch.data() + (next_recv % window) * ctx.slice_bytes;
        recvs[next_recv % window] = s.conn->post_recv({slot, bytes}, ctx.ring_scratch_mr);
      } else {
        recvs[next_recv % window] = s.conn->post_recv({dst + in.offset(next_recv), bytes}, nullptr);
      }
    }
    for (; next_send < nsend && next_send < i + ahead; ++next_send) {
      if (limit > 0 && next_send - sent_done >= limit) {
        co_await engine::sent(d, s.conn, sends[sent_done++]);
      }
      sends[next_send] =
          s.conn->post_send({s.from + out.offset(next_send), out.bytes(next_send)}, nullptr);
    }
    if (i >= nrecv) continue;
    co_await engine::received(d, s.conn, recvs[i % window]);
    if (!s.reduce) continue;
    std::byte* slot = ctx.ring_scratch.data() + (i % window) * ctx.slice_bytes;
    const std::size_t o = in.offset(i);
    const std::size_t n = in.bytes(i) / elem;
    if (!s.theirs_first) {
      reduce(dst + o, s.mine + o, slot, n);  // op(ours, theirs); dst may be mine
    } else if (s.mine != dst) {
      reduce(dst + o, slot, s.mine + o, n);  // op(theirs, ours), out of place
    } else {
      // op(theirs, ours) in place: a reducer's output may alias only its first operand.
      reduce(slot, slot, dst + o, n);
      exec.copy(dst + o, slot, in.bytes(i));
    }
  }
  while (sent_done < nsend) co_await engine::sent(d, s.conn, sends[sent_done++]);
}

}  // namespace

std::vector<int> rabenseifner_peers(int rank, int size) {
  return recursive_doubling_peers(rank, size);
}

engine::Task rabenseifner_allreduce(Context& ctx, const std::byte* src, std::byte* dst,
                                    std::size_t count, DataType type, ReduceOp op) {
  const int n = ctx.size;
  const int r = ctx.rank;
  const std::size_t elem = size_of(type);
  if (n == 1 || count == 0) {
    if (count > 0 && src != dst) ctx.exec->copy(dst, src, count * elem);
    co_return;
  }
  const exec::Reducer reduce = ctx.exec->reducer(type, op);
  const Pof2Layout l = pof2_layout(n);
  auto conn = [&](int peer) {
    transport::Connection* c = ctx.peers[static_cast<std::size_t>(peer)];
    RINGLET_CHECK(c != nullptr, "rank ", r, " has no connection to rank ", peer,
                  " for Rabenseifner's allreduce");
    return c;
  };
  if (ctx.runtime != nullptr) ctx.runtime->trace_step("rabenseifner reduce-scatter");
  // The fold: an even rank below 2 * extra hands its input to the odd rank above it and
  // gets the result back from it at the end.
  const std::byte* mine = src;
  if (r < 2 * l.extra) {
    if (r % 2 == 0) {
      Step give;
      give.conn = conn(r + 1);
      give.from = src;
      give.send_count = count;
      co_await exchange(ctx, dst, give, reduce, elem);
      // Every send has completed: dst may be the input just sent.
      if (ctx.runtime != nullptr) ctx.runtime->trace_step("rabenseifner allgather");
      Step result;
      result.conn = give.conn;
      result.recv_count = count;
      co_await exchange(ctx, dst, result, reduce, elem);
      co_return;
    }
    Step take;
    take.conn = conn(r - 1);
    take.recv_count = count;
    take.reduce = true;
    take.mine = src;
    take.theirs_first = true;  // the even rank is the lower one
    co_await exchange(ctx, dst, take, reduce, elem);
    mine = dst;
  }
  const int g = group_rank(r, l);
  const ChunkLayout blocks{count, l.pof2};
  auto first = [&](int block) { return blocks.begin(block); };
  // Reduce-scatter by recursive halving: this rank's range is blocks [lo, lo + width).
  int lo = 0;
  for (int width = l.pof2; width > 1; width /= 2) {
    const int half = width / 2;
    const int partner = real_rank(g ^ half, l);
    const bool lower = (g & half) == 0;  // keeps the lower half of the range
    const int keep = lower ? lo : lo + half;
    const int give = lower ? lo + half : lo;
    Step s;
    s.conn = conn(partner);
    s.from = mine;
    s.send_begin = first(give);
    s.send_count = first(give + half) - first(give);
    s.recv_begin = first(keep);
    s.recv_count = first(keep + half) - first(keep);
    s.reduce = true;
    s.mine = mine;
    s.theirs_first = partner < r;
    co_await exchange(ctx, dst, s, reduce, elem);
    mine = dst;
    lo = keep;
  }
  // This rank owns block g, reduced over all ranks: the plan's post-scale, once, before the
  // block is copied everywhere.
  ctx.post_scale(*ctx.exec, dst + first(g) * elem, blocks.length(g), type);
  // Allgather by recursive doubling: exchange ranges of width 1, 2, 4, ... blocks in place.
  if (ctx.runtime != nullptr) ctx.runtime->trace_step("rabenseifner allgather");
  for (int width = 1; width < l.pof2; width *= 2) {
    const int partner = real_rank(g ^ width, l);
    const int theirs = lo ^ width;
    Step s;
    s.conn = conn(partner);
    s.from = dst;
    s.send_begin = first(lo);
    s.send_count = first(lo + width) - first(lo);
    s.recv_begin = first(theirs);
    s.recv_count = first(theirs + width) - first(theirs);
    co_await exchange(ctx, dst, s, reduce, elem);
    lo = std::min(lo, theirs);
  }
  // The result back to the folded rank.
  if (r < 2 * l.extra) {
    Step back;
    back.conn = conn(r - 1);
    back.from = dst;
    back.send_count = count;
    co_await exchange(ctx, dst, back, reduce, elem);
  }
}

}  // namespace ringlet::algo
