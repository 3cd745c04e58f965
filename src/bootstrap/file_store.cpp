// SPDX-License-Identifier: Apache-2.0
// FileStore: a store in a directory of a shared file system, one file per key.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "src/bootstrap/store.hpp"
#include "src/bootstrap/store_value.hpp"
#include "src/common/check.hpp"
#include "src/common/le.hpp"
#include "src/common/unique_fd.hpp"

namespace ringlet::bootstrap {
namespace {

constexpr std::size_t kMaxPlainName = 180;  // longer escaped keys are shortened with a hash

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

// A file name for `key`: [A-Za-z0-9_-] kept, every other byte as %XX. Escaped names never
// start with '.', which is reserved for temporary and lock files.
std::string file_name_of(std::string_view key) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out = "k";  // never empty, never "." or ".."
  for (unsigned char c : key) {
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-';
    if (plain) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (out.size() > kMaxPlainName) {
    std::string hashed = out.substr(0, kMaxPlainName - 20);
    char buf[20];
    std::snprintf(buf, sizeof buf, "#%016llx", static_cast<unsigned long long>(fnv1a(key)));
    hashed += buf;
    return hashed;
  }
  return out;
}

constexpr std::size_t kMaxFileBytes = std::size_t{64} << 20;

void make_directories(const std::string& dir) {
  for (std::size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
      ringlet::detail::throw_errno(str_cat("file store: cannot create directory ", part));
    }
  }
}

// Reads the whole file at `path`; nullopt when it does not exist.
std::optional<std::vector<std::byte>> read_file(const std::string& path) {
  UniqueFd fd(ringlet::detail::retry_eintr(
      [&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW); }));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    ringlet::detail::throw_errno(str_cat("file store: cannot open ", path));
  }
  std::vector<std::byte> out;
  std::byte buf[65536];
  for (;;) {
    ssize_t n = ringlet::detail::retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
    if (n < 0) ringlet::detail::throw_errno(str_cat("file store: cannot read ", path));
    if (n == 0) break;
    // Bounded as the TCP store's values are: a planted huge file is an error, not an OOM.
    if (out.size() + static_cast<std::size_t>(n) > kMaxFileBytes) {
      throw Error(ErrorCode::transport,
                  str_cat("file store: ", path, " is larger than ", kMaxFileBytes, " bytes"));
    }
    out.insert(out.end(), buf, buf + n);
  }
  return out;
}

// A key's file: one tag byte, then
//   'v' value                                      a plain key
//   'c' token                                      a claim (get() reads the token)
//   'o' u32 n, claim key (n), u32 m, token (m), value   a key owned by that claim
struct Record {
  std::vector<std::byte> value;
  std::optional<detail::KeyOwner> owner;
};

std::vector<std::byte> encode_record(std::span<const std::byte> value,
                                     const detail::KeyOwner* owner, bool is_claim) {
  std::vector<std::byte> out;
  if (owner == nullptr) {
    out.push_back(std::byte{'v'});
  } else if (is_claim) {
    out.push_back(std::byte{'c'});
  } else {
    out.push_back(std::byte{'o'});
    std::byte n[4];
    le::put_u32(n, static_cast<std::uint32_t>(owner->claim.size()));
    out.insert(out.end(), n, n + 4);
    const auto claim = std::as_bytes(std::span(owner->claim));
    out.insert(out.end(), claim.begin(), claim.end());
    le::put_u32(n, static_cast<std::uint32_t>(owner->token.size()));
    out.insert(out.end(), n, n + 4);
    out.insert(out.end(), owner->token.begin(), owner->token.end());
  }
  out.insert(out.end(), value.begin(), value.end());
  return out;
}

// The record of `key` in the file at `path` holding `bytes`; Error(transport) when the file
// is no store record (something else wrote it).
Record decode_record(std::string_view key, const std::string& path,
                     std::span<const std::byte> bytes) {
  auto malformed = [&]() -> Error {
    return Error(ErrorCode::transport,
                 str_cat("file store: ", path, " (key '", key, "') is not a store record"));
  };
  if (bytes.empty()) throw malformed();
  Record r;
  const char tag = static_cast<char>(bytes[0]);
  std::span<const std::byte> rest = bytes.subspan(1);
  if (tag == 'v') {
    r.value.assign(rest.begin(), rest.end());
  } else if (tag == 'c') {
    r.value.assign(rest.begin(), rest.end());
    r.owner = detail::KeyOwner{std::string(key), r.value};
  } else if (tag == 'o') {
    auto take = [&](std::size_t n) {
      if (rest.size() < n) throw malformed();
      auto part = rest.first(n);
      rest = rest.subspan(n);
      return part;
    };
    detail::KeyOwner owner;
    auto claim = take(le::get_u32(take(4).data()));
    owner.claim.assign(reinterpret_cast<const char*>(claim.data()), claim.size());
    auto token = take(le::get_u32(take(4).data()));
    owner.token.assign(token.begin(), token.end());
    r.value.assign(rest.begin(), rest.end());
    r.owner = std::move(owner);
  } else {
    throw malformed();
  }
  return r;
}

// Holds no state beyond the directory: every operation goes to the file system, so several
// processes (and threads) may use one directory. Every write (set, add, remove, claim,
// set_owned) holds an flock on the key's lock file, which excludes other processes and other
// threads alike (each opens its own file description), and removes that file when it is
// done; get() reads without one, since a key's file is only ever replaced whole (rename).
// What the store leaves in the directory is the keys' files only.
class FileStore final : public Store {
 public:
  explicit FileStore(std::string directory) : dir_(std::move(directory)) {
    RINGLET_CHECK(!dir_.empty(), "make_file_store: empty directory");
    while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
    make_directories(dir_);
    // Another user's directory, or one others may write, could hold planted files.
    struct stat st {};
    if (::stat(dir_.c_str(), &st) != 0) {
      ringlet::detail::throw_errno(str_cat("file store: cannot stat ", dir_));
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 022) != 0) {
      throw Error(ErrorCode::invalid_argument,
                  str_cat("file store: directory ", dir_, " must be this user's (uid ", ::geteuid(),
                          ") and writable by no one else; it is owned by uid ", st.st_uid,
                          " with mode 0", std::oct, st.st_mode & 07777));
    }
  }

  void set(std::string_view key, std::span<const std::byte> value) override {
    const std::string name = file_name_of(key);
    const auto lock = lock_key(name);
    refuse_if_owned("set", key, name);
    write_atomically(name, encode_record(value, nullptr, false));
  }

  std::vector<std::byte> get(std::string_view key, Deadline deadline) override {
    return get_interruptible(key, deadline, {});
  }

  // Polls, every 20 ms at most, and looks at `stop` each time.
  std::vector<std::byte> get_interruptible(std::string_view key, Deadline deadline,
                                           const std::stop_token& stop) override {
    const auto start = Clock::now();
    const std::string path = path_of(file_name_of(key));
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
      if (auto v = read_file(path)) return decode_record(key, path, *v).value;
      if (stop.stop_requested()) {
        throw Error(ErrorCode::aborted,
                    str_cat("store: the wait for key '", key, "' was interrupted"));
      }
      auto now = Clock::now();
      if (now >= deadline) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - start).count();
        throw Error(ErrorCode::timeout,
                    str_cat("store: key '", key, "' not set within ", ms < 0 ? 0 : ms, " ms"));
      }
      std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - now));
      pause = std::min(pause * 2, std::chrono::milliseconds(20));
    }
  }

  std::int64_t add(std::string_view key, std::int64_t delta) override {
    const std::string name = file_name_of(key);
    const auto lock = lock_key(name);
    std::int64_t old = 0;
    if (auto r = read_record(key, name)) {
      if (r->owner)
        throw Error(ErrorCode::mismatch, detail::plain_write_refusal("add", key, *r->owner));
      auto parsed = detail::parse_counter(r->value);
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
    write_atomically(name, encode_record(detail::encode_counter(*sum), nullptr, false));
    return *sum;
  }

  bool remove(std::string_view key) override {
    const std::string name = file_name_of(key);
    const auto lock = lock_key(name);
    refuse_if_owned("remove", key, name);
    const std::string path = path_of(name);
    if (::unlink(path.c_str()) == 0) return true;
    if (errno == ENOENT) return false;
    ringlet::detail::throw_errno(str_cat("file store: cannot remove ", path));
  }

  bool claim(std::string_view key, std::span<const std::byte> token) override {
    detail::check_claim_token(token);
    const std::string name = file_name_of(key);
    const auto lock = lock_key(name);
    const std::optional<Record> r = read_record(key, name);
    if (!detail::claim_granted(key, token, r.has_value(), r && r->owner ? &*r->owner : nullptr)) {
      return false;
    }
    if (r) return true;  // this claimant's retry
    const detail::KeyOwner self{std::string(key), {token.begin(), token.end()}};
    write_atomically(name, encode_record(token, &self, true));
    return true;
  }

  void set_owned(std::string_view claim_key, std::span<const std::byte> token, std::string_view key,
                 std::span<const std::byte> value) override {
    detail::check_claim_token(token);
    // A claim, once made, never changes: it is read without its lock.
    const std::optional<Record> claim = read_record(claim_key, file_name_of(claim_key));
    const std::string name = file_name_of(key);
    const auto lock = lock_key(name);
    const std::optional<Record> r = read_record(key, name);
    std::string why = detail::owned_write_refusal(
        claim_key, token, claim && claim->owner ? &*claim->owner : nullptr, key, r.has_value(),
        r && r->owner ? &*r->owner : nullptr);
    if (!why.empty()) throw Error(ErrorCode::mismatch, why);
    const detail::KeyOwner owner{std::string(claim_key), {token.begin(), token.end()}};
    write_atomically(name, encode_record(value, &owner, false));
  }

 private:
  std::string path_of(const std::string& name) const { return str_cat(dir_, "/", name); }

  std::optional<Record> read_record(std::string_view key, const std::string& name) const {
    const std::string path = path_of(name);
    auto bytes = read_file(path);
    if (!bytes) return std::nullopt;
    return decode_record(key, path, *bytes);
  }

  // Under the key's lock: Error(mismatch) when `key` is a claim or an owned key. A file that
  // is no store record does not stop a plain write (it replaces the file).
  void refuse_if_owned(std::string_view op, std::string_view key, const std::string& name) const {
    std::optional<Record> r;
    try {
      r = read_record(key, name);
    } catch (const Error& e) {
      if (e.error_code() != ErrorCode::transport) throw;
    }
    if (r && r->owner) {
      throw Error(ErrorCode::mismatch, detail::plain_write_refusal(op, key, *r->owner));
    }
  }

  // The lock of one key: an flock on `.lock.<name>`, whose holder unlinks the file before it
  // lets go, so that no lock file outlives its use (review L10). A waiter may then get the
  // lock of a file that was unlinked meanwhile (and perhaps created again by a third
  // process, which locked the new file): once it holds the lock it checks that the path
  // still names the file it locked, and starts again if not. Only a holder unlinks the path,
  // so while it holds the lock the path names its file, and two holders of one key's lock
  // never coexist: no add() or set() is lost. (A process killed while it holds the lock
  // leaves the file behind; the next write of that key takes it over and removes it.)
  class KeyLock {
   public:
    KeyLock(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
    KeyLock(const KeyLock&) = delete;
    KeyLock& operator=(const KeyLock&) = delete;
    ~KeyLock() { ::unlink(path_.c_str()); }  // then fd_ closes, which releases the lock

   private:
    std::string path_;
    UniqueFd fd_;
  };

  [[nodiscard]] KeyLock lock_key(const std::string& name) const {
    const std::string path = path_of(str_cat(".lock.", name));
    for (;;) {
      UniqueFd fd(ringlet::detail::retry_eintr(
          [&] { return ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600); }));
      if (!fd) ringlet::detail::throw_errno(str_cat("file store: cannot open lock file ", path));
      if (ringlet::detail::retry_eintr([&] { return ::flock(fd.get(), LOCK_EX); }) != 0) {
        ringlet::detail::throw_errno(str_cat("file store: cannot lock ", path));
      }
      struct stat held {};
      struct stat named {};
      if (::fstat(fd.get(), &held) != 0) {
        ringlet::detail::throw_errno(str_cat("file store: cannot stat lock file ", path));
      }
      if (::lstat(path.c_str(), &named) == 0) {
        if (named.st_dev == held.st_dev && named.st_ino == held.st_ino) {
          return KeyLock(path, std::move(fd));  // not copied: a prvalue
        }
      } else if (errno != ENOENT) {
        ringlet::detail::throw_errno(str_cat("file store: cannot stat lock file ", path));
      }
      // The holder before us unlinked this file: its lock protects nothing any more.
    }
  }

  void write_atomically(const std::string& name, std::span<const std::byte> value) const {
    static std::atomic<std::uint64_t> counter{0};
    std::string tmp = path_of(str_cat(".tmp.", ::getpid(), ".", counter.fetch_add(1), ".", name));
    {
      UniqueFd fd(ringlet::detail::retry_eintr([&] {
        return ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      }));
      if (!fd) ringlet::detail::throw_errno(str_cat("file store: cannot create ", tmp));
      std::size_t done = 0;
      while (done < value.size()) {
        ssize_t n = ringlet::detail::retry_eintr(
            [&] { return ::write(fd.get(), value.data() + done, value.size() - done); });
        if (n < 0) {
          int err = errno;
          ::unlink(tmp.c_str());
          ringlet::detail::throw_errno(str_cat("file store: cannot write ", tmp), err);
        }
        done += static_cast<std::size_t>(n);
      }
    }
    std::string path = path_of(name);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      ringlet::detail::throw_errno(str_cat("file store: cannot rename ", tmp, " to ", path), err);
    }
  }

  std::string dir_;
};

}  // namespace

std::shared_ptr<Store> make_file_store(const std::string& directory) {
  return std::make_shared<FileStore>(directory);
}

}  // namespace ringlet::bootstrap
