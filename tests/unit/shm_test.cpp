// SPDX-License-Identifier: Apache-2.0
// Tests of the shared-memory local group: local ranks as threads and as forked processes. The
// interface contract is checked for every group by local_group_conformance.hpp; these tests
// cover what is particular to shm (segments, processes, chunk sizes, waits).
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "groups/shm/group.hpp"
#include "src/bootstrap/store.hpp"
#include "src/common/partition.hpp"
#include "src/common/str_cat.hpp"
#include "src/common/unique_fd.hpp"
#include "src/engine/task.hpp"
#include "src/exec/executor.hpp"
#include "src/fingerprint.hpp"

namespace ringlet::groups::shm {
namespace {

using namespace std::chrono_literals;

// Unique per test process and call: the pid in the high bits.
std::uint64_t unique_job_id() {
  static std::atomic<std::uint32_t> counter{0};
  return (static_cast<std::uint64_t>(::getpid()) << 32) | counter++;
}

ShmOptions options_for(int local_rank, int local_size, std::uint64_t job,
                       std::shared_ptr<bootstrap::Store> store, std::size_t chunk_bytes = 0) {
  ShmOptions o;
  o.local_rank = local_rank;
  o.local_size = local_size;
  o.job.rank = 100 + local_rank;  // global ranks differ from local ones, to check messages
  o.job.size = 100 + local_size;
  for (int j = 0; j < local_size; ++j) o.local_to_global.push_back(100 + j);
  o.job.job_id = job;
  o.store = std::move(store);
  o.chunk_bytes = chunk_bytes;
  return o;
}

Deadline in(std::chrono::milliseconds d) { return Clock::now() + d; }

// A rank's group as its communicator calls it: every call carries the fingerprint of a
// collective of its own (the next sequence number) and the host executor. Blocking by
// default; polled() drives each call's task as the progress engine does (advance, and while
// it is suspended, sleep on its Pollable), counting the suspensions and recording the peer
// awaited in `record`.
class Calls {
 public:
  explicit Calls(ShmGroup& g) : g_(g) {}
  int local_rank() const { return g_.local_rank(); }
  int local_size() const { return g_.local_size(); }
  const std::string& segment_name() const { return g_.segment_name(); }
  ShmGroup& group() { return g_; }
  void polled(bool on) { polled_ = on; }
  int suspensions() const { return suspensions_; }
  engine::AwaitRecord record;
  // Called by a polled call at each suspension (after the first advance()).
  std::function<void(const engine::Driver&)> on_suspend;

  void allreduce(void* data, std::size_t count, DataType type, ReduceOp op, Deadline d) {
    const Fingerprint fp = next(CollectiveKind::allreduce, count, type, op, -1);
    if (!polled_) return g_.allreduce(data, count, type, op, exec::host_executor(), fp, d);
    drive(d, [&](engine::Driver& dr) {
      return g_.allreduce(data, count, type, op, exec::host_executor(), fp, dr);
    });
  }
  void reduce_scatter(void* data, std::size_t count, DataType type, ReduceOp op, Deadline d) {
    const Fingerprint fp = next(CollectiveKind::reduce_scatter, count, type, op, -1);
    if (!polled_) return g_.reduce_scatter(data, count, type, op, exec::host_executor(), fp, d);
    drive(d, [&](engine::Driver& dr) {
      return g_.reduce_scatter(data, count, type, op, exec::host_executor(), fp, dr);
    });
  }
  void allgather(void* data, std::size_t count, DataType type, Deadline d) {
    const Fingerprint fp = next(CollectiveKind::allgather, count, type, ReduceOp::sum, -1);
    if (!polled_) return g_.allgather(data, count, type, exec::host_executor(), fp, d);
    drive(d, [&](engine::Driver& dr) {
      return g_.allgather(data, count, type, exec::host_executor(), fp, dr);
    });
  }
  void broadcast(void* data, std::size_t bytes, int root, Deadline d) {
    const Fingerprint fp =
        next(CollectiveKind::broadcast, bytes, DataType::uint8, ReduceOp::sum, root);
    if (!polled_) return g_.broadcast(data, bytes, root, exec::host_executor(), fp, d);
    drive(d, [&](engine::Driver& dr) {
      return g_.broadcast(data, bytes, root, exec::host_executor(), fp, dr);
    });
  }
  void barrier(Deadline d) {
    const Fingerprint fp = next(CollectiveKind::barrier, 0, DataType::uint8, ReduceOp::max, -1);
    if (!polled_) return g_.barrier(fp, d);
    drive(d, [&](engine::Driver& dr) { return g_.barrier(fp, dr); });
  }

 private:
  Fingerprint next(CollectiveKind kind, std::size_t count, DataType type, ReduceOp op, int root) {
    return Fingerprint{++seq_, kind, type, op, root, count};
  }
  template <class Make>
  void drive(Deadline deadline, Make&& make) {
    engine::Driver d;
    d.blocking = false;
    d.deadline = deadline;
    d.record = &record;
    record.reset();
    engine::Task t = make(d);
    while (!engine::advance(t, d)) {
      // Suspended: on a shared-memory wait, never on a transport request.
      if (d.pollable == nullptr || d.conn != nullptr) {
        throw std::logic_error("a polled group task suspended without its Pollable");
      }
      ++suspensions_;
      if (on_suspend) on_suspend(d);
      d.pollable->sleep(std::chrono::milliseconds(2));
    }
  }
  ShmGroup& g_;
  std::uint64_t seq_ = 0;
  bool polled_ = false;
  int suspensions_ = 0;
};

// Names in /dev/shm that contain `part`.
std::vector<std::string> shm_entries(const std::string& part) {
  std::vector<std::string> found;
  DIR* d = ::opendir("/dev/shm");
  if (d == nullptr) return found;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.find(part) != std::string::npos) found.push_back(n);
  }
  ::closedir(d);
  return found;
}

// Runs body(group) on `size` threads, one local rank each, sharing a MapStore; rethrows
// nothing: every exception is returned per rank.
std::vector<std::exception_ptr> run_threads(int size, const std::function<void(Calls&)>& body,
                                            std::size_t chunk_bytes = 0,
                                            const std::function<void(ShmOptions&)>& tweak = {}) {
  auto store = bootstrap::make_hash_store();
  const std::uint64_t job = unique_job_id();
  std::vector<std::exception_ptr> errors(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        ShmOptions o = options_for(r, size, job, store, chunk_bytes);
        if (tweak) tweak(o);
        auto group = ShmGroup::create(o, in(30s));
        Calls calls(*group);
        body(calls);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

void expect_no_errors(const std::vector<std::exception_ptr>& errors) {
  for (std::size_t r = 0; r < errors.size(); ++r) {
    if (!errors[r]) continue;
    try {
      std::rethrow_exception(errors[r]);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "local rank " << r << " threw: " << e.what();
    }
  }
}

ErrorCode code_of(const std::exception_ptr& p, std::string* what = nullptr) {
  try {
    std::rethrow_exception(p);
  } catch (const Error& e) {
    if (what != nullptr) *what = e.what();
    return e.error_code();
  } catch (...) {
  }
  return ErrorCode::invalid_argument;
}

// Exit status of a forked rank: 0 on success, 10 + ErrorCode for a ringlet::Error, 2 for a
// wrong result, 3 for any other exception.
constexpr int kWrongResult = 2;
int exit_code_of(const Error& e) { return 10 + static_cast<int>(e.error_code()); }

struct ForkResult {
  std::vector<int> codes;  // per rank: exit code, or 128 + signal
  std::chrono::milliseconds elapsed{};
};

// Runs body(local_rank, store) in `size` forked processes sharing a file store. `during`, if
// given, runs in the parent with the children's pids before they are reaped. Children still
// running after `limit` are killed and reported as -1.
ForkResult run_forked(
    int size, const std::function<int(int, std::shared_ptr<bootstrap::Store>, std::uint64_t)>& body,
    std::chrono::milliseconds limit,
    const std::function<void(std::vector<pid_t>&, const std::string&)>& during = {}) {
  char tmpl[] = "/tmp/ringlet-shm-test-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  const std::uint64_t job = unique_job_id();
  std::vector<pid_t> pids;
  for (int r = 0; r < size; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int code = 3;
      try {
        code = body(r, bootstrap::make_file_store(dir), job);
      } catch (const Error& e) {
        code = exit_code_of(e);
      } catch (...) {
        code = 3;
      }
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  const auto start = Clock::now();
  ForkResult result;
  try {
    if (during) during(pids, dir);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "test driver failed: " << e.what();
    limit = std::chrono::milliseconds(0);  // kill the children below, do not wait for them
  }
  result.codes.assign(size, -1);
  int left = 0;
  for (pid_t p : pids) left += p > 0 ? 1 : 0;  // `during` may have reaped some
  while (left > 0 && Clock::now() - start < limit) {
    for (int r = 0; r < size; ++r) {
      if (pids[r] <= 0) continue;
      int status = 0;
      if (::waitpid(pids[r], &status, WNOHANG) == pids[r]) {
        result.codes[r] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        pids[r] = -1;
        --left;
      }
    }
    std::this_thread::sleep_for(5ms);
  }
  result.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  for (pid_t p : pids) {
    if (p > 0) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
  }
  std::filesystem::remove_all(dir);
  return result;
}

// The value rank r contributes at index i: small integers, exact in every type.
template <class T>
T value_of(int r, std::size_t i) {
  return static_cast<T>(static_cast<int>((r * 7 + i * 13) % 23) - 11);
}

template <class T>
T apply(ReduceOp op, T a, T b) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg:
      return a + b;
    case ReduceOp::prod:
      return a * b;
    case ReduceOp::min:
      return b < a ? b : a;
    case ReduceOp::max:
      return a < b ? b : a;
  }
  return a;
}

// Allreduces `count` elements of T with `op` on local rank `r` of `size` and checks every
// element against a serial fold over the ranks; returns "" or a description of the first
// difference.
template <class T>
std::string check_allreduce(Calls& g, std::size_t count, ReduceOp op) {
  const int r = g.local_rank(), size = g.local_size();
  std::vector<T> data(count);
  for (std::size_t i = 0; i < count; ++i) data[i] = value_of<T>(r, i);
  g.allreduce(data.data(), count, data_type_of<T>(), op, in(60s));
  for (std::size_t i = 0; i < count; ++i) {
    T want = value_of<T>(0, i);
    for (int s = 1; s < size; ++s) want = apply(op, want, value_of<T>(s, i));
    if (data[i] != want) {
      return "count " + std::to_string(count) + " op " + std::to_string(static_cast<int>(op)) +
             " index " + std::to_string(i) + ": got " + std::to_string(data[i]) + " want " +
             std::to_string(want);
    }
  }
  return "";
}

// The shards of the group are split_begin's parts (src/common/partition.hpp).
std::pair<std::size_t, std::size_t> shard_of(std::size_t count, int size, int i) {
  const auto l = static_cast<std::size_t>(size), k = static_cast<std::size_t>(i);
  return {split_begin(count, l, k), split_begin(count, l, k + 1)};
}

TEST(ShmShards, ContiguousAndBalanced) {
  for (int size : {1, 2, 3, 4, 5, 8}) {
    for (std::size_t count : {0UL, 1UL, 2UL, 7UL, 8UL, 9UL, 1000003UL}) {
      std::size_t next = 0, lo = count, hi = 0;
      for (int i = 0; i < size; ++i) {
        auto [b, e] = shard_of(count, size, i);
        EXPECT_EQ(b, next);
        next = e;
        lo = std::min(lo, e - b);
        hi = std::max(hi, e - b);
      }
      EXPECT_EQ(next, count);
      EXPECT_LE(hi - lo, 1U);
    }
  }
}

struct Param {
  int size;
  std::size_t chunk_bytes;
};

class ShmThreads : public ::testing::TestWithParam<Param> {};

std::vector<std::size_t> counts_for(int size, bool large) {
  std::vector<std::size_t> c{
      0,    1,    static_cast<std::size_t>(size - 1), static_cast<std::size_t>(size + 1), 97,
      4099, 65537};
  if (large) c.push_back(std::size_t{1} << 20);
  return c;
}

TEST_P(ShmThreads, AllreduceMatchesSerialReference) {
  // Not a structured binding: clang before 16 cannot capture one in a lambda.
  const int size = GetParam().size;
  [[maybe_unused]] const std::size_t chunk = GetParam().chunk_bytes;
  auto errors = run_threads(
      size,
      [&, size = size, chunk = chunk](Calls& g) {
        for (std::size_t count : counts_for(size, chunk == 0)) {
          for (ReduceOp op : {ReduceOp::sum, ReduceOp::min, ReduceOp::max}) {
            for (const std::string& diff :
                 {check_allreduce<float>(g, count, op), check_allreduce<std::int32_t>(g, count, op),
                  check_allreduce<std::int64_t>(g, count, op),
                  check_allreduce<double>(g, count, op)}) {
              EXPECT_EQ(diff, "") << "local rank " << g.local_rank();
            }
          }
        }
      },
      chunk);
  expect_no_errors(errors);
}

TEST_P(ShmThreads, ReduceScatterThenAllgatherEqualsAllreduce) {
  // Not a structured binding: clang before 16 cannot capture one in a lambda.
  const int size = GetParam().size;
  [[maybe_unused]] const std::size_t chunk = GetParam().chunk_bytes;
  auto errors = run_threads(
      size,
      [&](Calls& g) {
        std::mt19937 gen(1234 + g.local_rank());
        std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
        for (std::size_t count :
             {std::size_t{1}, std::size_t(size + 1), std::size_t{4099}, std::size_t{300007}}) {
          std::vector<float> in_data(count);
          for (float& x : in_data) x = dist(gen);
          std::vector<float> a = in_data, b = in_data;
          g.allreduce(a.data(), count, DataType::float32, ReduceOp::sum, in(60s));
          g.reduce_scatter(b.data(), count, DataType::float32, ReduceOp::sum, in(60s));
          auto [first, end] = shard_of(count, g.local_size(), g.local_rank());
          EXPECT_EQ(std::memcmp(a.data() + first, b.data() + first, (end - first) * sizeof(float)),
                    0)
              << "reduce_scatter shard differs, count " << count;
          g.allgather(b.data(), count, DataType::float32, in(60s));
          EXPECT_EQ(std::memcmp(a.data(), b.data(), count * sizeof(float)), 0)
              << "allgather differs, count " << count;
        }
      },
      chunk);
  expect_no_errors(errors);
}

TEST_P(ShmThreads, BroadcastFromEachRoot) {
  // Not a structured binding: clang before 16 cannot capture one in a lambda.
  const int size = GetParam().size;
  [[maybe_unused]] const std::size_t chunk = GetParam().chunk_bytes;
  auto errors = run_threads(
      size,
      [&, size = size](Calls& g) {
        for (std::size_t bytes :
             {std::size_t{0}, std::size_t{1}, std::size_t{13}, ShmGroup::kSmallBytes,
              ShmGroup::kSmallBytes + 1, (std::size_t{1} << 20) + 3}) {
          for (int root = 0; root < size; ++root) {
            std::vector<std::uint8_t> data(bytes);
            for (std::size_t i = 0; i < bytes; ++i) {
              data[i] = static_cast<std::uint8_t>(g.local_rank() == root ? i * 31 + root : 0xee);
            }
            g.broadcast(data.data(), bytes, root, in(60s));
            for (std::size_t i = 0; i < bytes; ++i) {
              if (data[i] != static_cast<std::uint8_t>(i * 31 + root)) {
                ADD_FAILURE() << "bytes " << bytes << " root " << root << " index " << i;
                break;
              }
            }
          }
        }
      },
      chunk);
  expect_no_errors(errors);
}

TEST_P(ShmThreads, BarrierOrdersEveryRank) {
  // Not a structured binding: clang before 16 cannot capture one in a lambda.
  const int size = GetParam().size;
  [[maybe_unused]] const std::size_t chunk = GetParam().chunk_bytes;
  std::atomic<int> arrived{0};
  auto errors = run_threads(
      size,
      [&, size = size](Calls& g) {
        for (int round = 1; round <= 20; ++round) {
          arrived.fetch_add(1);
          g.barrier(in(30s));
          EXPECT_GE(arrived.load(), round * size);
          g.barrier(in(30s));
        }
      },
      chunk);
  expect_no_errors(errors);
}

TEST_P(ShmThreads, NoSegmentLeftAfterCreate) {
  // Not a structured binding: clang before 16 cannot capture one in a lambda.
  const int size = GetParam().size;
  [[maybe_unused]] const std::size_t chunk = GetParam().chunk_bytes;
  std::atomic<int> created{0};
  auto errors = run_threads(
      size,
      [&, size = size](Calls& g) {
        created.fetch_add(1);
        std::string name = g.segment_name();
        // Every rank's create() has returned once the barrier completes.
        g.barrier(in(30s));
        if (size > 1) {
          ASSERT_FALSE(name.empty());
          EXPECT_TRUE(shm_entries(name.substr(1)).empty()) << name << " is still in /dev/shm";
        }
      },
      chunk);
  expect_no_errors(errors);
  EXPECT_EQ(created.load(), size);
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return "L" + std::to_string(info.param.size) +
         (info.param.chunk_bytes == 0 ? std::string("_default_chunk")
                                      : "_chunk" + std::to_string(info.param.chunk_bytes));
}

INSTANTIATE_TEST_SUITE_P(Sizes, ShmThreads,
                         ::testing::Values(Param{1, 0}, Param{2, 0}, Param{3, 0}, Param{4, 0},
                                           Param{5, 0}, Param{8, 0}, Param{2, 4096}, Param{3, 4096},
                                           Param{5, 4096}, Param{8, 4096}),
                         param_name);

TEST(ShmThreadsLarge, Allreduce16MiB) {
  auto errors = run_threads(4, [](Calls& g) {
    EXPECT_EQ(check_allreduce<float>(g, std::size_t{4} << 20, ReduceOp::sum), "");
  });
  expect_no_errors(errors);
}

TEST(ShmThreadsErrors, MismatchedCountsFailEveryRank) {
  // Counts that differ on the small path, across the small/large boundary, and kinds.
  struct Case {
    std::size_t other_count;
    bool other_broadcast;
    std::string other_call;  // how the message names local rank 1's call
  };
  for (const Case& c : {Case{5, false, "allreduce(count=5, float32, sum)"},
                        Case{std::size_t{1} << 20, false, "allreduce(count=1048576, float32, sum)"},
                        Case{4, true, "broadcast(count=16, uint8, root=0)"}}) {
    auto errors = run_threads(3, [&](Calls& g) {
      std::vector<float> data(std::size_t{1} << 20, 1.0f);
      if (g.local_rank() == 1 && c.other_broadcast) {
        g.broadcast(data.data(), 16, 0, in(10s));
      } else {
        std::size_t count = g.local_rank() == 1 ? c.other_count : 4;
        g.allreduce(data.data(), count, DataType::float32, ReduceOp::sum, in(10s));
      }
    });
    for (int r = 0; r < 3; ++r) {
      ASSERT_TRUE(errors[r]) << "local rank " << r << " did not throw";
      std::string what;
      EXPECT_EQ(code_of(errors[r], &what), ErrorCode::mismatch) << what;
      EXPECT_NE(what.find("local rank 1 (rank 101) called " + c.other_call + " as collective #1"),
                std::string::npos)
          << what;
      EXPECT_NE(what.find("local rank 0 (rank 100) called allreduce(count=4, float32, sum)"),
                std::string::npos)
          << what;
    }
  }
}

// The hierarchical allreduce runs several steps under one fingerprint of the communicator;
// the local ranks still compare each step's own arguments.
TEST(ShmThreadsErrors, SameFingerprintDifferentStepFailsEveryRank) {
  const Fingerprint fp{7, CollectiveKind::allreduce, DataType::float32, ReduceOp::sum, -1, 1000};
  std::atomic<int> mismatches{0};
  auto store = bootstrap::make_hash_store();
  const std::uint64_t job = unique_job_id();
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      auto g = ShmGroup::create(options_for(r, 3, job, store), in(30s));
      std::vector<float> data(100, 1.0f);
      const std::size_t count = r == 1 ? 8 : 9;
      try {
        g->reduce_scatter(data.data(), count, DataType::float32, ReduceOp::sum,
                          exec::host_executor(), fp, in(10s));
        ADD_FAILURE() << "local rank " << r << " did not throw";
      } catch (const Error& e) {
        EXPECT_EQ(e.error_code(), ErrorCode::mismatch) << e.what();
        const std::string what = e.what();
        EXPECT_NE(what.find("in shared memory: reduce_scatter(count=8, float32, sum) as call #1 "
                            "against reduce_scatter(count=9, float32, sum) as call #1"),
                  std::string::npos)
            << what;
        mismatches.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 3);
}

// Config's spin and yield rounds reach the waits: with none, every wait sleeps on the futex
// at once, and the results are the same.
TEST(ShmThreadsWaits, NoSpinNoYieldStillCorrect) {
  for (bool oversubscribed : {false, true}) {
    auto errors = run_threads(
        3,
        [](Calls& g) {
          for (std::size_t count : {std::size_t{1}, std::size_t{4099}, std::size_t{300007}}) {
            EXPECT_EQ(check_allreduce<float>(g, count, ReduceOp::sum), "");
            EXPECT_EQ(check_allreduce<std::int32_t>(g, count, ReduceOp::max), "");
          }
          g.barrier(in(30s));
        },
        4096,
        [&](ShmOptions& o) {
          o.spin = 0;
          o.yields = 0;
          o.oversubscribed = oversubscribed;
        });
    expect_no_errors(errors);
  }
}

TEST(ShmThreadsErrors, AbortFlagWakesWaiter) {
  std::atomic<bool> abort_rank0{false};
  std::chrono::milliseconds waited{};
  std::atomic<bool> rank0_done{false};
  auto errors = run_threads(
      2,
      [&](Calls& g) {
        if (g.local_rank() == 0) {
          std::thread aborter([&] {
            std::this_thread::sleep_for(200ms);
            abort_rank0.store(true);  // no interrupt(): the wait must notice by itself
          });
          auto start = Clock::now();
          try {
            g.barrier(in(30s));
          } catch (...) {
            waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
            aborter.join();
            rank0_done = true;
            throw;
          }
          aborter.join();
        } else {
          while (!rank0_done) std::this_thread::sleep_for(5ms);
          g.barrier(in(30s));  // the peer failed: peer_lost at once
        }
      },
      0,
      [&](ShmOptions& o) {
        if (o.local_rank == 0) o.job.abort_flag = &abort_rank0;
      });
  ASSERT_TRUE(errors[0]);
  ASSERT_TRUE(errors[1]);
  EXPECT_EQ(code_of(errors[0]), ErrorCode::aborted);
  EXPECT_EQ(code_of(errors[1]), ErrorCode::peer_lost);
  EXPECT_LT(waited, 1500ms);
}

TEST(ShmThreadsErrors, SilentPeerTimesOutNamingIt) {
  std::atomic<bool> rank0_done{false};
  auto errors = run_threads(2, [&](Calls& g) {
    if (g.local_rank() == 0) {
      std::vector<float> data(100000, 1.0f);
      auto start = Clock::now();
      try {
        g.allreduce(data.data(), data.size(), DataType::float32, ReduceOp::sum, in(300ms));
      } catch (...) {
        EXPECT_LT(Clock::now() - start, 2s);
        rank0_done = true;
        throw;
      }
    } else {
      while (!rank0_done) std::this_thread::sleep_for(5ms);
      g.barrier(in(30s));
    }
  });
  ASSERT_TRUE(errors[0]);
  std::string what;
  EXPECT_EQ(code_of(errors[0], &what), ErrorCode::timeout);
  EXPECT_NE(what.find("local rank 1 (rank 101)"), std::string::npos) << what;
  // The peer's failure travels with its code: rank 1 learns that rank 0 timed out.
  ASSERT_TRUE(errors[1]);
  EXPECT_EQ(code_of(errors[1], &what), ErrorCode::timeout);
  EXPECT_NE(what.find("local rank 0 (rank 100) timed out"), std::string::npos) << what;
}

TEST(ShmThreadsErrors, RejectsBadRoot) {
  auto errors = run_threads(2, [](Calls& g) {
    char c = 0;
    EXPECT_THROW(g.broadcast(&c, 1, 2, in(1s)), Error);
    g.barrier(in(30s));  // the group still works
  });
  expect_no_errors(errors);
}

// Forked processes: the real deployment, one address space per rank.

int forked_allreduce_body(int r, std::shared_ptr<bootstrap::Store> store, std::uint64_t job,
                          int size) {
  auto group = ShmGroup::create(options_for(r, size, job, std::move(store)), in(30s));
  Calls calls(*group);
  Calls* g = &calls;
  if (!shm_entries(g->segment_name().substr(1)).empty()) return 4;
  for (std::size_t count : {std::size_t{1}, std::size_t{4099}, std::size_t{4} << 20}) {
    if (!check_allreduce<float>(*g, count, ReduceOp::sum).empty()) return kWrongResult;
    if (!check_allreduce<std::int64_t>(*g, count, ReduceOp::max).empty()) return kWrongResult;
  }
  g->barrier(in(30s));
  return 0;
}

TEST(ShmProcesses, AllreduceAcrossProcesses) {
  for (int size : {2, 3, 4}) {
    auto result = run_forked(
        size,
        [size](int r, std::shared_ptr<bootstrap::Store> s, std::uint64_t job) {
          return forked_allreduce_body(r, std::move(s), job, size);
        },
        60s);
    for (int r = 0; r < size; ++r) EXPECT_EQ(result.codes[r], 0) << "L=" << size << " rank " << r;
  }
}

TEST(ShmProcesses, KilledRankFailsTheOthers) {
  constexpr int kSize = 3, kVictim = 1;
  constexpr auto kTimeout = 5s;
  auto result = run_forked(
      kSize,
      [&](int r, std::shared_ptr<bootstrap::Store> store, std::uint64_t job) {
        auto group = ShmGroup::create(options_for(r, kSize, job, store), in(30s));
        Calls calls(*group);
        Calls* g = &calls;
        store->set("started/" + std::to_string(r), {});
        std::vector<float> data(std::size_t{1} << 20, 1.0f);
        // Bounded in count and in time, in case the kill never comes.
        const auto stop = Clock::now() + 20s;
        for (int i = 0; i < 100000 && Clock::now() < stop; ++i) {
          g->allreduce(data.data(), data.size(), DataType::float32, ReduceOp::sum, in(kTimeout));
        }
        return 0;
      },
      30s,
      [&](std::vector<pid_t>& pids, const std::string& dir) {
        auto store = bootstrap::make_file_store(dir);
        for (int r = 0; r < kSize; ++r) store->get("started/" + std::to_string(r), in(20s));
        std::this_thread::sleep_for(100ms);
        ::kill(pids[kVictim], SIGKILL);
        ::waitpid(pids[kVictim], nullptr, 0);
        pids[kVictim] = -1;
      });
  for (int r = 0; r < kSize; ++r) {
    if (r == kVictim) continue;
    const int code = result.codes[r];
    EXPECT_TRUE(code == 10 + static_cast<int>(ErrorCode::peer_lost) ||
                code == 10 + static_cast<int>(ErrorCode::timeout))
        << "local rank " << r << " exited with " << code;
  }
  EXPECT_LT(result.elapsed, kTimeout + 5s);
}

// --- Robustness (issue 17): what the group trusts, and /dev/shm's size ----------------

std::string what_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(ShmSegmentChecks, RefusesASegmentNameThatIsNotThisJobs) {
  // Review finding 9: local ranks opened whatever name the store held.
  auto store = bootstrap::make_hash_store();
  const std::uint64_t job = unique_job_id();
  const std::string evil = "/not-ringlet";
  store->set("shm/100/segment", std::as_bytes(std::span(evil.data(), evil.size())));
  const std::string what =
      what_of([&] { ShmGroup::create(options_for(1, 2, job, store), in(5s)); });
  EXPECT_NE(what.find("refusing it"), std::string::npos) << what;
}

TEST(ShmSegmentChecks, RefusesASegmentOtherUsersCanWrite) {
  // Review finding 9: a world-writable segment prepared by another account was accepted.
  auto store = bootstrap::make_hash_store();
  const std::uint64_t job = unique_job_id();
  const std::string name = str_cat("/ringlet-", std::hex, job, std::dec, "-100-", ::getpid());
  UniqueFd fd(::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0666));
  ASSERT_TRUE(fd) << std::strerror(errno);
  ASSERT_EQ(::fchmod(fd.get(), 0666), 0);
  store->set("shm/100/segment", std::as_bytes(std::span(name.data(), name.size())));
  const std::string what =
      what_of([&] { ShmGroup::create(options_for(1, 2, job, store), in(5s)); });
  ::shm_unlink(name.c_str());
  EXPECT_NE(what.find("accepts only its own user's segment"), std::string::npos) << what;
}

TEST(ShmSegmentChecks, ASmallDevShmIsAnErrorOnEveryLocalRankNotSigbus) {
  // Review finding 7: ftruncate reserved nothing; a 256 KiB /dev/shm killed a rank by SIGBUS.
  // In a child with its own mount namespace and a 256 KiB tmpfs on /dev/shm.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=256k") != 0) {
      ::_exit(77);
    }
    int code = 0;
    std::vector<std::string> whats(2);
    auto store = bootstrap::make_hash_store();
    const std::uint64_t job = unique_job_id();
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        whats[r] = what_of([&] {
          auto g = ShmGroup::create(options_for(r, 2, job, store), in(20s));
          Calls calls(*g);
          std::vector<float> data(std::size_t{1} << 20, 1.0f);
          calls.allreduce(data.data(), data.size(), DataType::float32, ReduceOp::sum, in(20s));
        });
      });
    }
    for (auto& t : threads) t.join();
    if (whats[0].find("/dev/shm has no room") == std::string::npos) code |= 1;
    if (whats[1].find("could not create the segment") == std::string::npos) code |= 2;
    if (code != 0)
      std::fprintf(stderr, "rank 0: %s\nrank 1: %s\n", whats[0].c_str(), whats[1].c_str());
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) GTEST_SKIP() << "no mount namespace here";
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ShmProcesses, SurvivorsNameTheKilledRankNotTheOneThatNoticed) {
  // Review: with a SIGKILLed local rank 2, survivors reported "local rank 3 failed".
  constexpr int kSize = 4, kVictim = 2;
  auto result = run_forked(
      kSize,
      [&](int r, std::shared_ptr<bootstrap::Store> store, std::uint64_t job) {
        auto group = ShmGroup::create(options_for(r, kSize, job, store), in(30s));
        Calls calls(*group);
        calls.barrier(in(30s));
        if (r == kVictim) ::raise(SIGKILL);
        std::vector<float> data(1024, 1.0f);
        try {
          calls.allreduce(data.data(), data.size(), DataType::float32, ReduceOp::sum, in(20s));
        } catch (const Error& e) {
          if (e.error_code() != ErrorCode::peer_lost || e.ranks().size() != 1) {
            std::fprintf(stderr, "local rank %d: %s\n", r, e.what());
            return 3;
          }
          if (e.ranks()[0] != 100 + kVictim)
            std::fprintf(stderr, "local rank %d: %s\n", r, e.what());
          return 50 + (e.ranks()[0] - 100);
        }
        return 4;
      },
      60s);
  for (int r = 0; r < kSize; ++r) {
    if (r == kVictim) continue;
    EXPECT_EQ(result.codes[r], 50 + kVictim) << "local rank " << r << " named another rank";
  }
}

// --- the polled form (the progress engine's) ---------------------------------------------

// Every call's task driven as the progress engine drives it on some local ranks and to
// completion on the others: the same results as the serial references, every path (small,
// chunked, broadcast, barrier) included.
TEST(ShmPolled, PolledAndBlockingRanksMatchTheReference) {
  for (const Param& param : {Param{2, 0}, Param{3, 4096}, Param{4, 0}, Param{4, 4096}}) {
    const int size = param.size;
    std::atomic<int> suspended{0};
    auto errors = run_threads(
        size,
        [&](Calls& g) {
          g.polled(g.local_rank() % 2 == 0);
          for (std::size_t count : counts_for(size, param.chunk_bytes == 0)) {
            EXPECT_EQ(check_allreduce<float>(g, count, ReduceOp::sum), "") << "size " << size;
            EXPECT_EQ(check_allreduce<std::int64_t>(g, count, ReduceOp::max), "");
            std::vector<double> a(count), b(count);
            for (std::size_t i = 0; i < count; ++i)
              a[i] = b[i] = value_of<double>(g.local_rank(), i);
            g.allreduce(a.data(), count, DataType::float64, ReduceOp::sum, in(60s));
            g.reduce_scatter(b.data(), count, DataType::float64, ReduceOp::sum, in(60s));
            g.allgather(b.data(), count, DataType::float64, in(60s));
            EXPECT_TRUE(count == 0 || std::memcmp(a.data(), b.data(), count * sizeof(double)) == 0)
                << "size " << size << " count " << count;
            for (int root = 0; root < size; ++root) {
              std::vector<std::uint8_t> data(count * 3 + 1);
              for (std::size_t i = 0; i < data.size(); ++i) {
                data[i] = static_cast<std::uint8_t>(g.local_rank() == root ? i * 31 + root : 0xee);
              }
              g.broadcast(data.data(), data.size(), root, in(60s));
              for (std::size_t i = 0; i < data.size(); ++i) {
                if (data[i] != static_cast<std::uint8_t>(i * 31 + root)) {
                  ADD_FAILURE() << "broadcast of " << data.size() << " from " << root << " index "
                                << i;
                  break;
                }
              }
            }
            g.barrier(in(30s));
          }
          suspended.fetch_add(g.suspensions());
        },
        param.chunk_bytes);
    expect_no_errors(errors);
    // The polled ranks did suspend (else this test would not test the polled form).
    EXPECT_GT(suspended.load(), 0) << "size " << size;
  }
}

// A polled task waiting for a late peer suspends, records the peer's global rank, and the
// driver sleeps on the futex rather than spinning: a bounded number of polls in 300 ms.
TEST(ShmPolled, SuspendsAndRecordsTheGlobalRankAwaited) {
  std::atomic<int> peer_seen{-1};
  std::atomic<int> polls{0};
  auto errors = run_threads(2, [&](Calls& g) {
    if (g.local_rank() == 1) {
      std::this_thread::sleep_for(300ms);
      g.barrier(in(30s));
      return;
    }
    g.polled(true);
    g.on_suspend = [&](const engine::Driver& d) {
      if (d.record != nullptr) peer_seen.store(d.record->peer.load());
    };
    g.barrier(in(30s));
    polls.store(g.suspensions());
    EXPECT_EQ(g.record.peer.load(), -1);  // done: no peer awaited
    EXPECT_GE(g.record.step.load(), 1u);
  });
  expect_no_errors(errors);
  EXPECT_EQ(peer_seen.load(), 101);  // local rank 1 is global rank 101
  EXPECT_GE(polls.load(), 1);
  // 300 ms in sleeps of at most 2 ms: about 150 polls, never a busy loop.
  EXPECT_LT(polls.load(), 2000);
}

// abort() of a rank (its abort flag and the group's interrupt()) wakes its suspended task at
// once; the peer hears that the rank failed.
TEST(ShmPolled, AbortWakesASuspendedTask) {
  std::atomic<bool> abort_rank0{false};
  std::atomic<bool> rank0_done{false};
  std::chrono::milliseconds waited{};
  auto errors = run_threads(
      2,
      [&](Calls& g) {
        if (g.local_rank() == 1) {
          while (!rank0_done) std::this_thread::sleep_for(5ms);
          g.barrier(in(30s));  // the peer failed: peer_lost at once
          return;
        }
        g.polled(true);
        std::thread aborter([&] {
          std::this_thread::sleep_for(200ms);
          abort_rank0.store(true);
          g.group().interrupt();
        });
        const auto start = Clock::now();
        try {
          g.barrier(in(30s));
        } catch (...) {
          waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
          aborter.join();
          rank0_done = true;
          throw;
        }
        aborter.join();
        rank0_done = true;
      },
      0,
      [&](ShmOptions& o) {
        if (o.local_rank == 0) o.job.abort_flag = &abort_rank0;
      });
  ASSERT_TRUE(errors[0]);
  ASSERT_TRUE(errors[1]);
  std::string what;
  EXPECT_EQ(code_of(errors[0], &what), ErrorCode::aborted) << what;
  EXPECT_EQ(code_of(errors[1], &what), ErrorCode::peer_lost) << what;
  EXPECT_NE(what.find("local rank 0 (rank 100)"), std::string::npos) << what;
  EXPECT_LT(waited, 1000ms);
}

// The deadline of a suspended task: timeout naming the local rank awaited (with its global
// rank); the peer learns that this rank timed out.
TEST(ShmPolled, DeadlineWhileSuspendedNamesThePeer) {
  std::atomic<bool> rank0_done{false};
  auto errors = run_threads(2, [&](Calls& g) {
    if (g.local_rank() == 1) {
      while (!rank0_done) std::this_thread::sleep_for(5ms);
      g.barrier(in(30s));
      return;
    }
    g.polled(true);
    std::vector<float> data(100000, 1.0f);
    const auto start = Clock::now();
    try {
      g.allreduce(data.data(), data.size(), DataType::float32, ReduceOp::sum, in(300ms));
    } catch (...) {
      EXPECT_LT(Clock::now() - start, 2s);
      rank0_done = true;
      throw;
    }
    rank0_done = true;
  });
  ASSERT_TRUE(errors[0]);
  std::string what;
  EXPECT_EQ(code_of(errors[0], &what), ErrorCode::timeout);
  EXPECT_NE(what.find("timed out waiting for local rank 1 (rank 101)"), std::string::npos) << what;
  ASSERT_TRUE(errors[1]);
  EXPECT_EQ(code_of(errors[1], &what), ErrorCode::timeout);
  EXPECT_NE(what.find("local rank 0 (rank 100) timed out"), std::string::npos) << what;
}

// mark_lost() by another local rank while a task is suspended: the task fails at once with
// "local rank X (rank Y) was lost", naming the lost rank, not the reporter.
TEST(ShmPolled, PeerReportedLostWhileSuspended) {
  std::atomic<bool> rank0_done{false};
  std::chrono::milliseconds waited{};
  auto errors = run_threads(3, [&](Calls& g) {
    if (g.local_rank() == 1) {
      // Lost: never joins; leaves once rank 0 has its error.
      while (!rank0_done) std::this_thread::sleep_for(5ms);
      return;
    }
    if (g.local_rank() == 2) {
      std::this_thread::sleep_for(200ms);
      g.group().mark_lost(ErrorCode::peer_lost, 101);
      return;
    }
    g.polled(true);
    const auto start = Clock::now();
    try {
      g.barrier(in(30s));
    } catch (...) {
      waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      rank0_done = true;
      throw;
    }
    rank0_done = true;
  });
  ASSERT_TRUE(errors[0]);
  std::string what;
  EXPECT_EQ(code_of(errors[0], &what), ErrorCode::peer_lost) << what;
  EXPECT_NE(what.find("local rank 1 (rank 101) was lost (noticed by local rank 2 (rank 102))"),
            std::string::npos)
      << what;
  EXPECT_LT(waited, 1000ms);
}

// A local peer process that dies while a polled task waits for it: peer_lost naming it,
// after about a second (the liveness check), well before the deadline.
TEST(ShmPolledProcesses, DeadPeerFailsASuspendedTask) {
  auto result = run_forked(
      2,
      [](int r, std::shared_ptr<bootstrap::Store> store, std::uint64_t job) -> int {
        auto g = ShmGroup::create(options_for(r, 2, job, store), in(30s));
        Calls calls(*g);
        calls.barrier(in(30s));
        if (r == 1) {
          std::this_thread::sleep_for(100ms);
          ::kill(::getpid(), SIGKILL);
        }
        calls.polled(true);
        try {
          calls.barrier(in(30s));
        } catch (const Error& e) {
          const std::string what = e.what();
          if (what.find("local rank 1 (rank 101)") == std::string::npos) return kWrongResult;
          throw;
        }
        return 0;
      },
      60s);
  EXPECT_EQ(result.codes[0], 10 + static_cast<int>(ErrorCode::peer_lost));
  EXPECT_EQ(result.codes[1], 128 + SIGKILL);
  EXPECT_LT(result.elapsed, 10s);
}

}  // namespace
}  // namespace ringlet::groups::shm
