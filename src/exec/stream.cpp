// SPDX-License-Identifier: Apache-2.0
// StagedStreamCollective: NCCL's stream semantics for a collective on device memory, over the
// Device interface (CUDA, or the emulated device of the tests).
#include "src/exec/stream.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "src/common/log.hpp"
#include "src/common/str_cat.hpp"

namespace ringlet::exec {
namespace {

constexpr std::size_t kAlign = 256;

std::size_t round_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::uint32_t load_flag(std::uint32_t* flag) {
  return std::atomic_ref<std::uint32_t>(*flag).load(std::memory_order_acquire);
}

// Pinned staging memory is expensive to allocate: the freed blocks of each device are kept
// (at most kKept, the largest) for the next collective.
constexpr std::size_t kKept = 4;
struct StagingPool {
  std::mutex mutex;
  struct Block {
    Device* device;
    void* p;
    std::size_t bytes;
  };
  std::vector<Block> free;
};

StagingPool& pool() {
  static StagingPool* p = new StagingPool;  // outlives every communicator; never destroyed
  return *p;
}

std::byte* staging_acquire(Device& d, std::size_t bytes, std::size_t* got) {
  StagingPool& p = pool();
  {
    std::lock_guard lock(p.mutex);
    auto best = p.free.end();
    for (auto it = p.free.begin(); it != p.free.end(); ++it) {
      if (it->device == &d && it->bytes >= bytes &&
          (best == p.free.end() || it->bytes < best->bytes)) {
        best = it;
      }
    }
    if (best != p.free.end()) {
      auto* r = static_cast<std::byte*>(best->p);
      *got = best->bytes;
      p.free.erase(best);
      return r;
    }
  }
  *got = bytes;
  return static_cast<std::byte*>(d.host_alloc(bytes));
}

void staging_release(Device& d, std::byte* ptr, std::size_t bytes) noexcept {
  if (ptr == nullptr) return;
  StagingPool& p = pool();
  StagingPool::Block evicted{nullptr, nullptr, 0};
  {
    std::lock_guard lock(p.mutex);
    try {
      p.free.push_back({&d, ptr, bytes});
    } catch (...) {
      evicted = {&d, ptr, bytes};
    }
    std::size_t mine = 0;
    for (const auto& b : p.free) mine += b.device == &d ? 1 : 0;
    if (mine > kKept && evicted.p == nullptr) {
      auto smallest = p.free.end();
      for (auto it = p.free.begin(); it != p.free.end(); ++it) {
        if (it->device == &d && (smallest == p.free.end() || it->bytes < smallest->bytes)) {
          smallest = it;
        }
      }
      evicted = *smallest;
      p.free.erase(smallest);
    }
  }
  if (evicted.p != nullptr) evicted.device->host_free(evicted.p);
}

}  // namespace

// The flags of one stream of one device: kept for the life of the process (a stream handle
// that CUDA reuses for a new stream continues its counters, which is harmless).
struct StagedStreamCollective::StreamState {
  std::mutex mutex;
  std::uint32_t* flags = nullptr;    // [0] ready (device-written), [1] done (host-written)
  std::uint32_t next = 0;            // the last ticket given
  std::uint32_t done = 0;            // every ticket <= done is released
  std::set<std::uint32_t> released;  // released tickets above done + 1
};

namespace {

std::shared_ptr<StagedStreamCollective::StreamState> stream_state(Device& d, void* stream) {
  struct Registry {
    std::mutex mutex;
    std::map<std::pair<Device*, void*>, std::shared_ptr<StagedStreamCollective::StreamState>>
        states;
  };
  static auto* registry = new Registry;  // never destroyed: the device may read the flags
  std::lock_guard lock(registry->mutex);
  auto& s = registry->states[{&d, stream}];
  if (!s) {
    auto fresh = std::make_shared<StagedStreamCollective::StreamState>();
    fresh->flags = d.alloc_flags(2);
    s = std::move(fresh);
  }
  return s;
}

}  // namespace

Device& require_device(int rank, const char* what) {
  Device* d = device();
  if (d == nullptr) {
    throw Error(ErrorCode::invalid_argument,
                str_cat(what, ": rank ", rank,
                        " passed CUDA memory, which cannot be used: ", device_unavailable_reason()),
                {rank});
  }
  return *d;
}

StagedStreamCollective::StagedStreamCollective(Device& d, void* stream, int rank, const char* what,
                                               std::vector<Buffer> buffers)
    : device_(d), user_stream_(stream), rank_(rank), what_(what), buffers_(std::move(buffers)) {
  const int devices = device_.count();
  bool first = true;
  for (const Buffer& b : buffers_) {
    const Tensor& t = b.tensor;
    if (t.memory != MemoryKind::cuda) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat(what_, ": rank ", rank_,
                          " mixed host and CUDA memory in one collective; pass both on the "
                          "same kind"),
                  {rank_});
    }
    if (t.device < 0 || t.device >= devices) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat(what_, ": rank ", rank_, " passed CUDA device ", t.device,
                          "; this machine has ", devices, " (", device_.name(), ")"),
                  {rank_});
    }
    if (first) {
      ordinal_ = t.device;
      first = false;
    } else if (t.device != ordinal_) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat(what_, ": rank ", rank_, " passed tensors of CUDA devices ", ordinal_,
                          " and ", t.device, " in one collective"),
                  {rank_});
    }
  }
  // The outermost ranges: a tensor inside another (allgather's own block) shares its staging;
  // a partial overlap has no host equivalent.
  std::vector<Range> ranges;
  for (const Buffer& b : buffers_) {
    if (b.tensor.bytes() == 0 || b.tensor.data == nullptr) continue;
    ranges.push_back({static_cast<std::byte*>(b.tensor.data), b.tensor.bytes(), nullptr});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.device < b.device || (a.device == b.device && a.bytes > b.bytes);
  });
  for (const Range& r : ranges) {
    if (!roots_.empty()) {
      const Range& last = roots_.back();
      if (r.device + r.bytes <= last.device + last.bytes) continue;  // nested
      if (r.device < last.device + last.bytes) {
        throw Error(ErrorCode::invalid_argument,
                    str_cat(what_, ": rank ", rank_, " passed CUDA buffers that partly overlap"),
                    {rank_});
      }
    }
    roots_.push_back(r);
  }
  std::size_t total = 0;
  for (const Range& r : roots_) total += round_up(r.bytes);
  staging_ = staging_acquire(device_, total == 0 ? kAlign : total, &staging_bytes_);
  std::size_t off = 0;
  for (Range& r : roots_) {
    r.host = staging_ + off;
    off += round_up(r.bytes);
  }
  try {
    state_ = stream_state(device_, user_stream_);
    // Prior work of the stream done -> ready = k; later work waits for done >= k. Under the
    // stream's lock, so that tickets follow the order of the stream.
    std::lock_guard lock(state_->mutex);
    ticket_ = ++state_->next;
    device_.write_flag(user_stream_, &state_->flags[0], ticket_);
    device_.wait_flag(user_stream_, &state_->flags[1], ticket_);
  } catch (...) {
    release();
    staging_release(device_, staging_, staging_bytes_);
    staging_ = nullptr;
    throw;
  }
}

StagedStreamCollective::~StagedStreamCollective() {
  release();
  if (copy_stream_ != nullptr) {
    try {
      device_.synchronize(copy_stream_);
    } catch (...) {
    }
    device_.destroy_stream(copy_stream_);
  }
  staging_release(device_, staging_, staging_bytes_);
}

std::byte* StagedStreamCollective::host_of(const void* device_ptr) const {
  const auto* p = static_cast<const std::byte*>(device_ptr);
  for (const Range& r : roots_) {
    if (p >= r.device && p <= r.device + r.bytes) return r.host + (p - r.device);
  }
  return nullptr;
}

Tensor StagedStreamCollective::host(const Tensor& t) const {
  Tensor h = t;
  h.memory = MemoryKind::host;
  h.device = -1;
  if (t.data != nullptr && t.bytes() > 0) h.data = host_of(t.data);
  return h;
}

void StagedStreamCollective::before(Deadline deadline) {
  // The earlier work of the caller's stream: polled, not waited on by the runtime, so that the
  // deadline bounds it.
  int spins = 0;
  while (load_flag(&state_->flags[0]) < ticket_) {
    if (Clock::now() >= deadline) {
      throw Error(ErrorCode::timeout,
                  str_cat(what_, ": rank ", rank_,
                          ": the CUDA stream's work before the collective did not finish "
                          "by the deadline"),
                  {rank_});
    }
    if (++spins < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(spins < 1024 ? 20 : 200));
    }
  }
  device_.set_current(ordinal_);
  if (copy_stream_ == nullptr) copy_stream_ = device_.create_stream();
  for (const Buffer& b : buffers_) {
    if (!b.input || b.tensor.bytes() == 0 || b.tensor.data == nullptr) continue;
    device_.copy_async(host_of(b.tensor.data), b.tensor.data, b.tensor.bytes(), copy_stream_);
  }
  device_.synchronize(copy_stream_);
}

void StagedStreamCollective::after() {
  device_.set_current(ordinal_);
  if (copy_stream_ == nullptr) copy_stream_ = device_.create_stream();
  for (const Buffer& b : buffers_) {
    if (!b.output || b.tensor.bytes() == 0 || b.tensor.data == nullptr) continue;
    device_.copy_async(b.tensor.data, host_of(b.tensor.data), b.tensor.bytes(), copy_stream_);
  }
  device_.synchronize(copy_stream_);
  release();
}

void StagedStreamCollective::release() noexcept {
  if (released_ || !state_ || ticket_ == 0) return;
  released_ = true;
  StreamState& s = *state_;
  std::lock_guard lock(s.mutex);
  try {
    s.released.insert(ticket_);
  } catch (...) {
    // Out of memory for one set node: release in place (it may let an earlier collective's
    // waiters go early, which beats a stream that never moves again).
    s.done = std::max(s.done, ticket_);
  }
  while (!s.released.empty() && *s.released.begin() <= s.done + 1) {
    s.done = std::max(s.done, *s.released.begin());
    s.released.erase(s.released.begin());
  }
  std::atomic_ref<std::uint32_t>(s.flags[1]).store(s.done, std::memory_order_release);
}

}  // namespace ringlet::exec
