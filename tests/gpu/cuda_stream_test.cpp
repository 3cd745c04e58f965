// SPDX-License-Identifier: Apache-2.0
// Suite gpu: the CUDA executor and CUDA-memory collectives on a real device; every test skips,
// with the reason, where no device is usable. Run by tests/gpu/device_check.sh on the GPU
// machine; in CI (no GPU) it only shows the skip.
//
// - The executor's kernels against the host kernels, bit for bit: every DataType x ReduceOp,
//   3-operand and in place, aligned (16-byte packs) and misaligned (plain kernel), scaling.
// - Stream ordering without host synchronisation: a kernel writes the buffer before the call,
//   another reads it after; the writer is held back by a device-side wait on a host flag that
//   the host releases only after the call returned.
// - Every DataType x ReduceOp allreduce on device memory, 2 ranks as threads; 4 ranks as
//   forked processes, each its own node (CudaProcesses.*, run alone: fork before CUDA starts).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/exec/cuda_api.hpp"
#include "src/exec/device.hpp"
#include "src/reduce/elements.hpp"
#include "src/reduce/reduce.hpp"
#include "tests/gpu/matrix.hpp"
#include "tests/multirank/rank_group.hpp"

namespace ringlet {
namespace {

using testing::make_rank_group;
using testing::RankContext;
using testing::RankMode;

using testing::kOps;
using testing::kTypes;

std::string no_device_reason() {
  std::string why;
  if (cuda_api::device_count(&why) > 0) return {};
  return why.empty() ? "no CUDA device" : why;
}

#define SKIP_WITHOUT_DEVICE()                                           \
  do {                                                                  \
    const std::string why = no_device_reason();                         \
    if (!why.empty()) GTEST_SKIP() << "no usable CUDA device: " << why; \
  } while (0)

std::vector<unsigned char> random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<unsigned char> v(n);
  for (auto& b : v) b = static_cast<unsigned char>(rng());
  return v;
}

struct DeviceBuffer {
  explicit DeviceBuffer(std::size_t bytes) : p(cuda_api::device_alloc(bytes)), n(bytes) {}
  ~DeviceBuffer() { cuda_api::device_free(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* p;
  std::size_t n;
};

TEST(CudaExecutor, MatchesHostKernelsBitwise) {
  SKIP_WITHOUT_DEVICE();
  void* s = cuda_api::stream_create();
  for (DataType t : kTypes) {
    const std::size_t es = size_of(t);
    for (ReduceOp op : kOps) {
      for (std::size_t n :
           {std::size_t{1}, std::size_t{33}, std::size_t{4097}, std::size_t{(1u << 20) + 3}}) {
        for (std::size_t shift : {std::size_t{0}, std::size_t{1}}) {  // misaligned by 1 element
          const std::size_t bytes = (n + shift) * es;
          auto a = random_bytes(bytes, n * 31 + static_cast<std::size_t>(t));
          auto b = random_bytes(bytes, n * 17 + static_cast<std::size_t>(op));
          std::vector<unsigned char> want(bytes), got(bytes), got2(bytes);
          reduce::host_kernel3(t, op)(want.data() + shift * es, a.data() + shift * es,
                                      b.data() + shift * es, n);
          DeviceBuffer da(bytes), db(bytes), dout(bytes);
          cudaMemcpy(da.p, a.data(), bytes, cudaMemcpyHostToDevice);
          cudaMemcpy(db.p, b.data(), bytes, cudaMemcpyHostToDevice);
          auto* pa = static_cast<unsigned char*>(da.p) + shift * es;
          auto* pb = static_cast<unsigned char*>(db.p) + shift * es;
          auto* po = static_cast<unsigned char*>(dout.p) + shift * es;
          cuda_api::reduce3_async(po, pa, pb, n, t, op, s);  // 3-operand
          cuda_api::reduce3_async(pa, pa, pb, n, t, op, s);  // in place (2-operand)
          cuda_api::stream_synchronize(s);
          cudaMemcpy(got.data(), dout.p, bytes, cudaMemcpyDeviceToHost);
          cudaMemcpy(got2.data(), da.p, bytes, cudaMemcpyDeviceToHost);
          ASSERT_EQ(0, std::memcmp(got.data() + shift * es, want.data() + shift * es, n * es))
              << to_string(t) << " " << to_string(op) << " n=" << n << " shift=" << shift;
          ASSERT_EQ(0, std::memcmp(got2.data() + shift * es, want.data() + shift * es, n * es))
              << "in place: " << to_string(t) << " " << to_string(op) << " n=" << n;
        }
      }
    }
    if (is_floating(t)) {
      const std::size_t n = 100003;
      auto a = random_bytes(n * es, 99);
      auto want = a;
      reduce::divide_host(want.data(), n, t, 3);
      DeviceBuffer d(n * es);
      cudaMemcpy(d.p, a.data(), n * es, cudaMemcpyHostToDevice);
      cuda_api::scale_async(d.p, n, t, 3, s);
      cuda_api::stream_synchronize(s);
      std::vector<unsigned char> got(n * es);
      cudaMemcpy(got.data(), d.p, n * es, cudaMemcpyDeviceToHost);
      ASSERT_EQ(0, std::memcmp(got.data(), want.data(), n * es)) << "scale " << to_string(t);
    }
  }
  cuda_api::stream_destroy(s);
}

// Exact small values for the collective matrix (tests/gpu/matrix.hpp), as bytes.
void fill_values(DataType t, ReduceOp op, int r, std::size_t n, std::vector<unsigned char>& out) {
  out.assign(n * size_of(t), 0);
  for (std::size_t i = 0; i < n; ++i)
    testing::store(t, out.data(), i, testing::value_of(t, op, r, i));
}

// The host reference: the host executor over the same per-rank inputs in rank order
// (exact for these values, so any order gives these bits), then the avg division.
std::vector<unsigned char> host_reference(DataType t, ReduceOp op, int size, std::size_t n) {
  std::vector<unsigned char> acc, v;
  fill_values(t, op, 0, n, acc);
  for (int r = 1; r < size; ++r) {
    fill_values(t, op, r, n, v);
    reduce::host_kernel3(t, op)(acc.data(), acc.data(), v.data(), n);
  }
  if (op == ReduceOp::avg) reduce::divide_host(acc.data(), n, t, size);
  return acc;
}

void allreduce_matrix(RankContext& rc, Communicator& comm, const std::vector<std::size_t>& sizes) {
  cuda_api::set_device(0);
  void* s = cuda_api::stream_create();
  for (DataType t : kTypes) {
    for (ReduceOp op : kOps) {
      if (op == ReduceOp::avg && !is_floating(t)) continue;
      for (std::size_t n : sizes) {
        std::vector<unsigned char> in;
        fill_values(t, op, rc.rank, n, in);
        const std::size_t bytes = in.size();
        void* h_in = cuda_api::host_alloc(bytes);
        void* h_out = cuda_api::host_alloc(bytes);
        std::memcpy(h_in, in.data(), bytes);
        DeviceBuffer d(bytes);
        // H2D on the stream, the collective, D2H on the stream: no host sync in between.
        cuda_api::copy_async(d.p, h_in, bytes, s);
        comm.allreduce(Tensor{d.p, n, t, MemoryKind::cuda, 0}, op, CudaStream{s});
        cuda_api::copy_async(h_out, d.p, bytes, s);
        cuda_api::stream_synchronize(s);
        const auto want = host_reference(t, op, rc.size, n);
        EXPECT_EQ(0, std::memcmp(h_out, want.data(), bytes))
            << "rank " << rc.rank << ": " << to_string(t) << " " << to_string(op) << " n=" << n;
        cuda_api::host_free(h_in);
        cuda_api::host_free(h_out);
      }
    }
  }
  cuda_api::stream_destroy(s);
}

TEST(CudaCollectives, AllreduceMatrixThreads) {
  SKIP_WITHOUT_DEVICE();
  auto group = make_rank_group(RankMode::threads);
  group->run(2, [&](RankContext& rc) {
    Communicator comm = rc.create();
    allreduce_matrix(rc, comm, {1, 1000, 1 << 18});
  });
}

// A kernel writes the buffer before the call, another reads it after, no host sync: the
// writer waits on the device for a host flag that is written only after the call returned.
TEST(CudaCollectives, StreamOrderingWithoutHostSync) {
  SKIP_WITHOUT_DEVICE();
  auto group = make_rank_group(RankMode::threads);
  group->run(2, [&](RankContext& rc) {
    Communicator comm = rc.create();
    cuda_api::set_device(0);
    void* s = cuda_api::stream_create();
    constexpr std::size_t n = 1 << 20;
    std::vector<float> x(n), y(n);
    for (std::size_t i = 0; i < n; ++i) {
      x[i] = static_cast<float>(i % 1000);
      y[i] = static_cast<float>(rc.rank);
    }
    DeviceBuffer dx(n * 4), dy(n * 4), buf(n * 4), zero(n * 4), seen(n * 4);
    cudaMemcpy(dx.p, x.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dy.p, y.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemset(zero.p, 0, n * 4);
    cudaMemset(buf.p, 0, n * 4);
    std::uint32_t* gate = cuda_api::flags_alloc(1);
    cuda_api::wait_flag(s, gate, 1);  // held back
    cuda_api::reduce3_async(buf.p, dx.p, dy.p, n, DataType::float32, ReduceOp::sum, s);  // writer
    Work w = comm.allreduce_async(Tensor{buf.p, n, DataType::float32, MemoryKind::cuda, 0},
                                  ReduceOp::sum, CudaStream{s});
    cuda_api::reduce3_async(seen.p, buf.p, zero.p, n, DataType::float32, ReduceOp::sum,
                            s);  // reader
    EXPECT_FALSE(w.test()) << "the collective finished before its stream's earlier work";
    std::atomic_ref<std::uint32_t>(*gate).store(1, std::memory_order_release);
    w.wait();
    cuda_api::stream_synchronize(s);
    std::vector<float> got(n);
    cudaMemcpy(got.data(), seen.p, n * 4, cudaMemcpyDeviceToHost);
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_EQ(got[i], static_cast<float>(2 * (i % 1000) + 1)) << "element " << i;
    }
    cuda_api::flags_free(gate);
    cuda_api::stream_destroy(s);
  });
}

// 4 ranks as processes on the one GPU, each its own node (run alone: the processes fork
// before this process starts CUDA).
TEST(CudaProcesses, AllreduceMatrixFourNodes) {
  auto group = make_rank_group(RankMode::processes);
  group->run(4, [&](RankContext& rc) {
    const std::string why = no_device_reason();
    if (!why.empty()) return;  // the parent reports the skip
    Options o;
    o.node_id = "gpu-node-" + std::to_string(rc.rank);
    Communicator comm = rc.create(o);
    EXPECT_EQ(comm.node_count(), 4);
    allreduce_matrix(rc, comm, {1, 4096, 1 << 16});
  });
  const std::string why = no_device_reason();
  if (!why.empty()) GTEST_SKIP() << "no usable CUDA device: " << why;
}

}  // namespace
}  // namespace ringlet
