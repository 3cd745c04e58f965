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

Error::Error(ErrorCode code, const std::string& cause, std::vector<int> ranks)
    : std::system_error(make_error_code(code)), ranks_(std::move(ranks)), cause_(cause) {
  compose();
}

ErrorCode Error::error_code() const noexcept { return static_cast<ErrorCode>(code().value()); }
const std::vector<int>& Error::ranks() const noexcept { return ranks_; }
const std::string& Error::cause() const noexcept { return cause_; }
int Error::origin_rank() const noexcept { return origin_rank_; }
const std::string& Error::collective() const noexcept { return collective_; }
std::uint64_t Error::sequence() const noexcept { return sequence_; }
const char* Error::what() const noexcept { return what_.c_str(); }

Error& Error::reported_by(int origin_rank) {
  if (origin_rank_ < 0 && origin_rank >= 0) {
    origin_rank_ = origin_rank;
    compose();
  }
  return *this;
}

Error& Error::in_collective(std::string_view name, std::uint64_t sequence) {
  if (collective_.empty() && !name.empty()) {
    collective_ = std::string(name);
    sequence_ = sequence;
    compose();
  }
  return *this;
}

void Error::compose() {
  what_.clear();
  if (!collective_.empty()) what_ = str_cat(collective_, " #", sequence_, ": ");
  if (origin_rank_ >= 0) what_ += str_cat("rank ", origin_rank_, ": ");
  what_ += str_cat(cause_, ": ", code().message());
}

namespace detail {

void check_failed(const char* file, int line, const std::string& message) {
  throw Error(ErrorCode::invalid_argument, str_cat(message, " (", file, ":", line, ")"));
}

void throw_errno(const std::string& what, int err) {
  throw Error(ErrorCode::transport, str_cat(what, ": ", std::strerror(err)));
}

}  // namespace detail
}  // namespace ringlet
