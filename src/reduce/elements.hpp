// SPDX-License-Identifier: Apache-2.0
// The element functions of every reduce path: one definition, compiled by g++ for the host
// kernels (host.cpp) and by nvcc for the CUDA kernels (cuda.cu), so that the "same bits on every
// path" promise of reduce.hpp holds by construction rather than by keeping two copies in step.
//
// Only scalar functions live here; the loops, blocks and vector paths stay with their kernels.
// Everything is free of the standard library's host-only functions (bit casts go through
// __builtin_bit_cast, which both compilers provide), so it compiles as device code unchanged.
#pragma once

#include <cstdint>
#include <type_traits>

#include "include/ringlet/ringlet.hpp"

#if defined(__CUDACC__)
#define RINGLET_HD __host__ __device__
#else
#define RINGLET_HD
#endif

namespace ringlet::reduce::elements {

template <class To, class From>
RINGLET_HD constexpr To bit_cast(From from) {
  static_assert(sizeof(To) == sizeof(From));
  return __builtin_bit_cast(To, from);
}

// The canonical quiet NaN of float32 (0x7FC00000) or float64 (0x7FF8000000000000).
template <class F>
RINGLET_HD F canonical_nan() {
  if constexpr (sizeof(F) == 4) {
    return bit_cast<F>(std::uint32_t{0x7FC00000u});
  } else {
    return bit_cast<F>(std::uint64_t{0x7FF8000000000000ull});
  }
}

// The element function. C is the compute type: float for 16-bit storage types.
template <class C, ReduceOp Op>
RINGLET_HD [[gnu::always_inline]] inline C apply(C a, C b) {
  if constexpr (std::is_floating_point_v<C>) {
    C r;
    if constexpr (Op == ReduceOp::sum || Op == ReduceOp::avg) {
      r = a + b;
      return r != r ? canonical_nan<C>() : r;
    } else if constexpr (Op == ReduceOp::prod) {
      r = a * b;
      return r != r ? canonical_nan<C>() : r;
    } else {
      // Equal operands have equal bits except for +-0: OR of the bits picks -0 for min, AND
      // picks +0 for max. Written with selects and bit operations, which GCC vectorises.
      using U = std::conditional_t<sizeof(C) == 4, std::uint32_t, std::uint64_t>;
      const U ua = bit_cast<U>(a);
      const U ub = bit_cast<U>(b);
      if constexpr (Op == ReduceOp::min) {
        r = a < b ? a : (b < a ? b : bit_cast<C>(ua | ub));
      } else {
        r = a > b ? a : (b > a ? b : bit_cast<C>(ua & ub));
      }
    }
    return ((a != a) | (b != b)) ? canonical_nan<C>() : r;
  } else {
    // Unsigned arithmetic wraps without UB; at least 32 bits so that promotion stays unsigned.
    using U = std::conditional_t<(sizeof(C) < 4), std::uint32_t, std::make_unsigned_t<C>>;
    if constexpr (Op == ReduceOp::sum || Op == ReduceOp::avg) {
      return static_cast<C>(static_cast<U>(a) + static_cast<U>(b));
    } else if constexpr (Op == ReduceOp::prod) {
      return static_cast<C>(static_cast<U>(a) * static_cast<U>(b));
    } else if constexpr (Op == ReduceOp::min) {
      return b < a ? b : a;
    } else {
      return a < b ? b : a;
    }
  }
}

// x / d for avg, with a NaN result made canonical.
template <class C>
RINGLET_HD [[gnu::always_inline]] inline C divide_one(C x, C d) {
  C r = x / d;
  return r != r ? canonical_nan<C>() : r;
}

// bfloat16: the top half of a float32. Narrowing rounds to nearest even; a canonical NaN
// (0x7FC00000, the only NaN apply() produces) narrows to 0x7FC0 by the same formula.
RINGLET_HD [[gnu::always_inline]] inline float bf16_to_float(std::uint16_t h) {
  return bit_cast<float>(std::uint32_t{h} << 16);
}

RINGLET_HD [[gnu::always_inline]] inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t x = bit_cast<std::uint32_t>(f);
  x += 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>(x >> 16);
}

// IEEE binary16 in software, bit-compatible with F16C (vcvtph2ps / vcvtps2ph, nearest even).
// The CUDA kernels use it too rather than __half2float/__float2half_rn, whose NaN patterns
// differ from the host's.
RINGLET_HD inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1Fu;
  const std::uint32_t m = h & 0x3FFu;
  if (e == 0x1F) {  // inf, or NaN made quiet
    return bit_cast<float>(sign | 0x7F800000u | (m << 13) | (m != 0 ? 0x400000u : 0u));
  }
  if (e == 0) {  // zero or subnormal: m * 2^-24, exact in float32
    const float v = static_cast<float>(m) * 0x1p-24f;
    return sign != 0 ? -v : v;
  }
  return bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
}

RINGLET_HD inline std::uint16_t float_to_half(float f) {
  const std::uint32_t x = bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) {  // NaN: quiet, top payload bits kept
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
  }
  if (ax >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520: inf
  if (ax >= 0x38800000u) {  // a normal half: rebias the exponent, round 13 bits away
    std::uint32_t r = ax - (112u << 23);
    r += 0xFFFu + ((r >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | (r >> 13));
  }
  // A subnormal half (or zero): round m * 2^(e-150) to a multiple of 2^-24.
  const std::uint32_t e = ax >> 23;
  const std::uint32_t m = e == 0 ? ax : ((ax & 0x7FFFFFu) | 0x800000u);
  const std::uint32_t shift = 126u - (e == 0 ? 1u : e);  // >= 14
  if (shift >= 25) return sign;
  std::uint32_t q = m >> shift;
  const std::uint32_t rem = m & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (q & 1u) != 0)) ++q;
  return static_cast<std::uint16_t>(sign | q);
}

}  // namespace ringlet::reduce::elements
