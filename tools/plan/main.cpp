// SPDX-License-Identifier: Apache-2.0
// ringlet-plan: the cost model's predictions (src/algo/cost_model.hpp) for a job that need
// not exist: each allreduce algorithm's time and bus bandwidth per message size, the one the
// model picks, and the bandwidth lower bound; up to 10,000 nodes. docs/perf/planner.md.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "src/algo/cost_model.hpp"

namespace {

using ringlet::algo::Algorithm;

constexpr const char* kUsage =
    "usage: ringlet-plan --nodes N [--ranks-per-node R] [--size BYTES | --sizes LO-HI]...\n"
    "                    (--alpha SECONDS (--beta SECONDS_PER_BYTE | --bandwidth RATE) |\n"
    "                     --model FILE) [options]\n"
    "  --nodes N              nodes (1 to 10,000 and beyond, at most 2^24 ranks in all)\n"
    "  --ranks-per-node R     ranks on each node (default 1)\n"
    "  --size BYTES           a message size: 8, 64K, 1M, 1G (binary K, M, G); repeatable\n"
    "  --sizes LO-HI          LO, 4 LO, 16 LO, ... up to HI (default 4-1G)\n"
    "  --alpha SECONDS        per-message latency of the network links (2e-6, 50us, 1ms)\n"
    "  --beta SECONDS_PER_BYTE  per-byte time of the network links (8e-9 for 1 Gbit/s)\n"
    "  --bandwidth RATE       instead of --beta: 1Gbit, 100Gbit/s, 12.5GB/s (decimal units)\n"
    "  --local-alpha SECONDS  shared-memory latency (default 1us, a guess: measure yours)\n"
    "  --local-beta SECONDS_PER_BYTE  shared-memory per-byte time (default 1e-10, a guess)\n"
    "  --gamma SECONDS_PER_BYTE  reduction cost per byte of input (default 0)\n"
    "  --slice BYTES          the ring's pipeline slice (default 1M, tcp's)\n"
    "  --no-local-group       no shared-memory group (RINGLET_SHM=0): no local, no hierarchical\n"
    "  --model FILE           key=value file (docs/perf/planner.md); options given win over it\n"
    "  --brief                one line per size: the choice and the bound\n"
    "exit status: 0 ok, 1 error, 2 bad input\n";

struct BadInput {
  std::string message;
};

[[noreturn]] void bad(const std::string& message) { throw BadInput{message}; }

bool parse_double(std::string_view text, double* out) {
  const std::string s(text);
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno != 0 || !std::isfinite(v) || v < 0) return false;
  *out = v;
  return true;
}

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// Seconds, with an optional unit s, ms, us or ns.
double parse_seconds(std::string_view opt, std::string_view text) {
  double scale = 1;
  std::string_view num = text;
  for (auto [unit, f] :
       {std::pair<std::string_view, double>{"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {"s", 1.0}}) {
    if (ends_with(text, unit)) {
      num = text.substr(0, text.size() - unit.size());
      scale = f;
      break;
    }
  }
  double v = 0;
  if (!parse_double(num, &v)) {
    bad(std::string(opt) + " " + std::string(text) + ": not a time >= 0 (e.g. 2e-6, 50us)");
  }
  return v * scale;
}

double parse_plain(std::string_view opt, std::string_view text) {
  double v = 0;
  if (!parse_double(text, &v)) {
    bad(std::string(opt) + " " + std::string(text) + ": not a number >= 0");
  }
  return v;
}

// A rate: <number><K|M|G|T>bit[/s] (bits) or <number><K|M|G|T>B/s (bytes), decimal prefixes.
// Returns seconds per byte.
double parse_bandwidth(std::string_view text) {
  std::string_view s = text;
  if (ends_with(s, "/s")) s.remove_suffix(2);
  double bits_per_unit = 0;
  if (ends_with(s, "bit")) {
    s.remove_suffix(3);
    bits_per_unit = 1;
  } else if (ends_with(s, "B")) {
    s.remove_suffix(1);
    bits_per_unit = 8;
  }
  double prefix = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'k':
      case 'K':
        prefix = 1e3;
        break;
      case 'm':
      case 'M':
        prefix = 1e6;
        break;
      case 'g':
      case 'G':
        prefix = 1e9;
        break;
      case 't':
      case 'T':
        prefix = 1e12;
        break;
      default:
        break;
    }
    if (prefix != 1) s.remove_suffix(1);
  }
  double v = 0;
  if (bits_per_unit == 0 || !parse_double(s, &v) || v <= 0) {
    bad("--bandwidth " + std::string(text) +
        ": expected a rate such as 1Gbit, 100Gbit/s or 12.5GB/s");
  }
  const double bytes_per_s = v * prefix * bits_per_unit / 8;
  return 1 / bytes_per_s;
}

// Bytes with an optional binary K, M or G; at most 2^50.
std::size_t parse_bytes(std::string_view opt, std::string_view text) {
  std::string_view s = text;
  int shift = 0;
  if (!s.empty()) {
    switch (s.back()) {
      case 'k':
      case 'K':
        shift = 10;
        break;
      case 'm':
      case 'M':
        shift = 20;
        break;
      case 'g':
      case 'G':
        shift = 30;
        break;
      default:
        break;
    }
    if (shift != 0) s.remove_suffix(1);
  }
  const std::string num(s);
  char* end = nullptr;
  errno = 0;
  const unsigned long long v =
      num.empty() || num[0] == '-' ? 0 : std::strtoull(num.c_str(), &end, 10);
  if (num.empty() || end != num.c_str() + num.size() || errno != 0 || v > (1ull << (50 - shift))) {
    bad(std::string(opt) + " " + std::string(text) +
        ": not a size in bytes (e.g. 8, 64K, 1M, 1G; at most 1024T)");
  }
  return static_cast<std::size_t>(v) << shift;
}

std::int64_t parse_count(std::string_view opt, std::string_view text) {
  const std::string s(text);
  char* end = nullptr;
  errno = 0;
  const long long v = s.empty() || s[0] == '-' ? 0 : std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || end != s.c_str() + s.size() || errno != 0 || v < 1) {
    bad(std::string(opt) + " " + s + ": not a count >= 1");
  }
  return v;
}

void add_size_range(std::string_view text, std::vector<std::size_t>* sizes) {
  const std::size_t dash = text.find('-');
  if (dash == std::string_view::npos) bad("--sizes " + std::string(text) + ": expected LO-HI");
  const std::size_t lo = parse_bytes("--sizes", text.substr(0, dash));
  const std::size_t hi = parse_bytes("--sizes", text.substr(dash + 1));
  if (lo == 0 || lo > hi) bad("--sizes " + std::string(text) + ": needs 1 <= LO <= HI");
  for (std::size_t s = lo; s <= hi; s *= 4) sizes->push_back(s);
}

std::string format_size(std::size_t b) {
  for (auto [shift, suffix] : {std::pair{30, "G"}, std::pair{20, "M"}, std::pair{10, "K"}}) {
    const std::size_t unit = std::size_t{1} << shift;
    if (b >= unit && b % unit == 0) return std::to_string(b / unit) + suffix;
  }
  return std::to_string(b);
}

std::string format_range_bound(std::size_t b) {
  return b == ringlet::algo::kMaxBytes ? "max" : format_size(b);
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

const char* unavailable_reason(Algorithm a) {
  return a == Algorithm::local ? "needs one node of several ranks with a local group"
                               : "needs several nodes of several ranks with a local group";
}

struct Options {
  ringlet::algo::ModelFile file;
  std::vector<std::size_t> sizes;
  bool brief = false;
  bool alpha = false, beta = false;
};

Options parse(int argc, char** argv) {
  Options o;
  o.file.model.local = {1e-6, 1e-10};
  o.file.shape.nodes = 0;  // required
  // The model file first, so that options override it wherever they stand.
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string_view(argv[i]) != "--model") continue;
    std::ifstream in(argv[i + 1]);
    if (!in) bad(std::string("--model ") + argv[i + 1] + ": cannot read the file");
    std::stringstream text;
    text << in.rdbuf();
    try {
      ringlet::algo::parse_model_text(text.str(), argv[i + 1], o.file);
    } catch (const ringlet::Error& e) {
      bad(e.what());
    }
    o.alpha = o.file.has_alpha;
    o.beta = o.file.has_beta;
  }
  bool sizes_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) bad(std::string(a) + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (a == "--nodes") {
      o.file.shape.nodes = parse_count(a, value());
    } else if (a == "--ranks-per-node") {
      o.file.shape.ranks_per_node = parse_count(a, value());
    } else if (a == "--size") {
      const std::size_t s = parse_bytes(a, value());
      if (!sizes_given) o.sizes.clear();
      sizes_given = true;
      o.sizes.push_back(s);
    } else if (a == "--sizes") {
      if (!sizes_given) o.sizes.clear();
      sizes_given = true;
      add_size_range(value(), &o.sizes);
    } else if (a == "--alpha") {
      o.file.model.net.alpha_s = parse_seconds(a, value());
      o.alpha = true;
    } else if (a == "--beta") {
      o.file.model.net.beta_s_per_byte = parse_plain(a, value());
      o.beta = true;
    } else if (a == "--bandwidth") {
      o.file.model.net.beta_s_per_byte = parse_bandwidth(value());
      o.beta = true;
    } else if (a == "--local-alpha") {
      o.file.model.local.alpha_s = parse_seconds(a, value());
    } else if (a == "--local-beta") {
      o.file.model.local.beta_s_per_byte = parse_plain(a, value());
    } else if (a == "--gamma") {
      o.file.model.gamma_s_per_byte = parse_plain(a, value());
    } else if (a == "--slice") {
      o.file.model.slice_bytes = parse_bytes(a, value());
    } else if (a == "--no-local-group") {
      o.file.shape.local_group = false;
    } else if (a == "--model") {
      value();  // read above
    } else if (a == "--brief") {
      o.brief = true;
    } else {
      bad("unknown argument " + std::string(a));
    }
  }
  if (o.file.shape.nodes < 1) bad("--nodes is required (or nodes= in the --model file)");
  if (!o.alpha) bad("--alpha is required (or alpha= in the --model file)");
  if (!o.beta) bad("--beta or --bandwidth is required (or beta= in the --model file)");
  if (!sizes_given) add_size_range("4-1G", &o.sizes);
  try {
    ringlet::algo::validate(o.file.model, o.file.shape);
  } catch (const ringlet::Error& e) {
    bad(e.what());
  }
  return o;
}

void print(const Options& o) {
  namespace algo = ringlet::algo;
  const algo::CostModel& m = o.file.model;
  const algo::ModelShape& s = o.file.shape;
  std::printf("ringlet-plan: %lld nodes x %lld ranks per node = %lld ranks, local group: %s\n",
              static_cast<long long>(s.nodes), static_cast<long long>(s.ranks_per_node),
              static_cast<long long>(s.ranks()), s.local_group ? "yes" : "no");
  std::printf(
      "model: alpha %s us, beta %s ns/B (%s Gbit/s); local alpha %s us, beta %s ns/B; "
      "gamma %s ns/B; ring slice %s\n",
      fmt("%.4g", m.net.alpha_s * 1e6).c_str(), fmt("%.4g", m.net.beta_s_per_byte * 1e9).c_str(),
      m.net.beta_s_per_byte > 0 ? fmt("%.4g", 8e-9 / m.net.beta_s_per_byte).c_str() : "inf",
      fmt("%.4g", m.local.alpha_s * 1e6).c_str(),
      fmt("%.4g", m.local.beta_s_per_byte * 1e9).c_str(),
      fmt("%.4g", m.gamma_s_per_byte * 1e9).c_str(), format_size(m.slice_bytes).c_str());
  std::string ranges;
  for (const algo::Range& r : algo::predicted_ranges(m, s)) {
    ranges += (ranges.empty() ? "" : ", ") + std::string(algo::to_string(r.algorithm)) + " " +
              format_range_bound(r.lo) + "-" + format_range_bound(r.hi);
  }
  std::printf("ranges: %s\n", ranges.c_str());
  for (Algorithm a : algo::kModelAlgorithms) {
    if (!algo::available(a, s)) {
      std::printf("not available: %s (%s)\n", std::string(algo::to_string(a)).c_str(),
                  unavailable_reason(a));
    }
  }
  if (o.brief) {
    std::printf("%10s  %-20s %14s %11s %14s %11s\n", "size", "choice", "time_us", "busbw_GB/s",
                "bound_us", "bound_GB/s");
  } else {
    std::printf("%10s  %-20s %14s %11s\n", "size", "algorithm", "time_us", "busbw_GB/s");
  }
  for (std::size_t bytes : o.sizes) {
    const Algorithm choice = algo::fastest(m, s, bytes);
    const double bound = algo::bandwidth_lower_bound(m, s, bytes);
    const std::string size = format_size(bytes);
    auto busbw = [&](double t) { return fmt("%11.3f", algo::bus_bandwidth(s, bytes, t) / 1e9); };
    if (o.brief) {
      const double t = algo::predicted_time(choice, m, s, bytes);
      std::printf("%10s  %-20s %14.2f %s %14.2f %s\n", size.c_str(),
                  std::string(algo::to_string(choice)).c_str(), t * 1e6, busbw(t).c_str(),
                  bound * 1e6, bound > 0 ? busbw(bound).c_str() : "          -");
      continue;
    }
    for (Algorithm a : algo::kModelAlgorithms) {
      if (!algo::available(a, s)) continue;
      const double t = algo::predicted_time(a, m, s, bytes);
      std::printf("%10s  %-20s %14.2f %s%s\n", size.c_str(),
                  std::string(algo::to_string(a)).c_str(), t * 1e6, busbw(t).c_str(),
                  a == choice ? "  <- choice" : "");
    }
    std::printf("%10s  %-20s %14.2f %s\n", size.c_str(), "lower_bound", bound * 1e6,
                bound > 0 ? busbw(bound).c_str() : "          -");
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    print(parse(argc, argv));
    return std::fflush(stdout) == 0 ? 0 : 1;
  } catch (const BadInput& e) {
    std::fprintf(stderr, "ringlet-plan: %s\n(ringlet-plan --help for the options)\n",
                 e.message.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ringlet-plan: error: %s\n", e.what());
    return 1;
  }
}
