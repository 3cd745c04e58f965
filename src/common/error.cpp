// SPDX-License-Identifier: Apache-2.0
// ringlet::Error, its error category, and the helpers of check.hpp.
#include <cstring>
#include <string>

#include "src/common/check.hpp"

namespace ringlet {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "ringlet"; }
  std::string message(int code) const override {
    switch (static_cast<ErrorCode>(code)) {
      case ErrorCode::invalid_argument:
        return "invalid argument";
      case ErrorCode::mismatch:
        return "ranks disagree on a collective";
      case ErrorCode::timeout:
        return "deadline passed";
      case ErrorCode::peer_lost:
        return "peer lost";
      case ErrorCode::transport:
        return "transport failure";
      case ErrorCode::aborted:
        return "communicator aborted";
    }
    return "unknown ringlet error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

std::error_code make_error_code(ErrorCode code) noexcept {
  return {static_cast<int>(code), error_category()};
}

Error::Error(ErrorCode code, const std::string& what, std::vector<int> ranks)
    : std::system_error(make_error_code(code), what), ranks_(std::move(ranks)) {}

ErrorCode Error::error_code() const noexcept { return static_cast<ErrorCode>(code().value()); }

const std::vector<int>& Error::ranks() const noexcept { return ranks_; }

namespace detail {

void check_failed(const char* file, int line, const std::string& message) {
  throw Error(ErrorCode::invalid_argument, str_cat(message, " (", file, ":", line, ")"));
}

void throw_errno(const std::string& what, int err) {
  throw Error(ErrorCode::transport, str_cat(what, ": ", std::strerror(err)));
}

}  // namespace detail
}  // namespace ringlet
