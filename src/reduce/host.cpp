// SPDX-License-Identifier: Apache-2.0
// Host reduce kernels: one template per (type, op), compiled for x86-64, AVX2 and AVX-512.
//
// Every path runs the same element function (apply() in elements.hpp, shared with the CUDA
// kernels) in the same order of operations, so the bits agree between paths; only the width of
// the registers differs. 16-bit floats go through L1-resident float32 blocks: widen, apply,
// narrow with round-to-nearest-even. The loops are cut into fixed 128-byte chunks so that GCC
// vectorises them even at -O2, where its cost model refuses loops that need a scalar epilogue.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "src/reduce/elements.hpp"
#include "src/reduce/reduce.hpp"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "src/common/check.hpp"

namespace ringlet::reduce {
namespace {

constexpr std::size_t kTypes = 8;
constexpr std::size_t kOps = 5;
constexpr std::size_t kChunkBytes = 128;  // one unrolled step: 2 AVX-512 or 4 AVX2 vectors
constexpr std::size_t kBlock16 = 512;     // float32 scratch elements per 16-bit block (2 KiB)

// The scalar element functions, shared with the CUDA kernels (elements.hpp).
using elements::apply;
using elements::bf16_to_float;
using elements::divide_one;
using elements::float_to_bf16;
using elements::float_to_half;
using elements::half_to_float;

// out[i] = op(a[i], b[i]) for non-overlapping arrays.
template <class C, ReduceOp Op>
[[gnu::always_inline]] inline void loop3(C* __restrict out, const C* __restrict a,
                                         const C* __restrict b, std::size_t n) {
  constexpr std::size_t kChunk = kChunkBytes / sizeof(C);
  std::size_t i = 0;
  for (; i + kChunk <= n; i += kChunk) {
    for (std::size_t j = 0; j < kChunk; ++j) out[i + j] = apply<C, Op>(a[i + j], b[i + j]);
  }
  for (; i < n; ++i) out[i] = apply<C, Op>(a[i], b[i]);
}

// dst[i] = op(dst[i], src[i]) for non-overlapping arrays.
template <class C, ReduceOp Op>
[[gnu::always_inline]] inline void loop2(C* __restrict dst, const C* __restrict src,
                                         std::size_t n) {
  constexpr std::size_t kChunk = kChunkBytes / sizeof(C);
  std::size_t i = 0;
  for (; i + kChunk <= n; i += kChunk) {
    for (std::size_t j = 0; j < kChunk; ++j) dst[i + j] = apply<C, Op>(dst[i + j], src[i + j]);
  }
  for (; i < n; ++i) dst[i] = apply<C, Op>(dst[i], src[i]);
}

template <class C>
[[gnu::always_inline]] inline void divide_loop(C* __restrict data, C d, std::size_t n) {
  constexpr std::size_t kChunk = kChunkBytes / sizeof(C);
  std::size_t i = 0;
  for (; i + kChunk <= n; i += kChunk) {
    for (std::size_t j = 0; j < kChunk; ++j) data[i + j] = divide_one(data[i + j], d);
  }
  for (; i < n; ++i) data[i] = divide_one(data[i], d);
}

// ---- 16-bit conversions ----------------------------------------------------------------------

[[gnu::always_inline]] inline void widen_bf16(const std::uint16_t* __restrict s,
                                              float* __restrict f, std::size_t m) {
  constexpr std::size_t kChunk = kChunkBytes / sizeof(float);
  std::size_t j = 0;
  for (; j + kChunk <= m; j += kChunk) {
    for (std::size_t k = j; k < j + kChunk; ++k) f[k] = bf16_to_float(s[k]);
  }
  for (; j < m; ++j) f[j] = bf16_to_float(s[j]);
}

[[gnu::always_inline]] inline void narrow_bf16(const float* __restrict f,
                                               std::uint16_t* __restrict d, std::size_t m) {
  constexpr std::size_t kChunk = kChunkBytes / sizeof(float);
  std::size_t j = 0;
  for (; j + kChunk <= m; j += kChunk) {
    for (std::size_t k = j; k < j + kChunk; ++k) d[k] = float_to_bf16(f[k]);
  }
  for (; j < m; ++j) d[j] = float_to_bf16(f[j]);
}

void widen_f16_generic(const std::uint16_t* s, float* f, std::size_t m) {
  for (std::size_t j = 0; j < m; ++j) f[j] = half_to_float(s[j]);
}

void narrow_f16_generic(const float* f, std::uint16_t* d, std::size_t m) {
  for (std::size_t j = 0; j < m; ++j) d[j] = float_to_half(f[j]);
}

#if defined(__x86_64__)
// F16C: full vectors, then the tail through a padded copy, so every element takes the same
// instruction.
[[gnu::target("avx2,f16c")]] void widen_f16_avx2(const std::uint16_t* s, float* f, std::size_t m) {
  std::size_t j = 0;
  for (; j + 8 <= m; j += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + j));
    _mm256_storeu_ps(f + j, _mm256_cvtph_ps(h));
  }
  if (j < m) {
    alignas(32) std::uint16_t hs[8] = {};
    alignas(32) float fs[8];
    std::memcpy(hs, s + j, (m - j) * sizeof(std::uint16_t));
    _mm256_store_ps(fs, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(hs))));
    std::memcpy(f + j, fs, (m - j) * sizeof(float));
  }
}

[[gnu::target("avx2,f16c")]] void narrow_f16_avx2(const float* f, std::uint16_t* d, std::size_t m) {
  std::size_t j = 0;
  for (; j + 8 <= m; j += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(f + j), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + j), h);
  }
  if (j < m) {
    alignas(32) float fs[8] = {};
    alignas(32) std::uint16_t hs[8];
    std::memcpy(fs, f + j, (m - j) * sizeof(float));
    _mm_store_si128(reinterpret_cast<__m128i*>(hs),
                    _mm256_cvtps_ph(_mm256_load_ps(fs), _MM_FROUND_TO_NEAREST_INT));
    std::memcpy(d + j, hs, (m - j) * sizeof(std::uint16_t));
  }
}

// The maskz forms avoid GCC 12's false -Wmaybe-uninitialized in the unmasked intrinsics.
[[gnu::target("avx512f,avx512bw,avx512vl,avx512dq,f16c")]] void widen_f16_avx512(
    const std::uint16_t* s, float* f, std::size_t m) {
  std::size_t j = 0;
  for (; j + 16 <= m; j += 16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + j));
    _mm512_storeu_ps(f + j, _mm512_maskz_cvtph_ps(0xFFFF, h));
  }
  if (j < m) {
    const auto mask = static_cast<__mmask16>((1u << (m - j)) - 1u);
    __m256i h = _mm256_maskz_loadu_epi16(mask, s + j);
    _mm512_mask_storeu_ps(f + j, mask, _mm512_maskz_cvtph_ps(mask, h));
  }
}

[[gnu::target("avx512f,avx512bw,avx512vl,avx512dq,f16c")]] void narrow_f16_avx512(const float* f,
                                                                                  std::uint16_t* d,
                                                                                  std::size_t m) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  std::size_t j = 0;
  for (; j + 16 <= m; j += 16) {
    __m256i h = _mm512_maskz_cvtps_ph(0xFFFF, _mm512_loadu_ps(f + j), kRound);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + j), h);
  }
  if (j < m) {
    const auto mask = static_cast<__mmask16>((1u << (m - j)) - 1u);
    __m256i h = _mm512_maskz_cvtps_ph(mask, _mm512_maskz_loadu_ps(mask, f + j), kRound);
    _mm256_mask_storeu_epi16(d + j, mask, h);
  }
}
#endif

// ---- kernels per storage type ------------------------------------------------------------------

// Which F16C code a family uses: 0 generic (software), 1 AVX2, 2 AVX-512.
template <int kF16>
[[gnu::always_inline]] inline void widen_f16(const std::uint16_t* s, float* f, std::size_t m) {
#if defined(__x86_64__)
  if constexpr (kF16 == 1) {
    widen_f16_avx2(s, f, m);
    return;
  } else if constexpr (kF16 == 2) {
    widen_f16_avx512(s, f, m);
    return;
  }
#endif
  widen_f16_generic(s, f, m);
}

template <int kF16>
[[gnu::always_inline]] inline void narrow_f16(const float* f, std::uint16_t* d, std::size_t m) {
#if defined(__x86_64__)
  if constexpr (kF16 == 1) {
    narrow_f16_avx2(f, d, m);
    return;
  } else if constexpr (kF16 == 2) {
    narrow_f16_avx512(f, d, m);
    return;
  }
#endif
  narrow_f16_generic(f, d, m);
}

template <class T>
constexpr bool kIs16 = std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;

template <class T, int kF16>
[[gnu::always_inline]] inline void widen16(const std::uint16_t* s, float* f, std::size_t m) {
  if constexpr (std::is_same_v<T, Half>) {
    widen_f16<kF16>(s, f, m);
  } else {
    widen_bf16(s, f, m);
  }
}

template <class T, int kF16>
[[gnu::always_inline]] inline void narrow16(const float* f, std::uint16_t* d, std::size_t m) {
  if constexpr (std::is_same_v<T, Half>) {
    narrow_f16<kF16>(f, d, m);
  } else {
    narrow_bf16(f, d, m);
  }
}

// out = op(a, b) on 16-bit floats; out may equal a (each block is read before it is written).
template <class T, ReduceOp Op, int kF16>
[[gnu::always_inline]] inline void run16(std::uint16_t* out, const std::uint16_t* a,
                                         const std::uint16_t* b, std::size_t n) {
  alignas(64) float fa[kBlock16];
  alignas(64) float fb[kBlock16];
  for (std::size_t i = 0; i < n; i += kBlock16) {
    const std::size_t m = std::min(kBlock16, n - i);
    widen16<T, kF16>(a + i, fa, m);
    widen16<T, kF16>(b + i, fb, m);
    loop2<float, Op>(fa, fb, m);
    narrow16<T, kF16>(fa, out + i, m);
  }
}

template <class T, int kF16>
[[gnu::always_inline]] inline void divide16(std::uint16_t* data, float d, std::size_t n) {
  alignas(64) float f[kBlock16];
  for (std::size_t i = 0; i < n; i += kBlock16) {
    const std::size_t m = std::min(kBlock16, n - i);
    widen16<T, kF16>(data + i, f, m);
    divide_loop<float>(f, d, m);
    narrow16<T, kF16>(f, data + i, m);
  }
}

template <class T, ReduceOp Op, int kF16>
[[gnu::always_inline]] inline void body2(void* dst, const void* src, std::size_t n) {
  if constexpr (kIs16<T>) {
    auto* d = static_cast<std::uint16_t*>(dst);
    run16<T, Op, kF16>(d, d, static_cast<const std::uint16_t*>(src), n);
  } else {
    loop2<T, Op>(static_cast<T*>(dst), static_cast<const T*>(src), n);
  }
}

template <class T, ReduceOp Op, int kF16>
[[gnu::always_inline]] inline void body3(void* out, const void* a, const void* b, std::size_t n) {
  if constexpr (kIs16<T>) {
    run16<T, Op, kF16>(static_cast<std::uint16_t*>(out), static_cast<const std::uint16_t*>(a),
                       static_cast<const std::uint16_t*>(b), n);
  } else if (out == a) {
    loop2<T, Op>(static_cast<T*>(out), static_cast<const T*>(b), n);
  } else {
    loop3<T, Op>(static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b), n);
  }
}

template <class T, int kF16>
[[gnu::always_inline]] inline void body_divide(void* data, std::size_t n, int divisor) {
  if constexpr (kIs16<T>) {
    divide16<T, kF16>(static_cast<std::uint16_t*>(data), static_cast<float>(divisor), n);
  } else if constexpr (std::is_floating_point_v<T>) {
    divide_loop<T>(static_cast<T*>(data), static_cast<T>(divisor), n);
  }
}

using DivideKernel = void (*)(void* data, std::size_t n, int divisor);

// One family of instantiations per instruction set. The target attribute makes GCC compile the
// always-inline bodies above for that ISA.
struct GenericFamily {
  template <class T, ReduceOp Op>
  static void k2(void* dst, const void* src, std::size_t n) {
    body2<T, Op, 0>(dst, src, n);
  }
  template <class T, ReduceOp Op>
  static void k3(void* out, const void* a, const void* b, std::size_t n) {
    body3<T, Op, 0>(out, a, b, n);
  }
  template <class T>
  static void div(void* data, std::size_t n, int divisor) {
    body_divide<T, 0>(data, n, divisor);
  }
};

#if defined(__x86_64__)
struct Avx2Family {
  template <class T, ReduceOp Op>
  [[gnu::target("avx2,f16c")]] static void k2(void* dst, const void* src, std::size_t n) {
    body2<T, Op, 1>(dst, src, n);
  }
  template <class T, ReduceOp Op>
  [[gnu::target("avx2,f16c")]] static void k3(void* out, const void* a, const void* b,
                                              std::size_t n) {
    body3<T, Op, 1>(out, a, b, n);
  }
  template <class T>
  [[gnu::target("avx2,f16c")]] static void div(void* data, std::size_t n, int divisor) {
    body_divide<T, 1>(data, n, divisor);
  }
};

// 512-bit vectors in the AVX-512 kernels: GCC's target option, clang's attribute.
#if defined(__clang__)
#define RINGLET_AVX512_KERNEL \
  [[gnu::target("avx512f,avx512bw,avx512vl,avx512dq,f16c"), clang::min_vector_width(512)]]
#else
#define RINGLET_AVX512_KERNEL \
  [[gnu::target("avx512f,avx512bw,avx512vl,avx512dq,f16c,prefer-vector-width=512")]]
#endif

struct Avx512Family {
  template <class T, ReduceOp Op>
  RINGLET_AVX512_KERNEL static void k2(void* dst, const void* src, std::size_t n) {
    body2<T, Op, 2>(dst, src, n);
  }
  template <class T, ReduceOp Op>
  RINGLET_AVX512_KERNEL static void k3(void* out, const void* a, const void* b, std::size_t n) {
    body3<T, Op, 2>(out, a, b, n);
  }
  template <class T>
  RINGLET_AVX512_KERNEL static void div(void* data, std::size_t n, int divisor) {
    body_divide<T, 2>(data, n, divisor);
  }
};
#endif

struct Table {
  HostKernel k2[kTypes][kOps];
  HostKernel3 k3[kTypes][kOps];
  DivideKernel div[kTypes];
  const char* name;
};

template <class F, class T>
constexpr void fill_type(Table& t, DataType type) {
  const auto i = static_cast<std::size_t>(type);
  t.k2[i][0] = &F::template k2<T, ReduceOp::sum>;
  t.k2[i][1] = &F::template k2<T, ReduceOp::prod>;
  t.k2[i][2] = &F::template k2<T, ReduceOp::min>;
  t.k2[i][3] = &F::template k2<T, ReduceOp::max>;
  t.k2[i][4] = &F::template k2<T, ReduceOp::avg>;
  t.k3[i][0] = &F::template k3<T, ReduceOp::sum>;
  t.k3[i][1] = &F::template k3<T, ReduceOp::prod>;
  t.k3[i][2] = &F::template k3<T, ReduceOp::min>;
  t.k3[i][3] = &F::template k3<T, ReduceOp::max>;
  t.k3[i][4] = &F::template k3<T, ReduceOp::avg>;
  t.div[i] = &F::template div<T>;
}

template <class F>
constexpr Table make_table(const char* name) {
  Table t{};
  fill_type<F, float>(t, DataType::float32);
  fill_type<F, double>(t, DataType::float64);
  fill_type<F, Half>(t, DataType::float16);
  fill_type<F, BFloat16>(t, DataType::bfloat16);
  fill_type<F, std::int8_t>(t, DataType::int8);
  fill_type<F, std::uint8_t>(t, DataType::uint8);
  fill_type<F, std::int32_t>(t, DataType::int32);
  fill_type<F, std::int64_t>(t, DataType::int64);
  t.name = name;
  return t;
}

constexpr Table kGeneric = make_table<GenericFamily>("generic");
#if defined(__x86_64__)
constexpr Table kAvx2 = make_table<Avx2Family>("avx2");
constexpr Table kAvx512 = make_table<Avx512Family>("avx512");
#endif

#if defined(__x86_64__)
// F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know "f16c".
bool has_f16c() noexcept {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
}
#endif

bool supported(HostIsa isa) noexcept {
#if defined(__x86_64__)
  switch (isa) {
    case HostIsa::generic:
      return true;
    case HostIsa::avx2:
      return __builtin_cpu_supports("avx2") && has_f16c();
    case HostIsa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && has_f16c();
  }
  return false;
#else
  return isa == HostIsa::generic;
#endif
}

const Table& table_of(HostIsa isa) {
  RINGLET_CHECK(supported(isa), "this CPU cannot run the ", static_cast<int>(isa),
                " host reduce kernels");
#if defined(__x86_64__)
  if (isa == HostIsa::avx512) return kAvx512;
  if (isa == HostIsa::avx2) return kAvx2;
#endif
  return kGeneric;
}

// Chosen once per process: the widest instruction set this CPU has.
const Table& active() {
  static const Table& table = supported(HostIsa::avx512) ? table_of(HostIsa::avx512)
                              : supported(HostIsa::avx2) ? table_of(HostIsa::avx2)
                                                         : table_of(HostIsa::generic);
  return table;
}

std::size_t index_of(DataType type) {
  const auto i = static_cast<std::size_t>(type);
  RINGLET_CHECK(i < kTypes, "unknown DataType ", i);
  return i;
}

std::size_t index_of(ReduceOp op) {
  const auto i = static_cast<std::size_t>(op);
  RINGLET_CHECK(i < kOps, "unknown ReduceOp ", i);
  return i;
}

void divide_with(const Table& t, void* data, std::size_t n, DataType type, int divisor) {
  RINGLET_CHECK(is_floating(type), "divide_host: DataType ", static_cast<int>(type),
                " is not a floating-point type");
  RINGLET_CHECK(divisor > 0, "divide_host: divisor ", divisor, " must be positive");
  t.div[index_of(type)](data, n, divisor);
}

}  // namespace

HostKernel host_kernel(DataType type, ReduceOp op) {
  return active().k2[index_of(type)][index_of(op)];
}

HostKernel3 host_kernel3(DataType type, ReduceOp op) {
  return active().k3[index_of(type)][index_of(op)];
}

void divide_host(void* data, std::size_t n, DataType type, int divisor) {
  divide_with(active(), data, n, type, divisor);
}

const char* host_isa() noexcept { return active().name; }

bool host_isa_supported(HostIsa isa) noexcept { return supported(isa); }

HostKernel host_kernel(HostIsa isa, DataType type, ReduceOp op) {
  return table_of(isa).k2[index_of(type)][index_of(op)];
}

HostKernel3 host_kernel3(HostIsa isa, DataType type, ReduceOp op) {
  return table_of(isa).k3[index_of(type)][index_of(op)];
}

void divide_host(HostIsa isa, void* data, std::size_t n, DataType type, int divisor) {
  divide_with(table_of(isa), data, n, type, divisor);
}

}  // namespace ringlet::reduce
