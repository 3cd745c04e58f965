// SPDX-License-Identifier: Apache-2.0
// Driving resumable tasks: one step (the progress engine) or to completion (the caller).
#include "src/engine/task.hpp"

#include "src/common/check.hpp"

namespace ringlet::engine {
namespace {

// The deadline passed while a polled task waited for `d.request`. The transport is asked to
// wait with a deadline already passed, so that it releases the request (its memory is the
// caller's again) and says what it knows; the message is ours, with the real wait.
void expire(Driver& d) {
  const long long waited_ms = (steady_ns() - d.waiting_since_ns) / 1000000;
  try {
    d.conn->wait(d.request, Clock::now());
    return;  // completed at the last moment
  } catch (const Error& e) {
    if (e.error_code() != ErrorCode::timeout) throw;
  }
  throw Error(ErrorCode::timeout,
              str_cat("rank ", d.rank, " waited ", waited_ms, " ms for peer ", d.conn->peer(),
                      " to complete a ", d.is_send ? "send" : "receive"),
              {d.rank, d.conn->peer()});
}

}  // namespace

bool advance(Task& task, Driver& driver) {
  RINGLET_CHECK(task.h_, "advance() on an empty task");
  if (!task.started_) {
    task.started_ = true;
    task.h_.resume();
  } else if (driver.conn != nullptr) {
    bool ready = false;
    try {
      ready = driver.conn->test(driver.request);
      if (!ready && Clock::now() >= driver.deadline) {
        expire(driver);
        ready = true;
      }
      if (ready) driver.note_done();
    } catch (...) {
      driver.error = std::current_exception();
      ready = true;
    }
    if (!ready) return false;
    driver.conn = nullptr;
    auto waiter = std::exchange(driver.waiter, {});
    waiter.resume();
  }
  if (!task.h_.done()) return false;
  if (task.h_.promise().error) std::rethrow_exception(task.h_.promise().error);
  return true;
}

void run_blocking(Task task, Driver& driver) {
  RINGLET_CHECK(driver.blocking, "run_blocking() with a polling driver");
  // A blocking driver's awaits never suspend, so one resume runs the task to its end; the
  // loop only guards the contract.
  while (!advance(task, driver)) {
  }
}

}  // namespace ringlet::engine
