// SPDX-License-Identifier: Apache-2.0
// RINGLET_CHECK and the system-call helpers every module uses.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>

#include "include/ringlet/ringlet.hpp"
#include "src/common/str_cat.hpp"

namespace ringlet::detail {

[[noreturn]] void check_failed(const char* file, int line, const std::string& message);

// Throws Error(transport) for the current errno: "<what>: <strerror>".
[[noreturn]] void throw_errno(const std::string& what, int err = errno);

// Retries a system call while it fails with EINTR (NCCL's SYSCHECK idea). Returns the
// call's result; the caller inspects errno on -1.
template <class F>
auto retry_eintr(F&& call) {
  for (;;) {
    auto result = call();
    if (result != -1 || errno != EINTR) return result;
  }
}

}  // namespace ringlet::detail

// An invariant: throws Error(invalid_argument) naming the file and line and the message.
#define RINGLET_CHECK(cond, ...)                                                            \
  do {                                                                                      \
    if (!(cond))                                                                            \
      ::ringlet::detail::check_failed(__FILE__, __LINE__, ::ringlet::str_cat(__VA_ARGS__)); \
  } while (false)
