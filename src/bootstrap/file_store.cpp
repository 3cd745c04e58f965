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

// Holds no state beyond the directory: every operation goes to the file system, so several
// processes (and threads) may use one directory. add() and remove() hold an flock on the
// key's lock file, which excludes other processes and other threads alike (each opens its
// own file description).
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
    write_atomically(file_name_of(key), value);
  }

  std::vector<std::byte> get(std::string_view key, Deadline deadline) override {
    const auto start = Clock::now();
    const std::string path = path_of(file_name_of(key));
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
      if (auto v = read_file(path)) return std::move(*v);
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
    UniqueFd lock = lock_key(name);
    std::int64_t old = 0;
    if (auto v = read_file(path_of(name))) {
      auto parsed = detail::parse_counter(*v);
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
    write_atomically(name, detail::encode_counter(*sum));
    return *sum;
  }

  bool remove(std::string_view key) override {
    const std::string name = file_name_of(key);
    UniqueFd lock = lock_key(name);
    const std::string path = path_of(name);
    if (::unlink(path.c_str()) == 0) return true;
    if (errno == ENOENT) return false;
    ringlet::detail::throw_errno(str_cat("file store: cannot remove ", path));
  }

 private:
  std::string path_of(const std::string& name) const { return str_cat(dir_, "/", name); }

  UniqueFd lock_key(const std::string& name) const {
    std::string path = path_of(str_cat(".lock.", name));
    UniqueFd fd(ringlet::detail::retry_eintr(
        [&] { return ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600); }));
    if (!fd) ringlet::detail::throw_errno(str_cat("file store: cannot open lock file ", path));
    if (ringlet::detail::retry_eintr([&] { return ::flock(fd.get(), LOCK_EX); }) != 0) {
      ringlet::detail::throw_errno(str_cat("file store: cannot lock ", path));
    }
    return fd;  // closing the descriptor releases the lock
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
