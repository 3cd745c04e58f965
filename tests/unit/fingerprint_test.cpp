// SPDX-License-Identifier: Apache-2.0
// The fingerprint module: names, wire form, the agreement check and its messages; and the
// structured Error it produces.
#include "src/fingerprint.hpp"

#include <gtest/gtest.h>

namespace ringlet {
namespace {

Fingerprint allreduce(std::uint64_t seq, std::uint64_t count) {
  return Fingerprint{seq, CollectiveKind::allreduce, DataType::float32, ReduceOp::sum, -1, count};
}

TEST(FingerprintTest, DescribeShowsWhatMattersPerKind) {
  EXPECT_EQ(describe(allreduce(1, 1024)), "allreduce(count=1024, float32, sum)");
  EXPECT_EQ(describe({2, CollectiveKind::broadcast, DataType::int64, ReduceOp::sum, 3, 5}),
            "broadcast(count=5, int64, root=3)");
  EXPECT_EQ(describe({2, CollectiveKind::allgather, DataType::uint8, ReduceOp::sum, -1, 9}),
            "allgather(count=9, uint8)");
  EXPECT_EQ(describe({2, CollectiveKind::barrier, DataType::uint8, ReduceOp::max, -1, 0}),
            "barrier()");
  EXPECT_EQ(describe({2, CollectiveKind::dup, DataType::uint8, ReduceOp::sum, -1, 0}), "dup()");
}

TEST(FingerprintTest, AgreementPassesForEqualCallsAndNamesBothRanksOtherwise) {
  const Fingerprint mine = allreduce(3, 10);
  EXPECT_NO_THROW(check_agreement(1, encode(mine), 0, mine));
  Fingerprint theirs = mine;
  theirs.count = 11;
  try {
    check_agreement(1, encode(theirs), 0, mine);
    FAIL() << "no mismatch";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::mismatch);
    EXPECT_EQ(e.ranks(), (std::vector<int>{1, 0}));
    EXPECT_EQ(e.cause(),
              "rank 1 called allreduce(count=11, float32, sum) as collective #3 while rank 0 "
              "called allreduce(count=10, float32, sum) as collective #3");
  }
  for (auto change :
       {+[](Fingerprint& f) { f.seq = 4; },
        +[](Fingerprint& f) { f.kind = CollectiveKind::broadcast; },
        +[](Fingerprint& f) { f.type = DataType::float64; },
        +[](Fingerprint& f) { f.op = ReduceOp::max; }, +[](Fingerprint& f) { f.root = 0; }}) {
    Fingerprint other = mine;
    change(other);
    EXPECT_THROW(check_agreement(2, encode(other), 0, mine), Error);
  }
}

TEST(FingerprintTest, ForeignBytesAreAVersionMismatchNotACrash) {
  WireFingerprint junk{};
  EXPECT_FALSE(looks_like_fingerprint(junk));
  try {
    check_agreement(5, junk, 0, allreduce(1, 1));
    FAIL() << "no mismatch";
  } catch (const Error& e) {
    EXPECT_EQ(e.error_code(), ErrorCode::mismatch);
    EXPECT_NE(e.cause().find("protocol version"), std::string::npos) << e.what();
  }
  WireFingerprint newer = encode(allreduce(1, 1));
  EXPECT_TRUE(looks_like_fingerprint(newer));
  newer.version = kCollectiveProtocolVersion + 1;
  EXPECT_THROW(check_agreement(5, newer, 0, allreduce(1, 1)), Error);
}

TEST(StructuredErrorTest, WhatIsComposedOnceFromItsParts) {
  Error e(ErrorCode::peer_lost, "tcp: peer 3 reset the connection", {3});
  EXPECT_EQ(e.cause(), "tcp: peer 3 reset the connection");
  EXPECT_EQ(e.origin_rank(), -1);
  EXPECT_EQ(std::string(e.what()), "tcp: peer 3 reset the connection: peer lost");
  e.reported_by(2).in_collective("allreduce", 7);
  EXPECT_EQ(std::string(e.what()),
            "allreduce #7: rank 2: tcp: peer 3 reset the connection: peer lost");
  // Each part is set once: context added again on the way up does not repeat.
  e.reported_by(5).in_collective("broadcast", 9);
  EXPECT_EQ(e.origin_rank(), 2);
  EXPECT_EQ(e.collective(), "allreduce");
  EXPECT_EQ(e.sequence(), 7u);
  EXPECT_EQ(std::string(e.what()),
            "allreduce #7: rank 2: tcp: peer 3 reset the connection: peer lost");
  EXPECT_EQ(e.code(), ErrorCode::peer_lost);
  const Error copy = e;
  EXPECT_STREQ(copy.what(), e.what());
}

}  // namespace
}  // namespace ringlet
