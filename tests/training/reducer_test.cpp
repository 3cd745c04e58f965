// SPDX-License-Identifier: Apache-2.0
// GradientReducer: data-parallel training at 1, 2 and 4 ranks against a serial reference,
// the agreed bucket order, the mismatch rules (a rank that registers or marks differently),
// wire compression within its stated bound, and broadcast_parameters.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "src/common/str_cat.hpp"
#include "tests/multirank/rank_group.hpp"

namespace ringlet::testing {
namespace {

using namespace std::chrono_literals;

// --- a small MLP, 12-16-16-3 with tanh, softmax cross-entropy; T = float or double ---------

constexpr std::size_t kIn = 12, kH = 16, kOut = 3;
constexpr std::size_t kSteps = 20, kGlobalBatch = 32;

// Layer shapes: W1 [kIn][kH], b1, W2 [kH][kH], b2, W3 [kH][kOut], b3.
const std::array<std::size_t, 6> kSizes = {kIn * kH, kH, kH* kH, kH, kH* kOut, kOut};
const std::array<const char*, 6> kNames = {"w1", "b1", "w2", "b2", "w3", "b3"};

struct SplitMix {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

// Sample i of the synthetic task: inputs in [-1, 1), the label from a fixed linear map.
void sample(std::size_t i, std::array<double, kIn>& x, int& label) {
  SplitMix g{i * 7919 + 17};
  for (double& v : x) v = 2.0 * g.uniform() - 1.0;
  std::array<double, kOut> s{};
  for (std::size_t k = 0; k < kOut; ++k) {
    for (std::size_t j = 0; j < kIn; ++j)
      s[k] += x[j] * std::sin(1.0 + static_cast<double>(k * kIn + j));
  }
  label = static_cast<int>(std::max_element(s.begin(), s.end()) - s.begin());
}

template <class T>
using Params = std::array<std::vector<T>, 6>;

template <class T>
Params<T> initial_params(std::uint64_t seed) {
  Params<T> p;
  SplitMix g{seed};
  for (std::size_t l = 0; l < 6; ++l) {
    p[l].resize(kSizes[l]);
    for (T& v : p[l]) v = static_cast<T>((2.0 * g.uniform() - 1.0) * 0.5);
  }
  return p;
}

// Adds the gradient of sample `s`'s loss, times `weight`, to `g`.
template <class T>
void accumulate(const Params<T>& p, std::size_t s, T weight, Params<T>& g) {
  std::array<double, kIn> xd;
  int label = 0;
  sample(s, xd, label);
  std::array<T, kIn> x;
  for (std::size_t j = 0; j < kIn; ++j) x[j] = static_cast<T>(xd[j]);
  std::array<T, kH> h1, h2;
  for (std::size_t j = 0; j < kH; ++j) {
    T a = p[1][j];
    for (std::size_t i = 0; i < kIn; ++i) a += x[i] * p[0][i * kH + j];
    h1[j] = std::tanh(a);
  }
  for (std::size_t j = 0; j < kH; ++j) {
    T a = p[3][j];
    for (std::size_t i = 0; i < kH; ++i) a += h1[i] * p[2][i * kH + j];
    h2[j] = std::tanh(a);
  }
  std::array<T, kOut> z;
  for (std::size_t k = 0; k < kOut; ++k) {
    T a = p[5][k];
    for (std::size_t i = 0; i < kH; ++i) a += h2[i] * p[4][i * kOut + k];
    z[k] = a;
  }
  const T zmax = *std::max_element(z.begin(), z.end());
  T sum = 0;
  for (T& v : z) sum += (v = std::exp(v - zmax));
  std::array<T, kOut> dz;
  for (std::size_t k = 0; k < kOut; ++k)
    dz[k] = weight * (z[k] / sum - (static_cast<int>(k) == label ? 1 : 0));
  std::array<T, kH> d2{}, d1{};
  for (std::size_t k = 0; k < kOut; ++k) g[5][k] += dz[k];
  for (std::size_t i = 0; i < kH; ++i) {
    T acc = 0;
    for (std::size_t k = 0; k < kOut; ++k) {
      g[4][i * kOut + k] += h2[i] * dz[k];
      acc += p[4][i * kOut + k] * dz[k];
    }
    d2[i] = acc * (1 - h2[i] * h2[i]);
  }
  for (std::size_t j = 0; j < kH; ++j) g[3][j] += d2[j];
  for (std::size_t i = 0; i < kH; ++i) {
    T acc = 0;
    for (std::size_t j = 0; j < kH; ++j) {
      g[2][i * kH + j] += h1[i] * d2[j];
      acc += p[2][i * kH + j] * d2[j];
    }
    d1[i] = acc * (1 - h1[i] * h1[i]);
  }
  for (std::size_t j = 0; j < kH; ++j) g[1][j] += d1[j];
  for (std::size_t i = 0; i < kIn; ++i) {
    for (std::size_t j = 0; j < kH; ++j) g[0][i * kH + j] += x[i] * d1[j];
  }
}

// Sample at position `pos` of step `step`: a fixed permutation-free schedule.
std::size_t sample_at(std::size_t step, std::size_t pos) { return step * kGlobalBatch + pos; }

constexpr double kLr = 0.5;

// The serial reference in double: full-batch mean gradients, plain SGD.
Params<double> serial_reference() {
  Params<double> p = initial_params<double>(42);
  for (std::size_t step = 0; step < kSteps; ++step) {
    Params<double> g;
    for (std::size_t l = 0; l < 6; ++l) g[l].assign(kSizes[l], 0.0);
    for (std::size_t pos = 0; pos < kGlobalBatch; ++pos) {
      accumulate(p, sample_at(step, pos), 1.0 / kGlobalBatch, g);
    }
    for (std::size_t l = 0; l < 6; ++l) {
      for (std::size_t i = 0; i < kSizes[l]; ++i) p[l][i] -= kLr * g[l][i];
    }
  }
  return p;
}

std::vector<float> flatten(const Params<float>& p) {
  std::vector<float> out;
  for (const auto& v : p) out.insert(out.end(), v.begin(), v.end());
  return out;
}

// Trains on `n` ranks (threads) through the reducer; returns each rank's final parameters.
std::vector<std::vector<float>> train(int n, std::size_t bucket_bytes) {
  std::vector<std::vector<float>> result(static_cast<std::size_t>(n));
  std::mutex m;
  make_rank_group(RankMode::threads)->run(n, [&](RankContext& ctx) {
    Options o;
    o.timeout = 30s;
    Communicator comm = ctx.create(o);
    ReducerOptions ro;
    ro.bucket_bytes = bucket_bytes;
    GradientReducer reducer(comm, ro);
    // Each rank starts elsewhere; broadcast_parameters gives it rank 0's start.
    Params<float> p = initial_params<float>(ctx.rank == 0 ? 42 : 1000 + ctx.rank);
    Params<float> g;
    std::vector<Tensor> params;
    for (std::size_t l = 0; l < 6; ++l) {
      g[l].assign(kSizes[l], 0.0f);
      reducer.add(kNames[l], Tensor::of(std::span(g[l])));
      params.push_back(Tensor::of(std::span(p[l])));
    }
    reducer.broadcast_parameters(params);
    const std::size_t per_rank = kGlobalBatch / static_cast<std::size_t>(n);
    for (std::size_t step = 0; step < kSteps; ++step) {
      for (auto& v : g) std::fill(v.begin(), v.end(), 0.0f);
      for (std::size_t k = 0; k < per_rank; ++k) {
        const std::size_t pos = static_cast<std::size_t>(ctx.rank) * per_rank + k;
        accumulate(p, sample_at(step, pos), 1.0f / static_cast<float>(per_rank), g);
      }
      // Backward order: the last layer's gradients first.
      for (int l = 5; l >= 0; --l) reducer.mark_ready(kNames[static_cast<std::size_t>(l)]);
      reducer.wait();
      for (std::size_t l = 0; l < 6; ++l) {
        for (std::size_t i = 0; i < kSizes[l]; ++i) p[l][i] -= static_cast<float>(kLr) * g[l][i];
      }
    }
    EXPECT_EQ(reducer.steps(), kSteps);
    if (bucket_bytes != 0 && bucket_bytes < 1024) {
      EXPECT_GT(reducer.bucket_count(), 2u) << "small buckets should split the gradients";
    }
    std::lock_guard lock(m);
    result[static_cast<std::size_t>(ctx.rank)] = flatten(p);
  });
  return result;
}

double relative_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double diff = 0, peak = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    peak = std::max(peak, std::abs(b[i]));
  }
  return diff / peak;
}

TEST(ReducerTraining, SameParametersAtOneTwoAndFourRanks) {
  const Params<double> ref = serial_reference();
  std::vector<double> ref_flat;
  for (const auto& v : ref) ref_flat.insert(ref_flat.end(), v.begin(), v.end());
  std::vector<std::vector<float>> at1;
  for (int n : {1, 2, 4}) {
    auto ranks = train(n, 512);  // several buckets
    ASSERT_EQ(ranks.size(), static_cast<std::size_t>(n));
    for (int r = 1; r < n; ++r) {
      ASSERT_EQ(ranks[static_cast<std::size_t>(r)].size(), ranks[0].size());
      EXPECT_EQ(std::memcmp(ranks[static_cast<std::size_t>(r)].data(), ranks[0].data(),
                            ranks[0].size() * sizeof(float)),
                0)
          << n << " ranks: rank " << r << " holds different bits than rank 0";
    }
    // Against the serial double reference (float rounding over 20 steps).
    const double d_ref = relative_diff(ranks[0], ref_flat);
    EXPECT_LE(d_ref, 1e-4) << n << " ranks vs the serial reference";
    if (n == 1) {
      at1 = ranks;
    } else {
      std::vector<double> one(at1[0].begin(), at1[0].end());
      const double d = relative_diff(ranks[0], one);
      EXPECT_LE(d, 1e-5) << n << " ranks vs 1 rank: max|diff| / max|param| = " << d;
    }
  }
}

// --- ordering: every rank marks in its own random order; exact integer sums -------------

TEST(ReducerOrder, RanksMarkingInDifferentOrdersAgree) {
  constexpr int n = 3;
  make_rank_group(RankMode::threads)->run(n, [&](RankContext& ctx) {
    Options o;
    o.timeout = 30s;
    Communicator comm = ctx.create(o);
    ReducerOptions ro;
    ro.bucket_bytes = 4096;
    ro.postscale = 1.0f;  // plain sums: exact small integers
    GradientReducer reducer(comm, ro);
    constexpr std::size_t kTensors = 12;
    std::vector<std::vector<float>> g(kTensors);
    for (std::size_t t = 0; t < kTensors; ++t) g[t].resize(100 + 150 * t);
    // Registered in a rank-dependent order too.
    for (std::size_t i = 0; i < kTensors; ++i) {
      const std::size_t t = (i + static_cast<std::size_t>(ctx.rank) * 5) % kTensors;
      reducer.add(str_cat("t", t), Tensor::of(std::span(g[t])));
    }
    std::mt19937 rng(static_cast<unsigned>(ctx.rank) * 31 + 7);
    for (int step = 0; step < 4; ++step) {
      for (std::size_t t = 0; t < kTensors; ++t) {
        for (std::size_t i = 0; i < g[t].size(); ++i) {
          g[t][i] = static_cast<float>((ctx.rank + 1) * static_cast<int>(i % 7 + t + step));
        }
      }
      std::vector<std::size_t> order(kTensors);
      for (std::size_t t = 0; t < kTensors; ++t) order[t] = t;
      std::shuffle(order.begin(), order.end(), rng);
      for (std::size_t t : order) reducer.mark_ready(str_cat("t", t));
      reducer.wait();
      const int ranks_sum = n * (n + 1) / 2;
      for (std::size_t t = 0; t < kTensors; ++t) {
        for (std::size_t i = 0; i < g[t].size(); ++i) {
          const float want = static_cast<float>(ranks_sum * static_cast<int>(i % 7 + t + step));
          if (g[t][i] != want) {
            ADD_FAILURE() << "rank " << ctx.rank << " step " << step << " t" << t << "[" << i
                          << "] = " << g[t][i] << ", want " << want;
            return;
          }
        }
      }
    }
    EXPECT_GT(reducer.bucket_count(), 3u);
  });
}

// --- mismatch rules -------------------------------------------------------------------------

// Runs `n` ranks; `setup(rank, reducer, grads)` registers, then each step marks all but what
// `skip(rank, step, name)` says; expects every rank to get mismatch containing every `needle`.
void expect_mismatch(
    int n,
    const std::function<void(int, GradientReducer&, std::vector<std::vector<float>>&)>& setup,
    const std::function<bool(int, int, std::size_t)>& skip, const std::vector<std::string>& needles,
    ReducerOptions ro = {}) {
  make_rank_group(RankMode::threads)->run(n, [&](RankContext& ctx) {
    Options o;
    o.timeout = 20s;  // a hang would end as timeout, not mismatch
    Communicator comm = ctx.create(o);
    ReducerOptions mine = ro;
    if (ro.bucket_bytes == 1) mine.bucket_bytes = ctx.rank == 1 ? 8192 : 4096;
    GradientReducer reducer(comm, mine);
    std::vector<std::vector<float>> g;
    setup(ctx.rank, reducer, g);
    try {
      for (int step = 0; step < 4; ++step) {
        for (std::size_t t = 0; t < g.size(); ++t) {
          if (!skip(ctx.rank, step, t)) reducer.mark_ready(t);
        }
        reducer.wait();
      }
      ADD_FAILURE() << "rank " << ctx.rank << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.error_code(), ErrorCode::mismatch) << "rank " << ctx.rank << ": " << e.what();
      for (const std::string& s : needles) {
        EXPECT_NE(std::string(e.what()).find(s), std::string::npos)
            << "rank " << ctx.rank << ": '" << s << "' not in: " << e.what();
      }
      // The reducer refuses further use.
      EXPECT_THROW(reducer.wait(), Error);
    }
  });
}

void register_four(int, GradientReducer& r, std::vector<std::vector<float>>& g) {
  g.assign(4, std::vector<float>(3000, 1.0f));
  for (std::size_t t = 0; t < 4; ++t) r.add(str_cat("layer", t), Tensor::of(std::span(g[t])));
}

TEST(ReducerMismatch, ARankThatSkipsOneGradientFailsEveryRank) {
  for (int n : {2, 4}) {
    expect_mismatch(
        n, register_four,
        [](int rank, int step, std::size_t t) { return rank == 1 && step == 2 && t == 1; },
        {"step 3", "'layer1'", "not on rank 1"});
  }
}

TEST(ReducerMismatch, AGradientSkippedAtTheFirstStep) {
  expect_mismatch(
      2, register_four,
      [](int rank, int step, std::size_t t) { return rank == 0 && step == 0 && t == 3; },
      {"step 1", "'layer3'", "not on rank 0"});
}

TEST(ReducerMismatch, AGradientNoRankMarks) {
  expect_mismatch(3, register_four,
                  [](int, int step, std::size_t t) { return step == 1 && t == 0; },
                  {"'layer0'", "not marked ready on any rank"});
}

TEST(ReducerMismatch, ADifferentSizeOnOneRank) {
  expect_mismatch(
      3,
      [](int rank, GradientReducer& r, std::vector<std::vector<float>>& g) {
        g.assign(3, std::vector<float>(500, 1.0f));
        if (rank == 2) g[1].resize(600);
        for (std::size_t t = 0; t < 3; ++t) r.add(str_cat("p", t), Tensor::of(std::span(g[t])));
      },
      [](int, int, std::size_t) { return false; }, {"'p1'", "600 float32 on rank 2"});
}

TEST(ReducerMismatch, AGradientRegisteredOnOneRankOnly) {
  expect_mismatch(
      2,
      [](int rank, GradientReducer& r, std::vector<std::vector<float>>& g) {
        g.assign(rank == 1 ? 4 : 3, std::vector<float>(100, 1.0f));
        for (std::size_t t = 0; t < g.size(); ++t) {
          r.add(t == 3 ? std::string("extra") : str_cat("p", t), Tensor::of(std::span(g[t])));
        }
      },
      [](int, int, std::size_t) { return false; }, {"'extra'", "not registered on rank 0"});
}

TEST(ReducerMismatch, DifferentBucketSizes) {
  ReducerOptions ro;
  ro.bucket_bytes = 1;  // expect_mismatch: 8192 on rank 1, 4096 elsewhere
  expect_mismatch(
      2, register_four, [](int, int, std::size_t) { return false; },
      {"different options", "bucket_bytes=8192"}, ro);
}

TEST(ReducerMismatch, LocalMistakesAreInvalidArguments) {
  make_rank_group(RankMode::threads)->run(1, [&](RankContext& ctx) {
    Communicator comm = ctx.create();
    GradientReducer reducer(comm);
    std::vector<float> a(10), b(10);
    std::vector<int> ints(10);
    reducer.add("a", Tensor::of(std::span(a)));
    auto code = [](auto&& f) {
      try {
        f();
      } catch (const Error& e) {
        return e.error_code();
      }
      return ErrorCode::aborted;
    };
    EXPECT_EQ(code([&] { reducer.add("a", Tensor::of(std::span(b))); }),
              ErrorCode::invalid_argument);
    EXPECT_EQ(code([&] { reducer.add("ints", Tensor::of(std::span(ints))); }),
              ErrorCode::invalid_argument);
    EXPECT_EQ(code([&] { reducer.mark_ready("nope"); }), ErrorCode::invalid_argument);
    reducer.mark_ready("a");
    EXPECT_EQ(code([&] { reducer.mark_ready("a"); }), ErrorCode::invalid_argument);
    reducer.wait();
    EXPECT_EQ(code([&] { reducer.add("b", Tensor::of(std::span(b))); }),
              ErrorCode::invalid_argument);
  });
}

// --- compression within its bound ------------------------------------------------------------

void compression_case(int n, Compression c) {
  const double u = c == Compression::float16 ? 0x1p-11 : 0x1p-8;
  const double e = c == Compression::float16 ? 0x1p-25 : 0x1p-134;
  constexpr std::size_t kCount = 20000;
  constexpr float kPre = 0.5f;
  std::vector<std::vector<float>> inputs(static_cast<std::size_t>(n)),
      outputs(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) {
    std::mt19937 rng(static_cast<unsigned>(r) + 99);
    std::normal_distribution<float> d(0.0f, 1.0f);
    auto& in = inputs[static_cast<std::size_t>(r)];
    in.resize(kCount);
    // Magnitudes from 1e-6 (subnormal in float16) to 100.
    for (std::size_t i = 0; i < kCount; ++i) {
      in[i] = d(rng) * std::pow(10.0f, static_cast<float>(i % 9) - 6.0f);
    }
  }
  make_rank_group(RankMode::threads)->run(n, [&](RankContext& ctx) {
    Options o;
    o.timeout = 30s;
    Communicator comm = ctx.create(o);
    ReducerOptions ro;
    ro.compression = c;
    ro.prescale = kPre;
    ro.bucket_bytes = 16384;
    GradientReducer reducer(comm, ro);
    std::vector<float> g = inputs[static_cast<std::size_t>(ctx.rank)];
    reducer.add("g", Tensor::of(std::span(g).first(kCount / 2)));
    reducer.add("h", Tensor::of(std::span(g).subspan(kCount / 2)));
    reducer.mark_ready("h");
    reducer.mark_ready("g");
    reducer.wait();
    outputs[static_cast<std::size_t>(ctx.rank)] = g;
  });
  const double gamma = n * u / (1 - n * u);
  const double post = 1.0 / n;
  std::size_t inexact = 0;
  for (std::size_t i = 0; i < kCount; ++i) {
    long double s = 0, abs_sum = 0;
    for (int r = 0; r < n; ++r) {
      const float x = inputs[static_cast<std::size_t>(r)][i] * kPre;  // prescaled in float32
      s += x;
      abs_sum += std::fabs(static_cast<long double>(x));
    }
    const double got = outputs[0][i];
    const double bound =
        post * (gamma * static_cast<double>(abs_sum) + n * e) + std::abs(got) * 0x1p-23;
    const double err = std::abs(got - static_cast<double>(s * post));
    if (err > bound) {
      ADD_FAILURE() << n << " ranks, element " << i << ": error " << err << " > bound " << bound;
      return;
    }
    if (err > 0) ++inexact;
    for (int r = 1; r < n; ++r) {
      if (std::memcmp(&outputs[static_cast<std::size_t>(r)][i], &outputs[0][i], 4) != 0) {
        ADD_FAILURE() << "rank " << r << " differs from rank 0 at " << i;
        return;
      }
    }
  }
  // The values really travelled in 16 bits.
  EXPECT_GT(inexact, kCount / 4);
}

TEST(ReducerCompression, Float16WithinBound) {
  compression_case(2, Compression::float16);
  compression_case(4, Compression::float16);
}

TEST(ReducerCompression, BFloat16WithinBound) {
  compression_case(2, Compression::bfloat16);
  compression_case(4, Compression::bfloat16);
}

}  // namespace
}  // namespace ringlet::testing
