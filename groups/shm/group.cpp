// SPDX-License-Identifier: Apache-2.0
// ShmGroup: segment set-up, flag waiting (spin, then futex) and the chunked collectives.
//
// Cost model for L local ranks and S bytes (large path, per rank): copy S in, reduce S/L over
// L slots, copy S out: about 3S read and 2S + S/L written, with one publish per stage and
// chunk. Chunks are double-buffered, so copying chunk k+1 in overlaps the wait for the
// other ranks' reductions of chunk k. Small messages (<= kSmallBytes) take one publish per
// rank: each rank copies its data into its slot and reduces all L slots itself.
#include "groups/shm/group.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <new>
#include <span>
#include <string>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "src/common/check.hpp"
#include "src/common/log.hpp"
#include "src/common/partition.hpp"
#include "src/common/str_cat.hpp"
#include "src/common/unique_fd.hpp"

namespace ringlet::groups::shm {
namespace {

using Word = std::atomic<std::uint32_t>;
static_assert(Word::is_always_lock_free && sizeof(Word) == sizeof(std::uint32_t));

constexpr std::uint64_t kMagic = 0x72696e676c73686dULL;  // "ringlshm"
constexpr std::size_t kAlign = 128;  // two cache lines: adjacent-line prefetch stays private
constexpr auto kSleepSlice = std::chrono::milliseconds(50);
constexpr auto kPidCheckAfter = std::chrono::seconds(1);

// One round of a spin wait: tells the core that this is a busy loop.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Which step of the group a call record belongs to: one of the group's own collectives, or
// `agree` for a collective of the communicator that runs over another path.
enum class Stage : std::uint8_t {
  allreduce = 1,
  reduce_scatter,
  allgather,
  broadcast,
  barrier,
  agree
};

const char* stage_name(Stage s) {
  switch (s) {
    case Stage::allreduce:
      return "allreduce";
    case Stage::reduce_scatter:
      return "reduce_scatter";
    case Stage::allgather:
      return "allgather";
    case Stage::broadcast:
      return "broadcast";
    case Stage::barrier:
      return "barrier";
    case Stage::agree:
      return "agree";
  }
  return "?";
}

// What a rank is calling; compared across local ranks at the start of every call: the
// communicator's collective, and the step of it that this group runs with its own arguments
// (the hierarchical allreduce calls reduce_scatter once per pipeline chunk under one
// fingerprint). No padding, so that records compare with memcmp.
struct CallRecord {
  WireFingerprint fp{};     // the communicator's collective (encode())
  std::uint64_t count = 0;  // the step's count (bytes for broadcast)
  std::uint32_t call = 0;   // the group's own call counter (compared for equality: may wrap)
  std::int32_t root = -1;   // broadcast: the local root
  Stage stage = Stage::barrier;
  DataType type = DataType::uint8;
  ReduceOp op = ReduceOp::sum;
  std::uint8_t reserved[5] = {};

  // "reduce_scatter(count=4096, float32, sum)": the step, for messages.
  std::string describe_step() const {
    switch (stage) {
      case Stage::allreduce:
      case Stage::reduce_scatter:
        return str_cat(stage_name(stage), "(count=", count, ", ", to_string(type), ", ",
                       to_string(op), ")");
      case Stage::allgather:
        return str_cat(stage_name(stage), "(count=", count, ", ", to_string(type), ")");
      case Stage::broadcast:
        return str_cat(stage_name(stage), "(bytes=", count, ", root=local rank ", root, ")");
      case Stage::barrier:
      case Stage::agree:
        break;
    }
    return str_cat(stage_name(stage), "()");
  }
};
static_assert(sizeof(DataType) == 1 && sizeof(ReduceOp) == 1);
static_assert(sizeof(CallRecord) == sizeof(WireFingerprint) + 24);

// One per local rank, written only by that rank (except `waiters`, which its waiters count).
struct alignas(kAlign) RankControl {
  // Progress counter: incremented once per published stage; also the futex word.
  Word progress{0};
  // How many threads sleep in FUTEX_WAIT on `progress`; the owner wakes only when non-zero.
  Word waiters{0};
  // The records of the calls with odd and even call numbers: a rank can be at most one call
  // ahead of the slowest local rank, so two are enough. They share the first two cache lines
  // with `progress`, which every waiter reads anyway.
  std::array<CallRecord, 2> calls{};
  std::int32_t pid = 0;  // read only by the liveness check
  std::uint64_t pid_namespace = 0;
};
static_assert(offsetof(RankControl, pid) <= kAlign);

struct alignas(kAlign) Header {
  std::uint64_t magic = 0;
  std::uint64_t total_bytes = 0;
  std::uint64_t chunk_bytes = 0;
  std::uint32_t local_size = 0;
  Word mapped{0};    // ranks that have mapped the segment; futex word
  Word unlinked{0};  // 1 once local rank 0 has unlinked the name; futex word
  // 0, or the first failure: ErrorCode << 28 | (1 + the local rank it is about: the one lost,
  // or the one that failed) << 14 | (1 + the local rank that reported it).
  Word failed{0};
  // 0, or 1 + the global rank that was lost off this node, when a local rank found a peer of
  // another node lost (written before `failed`, which then names the reporter).
  Word lost_remote{0};
};

long futex(Word* word, int op, std::uint32_t value, const timespec* timeout) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), op, value, timeout, nullptr,
                   0);
}

void futex_wake_all(Word* word) { futex(word, FUTEX_WAKE, INT_MAX, nullptr); }

// Sleeps while *word == value, at most `ms` milliseconds (shared, not PRIVATE: cross-process).
void futex_wait(Word* word, std::uint32_t value, int ms) {
  timespec ts{ms / 1000, static_cast<long>(ms % 1000) * 1000000L};
  futex(word, FUTEX_WAIT, value, &ts);
}

constexpr int kMaxLocalRanks = (1 << 14) - 1;  // what the `failed` word can name

std::uint32_t encode_failure(ErrorCode code, int about, int reporter) {
  return (static_cast<std::uint32_t>(code) << 28) | (static_cast<std::uint32_t>(about + 1) << 14) |
         static_cast<std::uint32_t>(reporter + 1);
}

// a >= b for counters that may wrap.
bool reached(std::uint32_t a, std::uint32_t b) { return static_cast<std::int32_t>(a - b) >= 0; }

std::uint64_t pid_namespace_of_self() {
  char buf[64] = {};
  ssize_t n = ::readlink("/proc/self/ns/pid", buf, sizeof(buf) - 1);
  if (n <= 0) return 0;
  const char* p = std::strchr(buf, '[');
  return p != nullptr ? std::strtoull(p + 1, nullptr, 10) : 0;
}

// True when `pid` no longer runs: gone (ESRCH) or a zombie not yet reaped.
bool process_dead(std::int32_t pid) {
  if (::kill(pid, 0) == -1 && errno == ESRCH) return true;
  std::ifstream stat(str_cat("/proc/", pid, "/stat"));
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return false;
  char state = line[close + 2];
  return state == 'Z' || state == 'X';
}

std::size_t align_up(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }

// Shard j of `count` elements among `size` local ranks, as [begin, end).
std::pair<std::size_t, std::size_t> shard(std::size_t count, int size, int j) {
  const auto l = static_cast<std::size_t>(size), i = static_cast<std::size_t>(j);
  return {split_begin(count, l, i), split_begin(count, l, i + 1)};
}

// The mapping of the segment; unmaps on destruction.
struct Mapping {
  void* base = MAP_FAILED;
  std::size_t bytes = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (base != MAP_FAILED) ::munmap(base, bytes);
  }
};

// Unlinks a segment name on destruction unless released (local rank 0's error paths).
struct NameGuard {
  std::string name;
  ~NameGuard() {
    if (!name.empty()) ::shm_unlink(name.c_str());
  }
};

// Byte offsets of the segment's parts; the same on every local rank for equal options.
struct Layout {
  std::size_t controls = 0, small = 0, large = 0, total = 0;
  Layout(int size, std::size_t small_bytes, std::size_t chunk_bytes) {
    const auto l = static_cast<std::size_t>(size);
    controls = align_up(align_up(sizeof(Header), kAlign), 4096);
    small = controls + align_up(sizeof(RankControl) * l, 4096);
    large = small + 2 * l * small_bytes;
    total = large + 2 * l * chunk_bytes;
  }
};

}  // namespace

class ShmGroup::Impl {
 public:
  Impl(const ShmOptions& options, Deadline deadline);

  engine::Task allreduce(void* data, std::size_t count, DataType type, ReduceOp op,
                         const exec::Executor& exec, const Fingerprint& fp, engine::Driver& d);
  engine::Task reduce_scatter(void* data, std::size_t count, DataType type, ReduceOp op,
                              const exec::Executor& exec, const Fingerprint& fp, engine::Driver& d);
  engine::Task allgather(void* data, std::size_t count, DataType type, const exec::Executor& exec,
                         const Fingerprint& fp, engine::Driver& d);
  engine::Task broadcast(void* data, std::size_t bytes, int root, const exec::Executor& exec,
                         const Fingerprint& fp, engine::Driver& d);
  engine::Task barrier(const Fingerprint& fp, engine::Driver& d);
  engine::Task agree(const Fingerprint& fp, engine::Driver& d);
  void mark_failed(ErrorCode code) noexcept { mark_failed_about(code, me_); }
  void mark_lost(ErrorCode code, int lost) noexcept {
    for (int j = 0; j < size_; ++j) {
      if (j != me_ && global(j) == lost) return mark_failed_about(code, j);
    }
    if (header_ != nullptr && lost >= 0 && header_->failed.load(std::memory_order_acquire) == 0) {
      std::uint32_t none = 0;
      header_->lost_remote.compare_exchange_strong(none, static_cast<std::uint32_t>(lost) + 1);
    }
    mark_failed_about(code, me_);
  }
  // Marks the group failed by a failure of local rank `about` (this one, or a peer it found
  // dead), so that every local rank names that one.
  void mark_failed_about(ErrorCode code, int about) noexcept;
  void interrupt() noexcept {
    if (size_ == 1) return;
    for (int j = 0; j < size_; ++j) futex_wake_all(&control(j).progress);
  }

  int rank() const { return me_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }

 private:
  // Layout of one call over `count` elements, chunked per shard.
  struct Plan {
    std::size_t count = 0, esize = 0, piece_elems = 0, chunks = 0;
    int size = 1;
    // Elements of shard j in chunk k: [first, first + n) of the caller's buffer.
    std::pair<std::size_t, std::size_t> piece(int j, std::size_t k) const {
      auto [begin, end] = shard(count, size, j);
      std::size_t len = end - begin, lo = std::min(len, k * piece_elems);
      return {begin + lo, std::min(len, lo + piece_elems) - lo};
    }
  };

  // Set-up, in create() order: local rank 0 creates the segment, the others open it; all map
  // it; local rank 0 initialises the header, the others check it; then all register, and
  // local rank 0 unlinks the name once every rank has mapped it.
  UniqueFd create_segment(std::size_t total);
  UniqueFd open_segment(bootstrap::Store& store, std::size_t total, Deadline deadline);
  void map_segment(const UniqueFd& fd, const Layout& layout);
  void init_header(std::size_t total);
  void check_header() const;
  void publish_and_unlink(bootstrap::Store& store, Deadline deadline);
  // Waits until `word` reaches `value` during set-up.
  void wait_setup(Word& word, std::uint32_t value, const char* what, Deadline deadline);

  RankControl& control(int j) const { return controls_[j]; }
  std::byte* small_slot(std::size_t parity, int j) const {
    return small_ + (parity * size_ + j) * small_bytes_;
  }
  std::byte* large_slot(std::size_t buf, int j) const {
    return large_ + (buf * size_ + j) * chunk_bytes_;
  }
  std::byte* piece_ptr(std::size_t buf, int slot, int j) const {
    return large_slot(buf, slot) + j * piece_bytes_;
  }
  int global(int j) const { return local_to_global_[j]; }
  std::string who(int j) const { return str_cat("local rank ", j, " (rank ", global(j), ")"); }
  // The call in progress, for messages: "allreduce(count=4, float32, sum)", "reduce_scatter
  // of allreduce(...)", "agreement on broadcast(...)".
  std::string current() const;

  Plan plan(std::size_t count, DataType type) const;
  // Starts one call of the group: checks the state and records (stage, fp, call number);
  // false when there is nothing to do (one local rank). On failure it marks the group failed,
  // as fail_call() does.
  bool begin_call(Stage stage, const Fingerprint& fp, std::size_t count, DataType type, ReduceOp op,
                  int root);
  // A call failed: the group is unusable, and the other local ranks are told (so that none
  // waits for this one) unless the ranks disagreed.
  void fail_call(const Error& e) noexcept;
  void publish();
  // The awaitable of a wait for local ranks' progress counters (below).
  class Wait;
  // co_await: local rank j reaches `target`; every other local rank reaches `target`.
  Wait wait_rank(int j, std::uint32_t target, engine::Driver& d);
  Wait wait_all(std::uint32_t target, engine::Driver& d);
  // After wait_all for the first stage of a call: compares every rank's call record.
  void check_arrival() const;
  // The blocking wait's two phases: spin, then yield (true once j reached `target`); then
  // sleep on j's counter in bounded slices that check abort, failure, liveness, deadline.
  bool spin_rank(int j, std::uint32_t target) const;
  void sleep_rank(int j, std::uint32_t target, Deadline deadline);
  [[noreturn]] void throw_mismatch(int j, const CallRecord& theirs, const CallRecord& ref) const;
  void check_abort_and_failure();
  [[noreturn]] void throw_timeout(std::uint32_t target);
  void check_alive(int j);

  // The small path of allreduce and reduce_scatter, around the wait for every rank's
  // arrival: small_in() copies the whole buffer into this rank's slot and publishes; then
  // small_fold() folds elements [first, first + n) of all slots itself, in local-rank order.
  // Plain calls: no coroutine frame of their own on the latency path.
  void small_in(const std::byte* data, std::size_t total, const exec::Executor& exec);
  void small_fold(std::byte* data, std::size_t first, std::size_t n, std::size_t esize,
                  const exec::Reducer& reduce) const;
  engine::Task allreduce_large(std::byte* data, Plan p, exec::Reducer reduce,
                               const exec::Executor& exec, engine::Driver& d);
  engine::Task reduce_scatter_large(std::byte* data, Plan p, exec::Reducer reduce,
                                    const exec::Executor& exec, engine::Driver& d);
  engine::Task allgather_large(std::byte* data, Plan p, const exec::Executor& exec,
                               engine::Driver& d);
  engine::Task broadcast_large(std::byte* data, std::size_t bytes, int root,
                               const exec::Executor& exec, engine::Driver& d);
  // Copies chunk k's pieces into this rank's slot; skip_own leaves out the piece this rank
  // reduces itself (it then reads it from the caller's buffer).
  engine::Task copy_in(std::byte* data, const Plan& p, std::size_t k, bool skip_own,
                       const exec::Executor& exec, engine::Driver& d);
  // out = piece j of slots 0..L-1 folded in local-rank order; `own`, if not null, stands in
  // for this rank's slot.
  void reduce_piece(std::byte* out, std::size_t buf, int j, std::size_t n, const std::byte* own,
                    const exec::Reducer& reduce);

  int me_ = 0;
  int size_ = 1;
  int self_ = 0;  // global rank, for set-up messages
  std::vector<int> local_to_global_;
  const std::atomic<bool>* abort_flag_ = nullptr;
  std::uint64_t job_id_ = 0;
  int spin_ = 0;      // pause rounds before yielding
  int yields_ = 0;    // yield rounds before sleeping
  std::string key_;   // the store key of the segment name
  std::string name_;  // the segment's name
  Mapping map_;
  Header* header_ = nullptr;
  RankControl* controls_ = nullptr;
  std::byte* small_ = nullptr;
  std::byte* large_ = nullptr;
  std::size_t small_bytes_ = ShmGroup::kSmallBytes;
  std::size_t chunk_bytes_ = 0;
  std::size_t piece_bytes_ = 0;  // chunk_bytes_ / size_, a multiple of 64

  std::uint32_t progress_ = 0;    // this rank's own counter (mirrors control(me_).progress)
  std::uint64_t call_seq_ = 0;    // calls made, this one included
  std::uint64_t large_used_ = 0;  // large-buffer uses so far; parity picks the buffer
  std::array<std::uint32_t, 2> large_free_{};  // all ranks past this: buffer may be rewritten
  std::array<std::uint32_t, 2> stage_{};       // scratch: targets of the two chunks in flight
  bool broken_ = false;
  ErrorCode broken_code_ = ErrorCode::peer_lost;
  Stage current_stage_ = Stage::barrier;
  Fingerprint current_fp_{};
};

ShmGroup::Impl::Impl(const ShmOptions& o, Deadline deadline)
    : me_(o.local_rank),
      size_(o.local_size),
      self_(o.job.rank),
      abort_flag_(o.job.abort_flag),
      job_id_(o.job.job_id),
      spin_(o.oversubscribed ? 0 : std::max(0, o.spin)),
      yields_(std::max(0, o.yields)) {
  RINGLET_CHECK(size_ >= 1 && me_ >= 0 && me_ < size_, "shm: local rank ", me_,
                " out of range for local size ", size_);
  RINGLET_CHECK(size_ <= kMaxLocalRanks, "shm: ", size_, " local ranks; at most ", kMaxLocalRanks);
  local_to_global_ = o.local_to_global;
  if (local_to_global_.empty()) {
    for (int j = 0; j < size_; ++j) local_to_global_.push_back(j);
  }
  RINGLET_CHECK(static_cast<int>(local_to_global_.size()) == size_, "shm: local_to_global has ",
                local_to_global_.size(), " entries, expected ", size_);
  if (size_ == 1) return;
  RINGLET_CHECK(o.store != nullptr, "shm: a store is needed for ", size_, " local ranks");
  chunk_bytes_ = o.chunk_bytes != 0 ? o.chunk_bytes : ShmGroup::kDefaultChunkBytes;
  piece_bytes_ = chunk_bytes_ / static_cast<std::size_t>(size_) / 64 * 64;
  RINGLET_CHECK(piece_bytes_ >= 64, "shm: chunk_bytes ", chunk_bytes_, " is below 64 x ", size_,
                " local ranks");
  chunk_bytes_ = piece_bytes_ * static_cast<std::size_t>(size_);

  const Layout layout(size_, small_bytes_, chunk_bytes_);
  key_ = str_cat("shm/", global(0), "/segment");
  NameGuard guard;  // local rank 0: unlinks the name if set-up fails before the unlink
  UniqueFd fd;
  if (me_ == 0) {
    try {
      fd = create_segment(layout.total);
    } catch (const Error& e) {
      // The other local ranks wait for the segment's name: give them the reason instead,
      // so that they fail now with it rather than at their deadline.
      try {
        const std::string reason = "!" + e.cause();
        o.store->set(key_, std::as_bytes(std::span(reason.data(), reason.size())));
      } catch (...) {
      }
      throw;
    }
    guard.name = name_;
  } else {
    fd = open_segment(*o.store, layout.total, deadline);
  }
  map_segment(fd, layout);
  fd.reset();
  if (me_ == 0) {
    init_header(layout.total);
  } else {
    check_header();
  }
  publish_and_unlink(*o.store, deadline);
  guard.name.clear();
  RINGLET_LOG(info, "shm: local rank ", me_, "/", size_, " mapped ", name_, " (", layout.total,
              " bytes, chunk ", chunk_bytes_, ")");
}

UniqueFd ShmGroup::Impl::create_segment(std::size_t total) {
  name_ = str_cat("/ringlet-", std::hex, job_id_, std::dec, "-", global(0), "-", ::getpid());
  UniqueFd fd(::shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600));
  if (!fd) detail::throw_errno(str_cat("shm_open(", name_, ")"));
  if (detail::retry_eintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(total)); }) != 0) {
    const int err = errno;
    ::shm_unlink(name_.c_str());
    detail::throw_errno(str_cat("ftruncate(", name_, ", ", total, ")"), err);
  }
  // ftruncate reserves no tmpfs pages: on a small or full /dev/shm the first touch of a page
  // past its limit would kill the rank with SIGBUS, mid-collective. Reserve them now.
  int rc = 0;
  do {
    rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(total));
  } while (rc == EINTR);
  if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
    ::shm_unlink(name_.c_str());
    if (rc == ENOSPC || rc == EFBIG) {
      throw Error(ErrorCode::transport,
                  str_cat("shm: /dev/shm has no room for the ", total, "-byte segment ", name_,
                          " of local rank 0 (rank ", self_,
                          "): the node's shared memory is too small or full; give it more "
                          "(Docker: --shm-size, Kubernetes: an emptyDir with medium Memory) or "
                          "set RINGLET_SHM=0 on every rank to use TCP within the node"),
                  {self_});
    }
    detail::throw_errno(str_cat("posix_fallocate(", name_, ", ", total, ")"), rc);
  }
  return fd;
}

UniqueFd ShmGroup::Impl::open_segment(bootstrap::Store& store, std::size_t total,
                                      Deadline deadline) {
  auto value = store.get(key_, deadline);
  name_.assign(reinterpret_cast<const char*>(value.data()), value.size());
  if (!name_.empty() && name_[0] == '!') {
    throw Error(ErrorCode::transport,
                str_cat("shm: local rank 0 (rank ", global(0),
                        ") could not create the segment: ", name_.substr(1)),
                {global(0)});
  }
  // Only the name this job's local rank 0 makes: "/ringlet-<job>-<g0>-<pid>".
  const std::string expected =
      str_cat("/ringlet-", std::hex, job_id_, std::dec, "-", global(0), "-");
  const bool well_formed = name_.size() > expected.size() && name_.size() <= expected.size() + 10 &&
                           name_.compare(0, expected.size(), expected) == 0 &&
                           std::all_of(name_.begin() + static_cast<std::ptrdiff_t>(expected.size()),
                                       name_.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  if (!well_formed) {
    const std::string shown = name_.substr(0, 80);
    throw Error(
        ErrorCode::transport,
        str_cat("shm: the store names segment '", shown, "' for local rank ", me_, " (rank ", self_,
                "), not one of this job's (", expected, "<pid>); refusing it"),
        {self_});
  }
  UniqueFd fd(::shm_open(name_.c_str(), O_RDWR | O_NOFOLLOW, 0));
  if (!fd) detail::throw_errno(str_cat("shm_open(", name_, ") by local rank ", me_));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) detail::throw_errno("fstat(" + name_ + ")");
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0 || !S_ISREG(st.st_mode)) {
    throw Error(
        ErrorCode::transport,
        str_cat("shm: segment ", name_, " is owned by uid ", st.st_uid, " with mode 0", std::oct,
                st.st_mode & 07777, std::dec, "; local rank ", me_, " (rank ", self_, ", uid ",
                ::geteuid(), ") accepts only its own user's segment with mode 0600"),
        {self_});
  }
  if (static_cast<std::size_t>(st.st_size) != total) {
    throw Error(ErrorCode::mismatch,
                str_cat("shm: segment ", name_, " has ", st.st_size, " bytes, local rank ", me_,
                        " (rank ", self_, ") expected ", total,
                        " (local ranks disagree on local_size or chunk_bytes)"));
  }
  return fd;
}

void ShmGroup::Impl::map_segment(const UniqueFd& fd, const Layout& layout) {
  // MAP_POPULATE pre-faults every page now (a first touch costs ~10 us per page here).
  map_.base =
      ::mmap(nullptr, layout.total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd.get(), 0);
  if (map_.base == MAP_FAILED) detail::throw_errno("mmap(" + name_ + ")");
  map_.bytes = layout.total;
  auto* base = static_cast<std::byte*>(map_.base);
  header_ = reinterpret_cast<Header*>(base);
  controls_ = reinterpret_cast<RankControl*>(base + layout.controls);
  small_ = base + layout.small;
  large_ = base + layout.large;
}

void ShmGroup::Impl::init_header(std::size_t total) {
  header_ = new (map_.base) Header();
  for (int j = 0; j < size_; ++j) new (&controls_[j]) RankControl();
  header_->total_bytes = total;
  header_->chunk_bytes = chunk_bytes_;
  header_->local_size = static_cast<std::uint32_t>(size_);
  header_->magic = kMagic;
}

void ShmGroup::Impl::check_header() const {
  if (header_->magic != kMagic || header_->local_size != static_cast<std::uint32_t>(size_) ||
      header_->chunk_bytes != chunk_bytes_) {
    throw Error(ErrorCode::mismatch,
                str_cat("shm: segment ", name_, " was created for ", header_->local_size,
                        " local ranks and chunk ", header_->chunk_bytes, " bytes; local rank ", me_,
                        " expected ", size_, " and ", chunk_bytes_));
  }
}

void ShmGroup::Impl::publish_and_unlink(bootstrap::Store& store, Deadline deadline) {
  control(me_).pid = static_cast<std::int32_t>(::getpid());
  control(me_).pid_namespace = pid_namespace_of_self();
  header_->mapped.fetch_add(1, std::memory_order_seq_cst);
  if (me_ != 0) {
    futex_wake_all(&header_->mapped);
    wait_setup(header_->unlinked, 1, "waiting for the unlink", deadline);
    return;
  }
  store.set(key_, std::as_bytes(std::span(name_.data(), name_.size())));
  // Unlink as soon as every local rank has mapped it: from now on nothing is left behind.
  wait_setup(header_->mapped, static_cast<std::uint32_t>(size_), "waiting for the mappings",
             deadline);
  store.remove(key_);
  ::shm_unlink(name_.c_str());
  header_->unlinked.store(1, std::memory_order_release);
  futex_wake_all(&header_->unlinked);
}

void ShmGroup::Impl::wait_setup(Word& word, std::uint32_t value, const char* what,
                                Deadline deadline) {
  for (;;) {
    std::uint32_t v = word.load(std::memory_order_acquire);
    if (v >= value) return;
    if (abort_flag_ != nullptr && abort_flag_->load(std::memory_order_relaxed)) {
      throw Error(ErrorCode::aborted, str_cat("shm: aborted while ", what));
    }
    if (Clock::now() >= deadline) {
      throw Error(ErrorCode::timeout,
                  str_cat("shm: timed out while ", what, " of segment ", name_, " (", v, " of ",
                          value, ") at local rank ", me_, " (rank ", self_, ")"));
    }
    futex_wait(&word, v, ms_until(deadline, 50));
  }
}

ShmGroup::Impl::Plan ShmGroup::Impl::plan(std::size_t count, DataType type) const {
  Plan p;
  p.count = count;
  p.size = size_;
  p.esize = ringlet::size_of(type);
  p.piece_elems = piece_bytes_ / p.esize;
  auto [begin, end] = shard(count, size_, 0);  // shard 0 is never shorter than the others
  p.chunks = (end - begin + p.piece_elems - 1) / p.piece_elems;
  return p;
}

std::string ShmGroup::Impl::current() const {
  if (current_stage_ == Stage::agree) return str_cat("agreement on ", describe(current_fp_));
  if (stage_name(current_stage_) == to_string(current_fp_.kind)) return describe(current_fp_);
  return str_cat(stage_name(current_stage_), " of ", describe(current_fp_));
}

void ShmGroup::Impl::check_abort_and_failure() {
  if (abort_flag_ != nullptr && abort_flag_->load(std::memory_order_relaxed)) {
    throw Error(ErrorCode::aborted, str_cat("shm: ", current(), " aborted at ", who(me_)));
  }
  std::uint32_t f = header_->failed.load(std::memory_order_acquire);
  if (f != 0 && static_cast<int>(f & 0x3fff) != me_ + 1) {
    const int reporter = static_cast<int>(f & 0x3fff) - 1;
    const int j = static_cast<int>((f >> 14) & 0x3fff) - 1;
    // Read from memory every local rank can write: checked before it indexes anything.
    if (reporter < 0 || reporter >= size_ || j < 0 || j >= size_) {
      throw Error(ErrorCode::transport,
                  str_cat("shm: the segment's failure word 0x", std::hex, f, std::dec,
                          " names no local rank of ", size_, "; ", current(), " at ", who(me_),
                          " cannot complete (the segment was corrupted)"),
                  {self_});
    }
    // The peer's own code travels (a peer that timed out waited for someone else, and the
    // same deadline applies here); an aborted peer is a lost peer.
    std::uint32_t code = f >> 28;
    ErrorCode ec = code >= static_cast<std::uint32_t>(ErrorCode::mismatch) &&
                           code <= static_cast<std::uint32_t>(ErrorCode::transport)
                       ? static_cast<ErrorCode>(code)
                       : ErrorCode::peer_lost;
    const char* what = ec == ErrorCode::timeout    ? " timed out"
                       : ec == ErrorCode::mismatch ? " found ranks disagreeing"
                                                   : " failed";
    const std::uint32_t remote = header_->lost_remote.load(std::memory_order_acquire);
    if (j == reporter && ec == ErrorCode::peer_lost && remote > 0) {
      // A rank of another node was lost; the local rank that found it reported it here.
      const int lost = static_cast<int>(remote - 1);
      throw Error(ec,
                  str_cat("shm: rank ", lost, " (another node) was lost (noticed by ",
                          who(reporter), "); ", current(), " at ", who(me_), " cannot complete"),
                  {lost, global(reporter)});
    }
    const std::string noticed =
        j != reporter ? str_cat(" (noticed by ", who(reporter), ")") : std::string();
    throw Error(
        ec,
        str_cat("shm: ", who(j), j != reporter && ec == ErrorCode::peer_lost ? " was lost" : what,
                noticed, "; ", current(), " at ", who(me_), " cannot complete"),
        {global(j)});
  }
}

void ShmGroup::Impl::check_alive(int j) {
  const RankControl& c = control(j);
  if (c.pid <= 0 || c.pid_namespace == 0 || c.pid_namespace != control(me_).pid_namespace) return;
  if (process_dead(c.pid)) {
    throw Error(ErrorCode::peer_lost,
                str_cat("shm: ", who(j), ", pid ", c.pid, ", died during ", current()),
                {global(j)});
  }
}

void ShmGroup::Impl::throw_timeout(std::uint32_t target) {
  std::string names;
  std::vector<int> ranks;
  for (int j = 0; j < size_; ++j) {
    if (j == me_ || reached(control(j).progress.load(std::memory_order_acquire), target)) continue;
    names += (names.empty() ? "" : ", ") + who(j);
    ranks.push_back(global(j));
  }
  throw Error(ErrorCode::timeout,
              str_cat("shm: ", current(), " at ", who(me_), " timed out waiting for ", names),
              ranks);
}

void ShmGroup::Impl::publish() {
  RankControl& c = control(me_);
  c.progress.store(++progress_, std::memory_order_seq_cst);
  if (c.waiters.load(std::memory_order_seq_cst) != 0) futex_wake_all(&c.progress);
}

bool ShmGroup::Impl::spin_rank(int j, std::uint32_t target) const {
  const RankControl& c = control(j);
  if (reached(c.progress.load(std::memory_order_acquire), target)) return true;
  // Spin briefly: the peer is usually a few microseconds away.
  for (int i = spin_; i > 0; --i) {
    cpu_relax();
    if (reached(c.progress.load(std::memory_order_acquire), target)) return true;
  }
  for (int i = yields_; i > 0; --i) {
    ::sched_yield();
    if (reached(c.progress.load(std::memory_order_acquire), target)) return true;
  }
  return false;
}

void ShmGroup::Impl::sleep_rank(int j, std::uint32_t target, Deadline deadline) {
  RankControl& c = control(j);
  const auto start = Clock::now();
  auto next_pid_check = start + kPidCheckAfter;
  for (;;) {
    check_abort_and_failure();
    const auto now = Clock::now();
    if (now >= deadline) throw_timeout(target);
    if (now >= next_pid_check) {
      check_alive(j);
      next_pid_check = now + kPidCheckAfter;
    }
    c.waiters.fetch_add(1, std::memory_order_seq_cst);
    std::uint32_t v = c.progress.load(std::memory_order_seq_cst);
    if (!reached(v, target)) {
      auto slice = std::min<Deadline>(deadline, now + kSleepSlice);
      futex_wait(&c.progress, v, ms_until(slice, 1000));
    }
    c.waiters.fetch_sub(1, std::memory_order_seq_cst);
    if (reached(c.progress.load(std::memory_order_acquire), target)) return;
  }
}

// co_await of a wait for local ranks [next_, end_) (this rank skipped) to reach `target`.
// Blocking driver: each rank in turn as the group always waited (spin_rank, then
// sleep_rank), recording the rank in the driver's record only once it has to sleep.
// Polling driver: the counters are checked once; if one has not reached the target the task
// suspends with this object as the driver's Pollable, which the engine polls (abort, the
// failure word, the deadline, the peer's liveness after a second) and sleeps on.
class ShmGroup::Impl::Wait final : public engine::PollableAwait {
 public:
  Wait(Impl& g, engine::Driver& d, int first, int end, std::uint32_t target) noexcept
      : PollableAwait(d), g_(g), next_(first), end_(end), target_(target) {}
  Wait(const Wait&) = delete;
  Wait& operator=(const Wait&) = delete;
  ~Wait() = default;

  bool await_ready() {
    if (d_.blocking) {
      for (int j = next_; j < end_; ++j) {
        if (j == g_.me_ || g_.spin_rank(j, target_)) continue;
        d_.note_wait_rank(g_.global(j), d_.record != nullptr ? engine::coarse_ns() : 0);
        g_.sleep_rank(j, target_, d_.deadline);
        d_.note_done();
      }
      return true;
    }
    if (skip_reached()) return true;
    next_pid_check_ = Clock::now() + kPidCheckAfter;
    note();
    return false;
  }

  bool poll() override {
    if (skip_reached()) return true;
    g_.check_abort_and_failure();
    const auto now = Clock::now();
    if (now >= d_.deadline) g_.throw_timeout(target_);
    if (now >= next_pid_check_) {
      g_.check_alive(next_);
      next_pid_check_ = now + kPidCheckAfter;
    }
    if (next_ != noted_) note();
    return false;
  }
  void sleep(std::chrono::microseconds timeout) noexcept override {
    RankControl& c = g_.control(next_);
    // The blocking wait's phases once per rank awaited: spin, then yield (with more ranks
    // than cores the peer needs this core to get there), then sleep on its counter.
    if (spun_for_ != next_) {
      spun_for_ = next_;
      if (g_.spin_rank(next_, target_)) return;
    }
    // As sleep_rank(): counted as a waiter, so that the peer's publish wakes this sleep;
    // interrupt() and a failure report wake every counter's waiters.
    c.waiters.fetch_add(1, std::memory_order_seq_cst);
    const std::uint32_t v = c.progress.load(std::memory_order_seq_cst);
    if (!reached(v, target_)) {
      const auto us = std::max<long long>(timeout.count(), 1);
      timespec ts{static_cast<time_t>(us / 1000000), static_cast<long>(us % 1000000) * 1000L};
      futex(&c.progress, FUTEX_WAIT, v, &ts);
    }
    c.waiters.fetch_sub(1, std::memory_order_seq_cst);
  }

 private:
  // Moves past the ranks that have reached the target; true when none is left.
  bool skip_reached() noexcept {
    while (next_ < end_ &&
           (next_ == g_.me_ ||
            reached(g_.control(next_).progress.load(std::memory_order_acquire), target_))) {
      ++next_;
    }
    return next_ >= end_;
  }
  void note() noexcept {
    noted_ = next_;
    const long long now = engine::coarse_ns();
    d_.waiting_since_ns = now;
    d_.note_wait_rank(g_.global(next_), now);
  }

  Impl& g_;
  int next_;
  int end_;
  std::uint32_t target_;
  int noted_ = -1;
  int spun_for_ = -1;
  Clock::time_point next_pid_check_{};
};

ShmGroup::Impl::Wait ShmGroup::Impl::wait_rank(int j, std::uint32_t target, engine::Driver& d) {
  return Wait(*this, d, j, j + 1, target);
}

ShmGroup::Impl::Wait ShmGroup::Impl::wait_all(std::uint32_t target, engine::Driver& d) {
  return Wait(*this, d, 0, size_, target);
}

void ShmGroup::Impl::check_arrival() const {
  const std::size_t parity = call_seq_ % 2;
  const CallRecord& ref = control(0).calls[parity];
  for (int j = 1; j < size_; ++j) {
    const CallRecord& r = control(j).calls[parity];
    if (std::memcmp(&r, &ref, sizeof(CallRecord)) != 0) throw_mismatch(j, r, ref);
  }
}

void ShmGroup::Impl::throw_mismatch(int j, const CallRecord& theirs, const CallRecord& ref) const {
  if (theirs.fp.version != ref.fp.version) {
    throw Error(ErrorCode::mismatch,
                str_cat("shm: ", who(j), " speaks collective protocol version ", theirs.fp.version,
                        " while ", who(0), " speaks version ", ref.fp.version),
                {global(j), global(0)});
  }
  const Fingerprint a = decode(theirs.fp), b = decode(ref.fp);
  std::string what = str_cat("shm: ", who(j), " called ", describe(a), " as collective #", a.seq,
                             " while ", who(0), " called ", describe(b), " as collective #", b.seq);
  if (a == b) {
    // The same collective, but another step of it in shared memory.
    what += str_cat(" (in shared memory: ", theirs.describe_step(), " as call #", theirs.call,
                    " against ", ref.describe_step(), " as call #", ref.call, ")");
  }
  throw Error(ErrorCode::mismatch, what, {global(j), global(0)});
}

bool ShmGroup::Impl::begin_call(Stage stage, const Fingerprint& fp, std::size_t count,
                                DataType type, ReduceOp op, int root) {
  current_stage_ = stage;
  current_fp_ = fp;
  if (broken_) {
    throw Error(broken_code_, str_cat("shm: ", current(), " at ", who(me_),
                                      ": the group failed in an earlier call"));
  }
  if (size_ == 1) {
    if (abort_flag_ != nullptr && abort_flag_->load(std::memory_order_relaxed)) {
      throw Error(ErrorCode::aborted, str_cat("shm: ", current(), " aborted"));
    }
    return false;
  }
  try {
    check_abort_and_failure();
  } catch (const Error& e) {
    fail_call(e);
    throw;
  }
  ++call_seq_;
  CallRecord& r = control(me_).calls[call_seq_ % 2];
  r.fp = encode(fp);
  r.call = static_cast<std::uint32_t>(call_seq_);
  r.count = count;
  r.root = root;
  r.stage = stage;
  r.type = type;
  r.op = op;
  return true;
}

void ShmGroup::Impl::fail_call(const Error& e) noexcept {
  broken_ = true;
  broken_code_ = e.error_code() == ErrorCode::aborted ? ErrorCode::aborted : ErrorCode::peer_lost;
  if (e.error_code() != ErrorCode::mismatch) {
    // Tell the others, so that none waits for this rank until its deadline; a peer found
    // dead is the one they are told about, not this rank that noticed.
    int about = me_;
    if (e.error_code() == ErrorCode::peer_lost && e.ranks().size() == 1) {
      for (int j = 0; j < size_; ++j) {
        if (j != me_ && global(j) == e.ranks()[0]) about = j;
      }
    }
    mark_failed_about(e.error_code(), about);
  }
}

void ShmGroup::Impl::reduce_piece(std::byte* out, std::size_t buf, int j, std::size_t n,
                                  const std::byte* own, const exec::Reducer& reduce) {
  auto src = [&](int s) -> const std::byte* {
    return s == me_ && own != nullptr ? own : piece_ptr(buf, s, j);
  };
  // out = s0 op s1, then out = out op s2, ...: local-rank order, the same on every rank.
  reduce(out, src(0), src(1), n);
  for (int s = 2; s < size_; ++s) reduce(out, out, src(s), n);
}

void ShmGroup::Impl::small_in(const std::byte* data, std::size_t total,
                              const exec::Executor& exec) {
  if (total != 0) exec.copy(small_slot(call_seq_ % 2, me_), data, total);
  publish();
}

void ShmGroup::Impl::small_fold(std::byte* data, std::size_t first, std::size_t n,
                                std::size_t esize, const exec::Reducer& reduce) const {
  if (n == 0) return;
  const std::size_t parity = call_seq_ % 2;
  const std::size_t off = first * esize;
  std::byte* out = data + off;
  reduce(out, small_slot(parity, 0) + off, small_slot(parity, 1) + off, n);
  for (int s = 2; s < size_; ++s) reduce(out, out, small_slot(parity, s) + off, n);
}

engine::Task ShmGroup::Impl::copy_in(std::byte* data, const Plan& p, std::size_t k, bool skip_own,
                                     const exec::Executor& exec, engine::Driver& d) {
  const std::size_t buf = (large_used_ + k) % 2;
  // Wait until every rank has finished with this buffer's previous use.
  co_await wait_all(large_free_[buf], d);
  for (int j = 0; j < size_; ++j) {
    auto [first, n] = p.piece(j, k);
    if (n != 0 && !(skip_own && j == me_)) {
      exec.copy(piece_ptr(buf, me_, j), data + first * p.esize, n * p.esize);
    }
  }
  publish();
  stage_[k % 2] = progress_;
}

engine::Task ShmGroup::Impl::allreduce_large(std::byte* data, Plan p, exec::Reducer reduce,
                                             const exec::Executor& exec, engine::Driver& d) {
  // Copy chunk 0 in; then the call records are compared.
  co_await copy_in(data, p, 0, true, exec, d);
  co_await wait_all(stage_[0], d);
  check_arrival();
  for (std::size_t k = 0; k < p.chunks; ++k) {
    const std::size_t buf = (large_used_ + k) % 2;
    // Wait for every rank's copy of chunk k.
    if (k > 0) co_await wait_all(stage_[k % 2], d);
    // Reduce this rank's piece over all slots (its own from `data`) into slot 0.
    auto [mine, n] = p.piece(me_, k);
    if (n != 0) reduce_piece(piece_ptr(buf, 0, me_), buf, me_, n, data + mine * p.esize, reduce);
    publish();
    const std::uint32_t reduced = progress_;
    // Overlap: copy chunk k+1 into the other buffer while the others reduce chunk k.
    if (k + 1 < p.chunks) co_await copy_in(data, p, k + 1, true, exec, d);
    // Wait for every piece of chunk k, then copy the whole chunk out.
    co_await wait_all(reduced, d);
    for (int j = 0; j < size_; ++j) {
      auto [first, len] = p.piece(j, k);
      if (len != 0) exec.copy(data + first * p.esize, piece_ptr(buf, 0, j), len * p.esize);
    }
    publish();
    large_free_[buf] = progress_;
  }
  large_used_ += p.chunks;
}

engine::Task ShmGroup::Impl::reduce_scatter_large(std::byte* data, Plan p, exec::Reducer reduce,
                                                  const exec::Executor& exec, engine::Driver& d) {
  // The reduction overwrites the caller's shard, so this rank's own piece goes through its
  // slot like the others.
  co_await copy_in(data, p, 0, false, exec, d);
  co_await wait_all(stage_[0], d);
  check_arrival();
  for (std::size_t k = 0; k < p.chunks; ++k) {
    const std::size_t buf = (large_used_ + k) % 2;
    // Wait for every rank's copy of chunk k.
    if (k > 0) co_await wait_all(stage_[k % 2], d);
    // Reduce this rank's piece straight into the caller's buffer.
    auto [first, n] = p.piece(me_, k);
    if (n != 0) reduce_piece(data + first * p.esize, buf, me_, n, nullptr, reduce);
    publish();
    large_free_[buf] = progress_;
    if (k + 1 < p.chunks) co_await copy_in(data, p, k + 1, false, exec, d);
  }
  large_used_ += p.chunks;
}

engine::Task ShmGroup::Impl::allgather_large(std::byte* data, Plan p, const exec::Executor& exec,
                                             engine::Driver& d) {
  // Each rank writes its piece of chunk k into slot 0 of the chunk's buffer.
  auto put = [&](std::size_t k) {
    auto [first, n] = p.piece(me_, k);
    if (n != 0) {
      exec.copy(piece_ptr((large_used_ + k) % 2, 0, me_), data + first * p.esize, n * p.esize);
    }
    publish();
    stage_[k % 2] = progress_;
  };
  co_await wait_all(large_free_[large_used_ % 2], d);
  put(0);
  co_await wait_all(stage_[0], d);
  check_arrival();
  for (std::size_t k = 0; k < p.chunks; ++k) {
    const std::size_t buf = (large_used_ + k) % 2;
    // Wait for every rank's piece of chunk k.
    if (k > 0) co_await wait_all(stage_[k % 2], d);
    if (k + 1 < p.chunks) {
      co_await wait_all(large_free_[(large_used_ + k + 1) % 2], d);
      put(k + 1);
    }
    for (int j = 0; j < size_; ++j) {
      auto [first, n] = p.piece(j, k);
      if (j != me_ && n != 0) exec.copy(data + first * p.esize, piece_ptr(buf, 0, j), n * p.esize);
    }
    publish();
    large_free_[buf] = progress_;
  }
  large_used_ += p.chunks;
}

engine::Task ShmGroup::Impl::broadcast_large(std::byte* b, std::size_t bytes, int root,
                                             const exec::Executor& exec, engine::Driver& d) {
  // Chunks of a whole buffer (all L slots), double-buffered: the root runs up to two ahead.
  const std::size_t chunk = chunk_bytes_ * static_cast<std::size_t>(size_);
  const std::size_t chunks = (bytes + chunk - 1) / chunk;
  for (std::size_t k = 0; k < chunks; ++k) {
    const std::size_t buf = (large_used_ + k) % 2;
    const std::size_t off = k * chunk, n = std::min(chunk, bytes - off);
    if (me_ == root) {
      co_await wait_all(large_free_[buf], d);
      exec.copy(large_slot(buf, 0), b + off, n);
    }
    publish();
    const std::uint32_t filled = progress_;
    if (k == 0) {
      co_await wait_all(filled, d);
      check_arrival();
    } else if (me_ != root) {
      co_await wait_rank(root, filled, d);
    }
    if (me_ != root) exec.copy(b + off, large_slot(buf, 0), n);
    publish();
    large_free_[buf] = progress_;
  }
  large_used_ += chunks;
}

namespace {

void check_data_call(const char* what, const void* data, std::size_t count, DataType type,
                     const exec::Executor& exec) {
  RINGLET_CHECK(data != nullptr || count == 0, "shm: ", what, " of ", count, " elements at null");
  RINGLET_CHECK(ringlet::size_of(type) != 0, "shm: ", what, " of unknown data type ",
                static_cast<int>(type));
  RINGLET_CHECK(exec.memory() == MemoryKind::host, "shm: ", what,
                " needs the host executor (shared memory reduces host buffers)");
}

}  // namespace

// Every call: validated and (reduce, begin_call) resolved before the group is touched, so that
// bad arguments leave it intact; then the body, whose Error marks the group failed.
engine::Task ShmGroup::Impl::allreduce(void* data, std::size_t count, DataType type, ReduceOp op,
                                       const exec::Executor& exec, const Fingerprint& fp,
                                       engine::Driver& d) {
  check_data_call("allreduce", data, count, type, exec);
  // Resolved before the call starts: an unsupported (type, op) leaves the group intact.
  const exec::Reducer reduce = exec.reducer(type, op);
  if (!begin_call(Stage::allreduce, fp, count, type, op, -1)) co_return;
  try {
    const Plan p = plan(count, type);
    auto* bytes = static_cast<std::byte*>(data);
    const std::size_t total = count * p.esize;
    if (total <= small_bytes_) {
      // Low latency: one publish; every rank reduces all slots itself, in local-rank order.
      small_in(bytes, total, exec);
      co_await wait_all(progress_, d);
      check_arrival();
      small_fold(bytes, 0, count, p.esize, reduce);
    } else {
      co_await allreduce_large(bytes, p, reduce, exec, d);
    }
  } catch (const Error& e) {
    fail_call(e);
    throw;
  }
}

engine::Task ShmGroup::Impl::reduce_scatter(void* data, std::size_t count, DataType type,
                                            ReduceOp op, const exec::Executor& exec,
                                            const Fingerprint& fp, engine::Driver& d) {
  check_data_call("reduce_scatter", data, count, type, exec);
  // Resolved before the call starts: an unsupported (type, op) leaves the group intact.
  const exec::Reducer reduce = exec.reducer(type, op);
  if (!begin_call(Stage::reduce_scatter, fp, count, type, op, -1)) co_return;
  try {
    const Plan p = plan(count, type);
    auto* bytes = static_cast<std::byte*>(data);
    const std::size_t total = count * p.esize;
    if (total <= small_bytes_) {
      auto [first, end] = shard(count, size_, me_);
      small_in(bytes, total, exec);
      co_await wait_all(progress_, d);
      check_arrival();
      small_fold(bytes, first, end - first, p.esize, reduce);
    } else {
      co_await reduce_scatter_large(bytes, p, reduce, exec, d);
    }
  } catch (const Error& e) {
    fail_call(e);
    throw;
  }
}

engine::Task ShmGroup::Impl::allgather(void* data, std::size_t count, DataType type,
                                       const exec::Executor& exec, const Fingerprint& fp,
                                       engine::Driver& d) {
  check_data_call("allgather", data, count, type, exec);
  if (!begin_call(Stage::allgather, fp, count, type, ReduceOp::sum, -1)) co_return;
  try {
    const Plan p = plan(count, type);
    auto* bytes = static_cast<std::byte*>(data);
    const std::size_t total = count * p.esize;
    if (total <= small_bytes_) {
      // Every rank writes its shard into one shared slot at its own offset.
      const std::size_t parity = call_seq_ % 2;
      auto [first, end] = shard(count, size_, me_);
      if (end > first) {
        exec.copy(small_slot(parity, 0) + first * p.esize, bytes + first * p.esize,
                  (end - first) * p.esize);
      }
      publish();
      co_await wait_all(progress_, d);
      check_arrival();
      if (first * p.esize != 0) exec.copy(bytes, small_slot(parity, 0), first * p.esize);
      if (end < count) {
        exec.copy(bytes + end * p.esize, small_slot(parity, 0) + end * p.esize,
                  (count - end) * p.esize);
      }
    } else {
      co_await allgather_large(bytes, p, exec, d);
    }
  } catch (const Error& e) {
    fail_call(e);
    throw;
  }
}

engine::Task ShmGroup::Impl::broadcast(void* data, std::size_t bytes, int root,
                                       const exec::Executor& exec, const Fingerprint& fp,
                                       engine::Driver& d) {
  RINGLET_CHECK(root >= 0 && root < size_, "shm: broadcast root ", root, " out of range [0, ",
                size_, ")");
  check_data_call("broadcast", data, bytes, DataType::uint8, exec);
  if (!begin_call(Stage::broadcast, fp, bytes, DataType::uint8, ReduceOp::sum, root)) co_return;
  try {
    auto* b = static_cast<std::byte*>(data);
    if (bytes <= small_bytes_) {
      const std::size_t parity = call_seq_ % 2;
      if (me_ == root && bytes != 0) exec.copy(small_slot(parity, 0), b, bytes);
      publish();
      co_await wait_all(progress_, d);
      check_arrival();
      if (me_ != root && bytes != 0) exec.copy(b, small_slot(parity, 0), bytes);
    } else {
      co_await broadcast_large(b, bytes, root, exec, d);
    }
  } catch (const Error& e) {
    fail_call(e);
    throw;
  }
}

engine::Task ShmGroup::Impl::barrier(const Fingerprint& fp, engine::Driver& d) {
  if (!begin_call(Stage::barrier, fp, 0, DataType::uint8, ReduceOp::sum, -1)) co_return;
  try {
    publish();
    co_await wait_all(progress_, d);
    check_arrival();
  } catch (const Error& e) {
    fail_call(e);
    throw;
  }
}

engine::Task ShmGroup::Impl::agree(const Fingerprint& fp, engine::Driver& d) {
  if (!begin_call(Stage::agree, fp, 0, DataType::uint8, ReduceOp::sum, -1)) co_return;
  try {
    publish();
    co_await wait_all(progress_, d);
    check_arrival();
  } catch (const Error& e) {
    fail_call(e);
    throw;
  }
}

void ShmGroup::Impl::mark_failed_about(ErrorCode code, int about) noexcept {
  if (size_ == 1 || header_ == nullptr) return;
  std::uint32_t none = 0;
  header_->failed.compare_exchange_strong(none, encode_failure(code, about, me_));
  interrupt();
}

ShmGroup::ShmGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ShmGroup::~ShmGroup() = default;

std::unique_ptr<ShmGroup> ShmGroup::create(const ShmOptions& options, Deadline deadline) {
  return std::unique_ptr<ShmGroup>(new ShmGroup(std::make_unique<Impl>(options, deadline)));
}

int ShmGroup::local_rank() const noexcept { return impl_->rank(); }
int ShmGroup::local_size() const noexcept { return impl_->size(); }
const std::string& ShmGroup::segment_name() const noexcept { return impl_->name(); }

engine::Task ShmGroup::agree(const Fingerprint& fp, engine::Driver& driver) {
  return impl_->agree(fp, driver);
}
void ShmGroup::mark_failed(ErrorCode code) noexcept { impl_->mark_failed(code); }
void ShmGroup::mark_lost(ErrorCode code, int lost) noexcept { impl_->mark_lost(code, lost); }
void ShmGroup::interrupt() noexcept { impl_->interrupt(); }

engine::Task ShmGroup::allreduce(void* data, std::size_t count, DataType type, ReduceOp op,
                                 const exec::Executor& exec, const Fingerprint& fp,
                                 engine::Driver& driver) {
  return impl_->allreduce(data, count, type, op, exec, fp, driver);
}
engine::Task ShmGroup::reduce_scatter(void* data, std::size_t count, DataType type, ReduceOp op,
                                      const exec::Executor& exec, const Fingerprint& fp,
                                      engine::Driver& driver) {
  return impl_->reduce_scatter(data, count, type, op, exec, fp, driver);
}
engine::Task ShmGroup::allgather(void* data, std::size_t count, DataType type,
                                 const exec::Executor& exec, const Fingerprint& fp,
                                 engine::Driver& driver) {
  return impl_->allgather(data, count, type, exec, fp, driver);
}
engine::Task ShmGroup::broadcast(void* data, std::size_t bytes, int local_root,
                                 const exec::Executor& exec, const Fingerprint& fp,
                                 engine::Driver& driver) {
  return impl_->broadcast(data, bytes, local_root, exec, fp, driver);
}
engine::Task ShmGroup::barrier(const Fingerprint& fp, engine::Driver& driver) {
  return impl_->barrier(fp, driver);
}

}  // namespace ringlet::groups::shm
