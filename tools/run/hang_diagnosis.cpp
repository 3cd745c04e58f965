// SPDX-License-Identifier: Apache-2.0
#include "tools/run/hang_diagnosis.hpp"

#include <signal.h>

#include <algorithm>
#include <charconv>
#include <vector>

#include "src/common/str_cat.hpp"

namespace ringlet::run {
namespace {

// The number after `key` in `s` ("waits_for=3" -> 3); nullopt when absent or "-".
template <class T>
std::optional<T> field(std::string_view s, std::string_view key) {
  const std::size_t at = s.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  const char* b = s.data() + at + key.size();
  const char* e = s.data() + s.size();
  T v{};
  auto [p, ec] = std::from_chars(b, e, v);
  if (ec != std::errc() || p == b) return std::nullopt;
  return v;
}

// "rank 3", "ranks 0-2", "ranks 0, 2 and 5-7".
std::string rank_list(std::vector<int> rs) {
  std::sort(rs.begin(), rs.end());
  rs.erase(std::unique(rs.begin(), rs.end()), rs.end());
  std::vector<std::string> parts;
  for (std::size_t i = 0; i < rs.size();) {
    std::size_t j = i;
    while (j + 1 < rs.size() && rs[j + 1] == rs[j] + 1) ++j;
    parts.push_back(j == i ? std::to_string(rs[i]) : str_cat(rs[i], "-", rs[j]));
    i = j + 1;
  }
  std::string out = rs.size() == 1 ? "rank " : "ranks ";
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += i + 1 == parts.size() ? " and " : ", ";
    out += parts[i];
  }
  return out;
}

}  // namespace

std::optional<HangReport> parse_hang_report(std::string_view line) {
  constexpr std::string_view kTag = "hang report: rank ";
  const std::size_t at = line.find(kTag);
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view s = line.substr(at + kTag.size());
  HangReport r;
  auto rank = field<int>(s, "");
  auto size = field<int>(s, "/");
  if (!rank || !size || *rank < 0) return std::nullopt;
  r.rank = *rank;
  r.size = *size;
  if (s.find(" idle after collective #") != std::string_view::npos) {
    r.seq = field<std::uint64_t>(s, "collective #").value_or(0);
    return r;
  }
  auto seq = field<std::uint64_t>(s, " collective #");
  if (!seq) return std::nullopt;
  r.active = true;
  r.seq = *seq;
  r.waits_for = field<int>(s, " waits_for=").value_or(-1);
  r.since_ms = field<long long>(s, " since_ms=").value_or(-1);
  return r;
}

std::string diagnose(const std::map<int, HangReport>& reports, int np) {
  if (reports.empty()) return {};
  std::vector<int> silent;
  for (int r = 0; r < np; ++r) {
    if (!reports.count(r)) silent.push_back(r);
  }
  const std::string silence = silent.empty() || silent.size() == static_cast<std::size_t>(np)
                                  ? std::string()
                                  : str_cat("; no report from ", rank_list(silent));
  // The collective each rank is in (an idle rank is before its next one).
  auto position = [](const HangReport& h) { return h.active ? h.seq : h.seq + 1; };
  const HangReport* ahead = nullptr;
  const HangReport* behind = nullptr;
  for (const auto& [r, h] : reports) {
    if (ahead == nullptr || position(h) > position(*ahead)) ahead = &h;
    if (behind == nullptr || position(h) < position(*behind)) behind = &h;
  }
  // Who waits for whom, among the ranks inside a collective: each waiting rank's chain of
  // waits (rank 0 waits for 1, which waits for 3) ends at the rank that holds the others up,
  // one that sent no report, is not in a collective, or waits for nobody (or a cycle).
  auto chain_end = [&](int r) {
    int at = r;
    for (std::size_t hops = 0; hops <= reports.size(); ++hops) {
      auto it = reports.find(at);
      if (it == reports.end() || !it->second.active || it->second.waits_for < 0) return at;
      at = it->second.waits_for;
      if (at == r) return -1;  // a cycle: nobody in particular
    }
    return -1;
  };
  std::map<int, std::vector<int>> waiters;
  for (const auto& [r, h] : reports) {
    if (!h.active || h.waits_for < 0) continue;
    const int end = chain_end(r);
    if (end >= 0 && end != r) waiters[end].push_back(r);
  }
  int target = -1;
  for (const auto& [t, ws] : waiters) {
    if (target < 0 || ws.size() > waiters[target].size()) target = t;
  }
  if (target >= 0) {
    const std::vector<int>& ws = waiters[target];
    const std::string who =
        str_cat(rank_list(ws), ws.size() == 1 ? " waits" : " wait", " for rank ", target);
    auto t = reports.find(target);
    const std::uint64_t seq = reports.at(ws.front()).seq;
    if (t == reports.end()) {
      return str_cat(who, " in collective #", seq,
                     ", which sent no report (stopped, hung outside ringlet, or gone)", silence);
    }
    if (position(t->second) < seq) {
      return str_cat(who, ", which has not entered collective #", seq, " (it is at #",
                     t->second.seq, t->second.active ? "" : ", idle", ")", silence);
    }
    return str_cat(who, " in collective #", seq, ", which names no peer it waits for", silence);
  }
  if (position(*ahead) > position(*behind)) {
    const std::uint64_t d = position(*ahead) - position(*behind);
    return str_cat("rank ", behind->rank, " is ", d, " collective", d == 1 ? "" : "s",
                   " behind rank ", ahead->rank, silence);
  }
  if (!silent.empty() && silent.size() != static_cast<std::size_t>(np)) {
    return str_cat(rank_list(silent), silent.size() == 1 ? " sent" : " sent",
                   " no report while the others are in collective #", ahead->seq);
  }
  return str_cat("every rank is in collective #", ahead->seq,
                 "; no rank names a peer it waits for");
}

int signal_number(std::string_view name) {
  std::string n;
  for (char c : name) n += static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  if (n.rfind("SIG", 0) == 0) n = n.substr(3);
  static constexpr std::pair<std::string_view, int> kNames[] = {
      {"USR1", SIGUSR1}, {"USR2", SIGUSR2},   {"HUP", SIGHUP}, {"QUIT", SIGQUIT},
      {"URG", SIGURG},   {"WINCH", SIGWINCH}, {"PWR", SIGPWR}, {"CONT", SIGCONT}};
  for (const auto& [k, v] : kNames) {
    if (n == k) return v;
  }
  int v = 0;
  auto [p, ec] = std::from_chars(n.data(), n.data() + n.size(), v);
  if (ec != std::errc() || p != n.data() + n.size() || v < 0 || v > 64) return 0;
  return v;
}

}  // namespace ringlet::run
