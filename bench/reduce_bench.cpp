// SPDX-License-Identifier: Apache-2.0
// Microbenchmarks of the host reduce kernels against memcpy, cold (flushed) and in cache.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "src/reduce/reduce.hpp"

namespace {

using ringlet::DataType;
using ringlet::ReduceOp;

constexpr std::size_t kCold = std::size_t{64} << 20;  // bytes per buffer
constexpr std::size_t kHot = std::size_t{256} << 10;

// Evicts a buffer from every cache level, so that the next pass reads it from DRAM. The LLC
// of this VM reports 480 MiB, more than the buffers, so size alone does not make them cold.
void flush(const void* p, std::size_t bytes) {
#if defined(__x86_64__)
  const auto* c = static_cast<const char*>(p);
  for (std::size_t i = 0; i < bytes; i += 64) _mm_clflush(c + i);
  _mm_mfence();
#else
  (void)p;
  (void)bytes;
#endif
}

std::size_t element_bytes(DataType type) {
  switch (type) {
    case DataType::float64:
    case DataType::int64:
      return 8;
    case DataType::float32:
    case DataType::int32:
      return 4;
    case DataType::float16:
    case DataType::bfloat16:
      return 2;
    default:
      return 1;
  }
}

// Buffers filled with small values, so that sums stay finite and exact (no NaN/denormal paths).
std::vector<std::byte> filled(std::size_t bytes, DataType type) {
  std::vector<std::byte> v(bytes);
  switch (type) {
    case DataType::float32: {
      auto* f = reinterpret_cast<float*>(v.data());
      for (std::size_t i = 0; i < bytes / 4; ++i) f[i] = static_cast<float>(i % 7);
      break;
    }
    case DataType::float64: {
      auto* f = reinterpret_cast<double*>(v.data());
      for (std::size_t i = 0; i < bytes / 8; ++i) f[i] = static_cast<double>(i % 7);
      break;
    }
    case DataType::float16: {
      auto* h = reinterpret_cast<std::uint16_t*>(v.data());
      for (std::size_t i = 0; i < bytes / 2; ++i) h[i] = i % 2 != 0 ? 0x3C00 : 0x0000;  // 1, 0
      break;
    }
    case DataType::bfloat16: {
      auto* h = reinterpret_cast<std::uint16_t*>(v.data());
      for (std::size_t i = 0; i < bytes / 2; ++i) h[i] = i % 2 != 0 ? 0x3F80 : 0x0000;
      break;
    }
    default:
      for (std::size_t i = 0; i < bytes; ++i) v[i] = static_cast<std::byte>(i % 3);
  }
  return v;
}

// memcpy: counts read + write, 2 x size per pass.
void bm_memcpy(benchmark::State& state, std::size_t bytes, bool cold) {
  auto src = filled(bytes, DataType::uint8);
  auto dst = filled(bytes, DataType::uint8);
  for (auto _ : state) {
    if (cold) {
      state.PauseTiming();
      flush(src.data(), bytes);
      flush(dst.data(), bytes);
      state.ResumeTiming();
    }
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 2 * bytes));
}

// dst = dst + src in place: counts 2 reads + 1 write, 3 x size per pass. Values stay finite
// because every pass adds src again (exact small integers, far from overflow in one run).
void bm_reduce(benchmark::State& state, DataType type, ReduceOp op, std::size_t bytes, bool cold) {
  auto src = filled(bytes, type);
  auto dst = filled(bytes, type);
  const std::size_t n = bytes / element_bytes(type);
  const auto kernel = ringlet::reduce::host_kernel(type, op);
  for (auto _ : state) {
    if (cold) {
      state.PauseTiming();
      flush(src.data(), bytes);
      flush(dst.data(), bytes);
      state.ResumeTiming();
    }
    kernel(dst.data(), src.data(), n);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 3 * bytes));
  state.SetLabel(ringlet::reduce::host_isa());
}

void register_all() {
  struct Case {
    const char* name;
    DataType type;
  };
  constexpr Case kCases[] = {{"float32", DataType::float32},
                             {"bfloat16", DataType::bfloat16},
                             {"float16", DataType::float16},
                             {"float64", DataType::float64},
                             {"int32", DataType::int32}};
  for (const bool cold : {true, false}) {
    const std::size_t bytes = cold ? kCold : kHot;
    const std::string suffix = cold ? "/64MiB/cold" : "/256KiB/hot";
    benchmark::RegisterBenchmark(("memcpy" + suffix).c_str(), bm_memcpy, bytes, cold)
        ->UseRealTime();
    for (const Case& c : kCases) {
      benchmark::RegisterBenchmark((std::string("sum_") + c.name + suffix).c_str(), bm_reduce,
                                   c.type, ReduceOp::sum, bytes, cold)
          ->UseRealTime();
    }
    benchmark::RegisterBenchmark(("max_float32" + suffix).c_str(), bm_reduce, DataType::float32,
                                 ReduceOp::max, bytes, cold)
        ->UseRealTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
