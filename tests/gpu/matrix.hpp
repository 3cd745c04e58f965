// SPDX-License-Identifier: Apache-2.0
// The GPU tests' collective matrix: every data type and reduce op, and exact small values
// (element i of rank r) with a typed store, shared by the emulated-device and CUDA tests.
#pragma once

#include <cstddef>
#include <cstdint>

#include "include/ringlet/ringlet.hpp"
#include "src/reduce/elements.hpp"

namespace ringlet::testing {

constexpr DataType kTypes[] = {DataType::float32,  DataType::float64, DataType::float16,
                               DataType::bfloat16, DataType::int8,    DataType::uint8,
                               DataType::int32,    DataType::int64};
constexpr ReduceOp kOps[] = {ReduceOp::sum, ReduceOp::prod, ReduceOp::min, ReduceOp::max,
                             ReduceOp::avg};

// Exact small values: element i of rank r. Sums of up to 4 ranks, products of {1, 2} and the
// extremes stay exact in every type (bfloat16 holds integers up to 256 exactly).
inline long double value_of(DataType t, ReduceOp op, int r, std::size_t i) {
  if (op == ReduceOp::prod)
    return static_cast<long double>(1 + (i + static_cast<std::size_t>(r)) % 2);
  const long double v = static_cast<long double>((i * 7 + static_cast<std::size_t>(r) * 13) % 50);
  const bool is_signed = t != DataType::uint8;
  return is_signed && (i % 3 == 0) ? -v : v;
}

inline void store(DataType t, void* p, std::size_t i, long double v) {
  switch (t) {
    case DataType::float32:
      static_cast<float*>(p)[i] = static_cast<float>(v);
      break;
    case DataType::float64:
      static_cast<double*>(p)[i] = static_cast<double>(v);
      break;
    case DataType::float16:
      static_cast<std::uint16_t*>(p)[i] = reduce::elements::float_to_half(static_cast<float>(v));
      break;
    case DataType::bfloat16:
      static_cast<std::uint16_t*>(p)[i] = reduce::elements::float_to_bf16(static_cast<float>(v));
      break;
    case DataType::int8:
      static_cast<std::int8_t*>(p)[i] = static_cast<std::int8_t>(v);
      break;
    case DataType::uint8:
      static_cast<std::uint8_t*>(p)[i] = static_cast<std::uint8_t>(v);
      break;
    case DataType::int32:
      static_cast<std::int32_t*>(p)[i] = static_cast<std::int32_t>(v);
      break;
    case DataType::int64:
      static_cast<std::int64_t*>(p)[i] = static_cast<std::int64_t>(v);
      break;
  }
}

}  // namespace ringlet::testing
