// SPDX-License-Identifier: Apache-2.0
// Recursive doubling allreduce for small messages, on the calling thread. With p the largest
// power of two <= N: log2(p) exchange steps of the whole message, plus a hand-off before and
// after for the N - p extra ranks. Time ~ (log2 p + 2[N != p]) (a + S/B): latency-optimal,
// bandwidth-poor, so it serves only messages below the crossover.
#include "src/algo/recursive_doubling.hpp"

#include <algorithm>

#include "src/algo/pof2.hpp"
#include "src/common/check.hpp"

namespace ringlet::algo {

std::vector<int> recursive_doubling_peers(int rank, int size) {
  std::vector<int> peers;
  Pof2Layout l = pof2_layout(size);
  if (rank < 2 * l.extra) peers.push_back(rank % 2 == 1 ? rank - 1 : rank + 1);
  int g = group_rank(rank, l);
  if (g >= 0) {
    for (int mask = 1; mask < l.pof2; mask <<= 1) peers.push_back(real_rank(g ^ mask, l));
  }
  std::sort(peers.begin(), peers.end());
  peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
  return peers;
}

engine::Task recursive_doubling_allreduce(Context& ctx, std::byte* buf, std::size_t count,
                                          DataType type, ReduceOp op, const MessagePrefix* prefix) {
  const int n = ctx.size;
  const std::size_t bytes = count * size_of(type);
  const std::size_t head = prefix != nullptr ? prefix->mine.size() : 0;
  const std::size_t message = head + bytes;
  if (n == 1 || message == 0) co_return;
  RINGLET_CHECK(2 * message <= ctx.small_scratch.size(), "recursive doubling message of ", message,
                " bytes exceeds its scratch of ", ctx.small_scratch.size());
  engine::Driver& d = *ctx.driver;
  const exec::Executor& exec = *ctx.exec;
  const exec::Reducer kernel = exec.reducer(type, op);
  const transport::MemoryRegion* mr = ctx.small_scratch_mr;
  // Staging: [prefix | our data] goes out, [their prefix | their data] comes in.
  std::byte* out = ctx.small_scratch.data();
  std::byte* in = out + message;
  std::byte* theirs = in + head;
  if (head > 0) exec.copy(out, prefix->mine.data(), head);
  const Pof2Layout l = pof2_layout(n);
  const int r = ctx.rank;

  auto stage = [&] {
    if (bytes > 0) exec.copy(out + head, buf, bytes);
  };
  auto arrived = [&](int partner) {
    if (head > 0) prefix->check(partner, {in, head});
  };
  // Combines our data with a partner's in a fixed order (lower rank's operand first), so
  // that both ends of an exchange compute the same bits.
  auto combine = [&](int partner) {
    if (bytes == 0) return;
    if (partner < r) {
      kernel(theirs, theirs, buf, count);  // op(partner, ours)
    } else {
      kernel(theirs, buf, theirs, count);  // op(ours, partner)
    }
    exec.copy(buf, theirs, bytes);
  };

  // Extra ranks (even ranks below 2 * extra) hand their data to the odd rank above them.
  if (r < 2 * l.extra) {
    if (r % 2 == 0) {
      transport::Connection* c = ctx.peers[static_cast<std::size_t>(r + 1)];
      stage();
      transport::Request send = c->post_send({out, message}, mr);
      transport::Request recv = c->post_recv({in, message}, mr);
      co_await engine::sent(d, c, send);
      // Wait for the result from the same partner.
      co_await engine::received(d, c, recv);
      arrived(r + 1);
      if (bytes > 0) exec.copy(buf, theirs, bytes);
      co_return;
    }
    transport::Connection* c = ctx.peers[static_cast<std::size_t>(r - 1)];
    transport::Request recv = c->post_recv({in, message}, mr);
    co_await engine::received(d, c, recv);
    arrived(r - 1);
    combine(r - 1);
  }
  // Exchange whole messages with partners at distance 1, 2, 4, ... in the group.
  const int g = group_rank(r, l);
  for (int mask = 1; mask < l.pof2; mask <<= 1) {
    const int partner = real_rank(g ^ mask, l);
    transport::Connection* c = ctx.peers[static_cast<std::size_t>(partner)];
    stage();
    transport::Request recv = c->post_recv({in, message}, mr);
    transport::Request send = c->post_send({out, message}, mr);
    co_await engine::received(d, c, recv);
    arrived(partner);
    co_await engine::sent(d, c, send);
    combine(partner);
  }
  // The plan's post-scale, before the result goes back to the extra rank.
  ctx.post_scale(exec, buf, count, type);
  // Hand the result back to the extra rank.
  if (r < 2 * l.extra) {
    transport::Connection* c = ctx.peers[static_cast<std::size_t>(r - 1)];
    stage();
    co_await engine::sent(d, c, c->post_send({out, message}, mr));
  }
}

}  // namespace ringlet::algo
