// SPDX-License-Identifier: Apache-2.0
// Tests of examples/idx_reader: IDX files written here (gzip and plain), valid and broken.
#include "idx_reader.hpp"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace ringlet_example {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

// An IDX header for unsigned bytes with the given dimension sizes.
Bytes header(std::vector<std::uint32_t> dims, std::uint8_t type = 0x08) {
  Bytes out = {0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (std::uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8)
      out.push_back(static_cast<std::uint8_t>(d >> shift));
  }
  return out;
}

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Bytes ramp(std::size_t n, std::uint8_t mod = 251) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(i % mod);
  return out;
}

class IdxReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/idx_reader_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write_gz(const std::string& name, const Bytes& bytes) {
    std::string path = dir_ + "/" + name;
    gzFile f = gzopen(path.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    if (!bytes.empty()) {
      EXPECT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
                static_cast<int>(bytes.size()));
    }
    gzclose(f);
    return path;
  }
  std::string write_plain(const std::string& name, const Bytes& bytes) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
    return path;
  }
  // Expects read_idx to throw an IdxError whose message contains `needle`.
  void expect_error(const std::string& path, std::size_t ndims, const std::string& needle) {
    try {
      read_idx(path, ndims);
      ADD_FAILURE() << "no error for " << path;
    } catch (const IdxError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_FALSE(e.missing());
    }
  }

  std::string dir_;
};

TEST_F(IdxReaderTest, ReadsGzipImagesExactly) {
  Bytes pixels = ramp(3 * 2 * 4);
  IdxArray a = read_idx(write_gz("a.gz", concat(header({3, 2, 4}), pixels)), 3);
  EXPECT_EQ(a.dims, (std::vector<std::uint32_t>{3, 2, 4}));
  EXPECT_EQ(a.items, 3u);
  EXPECT_EQ(a.item_bytes, 8u);
  EXPECT_EQ(a.data, pixels);
}

TEST_F(IdxReaderTest, ReadsPlainFiles) {
  Bytes labels = {1, 0, 9, 7};
  IdxArray a = read_idx(write_plain("l", concat(header({4}), labels)), 1);
  EXPECT_EQ(a.items, 4u);
  EXPECT_EQ(a.item_bytes, 1u);
  EXPECT_EQ(a.data, labels);
}

TEST_F(IdxReaderTest, LimitReadsAPrefixAndIgnoresTheRest) {
  Bytes pixels = ramp(5 * 4);
  IdxArray a = read_idx(write_gz("a.gz", concat(header({5, 2, 2}), pixels)), 3, 2);
  EXPECT_EQ(a.dims[0], 5u);
  EXPECT_EQ(a.items, 2u);
  EXPECT_EQ(a.data, Bytes(pixels.begin(), pixels.begin() + 8));
}

TEST_F(IdxReaderTest, MissingFileSaysSo) {
  std::string path = dir_ + "/absent.gz";
  try {
    read_idx(path, 1);
    ADD_FAILURE() << "no error";
  } catch (const IdxError& e) {
    EXPECT_TRUE(e.missing());
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
  }
}

TEST_F(IdxReaderTest, RejectsBrokenHeaders) {
  expect_error(write_gz("empty.gz", {}), 1, "shorter than its 4-byte magic");
  expect_error(write_gz("magic.gz", {1, 0, 8, 1, 0, 0, 0, 1, 5}), 1, "two zero bytes");
  expect_error(write_gz("float.gz", concat(header({1}, 0x0d), {0, 0, 0, 0})), 1,
               "element type 0x0d");
  expect_error(write_gz("dims.gz", concat(header({2, 2}), ramp(4))), 1,
               "has 2 dimensions, expected 1");
  expect_error(write_gz("short.gz", {0, 0, 8, 3, 0, 0, 0, 1}), 3, "truncated IDX header");
  expect_error(write_gz("zero.gz", header({0, 28, 28})), 3, "dimension 0 is zero");
  expect_error(write_gz("huge.gz", header({0xffffffffu, 0xffffu, 0xffffu})), 3, "more than 4 GiB");
}

TEST_F(IdxReaderTest, RejectsTruncatedAndTrailingData) {
  expect_error(write_gz("trunc.gz", concat(header({3, 2, 2}), ramp(11))), 3,
               "data ends after 11 bytes");
  expect_error(write_gz("trail.gz", concat(header({3}), ramp(4))), 1,
               "unexpected data after the 3 items");
}

TEST_F(IdxReaderTest, LoadSplitChecksShapeCountsAndLabels) {
  write_gz("train-images-idx3-ubyte.gz", concat(header({2, 2, 3}), ramp(12)));
  write_gz("train-labels-idx1-ubyte.gz", concat(header({2}), {4, 9}));
  Dataset d = load_split(dir_, "train", 2, 3, 10);
  EXPECT_EQ(d.count, 2u);
  EXPECT_EQ(d.pixels, 6u);
  EXPECT_EQ(d.images, ramp(12));
  EXPECT_EQ(d.labels, (Bytes{4, 9}));
  EXPECT_EQ(load_split(dir_, "train", 2, 3, 10, 1).count, 1u);

  EXPECT_THROW(load_split(dir_, "train", 3, 2, 10), IdxError);  // wrong image shape
  EXPECT_THROW(load_split(dir_, "train", 2, 3, 9), IdxError);   // label 9 is not below 9
  write_gz("t10k-images-idx3-ubyte.gz", concat(header({2, 2, 3}), ramp(12)));
  write_gz("t10k-labels-idx1-ubyte.gz", concat(header({3}), {1, 2, 3}));
  try {
    load_split(dir_, "t10k", 2, 3, 10);
    ADD_FAILURE() << "no error";
  } catch (const IdxError& e) {
    EXPECT_NE(std::string(e.what()).find("holds 2 images but"), std::string::npos) << e.what();
  }
}

TEST_F(IdxReaderTest, LoadSplitFallsBackToUncompressedFiles) {
  write_plain("t10k-images-idx3-ubyte", concat(header({1, 1, 2}), {7, 8}));
  write_plain("t10k-labels-idx1-ubyte", concat(header({1}), {3}));
  Dataset d = load_split(dir_, "t10k", 1, 2, 10);
  EXPECT_EQ(d.images, (Bytes{7, 8}));
  EXPECT_EQ(d.labels, (Bytes{3}));
}

TEST_F(IdxReaderTest, LoadSplitReportsTheMissingGzPath) {
  try {
    load_split(dir_, "train", 28, 28, 10);
    ADD_FAILURE() << "no error";
  } catch (const IdxError& e) {
    EXPECT_TRUE(e.missing());
    EXPECT_NE(std::string(e.what()).find(dir_ + "/train-images-idx3-ubyte.gz"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace ringlet_example
