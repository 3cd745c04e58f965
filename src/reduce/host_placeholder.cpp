// SPDX-License-Identifier: Apache-2.0
// Placeholder scalar host reduce kernels, to be replaced by the reduce branch (host.cpp).
#include <cstdint>
#include <type_traits>

#include "src/common/check.hpp"
#include "src/reduce/reduce.hpp"

namespace ringlet::reduce {
namespace {

// Integers combine in unsigned arithmetic so that overflow wraps instead of being undefined.
template <class T, bool = std::is_integral_v<T>>
struct ArithOf {
  using type = T;
};
template <class T>
struct ArithOf<T, true> {
  using type = std::make_unsigned_t<T>;
};
template <class T>
using Arith = typename ArithOf<T>::type;

template <class T>
struct Sum {
  T operator()(T a, T b) const {
    return static_cast<T>(static_cast<Arith<T>>(a) + static_cast<Arith<T>>(b));
  }
};
template <class T>
struct Prod {
  T operator()(T a, T b) const {
    return static_cast<T>(static_cast<Arith<T>>(a) * static_cast<Arith<T>>(b));
  }
};
template <class T>
struct Min {
  T operator()(T a, T b) const { return b < a ? b : a; }
};
template <class T>
struct Max {
  T operator()(T a, T b) const { return a < b ? b : a; }
};

template <class T, class Op>
void kernel2(void* dst, const void* src, std::size_t n) {
  auto* d = static_cast<T*>(dst);
  const auto* s = static_cast<const T*>(src);
  for (std::size_t i = 0; i < n; ++i) d[i] = Op{}(d[i], s[i]);
}

template <class T, class Op>
void kernel3(void* out, const void* a, const void* b, std::size_t n) {
  auto* o = static_cast<T*>(out);
  const auto* x = static_cast<const T*>(a);
  const auto* y = static_cast<const T*>(b);
  for (std::size_t i = 0; i < n; ++i) o[i] = Op{}(x[i], y[i]);
}

template <class T>
std::pair<HostKernel, HostKernel3> for_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg:
      return {kernel2<T, Sum<T>>, kernel3<T, Sum<T>>};
    case ReduceOp::prod:
      return {kernel2<T, Prod<T>>, kernel3<T, Prod<T>>};
    case ReduceOp::min:
      return {kernel2<T, Min<T>>, kernel3<T, Min<T>>};
    case ReduceOp::max:
      return {kernel2<T, Max<T>>, kernel3<T, Max<T>>};
  }
  return {nullptr, nullptr};
}

std::pair<HostKernel, HostKernel3> kernels(DataType type, ReduceOp op) {
  std::pair<HostKernel, HostKernel3> k{nullptr, nullptr};
  switch (type) {
    case DataType::float32:
      k = for_op<float>(op);
      break;
    case DataType::float64:
      k = for_op<double>(op);
      break;
    case DataType::int8:
      k = for_op<std::int8_t>(op);
      break;
    case DataType::uint8:
      k = for_op<std::uint8_t>(op);
      break;
    case DataType::int32:
      k = for_op<std::int32_t>(op);
      break;
    case DataType::int64:
      k = for_op<std::int64_t>(op);
      break;
    case DataType::float16:
    case DataType::bfloat16:
      break;
  }
  RINGLET_CHECK(k.first != nullptr, "placeholder reduce kernels support no 16-bit float types");
  return k;
}

template <class T>
void divide(void* data, std::size_t n, int divisor) {
  auto* d = static_cast<T*>(data);
  for (std::size_t i = 0; i < n; ++i) d[i] = d[i] / static_cast<T>(divisor);
}

}  // namespace

HostKernel host_kernel(DataType type, ReduceOp op) { return kernels(type, op).first; }

HostKernel3 host_kernel3(DataType type, ReduceOp op) { return kernels(type, op).second; }

void divide_host(void* data, std::size_t n, DataType type, int divisor) {
  RINGLET_CHECK(type == DataType::float32 || type == DataType::float64,
                "placeholder divide_host supports float32 and float64 only");
  if (type == DataType::float32) {
    divide<float>(data, n, divisor);
  } else {
    divide<double>(data, n, divisor);
  }
}

const char* host_isa() noexcept { return "generic"; }

}  // namespace ringlet::reduce
