#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# 8-byte allreduce latency, ringlet vs Open MPI over TCP: compare_tcp.sh's latency mode.
# usage: bench/compare_latency.sh BUILD_DIR   (from the repository root)
if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
exec "$(dirname "$0")/compare_tcp.sh" "$1" latency
