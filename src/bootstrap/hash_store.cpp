// SPDX-License-Identifier: Apache-2.0
// HashStore: the in-process store for ranks that run as threads of one process.
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>

#include "src/bootstrap/store.hpp"
#include "src/bootstrap/store_value.hpp"
#include "src/common/check.hpp"

namespace ringlet::bootstrap {
namespace {

// Shared by the threads of one process; every member is guarded by mutex_. get() waits on
// changed_, which set() and add() notify.
class HashStore final : public Store {
 public:
  void set(std::string_view key, std::span<const std::byte> value) override {
    {
      std::lock_guard lock(mutex_);
      data_.insert_or_assign(std::string(key), std::vector<std::byte>(value.begin(), value.end()));
    }
    changed_.notify_all();
  }

  std::vector<std::byte> get(std::string_view key, Deadline deadline) override {
    const auto start = Clock::now();
    std::unique_lock lock(mutex_);
    for (;;) {
      auto it = data_.find(key);
      if (it != data_.end()) return it->second;
      if (changed_.wait_until(lock, deadline) == std::cv_status::timeout &&
          data_.find(key) == data_.end()) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - start).count();
        throw Error(ErrorCode::timeout,
                    str_cat("store: key '", key, "' not set within ", ms < 0 ? 0 : ms, " ms"));
      }
    }
  }

  std::int64_t add(std::string_view key, std::int64_t delta) override {
    std::int64_t result = 0;
    {
      std::lock_guard lock(mutex_);
      auto it = data_.find(key);
      std::int64_t old = 0;
      if (it != data_.end()) {
        auto parsed = detail::parse_counter(it->second);
        if (!parsed) {
          throw Error(ErrorCode::invalid_argument,
                      str_cat("store: add() on key '", key, "', whose value is not an integer"));
        }
        old = *parsed;
      }
      auto sum = detail::checked_add(old, delta);
      if (!sum) {
        throw Error(ErrorCode::invalid_argument,
                    str_cat("store: add(", delta, ") on key '", key, "' overflows int64"));
      }
      result = *sum;
      data_.insert_or_assign(std::string(key), detail::encode_counter(result));
    }
    changed_.notify_all();
    return result;
  }

  bool remove(std::string_view key) override {
    std::lock_guard lock(mutex_);
    auto it = data_.find(key);
    if (it == data_.end()) return false;
    data_.erase(it);
    return true;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, std::vector<std::byte>, std::less<>> data_;
};

}  // namespace

std::shared_ptr<Store> make_hash_store() { return std::make_shared<HashStore>(); }

}  // namespace ringlet::bootstrap
