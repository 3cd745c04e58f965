// SPDX-License-Identifier: Apache-2.0
// shm_bench: allreduce latency and bus bandwidth of the shared-memory group, L processes.
//
//   shm_bench [--ranks 2,4] [--sizes 8,65536,67108864,268435456] [--chunk BYTES] [--op allreduce]
//
// Forks L processes per entry of --ranks; each maps one ShmGroup and runs float32 sum
// allreduces in place on a buffer allocated and touched once. Prints, per size, the mean time
// per call on local rank 0, busbw = S / time * 2(L-1)/L (nccl-tests' convention),
// and the CPU time local rank 0 spent per call (user + system; little affected by other load).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "groups/shm/group.hpp"
#include "src/bootstrap/store.hpp"
#include "src/exec/executor.hpp"
#include "src/fingerprint.hpp"

namespace {

using ringlet::Clock;
using ringlet::Deadline;
using ringlet::groups::shm::ShmGroup;
using ringlet::groups::shm::ShmOptions;

// CPU seconds (user + system) this process has used: unlike wall time, it hardly depends on
// how many other processes share the cores.
double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

std::vector<std::size_t> parse_list(const std::string& s) {
  std::vector<std::size_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::stoull(item));
  return out;
}

int run_rank(int r, int size, const std::string& dir, const std::vector<std::size_t>& sizes,
             std::size_t chunk) {
  ShmOptions o;
  o.local_rank = r;
  o.local_size = size;
  o.job.rank = r;
  o.job.size = size;
  o.job.job_id = static_cast<std::uint64_t>(::getppid());
  o.store = ringlet::bootstrap::make_file_store(dir);
  o.chunk_bytes = chunk;
  const auto long_deadline = [] { return Clock::now() + std::chrono::seconds(120); };
  auto t0 = Clock::now();
  auto g = ShmGroup::create(o, long_deadline());
  auto create_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  const std::size_t max_bytes = *std::max_element(sizes.begin(), sizes.end());
  std::vector<float> buf(max_bytes / sizeof(float) + 1, 0.0f);  // zero: sums stay finite
  const ringlet::exec::Executor& exec = ringlet::exec::host_executor();
  // The fingerprint of each call, as the communicator numbers its collectives.
  ringlet::Fingerprint fp;
  fp.type = ringlet::DataType::float32;
  ringlet::Fingerprint barrier_fp;
  barrier_fp.kind = ringlet::CollectiveKind::barrier;
  std::uint64_t seq = 0;
  auto next = [&seq](ringlet::Fingerprint& f) -> const ringlet::Fingerprint& {
    f.seq = ++seq;
    return f;
  };
  if (r == 0) {
    std::printf("# L=%d chunk=%zu create=%.0f us\n# %12s %10s %12s %10s %10s %12s\n", size,
                chunk != 0 ? chunk : ShmGroup::kDefaultChunkBytes, create_us, "bytes", "iters",
                "time_us", "algbw_GB/s", "busbw_GB/s", "cpu_us/rank");
  }
  for (std::size_t bytes : sizes) {
    const std::size_t count = bytes / sizeof(float);
    fp.count = count;
    const int iters = static_cast<int>(std::clamp<std::size_t>(
        (std::size_t{2} << 30) / std::max<std::size_t>(bytes, 1), 5, 20000));
    for (int i = 0; i < std::min(iters, 20); ++i) {
      g->allreduce(buf.data(), count, ringlet::DataType::float32, ringlet::ReduceOp::sum, exec,
                   next(fp), long_deadline());
    }
    g->barrier(next(barrier_fp), long_deadline());
    const double cpu0 = cpu_seconds();
    auto start = Clock::now();
    for (int i = 0; i < iters; ++i) {
      g->allreduce(buf.data(), count, ringlet::DataType::float32, ringlet::ReduceOp::sum, exec,
                   next(fp), long_deadline());
    }
    double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count() / iters;
    double cpu_us = (cpu_seconds() - cpu0) * 1e6 / iters;
    g->barrier(next(barrier_fp), long_deadline());
    if (r == 0) {
      double algbw = static_cast<double>(count * sizeof(float)) / us / 1e3;
      double busbw = algbw * 2.0 * (size - 1) / size;
      std::printf("  %12zu %10d %12.2f %10.3f %10.3f %12.2f\n", count * sizeof(float), iters, us,
                  algbw, busbw, cpu_us);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::size_t> ranks{2, 4};
  std::vector<std::size_t> sizes{8, 1024, 16384, 65536, 1 << 20, 64 << 20, 256 << 20};
  std::size_t chunk = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--ranks") {
      ranks = parse_list(argv[i + 1]);
    } else if (a == "--sizes") {
      sizes = parse_list(argv[i + 1]);
    } else if (a == "--chunk") {
      chunk = std::stoull(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: %s [--ranks 2,4] [--sizes b1,b2,...] [--chunk BYTES]\n",
                   argv[0]);
      return 2;
    }
  }
  int failures = 0;
  for (std::size_t size : ranks) {
    char tmpl[] = "/tmp/ringlet-shm-bench-XXXXXX";
    std::string dir = ::mkdtemp(tmpl);
    std::vector<pid_t> pids;
    for (int r = 0; r < static_cast<int>(size); ++r) {
      pid_t pid = ::fork();
      if (pid == 0) {
        int code = 1;
        try {
          code = run_rank(r, static_cast<int>(size), dir, sizes, chunk);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "local rank %d: %s\n", r, e.what());
        }
        std::fflush(stdout);
        ::_exit(code);
      }
      pids.push_back(pid);
    }
    for (pid_t p : pids) {
      int status = 0;
      ::waitpid(p, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failures;
    }
    std::filesystem::remove_all(dir);
  }
  return failures == 0 ? 0 : 1;
}
