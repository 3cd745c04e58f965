// SPDX-License-Identifier: Apache-2.0
// engine_bench: figures of the progress engine, over the public API, under ringlet-run.
//
//   engine_bench idle [SECONDS]      process CPU time while the communicator is live and idle
//                                    (the engine thread started, the main thread asleep)
//   engine_bench fused [MB] [REPS]   300 float tensors (log-uniform sizes, a few large)
//                                    totalling MB megabytes in one list call, against one
//                                    allreduce of MB megabytes; medians of REPS, interleaved
//   engine_bench overlap [MB] [REPS] a CPU loop of about one async MB-megabyte allreduce,
//                                    overlapped with it (async + wait) and in sequence
//                                    (blocking call, then the loop); the engine's CPU time
//
// Rank 0 prints one line per figure; every figure is the slowest rank's. Sizes are in 10^6
// bytes, as the issue states them ("100 MB").
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "include/ringlet/ringlet.hpp"

namespace {

using ringlet::Communicator;
using ringlet::ReduceOp;
using ringlet::Tensor;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double max_over_ranks(Communicator& comm, double v) {
  comm.allreduce(std::span<double>(&v, 1), ReduceOp::max);
  return v;
}

double process_cpu_s() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

double thread_cpu_s() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Starts the engine thread: a collective above the crossover issued asynchronously while
// nothing is pending is queued for it.
void start_engine(Communicator& comm) {
  std::vector<float> big(1 << 20, 1.0f);
  comm.allreduce_async(std::span<float>(big)).wait();
  comm.barrier();
}

int idle(Communicator& comm, double seconds) {
  start_engine(comm);
  const double cpu0 = process_cpu_s();
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const double wall = seconds_since(t0);
  const double cpu = process_cpu_s() - cpu0;
  const double worst = max_over_ranks(comm, cpu);
  if (comm.rank() == 0) {
    std::printf(
        "idle: %.1f s live and idle, process CPU %.4f s (slowest rank) = %.3f%% of a core\n", wall,
        worst, 100.0 * worst / wall);
  }
  return 0;
}

int fused(Communicator& comm, double mb, int reps) {
  const std::size_t total = static_cast<std::size_t>(mb * 1e6) / sizeof(float);
  // 300 log-uniform sizes (the same on every rank), scaled to `total` elements.
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> d(0.0, std::log(1e6));
  std::vector<double> w(300);
  for (std::size_t k = 0; k < w.size(); ++k) w[k] = k % 100 == 50 ? 1e6 : std::exp(d(rng));
  double sum = 0;
  for (double x : w) sum += x;
  std::vector<std::vector<float>> store(w.size());
  std::vector<Tensor> list;
  std::size_t used = 0;
  for (std::size_t k = 0; k < w.size(); ++k) {
    std::size_t n = static_cast<std::size_t>(w[k] / sum * static_cast<double>(total));
    if (k + 1 == w.size()) n = total - used;
    used += n;
    store[k].assign(n, 1.0f);
    list.push_back(Tensor::of(std::span<float>(store[k])));
  }
  std::vector<float> one(total, 1.0f);
  std::vector<double> t_list, t_one;
  comm.allreduce(std::span<const Tensor>(list));  // warm-up
  comm.allreduce(std::span<float>(one));
  for (int r = 0; r < reps; ++r) {
    comm.barrier();
    auto t = Clock::now();
    comm.allreduce(std::span<const Tensor>(list));
    t_list.push_back(max_over_ranks(comm, seconds_since(t)));
    comm.barrier();
    t = Clock::now();
    comm.allreduce(std::span<float>(one));
    t_one.push_back(max_over_ranks(comm, seconds_since(t)));
  }
  if (comm.rank() == 0) {
    std::printf(
        "fused: %zu tensors, %.0f MB: list %.1f ms, one allreduce %.1f ms, ratio %.3f "
        "(medians of %d)\n",
        list.size(), mb, 1e3 * median(t_list), 1e3 * median(t_one), median(t_list) / median(t_one),
        reps);
  }
  return 0;
}

// A single-threaded CPU loop of `iters` rounds; returns a value so it is not optimised out.
std::uint64_t spin(std::uint64_t iters) {
  std::uint64_t x = 88172645463325252ull;
  for (std::uint64_t i = 0; i < iters; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

int overlap(Communicator& comm, double mb, int reps) {
  const std::size_t count = static_cast<std::size_t>(mb * 1e6) / sizeof(float);
  std::vector<float> buf(count, 1.0f);
  start_engine(comm);
  volatile std::uint64_t sink = 0;
  // The allreduce alone, async + wait.
  std::vector<double> t_ar;
  for (int r = 0; r < 3; ++r) {
    comm.barrier();
    auto t = Clock::now();
    comm.allreduce_async(std::span<float>(buf)).wait();
    t_ar.push_back(max_over_ranks(comm, seconds_since(t)));
  }
  const double ar = median(t_ar);
  // Calibrate the loop to the same duration (every rank runs the same count).
  std::uint64_t iters = 1 << 20;
  for (;;) {
    auto t = Clock::now();
    sink = sink + spin(iters);
    const double s = seconds_since(t);
    if (s > 0.05) {
      iters = static_cast<std::uint64_t>(static_cast<double>(iters) * ar / s);
      break;
    }
    iters *= 4;
  }
  iters = static_cast<std::uint64_t>(max_over_ranks(comm, static_cast<double>(iters)));
  std::vector<double> t_loop, t_over, t_seq, engine_cpu;
  for (int r = 0; r < reps; ++r) {
    comm.barrier();
    auto t = Clock::now();
    sink = sink + spin(iters);
    t_loop.push_back(max_over_ranks(comm, seconds_since(t)));

    comm.barrier();
    const double p0 = process_cpu_s();
    const double m0 = thread_cpu_s();
    t = Clock::now();
    ringlet::Work w = comm.allreduce_async(std::span<float>(buf));
    sink = sink + spin(iters);
    w.wait();
    const double over = seconds_since(t);
    const double other = (process_cpu_s() - p0) - (thread_cpu_s() - m0);
    t_over.push_back(max_over_ranks(comm, over));
    engine_cpu.push_back(max_over_ranks(comm, other));

    comm.barrier();
    t = Clock::now();
    comm.allreduce(std::span<float>(buf));
    sink = sink + spin(iters);
    t_seq.push_back(max_over_ranks(comm, seconds_since(t)));
  }
  if (comm.rank() == 0) {
    const double loop = median(t_loop);
    const double longer = std::max(ar, loop);
    std::printf(
        "overlap: %.0f MB allreduce %.1f ms, CPU loop %.1f ms; overlapped %.1f ms = %.3f x "
        "the longer; blocking form %.1f ms = %.3f x; engine (non-main threads) CPU %.1f "
        "ms (medians of %d)\n",
        mb, 1e3 * ar, 1e3 * loop, 1e3 * median(t_over), median(t_over) / longer,
        1e3 * median(t_seq), median(t_seq) / longer, 1e3 * median(engine_cpu), reps);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  auto arg = [&](int i, double fallback) { return argc > i ? std::atof(argv[i]) : fallback; };
  try {
    Communicator comm = Communicator::create({});
    if (mode == "idle") return idle(comm, arg(2, 10.0));
    if (mode == "fused") return fused(comm, arg(2, 100.0), static_cast<int>(arg(3, 5)));
    if (mode == "overlap") return overlap(comm, arg(2, 64 * 1.048576), static_cast<int>(arg(3, 5)));
    std::fprintf(stderr,
                 "usage: engine_bench idle [S] | fused [MB] [REPS] | overlap [MB] [REPS]\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "engine_bench: %s\n", e.what());
    return 3;
  }
}
