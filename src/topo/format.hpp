// SPDX-License-Identifier: Apache-2.0
// Text renderings of a Topology: the readable report, the nvidia-smi style matrix and JSON.
#pragma once

#include <string>

#include "src/topo/topology.hpp"

namespace ringlet::topo {

// The JSON schema version written by to_json(); docs/guide/topology.md describes the schema.
inline constexpr int kJsonSchemaVersion = 1;

std::string format_report(const Topology& topo);
std::string format_matrix(const Topology& topo);
std::string to_json(const Topology& topo);

}  // namespace ringlet::topo
