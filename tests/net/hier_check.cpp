// SPDX-License-Identifier: Apache-2.0
// hier_check: a rank program that checks allreduce exactly for every DataType; links only ringlet.
//
// Usage (every rank runs the same command, under ringlet-run or with RINGLET_* set by hand):
//   hier_check [--max-count N] [--no-big]   check every DataType x {sum, max, avg on floats}
//                                            at counts {0, 1, 4097, 2^20 + 3} and one 16 MiB
//                                            float32 sum; print one "OK" line per rank
//   hier_check --loop SECONDS [--loop-mib M] loop in-place float32 sums of M MiB (default 64)
//                                            for SECONDS; after the first one print
//                                            "LOOPING rank=R pid=P" (for the kill test)
// Every rank's line: "hier_check rank R/N nodes M local l/L: OK". Exit status: 0 all exact,
// 1 a wrong element (the first few are printed), 2 bad usage, 3 a ringlet::Error, printed
// to stderr as "ERROR <code> ...". Values are small integers, so every partial sum in any
// reduction order is exact in the type, and the result is compared bit for bit.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringlet/ringlet.hpp"

namespace {

using ringlet::DataType;
using ringlet::ReduceOp;

constexpr DataType kTypes[] = {DataType::float32,  DataType::float64, DataType::float16,
                               DataType::bfloat16, DataType::int8,    DataType::uint8,
                               DataType::int32,    DataType::int64};
constexpr std::size_t kMaxPrinted = 5;

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

bool is_float(DataType t) {
  return t == DataType::float32 || t == DataType::float64 || t == DataType::float16 ||
         t == DataType::bfloat16;
}

bool is_signed(DataType t) { return t != DataType::uint8; }

// The largest integer up to which the type holds every integer exactly (and sums stay in range).
double exact_limit(DataType t) {
  switch (t) {
    case DataType::int8:
      return 127;
    case DataType::uint8:
      return 255;
    case DataType::bfloat16:
      return 256;
    case DataType::float16:
      return 2048;
    case DataType::float32:
      return 16777216.0;
    case DataType::int32:
      return 2147483647.0;
    default:
      return 9007199254740992.0;  // float64, int64: 2^53
  }
}

// IEEE binary16 bits of a value that binary16 holds exactly (all values here are integers of
// magnitude <= 2048, so they are normal numbers or zero).
std::uint16_t to_half(double v) {
  if (v == 0) return 0;
  const std::uint16_t sign = v < 0 ? 0x8000 : 0;
  int e = 0;
  const double m = std::frexp(std::fabs(v), &e);  // |v| = m * 2^e, m in [0.5, 1)
  const auto mantissa = static_cast<std::uint16_t>(std::lround((m * 2 - 1) * 1024));
  return static_cast<std::uint16_t>(sign | ((e - 1 + 15) << 10) | mantissa);
}

double from_half(std::uint16_t h) {
  const int e = (h >> 10) & 0x1f;
  const int m = h & 0x3ff;
  const double s = (h & 0x8000) != 0 ? -1 : 1;
  if (e == 0x1f) return std::nan("");
  if (e == 0) return s * std::ldexp(m, -24);
  return s * std::ldexp(1024 + m, e - 25);
}

std::uint16_t to_bf16(double v) {
  const float f = static_cast<float>(v);  // exact: at most 8 significant bits
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return static_cast<std::uint16_t>(u >> 16);
}

double from_bf16(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

void store(std::byte* p, DataType t, double v) {
  auto put = [p](auto x) { std::memcpy(p, &x, sizeof x); };
  switch (t) {
    case DataType::float32:
      put(static_cast<float>(v));
      break;
    case DataType::float64:
      put(v);
      break;
    case DataType::float16:
      put(to_half(v));
      break;
    case DataType::bfloat16:
      put(to_bf16(v));
      break;
    case DataType::int8:
      put(static_cast<std::int8_t>(v));
      break;
    case DataType::uint8:
      put(static_cast<std::uint8_t>(v));
      break;
    case DataType::int32:
      put(static_cast<std::int32_t>(v));
      break;
    case DataType::int64:
      put(static_cast<std::int64_t>(v));
      break;
  }
}

double load(const std::byte* p, DataType t) {
  auto get = [p](auto x) {
    std::memcpy(&x, p, sizeof x);
    return x;
  };
  switch (t) {
    case DataType::float32:
      return get(float{});
    case DataType::float64:
      return get(double{});
    case DataType::float16:
      return from_half(get(std::uint16_t{}));
    case DataType::bfloat16:
      return from_bf16(get(std::uint16_t{}));
    case DataType::int8:
      return get(std::int8_t{});
    case DataType::uint8:
      return get(std::uint8_t{});
    case DataType::int32:
      return get(std::int32_t{});
    case DataType::int64:
      return static_cast<double>(get(std::int64_t{}));
  }
  return std::nan("");
}

// The value rank r contributes at element i, and the exact result, for n ranks.
struct Pattern {
  DataType type;
  ReduceOp op;
  int n;
  long k;  // values are 1..k (shifted to -5..5 for max on signed types)

  Pattern(DataType t, ReduceOp o, int ranks) : type(t), op(o), n(ranks) {
    // Room for n values of up to k, plus the avg correction of up to n on the last rank.
    k = std::min(11L, static_cast<long>(exact_limit(t)) / (n + 1));
    if (k < 1) k = 1;
  }
  double base(std::size_t i, int r) const {
    return static_cast<double>((static_cast<long>(i) * 7 + r * 3) % k + 1);
  }
  // For avg: the last rank makes the sum a multiple of n, so that the average is an exact
  // integer (ringlet divides the exact sum by n).
  double avg_last(std::size_t i) const {
    long s = 0;
    for (int q = 0; q < n - 1; ++q) s += static_cast<long>(base(i, q));
    return static_cast<double>(s % n == 0 ? n : n - s % n);
  }
  double value(std::size_t i, int r) const {
    if (op == ReduceOp::max) {
      const double v = static_cast<double>((static_cast<long>(i) * 7 + r * 3) % 11 + 1);
      return is_signed(type) ? v - 6 : v;
    }
    if (op == ReduceOp::avg && r == n - 1) return avg_last(i);
    return base(i, r);
  }
  double expected(std::size_t i) const {
    double acc = op == ReduceOp::max ? -1e300 : 0;
    for (int r = 0; r < n; ++r) {
      const double v = op == ReduceOp::avg && r == n - 1 ? 0 : value(i, r);
      acc = op == ReduceOp::max ? std::max(acc, v) : acc + v;
    }
    if (op == ReduceOp::avg) return (acc + avg_last(i)) / n;
    return acc;
  }
};

struct Checker {
  ringlet::Communicator& comm;
  long wrong = 0;
  long cases = 0;

  void run(DataType t, ReduceOp op, std::size_t count, bool in_place) {
    const Pattern pat(t, op, comm.size());
    const std::size_t es = ringlet::size_of(t);
    // One spare element on each side, to catch writes outside the buffer.
    std::vector<std::byte> in((count + 2) * es);
    std::vector<std::byte> out((count + 2) * es);
    for (std::size_t i = 0; i < count; ++i) store(&in[(i + 1) * es], t, pat.value(i, comm.rank()));
    const double guard = 99;
    store(&in[0], t, guard);
    store(&in[(count + 1) * es], t, guard);
    store(&out[0], t, guard);
    store(&out[(count + 1) * es], t, guard);
    ringlet::Tensor tin{&in[es], count, t};
    ringlet::Tensor tout{&out[es], count, t};
    if (in_place) {
      comm.allreduce(tin, op);
    } else {
      comm.allreduce(tin, tout, op);
    }
    const std::vector<std::byte>& res = in_place ? in : out;
    ++cases;
    long bad = 0;
    auto report = [&](const char* what, double got, double want, std::size_t i) {
      if (++bad <= static_cast<long>(kMaxPrinted)) {
        std::fprintf(stderr,
                     "hier_check rank %d: WRONG %s %s count %zu %s: %s %zu is %.17g, want %.17g\n",
                     comm.rank(), std::string(ringlet::to_string(t)).c_str(),
                     std::string(ringlet::to_string(op)).c_str(), count,
                     in_place ? "in place" : "out of place", what, i, got, want);
      }
    };
    for (std::size_t i = 0; i < count; ++i) {
      const double got = load(&res[(i + 1) * es], t);
      const double want = pat.expected(i);
      if (!(got == want)) report("element", got, want, i);
    }
    if (!in_place) {  // the input must be untouched
      for (std::size_t i = 0; i < count; ++i) {
        const double got = load(&in[(i + 1) * es], t);
        if (!(got == pat.value(i, comm.rank()))) report("input", got, pat.value(i, comm.rank()), i);
      }
    }
    for (std::size_t g : {std::size_t{0}, count + 1}) {
      if (load(&res[g * es], t) != guard) report("guard", load(&res[g * es], t), guard, g);
    }
    wrong += bad;
  }
};

int check_all(ringlet::Communicator& comm, std::size_t max_count, bool big) {
  Checker c{comm};
  const std::size_t counts[] = {0, 1, 4097, (std::size_t{1} << 20) + 3};
  for (DataType t : kTypes) {
    std::vector<ReduceOp> ops = {ReduceOp::sum, ReduceOp::max};
    if (is_float(t)) ops.push_back(ReduceOp::avg);
    for (ReduceOp op : ops) {
      bool in_place = true;
      for (std::size_t count : counts) {
        if (count > max_count) continue;
        c.run(t, op, count, in_place);
        in_place = !in_place;  // alternate, so both forms see small and large counts
      }
    }
  }
  if (big) c.run(DataType::float32, ReduceOp::sum, (std::size_t{16} << 20) / 4, true);
  // Every rank learns whether any rank found a wrong element.
  std::int64_t wrong_all = c.wrong;
  comm.allreduce(std::span<std::int64_t>(&wrong_all, 1));
  std::printf(
      "hier_check rank %d/%d nodes %d local %d/%d: %ld cases, %ld wrong here, %lld in all: "
      "%s\n",
      comm.rank(), comm.size(), comm.node_count(), comm.local_rank(), comm.local_size(), c.cases,
      c.wrong, static_cast<long long>(wrong_all), wrong_all == 0 ? "OK" : "FAILED");
  std::fflush(stdout);
  return wrong_all == 0 ? 0 : 1;
}

int loop(ringlet::Communicator& comm, double seconds, std::size_t mib) {
  std::vector<float> buf((mib << 20) / sizeof(float), 0.0F);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  long iters = 0;
  while (std::chrono::steady_clock::now() < end) {
    comm.allreduce(std::span<float>(buf));
    if (++iters == 1) {
      std::printf("LOOPING rank=%d pid=%d\n", comm.rank(), static_cast<int>(getpid()));
      std::fflush(stdout);
    }
  }
  std::printf("hier_check rank %d: %ld loop iterations: OK\n", comm.rank(), iters);
  return 0;
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: hier_check [--max-count N] [--no-big] | --loop SECONDS [--loop-mib M]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t max_count = SIZE_MAX;
  bool big = true;
  double loop_seconds = -1;
  std::size_t loop_mib = 64;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--max-count" && has_value) {
      max_count = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--no-big") {
      big = false;
    } else if (a == "--loop" && has_value) {
      loop_seconds = std::strtod(argv[++i], nullptr);
    } else if (a == "--loop-mib" && has_value) {
      loop_mib = std::strtoull(argv[++i], nullptr, 10);
    } else {
      usage();
    }
  }
  const auto start = std::chrono::steady_clock::now();
  int rank = -1;
  try {
    ringlet::Options options;
    if (std::getenv("RINGLET_TIMEOUT") == nullptr) options.timeout = std::chrono::seconds(60);
    ringlet::Communicator comm = ringlet::Communicator::create(options);
    rank = comm.rank();
    return loop_seconds >= 0 ? loop(comm, loop_seconds, loop_mib) : check_all(comm, max_count, big);
  } catch (const ringlet::Error& e) {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "ERROR %s rank %d after %.1f s: %s\n",
                 std::string(code_name(e.error_code())).c_str(), rank, s, e.what());
    return 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ERROR other rank %d: %s\n", rank, e.what());
    return 3;
  }
}
