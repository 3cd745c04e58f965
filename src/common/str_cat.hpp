// SPDX-License-Identifier: Apache-2.0
// str_cat(...): builds a message from any streamable parts (g++ 12 has no std::format);
// ascii_lower(): the case folding of option and variable values.
#pragma once

#include <algorithm>
#include <cctype>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

namespace ringlet {

template <class... Parts>
std::string str_cat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

// `s` with ASCII letters in lower case (values such as "AUTO", "Info", "TCP").
inline std::string ascii_lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace ringlet
