// SPDX-License-Identifier: Apache-2.0
// Test inputs whose reductions are exact in every DataType, and a serial reference for them.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "include/ringlet/ringlet.hpp"

namespace ringlet::testing {

// Every element type a collective carries, for loops over all of them.
using AllTypes = std::tuple<float, double, Half, BFloat16, std::int8_t, std::uint8_t, std::int32_t,
                            std::int64_t>;
inline constexpr ReduceOp kAllOps[] = {ReduceOp::sum, ReduceOp::prod, ReduceOp::min, ReduceOp::max,
                                       ReduceOp::avg};

template <class F, class... T>
void for_each_type_impl(F&& f, std::tuple<T...>*) {
  (f(static_cast<T*>(nullptr)), ...);
}
// Calls f(static_cast<T*>(nullptr)) for every element type T.
template <class F>
void for_each_type(F&& f) {
  for_each_type_impl(f, static_cast<AllTypes*>(nullptr));
}

template <class T>
constexpr bool kIsFloat =
    std::is_floating_point_v<T> || std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;
template <class T>
constexpr bool kIsSigned = kIsFloat<T> || std::is_signed_v<T>;

// IEEE binary16 <-> float32, written here independently of the library's kernels.
inline float half_bits_to_float(std::uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant == 0 ? INFINITY : NAN;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400), exp - 25);
  }
  return sign ? -v : v;
}

// Rounds to nearest even. Test values are small integers, which need no rounding, but the
// conversion is general.
inline std::uint16_t float_to_half_bits(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(a)) return static_cast<std::uint16_t>(sign | 0x7e00u);
  if (a >= 65520.0f) return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (a == 0.0f) return sign;
  int e = 0;
  (void)std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  // Quantum: 2^(e-11) for normals, 2^-24 for subnormals.
  const int q = std::max(e - 11, -24);
  const double scaled = std::nearbyint(std::ldexp(static_cast<double>(a), -q));  // RNE
  const auto m = static_cast<std::uint32_t>(scaled);
  if (q == -24 && m < 0x400u) return static_cast<std::uint16_t>(sign | m);
  // Normal: value = m * 2^q, m in [1024, 2048]; renormalise when rounding carried.
  int exp = q + 25;
  std::uint32_t mm = m;
  if (mm == 0x800u) {
    mm = 0x400u;
    ++exp;
  }
  return static_cast<std::uint16_t>(sign | (exp << 10) | (mm & 0x3ffu));
}

inline float bf16_bits_to_float(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

inline std::uint16_t float_to_bf16_bits(float f) {
  std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if (std::isnan(f)) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  const std::uint32_t lsb = (x >> 16) & 1u;
  x += 0x7fffu + lsb;
  return static_cast<std::uint16_t>(x >> 16);
}

// Exact value <-> storage.
template <class T>
T from_value(long double v) {
  if constexpr (std::is_same_v<T, Half>) {
    return Half{float_to_half_bits(static_cast<float>(v))};
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    return BFloat16{float_to_bf16_bits(static_cast<float>(v))};
  } else {
    return static_cast<T>(v);
  }
}

template <class T>
long double to_value(T x) {
  if constexpr (std::is_same_v<T, Half>) {
    return half_bits_to_float(x.bits);
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    return bf16_bits_to_float(x.bits);
  } else {
    return static_cast<long double>(x);
  }
}

template <class T>
std::string type_name() {
  return std::string(to_string(data_type_of<T>()));
}

// Rank r's element i for a reduction with `op` over `size` ranks. Chosen so that every
// partial result, in any order, is an exactly representable small integer in every type:
// sums stay within [-40, 88], products within [-8, 8], and avg inputs sum to a multiple of
// `size` (so the quotient is exact too).
inline long double input_value(ReduceOp op, bool is_signed, int size, int r, std::size_t i) {
  const auto ii = static_cast<long long>(i % 1000003);
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::min:
    case ReduceOp::max: {
      long long v = (ii * 7 + r * 3) % 11 + 1;  // 1..11
      return static_cast<long double>(is_signed ? v - 6 : v);
    }
    case ReduceOp::prod: {
      long long v = (ii + r) % 3 == 0 ? 2 : 1;
      if (is_signed && (ii * 3 + r) % 7 == 0) v = -v;
      return static_cast<long double>(v);
    }
    case ReduceOp::avg: {
      // base + d(r), where d pairs ranks as (+1, -1) and a last odd rank gets 0.
      long long base = (ii * 5) % 9 + 2;  // 2..10
      long long d = 0;
      if (!(size % 2 == 1 && r == size - 1)) d = r % 2 == 0 ? 1 : -1;
      return static_cast<long double>(base + d);
    }
  }
  return 0;
}

// One step of the serial reduction: acc op v (avg folds as sum; the caller divides).
inline long double fold(ReduceOp op, long double acc, long double v) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg:
      return acc + v;
    case ReduceOp::prod:
      return acc * v;
    case ReduceOp::min:
      return std::min(acc, v);
    case ReduceOp::max:
      return std::max(acc, v);
  }
  return acc;
}

inline long double reference_value(ReduceOp op, bool is_signed, int size, std::size_t i) {
  long double acc = input_value(op, is_signed, size, 0, i);
  for (int r = 1; r < size; ++r) {
    const long double v = input_value(op, is_signed, size, r, i);
    acc = fold(op, acc, v);
  }
  if (op == ReduceOp::avg) acc /= size;
  return acc;
}

template <class T>
void fill_input(std::span<T> buf, ReduceOp op, int size, int rank) {
  for (std::size_t i = 0; i < buf.size(); ++i) {
    buf[i] = from_value<T>(input_value(op, kIsSigned<T>, size, rank, i));
  }
}

// Finds the first element of `got` that differs bitwise from `want`; -1 if none.
template <class T>
long long first_difference(std::span<const T> got, std::span<const T> want) {
  const std::size_t n = std::min(got.size(), want.size());
  for (std::size_t i = 0; i < n; ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) return static_cast<long long>(i);
  }
  return got.size() == want.size() ? -1 : static_cast<long long>(n);
}

// FNV-1a over bytes, folded into `h`: ranks compare one running hash of all their outputs.
inline std::uint64_t fnv1a(std::uint64_t h, const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}
inline constexpr std::uint64_t kFnvSeed = 0xcbf29ce484222325ull;

}  // namespace ringlet::testing
