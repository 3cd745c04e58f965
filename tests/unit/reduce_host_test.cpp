// SPDX-License-Identifier: Apache-2.0
// Host reduce kernels: every DataType x ReduceOp x instruction set against a serial reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "ringlet_config.hpp"
#include "src/reduce/reduce.hpp"

namespace ringlet::reduce {
namespace {

__extension__ typedef __float128 Quad;  // exact products of doubles; innocuous double rounding

constexpr DataType kAllTypes[] = {DataType::float32,  DataType::float64, DataType::float16,
                                  DataType::bfloat16, DataType::int8,    DataType::uint8,
                                  DataType::int32,    DataType::int64};
constexpr ReduceOp kAllOps[] = {ReduceOp::sum, ReduceOp::prod, ReduceOp::min, ReduceOp::max,
                                ReduceOp::avg};
constexpr HostIsa kAllIsas[] = {HostIsa::generic, HostIsa::avx2, HostIsa::avx512};

std::size_t elem_size(DataType t) {
  switch (t) {
    case DataType::float64:
    case DataType::int64:
      return 8;
    case DataType::float32:
    case DataType::int32:
      return 4;
    case DataType::float16:
    case DataType::bfloat16:
      return 2;
    case DataType::int8:
    case DataType::uint8:
      return 1;
  }
  return 0;
}

const char* type_name(DataType t) {
  constexpr const char* kNames[] = {"float32", "float64", "float16", "bfloat16",
                                    "int8",    "uint8",   "int32",   "int64"};
  return kNames[static_cast<int>(t)];
}

const char* op_name(ReduceOp op) {
  constexpr const char* kNames[] = {"sum", "prod", "min", "max", "avg"};
  return kNames[static_cast<int>(op)];
}

const char* isa_name(HostIsa isa) {
  constexpr const char* kNames[] = {"generic", "avx2", "avx512"};
  return kNames[static_cast<int>(isa)];
}

// ---- independent 16-bit converters (value formulas and a search, no bit tricks) ----------------

struct Format16 {
  int mant_bits;       // 10 for binary16, 7 for bfloat16
  int bias;            // 15, 127
  std::uint16_t inf;   // 0x7C00, 0x7F80
  std::uint16_t qnan;  // the canonical NaN the kernels store
};
constexpr Format16 kHalf{10, 15, 0x7C00, 0x7E00};
constexpr Format16 kBf16{7, 127, 0x7F80, 0x7FC0};

// The magnitude of a positive pattern; the inf pattern maps to the next power of two, as if the
// exponent range went on, which makes the rounding search below handle overflow.
long double magnitude16(const Format16& f, std::uint16_t bits) {
  const int e = bits >> f.mant_bits;
  const int m = bits & ((1 << f.mant_bits) - 1);
  if (e == 0) return std::ldexp(static_cast<long double>(m), 1 - f.bias - f.mant_bits);
  return std::ldexp(static_cast<long double>((1 << f.mant_bits) + m), e - f.bias - f.mant_bits);
}

// magnitude16 of every pattern from 0 to inf, increasing; computed once per format.
const std::vector<long double>& magnitudes(const Format16& f) {
  static const auto build = [](const Format16& g) {
    std::vector<long double> v(g.inf + 1u);
    for (std::uint32_t k = 0; k <= g.inf; ++k) v[k] = magnitude16(g, static_cast<std::uint16_t>(k));
    return v;
  };
  static const std::vector<long double> half = build(kHalf);
  static const std::vector<long double> bf16 = build(kBf16);
  return f.mant_bits == kHalf.mant_bits ? half : bf16;
}

double ref_widen(const Format16& f, std::uint16_t h) {
  const bool neg = (h & 0x8000) != 0;
  const auto mag = static_cast<std::uint16_t>(h & 0x7FFF);
  double v;
  if (mag > f.inf) {
    v = std::nan("");
  } else if (mag == f.inf) {
    v = INFINITY;
  } else {
    v = static_cast<double>(magnitude16(f, mag));
  }
  return neg ? -v : v;
}

// Nearest pattern to v, ties to the even pattern; NaN gives the canonical NaN.
std::uint16_t ref_narrow(const Format16& f, long double v) {
  if (std::isnan(v)) return f.qnan;
  const std::uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  const long double a = std::fabs(v);
  if (std::isinf(a)) return static_cast<std::uint16_t>(sign | f.inf);
  const std::vector<long double>& mags = magnitudes(f);
  // The largest k in [0, inf] with magnitude(k) <= a.
  const auto k_it = std::upper_bound(mags.begin(), mags.end(), a) - 1;
  auto k = static_cast<std::uint32_t>(k_it - mags.begin());
  if (k < f.inf) {
    const long double below = a - mags[k];
    const long double above = mags[k + 1] - a;
    if (above < below || (above == below && (k & 1) != 0)) ++k;
  }
  return static_cast<std::uint16_t>(sign | k);
}

// ---- reference element function ----------------------------------------------------------------

template <class F>
bool ref_less_min(F a, F b) {  // true: min(a, b) is a (a, b not NaN; -0 below +0)
  if (a < b) return true;
  if (b < a) return false;
  return std::signbit(a);
}

template <class F>
F ref_minmax(F a, F b, ReduceOp op) {
  if (op == ReduceOp::min) return ref_less_min(a, b) ? a : b;
  return ref_less_min(a, b) ? b : a;  // for equal values: a when a is +0 or b is -0
}

std::uint64_t canonical_bits(DataType t) {
  switch (t) {
    case DataType::float32:
      return 0x7FC00000u;
    case DataType::float64:
      return 0x7FF8000000000000ull;
    case DataType::float16:
      return kHalf.qnan;
    default:
      return kBf16.qnan;
  }
}

std::int64_t as_signed(DataType t, std::uint64_t bits) {
  switch (t) {
    case DataType::int8:
      return static_cast<std::int8_t>(bits);
    case DataType::uint8:
      return static_cast<std::uint8_t>(bits);
    case DataType::int32:
      return static_cast<std::int32_t>(bits);
    default:
      return static_cast<std::int64_t>(bits);
  }
}

std::uint64_t mask_bits(DataType t, std::uint64_t v) {
  const std::size_t s = elem_size(t);
  return s == 8 ? v : (v & ((std::uint64_t{1} << (8 * s)) - 1));
}

std::uint64_t ref_op(DataType t, ReduceOp op, std::uint64_t a, std::uint64_t b) {
  const bool sum = op == ReduceOp::sum || op == ReduceOp::avg;
  switch (t) {
    case DataType::float32: {
      const float x = std::bit_cast<float>(static_cast<std::uint32_t>(a));
      const float y = std::bit_cast<float>(static_cast<std::uint32_t>(b));
      if (std::isnan(x) || std::isnan(y)) return canonical_bits(t);
      float r;
      if (sum || op == ReduceOp::prod) {
        const long double w =
            sum ? static_cast<long double>(x) + y : static_cast<long double>(x) * y;
        r = static_cast<float>(w);
      } else {
        r = ref_minmax(x, y, op);
      }
      return std::isnan(r) ? canonical_bits(t) : std::bit_cast<std::uint32_t>(r);
    }
    case DataType::float64: {
      const double x = std::bit_cast<double>(a);
      const double y = std::bit_cast<double>(b);
      if (std::isnan(x) || std::isnan(y)) return canonical_bits(t);
      double r;
      if (sum || op == ReduceOp::prod) {
        const Quad w = sum ? static_cast<Quad>(x) + y : static_cast<Quad>(x) * y;
        r = static_cast<double>(w);
      } else {
        r = ref_minmax(x, y, op);
      }
      return std::isnan(r) ? canonical_bits(t) : std::bit_cast<std::uint64_t>(r);
    }
    case DataType::float16:
    case DataType::bfloat16: {
      const Format16& f = t == DataType::float16 ? kHalf : kBf16;
      const double x = ref_widen(f, static_cast<std::uint16_t>(a));
      const double y = ref_widen(f, static_cast<std::uint16_t>(b));
      if (std::isnan(x) || std::isnan(y)) return f.qnan;
      float r;  // float32 arithmetic: exact in double, then rounded once to float
      if (sum) {
        r = static_cast<float>(x + y);
      } else if (op == ReduceOp::prod) {
        r = static_cast<float>(x * y);
      } else {
        r = static_cast<float>(ref_minmax(x, y, op));
      }
      return ref_narrow(f, r);
    }
    default: {
      const std::int64_t x = as_signed(t, a);
      const std::int64_t y = as_signed(t, b);
      std::uint64_t r;
      if (sum) {
        r = static_cast<std::uint64_t>(x) + static_cast<std::uint64_t>(y);
      } else if (op == ReduceOp::prod) {
        r = static_cast<std::uint64_t>(x) * static_cast<std::uint64_t>(y);
      } else if (op == ReduceOp::min) {
        r = static_cast<std::uint64_t>(x < y ? x : y);
      } else {
        r = static_cast<std::uint64_t>(x < y ? y : x);
      }
      return mask_bits(t, r);
    }
  }
}

std::uint64_t ref_divide(DataType t, std::uint64_t a, int d) {
  switch (t) {
    case DataType::float32: {
      const float r = static_cast<float>(
          static_cast<long double>(std::bit_cast<float>(static_cast<std::uint32_t>(a))) / d);
      return std::isnan(r) ? canonical_bits(t) : std::bit_cast<std::uint32_t>(r);
    }
    case DataType::float64: {
      const double r = static_cast<double>(static_cast<Quad>(std::bit_cast<double>(a)) / d);
      return std::isnan(r) ? canonical_bits(t) : std::bit_cast<std::uint64_t>(r);
    }
    default: {
      const Format16& f = t == DataType::float16 ? kHalf : kBf16;
      const double x = ref_widen(f, static_cast<std::uint16_t>(a));
      return ref_narrow(f, static_cast<float>(x / d));
    }
  }
}

// ---- test data ---------------------------------------------------------------------------------

std::vector<std::uint64_t> specials(DataType t) {
  switch (t) {
    case DataType::float32:
      return {0x0,        0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7FA00001, 0xFFC00000,
              0x00000001, 0x807FFFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x00800000, 0x3F800000, 0xBF800000};
    case DataType::float64:
      return {0x0,
              0x8000000000000000,
              0x7FF0000000000000,
              0xFFF0000000000000,
              0x7FF8000000000000,
              0x7FF4000000000001,
              0xFFF8000000000000,
              0x1,
              0x800FFFFFFFFFFFFF,
              0x7FEFFFFFFFFFFFFF,
              0x0010000000000000,
              0x3FF0000000000000};
    case DataType::float16:
      return {0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7D01, 0xFE00,
              0x0001, 0x83FF, 0x7BFF, 0xFBFF, 0x0400, 0x3C00, 0xBC00};
    case DataType::bfloat16:
      return {0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFC0,
              0x0001, 0x807F, 0x7F7F, 0xFF7F, 0x0080, 0x3F80, 0xBF80};
    case DataType::int8:
      return {0x00, 0x01, 0xFF, 0x80, 0x7F, 0x7E, 0x81};
    case DataType::uint8:
      return {0x00, 0x01, 0xFF, 0x80, 0x7F, 0xFE};
    case DataType::int32:
      return {0x0, 0x1, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x7FFFFFFE, 0x80000001};
    case DataType::int64:
      return {
          0x0, 0x1, 0xFFFFFFFFFFFFFFFF, 0x8000000000000000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000001};
  }
  return {};
}

// A third special values, a third random bit patterns, a third moderate values (whose sums and
// products round rather than overflow).
std::vector<std::uint64_t> make_values(DataType t, std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::vector<std::uint64_t> sp = specials(t);
  std::vector<std::uint64_t> v(n);
  for (auto& x : v) {
    const std::uint64_t r = rng();
    switch (r % 3) {
      case 0:
        x = sp[(r >> 8) % sp.size()];
        break;
      case 1:
        x = mask_bits(t, rng());
        break;
      default: {
        const double m =
            std::ldexp(static_cast<double>(static_cast<std::int64_t>(rng() % 2001) - 1000),
                       static_cast<int>(rng() % 20) - 10);
        switch (t) {
          case DataType::float32:
            x = std::bit_cast<std::uint32_t>(static_cast<float>(m));
            break;
          case DataType::float64:
            x = std::bit_cast<std::uint64_t>(m * 1.000001);
            break;
          case DataType::float16:
            x = ref_narrow(kHalf, m);
            break;
          case DataType::bfloat16:
            x = ref_narrow(kBf16, m);
            break;
          default:
            x = mask_bits(t,
                          static_cast<std::uint64_t>(static_cast<std::int64_t>(rng() % 41) - 20));
        }
      }
    }
  }
  return v;
}

// A byte buffer holding n elements starting `offset` elements past a 64-byte boundary.
class Buffer {
 public:
  Buffer(DataType t, std::size_t n, std::size_t offset)
      : size_(elem_size(t)), bytes_(n * size_ + offset * size_ + 64) {
    const auto addr = reinterpret_cast<std::uintptr_t>(bytes_.data());
    base_ = bytes_.data() + ((64 - addr % 64) % 64) + offset * size_;
  }
  void* data() { return base_; }
  void set(const std::vector<std::uint64_t>& v) {
    for (std::size_t i = 0; i < v.size(); ++i) std::memcpy(base_ + i * size_, &v[i], size_);
  }
  std::uint64_t get(std::size_t i) const {
    std::uint64_t x = 0;
    std::memcpy(&x, base_ + i * size_, size_);
    return x;
  }

 private:
  std::size_t size_;
  std::vector<unsigned char> bytes_;
  unsigned char* base_;
};

std::string hex(std::uint64_t x) {
  char s[24];
  std::snprintf(s, sizeof s, "0x%llx", static_cast<unsigned long long>(x));
  return s;
}

// Compares n results, reporting the first few mismatches only.
void expect_bits(const Buffer& got, const std::vector<std::uint64_t>& want,
                 const std::vector<std::uint64_t>& a, const std::vector<std::uint64_t>& b,
                 const std::string& what) {
  int reported = 0;
  for (std::size_t i = 0; i < want.size() && reported < 5; ++i) {
    if (got.get(i) != want[i]) {
      ADD_FAILURE() << what << " element " << i << ": op(" << hex(a[i]) << ", " << hex(b[i])
                    << ") = " << hex(got.get(i)) << ", want " << hex(want[i]);
      ++reported;
    }
  }
}

// ---- tests -------------------------------------------------------------------------------------

class ReduceHostTest : public ::testing::TestWithParam<std::tuple<DataType, ReduceOp>> {};

TEST_P(ReduceHostTest, MatchesReferenceOnEveryPathLengthAndAlignment) {
  const auto [type, op] = GetParam();
  constexpr std::size_t kLengths[] = {0, 1, 7, 15, 16, 17, 31, 33, 63, 65, 1000, 4097, 1u << 20};
  for (const std::size_t n : kLengths) {
    const auto a = make_values(type, n, 1000 + n);
    const auto b = make_values(type, n, 2000 + n);
    std::vector<std::uint64_t> want(n);
    for (std::size_t i = 0; i < n; ++i) want[i] = ref_op(type, op, a[i], b[i]);
    for (const HostIsa isa : kAllIsas) {
      if (!host_isa_supported(isa)) continue;
      for (const std::size_t offset : {0u, 1u}) {
        if (n == kLengths[std::size(kLengths) - 1] && offset == 0) continue;  // time: 1 of 2
        const std::string what = std::string(isa_name(isa)) + " n=" + std::to_string(n) +
                                 " offset=" + std::to_string(offset);
        Buffer x(type, n, offset), y(type, n, offset), out(type, n, 1 - offset);
        // dst = op(dst, src)
        x.set(a);
        y.set(b);
        host_kernel(isa, type, op)(x.data(), y.data(), n);
        expect_bits(x, want, a, b, what + " in place");
        // out = op(a, b), out distinct and differently aligned
        x.set(a);
        host_kernel3(isa, type, op)(out.data(), x.data(), y.data(), n);
        expect_bits(out, want, a, b, what + " out of place");
        // out = op(a, b) with out == a
        host_kernel3(isa, type, op)(x.data(), x.data(), y.data(), n);
        expect_bits(x, want, a, b, what + " aliased");
      }
    }
  }
}

TEST_P(ReduceHostTest, DispatchedPathIsBitwiseIdenticalToGeneric) {
  const auto [type, op] = GetParam();
  constexpr std::size_t kN = 100003;
  const auto a = make_values(type, kN, 7);
  const auto b = make_values(type, kN, 8);
  Buffer x(type, kN, 0), y(type, kN, 0), g(type, kN, 0);
  x.set(a);
  y.set(b);
  g.set(a);
  host_kernel(type, op)(x.data(), y.data(), kN);
  host_kernel(HostIsa::generic, type, op)(g.data(), y.data(), kN);
  int reported = 0;
  for (std::size_t i = 0; i < kN && reported < 5; ++i) {
    if (x.get(i) != g.get(i)) {
      ADD_FAILURE() << host_isa() << " vs generic at " << i << ": " << hex(x.get(i)) << " vs "
                    << hex(g.get(i));
      ++reported;
    }
  }
}

std::string param_name(const ::testing::TestParamInfo<ReduceHostTest::ParamType>& info) {
  return std::string(type_name(std::get<0>(info.param))) + "_" + op_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(AllTypesAndOps, ReduceHostTest,
                         ::testing::Combine(::testing::ValuesIn(kAllTypes),
                                            ::testing::ValuesIn(kAllOps)),
                         param_name);

// Every 16-bit pattern against a set of partners, so that each conversion path meets every
// input once: zeros, ones, the extremes, subnormals, NaNs.
TEST(ReduceHost16, EveryPatternAgainstPartners) {
  for (const DataType type : {DataType::float16, DataType::bfloat16}) {
    std::vector<std::uint64_t> a(65536);
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = i;
    for (const std::uint64_t partner : specials(type)) {
      const std::vector<std::uint64_t> b(a.size(), partner);
      for (const ReduceOp op : kAllOps) {
        std::vector<std::uint64_t> want(a.size());
        for (std::size_t i = 0; i < a.size(); ++i) want[i] = ref_op(type, op, a[i], partner);
        for (const HostIsa isa : kAllIsas) {
          if (!host_isa_supported(isa)) continue;
          Buffer x(type, a.size(), 0), y(type, a.size(), 0);
          x.set(a);
          y.set(b);
          host_kernel(isa, type, op)(x.data(), y.data(), a.size());
          expect_bits(x, want, a, b,
                      std::string(type_name(type)) + " " + op_name(op) + " " + isa_name(isa));
        }
      }
    }
  }
}

TEST(ReduceHostDivide, FloatingTypesMatchReference) {
  for (const DataType type :
       {DataType::float32, DataType::float64, DataType::float16, DataType::bfloat16}) {
    for (const std::size_t n : {0u, 1u, 17u, 1000u, 4097u}) {
      for (const int d : {1, 2, 3, 7, 1000}) {
        const auto a = make_values(type, n, 31 * n + d);
        std::vector<std::uint64_t> want(n);
        for (std::size_t i = 0; i < n; ++i) want[i] = ref_divide(type, a[i], d);
        for (const HostIsa isa : kAllIsas) {
          if (!host_isa_supported(isa)) continue;
          Buffer x(type, n, 1);
          x.set(a);
          divide_host(isa, x.data(), n, type, d);
          expect_bits(x, want, a, a,
                      std::string(type_name(type)) + " / " + std::to_string(d) + " " +
                          isa_name(isa) + " n=" + std::to_string(n));
        }
        Buffer x(type, n, 0);  // the dispatched entry point
        x.set(a);
        divide_host(x.data(), n, type, d);
        expect_bits(x, want, a, a, "divide_host");
      }
    }
  }
}

TEST(ReduceHostDivide, RejectsIntegerTypesAndBadDivisors) {
  std::int32_t v[4] = {4, 8, 12, 16};
  for (const DataType type : {DataType::int8, DataType::uint8, DataType::int32, DataType::int64}) {
    EXPECT_THROW(divide_host(v, 1, type, 2), Error) << type_name(type);
  }
  float f[2] = {1.0f, 2.0f};
  EXPECT_THROW(divide_host(f, 2, DataType::float32, 0), Error);
  EXPECT_THROW(divide_host(f, 2, DataType::float32, -2), Error);
  EXPECT_EQ(f[0], 1.0f);
}

TEST(ReduceHostDispatch, ReportsTheWidestSupportedIsa) {
  const std::string isa = host_isa();
  if (host_isa_supported(HostIsa::avx512)) {
    EXPECT_EQ(isa, "avx512");
  } else if (host_isa_supported(HostIsa::avx2)) {
    EXPECT_EQ(isa, "avx2");
  } else {
    EXPECT_EQ(isa, "generic");
  }
  EXPECT_TRUE(host_isa_supported(HostIsa::generic));
  EXPECT_EQ(host_kernel(DataType::float32, ReduceOp::sum),
            host_kernel(host_isa_supported(HostIsa::avx512) ? HostIsa::avx512
                        : host_isa_supported(HostIsa::avx2) ? HostIsa::avx2
                                                            : HostIsa::generic,
                        DataType::float32, ReduceOp::sum));
}

TEST(ReduceHostDispatch, RejectsUnknownEnumerators) {
  EXPECT_THROW(host_kernel(static_cast<DataType>(99), ReduceOp::sum), Error);
  EXPECT_THROW(host_kernel3(DataType::float32, static_cast<ReduceOp>(9)), Error);
}

TEST(ReduceHostDispatch, ReduceHostWrapperUsesTheTable) {
  std::vector<double> d = {1.5, -2.0, 3.0};
  const std::vector<double> s = {0.25, 4.0, -3.0};
  reduce_host(d.data(), s.data(), d.size(), DataType::float64, ReduceOp::sum);
  EXPECT_EQ(d, (std::vector<double>{1.75, 2.0, 0.0}));
}

TEST(ReduceCuda, StubOrDeviceCount) {
  EXPECT_GE(cuda_device_count(), 0);
#if !RINGLET_HAVE_CUDA
  float x = 1.0f;
  EXPECT_THROW(reduce_cuda(&x, &x, 1, DataType::float32, ReduceOp::sum, nullptr), Error);
  EXPECT_EQ(cuda_device_count(), 0);
#endif
}

}  // namespace
}  // namespace ringlet::reduce
