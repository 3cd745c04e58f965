// SPDX-License-Identifier: Apache-2.0
// Data-parallel training on Fashion-MNIST through ringlet::GradientReducer: softmax regression
// (784-10) or a deeper MLP (784-512-512-512-10, ReLU), SGD with momentum. The backward pass
// marks each layer's gradients ready as soon as they are final, so that the buckets of the
// last layers travel while the first layers are still being differentiated. --mode blocking
// runs the same training with one allreduce of all gradients after backward (the form of
// sgd_fashion_mnist), for comparison. Uses only the public API.
// Run: ringlet-run -np 4 build/examples/train_fashion_mnist --model mlp
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

constexpr std::size_t kInputs = 28 * 28;
constexpr std::size_t kClasses = 10;
constexpr float kPixelScale = 1.0f / 255.0f;

struct Flags {
  std::string model = "mlp";
  int epochs = 5;
  std::size_t batch = 64;  // global
  float lr = -1.0f;        // -1: the model's default
  float momentum = 0.9f;
  bool cosine = true;  // the learning rate follows a cosine from lr to 0 over the run
  std::string mode = "overlap";
  // 1.5 MiB: the MLP then travels in 4 buckets (fc4+fc3, fc2, fc1.weight, fc1.bias).
  std::size_t bucket_bytes = std::size_t{3} << 19;
  std::string compress = "none";
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::size_t limit = static_cast<std::size_t>(-1);
  std::size_t test_limit = static_cast<std::size_t>(-1);
  std::size_t max_steps = 0;  // per epoch; 0: the whole training set
  std::uint64_t seed = 1;
};

constexpr const char* kUsage =
    "usage: train_fashion_mnist [--model softmax|mlp] [--epochs N] [--batch N] [--lr X]\n"
    "         [--momentum X] [--schedule cosine|constant] [--mode overlap|blocking] "
    "[--bucket-bytes N]\n"
    "         [--compress none|fp16|bf16] [--data DIR] [--limit N] [--test-limit N]\n"
    "         [--steps N] [--seed N]\n"
    "  --model     softmax (784-10) or mlp (784-512-512-512-10, ReLU); default mlp\n"
    "  --batch     global mini-batch, split across the ranks (default 64)\n"
    "  --lr        learning rate (default 0.05 for mlp, 0.02 for softmax); --momentum 0.9\n"
    "  --schedule  cosine (from lr to 0 over the run, default) or constant\n"
    "  --mode      overlap: GradientReducer, layers marked ready during backward (default);\n"
    "              blocking: one allreduce of every gradient after backward\n"
    "  --bucket-bytes  reducer bucket size (default 1.5 MiB; 0: RINGLET_BUCKET_BYTES)\n"
    "  --compress  wire compression of the gradients (default none)\n"
    "  --limit N / --test-limit N  use the first N training / test samples\n"
    "  --steps N   at most N steps per epoch (benchmarks)\n";

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

float parse_float(const std::string& flag, const std::string& text, bool allow_zero) {
  char* end = nullptr;
  float v = std::strtof(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v) || v < 0.0f || (!allow_zero && v == 0.0f)) {
    throw UsageError{flag + " " + text + ": expected a positive number"};
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
    if (arg == "--model") {
      if (value != "softmax" && value != "mlp") throw UsageError{"--model: softmax or mlp"};
      f.model = value;
    } else if (arg == "--epochs") {
      f.epochs = static_cast<int>(std::min<std::uint64_t>(parse_unsigned(arg, value, 1), 1000));
    } else if (arg == "--batch") {
      f.batch = parse_unsigned(arg, value, 1);
    } else if (arg == "--lr") {
      f.lr = parse_float(arg, value, false);
    } else if (arg == "--momentum") {
      f.momentum = parse_float(arg, value, true);
    } else if (arg == "--schedule") {
      if (value != "cosine" && value != "constant")
        throw UsageError{"--schedule: cosine or constant"};
      f.cosine = value == "cosine";
    } else if (arg == "--mode") {
      if (value != "overlap" && value != "blocking")
        throw UsageError{"--mode: overlap or blocking"};
      f.mode = value;
    } else if (arg == "--bucket-bytes") {
      f.bucket_bytes = parse_unsigned(arg, value, 0);
    } else if (arg == "--compress") {
      if (value != "none" && value != "fp16" && value != "bf16") {
        throw UsageError{"--compress: none, fp16 or bf16"};
      }
      f.compress = value;
    } else if (arg == "--data") {
      f.data = value;
    } else if (arg == "--limit") {
      f.limit = parse_unsigned(arg, value, 1);
    } else if (arg == "--test-limit") {
      f.test_limit = parse_unsigned(arg, value, 1);
    } else if (arg == "--steps") {
      f.max_steps = parse_unsigned(arg, value, 1);
    } else if (arg == "--seed") {
      f.seed = parse_unsigned(arg, value, 0);
    } else {
      throw UsageError{"unknown flag " + arg};
    }
  }
  if (f.lr < 0.0f) f.lr = f.model == "mlp" ? 0.05f : 0.02f;
  return f;
}

struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) * 0x1.0p-24f; }
};

void shuffle(std::vector<std::uint32_t>& order, std::uint64_t seed) {
  SplitMix64 rng{seed};
  for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.next() % i]);
}

// A stack of dense layers; every parameter and gradient lives in one flat vector each, layer
// by layer (W [in][out] input-major, then b [out]), so that the blocking form is one call.
struct Model {
  std::vector<std::size_t> widths;  // 784, ..., 10
  std::vector<std::size_t> w_off, b_off;
  std::vector<float> params, grads, velocity;

  explicit Model(std::vector<std::size_t> w) : widths(std::move(w)) {
    std::size_t off = 0;
    for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
      w_off.push_back(off);
      off += widths[l] * widths[l + 1];
      b_off.push_back(off);
      off += widths[l + 1];
    }
    params.assign(off, 0.0f);
    grads.assign(off, 0.0f);
    velocity.assign(off, 0.0f);
  }
  std::size_t layers() const { return widths.size() - 1; }

  // He-uniform weights, zero biases; each rank its own draw (broadcast_parameters fixes it).
  void init(std::uint64_t seed) {
    SplitMix64 rng{seed};
    for (std::size_t l = 0; l < layers(); ++l) {
      const float bound = std::sqrt(6.0f / static_cast<float>(widths[l]));
      for (std::size_t i = 0; i < widths[l] * widths[l + 1]; ++i) {
        params[w_off[l] + i] = (2.0f * rng.uniform() - 1.0f) * bound;
      }
    }
  }
};

// Activations of one local batch: acts[0] the inputs, acts[l] the output of layer l.
struct Workspace {
  std::vector<std::vector<float>> acts;
  std::vector<float> delta, delta_prev;
};

// acts[l + 1] = relu(acts[l] W_l + b_l) for hidden layers; logits for the last one.
void forward(const Model& m, Workspace& ws, std::size_t rows) {
  for (std::size_t l = 0; l < m.layers(); ++l) {
    const std::size_t in = m.widths[l], out = m.widths[l + 1];
    const float* w = m.params.data() + m.w_off[l];
    const float* b = m.params.data() + m.b_off[l];
    std::vector<float>& y = ws.acts[l + 1];
    const std::vector<float>& x = ws.acts[l];
    for (std::size_t r = 0; r < rows; ++r) {
      float* yr = y.data() + r * out;
      std::copy_n(b, out, yr);
      const float* xr = x.data() + r * in;
      for (std::size_t i = 0; i < in; ++i) {
        const float xi = xr[i];
        if (xi == 0.0f) continue;  // zero pixels and inactive ReLUs
        const float* wi = w + i * out;
        for (std::size_t j = 0; j < out; ++j) yr[j] += xi * wi[j];
      }
      if (l + 1 < m.layers()) {
        for (std::size_t j = 0; j < out; ++j) yr[j] = std::max(yr[j], 0.0f);
      }
    }
  }
}

struct BatchStats {
  double loss = 0;
  double correct = 0;
};

// Softmax cross-entropy of the logits; with `scale` != 0 also leaves dL/dlogits * scale in
// ws.delta.
BatchStats loss_and_delta(const Model& m, Workspace& ws, const std::uint8_t* labels,
                          const std::uint32_t* index, std::size_t rows, float scale) {
  BatchStats s;
  const std::vector<float>& z = ws.acts.back();
  if (scale != 0.0f) ws.delta.assign(rows * kClasses, 0.0f);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* zr = z.data() + r * kClasses;
    const float zmax = *std::max_element(zr, zr + kClasses);
    float p[kClasses];
    float sum = 0.0f;
    for (std::size_t k = 0; k < kClasses; ++k) sum += (p[k] = std::exp(zr[k] - zmax));
    const std::size_t label = labels[index[r]];
    s.loss += std::log(sum) - (zr[label] - zmax);
    s.correct += static_cast<std::size_t>(std::max_element(zr, zr + kClasses) - zr) == label;
    if (scale != 0.0f) {
      for (std::size_t k = 0; k < kClasses; ++k) {
        ws.delta[r * kClasses + k] = scale * (p[k] / sum - (k == label ? 1.0f : 0.0f));
      }
    }
  }
  (void)m;
  return s;
}

// Backward from ws.delta; `layer_done(l)` is called as soon as layer l's gradients are final.
template <class Done>
void backward(Model& m, Workspace& ws, std::size_t rows, Done&& layer_done) {
  for (std::size_t l = m.layers(); l-- > 0;) {
    const std::size_t in = m.widths[l], out = m.widths[l + 1];
    float* gw = m.grads.data() + m.w_off[l];
    float* gb = m.grads.data() + m.b_off[l];
    std::fill(gw, gw + in * out, 0.0f);
    std::fill(gb, gb + out, 0.0f);
    const std::vector<float>& x = ws.acts[l];
    for (std::size_t r = 0; r < rows; ++r) {
      const float* dr = ws.delta.data() + r * out;
      const float* xr = x.data() + r * in;
      for (std::size_t j = 0; j < out; ++j) gb[j] += dr[j];
      for (std::size_t i = 0; i < in; ++i) {
        const float xi = xr[i];
        if (xi == 0.0f) continue;
        float* gi = gw + i * out;
        for (std::size_t j = 0; j < out; ++j) gi[j] += xi * dr[j];
      }
    }
    layer_done(l);
    if (l == 0) break;
    // delta_prev = (delta W^T) * relu'(x)
    const float* w = m.params.data() + m.w_off[l];
    ws.delta_prev.assign(rows * in, 0.0f);
    for (std::size_t r = 0; r < rows; ++r) {
      const float* dr = ws.delta.data() + r * out;
      const float* xr = x.data() + r * in;
      float* pr = ws.delta_prev.data() + r * in;
      for (std::size_t i = 0; i < in; ++i) {
        if (xr[i] <= 0.0f) continue;
        const float* wi = w + i * out;
        float acc = 0.0f;
        for (std::size_t j = 0; j < out; ++j) acc += wi[j] * dr[j];
        pr[i] = acc;
      }
    }
    std::swap(ws.delta, ws.delta_prev);
  }
}

void load_inputs(Workspace& ws, const Dataset& d, const std::uint32_t* index, std::size_t rows) {
  std::vector<float>& x = ws.acts[0];
  for (std::size_t r = 0; r < rows; ++r) {
    const std::uint8_t* px = &d.images[index[r] * d.pixels];
    for (std::size_t i = 0; i < kInputs; ++i) x[r * kInputs + i] = px[i] * kPixelScale;
  }
}

void size_workspace(const Model& m, Workspace& ws, std::size_t rows) {
  ws.acts.resize(m.widths.size());
  for (std::size_t l = 0; l < m.widths.size(); ++l) {
    if (ws.acts[l].size() < rows * m.widths[l]) ws.acts[l].resize(rows * m.widths[l]);
  }
}

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
  const bool overlap = flags.mode == "overlap";

  Dataset train_set =
      ringlet_example::load_split(flags.data, "train", 28, 28, kClasses, flags.limit);
  Dataset test_set =
      ringlet_example::load_split(flags.data, "t10k", 28, 28, kClasses, flags.test_limit);

  Model model(flags.model == "mlp" ? std::vector<std::size_t>{kInputs, 512, 512, 512, kClasses}
                                   : std::vector<std::size_t>{kInputs, kClasses});
  model.init(flags.seed + static_cast<std::uint64_t>(rank));

  ringlet::ReducerOptions ro;
  ro.bucket_bytes = flags.bucket_bytes;
  ro.compression = flags.compress == "fp16"   ? ringlet::Compression::float16
                   : flags.compress == "bf16" ? ringlet::Compression::bfloat16
                                              : ringlet::Compression::none;
  ringlet::GradientReducer reducer(comm, ro);
  std::vector<std::size_t> w_id(model.layers()), b_id(model.layers());
  std::vector<ringlet::Tensor> param_tensors;
  for (std::size_t l = 0; l < model.layers(); ++l) {
    const std::size_t nw = model.widths[l] * model.widths[l + 1], nb = model.widths[l + 1];
    w_id[l] = reducer.add("fc" + std::to_string(l + 1) + ".weight",
                          ringlet::Tensor::of(std::span(model.grads).subspan(model.w_off[l], nw)));
    b_id[l] = reducer.add("fc" + std::to_string(l + 1) + ".bias",
                          ringlet::Tensor::of(std::span(model.grads).subspan(model.b_off[l], nb)));
    param_tensors.push_back(
        ringlet::Tensor::of(std::span(model.params).subspan(model.w_off[l], nw + nb)));
  }
  reducer.broadcast_parameters(param_tensors);  // rank 0's start everywhere

  if (leader) {
    std::printf(
        "ringlet %.*s: %zu ranks, model %s (%zu parameters), mode %s, bucket %zu bytes, "
        "compression %s, %zu training samples, %zu test samples\n"
        "epochs %d, global batch %zu, SGD lr %g (%s) momentum %g, seed %llu\n",
        static_cast<int>(ringlet::version().size()), ringlet::version().data(), nranks,
        flags.model.c_str(), model.params.size(), flags.mode.c_str(), reducer.bucket_bytes(),
        flags.compress.c_str(), train_set.count, test_set.count, flags.epochs, flags.batch,
        static_cast<double>(flags.lr), flags.cosine ? "cosine" : "constant",
        static_cast<double>(flags.momentum), static_cast<unsigned long long>(flags.seed));
    std::fflush(stdout);
  }

  Workspace ws;
  size_workspace(model, ws, (flags.batch + nranks - 1) / nranks);
  std::vector<std::uint32_t> order(train_set.count), mine;
  std::iota(order.begin(), order.end(), 0u);
  double last_acc = 0, total_step_s = 0, total_wait_s = 0, total_steps = 0;
  std::size_t per_epoch = (order.size() + flags.batch - 1) / flags.batch;
  if (flags.max_steps != 0) per_epoch = std::min(per_epoch, flags.max_steps);
  const std::size_t planned = per_epoch * static_cast<std::size_t>(flags.epochs);
  std::size_t done = 0;
  for (int epoch = 1; epoch <= flags.epochs; ++epoch) {
    shuffle(order, flags.seed * 1000003u + static_cast<std::uint64_t>(epoch));
    Clock::duration in_comm{};
    const Clock::time_point epoch_start = Clock::now();
    double loss_sum = 0, seen = 0;
    std::size_t steps = 0;
    for (std::size_t start = 0; start < order.size(); start += flags.batch) {
      if (flags.max_steps != 0 && steps == flags.max_steps) break;
      const Clock::time_point step_start = Clock::now();
      const Clock::duration comm_before = in_comm;
      const std::size_t end = std::min(order.size(), start + flags.batch);
      mine.clear();
      for (std::size_t pos = start + static_cast<std::size_t>(rank); pos < end; pos += nranks) {
        mine.push_back(order[pos]);
      }
      const std::size_t rows = mine.size();
      // This rank's share of the mean gradient of the whole batch: N / B times its sum, so
      // that the average over the ranks is the batch mean also when B % N != 0.
      const float scale = static_cast<float>(nranks) / static_cast<float>(end - start);
      load_inputs(ws, train_set, mine.data(), rows);
      forward(model, ws, rows);
      BatchStats s = loss_and_delta(model, ws, train_set.labels.data(), mine.data(), rows, scale);
      loss_sum += s.loss;
      seen += static_cast<double>(rows);
      if (overlap) {
        // Time inside mark_ready counts as communication too: it packs the gradient and may
        // issue a bucket (a small one runs at once on this thread).
        backward(model, ws, rows, [&](std::size_t l) {
          const Clock::time_point m0 = Clock::now();
          reducer.mark_ready(w_id[l]);
          reducer.mark_ready(b_id[l]);
          in_comm += Clock::now() - m0;
        });
        const Clock::time_point t0 = Clock::now();
        reducer.wait();
        in_comm += Clock::now() - t0;
      } else {
        backward(model, ws, rows, [](std::size_t) {});
        const Clock::time_point t0 = Clock::now();
        comm.allreduce(std::span(model.grads), ringlet::ReduceOp::avg);
        in_comm += Clock::now() - t0;
      }
      // SGD with momentum: v = mu v + g; w -= lr v.
      const float lr = flags.cosine ? flags.lr * 0.5f *
                                          (1.0f + std::cos(3.14159265f * static_cast<float>(done) /
                                                           static_cast<float>(planned)))
                                    : flags.lr;
      ++done;
      for (std::size_t i = 0; i < model.params.size(); ++i) {
        model.velocity[i] = flags.momentum * model.velocity[i] + model.grads[i];
        model.params[i] -= lr * model.velocity[i];
      }
      ++steps;
      // The summary leaves out the job's first step (bucket agreement, cold caches).
      if (epoch > 1 || steps > 1) {
        total_step_s += seconds(Clock::now() - step_start);
        total_wait_s += seconds(in_comm - comm_before);
        total_steps += 1;
      }
    }
    const double train_s = seconds(Clock::now() - epoch_start);

    // Evaluation: each rank scores its share of the test set; one allreduce sums the counts.
    std::array<double, 5> stats{loss_sum, seen, 0.0, 0.0, 0.0};
    std::vector<std::uint32_t> idx;
    for (std::size_t s = static_cast<std::size_t>(rank); s < test_set.count; s += nranks) {
      idx.push_back(static_cast<std::uint32_t>(s));
    }
    constexpr std::size_t kEvalRows = 256;
    size_workspace(model, ws, kEvalRows);
    for (std::size_t b = 0; b < idx.size(); b += kEvalRows) {
      const std::size_t rows = std::min(kEvalRows, idx.size() - b);
      load_inputs(ws, test_set, idx.data() + b, rows);
      forward(model, ws, rows);
      BatchStats s = loss_and_delta(model, ws, test_set.labels.data(), idx.data() + b, rows, 0.0f);
      stats[2] += s.loss;
      stats[3] += s.correct;
      stats[4] += static_cast<double>(rows);
    }
    comm.allreduce(std::span<double>(stats), ringlet::ReduceOp::sum);
    last_acc = 100.0 * stats[3] / stats[4];
    const double step_ms = 1000.0 * train_s / static_cast<double>(std::max<std::size_t>(steps, 1));
    const double share = 100.0 * seconds(in_comm) / std::max(train_s, 1e-9);
    if (leader) {
      std::printf(
          "epoch %d/%d  train_loss %.4f  test_loss %.4f  test_acc %.2f%%  step %.2f ms  "
          "comm_wait %.1f%%  %.0f samples/s\n",
          epoch, flags.epochs, stats[0] / stats[1], stats[2] / stats[4], last_acc, step_ms, share,
          static_cast<double>(steps * flags.batch) / std::max(train_s, 1e-9));
      std::fflush(stdout);
    }
  }

  std::vector<std::int64_t> hashes(nranks);
  std::int64_t h = std::bit_cast<std::int64_t>(fnv1a64(model.params));
  comm.allgather(ringlet::Tensor::of(std::span(&h, 1)), ringlet::Tensor::of(std::span(hashes)));
  const bool identical =
      std::all_of(hashes.begin(), hashes.end(), [&](std::int64_t v) { return v == hashes[0]; });
  if (leader) {
    // One machine-readable line for bench/training_tradeoffs.sh.
    std::printf(
        "summary model=%s ranks=%zu batch=%zu mode=%s compress=%s step_ms=%.3f "
        "comm_share=%.4f samples_per_s=%.1f test_acc=%.2f\n",
        flags.model.c_str(), nranks, flags.batch, flags.mode.c_str(), flags.compress.c_str(),
        1000.0 * total_step_s / std::max(total_steps, 1.0),
        total_wait_s / std::max(total_step_s, 1e-9),
        total_steps * static_cast<double>(flags.batch) / std::max(total_step_s, 1e-9), last_acc);
    std::printf("weights: fnv1a64 %016llx, %s on all %zu ranks\n",
                static_cast<unsigned long long>(hashes[0]), identical ? "identical" : "DIFFERENT",
                nranks);
    std::fflush(stdout);
  }
  return identical ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return train(parse_flags(argc, argv));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "train_fashion_mnist: %s\n%s", e.what.c_str(), kUsage);
    return 2;
  } catch (const ringlet_example::IdxError& e) {
    std::fprintf(stderr, "train_fashion_mnist: %s\n", e.what());
    if (e.missing()) {
      std::fprintf(stderr,
                   "The Fashion-MNIST data set is not there: `apt-get install "
                   "dataset-fashion-mnist`, or pass --data DIR.\n");
    }
    return 1;
  } catch (const ringlet::Error& e) {
    std::fprintf(stderr, "train_fashion_mnist: ringlet error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_fashion_mnist: %s\n", e.what());
    return 1;
  }
}
