// SPDX-License-Identifier: Apache-2.0
// ringlet::Work over detail::WorkState.
#include "src/engine/work.hpp"

#include "src/common/log.hpp"

namespace ringlet {
namespace detail {

void WorkState::complete(std::exception_ptr e) noexcept {
  std::vector<std::function<void(std::exception_ptr)>> run;
  {
    std::lock_guard lock(mutex);
    done = true;
    error = e;
    run.swap(callbacks);
    cv.notify_all();
  }
  for (auto& f : run) {
    try {
      f(e);
    } catch (...) {
      RINGLET_LOG(warn, "a Work's on_complete callback threw; the exception is dropped");
    }
  }
}

}  // namespace detail

Work::Work() noexcept = default;
Work::Work(std::shared_ptr<detail::WorkState> state) noexcept : state_(std::move(state)) {}
Work::Work(Work&&) noexcept = default;
Work& Work::operator=(Work&&) noexcept = default;
Work::~Work() = default;

bool Work::test() {
  if (!state_) return true;
  std::exception_ptr e;
  {
    std::lock_guard lock(state_->mutex);
    if (!state_->done) return false;
    e = state_->error;
  }
  if (e) std::rethrow_exception(e);
  return true;
}

void Work::wait() {
  if (!state_) return;
  std::exception_ptr e;
  {
    std::unique_lock lock(state_->mutex);
    state_->cv.wait(lock, [&] { return state_->done; });
    e = state_->error;
  }
  if (e) std::rethrow_exception(e);
}

void Work::on_complete(std::function<void(std::exception_ptr)> done) {
  if (!done) return;
  std::exception_ptr e;
  if (state_) {
    std::lock_guard lock(state_->mutex);
    if (!state_->done) {
      state_->callbacks.push_back(std::move(done));
      return;
    }
    e = state_->error;
  }
  done(e);
}

}  // namespace ringlet
