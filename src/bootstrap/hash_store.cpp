// SPDX-License-Identifier: Apache-2.0
// HashStore: the in-process store for ranks that run as threads of one process.
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <stop_token>

#include "src/bootstrap/store.hpp"
#include "src/bootstrap/store_value.hpp"
#include "src/common/check.hpp"

namespace ringlet::bootstrap {
namespace {

// Shared by the threads of one process; every member is guarded by mutex_. get() waits on
// changed_, which every write notifies. owners_ holds the claims and the owned keys.
class HashStore final : public Store {
 public:
  void set(std::string_view key, std::span<const std::byte> value) override {
    {
      std::lock_guard lock(mutex_);
      refuse_if_owned("set", key);
      data_.insert_or_assign(std::string(key), std::vector<std::byte>(value.begin(), value.end()));
    }
    changed_.notify_all();
  }

  bool claim(std::string_view key, std::span<const std::byte> token) override {
    detail::check_claim_token(token);
    {
      std::lock_guard lock(mutex_);
      if (!detail::claim_granted(key, token, data_.contains(key), owner_of(key))) return false;
      if (data_.contains(key)) return true;  // this claimant's retry
      data_.emplace(std::string(key), std::vector<std::byte>(token.begin(), token.end()));
      owners_.emplace(std::string(key),
                      detail::KeyOwner{std::string(key), {token.begin(), token.end()}});
    }
    changed_.notify_all();
    return true;
  }

  void set_owned(std::string_view claim_key, std::span<const std::byte> token, std::string_view key,
                 std::span<const std::byte> value) override {
    detail::check_claim_token(token);
    {
      std::lock_guard lock(mutex_);
      std::string why = detail::owned_write_refusal(claim_key, token, owner_of(claim_key), key,
                                                    data_.contains(key), owner_of(key));
      if (!why.empty()) throw Error(ErrorCode::mismatch, why);
      data_.insert_or_assign(std::string(key), std::vector<std::byte>(value.begin(), value.end()));
      owners_.insert_or_assign(
          std::string(key), detail::KeyOwner{std::string(claim_key), {token.begin(), token.end()}});
    }
    changed_.notify_all();
  }

  std::vector<std::byte> get(std::string_view key, Deadline deadline) override {
    return get_interruptible(key, deadline, {});
  }

  std::vector<std::byte> get_interruptible(std::string_view key, Deadline deadline,
                                           const std::stop_token& stop) override {
    const auto start = Clock::now();
    // A stop wakes the wait at once (taking the mutex, so that no notify falls between the
    // check below and the wait).
    std::stop_callback wake(stop, [this] {
      std::lock_guard lock(mutex_);
      changed_.notify_all();
    });
    std::unique_lock lock(mutex_);
    for (;;) {
      auto it = data_.find(key);
      if (it != data_.end()) return it->second;
      if (stop.stop_requested()) {
        throw Error(ErrorCode::aborted,
                    str_cat("store: the wait for key '", key, "' was interrupted"));
      }
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
      refuse_if_owned("add", key);
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
    refuse_if_owned("remove", key);
    auto it = data_.find(key);
    if (it == data_.end()) return false;
    data_.erase(it);
    return true;
  }

 private:
  const detail::KeyOwner* owner_of(std::string_view key) const {
    auto it = owners_.find(key);
    return it == owners_.end() ? nullptr : &it->second;
  }
  void refuse_if_owned(std::string_view op, std::string_view key) const {
    if (const detail::KeyOwner* owner = owner_of(key)) {
      throw Error(ErrorCode::mismatch, detail::plain_write_refusal(op, key, *owner));
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, std::vector<std::byte>, std::less<>> data_;
  std::map<std::string, detail::KeyOwner, std::less<>> owners_;
};

}  // namespace

std::shared_ptr<Store> make_hash_store() { return std::make_shared<HashStore>(); }

}  // namespace ringlet::bootstrap
