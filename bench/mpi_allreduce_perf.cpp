// SPDX-License-Identifier: Apache-2.0
// mpi_allreduce_perf: MPI_Allreduce(MPI_IN_PLACE) with allreduce_perf's flags, data and columns.
// `--out-of-place` (this program only) sends from a second buffer instead of MPI_IN_PLACE.
#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "bench/perf_common.hpp"

namespace {

using ringlet::DataType;
using ringlet::ReduceOp;
namespace perf = ringlet::perf;

constexpr int kExitWrong = 1;
constexpr int kExitUsage = 2;
constexpr int kExitError = 3;

// MPI has no 16-bit floating-point type: nullptr for half and bfloat16.
MPI_Datatype mpi_type(DataType type) {
  switch (type) {
    case DataType::float32:
      return MPI_FLOAT;
    case DataType::float64:
      return MPI_DOUBLE;
    case DataType::int8:
      return MPI_INT8_T;
    case DataType::uint8:
      return MPI_UINT8_T;
    case DataType::int32:
      return MPI_INT32_T;
    case DataType::int64:
      return MPI_INT64_T;
    case DataType::float16:
    case DataType::bfloat16:
      break;
  }
  return MPI_DATATYPE_NULL;
}

// avg has no MPI_Op: it is MPI_SUM followed by a division by the rank count, both timed.
MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg:
      break;
    case ReduceOp::prod:
      return MPI_PROD;
    case ReduceOp::min:
      return MPI_MIN;
    case ReduceOp::max:
      return MPI_MAX;
  }
  return MPI_SUM;
}

template <class T>
void divide(void* data, std::size_t count, int ranks) {
  auto* values = static_cast<T*>(data);
  for (std::size_t i = 0; i < count; ++i) values[i] /= static_cast<T>(ranks);
}

// in: MPI_IN_PLACE, or (--out-of-place) the buffer that holds this rank's contribution.
void allreduce(const void* in, void* data, std::size_t count, DataType type, ReduceOp op,
               int ranks) {
  MPI_Allreduce(in, data, static_cast<int>(count), mpi_type(type), mpi_op(op), MPI_COMM_WORLD);
  if (op != ReduceOp::avg) return;
  if (type == DataType::float32) {
    divide<float>(data, count, ranks);
  } else {
    divide<double>(data, count, ranks);
  }
}

// Nodes: ranks that share memory form one node; count the node leaders.
int node_count() {
  MPI_Comm node_comm;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node_comm);
  int node_rank = 0;
  MPI_Comm_rank(node_comm, &node_rank);
  MPI_Comm_free(&node_comm);
  int leader = node_rank == 0 ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &leader, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  return leader;
}

std::string library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string version(text, static_cast<std::size_t>(length));
  const std::size_t end = version.find_first_of(",\n");
  return end == std::string::npos ? version : version.substr(0, end);
}

int run(const perf::PerfArgs& args, int rank, int ranks, bool out_of_place) {
  const bool printer = rank == 0;
  const std::vector<std::size_t> sizes = perf::row_sizes(args);
  const std::size_t largest = sizes.empty() ? 0 : sizes.back();
  if (largest / perf::type_size(args.type) > static_cast<std::size_t>(INT32_MAX)) {
    if (printer) std::fprintf(stderr, "mpi_allreduce_perf: -e: MPI counts are int\n");
    return kExitUsage;
  }
  perf::Buffer buffer(largest);  // allocated once, every page touched
  perf::Buffer send_buffer(out_of_place ? largest : 0);
  const void* in = out_of_place ? send_buffer.data() : MPI_IN_PLACE;
  const perf::Pattern pattern(args.type, args.op, ranks);

  const int nodes = node_count();
  if (printer) {
    perf::RunInfo info;
    info.program = "mpi_allreduce_perf";
    info.library = library_version();
    info.ranks = ranks;
    info.nodes = nodes;
    info.algo = args.algo.empty() ? "the MPI library's choice"
                                  : "the MPI library's choice (--algo " + args.algo + " ignored)";
    if (out_of_place) info.algo += ", out of place";
    perf::print_header(stdout, args, info);
  }

  double busbw_sum = 0.0;
  std::int64_t wrong_total = 0;
  for (const std::size_t bytes : sizes) {
    const std::size_t count = bytes / perf::type_size(args.type);
    void* data = buffer.data();

    perf::fill_for_timing(pattern, args.type, args.op, data, count, rank);
    if (out_of_place) std::memcpy(send_buffer.data(), data, bytes);
    for (int i = 0; i < args.warmup_iters; ++i) {
      allreduce(in, data, count, args.type, args.op, ranks);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < args.iters; ++i) allreduce(in, data, count, args.type, args.op, ranks);
    const std::chrono::duration<double, std::micro> elapsed =
        std::chrono::steady_clock::now() - start;
    double time_us = elapsed.count() / args.iters;
    MPI_Allreduce(MPI_IN_PLACE, &time_us, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);

    std::int64_t wrong = -1;
    if (args.check) {
      perf::fill_pattern(pattern, args.type, data, count, rank);
      if (out_of_place) std::memcpy(send_buffer.data(), data, bytes);
      allreduce(in, data, count, args.type, args.op, ranks);
      wrong = perf::count_wrong(pattern, args.type, data, count);
      MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
      wrong_total += wrong;
    }
    if (printer) {
      busbw_sum += perf::print_row(stdout, bytes, args.type, args.op, time_us, ranks, wrong);
    }
  }
  double peak_max = static_cast<double>(perf::peak_rss_bytes());
  MPI_Allreduce(MPI_IN_PLACE, &peak_max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
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
  MPI_Init(&argc, &argv);
  int rank = 0;
  int ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);

  int status = 0;
  // --out-of-place is this program's own flag; the shared parser sees the others.
  bool out_of_place = false;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (i > 0 && std::strcmp(argv[i], "--out-of-place") == 0) {
      out_of_place = true;
    } else {
      rest.push_back(argv[i]);
    }
  }
  const perf::ParseResult parsed = perf::parse_args(static_cast<int>(rest.size()), rest.data());
  if (!parsed.error.empty()) {
    if (rank == 0) {
      std::fprintf(stderr, "mpi_allreduce_perf: %s\n%s", parsed.error.c_str(),
                   perf::usage("mpi_allreduce_perf").c_str());
    }
    status = kExitUsage;
  } else if (parsed.args.help) {
    if (rank == 0) std::fputs(perf::usage("mpi_allreduce_perf").c_str(), stdout);
  } else if (mpi_type(parsed.args.type) == MPI_DATATYPE_NULL) {
    if (rank == 0) {
      std::fprintf(stderr, "mpi_allreduce_perf: -d %s: MPI has no such type\n",
                   std::string(perf::type_name(parsed.args.type)).c_str());
    }
    status = kExitUsage;
  } else {
    try {
      status = run(parsed.args, rank, ranks, out_of_place);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mpi_allreduce_perf: rank %d: %s\n", rank, e.what());
      MPI_Abort(MPI_COMM_WORLD, kExitError);
    }
  }
  MPI_Finalize();
  return status;
}
