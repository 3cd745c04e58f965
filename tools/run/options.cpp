// SPDX-License-Identifier: Apache-2.0
// ringlet-run's command line: parsing, host lists, rank placement and shell quoting.
#include "tools/run/options.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "src/common/str_cat.hpp"

namespace ringlet::run {
namespace {

// Parses a whole decimal integer in [lo, hi]; std::nullopt on anything else.
std::optional<int> parse_int(std::string_view text, int lo, int hi) {
  int value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || value < lo || value > hi) {
    return std::nullopt;
  }
  return value;
}

bool is_env_name(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name) {
    bool ok =
        (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::string_view usage_text() {
  return "usage: ringlet-run -np N [--timeout SECONDS] [--tag-output]\n"
         "                   [-H host[=addr][:slots],...] [--launcher local|netns|ssh]\n"
         "                   [--port P] [-x VAR[=VALUE]]... [--] command [args...]\n"
         "\n"
         "  -np, -n N            number of ranks to start (N >= 1)\n"
         "  --timeout SECONDS    wall-clock limit for the job; on expiry exit 124\n"
         "  --tag-output         prefix every output line with [1,rank]<stdout>: or <stderr>:\n"
         "  -H, --hosts LIST     hosts and slots, filled in order (slots default 1)\n"
         "  --launcher MODE      local (default without -H), ssh (default with -H), netns\n"
         "  --port P             rendezvous store port (else RINGLET_PORT, else a free port)\n"
         "  -x VAR[=VALUE]       export VAR to every rank (needed for ssh)\n"
         "  -h, --help           print this text\n"
         "\n"
         "Exit status: the first non-zero rank status (128+S for signal S), 124 on --timeout,\n"
         "128+S when ringlet-run itself gets signal S, 2 on bad usage, 127 when the command\n"
         "cannot be found. See docs/guide/launcher.md.\n";
}

std::vector<HostSpec> parse_hosts(std::string_view list) {
  std::vector<HostSpec> hosts;
  if (list.empty()) throw UsageError("-H needs a host list");
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view item = list.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) throw UsageError(str_cat("empty entry in host list '", list, "'"));
    HostSpec host;
    // A trailing ":digits" is the slot count; "[v6]" addresses keep their colons.
    std::size_t colon = item.rfind(':');
    std::size_t bracket = item.rfind(']');
    if (colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)) {
      std::string_view slots = item.substr(colon + 1);
      auto value = parse_int(slots, 1, 1 << 20);
      if (!value) {
        throw UsageError(str_cat("bad slot count '", slots, "' in host '", item,
                                 "' (expected an integer >= 1)"));
      }
      host.slots = *value;
      item = item.substr(0, colon);
    }
    std::size_t eq = item.find('=');
    if (eq != std::string_view::npos) {
      host.addr = std::string(item.substr(eq + 1));
      item = item.substr(0, eq);
      if (host.addr.size() >= 2 && host.addr.front() == '[' && host.addr.back() == ']') {
        host.addr = host.addr.substr(1, host.addr.size() - 2);
      }
      if (host.addr.empty()) throw UsageError(str_cat("empty address for host '", item, "'"));
    }
    if (item.empty()) throw UsageError(str_cat("empty host name in host list '", list, "'"));
    host.name = std::string(item);
    hosts.push_back(std::move(host));
    if (comma == list.size()) break;
  }
  return hosts;
}

RunOptions parse_args(const std::vector<std::string>& args) {
  RunOptions opts;
  std::optional<LaunchMode> mode;
  std::size_t i = 0;
  // Takes the value of a flag: "--flag=value" or the next argument.
  auto value_of = [&](const std::string& flag, std::optional<std::string> inline_value) {
    if (inline_value) return *inline_value;
    if (i + 1 >= args.size()) throw UsageError(str_cat(flag, " needs a value"));
    return args[++i];
  };
  for (; i < args.size(); ++i) {
    std::string arg = args[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.empty() || arg[0] != '-') break;  // the command starts here
    std::optional<std::string> inline_value;
    if (arg.rfind("--", 0) == 0) {
      std::size_t eq = arg.find('=');
      if (eq != std::string::npos) {
        inline_value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
      }
    }
    if (arg == "-np" || arg == "-n" || arg == "--np") {
      std::string v = value_of(arg, inline_value);
      auto n = parse_int(v, 1, 1 << 20);
      if (!n) throw UsageError(str_cat(arg, " needs an integer >= 1, got '", v, "'"));
      opts.np = *n;
    } else if (arg == "--timeout") {
      std::string v = value_of(arg, inline_value);
      char* end = nullptr;
      double t = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !std::isfinite(t) || t <= 0 || t > 1e9) {
        throw UsageError(str_cat("--timeout needs a number of seconds > 0, got '", v, "'"));
      }
      opts.timeout_s = t;
      opts.timeout_text = v;
    } else if (arg == "--tag-output") {
      if (inline_value) throw UsageError("--tag-output takes no value");
      opts.tag_output = true;
    } else if (arg == "-H" || arg == "--hosts" || arg == "--host") {
      auto more = parse_hosts(value_of(arg, inline_value));
      opts.hosts.insert(opts.hosts.end(), more.begin(), more.end());
    } else if (arg == "--launcher") {
      std::string v = value_of(arg, inline_value);
      if (v == "local") {
        mode = LaunchMode::local;
      } else if (v == "netns") {
        mode = LaunchMode::netns;
      } else if (v == "ssh") {
        mode = LaunchMode::ssh;
      } else {
        throw UsageError(str_cat("--launcher must be local, netns or ssh, got '", v, "'"));
      }
    } else if (arg == "--port") {
      std::string v = value_of(arg, inline_value);
      auto p = parse_int(v, 1, 65535);
      if (!p) throw UsageError(str_cat("--port needs a port in 1..65535, got '", v, "'"));
      opts.port = *p;
    } else if (arg == "-x") {
      std::string v = value_of(arg, inline_value);
      if (!is_env_name(v.substr(0, v.find('=')))) {
        throw UsageError(str_cat("-x needs VAR or VAR=VALUE, got '", v, "'"));
      }
      opts.exports.push_back(v);
    } else if (arg == "-h" || arg == "--help") {
      opts.help = true;
      return opts;
    } else {
      throw UsageError(str_cat("unknown option '", args[i], "'"));
    }
  }
  opts.command.assign(args.begin() + static_cast<std::ptrdiff_t>(std::min(i, args.size())),
                      args.end());
  if (opts.np < 0) throw UsageError("missing -np N");
  if (opts.command.empty()) throw UsageError("missing the command to run");
  opts.mode = mode.value_or(opts.hosts.empty() ? LaunchMode::local : LaunchMode::ssh);
  if (opts.mode != LaunchMode::local && opts.hosts.empty()) {
    throw UsageError("--launcher netns and --launcher ssh need -H");
  }
  place_ranks(opts.np, opts.hosts);  // validates the slot count
  return opts;
}

std::vector<Placement> place_ranks(int np, const std::vector<HostSpec>& hosts) {
  std::vector<Placement> placement(static_cast<std::size_t>(np));
  if (hosts.empty()) {
    for (int r = 0; r < np; ++r) placement[static_cast<std::size_t>(r)] = {0, r, np};
    return placement;
  }
  long total = 0;
  for (const auto& h : hosts) total += h.slots;
  if (np > total) {
    throw UsageError(str_cat("-np ", np, " exceeds the ", total, total == 1 ? " slot" : " slots",
                             " given with -H"));
  }
  int rank = 0;
  for (int h = 0; h < static_cast<int>(hosts.size()) && rank < np; ++h) {
    int here = std::min(hosts[static_cast<std::size_t>(h)].slots, np - rank);
    for (int l = 0; l < here; ++l) placement[static_cast<std::size_t>(rank++)] = {h, l, here};
  }
  return placement;
}

std::string shell_quote(std::string_view word) {
  bool safe = !word.empty();
  for (char c : word) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              std::string_view("_@%+=:,./-").find(c) != std::string_view::npos;
    if (!ok) safe = false;
  }
  if (safe) return std::string(word);
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += "'";
  return out;
}

}  // namespace ringlet::run
