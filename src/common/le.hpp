// SPDX-License-Identifier: Apache-2.0
// Little-endian codecs for the wire formats (the TCP transport's and the TCP store's), on
// either kind of byte buffer those formats use: unsigned char or std::byte.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>

namespace ringlet::le {

template <class B>
concept Octet = std::same_as<B, unsigned char> || std::same_as<B, std::byte>;

// Stores v at p[0 .. sizeof(U)), least significant byte first.
template <std::unsigned_integral U, Octet B>
inline void put(B* p, U v) {
  for (std::size_t i = 0; i < sizeof(U); ++i)
    p[i] = static_cast<B>(static_cast<unsigned char>(v >> (8 * i)));
}

// Loads the value stored by put<U>.
template <std::unsigned_integral U, Octet B>
inline U get(const B* p) {
  U v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) v |= static_cast<U>(static_cast<U>(p[i]) << (8 * i));
  return v;
}

template <Octet B>
inline void put_u16(B* p, std::uint16_t v) {
  put<std::uint16_t>(p, v);
}
template <Octet B>
inline void put_u32(B* p, std::uint32_t v) {
  put<std::uint32_t>(p, v);
}
template <Octet B>
inline void put_u64(B* p, std::uint64_t v) {
  put<std::uint64_t>(p, v);
}
template <Octet B>
inline std::uint16_t get_u16(const B* p) {
  return get<std::uint16_t>(p);
}
template <Octet B>
inline std::uint32_t get_u32(const B* p) {
  return get<std::uint32_t>(p);
}
template <Octet B>
inline std::uint64_t get_u64(const B* p) {
  return get<std::uint64_t>(p);
}

}  // namespace ringlet::le
