// SPDX-License-Identifier: Apache-2.0
// PrefixStore: gives each communicator its own key space inside a shared store.
// InterruptibleStore: get() that a stop interrupts, so that an abort ends a wait at once.
#include <algorithm>
#include <chrono>

#include "src/bootstrap/store.hpp"
#include "src/bootstrap/store_detail.hpp"
#include "src/common/check.hpp"

namespace ringlet::bootstrap {
namespace {

// Holds its base store alive; thread-safe as the base store is.
class PrefixStore final : public Store, public detail::StoreWrapper {
 public:
  PrefixStore(std::string prefix, std::shared_ptr<Store> base)
      : prefix_(std::move(prefix) + "/"), base_(std::move(base)) {}

  void set(std::string_view key, std::span<const std::byte> value) override {
    base_->set(full(key), value);
  }
  std::vector<std::byte> get(std::string_view key, Deadline deadline) override {
    return base_->get(full(key), deadline);
  }
  std::vector<std::byte> get_interruptible(std::string_view key, Deadline deadline,
                                           const std::stop_token& stop) override {
    return base_->get_interruptible(full(key), deadline, stop);
  }
  std::int64_t add(std::string_view key, std::int64_t delta) override {
    return base_->add(full(key), delta);
  }
  bool remove(std::string_view key) override { return base_->remove(full(key)); }
  bool claim(std::string_view key, std::span<const std::byte> token) override {
    return base_->claim(full(key), token);
  }
  void set_owned(std::string_view claim_key, std::span<const std::byte> token, std::string_view key,
                 std::span<const std::byte> value) override {
    base_->set_owned(full(claim_key), token, full(key), value);
  }
  void close_idle() override { base_->close_idle(); }
  std::string missing_key_note(std::string_view key) override {
    return base_->missing_key_note(full(key));
  }
  const Store& wrapped() const noexcept override { return *base_; }

 private:
  std::string full(std::string_view key) const { return str_cat(prefix_, key); }

  const std::string prefix_;
  const std::shared_ptr<Store> base_;
};

class InterruptibleStore final : public Store, public detail::StoreWrapper {
 public:
  InterruptibleStore(std::shared_ptr<Store> base, std::function<void()> check, std::stop_token stop)
      : base_(std::move(base)), check_(std::move(check)), stop_(std::move(stop)) {}

  void set(std::string_view key, std::span<const std::byte> value) override {
    base_->set(key, value);
  }
  // One wait in the base store, which the stop ends at once.
  std::vector<std::byte> get(std::string_view key, Deadline deadline) override {
    return get_interruptible(key, deadline, stop_);
  }
  std::vector<std::byte> get_interruptible(std::string_view key, Deadline deadline,
                                           const std::stop_token& stop) override {
    check_();
    try {
      return base_->get_interruptible(key, deadline, stop);
    } catch (const Error& e) {
      if (e.error_code() == ErrorCode::aborted) check_();  // the caller's words for the stop
      throw;
    }
  }
  std::int64_t add(std::string_view key, std::int64_t delta) override {
    return base_->add(key, delta);
  }
  bool remove(std::string_view key) override { return base_->remove(key); }
  bool claim(std::string_view key, std::span<const std::byte> token) override {
    return base_->claim(key, token);
  }
  void set_owned(std::string_view claim_key, std::span<const std::byte> token, std::string_view key,
                 std::span<const std::byte> value) override {
    base_->set_owned(claim_key, token, key, value);
  }
  void close_idle() override { base_->close_idle(); }
  std::string missing_key_note(std::string_view key) override {
    return base_->missing_key_note(key);
  }
  const Store& wrapped() const noexcept override { return *base_; }

 private:
  const std::shared_ptr<Store> base_;
  const std::function<void()> check_;
  const std::stop_token stop_;
};

}  // namespace

std::shared_ptr<Store> make_interruptible_store(std::shared_ptr<Store> base,
                                                std::function<void()> check, std::stop_token stop) {
  RINGLET_CHECK(base != nullptr, "make_interruptible_store: base store is null");
  return std::make_shared<InterruptibleStore>(std::move(base), std::move(check), std::move(stop));
}

std::shared_ptr<Store> make_prefix_store(std::string prefix, std::shared_ptr<Store> base) {
  RINGLET_CHECK(base != nullptr, "make_prefix_store: base store is null");
  return std::make_shared<PrefixStore>(std::move(prefix), std::move(base));
}

}  // namespace ringlet::bootstrap
