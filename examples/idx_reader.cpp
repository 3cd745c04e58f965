// SPDX-License-Identifier: Apache-2.0
// IDX reader: header validation, bounded reads through zlib, clear errors.
#include "idx_reader.hpp"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <type_traits>

namespace ringlet_example {
namespace {

constexpr std::uint8_t kUnsignedByte = 0x08;
constexpr std::size_t kMaxDims = 4;
constexpr std::uint64_t kMaxBytes = std::uint64_t{1} << 32;  // 4 GiB: far above any IDX set

struct GzCloser {
  void operator()(gzFile f) const noexcept { gzclose(f); }
};
using GzFile = std::unique_ptr<std::remove_pointer_t<gzFile>, GzCloser>;

std::string gz_message(gzFile f) {
  int code = 0;
  const char* msg = gzerror(f, &code);
  if (code == Z_ERRNO) return std::strerror(errno);
  return msg != nullptr && *msg != '\0' ? msg : "unexpected end of file";
}

// Reads up to `n` bytes; returns how many were read (less than n only at end of file).
std::size_t read_bytes(gzFile f, std::uint8_t* dst, std::size_t n, const std::string& path) {
  std::size_t done = 0;
  while (done < n) {
    auto chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
    int got = gzread(f, dst + done, chunk);
    if (got < 0) throw IdxError(path + ": read failed: " + gz_message(f), false);
    if (got == 0) break;
    done += static_cast<std::size_t>(got);
  }
  return done;
}

std::uint32_t big_endian_u32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

IdxArray read_idx(const std::string& path, std::size_t expected_dims, std::size_t max_items) {
  errno = 0;
  GzFile file(gzopen(path.c_str(), "rb"));
  if (!file) {
    int err = errno;
    throw IdxError(path + ": cannot open: " + (err != 0 ? std::strerror(err) : "out of memory"),
                   err == ENOENT);
  }
  gzFile f = file.get();

  std::uint8_t magic[4];
  if (read_bytes(f, magic, 4, path) != 4) {
    throw IdxError(path + ": not an IDX file: shorter than its 4-byte magic number", false);
  }
  if (magic[0] != 0 || magic[1] != 0) {
    throw IdxError(path + ": not an IDX file: the magic number must start with two zero bytes",
                   false);
  }
  if (magic[2] != kUnsignedByte) {
    const char* hex = "0123456789abcdef";
    throw IdxError(path + ": IDX element type 0x" + hex[magic[2] / 16] + hex[magic[2] % 16] +
                       " is not supported (expected 0x08, unsigned byte)",
                   false);
  }
  std::size_t ndims = magic[3];
  if (ndims != expected_dims || ndims == 0 || ndims > kMaxDims) {
    throw IdxError(path + ": has " + std::to_string(ndims) + " dimensions, expected " +
                       std::to_string(expected_dims),
                   false);
  }

  IdxArray out;
  std::uint8_t raw[4 * kMaxDims];
  if (read_bytes(f, raw, 4 * ndims, path) != 4 * ndims) {
    throw IdxError(path + ": truncated IDX header (dimension sizes missing)", false);
  }
  std::uint64_t item_bytes = 1;
  for (std::size_t i = 0; i < ndims; ++i) {
    std::uint32_t d = big_endian_u32(raw + 4 * i);
    if (d == 0) throw IdxError(path + ": dimension " + std::to_string(i) + " is zero", false);
    out.dims.push_back(d);
    if (i > 0) item_bytes *= d;
    if (item_bytes > kMaxBytes / out.dims[0]) {  // item_bytes * dims[0], without overflow
      throw IdxError(path + ": the dimensions describe more than 4 GiB of data", false);
    }
  }
  out.item_bytes = static_cast<std::size_t>(item_bytes);
  out.items = std::min<std::size_t>(out.dims[0], max_items);
  std::size_t want = out.items * out.item_bytes;
  out.data.resize(want);
  std::size_t got = read_bytes(f, out.data.data(), want, path);
  if (got != want) {
    throw IdxError(path + ": truncated: the header promises " + std::to_string(out.dims[0]) +
                       " items of " + std::to_string(out.item_bytes) +
                       " bytes, but the data ends after " + std::to_string(got) + " bytes",
                   false);
  }
  if (out.items == out.dims[0]) {
    std::uint8_t extra = 0;
    if (read_bytes(f, &extra, 1, path) != 0) {
      throw IdxError(path + ": unexpected data after the " + std::to_string(out.dims[0]) + " items",
                     false);
    }
  }
  return out;
}

Dataset load_split(const std::string& dir, const std::string& prefix, std::size_t rows,
                   std::size_t cols, int classes, std::size_t limit) {
  auto find = [&](const std::string& kind, int ndims) {
    std::string base = dir + "/" + prefix + "-" + kind + "-idx" + std::to_string(ndims) + "-ubyte";
    return exists(base + ".gz") || !exists(base) ? base + ".gz" : base;
  };
  std::string images_path = find("images", 3);
  std::string labels_path = find("labels", 1);
  IdxArray images = read_idx(images_path, 3, limit);
  IdxArray labels = read_idx(labels_path, 1, limit);
  if (images.dims[1] != rows || images.dims[2] != cols) {
    throw IdxError(images_path + ": images are " + std::to_string(images.dims[1]) + "x" +
                       std::to_string(images.dims[2]) + ", expected " + std::to_string(rows) + "x" +
                       std::to_string(cols),
                   false);
  }
  if (images.dims[0] != labels.dims[0]) {
    throw IdxError(images_path + " holds " + std::to_string(images.dims[0]) + " images but " +
                       labels_path + " holds " + std::to_string(labels.dims[0]) + " labels",
                   false);
  }
  for (std::size_t i = 0; i < labels.items; ++i) {
    if (labels.data[i] >= classes) {
      throw IdxError(labels_path + ": label " + std::to_string(labels.data[i]) + " of item " +
                         std::to_string(i) + " is not below " + std::to_string(classes),
                     false);
    }
  }
  Dataset out;
  out.count = images.items;
  out.pixels = images.item_bytes;
  out.images = std::move(images.data);
  out.labels = std::move(labels.data);
  return out;
}

}  // namespace ringlet_example
