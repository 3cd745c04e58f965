// SPDX-License-Identifier: Apache-2.0
// ringlet-run's command line: parsing, host lists, rank placement and shell quoting.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ringlet::run {

// How each rank is started.
enum class LaunchMode { local, netns, ssh };

// One entry of -H: "name", "name:slots", "name=addr" or "name=addr:slots".
struct HostSpec {
  std::string name;
  std::string addr;  // empty: resolve (netns) or use the name (ssh, local)
  int slots = 1;
};

// The parsed command line. `command` is never empty after a successful parse, unless
// `help` is set.
struct RunOptions {
  int np = -1;
  std::optional<double> timeout_s;
  std::string timeout_text;  // as the user wrote it, for messages
  bool tag_output = false;
  std::vector<HostSpec> hosts;
  LaunchMode mode = LaunchMode::local;
  std::optional<int> port;
  std::vector<std::string> exports;  // -x entries, "VAR" or "VAR=VALUE"
  std::vector<std::string> command;
  bool help = false;
  // The ranks' RINGLET_HANG_SIGNAL (SIGUSR2 unless the caller set one): sent to every rank
  // at --timeout before SIGTERM, so that each logs a hang report. 0: none. Set by main.
  int hang_signal = 0;
};

// Thrown for bad usage; ringlet-run prints the message and the usage text, and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses argv[1..]. Throws UsageError.
RunOptions parse_args(const std::vector<std::string>& args);

// Parses one -H list ("a:2,b=198.18.0.2:1,c"). Throws UsageError.
std::vector<HostSpec> parse_hosts(std::string_view list);

// Where rank r runs: the index into the host list and its place among that host's ranks.
struct Placement {
  int host = 0;
  int local_rank = 0;
  int local_size = 0;
};

// Fills each host's slots in order with ranks 0..np-1; an empty host list means one
// local host with np slots. Throws UsageError when np exceeds the total slots.
std::vector<Placement> place_ranks(int np, const std::vector<HostSpec>& hosts);

// Quotes one word for a POSIX shell; safe words pass unchanged.
std::string shell_quote(std::string_view word);

// The usage text printed by --help and after a usage error.
std::string_view usage_text();

}  // namespace ringlet::run
