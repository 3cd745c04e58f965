// SPDX-License-Identifier: Apache-2.0
// Reads IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or plain, with zlib.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace ringlet_example {

// Thrown for a file that is missing, unreadable, truncated or not the expected IDX layout.
// `missing()` is true when the file could not be opened at all, so that the caller can tell
// the user where to get the data.
class IdxError : public std::runtime_error {
 public:
  IdxError(const std::string& what, bool missing) : std::runtime_error(what), missing_(missing) {}
  bool missing() const noexcept { return missing_; }

 private:
  bool missing_;
};

// An IDX array of unsigned bytes: dims[0] items, each of dims[1] * dims[2] * ... bytes.
struct IdxArray {
  std::vector<std::uint32_t> dims;  // as stored in the file (dims[0] is the full item count)
  std::size_t items = 0;            // items actually read: min(dims[0], max_items)
  std::size_t item_bytes = 0;       // product of dims[1..]
  std::vector<std::uint8_t> data;   // items * item_bytes bytes
};

// Reads `path` (gzip or plain; zlib reads both). The header is 0x00 0x00 0x08 (unsigned byte)
// then the number of dimensions, then that many big-endian uint32 sizes. Checks that the file
// has `expected_dims` dimensions and at least dims[0] items of data, and, when every item is
// read, that nothing follows them. Reads at most `max_items` items. Throws IdxError.
IdxArray read_idx(const std::string& path, std::size_t expected_dims,
                  std::size_t max_items = static_cast<std::size_t>(-1));

// One split of Fashion-MNIST: `count` 28x28 grey images (0..255) and labels 0..9.
struct Dataset {
  std::size_t count = 0;
  std::size_t pixels = 0;            // per image: rows * cols
  std::vector<std::uint8_t> images;  // count * pixels
  std::vector<std::uint8_t> labels;  // count
};

// Loads `dir`/`prefix`-images-idx3-ubyte.gz and `dir`/`prefix`-labels-idx1-ubyte.gz (prefix is
// "train" or "t10k"; a file without ".gz" is used when the .gz one is absent). Checks that
// the images are `rows` x `cols`, that image and label counts agree and that labels are below
// `classes`. Reads at most `limit` samples. Throws IdxError.
Dataset load_split(const std::string& dir, const std::string& prefix, std::size_t rows,
                   std::size_t cols, int classes, std::size_t limit = static_cast<std::size_t>(-1));

}  // namespace ringlet_example
