// SPDX-License-Identifier: Apache-2.0
// The contract of groups::LocalGroup (groups/local_group.hpp) as a parameterised GoogleTest
// suite that any implementation runs: local ranks are threads of this process, results are
// checked against an exact reference (small integers, exact in every type, folded in long
// double) and compared bit for bit across ranks.
//
// An implementation instantiates it with its factory and the local sizes to run:
//
//   INSTANTIATE_TEST_SUITE_P(Shm, LocalGroupConformance,
//                            conformance_params(my_factory(), {1, 2, 3, 4}),
//                            conformance_name);
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "groups/local_group.hpp"
#include "src/common/partition.hpp"
#include "src/exec/executor.hpp"
#include "src/fingerprint.hpp"
#include "tests/multirank/reference.hpp"

namespace ringlet::groups::testing {

// How the memory of a group's kind is reached from the host: host memory by default; a
// device group supplies its own (allocate, copy in, copy out, free).
struct GroupMemory {
  std::function<void*(std::size_t bytes)> allocate = [](std::size_t bytes) -> void* {
    return ::operator new(std::max<std::size_t>(bytes, 1));
  };
  std::function<void(void* dst, const void* src, std::size_t bytes)> upload =
      [](void* dst, const void* src, std::size_t bytes) {
        if (bytes != 0) std::memcpy(dst, src, bytes);
      };
  std::function<void(void* dst, const void* src, std::size_t bytes)> download =
      [](void* dst, const void* src, std::size_t bytes) {
        if (bytes != 0) std::memcpy(dst, src, bytes);
      };
  std::function<void(void*)> release = [](void* p) { ::operator delete(p); };
};

// One implementation under test.
struct GroupFactory {
  std::string name;
  // Starts one group of `local_size` ranks (a fresh job): returns the function that each
  // rank's thread calls, all at once, with its local rank, to create its member. Creation may
  // be collective.
  std::function<std::function<std::unique_ptr<LocalGroup>(int local_rank)>(int local_size)> start;
  const exec::Executor* exec = &exec::host_executor();
  GroupMemory memory;
  // The implementation's small/large switch in bytes, to test either side (0: none).
  std::size_t boundary_bytes = 0;
};

struct ConformanceParam {
  std::shared_ptr<const GroupFactory> factory;
  int local_size = 1;
};

inline std::vector<ConformanceParam> conformance_params(std::shared_ptr<const GroupFactory> f,
                                                        std::vector<int> sizes) {
  std::vector<ConformanceParam> v;
  for (int l : sizes) v.push_back({f, l});
  return v;
}

inline void PrintTo(const ConformanceParam& p, std::ostream* os) {
  *os << p.factory->name << ", " << p.local_size << " local ranks";
}

inline std::string conformance_name(const ::testing::TestParamInfo<ConformanceParam>& info) {
  return info.param.factory->name + "_L" + std::to_string(info.param.local_size);
}

using namespace std::chrono_literals;

namespace detail {

inline Deadline in(std::chrono::milliseconds d) { return Clock::now() + d; }

inline std::pair<std::size_t, std::size_t> shard_of(std::size_t count, int size, int i) {
  const auto l = static_cast<std::size_t>(size), k = static_cast<std::size_t>(i);
  return {split_begin(count, l, k), split_begin(count, l, k + 1)};
}

// Exact small values as element bytes, and back, through the test suite's own 16-bit float
// conversions (tests/multirank/reference.hpp), independent of the library's kernels.
inline void store_value(DataType t, std::byte* p, long double v) {
  auto put = [&](auto x) { std::memcpy(p, &x, sizeof(x)); };
  switch (t) {
    case DataType::float32:
      return put(static_cast<float>(v));
    case DataType::float64:
      return put(static_cast<double>(v));
    case DataType::float16:
      return put(ringlet::testing::float_to_half_bits(static_cast<float>(v)));
    case DataType::bfloat16:
      return put(ringlet::testing::float_to_bf16_bits(static_cast<float>(v)));
    case DataType::int8:
      return put(static_cast<std::int8_t>(v));
    case DataType::uint8:
      return put(static_cast<std::uint8_t>(v));
    case DataType::int32:
      return put(static_cast<std::int32_t>(v));
    case DataType::int64:
      return put(static_cast<std::int64_t>(v));
  }
}

inline long double load_value(DataType t, const std::byte* p) {
  auto get = [&](auto x) {
    std::memcpy(&x, p, sizeof(x));
    return x;
  };
  switch (t) {
    case DataType::float32:
      return get(float{});
    case DataType::float64:
      return get(double{});
    case DataType::float16:
      return ringlet::testing::half_bits_to_float(get(std::uint16_t{}));
    case DataType::bfloat16:
      return ringlet::testing::bf16_bits_to_float(get(std::uint16_t{}));
    case DataType::int8:
      return get(std::int8_t{});
    case DataType::uint8:
      return get(std::uint8_t{});
    case DataType::int32:
      return get(std::int32_t{});
    case DataType::int64:
      return get(std::int64_t{});
  }
  return 0;
}

inline bool is_unsigned(DataType t) { return t == DataType::uint8; }

// What local rank r contributes at index i: small integers whose fold over four ranks stays
// exact and in range in every type (prod: |v| <= 2).
inline long double value_of(DataType t, ReduceOp op, int r, std::size_t i) {
  if (op == ReduceOp::prod) {
    const long v = static_cast<long>((r * 5 + i * 3) % 5);
    return is_unsigned(t) ? v % 3 : v - 2;
  }
  const long v = static_cast<long>((r * 7 + i * 13) % 23);
  return is_unsigned(t) ? v : v - 11;
}

inline long double apply(ReduceOp op, long double a, long double b) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg:  // a local group reduces avg as sum; the caller scales
      return a + b;
    case ReduceOp::prod:
      return a * b;
    case ReduceOp::min:
      return std::min(a, b);
    case ReduceOp::max:
      return std::max(a, b);
  }
  return a;
}

inline long double reference(DataType t, ReduceOp op, int size, std::size_t i) {
  long double acc = value_of(t, op, 0, i);
  for (int s = 1; s < size; ++s) acc = apply(op, acc, value_of(t, op, s, i));
  return acc;
}

inline std::string what_of(const std::exception_ptr& p) {
  try {
    std::rethrow_exception(p);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "?";
}

inline ErrorCode code_of(const std::exception_ptr& p) {
  try {
    std::rethrow_exception(p);
  } catch (const Error& e) {
    return e.error_code();
  } catch (...) {
  }
  return ErrorCode::invalid_argument;
}

}  // namespace detail

// One rank's member of the group under test, called as a communicator would: every call
// carries the fingerprint of a collective of its own, numbered 1, 2, ...
class Member {
 public:
  Member(LocalGroup& g, const GroupFactory& f) : g_(g), f_(f) {}
  LocalGroup& group() { return g_; }
  int rank() const { return g_.local_rank(); }
  int size() const { return g_.local_size(); }
  const exec::Executor& exec() const { return *f_.exec; }

  Fingerprint next(CollectiveKind kind, std::size_t count, DataType type,
                   ReduceOp op = ReduceOp::sum, int root = -1) {
    return Fingerprint{++seq_, kind, type, op, root, count};
  }

  // A buffer of the group's memory kind with a host mirror.
  class Buffer {
   public:
    Buffer(const GroupFactory& f, std::size_t bytes)
        : f_(f), host_(bytes), device_(f.memory.allocate(bytes)) {}
    ~Buffer() { f_.memory.release(device_); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    std::byte* host() { return host_.data(); }
    void* device() { return device_; }
    void upload() { f_.memory.upload(device_, host_.data(), host_.size()); }
    void download() { f_.memory.download(host_.data(), device_, host_.size()); }
    const std::vector<std::byte>& bytes() const { return host_; }

   private:
    const GroupFactory& f_;
    std::vector<std::byte> host_;
    void* device_;
  };
  std::unique_ptr<Buffer> buffer(std::size_t bytes) { return std::make_unique<Buffer>(f_, bytes); }

 private:
  LocalGroup& g_;
  const GroupFactory& f_;
  std::uint64_t seq_ = 0;
};

class LocalGroupConformance : public ::testing::TestWithParam<ConformanceParam> {
 protected:
  const GroupFactory& factory() const { return *GetParam().factory; }
  int size() const { return GetParam().local_size; }

  // Runs body(member) on local_size threads, one group member each; returns each rank's
  // exception (null when it returned).
  std::vector<std::exception_ptr> run(const std::function<void(Member&)>& body) {
    auto make = factory().start(size());
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(size()));
    std::vector<std::thread> threads;
    for (int r = 0; r < size(); ++r) {
      threads.emplace_back([&, r] {
        try {
          std::unique_ptr<LocalGroup> g = make(r);
          EXPECT_EQ(g->local_rank(), r);
          EXPECT_EQ(g->local_size(), size());
          EXPECT_EQ(g->memory(), factory().exec->memory());
          Member m(*g, factory());
          body(m);
        } catch (...) {
          errors[static_cast<std::size_t>(r)] = std::current_exception();
        }
      });
    }
    for (auto& t : threads) t.join();
    return errors;
  }

  static void expect_no_errors(const std::vector<std::exception_ptr>& errors) {
    for (std::size_t r = 0; r < errors.size(); ++r) {
      if (errors[r])
        ADD_FAILURE() << "local rank " << r << " threw: " << detail::what_of(errors[r]);
    }
  }

  // Counts to run for elements of `esize` bytes: empty, one, odd, either side of the
  // implementation's small/large switch, and 1 MiB + 3 elements (several chunks, odd tail).
  std::vector<std::size_t> counts(std::size_t esize, bool large = true) const {
    std::vector<std::size_t> c{0, 1, 13};
    if (const std::size_t b = factory().boundary_bytes; b != 0) {
      c.push_back(b / esize);
      c.push_back(b / esize + 1);
    }
    if (large) c.push_back((std::size_t{1} << 20) / esize + 3);
    return c;
  }

  // Results of every rank, compared bit for bit after run().
  static void expect_identical(const std::vector<std::vector<std::byte>>& results,
                               const std::string& what) {
    for (std::size_t r = 1; r < results.size(); ++r) {
      EXPECT_TRUE(results[r] == results[0]) << what << ": local rank " << r << " differs from 0";
    }
  }
};

inline constexpr DataType kAllTypes[] = {DataType::float32,  DataType::float64, DataType::float16,
                                         DataType::bfloat16, DataType::int8,    DataType::uint8,
                                         DataType::int32,    DataType::int64};
inline constexpr ReduceOp kAllOps[] = {ReduceOp::sum, ReduceOp::prod, ReduceOp::min, ReduceOp::max,
                                       ReduceOp::avg};

TEST_P(LocalGroupConformance, AllreduceEveryTypeAndOpMatchesReference) {
  std::vector<std::vector<std::byte>> results(static_cast<std::size_t>(size()));
  expect_no_errors(run([&](Member& m) {
    for (DataType t : kAllTypes) {
      const std::size_t es = size_of(t);
      for (ReduceOp op : kAllOps) {
        for (std::size_t count : counts(es, op == ReduceOp::sum)) {
          auto buf = m.buffer(count * es);
          for (std::size_t i = 0; i < count; ++i) {
            detail::store_value(t, buf->host() + i * es, detail::value_of(t, op, m.rank(), i));
          }
          buf->upload();
          m.group().allreduce(buf->device(), count, t, op, m.exec(),
                              m.next(CollectiveKind::allreduce, count, t, op), detail::in(60s));
          buf->download();
          for (std::size_t i = 0; i < count; ++i) {
            const long double want = detail::reference(t, op, m.size(), i);
            const long double got = detail::load_value(t, buf->host() + i * es);
            if (got != want) {
              ADD_FAILURE() << "allreduce " << to_string(t) << " " << to_string(op) << " count "
                            << count << " local rank " << m.rank() << " index " << i << ": got "
                            << static_cast<double>(got) << " want " << static_cast<double>(want);
              break;
            }
          }
          if (t == DataType::float32 && op == ReduceOp::sum && count == counts(es).back()) {
            results[static_cast<std::size_t>(m.rank())] = buf->bytes();
          }
        }
      }
    }
  }));
  expect_identical(results, "allreduce float32 sum");
}

// Rounding makes the order of the fold visible: random floats must still give the same bits
// on every rank.
TEST_P(LocalGroupConformance, AllreduceRandomFloatsBitwiseIdenticalOnEveryRank) {
  for (DataType t : {DataType::float32, DataType::float16, DataType::bfloat16}) {
    for (std::size_t count : counts(size_of(t))) {
      std::vector<std::vector<std::byte>> results(static_cast<std::size_t>(size()));
      expect_no_errors(run([&](Member& m) {
        const std::size_t es = size_of(t);
        std::mt19937 gen(static_cast<unsigned>(77 + m.rank()));
        std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
        auto buf = m.buffer(count * es);
        for (std::size_t i = 0; i < count; ++i) {
          const float f = dist(gen);
          if (t == DataType::float32) {
            std::memcpy(buf->host() + i * es, &f, 4);
          } else {
            // Any bit pattern of a finite value will do: truncate float32's.
            std::uint32_t b;
            std::memcpy(&b, &f, 4);
            const std::uint16_t h =
                t == DataType::bfloat16
                    ? static_cast<std::uint16_t>(b >> 16)
                    : ringlet::testing::float_to_half_bits(std::ldexp(std::round(f * 1024), -10));
            std::memcpy(buf->host() + i * es, &h, 2);
          }
        }
        buf->upload();
        m.group().allreduce(buf->device(), count, t, ReduceOp::sum, m.exec(),
                            m.next(CollectiveKind::allreduce, count, t), detail::in(60s));
        buf->download();
        results[static_cast<std::size_t>(m.rank())] = buf->bytes();
      }));
      expect_identical(results, std::string("allreduce ") + std::string(to_string(t)) + " count " +
                                    std::to_string(count));
    }
  }
}

TEST_P(LocalGroupConformance, ReduceScatterShardsMatchReference) {
  expect_no_errors(run([&](Member& m) {
    for (DataType t : kAllTypes) {
      const std::size_t es = size_of(t);
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::max, ReduceOp::avg}) {
        auto cs = counts(es, op == ReduceOp::sum);
        cs.push_back(static_cast<std::size_t>(m.size()) - 1);  // some shards empty
        cs.push_back(static_cast<std::size_t>(m.size()) + 1);
        for (std::size_t count : cs) {
          auto buf = m.buffer(count * es);
          for (std::size_t i = 0; i < count; ++i) {
            detail::store_value(t, buf->host() + i * es, detail::value_of(t, op, m.rank(), i));
          }
          buf->upload();
          m.group().reduce_scatter(buf->device(), count, t, op, m.exec(),
                                   m.next(CollectiveKind::reduce_scatter, count, t, op),
                                   detail::in(60s));
          buf->download();
          auto [first, end] = detail::shard_of(count, m.size(), m.rank());
          for (std::size_t i = first; i < end; ++i) {
            const long double want = detail::reference(t, op, m.size(), i);
            if (detail::load_value(t, buf->host() + i * es) != want) {
              ADD_FAILURE() << "reduce_scatter " << to_string(t) << " " << to_string(op)
                            << " count " << count << " local rank " << m.rank() << " index " << i;
              break;
            }
          }
        }
      }
    }
  }));
}

TEST_P(LocalGroupConformance, AllgatherAssemblesEveryShard) {
  for (DataType t : {DataType::uint8, DataType::float16, DataType::float64}) {
    const std::size_t es = size_of(t);
    auto cs = counts(es);
    cs.push_back(static_cast<std::size_t>(size()) + 1);
    for (std::size_t count : cs) {
      std::vector<std::vector<std::byte>> results(static_cast<std::size_t>(size()));
      expect_no_errors(run([&](Member& m) {
        auto buf = m.buffer(count * es);
        auto [first, end] = detail::shard_of(count, m.size(), m.rank());
        for (std::size_t b = 0; b < count * es; ++b) {
          const bool mine = b >= first * es && b < end * es;
          buf->host()[b] = mine ? static_cast<std::byte>(b * 7 + 1) : std::byte{0xee};
        }
        buf->upload();
        m.group().allgather(buf->device(), count, t, m.exec(),
                            m.next(CollectiveKind::allgather, count, t), detail::in(60s));
        buf->download();
        for (std::size_t b = 0; b < count * es; ++b) {
          if (buf->host()[b] != static_cast<std::byte>(b * 7 + 1)) {
            ADD_FAILURE() << "allgather " << to_string(t) << " count " << count << " local rank "
                          << m.rank() << " byte " << b;
            break;
          }
        }
        results[static_cast<std::size_t>(m.rank())] = buf->bytes();
      }));
      expect_identical(results, "allgather");
    }
  }
}

TEST_P(LocalGroupConformance, BroadcastFromEveryRoot) {
  expect_no_errors(run([&](Member& m) {
    for (std::size_t bytes : counts(1)) {
      for (int root = 0; root < m.size(); ++root) {
        auto buf = m.buffer(bytes);
        for (std::size_t i = 0; i < bytes; ++i) {
          buf->host()[i] = static_cast<std::byte>(
              m.rank() == root ? i * 31 + static_cast<unsigned>(root) : 0xee);
        }
        buf->upload();
        m.group().broadcast(
            buf->device(), bytes, root, m.exec(),
            m.next(CollectiveKind::broadcast, bytes, DataType::uint8, ReduceOp::sum, root),
            detail::in(60s));
        buf->download();
        for (std::size_t i = 0; i < bytes; ++i) {
          if (buf->host()[i] != static_cast<std::byte>(i * 31 + static_cast<unsigned>(root))) {
            ADD_FAILURE() << "broadcast bytes " << bytes << " root " << root << " local rank "
                          << m.rank() << " index " << i;
            break;
          }
        }
      }
    }
  }));
}

TEST_P(LocalGroupConformance, BarrierOrdersEveryRank) {
  std::atomic<int> arrived{0};
  expect_no_errors(run([&](Member& m) {
    for (int round = 1; round <= 10; ++round) {
      arrived.fetch_add(1);
      m.group().barrier(m.next(CollectiveKind::barrier, 0, DataType::uint8, ReduceOp::max),
                        detail::in(30s));
      EXPECT_GE(arrived.load(), round * m.size());
      m.group().barrier(m.next(CollectiveKind::barrier, 0, DataType::uint8, ReduceOp::max),
                        detail::in(30s));
    }
  }));
}

// The hierarchical allreduce calls reduce_scatter and allgather once per pipeline chunk under
// the one fingerprint of its collective.
TEST_P(LocalGroupConformance, ManyStepsUnderOneFingerprint) {
  expect_no_errors(run([&](Member& m) {
    const Fingerprint fp = m.next(CollectiveKind::allreduce, 5 * 1000, DataType::int32);
    for (int chunk = 0; chunk < 5; ++chunk) {
      const std::size_t count = 1000;
      auto buf = m.buffer(count * 4);
      for (std::size_t i = 0; i < count; ++i) {
        detail::store_value(DataType::int32, buf->host() + i * 4,
                            detail::value_of(DataType::int32, ReduceOp::sum, m.rank(), i + chunk));
      }
      buf->upload();
      m.group().reduce_scatter(buf->device(), count, DataType::int32, ReduceOp::sum, m.exec(), fp,
                               detail::in(30s));
      m.group().allgather(buf->device(), count, DataType::int32, m.exec(), fp, detail::in(30s));
      buf->download();
      for (std::size_t i = 0; i < count; ++i) {
        const long double want = detail::reference(DataType::int32, ReduceOp::sum, m.size(),
                                                   i + static_cast<std::size_t>(chunk));
        if (detail::load_value(DataType::int32, buf->host() + i * 4) != want) {
          ADD_FAILURE() << "chunk " << chunk << " index " << i << " local rank " << m.rank();
          break;
        }
      }
    }
  }));
}

TEST_P(LocalGroupConformance, AgreeWithEqualFingerprintsPasses) {
  expect_no_errors(run([&](Member& m) {
    for (CollectiveKind k :
         {CollectiveKind::allreduce, CollectiveKind::broadcast, CollectiveKind::allgather,
          CollectiveKind::reduce_scatter, CollectiveKind::barrier, CollectiveKind::dup}) {
      m.group().agree(m.next(k, 4096, DataType::float32, ReduceOp::sum, 0), detail::in(30s));
    }
    // The group's own collectives still line up after agreements.
    m.group().barrier(m.next(CollectiveKind::barrier, 0, DataType::uint8, ReduceOp::max),
                      detail::in(30s));
  }));
}

TEST_P(LocalGroupConformance, AgreeWithDifferentFingerprintsThrowsMismatchOnEveryRank) {
  if (size() < 2) GTEST_SKIP() << "one rank agrees with itself";
  // The last rank deviates: in count, in kind, or by running the group's own allreduce.
  for (int variant = 0; variant < 3; ++variant) {
    const auto errors = run([&](Member& m) {
      const bool deviant = m.rank() == m.size() - 1;
      m.group().agree(m.next(CollectiveKind::allreduce, 8, DataType::float32), detail::in(30s));
      const auto start = Clock::now();
      try {
        if (!deviant) {
          m.group().agree(m.next(CollectiveKind::allreduce, 1000, DataType::float32),
                          detail::in(30s));
        } else if (variant == 0) {
          m.group().agree(m.next(CollectiveKind::allreduce, 1024, DataType::float32),
                          detail::in(30s));
        } else if (variant == 1) {
          m.group().agree(
              m.next(CollectiveKind::broadcast, 1000, DataType::float32, ReduceOp::sum, 0),
              detail::in(30s));
        } else {
          auto buf = m.buffer(1000 * 4);
          buf->upload();
          m.group().allreduce(buf->device(), 1000, DataType::float32, ReduceOp::sum, m.exec(),
                              m.next(CollectiveKind::allreduce, 1000, DataType::float32),
                              detail::in(30s));
        }
      } catch (...) {
        EXPECT_LT(Clock::now() - start, 5s) << "mismatch was not prompt";
        throw;
      }
    });
    for (int r = 0; r < size(); ++r) {
      const auto& e = errors[static_cast<std::size_t>(r)];
      ASSERT_TRUE(e) << "variant " << variant << ": local rank " << r << " did not throw";
      EXPECT_EQ(detail::code_of(e), ErrorCode::mismatch) << detail::what_of(e);
      if (variant < 2) {
        const std::string want = variant == 0 ? "count=1024" : "broadcast(count=1000";
        EXPECT_NE(detail::what_of(e).find(want), std::string::npos) << detail::what_of(e);
        EXPECT_NE(detail::what_of(e).find("allreduce(count=1000"), std::string::npos)
            << detail::what_of(e);
      }
    }
  }
}

TEST_P(LocalGroupConformance, MarkFailedMakesTheOthersThrowPeerLostPromptly) {
  if (size() < 2) GTEST_SKIP() << "no other rank to tell";
  const auto errors = run([&](Member& m) {
    // Every member exists before rank 0 fails: a barrier of all first.
    m.group().barrier(m.next(CollectiveKind::barrier, 0, DataType::uint8, ReduceOp::max),
                      detail::in(30s));
    if (m.rank() == 0) {
      std::this_thread::sleep_for(100ms);  // the others are waiting by now
      m.group().mark_failed(ErrorCode::aborted);
      return;
    }
    const auto start = Clock::now();
    try {
      m.group().barrier(m.next(CollectiveKind::barrier, 0, DataType::uint8, ReduceOp::max),
                        detail::in(30s));
    } catch (...) {
      EXPECT_LT(Clock::now() - start, 3s) << "peer_lost was not prompt";
      throw;
    }
  });
  EXPECT_FALSE(errors[0]) << detail::what_of(errors[0]);
  for (int r = 1; r < size(); ++r) {
    const auto& e = errors[static_cast<std::size_t>(r)];
    ASSERT_TRUE(e) << "local rank " << r << " did not throw";
    EXPECT_EQ(detail::code_of(e), ErrorCode::peer_lost) << detail::what_of(e);
  }
}

TEST_P(LocalGroupConformance, BadRootIsInvalidArgumentAndLeavesTheGroupIntact) {
  expect_no_errors(run([&](Member& m) {
    auto buf = m.buffer(1);
    try {
      m.group().broadcast(
          buf->device(), 1, m.size(), m.exec(),
          m.next(CollectiveKind::broadcast, 1, DataType::uint8, ReduceOp::sum, m.size()),
          detail::in(1s));
      ADD_FAILURE() << "root " << m.size() << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_code(), ErrorCode::invalid_argument) << e.what();
    }
    m.group().barrier(m.next(CollectiveKind::barrier, 0, DataType::uint8, ReduceOp::max),
                      detail::in(30s));
  }));
}

}  // namespace ringlet::groups::testing
