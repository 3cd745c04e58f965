// SPDX-License-Identifier: Apache-2.0
// Flag parsing, data patterns and the result table shared by the allreduce_perf programs.
#include "bench/perf_common.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

namespace ringlet::perf {
namespace {

constexpr std::size_t kPageBytes = 4096;

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

template <class Int>
std::optional<Int> parse_int(std::string_view text) {
  Int value{};
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

// One flag of the command line.
struct Flag {
  char short_name;  // '\0': long only
  std::string_view long_name;
  bool takes_value;
};

constexpr Flag kFlags[] = {
    {'b', "minbytes", true},  {'e', "maxbytes", true},     {'f', "stepfactor", true},
    {'n', "iters", true},     {'w', "warmup_iters", true}, {'c', "check", true},
    {'d', "datatype", true},  {'o', "op", true},           {'\0', "algo", true},
    {'m', "agg_iters", true}, {'z', "blocking", true},     {'h', "help", false},
    {'\0', "memory", true},
};

// Applies one flag's value to `args`; returns an error message or "".
std::string apply(const Flag& flag, std::string_view value, PerfArgs& args) {
  const std::string name = flag.short_name != '\0' ? std::string("-") + flag.short_name
                                                   : "--" + std::string(flag.long_name);
  auto bad = [&](std::string_view why) {
    return std::string(name) + " " + std::string(value) + ": " + std::string(why);
  };
  switch (flag.short_name) {
    case 'b':
    case 'e': {
      auto bytes = parse_size(value);
      if (!bytes) return bad("expected a size such as 8, 64K, 256M or 1G");
      (flag.short_name == 'b' ? args.min_bytes : args.max_bytes) = *bytes;
      return "";
    }
    case 'f': {
      auto factor = parse_int<std::size_t>(value);
      if (!factor || *factor < 2) return bad("expected an integer of at least 2");
      args.step_factor = *factor;
      return "";
    }
    case 'n': {
      auto iters = parse_int<int>(value);
      if (!iters || *iters < 1) return bad("expected an integer of at least 1");
      args.iters = *iters;
      return "";
    }
    case 'w': {
      auto iters = parse_int<int>(value);
      if (!iters || *iters < 0) return bad("expected an integer of at least 0");
      args.warmup_iters = *iters;
      return "";
    }
    case 'c': {
      if (value != "0" && value != "1") return bad("expected 0 or 1");
      args.check = value == "1";
      return "";
    }
    case 'm': {
      auto agg = parse_int<int>(value);
      if (!agg || *agg < 1) return bad("expected an integer of at least 1");
      args.agg_iters = *agg;
      return "";
    }
    case 'z': {
      if (value != "0" && value != "1") return bad("expected 0 or 1");
      args.blocking = value == "1";
      return "";
    }
    case 'd': {
      auto type = parse_type(value);
      if (!type) {
        return bad("expected int8, uint8, int32, int64, half, bfloat16, float or double");
      }
      args.type = *type;
      return "";
    }
    case 'o': {
      auto op = parse_op(value);
      if (!op) return bad("expected sum, prod, min, max or avg");
      args.op = *op;
      return "";
    }
    default:
      break;
  }
  if (flag.long_name == "memory") {
    const std::string kind = lower(value);
    if (kind != "host" && kind != "cuda") return bad("expected host or cuda");
    args.memory = kind;
    return "";
  }
  // --algo: a name here; size ranges ("rd:0-64K;ring:64K-max") are checked by the library.
  const std::string algo = lower(value);
  if (algo.find(':') == std::string::npos && algo != "auto" && algo != "ring" &&
      algo != "rabenseifner" && algo != "recursive_doubling" && algo != "rd" && algo != "hier" &&
      algo != "local") {
    return bad("expected auto, ring, rabenseifner, recursive_doubling, hier, local or size ranges");
  }
  args.algo = algo;
  return "";
}

bool is_float_type(DataType type) {
  return type == DataType::float32 || type == DataType::float64 || type == DataType::float16 ||
         type == DataType::bfloat16;
}

// Calls f(T{}) with the C++ storage type of `type`.
template <class F>
decltype(auto) dispatch(DataType type, F&& f) {
  switch (type) {
    case DataType::float32:
      return f(float{});
    case DataType::float64:
      return f(double{});
    case DataType::float16:
      return f(Half{});
    case DataType::bfloat16:
      return f(BFloat16{});
    case DataType::int8:
      return f(std::int8_t{});
    case DataType::uint8:
      return f(std::uint8_t{});
    case DataType::int32:
      return f(std::int32_t{});
    case DataType::int64:
      break;
  }
  return f(std::int64_t{});
}

template <class T>
T from_double(double value) {
  if constexpr (std::is_same_v<T, Half>) {
    return Half{float_to_half(static_cast<float>(value))};
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    return BFloat16{float_to_bfloat16(static_cast<float>(value))};
  } else {
    return static_cast<T>(value);
  }
}

template <class T>
double to_double(T value) {
  if constexpr (std::is_same_v<T, Half>) {
    return half_to_float(value.bits);
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    return bfloat16_to_float(value.bits);
  } else {
    return static_cast<double>(value);
  }
}

// The largest integer the type holds exactly, and for which every smaller integer is exact too:
// sums of the check data stay at or below it.
double exact_integer_limit(DataType type) {
  switch (type) {
    case DataType::int8:
      return 127;
    case DataType::uint8:
      return 255;
    case DataType::bfloat16:
      return 256;  // 8 significant bits
    case DataType::float16:
      return 2048;  // 11 significant bits
    case DataType::float32:
      return 16777216;  // 24 significant bits
    case DataType::int32:
      return 2147483647;
    case DataType::float64:
    case DataType::int64:
      break;
  }
  return 9007199254740992.0;  // 2^53: the expected values are computed in double
}

// How many factors of 2 a product may hold and stay exact and in range.
int max_twos(DataType type) {
  switch (type) {
    case DataType::int8:
      return 6;
    case DataType::uint8:
      return 7;
    case DataType::float16:
      return 15;  // 2^15 < 65504
    default:
      break;
  }
  return 30;
}

// Significand bits after the point: one unit in the last place of 1.0 is 2^-bits.
int fraction_bits(DataType type) {
  switch (type) {
    case DataType::float16:
      return 10;
    case DataType::bfloat16:
      return 7;
    case DataType::float64:
      return 52;
    default:
      break;
  }
  return 23;
}

// Launchers' rank variables, in the order ringlet reads them.
constexpr const char* kRankVariables[] = {"RINGLET_RANK", "RANK", "OMPI_COMM_WORLD_RANK",
                                          "PMI_RANK", "SLURM_PROCID"};

}  // namespace

std::optional<std::size_t> parse_size(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::size_t multiplier = 1;
  switch (text.back()) {
    case 'K':
    case 'k':
      multiplier = std::size_t{1} << 10;
      break;
    case 'M':
    case 'm':
      multiplier = std::size_t{1} << 20;
      break;
    case 'G':
    case 'g':
      multiplier = std::size_t{1} << 30;
      break;
    default:
      break;
  }
  if (multiplier != 1) text.remove_suffix(1);
  auto number = parse_int<std::size_t>(text);  // rejects '-', '+', spaces and fractions
  if (!number) return std::nullopt;
  if (*number > std::numeric_limits<std::size_t>::max() / multiplier) return std::nullopt;
  return *number * multiplier;
}

std::optional<DataType> parse_type(std::string_view text) {
  const std::string name = lower(text);
  if (name == "int8" || name == "char") return DataType::int8;
  if (name == "uint8") return DataType::uint8;
  if (name == "int32" || name == "int") return DataType::int32;
  if (name == "int64") return DataType::int64;
  if (name == "half" || name == "float16" || name == "fp16") return DataType::float16;
  if (name == "bfloat16" || name == "bf16") return DataType::bfloat16;
  if (name == "float" || name == "float32" || name == "fp32") return DataType::float32;
  if (name == "double" || name == "float64" || name == "fp64") return DataType::float64;
  return std::nullopt;
}

std::optional<ReduceOp> parse_op(std::string_view text) {
  const std::string name = lower(text);
  if (name == "sum") return ReduceOp::sum;
  if (name == "prod") return ReduceOp::prod;
  if (name == "min") return ReduceOp::min;
  if (name == "max") return ReduceOp::max;
  if (name == "avg") return ReduceOp::avg;
  return std::nullopt;
}

std::string_view type_name(DataType type) {
  switch (type) {
    case DataType::float32:
      return "float";
    case DataType::float64:
      return "double";
    case DataType::float16:
      return "half";
    case DataType::bfloat16:
      return "bfloat16";
    case DataType::int8:
      return "int8";
    case DataType::uint8:
      return "uint8";
    case DataType::int32:
      return "int32";
    case DataType::int64:
      break;
  }
  return "int64";
}

std::string_view op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::prod:
      return "prod";
    case ReduceOp::min:
      return "min";
    case ReduceOp::max:
      return "max";
    case ReduceOp::avg:
      break;
  }
  return "avg";
}

std::size_t type_size(DataType type) {
  return dispatch(type, [](auto tag) { return sizeof(tag); });
}

ParseResult parse_args(const std::vector<std::string_view>& argv) {
  ParseResult result;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string_view word = argv[i];
    const Flag* flag = nullptr;
    std::optional<std::string_view> value;
    if (word.size() > 2 && word.substr(0, 2) == "--") {
      std::string_view name = word.substr(2);
      if (auto eq = name.find('='); eq != std::string_view::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      for (const Flag& f : kFlags) {
        if (f.long_name == name) flag = &f;
      }
    } else if (word.size() >= 2 && word[0] == '-' && word[1] != '-') {
      for (const Flag& f : kFlags) {
        if (f.short_name == word[1]) flag = &f;
      }
      if (word.size() > 2) value = word.substr(2);  // "-b8"
    }
    if (flag == nullptr) {
      result.error = "unknown argument '" + std::string(word) + "'";
      return result;
    }
    if (!flag->takes_value) {
      if (value) {
        result.error = "'" + std::string(word) + "' takes no value";
        return result;
      }
      result.args.help = true;
      continue;
    }
    if (!value) {
      if (i + 1 == argv.size()) {
        result.error = "'" + std::string(word) + "' needs a value";
        return result;
      }
      value = argv[++i];
    }
    result.error = apply(*flag, *value, result.args);
    if (!result.error.empty()) return result;
  }
  const PerfArgs& args = result.args;
  if (args.min_bytes > args.max_bytes) {
    result.error = "-b (minbytes) is larger than -e (maxbytes)";
  } else if (args.op == ReduceOp::avg && !is_float_type(args.type)) {
    result.error =
        "-o avg is defined for floating-point types only (half, bfloat16, float, "
        "double)";
  }
  return result;
}

ParseResult parse_args(int argc, char** argv) {
  std::vector<std::string_view> words;
  for (int i = 1; i < argc; ++i) words.emplace_back(argv[i]);
  return parse_args(words);
}

std::string usage(std::string_view program) {
  std::string text = "usage: " + std::string(program) + " [flags]\n";
  text +=
      "In-place allreduce bandwidth and latency, nccl-tests flags and columns.\n"
      "  -b, --minbytes SIZE      smallest size in bytes, suffix K, M or G (1024-based); "
      "default 32M\n"
      "  -e, --maxbytes SIZE      largest size; default 32M\n"
      "  -f, --stepfactor N       multiply the size by N from one row to the next; default 2\n"
      "  -n, --iters N            timed iterations per size; default 20\n"
      "  -w, --warmup_iters N     untimed iterations before them; default 5\n"
      "  -c, --check 0|1          verify the result in a separate untimed run; default 1\n"
      "  -m, --agg_iters N        collectives issued back to back per timed iteration, then\n"
      "                           waited; the time is per collective; default 1\n"
      "  -z, --blocking 0|1       0: the asynchronous form and Work::wait(); 1: the blocking\n"
      "                           form; default 0\n"
      "  -d, --datatype TYPE      int8 uint8 int32 int64 half bfloat16 float double; "
      "default float\n"
      "                           (also char, int, float16, fp16, bf16, float32, fp32, "
      "float64, fp64)\n"
      "  -o, --op OP              sum prod min max avg (avg: floating-point types); "
      "default sum\n"
      "      --algo ALGO          auto ring rabenseifner recursive_doubling hier local, or\n"
      "                           ranges such as\n"
      "                           rd:0-64K;ring:64K-max (Options::algorithm)\n"
      "      --memory host|cuda   where the buffer lives (cuda: device 0, on a CUDA stream;\n"
      "                           builds with CUDA); default host\n"
      "  -h, --help               this text\n"
      "Exit status: 0 success, 1 wrong results, 2 bad arguments, 3 communication error.\n";
  return text;
}

std::vector<std::size_t> row_sizes(const PerfArgs& args) {
  const std::size_t element = type_size(args.type);
  std::vector<std::size_t> sizes;
  std::size_t size = args.min_bytes;
  while (size <= args.max_bytes) {
    const std::size_t rounded = size / element * element;
    if (sizes.empty() || sizes.back() != rounded) sizes.push_back(rounded);
    if (size == 0) {
      size = 1;
      continue;
    }
    if (size > std::numeric_limits<std::size_t>::max() / args.step_factor) break;
    size *= args.step_factor;
  }
  return sizes;
}

std::uint16_t float_to_half(float value) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);   // NaN
  if (magnitude >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520
  if (magnitude < 0x38800000u) {
    // Below 2^-14: a subnormal half, in units of 2^-24; the scaling is exact and nearbyint
    // rounds to nearest even (the default rounding mode). 1024 units become the smallest
    // normal, which has the same bits.
    const float units = std::nearbyint(std::fabs(value) * 16777216.0f);
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(units));
  }
  // Normal: round the 23-bit fraction to 10 bits at bit 13 (ties to even), then rebias the
  // exponent from 127 to 15. A carry out of the fraction correctly bumps the exponent.
  const std::uint32_t rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

float half_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1fu;
  const std::uint32_t fraction = bits & 0x3ffu;
  if (exponent == 0) {
    const float magnitude = std::ldexp(static_cast<float>(fraction), -24);
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 31) {
    return std::bit_cast<float>(sign | 0x7f800000u | (fraction << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (fraction << 13));
}

std::uint16_t float_to_bfloat16(float value) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float bfloat16_to_float(std::uint16_t bits) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

// The check data. sum and avg: ((i + r) % k) + 1 with k = min(7, limit / n), so that the sum
// of n ranks stays at or below the largest exactly representable integer run of the type
// (bfloat16: 256); with more ranks than that, one rank holds 1 and the others 0. min, max:
// ((i + r) % 7) + 1. prod: a 2 where (i + r) % m == 0, else 1, with m chosen so that at most
// max_twos(type) ranks hold a 2. Every partial result of any reduction order is then an
// exact small integer.
Pattern::Pattern(DataType type, ReduceOp op, int ranks)
    : type_(type), op_(op), ranks_(std::max(ranks, 1)) {
  const auto n = static_cast<std::size_t>(ranks_);
  switch (op_) {
    case ReduceOp::sum:
    case ReduceOp::avg: {
      const auto k = static_cast<std::size_t>(exact_integer_limit(type) / static_cast<double>(n));
      zero_one_ = k == 0;
      period_ = zero_one_ ? n : std::min<std::size_t>(k, 7);
      break;
    }
    case ReduceOp::min:
    case ReduceOp::max:
      period_ = 7;
      break;
    case ReduceOp::prod: {
      const auto twos = static_cast<std::size_t>(max_twos(type));
      period_ = std::max<std::size_t>(3, (n + twos - 1) / twos);
      break;
    }
  }
  expected_.resize(period_);
  for (std::size_t j = 0; j < period_; ++j) {
    double acc = value(j, 0);
    for (int r = 1; r < ranks_; ++r) {
      const double v = value(j, r);
      switch (op_) {
        case ReduceOp::sum:
        case ReduceOp::avg:
          acc += v;
          break;
        case ReduceOp::prod:
          acc *= v;
          break;
        case ReduceOp::min:
          acc = std::min(acc, v);
          break;
        case ReduceOp::max:
          acc = std::max(acc, v);
          break;
      }
    }
    expected_[j] = op_ == ReduceOp::avg ? acc / static_cast<double>(ranks_) : acc;
  }
}

double Pattern::value(std::size_t index, int rank) const {
  const std::size_t position = (index + static_cast<std::size_t>(rank)) % period_;
  switch (op_) {
    case ReduceOp::prod:
      return position == 0 ? 2.0 : 1.0;
    case ReduceOp::min:
    case ReduceOp::max:
      return static_cast<double>(position + 1);
    case ReduceOp::sum:
    case ReduceOp::avg:
      break;
  }
  if (zero_one_) return position == 0 ? 1.0 : 0.0;
  return static_cast<double>(position + 1);
}

// avg: the sum is exact, so only the division by n rounds. An implementation either divides
// the final sum (at most 1 ulp with a rounded reciprocal, plus 1/2 ulp when the result is
// stored into a 16-bit type) or scales each rank's contribution by 1/n before summing (n
// roundings of at most 1/2 ulp, plus the final one). (n + 2) ulps of the result covers both;
// a wrong reduction is off by far more (a missing rank changes the result by >= 1/(7n)).
double Pattern::tolerance(std::size_t index) const {
  if (op_ != ReduceOp::avg) return 0.0;
  return std::fabs(expected(index)) * std::ldexp(1.0, -fraction_bits(type_)) *
         static_cast<double>(ranks_ + 2);
}

void fill_pattern(const Pattern& pattern, DataType type, void* data, std::size_t count, int rank) {
  dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    // value(i, rank) repeats with the pattern's period: convert one period, then cycle.
    std::vector<T> cycle(pattern.period());
    for (std::size_t j = 0; j < cycle.size(); ++j)
      cycle[j] = from_double<T>(pattern.value(j, rank));
    auto* out = static_cast<T*>(data);
    std::size_t j = 0;
    for (std::size_t i = 0; i < count; ++i) {
      out[i] = cycle[j];
      if (++j == cycle.size()) j = 0;
    }
  });
}

void fill_for_timing(const Pattern& pattern, DataType type, ReduceOp op, void* data,
                     std::size_t count, int rank) {
  if (op != ReduceOp::sum && op != ReduceOp::prod) {
    fill_pattern(pattern, type, data, count, rank);
    return;
  }
  dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    const T value = from_double<T>(op == ReduceOp::sum ? 0.0 : 1.0);
    std::fill_n(static_cast<T*>(data), count, value);
  });
}

std::int64_t count_wrong(const Pattern& pattern, DataType type, const void* data,
                         std::size_t count) {
  const std::size_t period = pattern.period();
  std::vector<double> expected(period);
  std::vector<double> tolerance(period);
  for (std::size_t j = 0; j < period; ++j) {
    expected[j] = pattern.expected(j);
    tolerance[j] = pattern.tolerance(j);
  }
  return dispatch(type, [&](auto tag) {
    using T = decltype(tag);
    const auto* in = static_cast<const T*>(data);
    std::int64_t wrong = 0;
    std::size_t j = 0;
    for (std::size_t i = 0; i < count; ++i) {
      const double diff = std::fabs(to_double(in[i]) - expected[j]);
      if (!(diff <= tolerance[j])) ++wrong;  // NaN counts as wrong
      if (++j == period) j = 0;
    }
    return wrong;
  });
}

void print_header(std::FILE* out, const PerfArgs& args, const RunInfo& info) {
  std::fprintf(out, "# %s (%s): in-place allreduce of %s memory\n", info.program.c_str(),
               info.library.c_str(), args.memory.c_str());
  std::fprintf(out, "# ranks: %d  nodes: %d  algo: %s\n", info.ranks, info.nodes,
               info.algo.c_str());
  std::fprintf(out,
               "# minBytes %zu maxBytes %zu step: %zu(factor) warmup iters: %d iters: %d "
               "agg iters: %d blocking: %d validation: %d type: %s op: %s\n",
               args.min_bytes, args.max_bytes, args.step_factor, args.warmup_iters, args.iters,
               args.agg_iters, args.blocking ? 1 : 0, args.check ? 1 : 0,
               std::string(type_name(args.type)).c_str(), std::string(op_name(args.op)).c_str());
  std::fprintf(out, "# time: mean over the iterations on each rank, then the maximum over ranks\n");
  std::fprintf(out, "# algbw = size / time, busbw = algbw * 2(n-1)/n, GB = 1e9 bytes\n");
  std::fprintf(out, "#\n");
  std::fprintf(out, "# %13s %12s %9s %7s %12s %12s %12s %9s\n", "size(B)", "count", "type", "redop",
               "time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong");
  std::fflush(out);
}

double algbw_gbs(std::size_t bytes, double time_us) {
  if (time_us <= 0.0) return 0.0;
  return static_cast<double>(bytes) / (time_us * 1e-6) / 1e9;
}

double busbw_gbs(std::size_t bytes, double time_us, int ranks) {
  if (ranks < 1) return 0.0;
  return algbw_gbs(bytes, time_us) * 2.0 * static_cast<double>(ranks - 1) /
         static_cast<double>(ranks);
}

double print_row(std::FILE* out, std::size_t bytes, DataType type, ReduceOp op, double time_us,
                 int ranks, std::int64_t wrong) {
  const double busbw = busbw_gbs(bytes, time_us, ranks);
  const std::string wrong_text = wrong < 0 ? "N/A" : std::to_string(wrong);
  std::fprintf(out, "%15zu %12zu %9s %7s %12.2f %12.3f %12.3f %9s\n", bytes,
               bytes / type_size(type), std::string(type_name(type)).c_str(),
               std::string(op_name(op)).c_str(), time_us, algbw_gbs(bytes, time_us), busbw,
               wrong_text.c_str());
  std::fflush(out);
  return busbw;
}

void print_footer(std::FILE* out, double busbw_sum, int rows, std::int64_t wrong_total, bool check,
                  std::size_t buffer_bytes) {
  if (check) {
    std::fprintf(out, "# Wrong elements       : %lld %s\n", static_cast<long long>(wrong_total),
                 wrong_total == 0 ? "OK" : "FAILED");
  } else {
    std::fprintf(out, "# Wrong elements       : N/A (check disabled)\n");
  }
  std::fprintf(out, "# Avg bus bandwidth    : %.4f\n",
               rows > 0 ? busbw_sum / static_cast<double>(rows) : 0.0);
  std::fprintf(out, "# Peak resident memory : %.1f MiB on rank 0 (buffer %.1f MiB)\n",
               static_cast<double>(peak_rss_bytes()) / 1048576.0,
               static_cast<double>(buffer_bytes) / 1048576.0);
  std::fflush(out);
}

std::size_t peak_rss_bytes() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
  return static_cast<std::size_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

bool launcher_rank_is_zero() {
  for (const char* name : kRankVariables) {
    if (const char* value = std::getenv(name)) return std::string_view(value) == "0";
  }
  return true;
}

Buffer::Buffer(std::size_t bytes) : bytes_(bytes) {
  const std::size_t allocated =
      std::max((bytes + kPageBytes - 1) / kPageBytes, std::size_t{1}) * kPageBytes;
  data_ = std::aligned_alloc(kPageBytes, allocated);
  if (data_ == nullptr) throw std::bad_alloc();
  std::memset(data_, 0, allocated);
}

Buffer::~Buffer() { std::free(data_); }

}  // namespace ringlet::perf
