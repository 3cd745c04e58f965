// SPDX-License-Identifier: Apache-2.0
// Data-parallel SGD on Fashion-MNIST with ringlet: a 784-128-10 MLP, one gradient allreduce
// per step. Uses only the public API. Run: ringlet-run -np 2 build/examples/sgd_fashion_mnist
#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <numeric>
#include <ringlet/ringlet.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "idx_reader.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using ringlet_example::Dataset;

constexpr std::size_t kRows = 28;
constexpr std::size_t kCols = 28;
constexpr std::size_t kInputs = kRows * kCols;
constexpr std::size_t kHidden = 128;
constexpr std::size_t kClasses = 10;
constexpr float kPixelScale = 1.0f / 255.0f;

// All parameters live in one flat vector so that one allreduce carries every gradient.
constexpr std::size_t kW1 = 0;                         // [kInputs][kHidden], input-major
constexpr std::size_t kB1 = kW1 + kInputs * kHidden;   // [kHidden]
constexpr std::size_t kW2 = kB1 + kHidden;             // [kHidden][kClasses]
constexpr std::size_t kB2 = kW2 + kHidden * kClasses;  // [kClasses]
constexpr std::size_t kParams = kB2 + kClasses;

constexpr std::string_view kDefaultData = "/usr/share/datasets/fashion-mnist";

struct Flags {
  int epochs = 5;
  std::size_t batch = 64;  // global: split across the ranks
  float lr = 0.1f;
  std::string data{kDefaultData};
  std::size_t limit = static_cast<std::size_t>(-1);
  std::uint64_t seed = 1;
};

constexpr const char* kUsage =
    "usage: sgd_fashion_mnist [--epochs N] [--batch N] [--lr X] [--data DIR] [--limit N] "
    "[--seed N]\n"
    "  --epochs N  passes over the training set (default 5)\n"
    "  --batch N   global mini-batch size, split across the ranks (default 64)\n"
    "  --lr X      learning rate (default 0.1)\n"
    "  --data DIR  folder with the Fashion-MNIST IDX files (default "
    "/usr/share/datasets/fashion-mnist)\n"
    "  --limit N   use only the first N training samples (default: all 60000)\n"
    "  --seed N    seed of the initial weights and of the shuffle (default 1)\n"
    "Start it with `ringlet-run -np N sgd_fashion_mnist ...`, or alone as one process.\n";

// Thrown for a bad command line; main() prints it with the usage text.
struct UsageError {
  std::string what;
};

std::uint64_t parse_unsigned(const std::string& flag, const std::string& text, std::uint64_t min) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || text[0] == '-' || *end != '\0' || errno != 0 || v < min) {
    throw UsageError{flag + " " + text + ": expected an integer >= " + std::to_string(min)};
  }
  return v;
}

Flags parse_flags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    std::string value;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      throw UsageError{arg + " needs a value"};
    }
    if (arg == "--epochs") {
      f.epochs = static_cast<int>(std::min<std::uint64_t>(parse_unsigned(arg, value, 1), 100000));
    } else if (arg == "--batch") {
      f.batch = parse_unsigned(arg, value, 1);
    } else if (arg == "--lr") {
      char* end = nullptr;
      f.lr = std::strtof(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !(f.lr > 0.0f) || !std::isfinite(f.lr)) {
        throw UsageError{"--lr " + value + ": expected a positive number"};
      }
    } else if (arg == "--data") {
      f.data = value;
    } else if (arg == "--limit") {
      f.limit = parse_unsigned(arg, value, 1);
    } else if (arg == "--seed") {
      f.seed = parse_unsigned(arg, value, 0);
    } else {
      throw UsageError{"unknown flag " + arg};
    }
  }
  return f;
}

// splitmix64: a small, portable generator, so that every rank (on any platform) draws the
// same shuffle from the same seed. std::shuffle's output is implementation-defined.
struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) * 0x1.0p-24f; }  // [0, 1)
};

// He-uniform weights, zero biases. Each rank draws from its own seed on purpose: the
// broadcast from rank 0 is what gives every rank the same starting point.
void init_weights(std::vector<float>& w, std::uint64_t seed) {
  SplitMix64 rng{seed};
  auto fill = [&](std::size_t offset, std::size_t count, std::size_t fan_in) {
    float bound = std::sqrt(6.0f / static_cast<float>(fan_in));
    for (std::size_t i = 0; i < count; ++i) w[offset + i] = (2.0f * rng.uniform() - 1.0f) * bound;
  };
  std::fill(w.begin(), w.end(), 0.0f);
  fill(kW1, kInputs * kHidden, kInputs);
  fill(kW2, kHidden * kClasses, kHidden);
}

void shuffle(std::vector<std::uint32_t>& order, std::uint64_t seed) {
  SplitMix64 rng{seed};
  for (std::size_t i = order.size(); i > 1; --i) {
    std::swap(order[i - 1], order[rng.next() % i]);  // modulo bias is negligible here
  }
}

struct SampleResult {
  float loss;
  bool correct;
};

// Forward pass for one image; with `grads`, also adds this sample's gradient to it.
// Zero pixels (about half of Fashion-MNIST) are skipped in both directions.
SampleResult forward_backward(const std::vector<float>& w, const std::uint8_t* pixels, int label,
                              std::vector<float>* grads) {
  std::array<float, kHidden> h;
  std::copy_n(w.data() + kB1, kHidden, h.begin());
  for (std::size_t i = 0; i < kInputs; ++i) {
    if (pixels[i] == 0) continue;
    const float x = static_cast<float>(pixels[i]) * kPixelScale;
    const float* row = w.data() + kW1 + i * kHidden;
    for (std::size_t j = 0; j < kHidden; ++j) h[j] += x * row[j];
  }
  for (float& v : h) v = std::max(v, 0.0f);  // ReLU

  std::array<float, kClasses> z;
  std::copy_n(w.data() + kB2, kClasses, z.begin());
  for (std::size_t j = 0; j < kHidden; ++j) {
    if (h[j] == 0.0f) continue;
    const float* row = w.data() + kW2 + j * kClasses;
    for (std::size_t k = 0; k < kClasses; ++k) z[k] += h[j] * row[k];
  }

  // Softmax cross-entropy, shifted by the largest logit for stability.
  const float zmax = *std::max_element(z.begin(), z.end());
  float sum = 0.0f;
  std::array<float, kClasses> p;
  for (std::size_t k = 0; k < kClasses; ++k) sum += (p[k] = std::exp(z[k] - zmax));
  for (float& v : p) v /= sum;
  const auto label_index = static_cast<std::size_t>(label);
  SampleResult result{std::log(sum) - (z[label_index] - zmax),
                      std::max_element(z.begin(), z.end()) - z.begin() == label};
  if (grads == nullptr) return result;

  // Backward: dL/dz = p - onehot(label).
  std::array<float, kClasses> dz = p;
  dz[label_index] -= 1.0f;
  float* g = grads->data();
  std::array<float, kHidden> dh{};
  for (std::size_t k = 0; k < kClasses; ++k) g[kB2 + k] += dz[k];
  for (std::size_t j = 0; j < kHidden; ++j) {
    if (h[j] == 0.0f) continue;  // ReLU gradient is zero here
    const float* row = w.data() + kW2 + j * kClasses;
    float* grow = g + kW2 + j * kClasses;
    float acc = 0.0f;
    for (std::size_t k = 0; k < kClasses; ++k) {
      grow[k] += h[j] * dz[k];
      acc += row[k] * dz[k];
    }
    dh[j] = acc;
  }
  for (std::size_t j = 0; j < kHidden; ++j) g[kB1 + j] += dh[j];
  for (std::size_t i = 0; i < kInputs; ++i) {
    if (pixels[i] == 0) continue;
    const float x = static_cast<float>(pixels[i]) * kPixelScale;
    float* grow = g + kW1 + i * kHidden;
    for (std::size_t j = 0; j < kHidden; ++j) grow[j] += x * dh[j];
  }
  return result;
}

// FNV-1a over the bytes of the weights: equal hashes on every rank mean (with overwhelming
// probability) bitwise-equal weights.
std::uint64_t fnv1a64(std::span<const float> values) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (float v : values) {
    auto bits = std::bit_cast<std::uint32_t>(v);
    for (int b = 0; b < 4; ++b) {
      hash ^= (bits >> (8 * b)) & 0xffu;
      hash *= 0x100000001b3ull;
    }
  }
  return hash;
}

// True when some launcher (ringlet-run, torchrun, mpirun, srun) set this process's rank or
// size. Without one, the program runs as a single process; see docs/guide/env.md for the variables.
bool started_by_launcher() {
  for (const char* var :
       {"RINGLET_RANK", "RINGLET_SIZE", "RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS"}) {
    const char* value = std::getenv(var);
    if (value != nullptr && *value != '\0') return true;
  }
  return false;
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

int train(const Flags& flags) {
  ringlet::Options options;
  if (!started_by_launcher()) {
    options.rank = 0;
    options.size = 1;
  }
  ringlet::Communicator comm = ringlet::Communicator::create(options);
  const int rank = comm.rank();
  const auto nranks = static_cast<std::size_t>(comm.size());
  const bool leader = rank == 0;

  Dataset train_set = ringlet_example::load_split(flags.data, "train", kRows, kCols,
                                                  static_cast<int>(kClasses), flags.limit);
  Dataset test_set =
      ringlet_example::load_split(flags.data, "t10k", kRows, kCols, static_cast<int>(kClasses));
  if (leader) {
    std::printf(
        "ringlet %.*s: %zu ranks, %zu training samples, %zu test samples, %zu parameters\n"
        "epochs %d, global batch %zu (about %zu per rank), lr %g, seed %llu\n",
        static_cast<int>(ringlet::version().size()), ringlet::version().data(), nranks,
        train_set.count, test_set.count, kParams, flags.epochs, flags.batch,
        (flags.batch + nranks - 1) / nranks, static_cast<double>(flags.lr),
        static_cast<unsigned long long>(flags.seed));
    std::fflush(stdout);
  }

  std::vector<float> weights(kParams);
  std::vector<float> grads(kParams);
  init_weights(weights, flags.seed + static_cast<std::uint64_t>(rank));
  comm.broadcast(std::span(weights), 0);  // same starting point on every rank

  std::vector<std::uint32_t> order(train_set.count);
  std::iota(order.begin(), order.end(), 0u);
  for (int epoch = 1; epoch <= flags.epochs; ++epoch) {
    shuffle(order, flags.seed * 1000003u + static_cast<std::uint64_t>(epoch));
    const Clock::time_point epoch_start = Clock::now();
    Clock::duration in_allreduce{};
    double loss_sum = 0.0;
    double seen = 0.0;
    for (std::size_t start = 0; start < order.size(); start += flags.batch) {
      const std::size_t end = std::min(order.size(), start + flags.batch);
      // This rank's shard of the global batch: positions start + rank, start + rank + N, ...
      std::fill(grads.begin(), grads.end(), 0.0f);
      for (std::size_t pos = start + static_cast<std::size_t>(rank); pos < end; pos += nranks) {
        const std::uint32_t s = order[pos];
        SampleResult r = forward_backward(weights, &train_set.images[s * train_set.pixels],
                                          train_set.labels[s], &grads);
        loss_sum += r.loss;
        seen += 1.0;
      }
      // Scale the shard's gradient sum by N / B, so that the average over the ranks is the
      // mean gradient of the whole batch, also when B does not divide evenly.
      const float scale = static_cast<float>(nranks) / static_cast<float>(end - start);
      for (float& g : grads) g *= scale;
      const Clock::time_point t0 = Clock::now();
      comm.allreduce(std::span(grads), ringlet::ReduceOp::avg);
      in_allreduce += Clock::now() - t0;
      for (std::size_t i = 0; i < kParams; ++i) weights[i] -= flags.lr * grads[i];
    }
    const Clock::duration train_time = Clock::now() - epoch_start;

    // Evaluate: each rank scores its share of the test set; one allreduce sums the counts.
    std::array<double, 5> stats{loss_sum, seen, 0.0, 0.0, 0.0};
    for (std::size_t s = static_cast<std::size_t>(rank); s < test_set.count; s += nranks) {
      SampleResult r = forward_backward(weights, &test_set.images[s * test_set.pixels],
                                        test_set.labels[s], nullptr);
      stats[2] += r.loss;
      stats[3] += r.correct ? 1.0 : 0.0;
      stats[4] += 1.0;
    }
    comm.allreduce(std::span<double>(stats), ringlet::ReduceOp::sum);  // dynamic extent
    const double train_loss = stats[0] / stats[1];
    if (leader) {
      std::printf(
          "epoch %d/%d  train_loss %.4f  test_loss %.4f  test_acc %.2f%%  time %.2f s  "
          "allreduce %.3f s (%.1f%%)\n",
          epoch, flags.epochs, train_loss, stats[2] / stats[4], 100.0 * stats[3] / stats[4],
          seconds(train_time), seconds(in_allreduce),
          100.0 * seconds(in_allreduce) / std::max(seconds(train_time), 1e-9));
      std::fflush(stdout);
    }
  }

  // Every rank applied the same averaged gradients to the same start: the weights must be
  // bitwise identical. Gather one hash per rank and compare.
  std::vector<std::int64_t> hashes(nranks);
  std::int64_t mine = std::bit_cast<std::int64_t>(fnv1a64(weights));
  comm.allgather(ringlet::Tensor::of(std::span(&mine, 1)), ringlet::Tensor::of(std::span(hashes)));
  bool identical =
      std::all_of(hashes.begin(), hashes.end(), [&](std::int64_t h) { return h == hashes[0]; });
  if (leader) {
    if (identical) {
      std::printf("weights: fnv1a64 %016llx, identical on all %zu ranks\n",
                  static_cast<unsigned long long>(hashes[0]), nranks);
    } else {
      std::printf("weights DIFFER between ranks:\n");
      for (std::size_t r = 0; r < nranks; ++r) {
        std::printf("  rank %zu: fnv1a64 %016llx\n", r, static_cast<unsigned long long>(hashes[r]));
      }
    }
    std::fflush(stdout);
  }
  return identical ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return train(parse_flags(argc, argv));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "sgd_fashion_mnist: %s\n%s", e.what.c_str(), kUsage);
    return 2;
  } catch (const ringlet_example::IdxError& e) {
    std::fprintf(stderr, "sgd_fashion_mnist: %s\n", e.what());
    if (e.missing()) {
      std::fprintf(stderr,
                   "The Fashion-MNIST data set is not there. Install it with "
                   "`apt-get install dataset-fashion-mnist`, or pass --data DIR (a folder with "
                   "train-images-idx3-ubyte.gz and the three other IDX files).\n");
    }
    return 1;
  } catch (const ringlet::Error& e) {
    std::fprintf(stderr, "sgd_fashion_mnist: ringlet error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sgd_fashion_mnist: %s\n", e.what());
    return 1;
  }
}
