// SPDX-License-Identifier: Apache-2.0
// The tcp transport's memory region: nothing to register, sockets read and write any memory.
#pragma once

#include "transports/transport.hpp"

namespace ringlet::transport::tcp {

class TcpMemoryRegion final : public MemoryRegion {};

}  // namespace ringlet::transport::tcp
