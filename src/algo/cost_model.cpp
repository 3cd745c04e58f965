// SPDX-License-Identifier: Apache-2.0
// The cost model's formulas (derived in cost_model.hpp), the fastest choice per size and the
// model file.
#include "src/algo/cost_model.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "src/common/check.hpp"

namespace ringlet::algo {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Pow2 {
  std::int64_t q = 1;  // largest power of two <= p
  int k = 0;           // log2 q
  std::int64_t extra = 0;
};

Pow2 pow2_below(std::int64_t p) {
  Pow2 r;
  while (r.q * 2 <= p) {
    r.q *= 2;
    ++r.k;
  }
  r.extra = p - r.q;
  return r;
}

// The beta a flat algorithm's exchange at distance `d` (ranks numbered node by node) sees.
double exchange_beta(const CostModel& m, const ModelShape& s, std::int64_t d) {
  if (s.nodes <= 1 || s.ranks_per_node % (2 * d) == 0) return m.net.beta_s_per_byte;
  return m.net.beta_s_per_byte * static_cast<double>(s.ranks_per_node);
}

// The fold of the e ranks beyond q: a hand-off in (reduced by the partner) and one out.
double fold_time(const CostModel& m, const ModelShape& s, double bytes) {
  if (pow2_below(s.ranks()).extra == 0) return 0;
  const double beta = exchange_beta(m, s, 1);
  return 2 * m.net.alpha_s + bytes * (2 * beta + m.gamma_s_per_byte);
}

double chunks(double bytes, std::size_t chunk) {
  return std::max(1.0, std::ceil(bytes / static_cast<double>(chunk)));
}

double local_reduce_scatter(const CostModel& m, double l, double bytes) {
  return 2 * chunks(bytes, m.local_chunk_bytes) * m.local.alpha_s +
         bytes * m.local.beta_s_per_byte + (l - 1) / l * bytes * m.gamma_s_per_byte;
}

double local_allgather(const CostModel& m, double bytes) {
  return 2 * chunks(bytes, m.local_chunk_bytes) * m.local.alpha_s + bytes * m.local.beta_s_per_byte;
}

// The three hierarchical stages for `bytes`.
void hier_stages(const CostModel& m, const ModelShape& s, double bytes, double out[3]) {
  const double l = static_cast<double>(s.ranks_per_node);
  out[0] = local_reduce_scatter(m, l, bytes);
  out[1] = ring_formula(s.nodes, bytes / l, m.net.alpha_s, m.net.beta_s_per_byte * l,
                        m.gamma_s_per_byte, static_cast<double>(m.slice_bytes));
  out[2] = local_allgather(m, bytes);
}

bool finite_nonnegative(double v) { return std::isfinite(v) && v >= 0; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

void validate(const CostModel& model, const ModelShape& shape) {
  auto bad = [](const std::string& why) {
    return Error(ErrorCode::invalid_argument, str_cat("cost model: ", why));
  };
  if (shape.nodes < 1) throw bad(str_cat("nodes must be at least 1, not ", shape.nodes));
  if (shape.ranks_per_node < 1) {
    throw bad(str_cat("ranks per node must be at least 1, not ", shape.ranks_per_node));
  }
  if (shape.ranks_per_node > kMaxModelRanks / shape.nodes) {
    throw bad(str_cat(shape.nodes, " nodes x ", shape.ranks_per_node, " ranks exceed ",
                      kMaxModelRanks, " ranks"));
  }
  const std::pair<const char*, double> values[] = {{"alpha", model.net.alpha_s},
                                                   {"beta", model.net.beta_s_per_byte},
                                                   {"local alpha", model.local.alpha_s},
                                                   {"local beta", model.local.beta_s_per_byte},
                                                   {"gamma", model.gamma_s_per_byte}};
  for (const auto& v : values) {
    if (!finite_nonnegative(v.second)) {
      throw bad(str_cat(v.first, " must be finite and >= 0, not ", v.second));
    }
  }
  if (model.slice_bytes == 0 || model.local_chunk_bytes == 0 || model.hier_pipeline_bytes == 0) {
    throw bad("slice, local chunk and pipeline sizes must be > 0");
  }
}

bool available(Algorithm a, const ModelShape& s) noexcept {
  switch (a) {
    case Algorithm::local:
      return s.nodes == 1 && s.ranks_per_node > 1 && s.local_group;
    case Algorithm::hierarchical:
      return s.nodes > 1 && s.ranks_per_node > 1 && s.local_group;
    case Algorithm::recursive_doubling:
    case Algorithm::ring:
    case Algorithm::rabenseifner:
      return true;
  }
  return false;
}

double ring_formula(std::int64_t p, double bytes, double alpha, double beta, double gamma,
                    double slice_bytes) noexcept {
  if (p <= 1) return 0;
  const double c = bytes / static_cast<double>(p);
  const double step_rs =
      alpha + c * std::max(beta, gamma) + std::min(c, slice_bytes) * std::min(beta, gamma);
  const double step_ag = alpha + c * beta;
  return static_cast<double>(p - 1) * (step_rs + step_ag);
}

double ring_time(const CostModel& m, const ModelShape& s, std::size_t bytes) noexcept {
  return ring_formula(s.ranks(), static_cast<double>(bytes), m.net.alpha_s, m.net.beta_s_per_byte,
                      m.gamma_s_per_byte, static_cast<double>(m.slice_bytes));
}

double recursive_doubling_time(const CostModel& m, const ModelShape& s,
                               std::size_t bytes) noexcept {
  if (s.ranks() <= 1) return 0;
  const double b = static_cast<double>(bytes);
  const Pow2 p2 = pow2_below(s.ranks());
  double t = fold_time(m, s, b);
  for (std::int64_t d = 1; d < p2.q; d *= 2) {
    t += m.net.alpha_s + b * (exchange_beta(m, s, d) + m.gamma_s_per_byte);
  }
  return t;
}

double rabenseifner_time(const CostModel& m, const ModelShape& s, std::size_t bytes) noexcept {
  if (s.ranks() <= 1) return 0;
  const double b = static_cast<double>(bytes);
  const Pow2 p2 = pow2_below(s.ranks());
  double t = fold_time(m, s, b);
  double part = b;
  for (std::int64_t d = 1; d < p2.q; d *= 2) {
    part /= 2;  // halving step at distance d and its doubling mirror move S / (2d) each
    const double beta = exchange_beta(m, s, d);
    t += (m.net.alpha_s + part * (beta + m.gamma_s_per_byte)) + (m.net.alpha_s + part * beta);
  }
  return t;
}

double hierarchical_time(const CostModel& m, const ModelShape& s, std::size_t bytes) noexcept {
  if (!available(Algorithm::hierarchical, s)) return kInf;
  const double b = static_cast<double>(bytes);
  double whole[3];
  double first[3];
  hier_stages(m, s, b, whole);
  hier_stages(m, s, std::min(b, static_cast<double>(m.hier_pipeline_bytes)), first);
  std::sort(first, first + 3);
  return *std::max_element(whole, whole + 3) + first[0] + first[1];
}

double local_time(const CostModel& m, const ModelShape& s, std::size_t bytes) noexcept {
  if (!available(Algorithm::local, s)) return kInf;
  const double b = static_cast<double>(bytes);
  const double l = static_cast<double>(s.ranks_per_node);
  if (bytes <= m.local_small_bytes) {
    return m.local.alpha_s + 2 * b * m.local.beta_s_per_byte + (l - 1) * b * m.gamma_s_per_byte;
  }
  return 3 * chunks(b, m.local_chunk_bytes) * m.local.alpha_s + 2 * b * m.local.beta_s_per_byte +
         (l - 1) / l * b * m.gamma_s_per_byte;
}

double predicted_time(Algorithm a, const CostModel& m, const ModelShape& s,
                      std::size_t bytes) noexcept {
  switch (a) {
    case Algorithm::local:
      return local_time(m, s, bytes);
    case Algorithm::hierarchical:
      return hierarchical_time(m, s, bytes);
    case Algorithm::recursive_doubling:
      return recursive_doubling_time(m, s, bytes);
    case Algorithm::ring:
      return ring_time(m, s, bytes);
    case Algorithm::rabenseifner:
      return rabenseifner_time(m, s, bytes);
  }
  return kInf;
}

double bandwidth_lower_bound(const CostModel& m, const ModelShape& s, std::size_t bytes) noexcept {
  const double b = static_cast<double>(bytes);
  if (s.nodes > 1) {
    const double n = static_cast<double>(s.nodes);
    return 2 * (n - 1) / n * b * m.net.beta_s_per_byte;
  }
  if (s.ranks() <= 1) return 0;
  const double p = static_cast<double>(s.ranks());
  double beta = m.net.beta_s_per_byte;
  if (s.local_group) beta = std::min(beta, m.local.beta_s_per_byte);
  return 2 * (p - 1) / p * b * beta;
}

double bus_bandwidth(const ModelShape& s, std::size_t bytes, double seconds) noexcept {
  if (s.ranks() <= 1 || !(seconds > 0) || !std::isfinite(seconds)) return 0;
  const double p = static_cast<double>(s.ranks());
  return static_cast<double>(bytes) / seconds * 2 * (p - 1) / p;
}

Algorithm fastest(const CostModel& m, const ModelShape& s, std::size_t bytes,
                  const std::vector<Algorithm>& candidates) {
  const std::vector<Algorithm> all(std::begin(kModelAlgorithms), std::end(kModelAlgorithms));
  const std::vector<Algorithm>& list = candidates.empty() ? all : candidates;
  Algorithm best = Algorithm::ring;
  double best_t = kInf;
  bool found = false;
  for (Algorithm a : list) {
    if (!available(a, s)) continue;
    const double t = predicted_time(a, m, s, bytes);
    if (!found || t < best_t) {
      best = a;
      best_t = t;
      found = true;
    }
  }
  if (!found) {
    throw Error(ErrorCode::invalid_argument, str_cat("cost model: none of the ", list.size(),
                                                     " candidate algorithms can run on ", s.nodes,
                                                     " nodes x ", s.ranks_per_node, " ranks"));
  }
  return best;
}

std::vector<SizeChoice> fastest_by_size(const CostModel& m, const ModelShape& s,
                                        const std::vector<Algorithm>& candidates) {
  std::vector<SizeChoice> out;
  for (int shift = 0; shift <= 30; ++shift) {
    SizeChoice c;
    c.bytes = std::size_t{1} << shift;
    c.algorithm = fastest(m, s, c.bytes, candidates);
    c.seconds = predicted_time(c.algorithm, m, s, c.bytes);
    out.push_back(c);
  }
  return out;
}

std::vector<Range> predicted_ranges(const CostModel& m, const ModelShape& s,
                                    const std::vector<Algorithm>& candidates) {
  const std::vector<SizeChoice> samples = fastest_by_size(m, s, candidates);
  std::vector<Range> out;
  Range cur{0, kMaxBytes, samples.front().algorithm};
  std::size_t prev = samples.front().bytes;  // the largest size known to take cur.algorithm
  for (std::size_t i = 1; i < samples.size(); ++i) {
    const std::size_t next = samples[i].bytes;
    // Several changes may lie between two samples: find each, to the byte.
    while (fastest(m, s, next, candidates) != cur.algorithm) {
      std::size_t lo = prev;  // takes cur.algorithm
      std::size_t hi = next;  // does not
      while (hi - lo > 1) {
        const std::size_t mid = lo + (hi - lo) / 2;
        if (fastest(m, s, mid, candidates) == cur.algorithm) {
          lo = mid;
        } else {
          hi = mid;
        }
      }
      cur.hi = lo;
      out.push_back(cur);
      cur = Range{hi, kMaxBytes, fastest(m, s, hi, candidates)};
      prev = hi;
    }
    prev = next;
  }
  out.push_back(cur);
  return out;
}

void parse_model_text(std::string_view text, std::string_view what, ModelFile& into) {
  int line_no = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    const std::size_t hash = line.find('#');
    if (hash != std::string_view::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    auto bad = [&](std::string_view why) {
      return Error(ErrorCode::invalid_argument,
                   str_cat(what, ":", line_no, ": ", why, " (\"", line, "\")"));
    };
    const std::size_t eq = line.find('=');
    if (eq == std::string_view::npos) throw bad("expected key=value");
    const std::string key(trim(line.substr(0, eq)));
    const std::string value(trim(line.substr(eq + 1)));
    if (value.empty()) throw bad("empty value");
    const char* begin = value.c_str();
    char* end = nullptr;
    errno = 0;
    if (key == "nodes" || key == "ranks_per_node" || key == "slice_bytes" || key == "local_group") {
      const long long v = std::strtoll(begin, &end, 10);
      if (end != begin + value.size() || errno != 0) throw bad("not an integer");
      if (key == "local_group") {
        if (v != 0 && v != 1) throw bad("local_group is 0 or 1");
        into.shape.local_group = v == 1;
      } else if (v < 1) {
        throw bad("must be at least 1");
      } else if (key == "nodes") {
        into.shape.nodes = v;
        into.has_nodes = true;
      } else if (key == "ranks_per_node") {
        into.shape.ranks_per_node = v;
        into.has_ranks_per_node = true;
      } else {
        into.model.slice_bytes = static_cast<std::size_t>(v);
      }
      continue;
    }
    const double v = std::strtod(begin, &end);
    if (end != begin + value.size() || errno != 0 || !finite_nonnegative(v)) {
      throw bad("not a finite number >= 0");
    }
    if (key == "alpha") {
      into.model.net.alpha_s = v;
      into.has_alpha = true;
    } else if (key == "beta") {
      into.model.net.beta_s_per_byte = v;
      into.has_beta = true;
    } else if (key == "local_alpha") {
      into.model.local.alpha_s = v;
      into.has_local_alpha = true;
    } else if (key == "local_beta") {
      into.model.local.beta_s_per_byte = v;
      into.has_local_beta = true;
    } else if (key == "gamma") {
      into.model.gamma_s_per_byte = v;
      into.has_gamma = true;
    } else {
      throw bad(str_cat("unknown key \"", key,
                        "\" (known: alpha, beta, local_alpha, local_beta, gamma, nodes, "
                        "ranks_per_node, slice_bytes, local_group)"));
    }
  }
}

std::string format_model_text(const CostModel& m, const ModelShape& s) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "# ringlet cost model (docs/perf/planner.md)\n"
                "alpha=%.9g\nbeta=%.9g\nlocal_alpha=%.9g\nlocal_beta=%.9g\ngamma=%.9g\n"
                "nodes=%lld\nranks_per_node=%lld\nslice_bytes=%zu\nlocal_group=%d\n",
                m.net.alpha_s, m.net.beta_s_per_byte, m.local.alpha_s, m.local.beta_s_per_byte,
                m.gamma_s_per_byte, static_cast<long long>(s.nodes),
                static_cast<long long>(s.ranks_per_node), m.slice_bytes, s.local_group ? 1 : 0);
  return buf;
}

}  // namespace ringlet::algo
