// SPDX-License-Identifier: Apache-2.0
// Small value helpers of the public API: version, element sizes and kinds, names.
#include "include/ringlet/ringlet.hpp"
#include "ringlet_config.hpp"

namespace ringlet {

std::string_view version() noexcept { return RINGLET_VERSION; }

std::size_t size_of(DataType type) noexcept {
  switch (type) {
    case DataType::float32:
      return 4;
    case DataType::float64:
      return 8;
    case DataType::float16:
      return 2;
    case DataType::bfloat16:
      return 2;
    case DataType::int8:
      return 1;
    case DataType::uint8:
      return 1;
    case DataType::int32:
      return 4;
    case DataType::int64:
      return 8;
  }
  return 0;
}

bool is_floating(DataType type) noexcept {
  switch (type) {
    case DataType::float32:
    case DataType::float64:
    case DataType::float16:
    case DataType::bfloat16:
      return true;
    case DataType::int8:
    case DataType::uint8:
    case DataType::int32:
    case DataType::int64:
      return false;
  }
  return false;
}

std::string_view to_string(DataType type) noexcept {
  switch (type) {
    case DataType::float32:
      return "float32";
    case DataType::float64:
      return "float64";
    case DataType::float16:
      return "float16";
    case DataType::bfloat16:
      return "bfloat16";
    case DataType::int8:
      return "int8";
    case DataType::uint8:
      return "uint8";
    case DataType::int32:
      return "int32";
    case DataType::int64:
      return "int64";
  }
  return "unknown";
}

std::string_view to_string(ReduceOp op) noexcept {
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
      return "avg";
  }
  return "unknown";
}

std::size_t Tensor::bytes() const noexcept { return count * size_of(type); }

}  // namespace ringlet
