// SPDX-License-Identifier: Apache-2.0
// Recursive doubling allreduce for small messages, on the calling thread. With p the largest
// power of two <= N: log2(p) exchange steps of the whole message, plus a hand-off before and
// after for the N - p extra ranks. Time ~ (log2 p + 2[N != p]) (a + S/B): latency-optimal,
// bandwidth-poor, so it serves only messages below the crossover.
#include "src/algo/recursive_doubling.hpp"

#include <algorithm>
#include <cstring>

#include "src/common/check.hpp"
#include "src/reduce/reduce.hpp"

namespace ringlet::algo {
namespace {

struct Layout {
  int pof2 = 1;   // largest power of two <= size
  int extra = 0;  // size - pof2
};

Layout layout_of(int size) {
  Layout l;
  while (l.pof2 * 2 <= size) l.pof2 *= 2;
  l.extra = size - l.pof2;
  return l;
}

// Rank inside the power-of-two group, or -1 for a rank that hands its data off.
int group_rank(int rank, const Layout& l) {
  if (rank < 2 * l.extra) return rank % 2 == 1 ? rank / 2 : -1;
  return rank - l.extra;
}

int real_rank(int group, const Layout& l) {
  return group < l.extra ? group * 2 + 1 : group + l.extra;
}

}  // namespace

std::vector<int> recursive_doubling_peers(int rank, int size) {
  std::vector<int> peers;
  Layout l = layout_of(size);
  if (rank < 2 * l.extra) peers.push_back(rank % 2 == 1 ? rank - 1 : rank + 1);
  int g = group_rank(rank, l);
  if (g >= 0) {
    for (int mask = 1; mask < l.pof2; mask <<= 1) peers.push_back(real_rank(g ^ mask, l));
  }
  std::sort(peers.begin(), peers.end());
  peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
  return peers;
}

void recursive_doubling_allreduce(Context& ctx, std::byte* buf, std::size_t count, DataType type,
                                  ReduceOp op, const MessagePrefix* prefix) {
  const int n = ctx.size;
  const std::size_t bytes = count * size_of(type);
  const std::size_t head = prefix != nullptr ? prefix->mine.size() : 0;
  const std::size_t message = head + bytes;
  if (n == 1 || message == 0) return;
  RINGLET_CHECK(2 * message <= ctx.small_scratch.size(), "recursive doubling message of ", message,
                " bytes exceeds its scratch of ", ctx.small_scratch.size());
  const auto kernel = reduce::host_kernel3(type, op);
  // Staging: [prefix | our data] goes out, [their prefix | their data] comes in.
  std::byte* out = ctx.small_scratch.data();
  std::byte* in = out + message;
  std::byte* theirs = in + head;
  if (head > 0) std::memcpy(out, prefix->mine.data(), head);
  const Layout l = layout_of(n);
  const int r = ctx.rank;
  std::uint64_t tag = 0;

  auto stage = [&] {
    if (bytes > 0) std::memcpy(out + head, buf, bytes);
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
    std::memcpy(buf, theirs, bytes);
  };
  auto exchange = [&](int partner) {
    transport::Connection* c = ctx.peers[static_cast<std::size_t>(partner)];
    stage();
    c->post_recv(nullptr, {in, message}, tag);
    c->post_send(nullptr, {out, message}, tag);
    c->wait_recv(tag, ctx.deadline);
    arrived(partner);
    c->wait_send(tag, ctx.deadline);
    ++tag;
  };

  // Extra ranks (even ranks below 2 * extra) hand their data to the odd rank above them.
  if (r < 2 * l.extra) {
    if (r % 2 == 0) {
      transport::Connection* c = ctx.peers[static_cast<std::size_t>(r + 1)];
      stage();
      c->post_send(nullptr, {out, message}, tag);
      c->post_recv(nullptr, {in, message}, tag + 1);
      c->wait_send(tag, ctx.deadline);
      // Wait for the result from the same partner.
      c->wait_recv(tag + 1, ctx.deadline);
      arrived(r + 1);
      if (bytes > 0) std::memcpy(buf, theirs, bytes);
      return;
    }
    transport::Connection* c = ctx.peers[static_cast<std::size_t>(r - 1)];
    c->post_recv(nullptr, {in, message}, tag);
    c->wait_recv(tag, ctx.deadline);
    arrived(r - 1);
    combine(r - 1);
  }
  ++tag;
  // Exchange whole messages with partners at distance 1, 2, 4, ... in the group.
  const int g = group_rank(r, l);
  for (int mask = 1; mask < l.pof2; mask <<= 1) {
    int partner = real_rank(g ^ mask, l);
    exchange(partner);
    combine(partner);
  }
  // Hand the result back to the extra rank.
  if (r < 2 * l.extra) {
    transport::Connection* c = ctx.peers[static_cast<std::size_t>(r - 1)];
    stage();
    c->post_send(nullptr, {out, message}, 1);
    c->wait_send(1, ctx.deadline);
  }
}

}  // namespace ringlet::algo
