// SPDX-License-Identifier: Apache-2.0
// Raw access to the environment. The tunables are resolved by src/config.cpp into a Config
// per communicator; the launcher variables by src/bootstrap/launch_env.cpp. Every variable is
// listed in docs/guide/env.md.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "src/common/log.hpp"

namespace ringlet::env {

// Raw lookups, for the launcher environments (bootstrap/launch_env.cpp), which must be
// re-read per communicator and are injectable in tests.
std::optional<std::string> get(std::string_view name);

// Parses an integer variable; a malformed value throws Error(invalid_argument) naming it.
std::optional<long long> get_int(std::string_view name);

// RINGLET_DEBUG: warn (default), info or trace, case-insensitive.
log::Level debug_level();

}  // namespace ringlet::env
