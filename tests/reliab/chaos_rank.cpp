// SPDX-License-Identifier: Apache-2.0
// chaos_rank: the rank program of the fault-injection and soak suites; links only ringlet.
//
// Every rank runs the same command (under ringlet-run, or with RINGLET_* set by hand):
//   chaos_rank --seed S --seconds T [--max-bytes B] [--exit-at N]
//       fault mode: random collectives (blocking, async and fused; every kind; int32, int64,
//       float32) of 4 KiB..B bytes, each result checked, until T seconds pass. After the
//       first collective it prints "READY rank=R pid=P". With --exit-at N this rank returns
//       from main (exit status 0) before collective N, without calling it.
//   chaos_rank --soak --seed S --seconds T [--warmup W] [--max-bytes B]
//       soak mode: random collectives of random kinds, types and log-uniform sizes (0 B to B,
//       default 4 MiB); after W (default 1000) warm-up collectives and then every 2 s it prints
//       "SAMPLE n=<collectives> rss_kib=<resident KiB> fds=<open descriptors>"; at the end
//       "SOAK done n=... wrong=0".
// Output: "WRONG ..." (exit 1) for a result that differs from the exact reference;
// "ERROR code=<code> ranks=<r,r> wall_ms=<CLOCK_REALTIME ms> what=<message>" (exit 3) for a
// ringlet::Error; "OTHER ..." (exit 4) for any other exception. Values are small integers, so
// every sum in any order is exact in every type used, and results are compared exactly.
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "ringlet/ringlet.hpp"

namespace {

using ringlet::DataType;
using ringlet::ReduceOp;
using ringlet::Tensor;

std::string_view code_name(ringlet::ErrorCode code) {
  switch (code) {
    case ringlet::ErrorCode::invalid_argument:
      return "invalid_argument";
    case ringlet::ErrorCode::mismatch:
      return "mismatch";
    case ringlet::ErrorCode::timeout:
      return "timeout";
    case ringlet::ErrorCode::peer_lost:
      return "peer_lost";
    case ringlet::ErrorCode::transport:
      return "transport";
    case ringlet::ErrorCode::aborted:
      return "aborted";
  }
  return "unknown";
}

long long wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

long rss_kib() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long size = 0, resident = 0;
  if (std::fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
  std::fclose(f);
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

int open_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the directory's own descriptor
}

enum class Kind {
  allreduce,
  allreduce_async,
  fused,
  broadcast,
  allgather,
  reduce_scatter,
  barrier
};
constexpr Kind kKinds[] = {Kind::allreduce, Kind::allreduce_async, Kind::fused,  Kind::broadcast,
                           Kind::allgather, Kind::reduce_scatter,  Kind::barrier};
constexpr DataType kTypes[] = {DataType::int32, DataType::int64, DataType::float32};

std::size_t elem_size(DataType t) { return t == DataType::int64 ? 8 : 4; }

// The value rank r contributes at element i of collective n: 1..13, so that a sum over up to
// 64 ranks is exact in float32.
long value(std::uint64_t n, std::size_t i, int r) {
  return static_cast<long>((i * 7 + static_cast<std::size_t>(r) * 3 + n * 5) % 13) + 1;
}

void put(std::byte* p, DataType t, long v) {
  if (t == DataType::int32) {
    auto x = static_cast<std::int32_t>(v);
    std::memcpy(p, &x, 4);
  } else if (t == DataType::int64) {
    auto x = static_cast<std::int64_t>(v);
    std::memcpy(p, &x, 8);
  } else {
    auto x = static_cast<float>(v);
    std::memcpy(p, &x, 4);
  }
}

long get(const std::byte* p, DataType t) {
  if (t == DataType::int32) {
    std::int32_t x;
    std::memcpy(&x, p, 4);
    return x;
  }
  if (t == DataType::int64) {
    std::int64_t x;
    std::memcpy(&x, p, 8);
    return static_cast<long>(x);
  }
  float x;
  std::memcpy(&x, p, 4);
  // Every exact result is an integer below 2^24; anything else is reported as wrong.
  return std::floor(x) == x && std::fabs(x) < 16777216.0f ? static_cast<long>(x) : -999999;
}

struct Args {
  std::uint64_t seed = 1;
  double seconds = 10;
  std::size_t max_bytes = 0;
  long exit_at = -1;
  bool soak = false;
  long warmup = 1000;
};

// One collective's choice; every rank draws the same sequence from the seed.
struct Choice {
  Kind kind;
  DataType type;
  ReduceOp op;
  std::size_t count;  // elements per rank's contribution (allgather: in; reduce_scatter: out)
  int root;
};

Choice draw(std::mt19937_64& rng, const Args& a, int size) {
  Choice c{};
  c.kind = kKinds[rng() % std::size(kKinds)];
  c.type = kTypes[rng() % std::size(kTypes)];
  c.op = rng() % 2 == 0 ? ReduceOp::sum : ReduceOp::max;
  c.root = static_cast<int>(rng() % static_cast<std::uint64_t>(size));
  const double lo = a.soak ? 0.0 : std::log(4096.0);
  const double hi = std::log(static_cast<double>(a.max_bytes) + 1);
  const double u = std::uniform_real_distribution<double>(lo, hi)(rng);
  std::size_t bytes = static_cast<std::size_t>(std::exp(u)) - (a.soak ? 1 : 0);
  if (a.soak && rng() % 16 == 0) bytes = 0;
  std::size_t per = bytes / elem_size(c.type);
  if (c.kind == Kind::allgather || c.kind == Kind::reduce_scatter) {
    per /= static_cast<std::size_t>(size);
  }
  c.count = per;
  return c;
}

struct Checker {
  int rank, size;
  std::uint64_t n;
  const char* what;
  long wrong = 0;
  void check(const std::vector<std::byte>& buf, DataType t, std::size_t count, auto&& expect) {
    const std::size_t es = elem_size(t);
    for (std::size_t i = 0; i < count; ++i) {
      const long got = get(buf.data() + i * es, t);
      const long want = expect(i);
      if (got != want) {
        if (wrong < 3) {
          std::printf("WRONG rank=%d collective=%llu kind=%s element=%zu got=%ld want=%ld\n", rank,
                      static_cast<unsigned long long>(n), what, i, got, want);
        }
        ++wrong;
      }
    }
  }
};

long reduce_ref(std::uint64_t n, std::size_t i, int size, ReduceOp op) {
  long acc = op == ReduceOp::sum ? 0 : -1;
  for (int r = 0; r < size; ++r) {
    const long v = value(n, i, r);
    acc = op == ReduceOp::sum ? acc + v : std::max(acc, v);
  }
  return acc;
}

// Runs collective n as chosen; returns the number of wrong elements.
long run_one(ringlet::Communicator& comm, std::uint64_t n, const Choice& c) {
  const int rank = comm.rank(), size = comm.size();
  const std::size_t es = elem_size(c.type);
  auto fill = [&](std::vector<std::byte>& b, std::size_t count, std::size_t offset) {
    b.resize(std::max<std::size_t>(count * es, 1));
    for (std::size_t i = 0; i < count; ++i)
      put(b.data() + i * es, c.type, value(n, offset + i, rank));
  };
  auto tensor = [&](std::vector<std::byte>& b, std::size_t count) {
    return Tensor{b.data(), count, c.type};
  };
  std::vector<std::byte> a, b;
  switch (c.kind) {
    case Kind::allreduce:
    case Kind::allreduce_async: {
      Checker k{rank, size, n, c.kind == Kind::allreduce ? "allreduce" : "allreduce_async"};
      fill(a, c.count, 0);
      if (c.kind == Kind::allreduce) {
        comm.allreduce(tensor(a, c.count), c.op);
      } else {
        ringlet::Work w = comm.allreduce_async(tensor(a, c.count), c.op);
        w.wait();
      }
      k.check(a, c.type, c.count, [&](std::size_t i) { return reduce_ref(n, i, size, c.op); });
      return k.wrong;
    }
    case Kind::fused: {
      // Three tensors in one fused list: the first third, a small one, the rest.
      Checker k{rank, size, n, "fused"};
      const std::size_t c1 = c.count / 3, c2 = std::min<std::size_t>(c.count, 17),
                        c3 = c.count - c1;
      std::vector<std::byte> t1, t2, t3;
      fill(t1, c1, 0);
      fill(t2, c2, 1000);
      fill(t3, c3, 2000);
      const Tensor list[] = {tensor(t1, c1), tensor(t2, c2), tensor(t3, c3)};
      if (n % 2 == 0) {
        comm.allreduce(std::span<const Tensor>(list), c.op);
      } else {
        comm.allreduce_async(std::span<const Tensor>(list), c.op).wait();
      }
      k.check(t1, c.type, c1, [&](std::size_t i) { return reduce_ref(n, i, size, c.op); });
      k.check(t2, c.type, c2, [&](std::size_t i) { return reduce_ref(n, 1000 + i, size, c.op); });
      k.check(t3, c.type, c3, [&](std::size_t i) { return reduce_ref(n, 2000 + i, size, c.op); });
      return k.wrong;
    }
    case Kind::broadcast: {
      Checker k{rank, size, n, "broadcast"};
      a.assign(std::max<std::size_t>(c.count * es, 1), std::byte{0x5a});
      if (rank == c.root) fill(a, c.count, 0);
      if (n % 2 == 0) {
        comm.broadcast(tensor(a, c.count), c.root);
      } else {
        comm.broadcast_async(tensor(a, c.count), c.root).wait();
      }
      k.check(a, c.type, c.count, [&](std::size_t i) { return value(n, i, c.root); });
      return k.wrong;
    }
    case Kind::allgather: {
      Checker k{rank, size, n, "allgather"};
      fill(a, c.count, 0);
      b.assign(std::max<std::size_t>(c.count * es * static_cast<std::size_t>(size), 1),
               std::byte{0x5a});
      comm.allgather(tensor(a, c.count), tensor(b, c.count * static_cast<std::size_t>(size)));
      k.check(b, c.type, c.count * static_cast<std::size_t>(size),
              [&](std::size_t i) { return value(n, i % c.count, static_cast<int>(i / c.count)); });
      return k.wrong;
    }
    case Kind::reduce_scatter: {
      Checker k{rank, size, n, "reduce_scatter"};
      const std::size_t total = c.count * static_cast<std::size_t>(size);
      fill(a, total, 0);
      b.assign(std::max<std::size_t>(c.count * es, 1), std::byte{0x5a});
      comm.reduce_scatter(tensor(a, total), tensor(b, c.count), c.op);
      const std::size_t base = c.count * static_cast<std::size_t>(rank);
      k.check(b, c.type, c.count,
              [&](std::size_t i) { return reduce_ref(n, base + i, size, c.op); });
      return k.wrong;
    }
    case Kind::barrier:
      if (n % 2 == 0) {
        comm.barrier();
      } else {
        comm.barrier_async().wait();
      }
      return 0;
  }
  return 0;
}

bool parse(int argc, char** argv, Args& a) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view s = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (s == "--soak") {
      a.soak = true;
    } else if (s == "--seed" && (v = next())) {
      a.seed = std::strtoull(v, nullptr, 10);
    } else if (s == "--seconds" && (v = next())) {
      a.seconds = std::strtod(v, nullptr);
    } else if (s == "--max-bytes" && (v = next())) {
      a.max_bytes = std::strtoull(v, nullptr, 10);
    } else if (s == "--exit-at" && (v = next())) {
      a.exit_at = std::strtol(v, nullptr, 10);
    } else if (s == "--warmup" && (v = next())) {
      a.warmup = std::strtol(v, nullptr, 10);
    } else {
      return false;
    }
  }
  if (a.max_bytes == 0) a.max_bytes = a.soak ? (4u << 20) : (1u << 20);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!parse(argc, argv, a)) {
    std::fprintf(stderr,
                 "usage: chaos_rank [--soak] --seed S --seconds T [--max-bytes B] "
                 "[--exit-at N] [--warmup W]\n");
    return 2;
  }
  if (a.soak) {
    // A fixed mmap threshold: glibc otherwise raises it each time a large block is freed, and
    // from then on keeps blocks of that size (this program's own buffers of up to 4 MiB) in
    // the heap, a one-time plateau of a few MiB whose timing depends on the sizes drawn
    // (CI saw +11% after the warm-up, then flat for 38,000 collectives). Resident memory then
    // follows what is live, so a leak still shows and glibc's policy does not.
    ::mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  int rank = -1;
  try {
    ringlet::Communicator comm = ringlet::Communicator::create();
    rank = comm.rank();
    std::mt19937_64 rng(a.seed);
    const auto start = std::chrono::steady_clock::now();
    const auto end = start + std::chrono::duration<double>(a.seconds);
    const auto hard_end = start + std::chrono::duration<double>(2 * a.seconds);
    auto last_sample = start;
    long wrong = 0;
    std::uint64_t n = 0;
    for (;; ++n) {
      const auto now = std::chrono::steady_clock::now();
      // Every rank must make the same decision to stop: agree on it every 64 collectives
      // by the clock of rank 0 (broadcast), so that no rank stops while others go on.
      if (n % 64 == 0 && n > 0) {
        // The soak samples from the end of its warm-up on: it goes on past T until a few
        // samples exist, but never past 2T.
        const bool enough = !a.soak || static_cast<long>(n) >= a.warmup + 256;
        std::int32_t stop = (now >= end && enough) || now >= hard_end ? 1 : 0;
        comm.broadcast(std::span<std::int32_t, 1>(&stop, 1), 0);
        if (stop != 0) break;
      }
      if (a.exit_at >= 0 && static_cast<long>(n) == a.exit_at) {
        std::printf("EXITING rank=%d before collective %llu wall_ms=%lld\n", rank,
                    static_cast<unsigned long long>(n), wall_ms());
        return 0;
      }
      const Choice c = draw(rng, a, comm.size());
      wrong += run_one(comm, n, c);
      if (n == 0 && !a.soak) {
        std::printf("READY rank=%d pid=%d\n", rank, static_cast<int>(::getpid()));
      }
      if (a.soak && static_cast<long>(n + 1) >= a.warmup &&
          (static_cast<long>(n + 1) == a.warmup || now - last_sample >= std::chrono::seconds(2))) {
        last_sample = now;
        std::printf("SAMPLE n=%llu rss_kib=%ld fds=%d\n", static_cast<unsigned long long>(n + 1),
                    rss_kib(), open_fds());
      }
      if (wrong > 0) return 1;
    }
    if (a.soak) {
      std::printf("SAMPLE n=%llu rss_kib=%ld fds=%d\n", static_cast<unsigned long long>(n),
                  rss_kib(), open_fds());
    }
    std::printf("%s done rank=%d n=%llu wrong=%ld\n", a.soak ? "SOAK" : "CHAOS", rank,
                static_cast<unsigned long long>(n), wrong);
    return wrong == 0 ? 0 : 1;
  } catch (const ringlet::Error& e) {
    std::string ranks;
    for (int r : e.ranks()) ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
    std::printf("ERROR code=%s ranks=%s wall_ms=%lld rank=%d what=%s\n",
                std::string(code_name(e.error_code())).c_str(), ranks.empty() ? "-" : ranks.c_str(),
                wall_ms(), rank, e.what());
    return 3;
  } catch (const std::exception& e) {
    std::printf("OTHER rank=%d wall_ms=%lld what=%s\n", rank, wall_ms(), e.what());
    return 4;
  }
}
