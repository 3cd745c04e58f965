// SPDX-License-Identifier: Apache-2.0
// The power-of-two group of recursive doubling and Rabenseifner's allreduce: with p the
// largest power of two <= N, the first 2(N - p) ranks pair up and each even one folds into
// the odd rank above it; the others keep their place.
#pragma once

namespace ringlet::algo {

struct Pof2Layout {
  int pof2 = 1;   // largest power of two <= size
  int extra = 0;  // size - pof2: the ranks that fold into a partner
};

inline Pof2Layout pof2_layout(int size) {
  Pof2Layout l;
  while (l.pof2 * 2 <= size) l.pof2 *= 2;
  l.extra = size - l.pof2;
  return l;
}

// Index in the power-of-two group, or -1 for an even rank below 2 * extra (it folds into
// the odd rank above it).
inline int group_rank(int rank, const Pof2Layout& l) {
  if (rank < 2 * l.extra) return rank % 2 == 1 ? rank / 2 : -1;
  return rank - l.extra;
}

inline int real_rank(int group, const Pof2Layout& l) {
  return group < l.extra ? group * 2 + 1 : group + l.extra;
}

}  // namespace ringlet::algo
