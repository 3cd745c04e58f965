// SPDX-License-Identifier: Apache-2.0
// allreduce_perf's flags, size suffixes, row sizes, 16-bit conversions and check patterns.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "bench/perf_common.hpp"

namespace ringlet::perf {
namespace {

ParseResult parse(std::vector<std::string_view> words) { return parse_args(words); }

TEST(PerfArgsTest, SizesUsePowersOf1024) {
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(parse_size("8"), 8u);
  EXPECT_EQ(parse_size("8K"), 8u * 1024);
  EXPECT_EQ(parse_size("8k"), 8u * 1024);
  EXPECT_EQ(parse_size("64M"), 64u * 1024 * 1024);
  EXPECT_EQ(parse_size("256m"), 256u * 1024 * 1024);
  EXPECT_EQ(parse_size("2G"), std::size_t{2} << 30);
  EXPECT_EQ(parse_size("1g"), std::size_t{1} << 30);
}

TEST(PerfArgsTest, MalformedSizesAreRejected) {
  for (std::string_view text : {"", "K", "-1", "+8", "8X", "8KB", "1.5M", " 8", "8 ", "0x10",
                                "99999999999999999999", "17179869184G"}) {
    EXPECT_FALSE(parse_size(text).has_value()) << "'" << text << "'";
  }
}

TEST(PerfArgsTest, DefaultsMatchNcclTests) {
  const ParseResult r = parse({});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.args.min_bytes, 32u << 20);
  EXPECT_EQ(r.args.max_bytes, 32u << 20);
  EXPECT_EQ(r.args.step_factor, 2u);
  EXPECT_EQ(r.args.iters, 20);
  EXPECT_EQ(r.args.warmup_iters, 5);
  EXPECT_TRUE(r.args.check);
  EXPECT_EQ(r.args.type, DataType::float32);
  EXPECT_EQ(r.args.op, ReduceOp::sum);
  EXPECT_EQ(r.args.algo, "");
  EXPECT_FALSE(r.args.help);
}

TEST(PerfArgsTest, ShortFlags) {
  const ParseResult r = parse({"-b", "8", "-e", "128M", "-f", "4", "-n", "7", "-w", "0", "-c", "0",
                               "-d", "int64", "-o", "max"});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.args.min_bytes, 8u);
  EXPECT_EQ(r.args.max_bytes, 128u << 20);
  EXPECT_EQ(r.args.step_factor, 4u);
  EXPECT_EQ(r.args.iters, 7);
  EXPECT_EQ(r.args.warmup_iters, 0);
  EXPECT_FALSE(r.args.check);
  EXPECT_EQ(r.args.type, DataType::int64);
  EXPECT_EQ(r.args.op, ReduceOp::max);
}

TEST(PerfArgsTest, AttachedShortValues) {
  const ParseResult r = parse({"-b8K", "-e1M", "-dhalf", "-oavg"});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.args.min_bytes, 8192u);
  EXPECT_EQ(r.args.max_bytes, 1u << 20);
  EXPECT_EQ(r.args.type, DataType::float16);
  EXPECT_EQ(r.args.op, ReduceOp::avg);
}

TEST(PerfArgsTest, LongFlagsWithAndWithoutEquals) {
  const ParseResult r =
      parse({"--minbytes=1K", "--maxbytes", "2K", "--stepfactor=2", "--iters", "3",
             "--warmup_iters=1", "--check", "1", "--datatype=bf16", "--op", "prod", "--algo=RING"});
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.args.min_bytes, 1024u);
  EXPECT_EQ(r.args.max_bytes, 2048u);
  EXPECT_EQ(r.args.iters, 3);
  EXPECT_EQ(r.args.warmup_iters, 1);
  EXPECT_EQ(r.args.type, DataType::bfloat16);
  EXPECT_EQ(r.args.op, ReduceOp::prod);
  EXPECT_EQ(r.args.algo, "ring");
  const ParseResult rab = parse({"--algo", "Rabenseifner"});
  ASSERT_EQ(rab.error, "");
  EXPECT_EQ(rab.args.algo, "rabenseifner");
}

TEST(PerfArgsTest, HelpFlag) {
  EXPECT_TRUE(parse({"-h"}).args.help);
  EXPECT_TRUE(parse({"--help"}).args.help);
  EXPECT_NE(parse({"--help=1"}).error, "");
  EXPECT_NE(usage("allreduce_perf").find("--warmup_iters"), std::string::npos);
}

TEST(PerfArgsTest, TypeNamesAndAliases) {
  const std::vector<std::pair<std::string_view, DataType>> cases = {
      {"int8", DataType::int8},       {"char", DataType::int8},
      {"uint8", DataType::uint8},     {"int32", DataType::int32},
      {"int", DataType::int32},       {"int64", DataType::int64},
      {"half", DataType::float16},    {"float16", DataType::float16},
      {"fp16", DataType::float16},    {"bfloat16", DataType::bfloat16},
      {"bf16", DataType::bfloat16},   {"float", DataType::float32},
      {"float32", DataType::float32}, {"fp32", DataType::float32},
      {"double", DataType::float64},  {"float64", DataType::float64},
      {"fp64", DataType::float64},    {"FLOAT", DataType::float32}};
  for (const auto& [name, type] : cases) {
    EXPECT_EQ(parse_type(name), type) << name;
  }
  for (std::string_view bad : {"", "uint32", "uint64", "all", "float8", "int16"}) {
    EXPECT_FALSE(parse_type(bad).has_value()) << bad;
  }
  EXPECT_EQ(type_name(DataType::float32), "float");
  EXPECT_EQ(type_name(DataType::float16), "half");
  EXPECT_EQ(type_name(DataType::bfloat16), "bfloat16");
  EXPECT_EQ(type_size(DataType::bfloat16), 2u);
  EXPECT_EQ(type_size(DataType::int64), 8u);
}

TEST(PerfArgsTest, OpNames) {
  EXPECT_EQ(parse_op("sum"), ReduceOp::sum);
  EXPECT_EQ(parse_op("prod"), ReduceOp::prod);
  EXPECT_EQ(parse_op("min"), ReduceOp::min);
  EXPECT_EQ(parse_op("max"), ReduceOp::max);
  EXPECT_EQ(parse_op("avg"), ReduceOp::avg);
  EXPECT_FALSE(parse_op("premulsum").has_value());
  EXPECT_FALSE(parse_op("all").has_value());
}

TEST(PerfArgsTest, BadCommandLinesGiveAnError) {
  const std::vector<std::vector<std::string_view>> bad = {{"-x"},
                                                          {"--bogus"},
                                                          {"positional"},
                                                          {"-b"},
                                                          {"--minbytes"},
                                                          {"-b", "8Q"},
                                                          {"-f", "1"},
                                                          {"-f", "0"},
                                                          {"-n", "0"},
                                                          {"-n", "-3"},
                                                          {"-w", "-1"},
                                                          {"-c", "2"},
                                                          {"-c", "yes"},
                                                          {"-d", "uint32"},
                                                          {"-o", "xor"},
                                                          {"--algo", "tree"},
                                                          {"-b", "2M", "-e", "1M"},
                                                          {"-d", "int32", "-o", "avg"},
                                                          {"-"},
                                                          {"--"},
                                                          {"-n", "3x"}};
  for (const auto& words : bad) {
    std::string joined;
    for (auto w : words) joined += std::string(w) + " ";
    EXPECT_NE(parse(words).error, "") << joined;
  }
}

TEST(PerfArgsTest, AvgIsForFloatingPointTypes) {
  for (std::string_view type : {"half", "bfloat16", "float", "double"}) {
    EXPECT_EQ(parse({"-d", type, "-o", "avg"}).error, "") << type;
  }
  for (std::string_view type : {"int8", "uint8", "int32", "int64"}) {
    EXPECT_NE(parse({"-d", type, "-o", "avg"}).error, "") << type;
  }
}

TEST(PerfArgsTest, RowSizesMultiplyAndRound) {
  PerfArgs args;
  args.min_bytes = 8;
  args.max_bytes = 64;
  EXPECT_EQ(row_sizes(args), (std::vector<std::size_t>{8, 16, 32, 64}));
  args.step_factor = 4;
  args.max_bytes = 100;
  EXPECT_EQ(row_sizes(args), (std::vector<std::size_t>{8, 32}));

  // Rounded down to whole elements, repeats dropped.
  args.step_factor = 2;
  args.min_bytes = 1;
  args.max_bytes = 10;
  args.type = DataType::float32;
  EXPECT_EQ(row_sizes(args), (std::vector<std::size_t>{0, 4, 8}));
  args.type = DataType::float64;
  args.min_bytes = 12;
  args.max_bytes = 12;
  EXPECT_EQ(row_sizes(args), (std::vector<std::size_t>{8}));

  // -b 0 measures the empty allreduce, then carries on from 1 byte.
  args.type = DataType::int8;
  args.min_bytes = 0;
  args.max_bytes = 4;
  EXPECT_EQ(row_sizes(args), (std::vector<std::size_t>{0, 1, 2, 4}));

  // The largest sizes do not overflow.
  args.min_bytes = std::size_t{1} << 62;
  args.max_bytes = std::numeric_limits<std::size_t>::max();
  args.step_factor = 8;
  EXPECT_EQ(row_sizes(args), (std::vector<std::size_t>{std::size_t{1} << 62}));
}

TEST(PerfArgsTest, BusBandwidthFollowsNcclTests) {
  // 1e9 bytes in 1 s: algbw 1 GB/s; busbw 2(n-1)/n of it.
  EXPECT_DOUBLE_EQ(algbw_gbs(1000000000, 1e6), 1.0);
  EXPECT_DOUBLE_EQ(busbw_gbs(1000000000, 1e6, 1), 0.0);
  EXPECT_DOUBLE_EQ(busbw_gbs(1000000000, 1e6, 2), 1.0);
  EXPECT_DOUBLE_EQ(busbw_gbs(1000000000, 1e6, 4), 1.5);
  EXPECT_DOUBLE_EQ(busbw_gbs(8, 0.0, 4), 0.0);
}

TEST(PerfArgsTest, HalfConversionRoundsToNearestEven) {
  EXPECT_EQ(float_to_half(0.0f), 0x0000);
  EXPECT_EQ(float_to_half(-0.0f), 0x8000);
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);  // tie, rounds to even: infinity
  EXPECT_EQ(float_to_half(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);    // tie, to even
  EXPECT_EQ(float_to_half(std::ldexp(3.0f, -25)), 0x0002);    // tie, to even
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -14)), 0x0400);    // smallest normal
  EXPECT_EQ(float_to_half(2049.0f), float_to_half(2048.0f));  // tie, to even
  EXPECT_EQ(float_to_half(2051.0f), float_to_half(2052.0f));  // tie, to even
  EXPECT_EQ(float_to_half(2050.0f), 0x6801);
  const std::uint16_t nan = float_to_half(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  // Every finite half survives the round trip through float.
  for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {
    if ((bits & 0x7c00) == 0x7c00 && (bits & 0x03ff) != 0) continue;  // NaN
    ASSERT_EQ(float_to_half(half_to_float(static_cast<std::uint16_t>(bits))), bits) << bits;
  }
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(half_to_float(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isinf(half_to_float(0xfc00)));
}

TEST(PerfArgsTest, BFloat16ConversionRoundsToNearestEven) {
  EXPECT_EQ(float_to_bfloat16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bfloat16(256.0f), 0x4380);
  EXPECT_EQ(float_to_bfloat16(257.0f), 0x4380);  // tie, to even
  EXPECT_EQ(float_to_bfloat16(258.0f), 0x4381);
  EXPECT_EQ(float_to_bfloat16(259.0f), 0x4382);  // tie, to even
  EXPECT_EQ(float_to_bfloat16(-3.0f), 0xc040);
  EXPECT_EQ(bfloat16_to_float(0x4381), 258.0f);
  EXPECT_TRUE(std::isnan(bfloat16_to_float(float_to_bfloat16(std::nanf("")))));
  for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {
    if ((bits & 0x7f80) == 0x7f80 && (bits & 0x007f) != 0) continue;  // NaN
    ASSERT_EQ(float_to_bfloat16(bfloat16_to_float(static_cast<std::uint16_t>(bits))), bits);
  }
}

// An independent model of a reduction: element-wise in the storage type, with float32
// arithmetic and rounding after every step for the 16-bit types, in a given rank order.
class Simulator {
 public:
  Simulator(DataType type, ReduceOp op, int ranks, std::size_t count)
      : type_(type), op_(op), ranks_(ranks), count_(count), pattern_(type, op, ranks) {
    inputs_.resize(static_cast<std::size_t>(ranks));
    for (int r = 0; r < ranks; ++r) {
      inputs_[static_cast<std::size_t>(r)].resize(count * type_size(type));
      fill_pattern(pattern_, type, inputs_[static_cast<std::size_t>(r)].data(), count, r);
    }
  }

  // Reduces in `order` (a permutation of the ranks) and returns the result's bytes.
  std::vector<std::byte> reduce(const std::vector<int>& order) const {
    std::vector<std::byte> acc = inputs_[static_cast<std::size_t>(order[0])];
    for (std::size_t k = 1; k < order.size(); ++k) {
      const auto& in = inputs_[static_cast<std::size_t>(order[k])];
      for (std::size_t i = 0; i < count_; ++i) store(acc, i, combine(load(acc, i), load(in, i)));
    }
    if (op_ == ReduceOp::avg) {
      for (std::size_t i = 0; i < count_; ++i) store(acc, i, load(acc, i) / ranks_);
    }
    return acc;
  }

  const Pattern& pattern() const { return pattern_; }

 private:
  double combine(double a, double b) const {
    switch (op_) {
      case ReduceOp::sum:
      case ReduceOp::avg:
        return a + b;
      case ReduceOp::prod:
        return a * b;
      case ReduceOp::min:
        return std::min(a, b);
      case ReduceOp::max:
        return std::max(a, b);
    }
    return 0;
  }

  double load(const std::vector<std::byte>& buf, std::size_t i) const {
    const std::byte* p = buf.data() + i * type_size(type_);
    switch (type_) {
      case DataType::float32:
        return read<float>(p);
      case DataType::float64:
        return read<double>(p);
      case DataType::float16:
        return half_to_float(read<std::uint16_t>(p));
      case DataType::bfloat16:
        return bfloat16_to_float(read<std::uint16_t>(p));
      case DataType::int8:
        return read<std::int8_t>(p);
      case DataType::uint8:
        return read<std::uint8_t>(p);
      case DataType::int32:
        return read<std::int32_t>(p);
      case DataType::int64:
        return static_cast<double>(read<std::int64_t>(p));
    }
    return 0;
  }

  // Stores with the type's rounding; integer results must fit (no wrap-around allowed).
  void store(std::vector<std::byte>& buf, std::size_t i, double v) const {
    std::byte* p = buf.data() + i * type_size(type_);
    switch (type_) {
      case DataType::float32:
        return write(p, static_cast<float>(v));
      case DataType::float64:
        return write(p, v);
      case DataType::float16:
        return write(p, float_to_half(static_cast<float>(v)));
      case DataType::bfloat16:
        return write(p, float_to_bfloat16(static_cast<float>(v)));
      case DataType::int8:
        return write(p, checked<std::int8_t>(v));
      case DataType::uint8:
        return write(p, checked<std::uint8_t>(v));
      case DataType::int32:
        return write(p, checked<std::int32_t>(v));
      case DataType::int64:
        return write(p, checked<std::int64_t>(v));
    }
  }

  template <class T>
  static T read(const std::byte* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
  }
  template <class T>
  static void write(std::byte* p, T v) {
    std::memcpy(p, &v, sizeof(T));
  }
  template <class T>
  static T checked(double v) {
    EXPECT_LE(v, static_cast<double>(std::numeric_limits<T>::max()));
    EXPECT_GE(v, static_cast<double>(std::numeric_limits<T>::min()));
    EXPECT_EQ(v, std::floor(v));
    return static_cast<T>(v);
  }

  DataType type_;
  ReduceOp op_;
  int ranks_;
  std::size_t count_;
  Pattern pattern_;
  std::vector<std::vector<std::byte>> inputs_;
};

// Rank orders a ring, a reversed ring and a tree-like interleaving would use.
std::vector<std::vector<int>> orders(int ranks) {
  std::vector<std::vector<int>> out;
  for (int start : {0, ranks / 2, ranks - 1}) {
    std::vector<int> ring;
    for (int k = 0; k < ranks; ++k) ring.push_back((start + k) % ranks);
    out.push_back(ring);
    out.emplace_back(ring.rbegin(), ring.rend());
  }
  std::vector<int> evens_then_odds;
  for (int r = 0; r < ranks; r += 2) evens_then_odds.push_back(r);
  for (int r = 1; r < ranks; r += 2) evens_then_odds.push_back(r);
  out.push_back(evens_then_odds);
  return out;
}

TEST(PerfPatternTest, EveryTypeOpAndRankCountIsExact) {
  const DataType types[] = {DataType::float32,  DataType::float64, DataType::float16,
                            DataType::bfloat16, DataType::int8,    DataType::uint8,
                            DataType::int32,    DataType::int64};
  const ReduceOp ops[] = {ReduceOp::sum, ReduceOp::prod, ReduceOp::min, ReduceOp::max,
                          ReduceOp::avg};
  for (DataType type : types) {
    for (ReduceOp op : ops) {
      const bool is_float = type == DataType::float32 || type == DataType::float64 ||
                            type == DataType::float16 || type == DataType::bfloat16;
      if (op == ReduceOp::avg && !is_float) continue;
      for (int ranks : {1, 2, 3, 4, 5, 7, 8, 9, 16, 37, 64, 130, 300}) {
        const std::size_t count = 211;  // a prime: every phase of every period
        Simulator sim(type, op, ranks, count);
        for (const auto& order : orders(ranks)) {
          const std::vector<std::byte> result = sim.reduce(order);
          ASSERT_EQ(count_wrong(sim.pattern(), type, result.data(), count), 0)
              << type_name(type) << " " << op_name(op) << " ranks " << ranks << " order from "
              << order[0];
        }
      }
    }
  }
}

TEST(PerfPatternTest, ValuesVaryAndResultsAreNotTrivial) {
  const Pattern sum(DataType::float32, ReduceOp::sum, 4);
  EXPECT_EQ(sum.value(0, 0), 1.0);
  EXPECT_EQ(sum.value(0, 3), 4.0);
  EXPECT_EQ(sum.value(6, 0), 7.0);
  EXPECT_EQ(sum.expected(0), 1.0 + 2 + 3 + 4);
  EXPECT_EQ(sum.expected(5), 6.0 + 7 + 1 + 2);
  const Pattern bf16(DataType::bfloat16, ReduceOp::sum, 64);  // 256 / 64: values 1..4
  EXPECT_EQ(bf16.period(), 4u);
  EXPECT_LE(bf16.expected(0), 256.0);
  const Pattern prod(DataType::int8, ReduceOp::prod, 8);
  EXPECT_EQ(prod.expected(0), 8.0);  // ranks 0, 3, 6 hold a 2
  const Pattern avg(DataType::float32, ReduceOp::avg, 3);
  EXPECT_EQ(avg.expected(0), 2.0);
  EXPECT_GT(avg.tolerance(0), 0.0);
  EXPECT_LT(avg.tolerance(0), 1e-5);
  EXPECT_EQ(sum.tolerance(0), 0.0);
}

TEST(PerfPatternTest, CountWrongFindsEachBadElement) {
  const int ranks = 4;
  const std::size_t count = 1000;
  for (DataType type : {DataType::float32, DataType::float16, DataType::bfloat16, DataType::int8,
                        DataType::int64, DataType::float64}) {
    Simulator sim(type, ReduceOp::sum, ranks, count);
    std::vector<std::byte> result = sim.reduce({0, 1, 2, 3});
    ASSERT_EQ(count_wrong(sim.pattern(), type, result.data(), count), 0);
    // One rank short: every element is wrong.
    const std::vector<std::byte> partial = sim.reduce({0, 1, 2});
    EXPECT_EQ(count_wrong(sim.pattern(), type, partial.data(), count),
              static_cast<std::int64_t>(count))
        << type_name(type);
    // Two flipped bytes: two wrong elements.
    const std::size_t element = type_size(type);
    result[17 * element] ^= std::byte{0x01};
    result[999 * element] ^= std::byte{0x40};
    EXPECT_EQ(count_wrong(sim.pattern(), type, result.data(), count), 2) << type_name(type);
  }
}

TEST(PerfPatternTest, TimingDataStaysBounded) {
  const Pattern sum(DataType::int32, ReduceOp::sum, 4);
  std::vector<std::int32_t> data(16, 99);
  fill_for_timing(sum, DataType::int32, ReduceOp::sum, data.data(), data.size(), 1);
  for (auto v : data) EXPECT_EQ(v, 0);
  const Pattern prod(DataType::float32, ReduceOp::prod, 4);
  std::vector<float> values(16, 5.0f);
  fill_for_timing(prod, DataType::float32, ReduceOp::prod, values.data(), values.size(), 1);
  for (auto v : values) EXPECT_EQ(v, 1.0f);
}

TEST(PerfBufferTest, PageAlignedAndZeroed) {
  Buffer empty(0);
  EXPECT_NE(empty.data(), nullptr);
  Buffer buffer(10000);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer.data()) % 4096, 0u);
  const auto* bytes = static_cast<const unsigned char*>(buffer.data());
  for (std::size_t i = 0; i < buffer.bytes(); ++i) ASSERT_EQ(bytes[i], 0) << i;
  EXPECT_GT(peak_rss_bytes(), 0u);
}

}  // namespace
}  // namespace ringlet::perf
