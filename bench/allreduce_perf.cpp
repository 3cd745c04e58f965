// SPDX-License-Identifier: Apache-2.0
// allreduce_perf: in-place allreduce bandwidth and latency of ringlet, nccl-tests flags/columns.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/perf_common.hpp"
#include "include/ringlet/ringlet.hpp"

#if RINGLET_PERF_CUDA
#include <cuda_runtime_api.h>
#endif

namespace {

using ringlet::Communicator;
using ringlet::ReduceOp;
using ringlet::Tensor;
namespace perf = ringlet::perf;

constexpr int kExitWrong = 1;
constexpr int kExitUsage = 2;
constexpr int kExitError = 3;

// Every rank has entered once this returns: no rank can leave an allreduce before all
// ranks have contributed. (An allreduce rather than barrier() keeps to the collective that
// the benchmark measures.)
void sync_ranks(Communicator& comm) {
  std::int32_t token = 0;
  comm.allreduce(std::span<std::int32_t>(&token, 1));
}

double max_over_ranks(Communicator& comm, double value) {
  comm.allreduce(std::span<double>(&value, 1), ReduceOp::max);
  return value;
}

std::int64_t sum_over_ranks(Communicator& comm, std::int64_t value) {
  comm.allreduce(std::span<std::int64_t>(&value, 1), ReduceOp::sum);
  return value;
}

// --memory cuda: the buffer on device 0, the collectives on a stream of this program's own.
// Without CUDA in the build, the flag is refused (exit 2).
struct DeviceBuffer {
#if RINGLET_PERF_CUDA
  explicit DeviceBuffer(std::size_t bytes) {
    if (cudaSetDevice(0) != cudaSuccess ||
        cudaMalloc(&data, bytes == 0 ? 1 : bytes) != cudaSuccess ||
        cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
      throw std::runtime_error(std::string("CUDA: ") + cudaGetErrorString(cudaGetLastError()));
    }
  }
  ~DeviceBuffer() {
    cudaStreamDestroy(s);
    cudaFree(data);
  }
  void upload(const void* host, std::size_t bytes) {
    cudaMemcpy(data, host, bytes, cudaMemcpyHostToDevice);
  }
  void download(void* host, std::size_t bytes) {
    cudaMemcpy(host, data, bytes, cudaMemcpyDeviceToHost);
  }
  void synchronize() { cudaStreamSynchronize(s); }
  ringlet::CudaStream stream() const { return ringlet::CudaStream{s}; }
  void* data = nullptr;
  cudaStream_t s = nullptr;
#else
  explicit DeviceBuffer(std::size_t) {
    throw std::runtime_error("--memory cuda: this allreduce_perf was built without CUDA");
  }
  void upload(const void*, std::size_t) {}
  void download(void*, std::size_t) {}
  void synchronize() {}
  ringlet::CudaStream stream() const { return {}; }
  void* data = nullptr;
#endif
};

int run(const perf::PerfArgs& args) {
  const bool cuda = args.memory == "cuda";
  ringlet::Options options;
  options.algorithm = args.algo;  // empty: RINGLET_ALGO, else auto
  const auto create_start = std::chrono::steady_clock::now();
  Communicator comm = Communicator::create(options);
  // Set-up time (rendezvous, connections and their handshakes), the slowest rank's.
  const double create_ms = max_over_ranks(comm, std::chrono::duration<double, std::milli>(
                                                    std::chrono::steady_clock::now() - create_start)
                                                    .count());
  const int rank = comm.rank();
  const int ranks = comm.size();
  const bool printer = rank == 0;

  const std::vector<std::size_t> sizes = perf::row_sizes(args);
  const std::size_t largest = sizes.empty() ? 0 : sizes.back();
  perf::Buffer buffer(largest);  // allocated once, every page touched
  std::unique_ptr<DeviceBuffer> device;
  if (cuda) device = std::make_unique<DeviceBuffer>(largest);
  const perf::Pattern pattern(args.type, args.op, ranks);

  if (printer) {
    perf::RunInfo info;
    info.program = "allreduce_perf";
    info.library = "ringlet " + std::string(ringlet::version());
    info.ranks = ranks;
    info.nodes = comm.node_count();
    if (!args.algo.empty()) {
      info.algo = args.algo + " (--algo)";
    } else if (const char* env = std::getenv("RINGLET_ALGO")) {
      info.algo = std::string(env) + " (RINGLET_ALGO)";
    } else {
      info.algo = "auto";
    }
    perf::print_header(stdout, args, info);
    std::printf("# create: %.2f ms (slowest rank)\n", create_ms);
  }

  double busbw_sum = 0.0;
  std::int64_t wrong_total = 0;
  for (const std::size_t bytes : sizes) {
    const Tensor host_tensor{buffer.data(), bytes / perf::type_size(args.type), args.type};
    const Tensor tensor =
        cuda ? Tensor{device->data, host_tensor.count, args.type, ringlet::MemoryKind::cuda, 0}
             : host_tensor;
    const ringlet::CudaStream stream = cuda ? device->stream() : ringlet::CudaStream{};

    // Timed: warm-up, then `iters` back-to-back in-place allreduces started together.
    perf::fill_for_timing(pattern, args.type, args.op, host_tensor.data, host_tensor.count, rank);
    if (cuda) device->upload(host_tensor.data, bytes);
    // One iteration: -m collectives issued back to back, then waited (-z 0), or -m blocking
    // calls (-z 1; on CUDA memory they return once enqueued: the stream is synchronised).
    std::vector<ringlet::Work> works(static_cast<std::size_t>(args.agg_iters));
    auto iteration = [&] {
      if (args.blocking) {
        for (int j = 0; j < args.agg_iters; ++j) comm.allreduce(tensor, args.op, stream);
        if (cuda) device->synchronize();
        return;
      }
      for (auto& w : works) w = comm.allreduce_async(tensor, args.op, stream);
      for (auto& w : works) w.wait();
    };
    for (int i = 0; i < args.warmup_iters; ++i) iteration();
    sync_ranks(comm);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < args.iters; ++i) iteration();
    const std::chrono::duration<double, std::micro> elapsed =
        std::chrono::steady_clock::now() - start;
    const double time_us = max_over_ranks(comm, elapsed.count() / args.iters / args.agg_iters);

    // Check: a separate, untimed run on freshly written data.
    std::int64_t wrong = -1;
    if (args.check) {
      perf::fill_pattern(pattern, args.type, host_tensor.data, host_tensor.count, rank);
      if (cuda) device->upload(host_tensor.data, bytes);
      comm.allreduce(tensor, args.op, stream);
      if (cuda) {
        device->synchronize();
        device->download(host_tensor.data, bytes);
      }
      wrong = sum_over_ranks(
          comm, perf::count_wrong(pattern, args.type, host_tensor.data, host_tensor.count));
      wrong_total += wrong;
    }
    if (printer) {
      busbw_sum += perf::print_row(stdout, bytes, args.type, args.op, time_us, ranks, wrong);
    }
  }
  const double peak_max = max_over_ranks(comm, static_cast<double>(perf::peak_rss_bytes()));
  if (printer) {
    perf::print_footer(stdout, busbw_sum, static_cast<int>(sizes.size()), wrong_total, args.check,
                       largest);
    std::printf("# Peak resident memory : %.1f MiB, maximum over ranks\n", peak_max / 1048576.0);
    std::fflush(stdout);
  }
  return wrong_total > 0 ? kExitWrong : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const perf::ParseResult parsed = perf::parse_args(argc, argv);
  if (!parsed.error.empty()) {
    if (perf::launcher_rank_is_zero()) {
      std::fprintf(stderr, "allreduce_perf: %s\n%s", parsed.error.c_str(),
                   perf::usage("allreduce_perf").c_str());
    }
    return kExitUsage;
  }
  if (parsed.args.help) {
    std::fputs(perf::usage("allreduce_perf").c_str(), stdout);
    return 0;
  }
  try {
    return run(parsed.args);
  } catch (const ringlet::Error& e) {
    std::fprintf(stderr, "allreduce_perf: %s\n", e.what());
    return e.error_code() == ringlet::ErrorCode::invalid_argument ? kExitUsage : kExitError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "allreduce_perf: %s\n", e.what());
    return kExitError;
  }
}
