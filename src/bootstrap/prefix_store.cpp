// SPDX-License-Identifier: Apache-2.0
// PrefixStore: gives each communicator its own key space inside a shared store.
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
  void close_idle() override { base_->close_idle(); }
  const Store& wrapped() const noexcept override { return *base_; }

 private:
  std::string full(std::string_view key) const { return str_cat(prefix_, key); }

  const std::string prefix_;
  const std::shared_ptr<Store> base_;
};

}  // namespace

std::shared_ptr<Store> make_prefix_store(std::string prefix, std::shared_ptr<Store> base) {
  RINGLET_CHECK(base != nullptr, "make_prefix_store: base store is null");
  return std::make_shared<PrefixStore>(std::move(prefix), std::move(base));
}

}  // namespace ringlet::bootstrap
