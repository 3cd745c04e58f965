// SPDX-License-Identifier: Apache-2.0
// A rank program for launcher tests: Communicator::create() from the environment, a few
// checked collectives, "OK" and exit 0, or a message and exit 1. Links only the public library.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <span>
#include <string>
#include <vector>

#include "ringlet/ringlet.hpp"

namespace {

bool check(bool ok, int rank, const std::string& what) {
  if (!ok) std::fprintf(stderr, "allreduce_check rank %d: FAILED: %s\n", rank, what.c_str());
  return ok;
}

}  // namespace

// Usage: allreduce_check [--expect-size N] [--expect-local-size N] [--seconds S]
// --seconds: afterwards, checked 1 MiB allreduces for S seconds (a step to kill in tests).
int main(int argc, char** argv) {
  int expect_size = -1;
  int expect_local_size = -1;
  int seconds = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--expect-size") == 0) expect_size = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--expect-local-size") == 0)
      expect_local_size = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::atoi(argv[i + 1]);
  }
  int rank = -1;
  try {
    ringlet::Options options;
    if (std::getenv("RINGLET_TIMEOUT") == nullptr) options.timeout = std::chrono::seconds(60);
    const auto t0 = std::chrono::steady_clock::now();
    ringlet::Communicator comm = ringlet::Communicator::create(options);
    const double create_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    rank = comm.rank();
    const int n = comm.size();
    bool ok = true;
    if (expect_size > 0) ok &= check(n == expect_size, rank, "size " + std::to_string(n));
    if (expect_local_size > 0) {
      ok &= check(comm.local_size() == expect_local_size, rank,
                  "local size " + std::to_string(comm.local_size()));
    }
    ok &= check(comm.local_rank() >= 0 && comm.local_rank() < comm.local_size(), rank,
                "local rank " + std::to_string(comm.local_rank()));
    // Both algorithms: a small message and one past the crossover.
    for (std::size_t count : {std::size_t{1}, std::size_t{1000}, std::size_t{300001}}) {
      std::vector<float> f(count, static_cast<float>(rank + 1));
      comm.allreduce(std::span<float>(f));
      const float want = static_cast<float>(n) * static_cast<float>(n + 1) / 2;
      for (std::size_t i = 0; i < count && ok; ++i) {
        ok &= check(f[i] == want, rank,
                    "float sum of " + std::to_string(count) + " at " + std::to_string(i) + ": " +
                        std::to_string(f[i]) + " != " + std::to_string(want));
      }
      std::vector<std::int64_t> in(count, rank);
      std::vector<std::int64_t> out(count, -1);
      comm.allreduce(std::span<const std::int64_t>(in), std::span<std::int64_t>(out),
                     ringlet::ReduceOp::max);
      for (std::size_t i = 0; i < count && ok; ++i) {
        ok &= check(out[i] == n - 1, rank, "int64 max at " + std::to_string(i));
      }
    }
    std::vector<std::int32_t> b(17, rank == 0 ? 42 : 0);
    comm.broadcast(std::span<std::int32_t>(b), 0);
    for (auto x : b) ok &= check(x == 42, rank, "broadcast");
    comm.barrier();
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    std::vector<float> big(std::size_t{1} << 18);
    while (ok && seconds > 0) {
      std::fill(big.begin(), big.end(), 1.0f);
      comm.allreduce(std::span<float>(big));
      ok &= check(big[big.size() - 1] == static_cast<float>(n), rank, "loop sum");
      int more = std::chrono::steady_clock::now() < until ? 1 : 0;  // rank 0 decides for all
      comm.broadcast(std::span<int>(&more, 1), 0);
      if (more == 0) break;
    }
    if (!ok) return 1;
    std::printf("allreduce_check rank %d/%d local %d/%d nodes %d create_ms %.1f: OK\n", rank, n,
                comm.local_rank(), comm.local_size(), comm.node_count(), create_ms);
    std::fflush(stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "allreduce_check rank %d: FAILED: %s\n", rank, e.what());
    return 1;
  }
}
