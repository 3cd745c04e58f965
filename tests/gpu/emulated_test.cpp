// SPDX-License-Identifier: Apache-2.0
// Suite gpu-emulated: CUDA-memory collectives on the emulated device (src/exec/emulated.hpp),
// ranks as threads. The full correctness matrix (DataType x ReduceOp x sizes x 2-4 ranks)
// against exact references, the stream ordering of NCCL's semantics (an emulated kernel writes
// the input before the call, another reads the output after it, no host synchronisation in
// between, with injected delays so that a missing order shows as wrong data), deadlines and
// the errors of CUDA tensors where no device exists.
#include "src/exec/emulated.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "include/ringlet/ringlet.hpp"
#include "src/exec/device.hpp"
#include "src/reduce/elements.hpp"
#include "tests/gpu/matrix.hpp"
#include "tests/multirank/rank_group.hpp"
#include "tests/multirank/reference.hpp"

namespace ringlet {
namespace {

using exec::EmulatedDevice;
using testing::make_rank_group;
using testing::RankContext;
using testing::RankMode;

using testing::kOps;
using testing::kTypes;
using testing::store;
using testing::value_of;

// The device of the test, installed for its duration.
class EmulatedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dev_ = std::make_shared<EmulatedDevice>(4);
    exec::install_device_for_testing(dev_);
  }
  void TearDown() override {
    exec::install_device_for_testing(nullptr);
    dev_.reset();
  }
  std::shared_ptr<EmulatedDevice> dev_;
};

long double load(DataType t, const void* p, std::size_t i) {
  switch (t) {
    case DataType::float32:
      return static_cast<const float*>(p)[i];
    case DataType::float64:
      return static_cast<const double*>(p)[i];
    case DataType::float16:
      return reduce::elements::half_to_float(static_cast<const std::uint16_t*>(p)[i]);
    case DataType::bfloat16:
      return reduce::elements::bf16_to_float(static_cast<const std::uint16_t*>(p)[i]);
    case DataType::int8:
      return static_cast<const std::int8_t*>(p)[i];
    case DataType::uint8:
      return static_cast<const std::uint8_t*>(p)[i];
    case DataType::int32:
      return static_cast<const std::int32_t*>(p)[i];
    case DataType::int64:
      return static_cast<const std::int64_t*>(p)[i];
  }
  return 0;
}

// The serial reference in long double (exact for these values); integer results wrap as the
// type does (int8 sums of 4 values of |v| < 50 do not overflow; uint8 sums may, so wrap).
long double reference(DataType t, ReduceOp op, int size, std::size_t i) {
  long double acc = value_of(t, op, 0, i);
  for (int r = 1; r < size; ++r) {
    const long double v = value_of(t, op, r, i);
    acc = testing::fold(op, acc, v);
  }
  if (t == DataType::uint8)
    acc = static_cast<long double>(
        static_cast<std::uint8_t>(static_cast<unsigned>(static_cast<long long>(acc)) & 0xFFu));
  if (op == ReduceOp::avg) acc /= size;
  return acc;
}

// Whether `got` is the reference as the type stores it: exact, but for avg through float32
// (16-bit types) or the type's own division, a rounding of the exact quotient.
bool matches(DataType t, ReduceOp op, long double got, long double want) {
  if (op != ReduceOp::avg) return got == want;
  const long double tol = t == DataType::float64 ? 1e-15L : t == DataType::float32 ? 1e-6L : 1e-2L;
  return std::fabs(static_cast<double>(got - want)) <=
         static_cast<double>(tol * (1 + std::fabs(want)));
}

struct Case {
  DataType type;
  ReduceOp op;
  std::size_t count;
};

std::vector<Case> matrix() {
  std::vector<Case> cases;
  for (DataType t : kTypes) {
    for (ReduceOp op : kOps) {
      if (op == ReduceOp::avg && !is_floating(t)) continue;
      for (std::size_t n :
           {std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{40000}}) {
        cases.push_back({t, op, n});
      }
    }
  }
  return cases;
}

// One allreduce on emulated device memory, stream-ordered: a kernel fills the input, the
// collective runs, a kernel copies the output to the host; the host waits only at the end.
void run_matrix(const std::shared_ptr<EmulatedDevice>& dev, int size) {
  const std::vector<Case> cases = matrix();
  auto group = make_rank_group(RankMode::threads);
  group->run(size, [&](RankContext& rc) {
    Communicator comm = rc.create();
    void* stream = dev->create_stream();
    const int ordinal = rc.rank % dev->count();
    int failures = 0;
    for (std::size_t c = 0; c < cases.size(); ++c) {
      const Case k = cases[c];
      const std::size_t bytes = k.count * size_of(k.type);
      void* in = dev->alloc(bytes);
      void* out = c % 2 == 0 ? in : dev->alloc(bytes);  // in place and out of place
      std::vector<unsigned char> result(bytes, 0xAB);
      const int r = rc.rank;
      dev->launch(stream, [=] {
        for (std::size_t i = 0; i < k.count; ++i)
          store(k.type, in, i, value_of(k.type, k.op, r, i));
      });
      Tensor ti{in, k.count, k.type, MemoryKind::cuda, ordinal};
      Tensor to{out, k.count, k.type, MemoryKind::cuda, ordinal};
      Work w = c % 3 == 0 ? (comm.allreduce(ti, to, k.op, CudaStream{stream}), Work())
                          : comm.allreduce_async(ti, to, k.op, CudaStream{stream});
      dev->launch(stream, [&result, out, bytes] { std::memcpy(result.data(), out, bytes); });
      w.wait();
      dev->synchronize(stream);
      for (std::size_t i = 0; i < k.count && failures < 10; ++i) {
        const long double got = load(k.type, result.data(), i);
        const long double want = reference(k.type, k.op, size, i);
        if (!matches(k.type, k.op, got, want)) {
          ++failures;
          ADD_FAILURE() << "rank " << r << " of " << size << ": " << to_string(k.type) << " "
                        << to_string(k.op) << " n=" << k.count << " element " << i << ": got "
                        << static_cast<double>(got) << ", want " << static_cast<double>(want);
        }
      }
      if (out != in) dev->free(out);
      dev->free(in);
    }
    dev->destroy_stream(stream);
  });
}

TEST_F(EmulatedTest, AllreduceMatrix2Ranks) { run_matrix(dev_, 2); }
TEST_F(EmulatedTest, AllreduceMatrix3Ranks) { run_matrix(dev_, 3); }
TEST_F(EmulatedTest, AllreduceMatrix4Ranks) {
  dev_->set_delay(std::chrono::microseconds(50));
  run_matrix(dev_, 4);
}

// The other collectives on device memory, on a stream, against exact references.
TEST_F(EmulatedTest, OtherCollectives) {
  auto dev = dev_;
  dev->set_delay(std::chrono::microseconds(200));
  for (int size : {2, 3}) {
    auto group = make_rank_group(RankMode::threads);
    group->run(size, [&](RankContext& rc) {
      Communicator comm = rc.create();
      void* s = dev->create_stream();
      const CudaStream stream{s};
      const int r = rc.rank;
      for (std::size_t n : {std::size_t{5}, std::size_t{3000}, std::size_t{50000}}) {
        const std::size_t N = static_cast<std::size_t>(size);
        // broadcast from the last rank, in place
        auto* b = static_cast<std::int32_t*>(dev->alloc(n * 4));
        dev->launch(s, [=] {
          for (std::size_t i = 0; i < n; ++i)
            b[i] = r == size - 1 ? static_cast<std::int32_t>(i * 3) : -1;
        });
        comm.broadcast(Tensor{b, n, DataType::int32, MemoryKind::cuda, 0}, size - 1, stream);
        // allgather, out of place
        auto* gin = static_cast<std::int64_t*>(dev->alloc(n * 8));
        auto* gout = static_cast<std::int64_t*>(dev->alloc(n * 8 * N));
        dev->launch(s, [=] {
          for (std::size_t i = 0; i < n; ++i) gin[i] = static_cast<std::int64_t>(r * 1000000 + i);
        });
        comm.allgather(Tensor{gin, n, DataType::int64, MemoryKind::cuda, 0},
                       Tensor{gout, n * N, DataType::int64, MemoryKind::cuda, 0}, stream);
        // reduce_scatter, in place (the output is the rank's block)
        auto* rs = static_cast<float*>(dev->alloc(n * N * 4));
        dev->launch(s, [=] {
          for (std::size_t i = 0; i < n * N; ++i) rs[i] = static_cast<float>((i % 100) + r);
        });
        Work w = comm.reduce_scatter_async(
            Tensor{rs, n * N, DataType::float32, MemoryKind::cuda, 0},
            Tensor{rs + n * static_cast<std::size_t>(r), n, DataType::float32, MemoryKind::cuda, 0},
            ReduceOp::sum, stream);
        // a fused list of two tensors
        auto* l1 = static_cast<double*>(dev->alloc(n * 8));
        auto* l2 = static_cast<std::int32_t*>(dev->alloc(7 * 4));
        dev->launch(s, [=] {
          for (std::size_t i = 0; i < n; ++i) l1[i] = static_cast<double>(i + r);
          for (std::size_t i = 0; i < 7; ++i) l2[i] = r + 1;
        });
        const Tensor list[] = {Tensor{l1, n, DataType::float64, MemoryKind::cuda, 0},
                               Tensor{l2, 7, DataType::int32, MemoryKind::cuda, 0}};
        comm.allreduce(std::span<const Tensor>(list), ReduceOp::sum, stream);
        comm.barrier(stream);
        std::atomic<bool> checked{false};
        dev->launch(s, [&, b, gin, gout, rs, l1, l2] {
          for (std::size_t i = 0; i < n; ++i) {
            ASSERT_EQ(b[i], static_cast<std::int32_t>(i * 3)) << "broadcast " << i;
          }
          for (std::size_t q = 0; q < N; ++q) {
            for (std::size_t i = 0; i < n; ++i) {
              ASSERT_EQ(gout[q * n + i], static_cast<std::int64_t>(q * 1000000 + i)) << "allgather";
            }
          }
          for (std::size_t i = 0; i < n; ++i) {
            const std::size_t g = n * static_cast<std::size_t>(r) + i;
            const float want =
                static_cast<float>(size * static_cast<int>(g % 100) + size * (size - 1) / 2);
            ASSERT_EQ(rs[g], want) << "reduce_scatter " << i;
          }
          for (std::size_t i = 0; i < n; ++i) {
            ASSERT_EQ(l1[i],
                      static_cast<double>(size * static_cast<int>(i) + size * (size - 1) / 2));
          }
          for (std::size_t i = 0; i < 7; ++i) ASSERT_EQ(l2[i], size * (size + 1) / 2);
          checked = true;
        });
        w.wait();
        dev->synchronize(s);
        EXPECT_TRUE(checked.load());
        for (void* p : {static_cast<void*>(b), static_cast<void*>(gin), static_cast<void*>(gout),
                        static_cast<void*>(rs), static_cast<void*>(l1), static_cast<void*>(l2)}) {
          dev->free(p);
        }
      }
      dev->destroy_stream(s);
    });
  }
}

// Two simulated nodes of two ranks (Options::node_id): the hierarchical plan and the local
// group run on the staged buffers of CUDA tensors.
TEST_F(EmulatedTest, AllreduceTwoNodes) {
  auto dev = dev_;
  auto group = make_rank_group(RankMode::threads);
  group->run(4, [&](RankContext& rc) {
    Options o;
    o.node_id = "emulated-node-" + std::to_string(rc.rank / 2);
    Communicator comm = rc.create(o);
    EXPECT_EQ(comm.node_count(), 2);
    void* s = dev->create_stream();
    for (const DataType t : {DataType::float32, DataType::bfloat16, DataType::int64}) {
      for (const ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::avg}) {
        if (op == ReduceOp::avg && !is_floating(t)) continue;
        for (std::size_t n : {std::size_t{3}, std::size_t{5000}, std::size_t{300000}}) {
          void* buf = dev->alloc(n * size_of(t));
          std::vector<unsigned char> got(n * size_of(t));
          const int r = rc.rank;
          dev->launch(s, [=] {
            for (std::size_t i = 0; i < n; ++i) store(t, buf, i, value_of(t, op, r, i));
          });
          comm.allreduce(Tensor{buf, n, t, MemoryKind::cuda, rc.rank % 2}, op, CudaStream{s});
          dev->launch(s, [&got, buf] { std::memcpy(got.data(), buf, got.size()); });
          dev->synchronize(s);
          for (std::size_t i = 0; i < n; ++i) {
            const long double want = reference(t, op, 4, i);
            ASSERT_TRUE(matches(t, op, load(t, got.data(), i), want))
                << to_string(t) << " " << to_string(op) << " n=" << n << " element " << i;
          }
          dev->free(buf);
        }
      }
    }
    dev->destroy_stream(s);
  });
}

// NCCL's semantics: the call returns once enqueued, before the stream's earlier work has run;
// the kernel after the call sees the result, with no host synchronisation in between.
TEST_F(EmulatedTest, StreamOrderingWithoutHostSync) {
  auto dev = dev_;
  auto group = make_rank_group(RankMode::threads);
  group->run(2, [&](RankContext& rc) {
    Communicator comm = rc.create();
    void* s = dev->create_stream();
    constexpr std::size_t n = 1 << 16;
    auto* buf = static_cast<float*>(dev->alloc(n * 4));
    std::vector<float> seen(n, -1);
    std::atomic<bool> writer_done{false};
    std::atomic<bool> go{false};
    // The writer waits for the test's go, long after the call has returned.
    dev->launch(s, [&, buf] {
      while (!go.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      for (std::size_t i = 0; i < n; ++i) buf[i] = static_cast<float>(i % 1000 + rc.rank);
      writer_done = true;
    });
    const Tensor t{buf, n, DataType::float32, MemoryKind::cuda, 0};
    comm.allreduce(t, ReduceOp::sum, CudaStream{s});  // blocking form: returns once enqueued
    EXPECT_FALSE(writer_done.load()) << "the call waited for the stream's earlier work";
    Work w = comm.allreduce_async(t, ReduceOp::max, CudaStream{s});
    EXPECT_FALSE(w.test());
    dev->launch(s, [&, buf] { std::memcpy(seen.data(), buf, n * 4); });
    go = true;
    w.wait();
    dev->synchronize(s);
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_EQ(seen[i], static_cast<float>(2 * (i % 1000) + 1)) << "element " << i;
    }
    dev->free(buf);
    dev->destroy_stream(s);
  });
}

// Two streams: the second collective, on another stream, is ordered behind the first only
// by the communicator's issue order; each stream's reader sees its own result.
TEST_F(EmulatedTest, TwoStreamsAndEvents) {
  auto dev = dev_;
  dev->set_delay(std::chrono::microseconds(500));
  auto group = make_rank_group(RankMode::threads);
  group->run(3, [&](RankContext& rc) {
    Communicator comm = rc.create();
    void* s1 = dev->create_stream();
    void* s2 = dev->create_stream();
    auto* a = static_cast<std::int32_t*>(dev->alloc(4096 * 4));
    auto* b = static_cast<std::int32_t*>(dev->alloc(4096 * 4));
    auto ev = dev->create_event();
    dev->launch(s1, [=] { std::fill(a, a + 4096, rc.rank + 1); });
    comm.allreduce(Tensor{a, 4096, DataType::int32, MemoryKind::cuda, 0}, ReduceOp::sum,
                   CudaStream{s1});
    dev->record_event(ev, s1);
    // b = a after the first collective: s2 waits for s1's event on the device.
    dev->wait_event(s2, ev);
    dev->launch(s2, [=] { std::memcpy(b, a, 4096 * 4); });
    comm.allreduce(Tensor{b, 4096, DataType::int32, MemoryKind::cuda, 0}, ReduceOp::sum,
                   CudaStream{s2});
    std::vector<std::int32_t> got(4096);
    dev->launch(s2, [&, b] { std::memcpy(got.data(), b, 4096 * 4); });
    dev->synchronize(s2);
    for (std::int32_t v : got) ASSERT_EQ(v, 3 * 6);  // (1 + 2 + 3) summed by 3 ranks again
    dev->free(a);
    dev->free(b);
    dev->destroy_stream(s1);
    dev->destroy_stream(s2);
  });
}

// A wait on an event never recorded does not wait (cudaStreamWaitEvent): the reason stream
// ordering behind host-driven steps needs the flag wait.
TEST_F(EmulatedTest, WaitOnUnrecordedEventDoesNotWait) {
  void* s = dev_->create_stream();
  auto ev = dev_->create_event();
  dev_->wait_event(s, ev);
  std::atomic<bool> ran{false};
  dev_->launch(s, [&] { ran = true; });
  dev_->synchronize(s);
  EXPECT_TRUE(ran.load());
  dev_->destroy_stream(s);
}

// The stream's earlier work outlives the deadline: the collective fails with timeout from
// wait(), the stream is released, and the next call reports the abort.
TEST_F(EmulatedTest, DeadlineWhileStreamIsBusy) {
  auto dev = dev_;
  auto group = make_rank_group(RankMode::threads);
  group->run(1, [&](RankContext& rc) {
    Options o;
    o.timeout = std::chrono::milliseconds(300);
    Communicator comm = rc.create(o);
    void* s = dev->create_stream();
    auto* buf = static_cast<float*>(dev->alloc(64));
    dev->launch(s, [] { std::this_thread::sleep_for(std::chrono::milliseconds(1200)); });
    Work w = comm.allreduce_async(Tensor{buf, 16, DataType::float32, MemoryKind::cuda, 0},
                                  ReduceOp::sum, CudaStream{s});
    std::atomic<bool> after{false};
    dev->launch(s, [&] { after = true; });
    try {
      w.wait();
      ADD_FAILURE() << "no timeout";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_code(), ErrorCode::timeout) << e.what();
      EXPECT_NE(std::string(e.what()).find("CUDA stream"), std::string::npos) << e.what();
    }
    dev->synchronize(s);  // released: the later work ran
    EXPECT_TRUE(after.load());
    try {
      comm.allreduce(Tensor{buf, 16, DataType::float32, MemoryKind::cuda, 0}, ReduceOp::sum,
                     CudaStream{s});
      ADD_FAILURE() << "the aborted communicator accepted a call";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_code(), ErrorCode::aborted) << e.what();
    }
    dev->synchronize(s);
    dev->free(buf);
    dev->destroy_stream(s);
  });
}

TEST_F(EmulatedTest, BadArguments) {
  auto dev = dev_;
  auto group = make_rank_group(RankMode::threads);
  group->run(1, [&](RankContext& rc) {
    Communicator comm = rc.create();
    auto* d = static_cast<float*>(dev->alloc(64));
    std::vector<float> h(16);
    auto code = [](auto&& f) {
      try {
        f();
      } catch (const Error& e) {
        return e.error_code();
      }
      return ErrorCode{};
    };
    // host and CUDA memory in one call
    EXPECT_EQ(code([&] {
                comm.allreduce(Tensor{d, 16, DataType::float32, MemoryKind::cuda, 0},
                               Tensor{h.data(), 16, DataType::float32}, ReduceOp::sum);
              }),
              ErrorCode::invalid_argument);
    // a device the machine does not have
    EXPECT_EQ(code([&] {
                comm.allreduce(Tensor{d, 16, DataType::float32, MemoryKind::cuda, 9});
              }),
              ErrorCode::invalid_argument);
    // integer avg, through the host checks
    EXPECT_EQ(code([&] {
                comm.allreduce(Tensor{d, 16, DataType::int32, MemoryKind::cuda, 0}, ReduceOp::avg);
              }),
              ErrorCode::invalid_argument);
    // the communicator still works
    comm.allreduce(Tensor{d, 16, DataType::float32, MemoryKind::cuda, 0});
    dev->synchronize(nullptr);
    dev->free(d);
  });
}

// Without a device (the probe of this machine: no GPU in CI), a CUDA tensor is
// invalid_argument with a message that says why.
TEST(NoDevice, CudaTensorIsInvalidArgument) {
  exec::install_device_for_testing(nullptr);
  if (exec::device() != nullptr) GTEST_SKIP() << "a CUDA device is present";
  auto group = make_rank_group(RankMode::threads);
  group->run(1, [&](RankContext& rc) {
    Communicator comm = rc.create();
    float x[4] = {};
    try {
      comm.allreduce(Tensor{x, 4, DataType::float32, MemoryKind::cuda, 0});
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_code(), ErrorCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
      std::printf("message: %s\n", e.what());
    }
    comm.allreduce(Tensor{x, 4, DataType::float32});  // host memory still works
  });
}

// The device executor over the emulated device: the host kernels' bits, 2- and 3-operand,
// scaling, and overlapping copies.
TEST_F(EmulatedTest, DeviceExecutor) {
  exec::DeviceExecutor e(*dev_, nullptr);
  EXPECT_EQ(e.memory(), MemoryKind::cuda);
  std::vector<float> a(1000), b(1000), out(1000);
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<float>(i) * 0.5f;
    b[i] = static_cast<float>(i % 7);
  }
  e.reducer(DataType::float32, ReduceOp::sum)(out.data(), a.data(), b.data(), a.size());
  e.reducer(DataType::float32, ReduceOp::max)(a.data(), a.data(), b.data(), a.size());
  e.scale(out.data(), out.size(), DataType::float32, 2);
  std::vector<std::int32_t> m(100);
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<std::int32_t>(i);
  e.copy(m.data() + 10, m.data(), 80 * 4);  // overlapping, forwards
  e.synchronize();
  for (std::size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(out[i], (static_cast<float>(i) * 0.5f + static_cast<float>(i % 7)) / 2);
    ASSERT_EQ(a[i], std::max(static_cast<float>(i) * 0.5f, static_cast<float>(i % 7)));
  }
  for (std::size_t i = 0; i < 80; ++i) ASSERT_EQ(m[10 + i], static_cast<std::int32_t>(i));
}

}  // namespace
}  // namespace ringlet
