// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: every fixed-layout decoder of bytes that come from a peer (tcp hello,
// reply, verdict, frame header, address blob; the collective fingerprint; the store's
// counters). Properties: decoding never reads past its input, encode(decode(b)) == b for the
// wire structs, check_agreement either accepts or throws ringlet::Error(mismatch), and
// parse_counter accepts exactly the decimal int64 values that encode_counter writes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "src/bootstrap/store_value.hpp"
#include "src/fingerprint.hpp"
#include "transports/tcp/wire.hpp"

namespace {

using namespace ringlet::transport::tcp;

void require(bool ok) {
  if (!ok) std::abort();
}

template <class T, std::size_t N>
void round_trip(const std::uint8_t* data, std::size_t size) {
  if (size < N) return;
  unsigned char in[N];
  std::memcpy(in, data, N);
  const T t = T::decode(in);
  unsigned char out[N];
  t.encode(out);
  require(std::memcmp(in, out, N) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t which = data[0] % 7;
  ++data;
  --size;
  switch (which) {
    case 0:
      round_trip<Hello, kHelloBytes>(data, size);
      break;
    case 1:
      round_trip<Reply, kReplyBytes>(data, size);
      break;
    case 2:
      round_trip<Verdict, kVerdictBytes>(data, size);
      break;
    case 3:
      round_trip<FrameHeader, kFrameHeaderBytes>(data, size);
      break;
    case 4: {
      if (size < kBlobBytes) return 0;
      std::vector<std::byte> in(kBlobBytes);
      std::memcpy(in.data(), data, kBlobBytes);
      const AddressBlob b = AddressBlob::decode(in);
      require(b.encode() == in);
      break;
    }
    case 5: {
      if (size < sizeof(ringlet::WireFingerprint) * 2) return 0;
      ringlet::WireFingerprint theirs, mine_w;
      std::memcpy(&theirs, data, sizeof theirs);
      std::memcpy(&mine_w, data + sizeof theirs, sizeof mine_w);
      const ringlet::Fingerprint mine = ringlet::decode(mine_w);
      (void)ringlet::describe(ringlet::decode(theirs));
      (void)ringlet::looks_like_fingerprint(theirs);
      try {
        ringlet::check_agreement(1, theirs, 0, mine);
        // Accepted: the two must describe the same call.
        require(ringlet::decode(theirs) == mine);
      } catch (const ringlet::Error& e) {
        require(e.error_code() == ringlet::ErrorCode::mismatch);
      }
      // What a rank encodes is always accepted by a rank calling the same.
      ringlet::check_agreement(1, ringlet::encode(mine), 0, mine);
      break;
    }
    case 6: {
      namespace d = ringlet::bootstrap::detail;
      std::span<const std::byte> v(reinterpret_cast<const std::byte*>(data), size);
      if (auto n = d::parse_counter(v)) {
        const std::vector<std::byte> again = d::encode_counter(*n);
        require(d::parse_counter(again) == n);
        (void)d::checked_add(*n, *n);
      }
      break;
    }
  }
  return 0;
}
