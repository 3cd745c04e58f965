// SPDX-License-Identifier: Apache-2.0
// str_cat(...): builds a message from any streamable parts (g++ 12 has no std::format).
#pragma once

#include <sstream>
#include <string>
#include <utility>

namespace ringlet {

template <class... Parts>
std::string str_cat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

}  // namespace ringlet
