// SPDX-License-Identifier: Apache-2.0
// The selection table: parse RINGLET_ALGO, lay the requested ranges over the automatic
// choice, check each against the job's shape, print the result.
#include "src/algo/select.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "src/common/check.hpp"

namespace ringlet::algo {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool parse_name(std::string_view name, Algorithm* out) {
  if (name == "ring") {
    *out = Algorithm::ring;
  } else if (name == "rabenseifner") {
    *out = Algorithm::rabenseifner;
  } else if (name == "rd" || name == "recursive_doubling") {
    *out = Algorithm::recursive_doubling;
  } else if (name == "hier" || name == "hierarchical") {
    *out = Algorithm::hierarchical;
  } else if (name == "local" || name == "shm") {
    *out = Algorithm::local;
  } else {
    return false;
  }
  return true;
}

bool parse_size(std::string_view s, std::size_t* out) {
  if (s == "max") {
    *out = kMaxBytes;
    return true;
  }
  std::size_t scale = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'k':
        scale = std::size_t{1} << 10;
        break;
      case 'm':
        scale = std::size_t{1} << 20;
        break;
      case 'g':
        scale = std::size_t{1} << 30;
        break;
      default:
        break;
    }
    if (scale != 1) s.remove_suffix(1);
  }
  std::size_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return false;
  if (v > kMaxBytes / scale) return false;
  *out = v * scale;
  return true;
}

std::string format_size(std::size_t b) {
  if (b == kMaxBytes) return "max";
  for (auto [shift, suffix] : {std::pair{30, "G"}, std::pair{20, "M"}, std::pair{10, "K"}}) {
    const std::size_t unit = std::size_t{1} << shift;
    if (b >= unit && b % unit == 0) return str_cat(b / unit, suffix);
  }
  return std::to_string(b);
}

// Paints [r.lo, r.hi] of `table` (which covers 0..max without gaps) with r.algorithm.
void paint(std::vector<Range>& table, const Range& r) {
  std::vector<Range> out;
  for (const Range& t : table) {
    if (t.hi < r.lo || t.lo > r.hi) {
      out.push_back(t);
      continue;
    }
    if (t.lo < r.lo) out.push_back({t.lo, r.lo - 1, t.algorithm});
    if (t.hi > r.hi) out.push_back({r.hi + 1, t.hi, t.algorithm});
  }
  out.push_back(r);
  std::sort(out.begin(), out.end(), [](const Range& a, const Range& b) { return a.lo < b.lo; });
  // Merge neighbours that take the same algorithm.
  std::vector<Range> merged;
  for (const Range& t : out) {
    if (!merged.empty() && merged.back().algorithm == t.algorithm && merged.back().hi + 1 == t.lo) {
      merged.back().hi = t.hi;
    } else {
      merged.push_back(t);
    }
  }
  table = std::move(merged);
}

}  // namespace

std::string_view to_string(Algorithm a) noexcept {
  switch (a) {
    case Algorithm::local:
      return "local";
    case Algorithm::recursive_doubling:
      return "recursive_doubling";
    case Algorithm::ring:
      return "ring";
    case Algorithm::rabenseifner:
      return "rabenseifner";
    case Algorithm::hierarchical:
      return "hierarchical";
  }
  return "?";
}

AlgorithmSpec parse_algorithm_spec(std::string_view text, std::string_view what) {
  const std::string s = ascii_lower(trim(text));
  AlgorithmSpec spec;
  if (s.empty() || s == "auto") return spec;
  if (s == "model") {
    spec.model = true;
    return spec;
  }
  auto bad = [&](std::string_view why) {
    return Error(ErrorCode::invalid_argument,
                 str_cat(what, "=", text, ": ", why,
                         " (expected auto, model, ring, rabenseifner, recursive_doubling, hier, "
                         "local, or ranges such as rd:0-64K,ring:64K-)"));
  };
  Algorithm a{};
  if (s.find(':') == std::string::npos) {
    if (!parse_name(s, &a)) throw bad(str_cat("unknown algorithm \"", s, "\""));
    spec.ranges.push_back({0, kMaxBytes, a});
    return spec;
  }
  std::string_view rest = s;
  while (!rest.empty()) {
    const std::size_t semi = rest.find_first_of(";,");
    std::string_view item = trim(rest.substr(0, semi));
    rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
    if (item.empty()) continue;
    const std::size_t colon = item.find(':');
    const std::size_t dash = item.find('-', colon == std::string_view::npos ? 0 : colon);
    if (colon == std::string_view::npos || dash == std::string_view::npos) {
      throw bad(str_cat("range \"", item, "\" is not name:lo-hi"));
    }
    Range r;
    if (!parse_name(trim(item.substr(0, colon)), &a)) {
      throw bad(str_cat("unknown algorithm \"", item.substr(0, colon), "\""));
    }
    r.algorithm = a;
    if (!parse_size(trim(item.substr(colon + 1, dash - colon - 1)), &r.lo) ||
        !(trim(item.substr(dash + 1)).empty() ? (r.hi = kMaxBytes, true)
                                              : parse_size(trim(item.substr(dash + 1)), &r.hi)) ||
        r.lo > r.hi) {
      throw bad(str_cat("range \"", item, "\" has bad bounds"));
    }
    spec.ranges.push_back(r);
  }
  if (spec.ranges.empty()) throw bad("no range given");
  return spec;
}

SelectTable SelectTable::build(const SelectInputs& in) {
  SelectTable t;
  const bool one_node_local = in.shape == JobShape::one_node && in.local_group;
  const bool hier_ok = in.shape == JobShape::uniform && in.local_group;
  t.agree_locally_ = one_node_local;
  t.barrier_ = one_node_local ? Algorithm::local : Algorithm::recursive_doubling;
  // Automatic: the local group alone on one node; else recursive doubling up to the
  // crossover (measured, docs/perf/crossover.md), hierarchical or ring above.
  if (one_node_local) {
    t.ranges_ = {{0, kMaxBytes, Algorithm::local}};
  } else {
    const Algorithm large = hier_ok ? Algorithm::hierarchical : Algorithm::ring;
    if (in.crossover_bytes == kMaxBytes) {
      t.ranges_ = {{0, kMaxBytes, Algorithm::recursive_doubling}};
    } else {
      t.ranges_ = {{0, in.crossover_bytes, Algorithm::recursive_doubling},
                   {in.crossover_bytes + 1, kMaxBytes, large}};
    }
    if (in.spec.model && !in.model_ranges.empty()) {
      RINGLET_CHECK(in.model_ranges.front().lo == 0 && in.model_ranges.back().hi == kMaxBytes,
                    "the cost model's ranges do not cover every size");
      t.ranges_ = in.model_ranges;
    }
  }
  // Requested ranges, the first one winning where they overlap: painted last to first.
  for (auto it = in.spec.ranges.rbegin(); it != in.spec.ranges.rend(); ++it) {
    Range r = *it;
    if (r.algorithm == Algorithm::hierarchical && !hier_ok) {
      // On one node the hierarchical allreduce is the local one; elsewhere the flat ring.
      r.algorithm = one_node_local ? Algorithm::local : Algorithm::ring;
      t.fallbacks_.push_back(
          str_cat("hier requested for ", format_size(r.lo), "-", format_size(r.hi),
                  ": the job's shape (", in.local_group ? "" : "no local group, ",
                  to_string(in.shape), ") does not allow it; using ",
                  r.algorithm == Algorithm::ring ? "the flat ring" : "the local allreduce"));
    }
    if (r.algorithm == Algorithm::local && !one_node_local) {
      t.fallbacks_.push_back(str_cat("local requested for ", format_size(r.lo), "-",
                                     format_size(r.hi),
                                     ": the job is not one node with a local group; using the "
                                     "automatic choice"));
      continue;
    }
    paint(t.ranges_, r);
  }
  return t;
}

std::string describe(const SelectTable& table) {
  std::string s = "allreduce: ";
  for (std::size_t i = 0; i < table.allreduce_ranges().size(); ++i) {
    const Range& r = table.allreduce_ranges()[i];
    s += str_cat(i == 0 ? "" : ", ", to_string(r.algorithm), " ", format_size(r.lo), "-",
                 format_size(r.hi));
  }
  return str_cat(s, "; barrier: ", to_string(table.barrier()),
                 table.agree_locally() ? "; every collective agrees in the local group first" : "");
}

}  // namespace ringlet::algo
