// SPDX-License-Identifier: Apache-2.0
// Shared by allreduce_perf and mpi_allreduce_perf: nccl-tests flags, sizes, data patterns, table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "include/ringlet/ringlet.hpp"

// Header-only use of the public API (enums and the 16-bit storage types): nothing here calls
// into libringlet, so mpi_allreduce_perf does not link it.
namespace ringlet::perf {

// The command line, with nccl-tests' defaults.
struct PerfArgs {
  std::size_t min_bytes = 32 * 1024 * 1024;  // -b
  std::size_t max_bytes = 32 * 1024 * 1024;  // -e
  std::size_t step_factor = 2;               // -f
  int iters = 20;                            // -n
  int warmup_iters = 5;                      // -w
  int agg_iters = 1;                         // -m: collectives issued back to back per iteration
  bool blocking = false;                     // -z: 1 calls the blocking form, 0 async + wait
  bool check = true;                         // -c
  DataType type = DataType::float32;         // -d
  ReduceOp op = ReduceOp::sum;               // -o
  std::string algo;                          // --algo; empty: not given
  std::string memory = "host";               // --memory host|cuda
  bool help = false;                         // -h
};

// The outcome of parse_args: either args, or a message for stderr (then exit 2).
struct ParseResult {
  PerfArgs args;
  std::string error;  // empty: success
};

// Parses argv[1..] in nccl-tests spellings: "-b 8", "-b8", "--minbytes 8", "--minbytes=8".
ParseResult parse_args(const std::vector<std::string_view>& argv);
ParseResult parse_args(int argc, char** argv);

// The usage text (flags, defaults, exit codes) for `program`.
std::string usage(std::string_view program);

// "8", "8K", "64M", "1G" (also lower case): powers of 1024 as nccl-tests. nullopt on garbage,
// a negative number or overflow.
std::optional<std::size_t> parse_size(std::string_view text);

// Type and op names with nccl-tests' aliases ("float", "float32", "fp32"; "int", "int32"...).
std::optional<DataType> parse_type(std::string_view text);
std::optional<ReduceOp> parse_op(std::string_view text);

// The names printed in the table: nccl-tests' ("float", "half", "bfloat16", "int32", ...).
std::string_view type_name(DataType type);
std::string_view op_name(ReduceOp op);
std::size_t type_size(DataType type);

// The byte sizes of the rows: from min_bytes to max_bytes, multiplying by step_factor, each
// rounded down to a multiple of the element size, without repeats. A size of 0 is followed
// by 1 (so -b 0 measures the empty allreduce once and then carries on).
std::vector<std::size_t> row_sizes(const PerfArgs& args);

// IEEE binary16 and bfloat16 conversions, rounding to nearest even.
std::uint16_t float_to_half(float value);
float half_to_float(std::uint16_t bits);
std::uint16_t float_to_bfloat16(float value);
float bfloat16_to_float(std::uint16_t bits);

// The deterministic data of the check. Element i of rank r is pattern_value(i, r); every
// value, every partial reduction and the result are small integers (or 1/n multiples of one,
// for avg) that the type represents exactly, whatever the order of the reduction.
class Pattern {
 public:
  Pattern(DataType type, ReduceOp op, int ranks);

  double value(std::size_t index, int rank) const;
  // The exact reduction over all ranks of element `index`.
  double expected(std::size_t index) const { return expected_[index % period_]; }
  // Largest allowed |result - expected|: 0 except for avg (see perf_common.cpp).
  double tolerance(std::size_t index) const;
  // value(i, r) depends on (i + r) % period() only.
  std::size_t period() const noexcept { return period_; }

 private:
  DataType type_;
  ReduceOp op_;
  int ranks_;
  std::size_t period_ = 1;
  bool zero_one_ = false;  // sum/avg with more ranks than the type sums exactly: one 1, rest 0
  std::vector<double> expected_;
};

// Writes rank `rank`'s check data into `count` elements of `type` at `data`.
void fill_pattern(const Pattern& pattern, DataType type, void* data, std::size_t count, int rank);
// Writes data that an in-place reduction repeated many times keeps finite and free of
// integer overflow (0 for sum, 1 for prod, the check data otherwise): the timed runs use it.
void fill_for_timing(const Pattern& pattern, DataType type, ReduceOp op, void* data,
                     std::size_t count, int rank);
// Counts the elements that differ from the pattern's expected result.
std::int64_t count_wrong(const Pattern& pattern, DataType type, const void* data,
                         std::size_t count);

// Rank 0's output, in nccl-tests' shape: '#' lines, then one row per size.
struct RunInfo {
  std::string program;  // "allreduce_perf"
  std::string library;  // "ringlet 0.1.0", "Open MPI 4.1.4"
  int ranks = 1;
  int nodes = 1;
  std::string algo;  // what was asked for, or a note
};
void print_header(std::FILE* out, const PerfArgs& args, const RunInfo& info);
// One row. `wrong` < 0 prints N/A (check disabled). Returns busbw in GB/s.
double print_row(std::FILE* out, std::size_t bytes, DataType type, ReduceOp op, double time_us,
                 int ranks, std::int64_t wrong);
// busbw of one row: algbw * 2(n-1)/n, algbw = bytes / time (GB = 1e9 bytes).
double algbw_gbs(std::size_t bytes, double time_us);
double busbw_gbs(std::size_t bytes, double time_us, int ranks);
void print_footer(std::FILE* out, double busbw_sum, int rows, std::int64_t wrong_total, bool check,
                  std::size_t buffer_bytes);

// False when a launcher's rank variable names a rank other than 0: lets every rank but one
// keep quiet about a bad command line before the communicator exists.
bool launcher_rank_is_zero();

// Peak resident set of this process in bytes (getrusage ru_maxrss).
std::size_t peak_rss_bytes();

// Page-aligned buffer of at least `bytes` (one page when 0), every page touched once so that
// first-touch page faults stay out of the timed loop.
class Buffer {
 public:
  explicit Buffer(std::size_t bytes);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const noexcept { return data_; }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace ringlet::perf
