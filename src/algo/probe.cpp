// SPDX-License-Identifier: Apache-2.0
// The link probe: ring shifts of a small and a large message, medians, agreed maxima.
#include "src/algo/probe.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "src/algo/recursive_doubling.hpp"
#include "src/common/check.hpp"

namespace ringlet::algo {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Sends `bytes` to the right while receiving as many from the left.
engine::Task ring_shift(engine::Driver& d, transport::Connection* left,
                        transport::Connection* right, const std::byte* send_buf,
                        std::byte* recv_buf, std::size_t bytes, const transport::MemoryRegion* mr) {
  transport::Request recv = left->post_recv({recv_buf, bytes}, mr);
  transport::Request send = right->post_send({send_buf, bytes}, mr);
  co_await engine::received(d, left, recv);
  co_await engine::sent(d, right, send);
}

}  // namespace

engine::Task probe_links(Context& ctx, std::span<std::byte> buf, const transport::MemoryRegion* mr,
                         ProbeOptions o, ProbeResult* out) {
  *out = ProbeResult{};
  if (ctx.size == 1) co_return;
  RINGLET_CHECK(o.large_bytes > o.small_bytes && buf.size() >= 2 * o.large_bytes, "link probe of ",
                o.large_bytes, " bytes needs a buffer of twice that, got ", buf.size());
  const auto start = Clock::now();
  engine::Driver& d = *ctx.driver;
  std::byte* send_buf = buf.data();
  std::byte* recv_buf = buf.data() + o.large_bytes;
  auto shift = [&](std::size_t bytes) {
    return ring_shift(d, ctx.left, ctx.right, send_buf, recv_buf, bytes, mr);
  };
  // One unmeasured shift of each kind: connections warm, pages touched.
  co_await shift(o.small_bytes);
  co_await shift(o.large_bytes);
  std::vector<double> small, large;
  for (int i = 0; i < o.small_rounds; ++i) {
    const auto t = Clock::now();
    co_await shift(o.small_bytes);
    small.push_back(seconds_since(t));
  }
  for (int i = 0; i < o.large_rounds; ++i) {
    const auto t = Clock::now();
    co_await shift(o.large_bytes);
    large.push_back(seconds_since(t));
  }
  const double t_small = median(std::move(small));
  const double t_large = median(std::move(large));
  double agreed[2] = {t_small, std::max(0.0, t_large - t_small) /
                                   static_cast<double>(o.large_bytes - o.small_bytes)};
  // The slowest rank's figures, on every rank bit for bit (max is exact).
  Context agree = ctx;
  agree.post_scale = PostScale{};
  std::byte* values = send_buf;  // registered; the probe's data is no longer needed
  std::memcpy(values, agreed, sizeof(agreed));
  co_await recursive_doubling_allreduce(agree, values, 2, DataType::float64, ReduceOp::max);
  std::memcpy(agreed, values, sizeof(agreed));
  out->alpha_s = agreed[0];
  out->beta_s_per_byte = agreed[1];
  out->seconds_spent = seconds_since(start);
}

}  // namespace ringlet::algo
