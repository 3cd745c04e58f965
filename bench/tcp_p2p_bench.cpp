// SPDX-License-Identifier: Apache-2.0
// Point-to-point throughput of the TCP transport on loopback: forked processes, GB/s.
//
// Usage: tcp_p2p_bench [--sockets=1,2,4] [--slices=262144,1048576,4194304] [--layout=both]
//                      [--bytes=67108864] [--iters=5] [--window=4] [--buffer=0]
//                      [--only=pair|ring|lat]
// lat: half round trips of 8 B, 64 KiB and 1 MiB between two processes (median, p99, max).
// pair: rank 0 -> rank 1 (uni) and both ways at once (bidi); ring: 4 processes, each sends
// to its right and receives from its left. Each figure is the median of --iters runs.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "transports/tcp/transport.hpp"

namespace {

using ringlet::Clock;
using ringlet::Deadline;
namespace rt = ringlet::transport;
using namespace std::chrono_literals;

constexpr int kMaxRanks = 8;
constexpr int kMaxIters = 64;

// Shared between the forked ranks of one run (MAP_SHARED before fork).
struct Shared {
  std::atomic<int> published{0};
  std::atomic<int> failed{0};
  unsigned char blobs[kMaxRanks][64];
  std::size_t blob_sizes[kMaxRanks];
  double seconds[kMaxRanks][kMaxIters];
  double trips[20000];  // latency mode: half round trips in seconds, rank 0
};

struct Config {
  bool latency = false;  // pair: round trips of `bytes`; seconds[] holds per-trip times
  int ranks = 2;
  bool bidi = false;  // pair only
  int sockets = 2;
  bool separate = true;
  std::size_t slice = 1 << 20;
  std::size_t bytes = 64 << 20;
  int iters = 5;
  std::size_t window = 4;
  int buffer = 0;
  bool quickack = true;
};

// Moves cfg.bytes through `send` (to the right) and/or `recv` (from the left) in slices,
// keeping up to cfg.window slices of each in flight (slot s % cfg.window holds slice s).
void transfer(const Config& cfg, rt::Connection* send, rt::Connection* recv,
              std::vector<std::byte>& out, std::vector<std::byte>& in) {
  const std::size_t slices = (cfg.bytes + cfg.slice - 1) / cfg.slice;
  const Deadline deadline = Clock::now() + 120s;
  auto span_of = [&](std::vector<std::byte>& v, std::size_t s) {
    std::size_t off = s * cfg.slice;
    return std::span<std::byte>(v.data() + off, std::min(cfg.slice, cfg.bytes - off));
  };
  std::vector<rt::Request> sends(cfg.window), recvs(cfg.window);
  for (std::size_t s = 0; s < slices + cfg.window; ++s) {
    const std::size_t slot = s % cfg.window;
    if (s >= cfg.window) {
      if (recv != nullptr) recv->wait(recvs[slot], deadline);
      if (send != nullptr) send->wait(sends[slot], deadline);
    }
    if (s < slices) {
      if (send != nullptr) sends[slot] = send->post_send(span_of(out, s), nullptr);
      if (recv != nullptr) recvs[slot] = recv->post_recv(span_of(in, s), nullptr);
    }
  }
}

// A small ring barrier: a token of 0 bytes right, then from the left, twice around.
void barrier(int rank, int ranks, rt::Connection* right, rt::Connection* left) {
  const Deadline deadline = Clock::now() + 60s;
  std::span<std::byte> none;
  for (int round = 0; round < 2; ++round) {
    if (rank == 0) {
      right->wait(right->post_send(none, nullptr), deadline);
      left->wait(left->post_recv(none, nullptr), deadline);
    } else {
      left->wait(left->post_recv(none, nullptr), deadline);
      right->wait(right->post_send(none, nullptr), deadline);
    }
  }
  (void)ranks;
}

int run_rank(const Config& cfg, int rank, Shared* shared) {
  rt::TcpOptions o;
  o.rank = rank;
  o.size = cfg.ranks;
  o.job_id = 77;
  o.bind_address = "127.0.0.1";
  o.sockets = cfg.sockets;
  o.separate_directions = cfg.separate;
  o.buffer_bytes = cfg.buffer;
  o.quickack = cfg.quickack;
  auto transport = rt::make_tcp_transport(o);
  auto blob = transport->local_address();
  std::memcpy(shared->blobs[rank], blob.data(), blob.size());
  shared->blob_sizes[rank] = blob.size();
  shared->published.fetch_add(1);
  while (shared->published.load() < cfg.ranks) {
    if (shared->failed.load() != 0) return 1;
    std::this_thread::sleep_for(1ms);
  }
  const int right_rank = (rank + 1) % cfg.ranks;
  const int left_rank = (rank + cfg.ranks - 1) % cfg.ranks;
  const Deadline deadline = Clock::now() + 30s;
  auto connect = [&](int peer) {
    return transport->connect(
        peer,
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(shared->blobs[peer]),
                                   shared->blob_sizes[peer]),
        deadline);
  };
  std::unique_ptr<rt::Connection> right = connect(right_rank);
  std::unique_ptr<rt::Connection> left_owned;
  rt::Connection* left = right.get();
  if (left_rank != right_rank) {
    left_owned = connect(left_rank);
    left = left_owned.get();
  }
  if (cfg.latency) {
    // Round trips of cfg.bytes; rank 0 records each half round trip.
    std::vector<std::byte> msg(cfg.bytes, std::byte{1});
    const Deadline deadline = Clock::now() + 60s;
    const int trips = cfg.iters;
    for (int t = -100; t < trips; ++t) {
      auto start = Clock::now();
      if (rank == 0) {
        rt::Request send = right->post_send(msg, nullptr);
        rt::Request recv = right->post_recv(msg, nullptr);
        right->wait(send, deadline);
        right->wait(recv, deadline);
        if (t >= 0) {
          shared->trips[t] = std::chrono::duration<double>(Clock::now() - start).count() / 2;
        }
      } else {
        right->wait(right->post_recv(msg, nullptr), deadline);
        right->wait(right->post_send(msg, nullptr), deadline);
      }
    }
    barrier(rank, cfg.ranks, right.get(), left);
    return 0;
  }
  // Touch the buffers once, before timing (first touch costs ~10 us per page here).
  std::vector<std::byte> out(cfg.bytes, std::byte{1});
  std::vector<std::byte> in(cfg.bytes, std::byte{0});
  for (int it = -1; it < cfg.iters; ++it) {
    barrier(rank, cfg.ranks, right.get(), left);
    auto start = Clock::now();
    if (cfg.ranks == 2 && !cfg.bidi) {
      transfer(cfg, rank == 0 ? right.get() : nullptr, rank == 1 ? left : nullptr, out, in);
    } else {
      transfer(cfg, right.get(), left, out, in);
    }
    double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (it >= 0) shared->seconds[rank][it] = s;
  }
  barrier(rank, cfg.ranks, right.get(), left);  // no rank closes while others still read
  return 0;
}

// Runs one configuration in cfg.ranks forked processes; returns the median over iterations
// of the slowest rank's time, or a negative number on failure.
double run(const Config& cfg) {
  void* mem =
      ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return -1;
  auto* shared = new (mem) Shared();
  std::vector<pid_t> pids;
  for (int r = 0; r < cfg.ranks; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int rc = 1;
      try {
        rc = run_rank(cfg, r, shared);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
        shared->failed.store(1);
      }
      std::fflush(stderr);
      ::_exit(rc);
    }
    pids.push_back(pid);
  }
  bool ok = true;
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  double median = -1;
  if (ok && cfg.latency) {
    std::vector<double> t(shared->trips, shared->trips + cfg.iters);
    std::sort(t.begin(), t.end());
    auto stalls = std::count_if(t.begin(), t.end(), [](double x) { return x > 0.030; });
    std::printf(
        "lat   %zu B x %d: half round trip median %.1f us, p99 %.1f us, max %.1f us, "
        "%ld over 30 ms\n",
        cfg.bytes, cfg.iters, 1e6 * t[t.size() / 2], 1e6 * t[t.size() * 99 / 100], 1e6 * t.back(),
        static_cast<long>(stalls));
    median = t[t.size() / 2];
  } else if (ok) {
    std::vector<double> worst;
    for (int it = 0; it < cfg.iters; ++it) {
      double w = 0;
      for (int r = 0; r < cfg.ranks; ++r) w = std::max(w, shared->seconds[r][it]);
      worst.push_back(w);
    }
    std::sort(worst.begin(), worst.end());
    median = worst[worst.size() / 2];
  }
  ::munmap(mem, sizeof(Shared));
  return median;
}

std::vector<long> parse_list(const std::string& s) {
  std::vector<long> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    std::size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    if (comma > pos) out.push_back(std::strtol(s.substr(pos, comma - pos).c_str(), nullptr, 10));
    pos = comma + 1;
  }
  return out;
}

std::string size_name(std::size_t b) {
  if (b % (1 << 20) == 0) return std::to_string(b >> 20) + "MiB";
  return std::to_string(b >> 10) + "KiB";
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<long> sockets = {1, 2, 4};
  std::vector<long> slices = {256 << 10, 1 << 20, 4 << 20};
  std::vector<bool> layouts = {true, false};
  Config base;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      std::size_t n = std::strlen(name);
      return a.compare(0, n, name) == 0 ? a.c_str() + n : nullptr;
    };
    if (const char* v = value("--sockets=")) {
      sockets = parse_list(v);
    } else if (const char* v = value("--slices=")) {
      slices = parse_list(v);
    } else if (const char* v = value("--layout=")) {
      std::string l = v;
      layouts = l == "separate" ? std::vector<bool>{true}
                : l == "shared" ? std::vector<bool>{false}
                                : std::vector<bool>{true, false};
    } else if (const char* v = value("--bytes=")) {
      base.bytes = std::strtoul(v, nullptr, 10);
    } else if (const char* v = value("--iters=")) {
      base.iters = std::clamp(std::atoi(v), 1, kMaxIters);
    } else if (const char* v = value("--window=")) {
      base.window = std::max(1, std::atoi(v));
    } else if (const char* v = value("--buffer=")) {
      base.buffer = std::atoi(v);
    } else if (const char* v = value("--quickack=")) {
      base.quickack = std::atoi(v) != 0;
    } else if (const char* v = value("--only=")) {
      only = v;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  std::printf("# %s per transfer, window %zu slices, SO_SNDBUF/RCVBUF %s, median of %d\n",
              size_name(base.bytes).c_str(), base.window,
              base.buffer > 0 ? std::to_string(base.buffer).c_str() : "auto", base.iters);
  std::printf("%-5s %-5s %-9s %7s %8s %10s\n", "test", "dir", "layout", "sockets", "slice", "GB/s");
  int failures = 0;
  if (only == "lat") {
    for (std::size_t bytes : {std::size_t{8}, std::size_t{65536}, std::size_t{1} << 20}) {
      Config cfg = base;
      cfg.latency = true;
      cfg.ranks = 2;
      cfg.bytes = bytes;
      cfg.sockets = static_cast<int>(sockets.front());
      cfg.separate = layouts.front();
      cfg.iters = bytes > 65536 ? 1000 : 10000;
      if (run(cfg) <= 0) ++failures;
    }
    return failures == 0 ? 0 : 1;
  }
  for (bool separate : layouts) {
    for (long k : sockets) {
      for (long slice : slices) {
        Config cfg = base;
        cfg.sockets = static_cast<int>(k);
        cfg.separate = separate;
        cfg.slice = static_cast<std::size_t>(slice);
        const char* layout = separate ? "separate" : "shared";
        auto report = [&](const char* test, const char* dir, double s, double factor) {
          if (s <= 0) {
            ++failures;
            std::printf("%-5s %-5s %-9s %7ld %8s %10s\n", test, dir, layout, k,
                        size_name(cfg.slice).c_str(), "FAILED");
          } else {
            std::printf("%-5s %-5s %-9s %7ld %8s %10.2f\n", test, dir, layout, k,
                        size_name(cfg.slice).c_str(), factor * cfg.bytes / s / 1e9);
          }
          std::fflush(stdout);
        };
        if (only.empty() || only == "pair") {
          cfg.ranks = 2;
          cfg.bidi = false;
          report("pair", "uni", run(cfg), 1.0);
          cfg.bidi = true;
          // Per direction; the sum of both directions is twice this.
          report("pair", "bidi", run(cfg), 1.0);
        }
        if (only.empty() || only == "ring") {
          cfg.ranks = 4;
          // Per rank (each sends and receives cfg.bytes).
          report("ring4", "rank", run(cfg), 1.0);
        }
      }
    }
  }
  return failures == 0 ? 0 : 1;
}
