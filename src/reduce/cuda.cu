// SPDX-License-Identifier: Apache-2.0
// The CUDA side of ringlet: the reduce kernels' launchers (kernels in cuda_kernels.cuh) and the
// runtime calls of src/exec/cuda_api.hpp. The only file that includes CUDA headers.
//
// The runtime is linked statically (libcudart_static) and loads libcuda.so.1 at its first
// call, so nothing here runs, and no driver is needed, until CUDA memory is used. The driver's
// stream memory operations (cuStreamWriteValue32, cuStreamWaitValue32) come through
// cudaGetDriverEntryPointByVersion rather than a link to libcuda.
#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <string>

#include "src/common/check.hpp"
#include "src/exec/cuda_api.hpp"
#include "src/reduce/cuda_kernels.cuh"
#include "src/reduce/reduce.hpp"

namespace ringlet {
namespace {

using reduce::kernels::Bf16;
using reduce::kernels::F16;
using reduce::kernels::Storage;

constexpr int kThreads = 256;
constexpr int kVecBytes = 16;  // ld.global.v4: the widest load
constexpr int kUnroll = 4;
constexpr int kBlocksPerSm = 8;  // 2048 resident threads per SM on sm_90

[[noreturn]] void fail(cudaError_t err, const char* what) {
  cudaGetLastError();  // clear a non-sticky error so that the next call starts clean
  throw Error(ErrorCode::transport, str_cat("CUDA ", what, ": ", cudaGetErrorString(err)));
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(err, what);
}

cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// The grid: enough blocks to cover `work` items of kThreads, capped at kBlocksPerSm per SM
// of the current device (grid-stride loops do the rest).
unsigned grid_for(std::size_t work) {
  thread_local int device = -1;
  thread_local int sms = 0;
  int current = 0;
  if (cudaGetDevice(&current) != cudaSuccess) current = 0;
  if (current != device) {
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, current) != cudaSuccess) {
      sms = 132;
    }
    device = current;
  }
  const std::size_t wanted = (work + kThreads - 1) / kThreads;
  const std::size_t cap = static_cast<std::size_t>(sms) * kBlocksPerSm;
  return static_cast<unsigned>(wanted < 1 ? 1 : (wanted < cap ? wanted : cap));
}

using Launch3 = void (*)(void* out, const void* a, const void* b, std::size_t n, cudaStream_t s);

template <class T, ReduceOp Op>
void launch3(void* out, const void* a, const void* b, std::size_t n, cudaStream_t s) {
  using S = typename Storage<T>::type;
  auto* o = static_cast<S*>(out);
  const auto* x = static_cast<const S*>(a);
  const auto* y = static_cast<const S*>(b);
  const auto bits = reinterpret_cast<std::uintptr_t>(out) | reinterpret_cast<std::uintptr_t>(a) |
                    reinterpret_cast<std::uintptr_t>(b);
  if (bits % kVecBytes == 0) {
    constexpr std::size_t kE = kVecBytes / sizeof(S);
    const std::size_t packs = n / kE;
    const std::size_t work = packs / kUnroll > kE ? packs / kUnroll : kE;
    reduce::kernels::reduce3_packed<T, Op, kVecBytes, kUnroll>
        <<<grid_for(work), kThreads, 0, s>>>(o, x, y, n);
  } else {
    reduce::kernels::reduce3_plain<T, Op><<<grid_for(n), kThreads, 0, s>>>(o, x, y, n);
  }
}

template <class T>
void launch_divide(void* data, std::size_t n, int divisor, cudaStream_t s) {
  using S = typename Storage<T>::type;
  reduce::kernels::divide_plain<T>
      <<<grid_for(n), kThreads, 0, s>>>(static_cast<S*>(data), n, divisor);
}

template <class T>
constexpr void fill(Launch3 (&row)[5]) {
  row[0] = &launch3<T, ReduceOp::sum>;
  row[1] = &launch3<T, ReduceOp::prod>;
  row[2] = &launch3<T, ReduceOp::min>;
  row[3] = &launch3<T, ReduceOp::max>;
  row[4] = &launch3<T, ReduceOp::avg>;
}

struct LaunchTable {
  Launch3 k[8][5];
};

LaunchTable make_table() {
  LaunchTable t{};
  fill<float>(t.k[static_cast<int>(DataType::float32)]);
  fill<double>(t.k[static_cast<int>(DataType::float64)]);
  fill<F16>(t.k[static_cast<int>(DataType::float16)]);
  fill<Bf16>(t.k[static_cast<int>(DataType::bfloat16)]);
  fill<std::int8_t>(t.k[static_cast<int>(DataType::int8)]);
  fill<std::uint8_t>(t.k[static_cast<int>(DataType::uint8)]);
  fill<std::int32_t>(t.k[static_cast<int>(DataType::int32)]);
  fill<std::int64_t>(t.k[static_cast<int>(DataType::int64)]);
  return t;
}

void check_launch() {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw Error(ErrorCode::transport,
                str_cat("CUDA kernel launch failed: ", cudaGetErrorString(err)));
  }
}

// The driver's stream memory operations, resolved once; null where the driver lacks them.
using WriteValue32 = CUresult (*)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
using WaitValue32 = CUresult (*)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
struct StreamMemOps {
  WriteValue32 write = nullptr;
  WaitValue32 wait = nullptr;
};

const StreamMemOps& mem_ops() {
  static const StreamMemOps ops = [] {
    StreamMemOps o;
    void* w = nullptr;
    void* v = nullptr;
    cudaDriverEntryPointQueryResult qw{};
    cudaDriverEntryPointQueryResult qv{};
    if (cudaGetDriverEntryPointByVersion("cuStreamWriteValue32", &w, 12000, cudaEnableDefault,
                                         &qw) == cudaSuccess &&
        cudaGetDriverEntryPointByVersion("cuStreamWaitValue32", &v, 12000, cudaEnableDefault,
                                         &qv) == cudaSuccess &&
        qw == cudaDriverEntryPointSuccess && qv == cudaDriverEntryPointSuccess) {
      o.write = reinterpret_cast<WriteValue32>(w);
      o.wait = reinterpret_cast<WaitValue32>(v);
    }
    cudaGetLastError();
    return o;
  }();
  return ops;
}

// The fallbacks: one thread that spins on, or writes, the mapped word.
__global__ void wait_flag_kernel(const volatile std::uint32_t* flag, std::uint32_t value) {
  while (*flag < value) __nanosleep(2000);
}
__global__ void write_flag_kernel(volatile std::uint32_t* flag, std::uint32_t value) {
  __threadfence_system();
  *flag = value;
  __threadfence_system();
}

CUdeviceptr device_address(std::uint32_t* flag) {
  void* d = nullptr;
  check(cudaHostGetDevicePointer(&d, flag, 0), "cudaHostGetDevicePointer of a stream flag");
  return reinterpret_cast<CUdeviceptr>(d);
}

}  // namespace

namespace reduce {

void reduce_cuda(void* dst, const void* src, std::size_t n, DataType type, ReduceOp op,
                 void* stream) {
  cuda_api::reduce3_async(dst, dst, src, n, type, op, stream);
}

int cuda_device_count() noexcept { return cuda_api::device_count(nullptr); }

}  // namespace reduce

namespace cuda_api {

bool built() noexcept { return true; }

int device_count(std::string* why) noexcept {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error of a failed runtime initialisation
    if (why != nullptr) {
      try {
        *why = cudaGetErrorString(err);
      } catch (...) {
      }
    }
    return 0;
  }
  if (count == 0 && why != nullptr) *why = "the CUDA runtime reports no device";
  return count;
}

void set_device(int ordinal) { check(cudaSetDevice(ordinal), "cudaSetDevice"); }

void* stream_create() {
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  return s;
}

void stream_destroy(void* stream) noexcept {
  if (stream != nullptr) cudaStreamDestroy(as_stream(stream));
}

void copy_async(void* dst, const void* src, std::size_t bytes, void* stream) {
  if (bytes == 0 || dst == src) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, as_stream(stream)), "cudaMemcpyAsync");
}

void reduce3_async(void* out, const void* a, const void* b, std::size_t n, DataType type,
                   ReduceOp op, void* stream) {
  static const LaunchTable table = make_table();
  const auto t = static_cast<std::size_t>(type);
  const auto o = static_cast<std::size_t>(op);
  RINGLET_CHECK(t < 8 && o < 5, "reduce_cuda: unknown DataType ", t, " or ReduceOp ", o);
  if (n == 0) return;
  table.k[t][o](out, a, b, n, as_stream(stream));
  check_launch();
}

void scale_async(void* data, std::size_t n, DataType type, int divisor, void* stream) {
  RINGLET_CHECK(divisor > 0, "scale: divisor ", divisor, " must be positive");
  if (n == 0) return;
  switch (type) {
    case DataType::float32:
      launch_divide<float>(data, n, divisor, as_stream(stream));
      break;
    case DataType::float64:
      launch_divide<double>(data, n, divisor, as_stream(stream));
      break;
    case DataType::float16:
      launch_divide<F16>(data, n, divisor, as_stream(stream));
      break;
    case DataType::bfloat16:
      launch_divide<Bf16>(data, n, divisor, as_stream(stream));
      break;
    default:
      throw Error(ErrorCode::invalid_argument,
                  str_cat("scale: ", to_string(type), " is not a floating-point type"));
  }
  check_launch();
}

void stream_synchronize(void* stream) {
  check(cudaStreamSynchronize(as_stream(stream)), "cudaStreamSynchronize");
}

std::uint32_t* flags_alloc(std::size_t n) {
  void* p = nullptr;
  check(cudaHostAlloc(&p, n * sizeof(std::uint32_t), cudaHostAllocMapped | cudaHostAllocPortable),
        "cudaHostAlloc of stream flags");
  auto* flags = static_cast<std::uint32_t*>(p);
  for (std::size_t i = 0; i < n; ++i) flags[i] = 0;
  return flags;
}

void flags_free(std::uint32_t* flags) noexcept {
  if (flags != nullptr) cudaFreeHost(flags);
}

void write_flag(void* stream, std::uint32_t* flag, std::uint32_t value) {
  const StreamMemOps& ops = mem_ops();
  if (ops.write != nullptr) {
    const CUresult r = ops.write(as_stream(stream), device_address(flag), value, 0);
    if (r == CUDA_SUCCESS) return;
  }
  write_flag_kernel<<<1, 1, 0, as_stream(stream)>>>(flag, value);
  check_launch();
}

void wait_flag(void* stream, std::uint32_t* flag, std::uint32_t value) {
  const StreamMemOps& ops = mem_ops();
  if (ops.wait != nullptr) {
    const CUresult r =
        ops.wait(as_stream(stream), device_address(flag), value, CU_STREAM_WAIT_VALUE_GEQ);
    if (r == CUDA_SUCCESS) return;
  }
  wait_flag_kernel<<<1, 1, 0, as_stream(stream)>>>(flag, value);
  check_launch();
}

void* host_alloc(std::size_t bytes) {
  void* p = nullptr;
  check(cudaMallocHost(&p, bytes == 0 ? 1 : bytes), "cudaMallocHost");
  return p;
}

void host_free(void* p) noexcept {
  if (p != nullptr) cudaFreeHost(p);
}

void* device_alloc(std::size_t bytes) {
  void* p = nullptr;
  check(cudaMalloc(&p, bytes == 0 ? 1 : bytes), "cudaMalloc");
  return p;
}

void device_free(void* p) noexcept {
  if (p != nullptr) cudaFree(p);
}

}  // namespace cuda_api
}  // namespace ringlet
