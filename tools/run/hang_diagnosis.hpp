// SPDX-License-Identifier: Apache-2.0
// ringlet-run's hang diagnosis: the ranks' hang reports (src/hang_report.hpp's line, at a
// deadline or on RINGLET_HANG_SIGNAL) turned into one line such as "ranks 0-2 wait for rank 3,
// which sent no report (stopped, hung outside ringlet, or gone)" or "rank 3 is 2 collectives
// behind rank 0".
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace ringlet::run {

struct HangReport {
  int rank = -1;
  int size = 0;
  bool active = false;
  std::uint64_t seq = 0;
  int waits_for = -1;
  long long since_ms = -1;
};

// The report in `line` (anywhere in it: a log prefix may come first); nullopt when none.
std::optional<HangReport> parse_hang_report(std::string_view line);

// One line from the latest report of each rank (keyed by rank) of a job of `np` ranks;
// empty when there is nothing to say.
std::string diagnose(const std::map<int, HangReport>& reports, int np);

// "SIGUSR2", "USR2", "usr2" or "12" -> 12; 0 for "0", "" or anything else.
int signal_number(std::string_view name);

}  // namespace ringlet::run
