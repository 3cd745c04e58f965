// SPDX-License-Identifier: Apache-2.0
// The fuzz targets' stand-in for topo::list_interface_addresses() (src/topo/sysfs.cpp, which
// pulls in the whole topology code): the targets bind 127.0.0.1 themselves, so the tcp
// transport never selects an interface. Linked into the fuzz targets only.
#include "src/topo/topology.hpp"

namespace ringlet::topo {

std::vector<IfAddr> list_interface_addresses() { return {}; }

}  // namespace ringlet::topo
