// SPDX-License-Identifier: Apache-2.0
// PrefixStore: gives each communicator its own key space inside a shared store.
// InterruptibleStore: get() in slices, so that an abort interrupts a wait.
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
  InterruptibleStore(std::shared_ptr<Store> base, std::function<void()> check)
      : base_(std::move(base)), check_(std::move(check)) {}

  void set(std::string_view key, std::span<const std::byte> value) override {
    base_->set(key, value);
  }
  std::vector<std::byte> get(std::string_view key, Deadline deadline) override {
    const auto start = Clock::now();
    for (;;) {
      check_();
      const Deadline slice = std::min<Deadline>(deadline, Clock::now() + kSlice);
      try {
        return base_->get(key, slice);
      } catch (const Error& e) {
        if (e.error_code() != ErrorCode::timeout) throw;
        if (Clock::now() < slice) throw;  // the store's own timeout, not the slice's end
      }
      if (Clock::now() >= deadline) {
        check_();
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - start).count();
        throw Error(ErrorCode::timeout, str_cat("store: key '", key, "' not set within ",
                                                ms < 0 ? 0 : ms, " ms", missing_key_note(key)));
      }
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
  static constexpr auto kSlice = std::chrono::milliseconds(200);
  const std::shared_ptr<Store> base_;
  const std::function<void()> check_;
};

}  // namespace

std::shared_ptr<Store> make_interruptible_store(std::shared_ptr<Store> base,
                                                std::function<void()> check) {
  RINGLET_CHECK(base != nullptr, "make_interruptible_store: base store is null");
  return std::make_shared<InterruptibleStore>(std::move(base), std::move(check));
}

std::shared_ptr<Store> make_prefix_store(std::string prefix, std::shared_ptr<Store> base) {
  RINGLET_CHECK(base != nullptr, "make_prefix_store: base store is null");
  return std::make_shared<PrefixStore>(std::move(prefix), std::move(base));
}

}  // namespace ringlet::bootstrap
