// SPDX-License-Identifier: Apache-2.0
// Launcher environments: rank, size, local rank and store address from Options, RINGLET_*,
// torchrun, Open MPI, MPICH/PMI or SLURM variables (docs/guide/env.md, "Launchers").
#include "src/bootstrap/launch_env.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdio>
#include <fstream>

#include "src/common/check.hpp"
#include "src/common/env.hpp"
#include "src/common/fnv1a.hpp"
#include "src/common/net_address.hpp"

namespace ringlet::bootstrap {
namespace {

constexpr int kDefaultPort = 29500;
constexpr std::size_t kMaxJobIdentityBytes = 256;  // the store hello's limit
constexpr std::size_t kMaxNodelistHosts = std::size_t{1} << 20;

// One launcher's variable names, in the order resolve_launch() consults launchers.
struct Launcher {
  const char* source;  // LaunchInfo::source
  const char* name;    // for messages
  const char* rank;
  const char* size;
  const char* local_rank;
  const char* local_size;  // SLURM's needs parsing: handled apart
};

constexpr std::array<Launcher, 5> kLaunchers = {{
    {"ringlet", "RINGLET_*", "RINGLET_RANK", "RINGLET_SIZE", "RINGLET_LOCAL_RANK",
     "RINGLET_LOCAL_SIZE"},
    {"torchrun", "torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
    {"openmpi", "Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
     "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"},
    {"pmi", "MPICH/PMI", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
    {"slurm", "SLURM", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", nullptr},
}};

constexpr std::array<const char*, 3> kSlurmTasksPerNode = {
    "SLURM_NTASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"};
constexpr std::array<const char*, 3> kSlurmNodelist = {"SLURM_STEP_NODELIST", "SLURM_NODELIST",
                                                       "SLURM_JOB_NODELIST"};

// A set, non-empty variable; empty values count as unset.
std::optional<std::string> lookup(const EnvLookup& env, std::string_view name) {
  auto v = env(name);
  if (!v || v->empty()) return std::nullopt;
  return v;
}

// Parses a decimal int in [min, INT_MAX]; `what` names the source in the error.
int parse_int(std::string_view text, std::string_view what, int min) {
  int x = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), x);
  if (ec != std::errc() || ptr != text.data() + text.size() || text.empty()) {
    throw Error(ErrorCode::invalid_argument, str_cat(what, "=", text, " is not an integer"));
  }
  if (x < min) {
    throw Error(ErrorCode::invalid_argument,
                str_cat(what, "=", text, " is out of range (must be at least ", min, ")"));
  }
  return x;
}

int parse_port(std::string_view text, std::string_view what) {
  int port = parse_int(text, what, 1);
  if (port > 65535) {
    throw Error(ErrorCode::invalid_argument, str_cat(what, "=", text, " is not a port (1..65535)"));
  }
  return port;
}

// One integer field and the variable it came from.
struct Field {
  int value = -1;
  std::string from;    // "Options::rank", "RINGLET_RANK", ...
  std::string source;  // "options", "ringlet", ...
  std::string launcher;
};

Field resolve_int(int option, const char* option_name, const EnvLookup& env,
                  const char* Launcher::*member, int min, int pmix_value) {
  Field f;
  if (option != -1) {
    if (option < min) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat(option_name, " = ", option, " is out of range (must be at least ", min,
                          ", or -1 to read the environment)"));
    }
    f.value = option;
    f.from = option_name;
    f.source = "options";
    f.launcher = "Options";
    return f;
  }
  for (const Launcher& l : kLaunchers) {
    if (&l == &kLaunchers[1] && pmix_value >= 0) {  // PMIx: after RINGLET_*, before torchrun
      if (pmix_value < min) {
        throw Error(ErrorCode::invalid_argument,
                    str_cat("PMIx gave ", option_name, " = ", pmix_value, " (at least ", min,
                            " expected)"));
      }
      f.value = pmix_value;
      f.from = "PMIx";
      f.source = "pmix";
      f.launcher = "PMIx";
      return f;
    }
    const char* var = l.*member;
    if (var == nullptr) continue;
    if (auto v = lookup(env, var)) {
      f.value = parse_int(*v, var, min);
      f.from = var;
      f.source = l.source;
      f.launcher = l.name;
      return f;
    }
  }
  return f;
}

std::string variables_of(const char* Launcher::*member, const char* option_name) {
  std::string out = option_name;
  for (const Launcher& l : kLaunchers) {
    if (l.*member != nullptr) out += str_cat(", ", l.*member);
  }
  return out;
}

// Counts per node from "4(x2),3,2(x3)", expanded in node order.
std::vector<int> parse_tasks_per_node(std::string_view text, std::string_view var) {
  std::vector<int> out;
  std::size_t pos = 0;
  auto bad = [&] {
    return Error(ErrorCode::invalid_argument,
                 str_cat(var, "=", text, " is not a SLURM task count list such as 4(x2),3"));
  };
  while (pos < text.size()) {
    std::size_t end = text.find(',', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view item = text.substr(pos, end - pos);
    int repeat = 1;
    std::size_t paren = item.find('(');
    std::string_view count = item.substr(0, paren);
    if (paren != std::string_view::npos) {
      if (item.size() < paren + 4 || item.substr(paren, 2) != "(x" || item.back() != ')') {
        throw bad();
      }
      std::string_view r = item.substr(paren + 2, item.size() - paren - 3);
      auto [p, ec] = std::from_chars(r.data(), r.data() + r.size(), repeat);
      if (ec != std::errc() || p != r.data() + r.size() || repeat < 1) throw bad();
    }
    int n = 0;
    auto [p, ec] = std::from_chars(count.data(), count.data() + count.size(), n);
    if (count.empty() || ec != std::errc() || p != count.data() + count.size() || n < 1) {
      throw bad();
    }
    if (out.size() + static_cast<std::size_t>(repeat) > kMaxNodelistHosts) throw bad();
    out.insert(out.end(), static_cast<std::size_t>(repeat), n);
    pos = end + 1;
    if (end == text.size()) break;
  }
  if (out.empty()) throw bad();
  return out;
}

// Splits "host:port", "[v6]:port", "[v6]", "host" or a bare IPv6 literal.
// Returns the host without brackets and the port, if one was given.
std::pair<std::string, std::optional<int>> split_address(const std::string& text,
                                                         std::string_view what) {
  auto bad = [&](std::string_view why) {
    return Error(ErrorCode::invalid_argument,
                 str_cat(what, "=", text, " is not a rendezvous address (", why,
                         "); use host:port, [ipv6]:port or host"));
  };
  if (text.empty()) throw bad("empty");
  if (text.front() == '[') {
    std::size_t close = text.find(']');
    if (close == std::string::npos || close == 1) throw bad("unbalanced [");
    std::string host = text.substr(1, close - 1);
    if (close + 1 == text.size()) return {host, std::nullopt};
    if (text[close + 1] != ':') throw bad("text after ]");
    return {host, parse_port(text.substr(close + 2), str_cat(what, " port"))};
  }
  std::size_t colon = text.find(':');
  if (colon == std::string::npos) return {text, std::nullopt};
  if (text.find(':', colon + 1) != std::string::npos) return {text, std::nullopt};  // bare IPv6
  if (colon == 0) throw bad("no host");
  return {text.substr(0, colon), parse_port(text.substr(colon + 1), str_cat(what, " port"))};
}

// Splits at commas outside brackets.
std::vector<std::string_view> split_top_level(std::string_view text, std::string_view whole) {
  std::vector<std::string_view> out;
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '[') {
      if (++depth > 1) {
        throw Error(ErrorCode::invalid_argument,
                    str_cat("SLURM node list '", whole, "' has nested brackets"));
      }
    } else if (c == ']') {
      if (--depth < 0) {
        throw Error(ErrorCode::invalid_argument,
                    str_cat("SLURM node list '", whole, "' has an unbalanced ]"));
      }
    } else if (c == ',' && depth == 0) {
      out.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  if (depth != 0) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("SLURM node list '", whole, "' has an unbalanced ["));
  }
  out.push_back(text.substr(start));
  return out;
}

// Expands the inside of one bracket, "1-3,07-09,12", into zero-padded numbers.
std::vector<std::string> expand_ranges(std::string_view inside, std::string_view whole) {
  auto bad = [&] {
    return Error(ErrorCode::invalid_argument,
                 str_cat("SLURM node list '", whole, "' has a malformed range [", inside, "]"));
  };
  auto is_digits = [](std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
  };
  std::vector<std::string> out;
  std::size_t pos = 0;
  for (;;) {
    std::size_t end = inside.find(',', pos);
    std::string_view item = inside.substr(pos, end == std::string_view::npos ? end : end - pos);
    std::size_t dash = item.find('-');
    std::string_view lo = item.substr(0, dash);
    std::string_view hi = dash == std::string_view::npos ? lo : item.substr(dash + 1);
    if (!is_digits(lo) || !is_digits(hi) || lo.size() > 18 || hi.size() > 18) throw bad();
    unsigned long long a = 0;
    unsigned long long b = 0;
    std::from_chars(lo.data(), lo.data() + lo.size(), a);
    std::from_chars(hi.data(), hi.data() + hi.size(), b);
    if (b < a || b - a >= kMaxNodelistHosts) throw bad();
    for (unsigned long long x = a; x <= b; ++x) {
      std::string digits = std::to_string(x);
      if (digits.size() < lo.size()) digits.insert(0, lo.size() - digits.size(), '0');
      out.push_back(std::move(digits));
      if (out.size() > kMaxNodelistHosts) throw bad();
    }
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return out;
}

std::string read_first_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return "-";
  while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
  return line.empty() ? "-" : line;
}

// The inode number of a namespace link such as /proc/self/ns/net ("net:[4026531840]").
std::string namespace_inode(const char* path) {
  char buf[256];
  ssize_t n = ::readlink(path, buf, sizeof buf - 1);
  if (n > 0) {
    std::string_view link(buf, static_cast<std::size_t>(n));
    std::size_t open = link.find('[');
    std::size_t close = link.rfind(']');
    if (open != std::string_view::npos && close != std::string_view::npos && close > open + 1) {
      return std::string(link.substr(open + 1, close - open - 1));
    }
  }
  struct stat st {};
  if (::stat(path, &st) == 0) return std::to_string(st.st_ino);
  return "-";
}

}  // namespace

EnvLookup process_env() {
  return [](std::string_view name) { return env::get(name); };
}

std::vector<std::string> expand_slurm_nodelist(std::string_view nodelist) {
  std::vector<std::string> hosts;
  for (std::string_view item : split_top_level(nodelist, nodelist)) {
    if (item.empty()) continue;
    // Cartesian product over the item's literal parts and bracket groups.
    std::vector<std::string> partial = {""};
    std::size_t pos = 0;
    while (pos < item.size()) {
      std::size_t open = item.find('[', pos);
      std::string_view literal =
          item.substr(pos, open == std::string_view::npos ? open : open - pos);
      for (std::string& p : partial) p += literal;
      if (open == std::string_view::npos) break;
      std::size_t close = item.find(']', open);  // balanced: checked by split_top_level
      std::vector<std::string> numbers =
          expand_ranges(item.substr(open + 1, close - open - 1), nodelist);
      if (partial.size() * numbers.size() > kMaxNodelistHosts) {
        throw Error(ErrorCode::invalid_argument,
                    str_cat("SLURM node list '", nodelist, "' expands to too many hosts"));
      }
      std::vector<std::string> next;
      next.reserve(partial.size() * numbers.size());
      for (const std::string& p : partial) {
        for (const std::string& n : numbers) next.push_back(p + n);
      }
      partial = std::move(next);
      pos = close + 1;
    }
    hosts.insert(hosts.end(), partial.begin(), partial.end());
    if (hosts.size() > kMaxNodelistHosts) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat("SLURM node list '", nodelist, "' expands to too many hosts"));
    }
  }
  return hosts;
}

const char* wireup_name(Wireup w) {
  switch (w) {
    case Wireup::pmix:
      return "PMIx";
    case Wireup::pmi1:
      return "PMI-1";
    case Wireup::address:
      break;
  }
  return "address";
}

bool pmix_announced(const EnvLookup& env) {
  if (!lookup(env, "PMIX_NAMESPACE") || !lookup(env, "PMIX_RANK")) return false;
  for (const char* uri : {"PMIX_SERVER_URI41", "PMIX_SERVER_URI4", "PMIX_SERVER_URI3",
                          "PMIX_SERVER_URI21", "PMIX_SERVER_URI2", "PMIX_SERVER_URI"}) {
    if (lookup(env, uri)) return true;
  }
  return false;
}

Wireup choose_wireup(const Options& options, const EnvLookup& env) {
  if (!options.store.empty() || lookup(env, "RINGLET_ADDR")) return Wireup::address;
  if (pmix_announced(env)) return Wireup::pmix;
  if (lookup(env, "PMI_FD") && lookup(env, "PMI_RANK")) return Wireup::pmi1;
  return Wireup::address;
}

int slurm_store_port(std::uint64_t job_id, std::uint64_t step_id) {
  return 29501 + static_cast<int>((job_id * 16 + step_id % 16) % 1024);
}

void resolve_job_identity(LaunchInfo& info, const EnvLookup& env, const PmixView* pmix) {
  auto set = [&](std::string identity, std::string from) {
    if (identity.size() > kMaxJobIdentityBytes) identity.resize(kMaxJobIdentityBytes);
    info.job_identity = std::move(identity);
    info.job_identity_source = std::move(from);
  };
  if (auto v = lookup(env, "RINGLET_JOB_ID")) {
    if (v->size() > kMaxJobIdentityBytes) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat("RINGLET_JOB_ID is ", v->size(), " bytes long; at most ",
                          kMaxJobIdentityBytes, " are allowed"));
    }
    return set(*v, "RINGLET_JOB_ID");
  }
  if (pmix != nullptr && !pmix->nspace.empty()) return set("pmix:" + pmix->nspace, "PMIx");
  if (auto v = lookup(env, "PMIX_NAMESPACE")) return set("pmix:" + *v, "PMIX_NAMESPACE");
  if (auto job = lookup(env, "SLURM_JOB_ID")) {
    if (auto step = lookup(env, "SLURM_STEP_ID")) {
      return set(str_cat("slurm:", *job, ".", *step), "SLURM_JOB_ID.SLURM_STEP_ID");
    }
    return set("slurm:" + *job, "SLURM_JOB_ID");
  }
  if (auto v = lookup(env, "TORCHELASTIC_RUN_ID")) {
    return set("torchrun:" + *v, "TORCHELASTIC_RUN_ID");
  }
  if (auto v = lookup(env, "OMPI_MCA_ess_base_jobid")) {
    return set("openmpi:" + *v, "OMPI_MCA_ess_base_jobid");
  }
  // FNV-1a over the rendezvous parameters: the same on every rank of the job, and for any
  // other job of that size on the same host and port (documented).
  std::string params = str_cat(info.store_host, ":", info.store_port, "/", info.size);
  const std::uint64_t h = fnv1a64(params);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  set(str_cat("rdv-", hex), "rendezvous parameters");
}

LaunchInfo resolve_launch(const Options& options, const EnvLookup& env, const PmixView* pmix) {
  LaunchInfo info;
  info.wireup = choose_wireup(options, env);
  if (info.wireup != Wireup::pmix) pmix = nullptr;
  // Announced but not connected (a build without PMIx): the launcher's variables instead.
  if (info.wireup == Wireup::pmix && pmix == nullptr) info.wireup = Wireup::address;
  auto pv = [&](int PmixView::*m) { return pmix != nullptr ? pmix->*m : -1; };

  Field rank =
      resolve_int(options.rank, "Options::rank", env, &Launcher::rank, 0, pv(&PmixView::rank));
  Field size =
      resolve_int(options.size, "Options::size", env, &Launcher::size, 1, pv(&PmixView::size));
  Field local_rank = resolve_int(options.local_rank, "Options::local_rank", env,
                                 &Launcher::local_rank, 0, pv(&PmixView::local_rank));
  Field local_size = resolve_int(options.local_size, "Options::local_size", env,
                                 &Launcher::local_size, 1, pv(&PmixView::local_size));
  if (local_size.value < 0) {
    // SLURM: the count for this node (SLURM_NODEID indexes "4(x2),3"), else the first one.
    for (const char* var : kSlurmTasksPerNode) {
      auto v = lookup(env, var);
      if (!v) continue;
      std::vector<int> counts = parse_tasks_per_node(*v, var);
      std::size_t node = 0;
      if (auto id = lookup(env, "SLURM_NODEID")) {
        auto n = static_cast<std::size_t>(parse_int(*id, "SLURM_NODEID", 0));
        if (n < counts.size()) node = n;
      }
      local_size.value = counts[node];
      local_size.from = var;
      break;
    }
  }

  if (rank.value < 0) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("ringlet cannot tell this process's rank: set one of ",
                        variables_of(&Launcher::rank, "Options::rank"),
                        " (or start it with ringlet-run, torchrun, mpirun or srun)"));
  }
  if (size.value < 0) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat("ringlet cannot tell the number of ranks (rank ", rank.value, " came from ",
                rank.from, "): set one of ", variables_of(&Launcher::size, "Options::size")));
  }
  if (rank.value >= size.value) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("rank ", rank.value, " (from ", rank.from, ") is outside [0, ", size.value,
                        ") (size from ", size.from, ")"));
  }
  if (local_size.value > size.value) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("local size ", local_size.value, " (from ", local_size.from,
                        ") is larger than the size ", size.value, " (from ", size.from, ")"));
  }
  if (local_rank.value >= 0 && local_size.value > 0 && local_rank.value >= local_size.value) {
    throw Error(
        ErrorCode::invalid_argument,
        str_cat("local rank ", local_rank.value, " (from ", local_rank.from, ") is outside [0, ",
                local_size.value, ") (local size from ", local_size.from, ")"));
  }
  info.rank = rank.value;
  info.size = size.value;
  info.local_rank = local_rank.value;
  info.local_size = local_size.value;
  info.source = rank.source;

  // The store address: Options::store, RINGLET_ADDR, MASTER_ADDR, then the first SLURM host.
  // The port: one written in the address, else RINGLET_PORT, MASTER_PORT, 29500.
  std::optional<int> port;
  bool from_slurm = false;
  info.serves_store = info.rank == 0;
  if (info.wireup == Wireup::pmi1) {
    info.pmi_fd = parse_int(*lookup(env, "PMI_FD"), "PMI_FD", 0);
  }
  if (info.wireup != Wireup::address) {
    // The store's address comes from PMIx or PMI-1 once rank 0 has bound an ephemeral port.
    info.store_port = 0;
    info.port_from = wireup_name(info.wireup);
    resolve_job_identity(info, env, pmix);
    if (!options.node_id.empty()) {
      info.node_id = options.node_id;
    } else if (auto id = lookup(env, "RINGLET_NODE_ID")) {
      info.node_id = *id;
    }
    return info;
  }
  if (!options.store.empty()) {
    auto [host, p] = split_address(options.store, "Options::store");
    info.store_host = host;
    port = p;
  } else if (auto addr = lookup(env, "RINGLET_ADDR")) {
    auto [host, p] = split_address(*addr, "RINGLET_ADDR");
    info.store_host = host;
    port = p;
  } else if (auto master = lookup(env, "MASTER_ADDR")) {
    info.store_host = net::strip_brackets(*master);
  } else {
    for (const char* var : kSlurmNodelist) {
      if (auto list = lookup(env, var)) {
        std::vector<std::string> hosts = expand_slurm_nodelist(*list);
        if (!hosts.empty()) info.store_host = hosts.front();
        from_slurm = !hosts.empty();
        break;
      }
    }
  }
  if (port) info.port_from = "the address";
  if (!port) {
    if (auto v = lookup(env, "RINGLET_PORT")) {
      port = parse_port(*v, "RINGLET_PORT");
      info.port_from = "RINGLET_PORT";
    } else if (auto m = lookup(env, "MASTER_PORT")) {
      port = parse_port(*m, "MASTER_PORT");
      if (auto run = lookup(env, "TORCHELASTIC_RUN_ID")) {
        throw Error(ErrorCode::invalid_argument,
                    str_cat("rank ", info.rank, " runs under torchrun (TORCHELASTIC_RUN_ID=", *run,
                            "), whose own store holds MASTER_PORT=", *port,
                            ": ringlet cannot serve its store there; set RINGLET_PORT to a free "
                            "port on MASTER_ADDR's host (the same on every rank)"));
      }
      info.port_from = "MASTER_PORT";
    }
  }
  if (!port && from_slurm) {
    // SLURM without PMIx: a port per job and step, served by the step's first task on its
    // first node (rank 0 may be elsewhere under -m arbitrary or cyclic layouts).
    auto id = [&](const char* var) -> std::uint64_t {
      auto v = lookup(env, var);
      if (!v) return 0;
      std::uint64_t x = 0;
      auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), x);
      if (ec != std::errc() || p != v->data() + v->size()) {
        // Not a number ("batch", "extern", ...): a stable hash instead.
        for (char c : *v) x = x * 131 + static_cast<unsigned char>(c);
      }
      return x;
    };
    // Only for ranks that SLURM numbered: under mpirun inside an allocation, ranks on
    // mpirun's node and on its daemons' nodes see different SLURM_STEP_IDs.
    auto job = lookup(env, "SLURM_JOB_ID");
    if (job && rank.source == "slurm") {
      port = slurm_store_port(id("SLURM_JOB_ID"), id("SLURM_STEP_ID"));
      info.port_from = "SLURM_JOB_ID and SLURM_STEP_ID";
    }
    auto node = lookup(env, "SLURM_NODEID");
    auto local = lookup(env, "SLURM_LOCALID");
    if (rank.source == "slurm" && node && local) {
      info.serves_store =
          parse_int(*node, "SLURM_NODEID", 0) == 0 && parse_int(*local, "SLURM_LOCALID", 0) == 0;
    }
  }
  if (!port) info.port_from = "the default";
  info.store_port = port.value_or(kDefaultPort);
  if (info.store_host.empty() && info.size > 1) {
    throw Error(ErrorCode::invalid_argument,
                str_cat("rank ", info.rank, " of ", info.size, " came from ", rank.launcher, " (",
                        rank.from, ") but no rendezvous address is known: set ",
                        rank.source == "options" ? "Options::store, " : "",
                        "RINGLET_ADDR=", "host:port (rank 0's host) or MASTER_ADDR/MASTER_PORT",
                        pmix_announced(env) ? " (a PMIx server is announced, but this build of "
                                              "ringlet has no PMIx: rebuild with -Dpmix=enabled)"
                                            : ""));
  }

  if (!options.node_id.empty()) {
    info.node_id = options.node_id;
  } else if (auto id = lookup(env, "RINGLET_NODE_ID")) {
    info.node_id = *id;
  }
  resolve_job_identity(info, env, pmix);
  return info;
}

std::string detect_node_identity() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') {
    host[0] = '-';
    host[1] = '\0';
  }
  return str_cat(host, "/", read_first_line("/proc/sys/kernel/random/boot_id"), "/",
                 namespace_inode("/proc/self/ns/net"), "/", namespace_inode("/proc/self/ns/uts"));
}

}  // namespace ringlet::bootstrap
