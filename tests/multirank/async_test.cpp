// SPDX-License-Identifier: Apache-2.0
// Asynchronous collectives (Work, the progress engine) and the fused many-tensor allreduce:
// queues of mixed collectives waited in random order, polling, waits and callbacks from other
// threads, failures in the middle of a queue, abort() with a full queue, dropped Work, and
// lists of 300 tensors, all checked against serial references.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <future>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "src/common/deadline.hpp"
#include "src/common/str_cat.hpp"
#include "src/communicator_impl.hpp"
#include "tests/multirank/rank_group.hpp"
#include "tests/multirank/reference.hpp"

namespace ringlet::testing {
namespace {

using namespace std::chrono_literals;

struct GroupParam {
  RankMode mode;
  int ranks;
};

std::string group_name(const ::testing::TestParamInfo<GroupParam>& info) {
  return str_cat(to_string(info.param.mode), "_", info.param.ranks, "ranks");
}

// Rank r's element i: small integers, exact in every type used here.
long long value_of(int r, std::size_t i) {
  return static_cast<long long>((i * 13 + static_cast<std::size_t>(r) * 7) % 50);
}

// Log-uniform in [0, max]: 0 with probability 1/16, else exp(uniform(0, ln max)).
std::size_t log_uniform(std::mt19937_64& rng, std::size_t max) {
  if (rng() % 16 == 0) return 0;
  std::uniform_real_distribution<double> d(0.0, std::log(static_cast<double>(max)));
  return std::min<std::size_t>(max, static_cast<std::size_t>(std::exp(d(rng))));
}

// One collective of a queue: its buffers, and a check of the result against the reference.
struct Op {
  enum Kind {
    allreduce_inplace,
    allreduce_outplace,
    broadcast,
    allgather,
    reduce_scatter,
    barrier
  };
  Kind kind = barrier;
  int type = 0;  // 0 float, 1 double, 2 int32, 3 int64
  std::size_t count = 0;
  int root = 0;
  std::vector<double> d_in, d_out;
  std::vector<float> f_in, f_out;
  std::vector<std::int32_t> i_in, i_out;
  std::vector<std::int64_t> l_in, l_out;
};

template <class T>
std::vector<T>& in_of(Op& op);
template <>
std::vector<float>& in_of<float>(Op& op) {
  return op.f_in;
}
template <>
std::vector<double>& in_of<double>(Op& op) {
  return op.d_in;
}
template <>
std::vector<std::int32_t>& in_of<std::int32_t>(Op& op) {
  return op.i_in;
}
template <>
std::vector<std::int64_t>& in_of<std::int64_t>(Op& op) {
  return op.l_in;
}
template <class T>
std::vector<T>& out_of(Op& op) {
  if constexpr (std::is_same_v<T, float>) return op.f_out;
  if constexpr (std::is_same_v<T, double>) return op.d_out;
  if constexpr (std::is_same_v<T, std::int32_t>) return op.i_out;
  if constexpr (std::is_same_v<T, std::int64_t>) return op.l_out;
}

template <class T>
Work issue_typed(Communicator& comm, Op& op) {
  const int n = comm.size();
  const int r = comm.rank();
  auto& in = in_of<T>(op);
  auto& out = out_of<T>(op);
  switch (op.kind) {
    case Op::allreduce_inplace:
      in.resize(op.count);
      for (std::size_t i = 0; i < op.count; ++i) in[i] = static_cast<T>(value_of(r, i));
      return comm.allreduce_async(Tensor::of(std::span<T>(in)));
    case Op::allreduce_outplace:
      in.resize(op.count);
      out.assign(op.count, T(-1));
      for (std::size_t i = 0; i < op.count; ++i) in[i] = static_cast<T>(value_of(r, i));
      return comm.allreduce_async(Tensor::of(std::span<T>(in)), Tensor::of(std::span<T>(out)),
                                  ReduceOp::sum);
    case Op::broadcast:
      in.assign(op.count, T(-1));
      if (r == op.root) {
        for (std::size_t i = 0; i < op.count; ++i) in[i] = static_cast<T>(value_of(r, i));
      }
      return comm.broadcast_async(Tensor::of(std::span<T>(in)), op.root);
    case Op::allgather:
      in.resize(op.count);
      out.assign(op.count * static_cast<std::size_t>(n), T(-1));
      for (std::size_t i = 0; i < op.count; ++i) in[i] = static_cast<T>(value_of(r, i));
      return comm.allgather_async(Tensor::of(std::span<T>(in)), Tensor::of(std::span<T>(out)));
    case Op::reduce_scatter:
      in.resize(op.count * static_cast<std::size_t>(n));
      out.assign(op.count, T(-1));
      for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<T>(value_of(r, i));
      return comm.reduce_scatter_async(Tensor::of(std::span<T>(in)), Tensor::of(std::span<T>(out)),
                                       ReduceOp::max);
    case Op::barrier:
      return comm.barrier_async();
  }
  return Work();
}

// Returns an empty string when the result is right, else the first difference.
template <class T>
std::string check_typed(Op& op, int n, int r) {
  auto& in = in_of<T>(op);
  auto& out = out_of<T>(op);
  auto sum_at = [&](std::size_t i) {
    long long s = 0;
    for (int q = 0; q < n; ++q) s += value_of(q, i);
    return s;
  };
  auto bad = [&](std::size_t i, long double got, long long want) {
    return str_cat("index ", i, ": got ", static_cast<double>(got), ", want ", want);
  };
  switch (op.kind) {
    case Op::allreduce_inplace:
    case Op::allreduce_outplace: {
      const auto& res = op.kind == Op::allreduce_inplace ? in : out;
      for (std::size_t i = 0; i < op.count; ++i) {
        if (static_cast<long long>(res[i]) != sum_at(i)) return bad(i, res[i], sum_at(i));
      }
      if (op.kind == Op::allreduce_outplace) {
        for (std::size_t i = 0; i < op.count; ++i) {
          if (static_cast<long long>(in[i]) != value_of(r, i)) return "the input was modified";
        }
      }
      return {};
    }
    case Op::broadcast:
      for (std::size_t i = 0; i < op.count; ++i) {
        if (static_cast<long long>(in[i]) != value_of(op.root, i)) {
          return bad(i, in[i], value_of(op.root, i));
        }
      }
      return {};
    case Op::allgather:
      for (int b = 0; b < n; ++b) {
        for (std::size_t i = 0; i < op.count; ++i) {
          const T v = out[static_cast<std::size_t>(b) * op.count + i];
          if (static_cast<long long>(v) != value_of(b, i)) return bad(i, v, value_of(b, i));
        }
      }
      return {};
    case Op::reduce_scatter:
      for (std::size_t i = 0; i < op.count; ++i) {
        const std::size_t g = static_cast<std::size_t>(r) * op.count + i;
        long long m = 0;
        for (int q = 0; q < n; ++q) m = std::max(m, value_of(q, g));
        if (static_cast<long long>(out[i]) != m) return bad(i, out[i], m);
      }
      return {};
    case Op::barrier:
      return {};
  }
  return {};
}

Work issue(Communicator& comm, Op& op) {
  switch (op.type) {
    case 0:
      return issue_typed<float>(comm, op);
    case 1:
      return issue_typed<double>(comm, op);
    case 2:
      return issue_typed<std::int32_t>(comm, op);
    default:
      return issue_typed<std::int64_t>(comm, op);
  }
}

std::string check(Op& op, int n, int r) {
  switch (op.type) {
    case 0:
      return check_typed<float>(op, n, r);
    case 1:
      return check_typed<double>(op, n, r);
    case 2:
      return check_typed<std::int32_t>(op, n, r);
    default:
      return check_typed<std::int64_t>(op, n, r);
  }
}

std::string describe(const Op& op) {
  static const char* kinds[] = {"allreduce", "allreduce(out of place)", "broadcast",
                                "allgather", "reduce_scatter",          "barrier"};
  static const char* types[] = {"float32", "float64", "int32", "int64"};
  return str_cat(kinds[op.kind], "(count=", op.count, ", ", types[op.type], ")");
}

// The same queue on every rank (one seed), sized so that a rank never holds more than
// `max_elements` elements.
std::vector<Op> make_queue(int n, int length, std::size_t max_elements, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Op> ops(static_cast<std::size_t>(length));
  std::size_t held = 0;
  for (auto& op : ops) {
    op.kind = static_cast<Op::Kind>(rng() % 6);
    op.type = static_cast<int>(rng() % 4);
    op.root = static_cast<int>(rng() % static_cast<std::uint64_t>(n));
    std::size_t count = log_uniform(rng, std::size_t{1} << 18);
    const std::size_t mult = op.kind == Op::allgather || op.kind == Op::reduce_scatter
                                 ? static_cast<std::size_t>(n) + 1
                                 : 2;
    if (held + count * mult > max_elements) count = 0;
    held += count * mult;
    op.count = op.kind == Op::barrier ? 0 : count;
  }
  return ops;
}

class AsyncTest : public ::testing::TestWithParam<GroupParam> {
 protected:
  void run(const RankBody& body, GroupOptions go = {}) {
    auto group = make_rank_group(GetParam().mode);
    group->run(GetParam().ranks, body, go);
  }
};

TEST_P(AsyncTest, SixtyFourOutstandingWaitedInRandomOrder) {
  run([](RankContext& ctx) {
    Communicator comm = ctx.create();
    for (std::uint64_t round = 0; round < 2; ++round) {
      std::vector<Op> ops = make_queue(ctx.size, 64, std::size_t{4} << 20, 1234 + round);
      std::vector<Work> works;
      for (auto& op : ops) works.push_back(issue(comm, op));
      std::vector<std::size_t> order(ops.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::mt19937 shuffle(static_cast<unsigned>(ctx.rank * 7919 + round));
      std::shuffle(order.begin(), order.end(), shuffle);
      for (std::size_t i : order) {
        try {
          works[i].wait();
        } catch (const Error& e) {
          FAIL() << "rank " << ctx.rank << ": #" << i << " " << describe(ops[i])
                 << " threw: " << e.what();
        }
        const std::string err = check(ops[i], ctx.size, ctx.rank);
        ASSERT_TRUE(err.empty()) << "rank " << ctx.rank << ": #" << i << " " << describe(ops[i])
                                 << ": " << err;
      }
    }
  });
}

TEST_P(AsyncTest, TestPollsWithoutBlocking) {
  run([](RankContext& ctx) {
    Communicator comm = ctx.create();
    const std::size_t count = std::size_t{1} << 20;
    std::vector<float> a(count), b(count);
    for (std::size_t i = 0; i < count; ++i) a[i] = b[i] = static_cast<float>(value_of(ctx.rank, i));
    Work w1 = comm.allreduce_async(std::span<float>(a));
    Work w2 = comm.allreduce_async(Tensor::of(std::span<float>(b)));
    const Deadline limit = Clock::now() + 120s;
    int polls = 0;
    while (!(w1.test() && w2.test())) {
      ASSERT_LT(Clock::now(), limit) << "rank " << ctx.rank << ": test() never became true";
      ++polls;
      std::this_thread::sleep_for(100us);
    }
    EXPECT_TRUE(w1.test());
    for (std::size_t i = 0; i < count; i += 997) {
      long long s = 0;
      for (int q = 0; q < ctx.size; ++q) s += value_of(q, i);
      ASSERT_EQ(static_cast<long long>(b[i]), s) << "index " << i;
    }
    (void)polls;
  });
}

TEST(AsyncTemplates, SpanOverloadStillWorks) {
  // allreduce(std::span<float>) is the typed convenience, allreduce(span<const Tensor>) the list.
  std::vector<float> v(4, 1.0f);
  Options o;
  o.rank = 0;
  o.size = 1;
  auto group = make_rank_group(RankMode::threads);
  group->run(1, [&](RankContext& ctx) {
    Communicator comm = ctx.create();
    comm.allreduce(std::span<float>(v));
    std::vector<Tensor> list = {Tensor::of(std::span<float>(v))};
    comm.allreduce(list);
    EXPECT_EQ(v[0], 1.0f);
  });
}

TEST_P(AsyncTest, WaitAndOnCompleteFromOtherThreads) {
  run([](RankContext& ctx) {
    Communicator comm = ctx.create();
    const std::size_t count = std::size_t{1} << 19;
    std::vector<std::int32_t> a(count);
    for (std::size_t i = 0; i < count; ++i) a[i] = static_cast<std::int32_t>(value_of(ctx.rank, i));
    std::vector<std::int32_t> b = a;
    Work w1 = comm.allreduce_async(std::span<std::int32_t>(a));
    Work w2 = comm.allreduce_async(std::span<std::int32_t>(b));
    std::atomic<int> calls{0};
    std::promise<std::exception_ptr> done;
    std::thread::id callback_thread;
    w2.on_complete([&](std::exception_ptr e) {
      callback_thread = std::this_thread::get_id();
      if (calls.fetch_add(1) == 0) done.set_value(e);
    });
    std::thread waiter([&] { w1.wait(); });
    auto f = done.get_future();
    ASSERT_EQ(f.wait_for(120s), std::future_status::ready);
    EXPECT_EQ(f.get(), nullptr);
    waiter.join();
    w2.wait();
    EXPECT_EQ(calls.load(), 1);
    // The callback ran on the engine thread, or here if w2 finished before it was set.
    (void)callback_thread;
    // A callback on a finished Work runs at once.
    int late = 0;
    w2.on_complete([&](std::exception_ptr e) { late += e == nullptr ? 1 : 100; });
    EXPECT_EQ(late, 1);
    for (std::size_t i = 0; i < count; i += 101) {
      long long s = 0;
      for (int q = 0; q < ctx.size; ++q) s += value_of(q, i);
      ASSERT_EQ(a[i], s);
      ASSERT_EQ(b[i], s);
    }
  });
}

TEST_P(AsyncTest, BlockingAndAsyncInterleavedAndDroppedWork) {
  run([](RankContext& ctx) {
    Communicator comm = ctx.create();
    const int n = ctx.size;
    std::vector<std::vector<double>> bufs;
    std::vector<Work> works;
    std::vector<double> blocking(4096);
    for (int k = 0; k < 12; ++k) {
      const std::size_t count =
          (k % 3 == 0) ? std::size_t{200000} : static_cast<std::size_t>(100 + k);
      bufs.emplace_back(count);
      for (std::size_t i = 0; i < count; ++i)
        bufs.back()[i] = static_cast<double>(value_of(ctx.rank, i));
      if (k % 4 == 3) {
        // Dropped: it still runs, in order.
        static_cast<void>(comm.allreduce_async(std::span<double>(bufs.back())));
      } else {
        works.push_back(comm.allreduce_async(std::span<double>(bufs.back())));
      }
      for (std::size_t i = 0; i < blocking.size(); ++i)
        blocking[i] = static_cast<double>(value_of(ctx.rank, i));
      comm.allreduce(std::span<double>(blocking));
      for (std::size_t i = 0; i < blocking.size(); i += 7) {
        long long s = 0;
        for (int q = 0; q < n; ++q) s += value_of(q, i);
        ASSERT_EQ(blocking[i], static_cast<double>(s));
      }
    }
    comm.barrier();  // behind every dropped Work
    for (auto& w : works) w.wait();
    for (auto& b : bufs) {
      for (std::size_t i = 0; i < b.size(); i += 13) {
        long long s = 0;
        for (int q = 0; q < n; ++q) s += value_of(q, i);
        ASSERT_EQ(b[i], static_cast<double>(s)) << "count " << b.size() << " index " << i;
      }
    }
  });
}

// Counts differ at position `bad` of a queue: that collective and every later one fail on
// every rank, the earlier ones succeed, all within the deadline.
TEST_P(AsyncTest, MismatchInTheMiddleOfAQueueFailsItAndEveryLaterOne) {
  run([](RankContext& ctx) {
    Options o;
    o.timeout = 15s;
    Communicator comm = ctx.create(o);
    constexpr int kQueue = 16;
    constexpr int kBad = 6;
    std::vector<std::vector<float>> bufs(kQueue);
    std::vector<Work> works;
    const auto start = Clock::now();
    for (int k = 0; k < kQueue; ++k) {
      std::size_t count = k % 2 == 0 ? 300000 : 1000;
      if (k == kBad && ctx.rank == 1) count += 1;
      bufs[static_cast<std::size_t>(k)].assign(count, 1.0f);
      try {
        works.push_back(comm.allreduce_async(std::span<float>(bufs[static_cast<std::size_t>(k)])));
      } catch (const Error& e) {
        // The failure may already have aborted the communicator: later calls throw at once.
        EXPECT_GT(k, kBad) << e.what();
        EXPECT_EQ(e.code(), ErrorCode::aborted) << e.what();
        break;
      }
    }
    for (int k = 0; k < static_cast<int>(works.size()); ++k) {
      auto& w = works[static_cast<std::size_t>(k)];
      if (k < kBad) {
        EXPECT_NO_THROW(w.wait()) << "rank " << ctx.rank << " #" << k;
        continue;
      }
      try {
        w.wait();
        ADD_FAILURE() << "rank " << ctx.rank << ": collective " << k << " did not fail";
      } catch (const Error& e) {
        if (k == kBad) {
          EXPECT_TRUE(e.code() == ErrorCode::mismatch || e.code() == ErrorCode::peer_lost)
              << e.what();
        } else {
          EXPECT_EQ(e.code(), ErrorCode::aborted) << e.what();
        }
      }
    }
    EXPECT_LT(Clock::now() - start, 15s + 5s);
    EXPECT_THROW(comm.allreduce(std::span<float>(bufs[0])), Error);
  });
}

TEST_P(AsyncTest, AbortWithAFullQueue) {
  run([](RankContext& ctx) {
    Options o;
    o.timeout = 20s;
    Communicator comm = ctx.create(o);
    constexpr int kQueue = 32;
    std::vector<std::vector<float>> bufs(kQueue, std::vector<float>(1 << 18, 1.0f));
    std::vector<Work> works;
    const auto start = Clock::now();
    int failed = 0;
    for (auto& b : bufs) {
      try {
        works.push_back(comm.allreduce_async(std::span<float>(b)));
      } catch (const Error& e) {
        // Rank 0's abort reached this rank while it was still issuing.
        EXPECT_NE(ctx.rank, 0) << e.what();
        ++failed;
        break;
      }
    }
    std::thread aborter;
    if (ctx.rank == 0) aborter = std::thread([&] { comm.abort(); });
    for (auto& w : works) {
      try {
        w.wait();
      } catch (const Error& e) {
        ++failed;
        EXPECT_TRUE(e.code() == ErrorCode::aborted || e.code() == ErrorCode::peer_lost ||
                    e.code() == ErrorCode::timeout)
            << e.what();
      }
    }
    if (aborter.joinable()) aborter.join();
    EXPECT_LT(Clock::now() - start, 20s + 5s);
    // Whatever finished before the abort is done; the rest failed; later calls fail.
    if (ctx.rank == 0) {
      EXPECT_GT(failed, 0);
    }
    EXPECT_THROW(comm.barrier(), Error);
  });
}

TEST_P(AsyncTest, DestroyingWithPendingWorkWaitsForIt) {
  run([](RankContext& ctx) {
    std::vector<std::vector<std::int64_t>> bufs(8, std::vector<std::int64_t>(100000, 1));
    {
      Communicator comm = ctx.create();
      for (auto& b : bufs) static_cast<void>(comm.allreduce_async(std::span<std::int64_t>(b)));
    }  // waits for all of them
    for (auto& b : bufs) {
      ASSERT_EQ(b[0], ctx.size);
      ASSERT_EQ(b.back(), ctx.size);
    }
  });
}

// --- the fused many-tensor allreduce ------------------------------------------------------

struct ListOfTensors {
  std::vector<std::vector<float>> f;
  std::vector<std::vector<double>> d;
  std::vector<std::vector<std::int32_t>> i;
  std::vector<Tensor> tensors;
  std::vector<int> type;  // per tensor: 0 float, 1 double, 2 int32
  std::vector<std::size_t> index;
};

ListOfTensors make_list(int rank, std::size_t length, std::size_t max_elements,
                        std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  ListOfTensors l;
  std::size_t held = 0;
  for (std::size_t k = 0; k < length; ++k) {
    std::size_t count =
        k % 100 == 50 ? (std::size_t{1} << 20) : log_uniform(rng, std::size_t{1} << 20);
    if (held + count > max_elements) count = rng() % 64;
    held += count;
    const int t = static_cast<int>(rng() % 3);
    l.type.push_back(t);
    auto fill = [&](auto& store) {
      auto& v = store.emplace_back(count);
      for (std::size_t e = 0; e < count; ++e)
        v[e] = static_cast<typename std::decay_t<decltype(v)>::value_type>(value_of(rank, e + k));
      l.index.push_back(store.size() - 1);
    };
    if (t == 0) fill(l.f);
    if (t == 1) fill(l.d);
    if (t == 2) fill(l.i);
  }
  for (std::size_t k = 0; k < length; ++k) {
    const std::size_t j = l.index[k];
    if (l.type[k] == 0) l.tensors.push_back(Tensor::of(std::span<float>(l.f[j])));
    if (l.type[k] == 1) l.tensors.push_back(Tensor::of(std::span<double>(l.d[j])));
    if (l.type[k] == 2) l.tensors.push_back(Tensor::of(std::span<std::int32_t>(l.i[j])));
  }
  return l;
}

std::string check_list(const ListOfTensors& l, int n) {
  for (std::size_t k = 0; k < l.tensors.size(); ++k) {
    const Tensor& t = l.tensors[k];
    for (std::size_t e = 0; e < t.count; e += (t.count > 4096 ? 61 : 1)) {
      long long want = 0;
      for (int q = 0; q < n; ++q) want += value_of(q, e + k);
      long long got = 0;
      if (l.type[k] == 0) got = static_cast<long long>(static_cast<const float*>(t.data)[e]);
      if (l.type[k] == 1) got = static_cast<long long>(static_cast<const double*>(t.data)[e]);
      if (l.type[k] == 2) got = static_cast<const std::int32_t*>(t.data)[e];
      if (got != want) return str_cat("tensor #", k, " index ", e, ": got ", got, ", want ", want);
    }
  }
  return {};
}

class FusedTest : public AsyncTest {};

TEST_P(FusedTest, ThreeHundredTensorsOfThreeTypes) {
  run([](RankContext& ctx) {
    Options o;
    Communicator comm = ctx.create(o);
    ListOfTensors l = make_list(ctx.rank, 300, std::size_t{6} << 20, 99);
    comm.allreduce(l.tensors);
    std::string err = check_list(l, ctx.size);
    ASSERT_TRUE(err.empty()) << "rank " << ctx.rank << " blocking: " << err;
    ListOfTensors a = make_list(ctx.rank, 300, std::size_t{2} << 20, 7);
    Work w = comm.allreduce_async(a.tensors);
    a.tensors.clear();  // the list was copied at the call
    w.wait();
    a.tensors.clear();
    ListOfTensors again = make_list(ctx.rank, 300, std::size_t{2} << 20, 7);
    // `a`'s buffers now hold the reduction; compare through a list over them.
    for (std::size_t k = 0; k < again.tensors.size(); ++k) {
      const std::size_t j = again.index[k];
      if (again.type[k] == 0) a.tensors.push_back(Tensor::of(std::span<float>(a.f[j])));
      if (again.type[k] == 1) a.tensors.push_back(Tensor::of(std::span<double>(a.d[j])));
      if (again.type[k] == 2) a.tensors.push_back(Tensor::of(std::span<std::int32_t>(a.i[j])));
    }
    err = check_list(a, ctx.size);
    ASSERT_TRUE(err.empty()) << "rank " << ctx.rank << " async: " << err;
  });
}

TEST_P(FusedTest, SmallFusionBufferAndEmptyList) {
  ScopedEnv fusion("RINGLET_FUSION_BYTES", "4096");
  run([](RankContext& ctx) {
    Communicator comm = ctx.create();
    ListOfTensors l = make_list(ctx.rank, 40, std::size_t{1} << 16, 5);
    comm.allreduce(l.tensors);
    std::string err = check_list(l, ctx.size);
    ASSERT_TRUE(err.empty()) << "rank " << ctx.rank << ": " << err;
    comm.allreduce(std::span<const Tensor>());
  });
}

TEST_P(FusedTest, ListsThatDifferNameTheFirstDifferingTensor) {
  run([](RankContext& ctx) {
    Options o;
    o.timeout = 15s;
    Communicator comm = ctx.create(o);
    ListOfTensors l = make_list(0, 30, std::size_t{1} << 16, 3);
    if (ctx.rank == 1) {
      l.f.emplace_back(l.tensors[7].count + 5, 1.0f);
      l.tensors[7] = Tensor::of(std::span<float>(l.f.back()));
    }
    try {
      comm.allreduce(l.tensors);
      ADD_FAILURE() << "rank " << ctx.rank << ": differing lists did not fail";
    } catch (const Error& e) {
      EXPECT_TRUE(e.code() == ErrorCode::mismatch || e.code() == ErrorCode::peer_lost) << e.what();
      const int n = ctx.size;
      const bool next_to_1 = ctx.rank == 1 || ctx.rank == 0 || ctx.rank == 2 % n;
      if (next_to_1) {
        EXPECT_NE(std::string(e.what()).find("tensor #7"), std::string::npos)
            << "rank " << ctx.rank << ": " << e.what();
      }
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Threads, AsyncTest,
                         ::testing::Values(GroupParam{RankMode::threads, 2},
                                           GroupParam{RankMode::threads, 3},
                                           GroupParam{RankMode::threads, 4},
                                           GroupParam{RankMode::threads, 8}),
                         group_name);
INSTANTIATE_TEST_SUITE_P(Processes, AsyncTest,
                         ::testing::Values(GroupParam{RankMode::processes, 2},
                                           GroupParam{RankMode::processes, 4}),
                         group_name);
INSTANTIATE_TEST_SUITE_P(All, FusedTest,
                         ::testing::Values(GroupParam{RankMode::threads, 2},
                                           GroupParam{RankMode::threads, 3},
                                           GroupParam{RankMode::processes, 2}),
                         group_name);

// The progress record while the engine's task waits for a peer that never joins the
// collective: the snapshot names the peer awaited and the phase, and the deadline error
// quotes the step and the wait. Each rank is its own node (no shared memory): the task
// waits in the tcp transport, polled by the engine.
TEST(AsyncProgress, SnapshotAndDeadlineErrorNameThePeerAwaited) {
  auto group = make_rank_group(RankMode::threads);
  group->run(2, [](RankContext& ctx) {
    Options o;
    o.timeout = 2s;
    o.node_id = str_cat("progress-node-", ctx.rank);
    Communicator comm = ctx.create(o);
    if (ctx.rank == 1) {
      // Never calls the allreduce: rank 0's times out; then rank 1 leaves.
      std::this_thread::sleep_for(4s);
      return;
    }
    std::vector<float> buf(1 << 20, 1.0f);  // above the crossover: queued for the engine
    Work w = comm.allreduce_async(std::span<float>(buf));
    ProgressSnapshot seen;
    for (int i = 0; i < 150 && seen.peer != 1; ++i) {
      std::this_thread::sleep_for(10ms);
      seen = progress_snapshot(comm);
    }
    EXPECT_EQ(seen.peer, 1);
    EXPECT_FALSE(seen.peer_send);
    EXPECT_GT(seen.seq, 0u);
    EXPECT_NE(seen.fingerprint.find("allreduce(count=1048576"), std::string::npos)
        << seen.fingerprint;
    EXPECT_EQ(seen.phase, "exchanging fingerprints");
    EXPECT_GE(seen.since_ns, seen.started_ns);
    EXPECT_FALSE(w.test());
    try {
      w.wait();
      ADD_FAILURE() << "the allreduce without its peer completed";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_EQ(e.code(), ErrorCode::timeout) << what;
      EXPECT_NE(what.find("for a receive from rank 1"), std::string::npos) << what;
      EXPECT_NE(what.find(", step "), std::string::npos) << what;
    }
  });
}

// A peer killed in the middle of a queue: that collective and every later one fail on the
// survivors within the deadline.
TEST(AsyncFault, PeerKilledInTheMiddleOfAQueue) {
  auto group = make_rank_group(RankMode::processes);
  GroupOptions go;
  go.victims = {1};
  go.limit = 120s;
  group->run(
      3,
      [](RankContext& ctx) {
        Options o;
        o.timeout = 10s;
        Communicator comm = ctx.create(o);
        std::vector<std::vector<float>> bufs(12, std::vector<float>(200000, 1.0f));
        std::vector<Work> works;
        for (std::size_t k = 0; k < 4; ++k)
          works.push_back(comm.allreduce_async(std::span<float>(bufs[k])));
        for (auto& w : works) w.wait();
        if (ctx.rank == 1) ::kill(::getpid(), SIGKILL);
        const auto start = Clock::now();
        int failed = 0;
        for (std::size_t k = 4; k < bufs.size(); ++k) {
          try {
            works.push_back(comm.allreduce_async(std::span<float>(bufs[k])));
          } catch (const Error& e) {
            // The loss already aborted the communicator: this and later calls throw at once.
            EXPECT_NE(e.code(), ErrorCode::invalid_argument) << e.what();
            failed += static_cast<int>(bufs.size() - k);
            break;
          }
        }
        for (std::size_t k = 4; k < works.size(); ++k) {
          try {
            works[k].wait();
          } catch (const Error& e) {
            ++failed;
            EXPECT_NE(e.code(), ErrorCode::invalid_argument) << e.what();
          }
        }
        EXPECT_EQ(failed, 8) << "rank " << ctx.rank;
        EXPECT_LT(Clock::now() - start, 10s + 5s);
      },
      go);
}

// --- queued collectives over shared memory (the polled local group) ------------------------

// One node of 4 ranks: every collective runs in the shared-memory group. Queued behind a
// large first one, they all run on the progress engine as polled tasks; waited in random
// order, each is checked against the serial reference.
class AsyncShm : public ::testing::TestWithParam<RankMode> {};

TEST_P(AsyncShm, QueueOnOneNodeOfFourRanks) {
  auto group = make_rank_group(GetParam());
  group->run(4, [](RankContext& ctx) {
    Options o;
    o.node_id = "one-node";
    Communicator comm = ctx.create(o);
    for (std::uint64_t round = 0; round < 2; ++round) {
      std::vector<Op> ops = make_queue(ctx.size, 48, std::size_t{4} << 20, 777 + round);
      // Above the crossover first, so that the queue starts on the engine at once.
      ops.front().kind = Op::allreduce_inplace;
      ops.front().count = std::size_t{1} << 18;
      std::vector<Work> works;
      for (auto& op : ops) works.push_back(issue(comm, op));
      std::vector<std::size_t> order(ops.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::mt19937 shuffle(static_cast<unsigned>(ctx.rank * 31 + round));
      std::shuffle(order.begin(), order.end(), shuffle);
      for (std::size_t i : order) {
        try {
          works[i].wait();
        } catch (const Error& e) {
          FAIL() << "rank " << ctx.rank << ": #" << i << " " << describe(ops[i])
                 << " threw: " << e.what();
        }
        const std::string err = check(ops[i], ctx.size, ctx.rank);
        ASSERT_TRUE(err.empty()) << "rank " << ctx.rank << ": #" << i << " " << describe(ops[i])
                                 << ": " << err;
      }
      // A blocking call after the queue, through the same group.
      std::vector<std::int32_t> v(1000, ctx.rank);
      comm.allreduce(std::span<std::int32_t>(v));
      ASSERT_EQ(v[999], 0 + 1 + 2 + 3);
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Modes, AsyncShm, ::testing::Values(RankMode::threads, RankMode::processes),
                         [](const ::testing::TestParamInfo<RankMode>& info) {
                           return std::string(to_string(info.param));
                         });

// While the engine's task waits in shared memory for a local peer that has not arrived, the
// progress record names that peer (its global rank) and the deadline error quotes it.
TEST(AsyncShmProgress, SnapshotNamesTheLocalPeerAwaited) {
  auto group = make_rank_group(RankMode::threads);
  group->run(2, [](RankContext& ctx) {
    Options o;
    o.timeout = 3s;
    o.node_id = "one-node";
    Communicator comm = ctx.create(o);
    if (ctx.rank == 1) {
      // Never calls the allreduce: rank 0's times out; then rank 1 leaves.
      std::this_thread::sleep_for(5s);
      return;
    }
    std::vector<float> buf(1 << 20, 1.0f);  // above the crossover: queued for the engine
    Work w = comm.allreduce_async(std::span<float>(buf));
    ProgressSnapshot seen;
    for (int i = 0; i < 200 && seen.peer != 1; ++i) {
      std::this_thread::sleep_for(10ms);
      seen = progress_snapshot(comm);
    }
    EXPECT_EQ(seen.peer, 1);
    EXPECT_FALSE(seen.peer_send);
    EXPECT_NE(seen.fingerprint.find("allreduce(count=1048576"), std::string::npos)
        << seen.fingerprint;
    EXPECT_GE(seen.since_ns, seen.started_ns);
    EXPECT_FALSE(w.test());
    const auto start = Clock::now();
    try {
      w.wait();
      ADD_FAILURE() << "the allreduce without its peer completed";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_EQ(e.code(), ErrorCode::timeout) << what;
      EXPECT_NE(what.find("local rank 1 (rank 1)"), std::string::npos) << what;
    }
    EXPECT_LT(Clock::now() - start, 3s + 2s);
  });
}

// A local peer killed while the survivors' engines are suspended on shared-memory waits:
// every queued collective fails on every survivor within the deadline, naming the peer.
TEST(AsyncShmFault, PeerKilledWhileTheEngineWaitsInSharedMemory) {
  auto group = make_rank_group(RankMode::processes);
  GroupOptions go;
  go.victims = {2};
  go.limit = 120s;
  group->run(
      4,
      [](RankContext& ctx) {
        Options o;
        o.timeout = 10s;
        o.node_id = "one-node";
        Communicator comm = ctx.create(o);
        std::vector<float> warm(1000, 1.0f);
        comm.allreduce(std::span<float>(warm));
        if (ctx.rank == 2) {
          std::this_thread::sleep_for(300ms);  // the others are queued and waiting by now
          ::kill(::getpid(), SIGKILL);
        }
        std::vector<std::vector<float>> bufs;
        for (std::size_t k = 0; k < 8; ++k) bufs.emplace_back(k % 2 == 0 ? 300000 : 100, 1.0f);
        std::vector<Work> works;
        const auto start = Clock::now();
        int failed = 0;
        for (auto& b : bufs) {
          try {
            works.push_back(comm.allreduce_async(std::span<float>(b)));
          } catch (const Error& e) {
            EXPECT_NE(e.code(), ErrorCode::invalid_argument) << e.what();
            failed += static_cast<int>(bufs.size() - works.size());
            break;
          }
        }
        std::optional<Work> barrier;
        try {
          barrier.emplace(comm.barrier_async());
        } catch (const Error&) {
          ++failed;
        }
        for (auto& w : works) {
          try {
            w.wait();
          } catch (const Error& e) {
            ++failed;
            const std::string what = e.what();
            EXPECT_TRUE(e.code() == ErrorCode::peer_lost || e.code() == ErrorCode::aborted) << what;
          }
        }
        if (barrier) {
          try {
            barrier->wait();
          } catch (const Error&) {
            ++failed;
          }
        }
        EXPECT_EQ(failed, 9) << "rank " << ctx.rank;
        EXPECT_LT(Clock::now() - start, 10s + 5s);
      },
      go);
}

// abort() on one rank while its engine and the others' are suspended on shared-memory
// waits: every queued collective fails on every rank, promptly.
TEST(AsyncShmFault, AbortWhileTheEngineWaitsInSharedMemory) {
  auto group = make_rank_group(RankMode::threads);
  group->run(4, [](RankContext& ctx) {
    Options o;
    o.timeout = 20s;
    o.node_id = "one-node";
    Communicator comm = ctx.create(o);
    if (ctx.rank == 3) std::this_thread::sleep_for(1s);  // the others wait in shared memory
    std::vector<std::vector<float>> bufs(16, std::vector<float>(1 << 18, 1.0f));
    std::vector<Work> works;
    const auto start = Clock::now();
    int failed = 0;
    for (auto& b : bufs) {
      try {
        works.push_back(comm.allreduce_async(std::span<float>(b)));
      } catch (const Error& e) {
        EXPECT_NE(e.code(), ErrorCode::invalid_argument) << e.what();
        failed += static_cast<int>(bufs.size() - works.size());
        break;
      }
    }
    std::thread aborter;
    if (ctx.rank == 0) {
      aborter = std::thread([&] {
        std::this_thread::sleep_for(300ms);
        comm.abort();
      });
    }
    for (auto& w : works) {
      try {
        w.wait();
      } catch (const Error& e) {
        ++failed;
        EXPECT_TRUE(e.code() == ErrorCode::aborted || e.code() == ErrorCode::peer_lost) << e.what();
      }
    }
    if (aborter.joinable()) aborter.join();
    EXPECT_EQ(failed, 16) << "rank " << ctx.rank;
    EXPECT_LT(Clock::now() - start, 10s);
  });
}

}  // namespace
}  // namespace ringlet::testing
