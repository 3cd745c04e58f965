// SPDX-License-Identifier: Apache-2.0
// ringlet-topo: prints the machine's topology (report, nvidia-smi style matrix or JSON).
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>

#include "src/topo/format.hpp"
#include "src/topo/topology.hpp"

namespace {

constexpr const char* kUsage =
    "usage: ringlet-topo [--matrix | --json] [--xml FILE]\n"
    "  (default)   readable report of CPUs, memory, caches, GPUs, NICs, interfaces, RDMA\n"
    "  --matrix    GPU/NIC connection matrix as nvidia-smi topo -m, with CPU/NUMA affinity\n"
    "  --json      JSON document (schema_version 1, see docs/guide/topology.md)\n"
    "  --xml FILE  read an hwloc XML export (lstopo --of xml) instead of this machine\n"
    "exit status: 0 ok, 1 error, 2 usage\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "ringlet-topo: %s\n%s", message.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  enum class Mode { report, matrix, json } mode = Mode::report;
  bool mode_set = false;
  std::string xml;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--matrix" || a == "--json") {
      Mode m = a == "--json" ? Mode::json : Mode::matrix;
      if (mode_set && m != mode) return usage_error("--matrix and --json exclude each other");
      mode = m;
      mode_set = true;
    } else if (a == "--xml") {
      if (i + 1 >= argc) return usage_error("--xml needs a file");
      xml = argv[++i];
    } else if (a.rfind("--xml=", 0) == 0) {
      xml = std::string(a.substr(6));
    } else {
      return usage_error(std::string("unknown argument ") + std::string(a));
    }
  }
  try {
    ringlet::topo::Topology topo =
        xml.empty() ? ringlet::topo::load_topology() : ringlet::topo::load_topology_xml(xml);
    std::string text = mode == Mode::json     ? ringlet::topo::to_json(topo)
                       : mode == Mode::matrix ? ringlet::topo::format_matrix(topo)
                                              : ringlet::topo::format_report(topo);
    std::fputs(text.c_str(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ringlet-topo: error: %s\n", e.what());
    return 1;
  }
}
