#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpora of tests/fuzz (committed; rerun after a wire format changes).

Usage: make_seeds.py [DIR] (default: the corpus/ folder next to this script). Each seed is
a well-formed message of the format its target reads, so that the fuzzer starts past the
magic numbers and length checks.
"""
import os
import struct
import sys

here = os.path.dirname(os.path.abspath(__file__))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus")


def write(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- the store (src/bootstrap/tcp_store_protocol.hpp) -------------------------------------
MAGIC0, MAGIC1, VERSION = 0x524E474C, 0x53544F52, 4
JOB = b"fuzz-job"


def hello(job=JOB, version=VERSION, flags=0):
    return struct.pack("<IIIHH", MAGIC0, MAGIC1, version, len(job), flags) + bytes(32) + job


def request(op, key, value=b""):
    return struct.pack("<B3xIQ", op, len(key), len(value)) + key + value


SET, GET, ADD, REMOVE, CANCEL, CLAIM, SET_OWNED = 1, 2, 3, 4, 5, 6, 7


def owned(claim_key, token, value):
    return (struct.pack("<I", len(claim_key)) + claim_key + struct.pack("<I", len(token)) + token +
            value)


# First byte odd: the target sends a valid hello itself; even: the input carries its own.
write("store", "set_get", b"\x01" + request(SET, b"k", b"v") + request(GET, b"k"))
write("store", "add", b"\x01" + request(ADD, b"c", b"5") + request(ADD, b"c", b"-7") +
      request(GET, b"c"))
write("store", "remove", b"\x01" + request(SET, b"a/b", b"x" * 40) + request(REMOVE, b"a/b") +
      request(REMOVE, b"a/b"))
write("store", "get_cancel", b"\x01" + request(GET, b"never") + request(CANCEL, b"never"))
write("store", "bad_op", b"\x01" + request(9, b"k", b"v"))
write("store", "claim_owned", b"\x01" + request(CLAIM, b"claim/1", b"tok") +
      request(SET_OWNED, b"info/1", owned(b"claim/1", b"tok", b"1 2 node")) +
      request(SET, b"info/1", b"forged") + request(GET, b"info/1"))
write("store", "claim_twice", b"\x01" + request(CLAIM, b"claim/1", b"a") +
      request(CLAIM, b"claim/1", b"b") + request(SET_OWNED, b"k", owned(b"claim/1", b"b", b"v")))
write("store", "owned_malformed", b"\x01" + request(SET_OWNED, b"k", struct.pack("<I", 999) + b"x"))
write("store", "hello_only", b"\x00" + hello())
write("store", "hello_set", b"\x00" + hello() + request(SET, b"info/1", b"1 2 node"))
write("store", "hello_other_job", b"\x00" + hello(b"another"))
write("store", "hello_v1", b"\x00" + hello(version=1))
write("store", "hello_secret", b"\x00" + hello(flags=1) + bytes(32))
write("store", "huge_lengths", b"\x01" + struct.pack("<B3xIQ", SET, 0xFFFFFFFF, 1 << 40))

# --- the tcp transport (transports/tcp/wire.hpp) ---------------------------------------------
HS, REPLY, BLOB = 0x48535452, 0x50525452, 0x424C5452
TCP_VERSION, JOB_ID = 5, 0x5EED0F0F


def tcp_hello(index, count=2, job=JOB_ID, version=TCP_VERSION, frm=0, to=1, flags=0):
    return struct.pack("<IIQIIIIII", HS, version, job, frm, to, index, count, flags, 0) + bytes(32)


def frame(kind, code, payload):
    return struct.pack("<IIQ", kind, code, len(payload)) + payload


# Even first byte: the rest goes raw on an extra socket next to the real handshake.
write("tcp", "forged_index0", b"\x00" + tcp_hello(0))
write("tcp", "forged_from1", b"\x00" + tcp_hello(0, frm=1, to=1))
write("tcp", "bad_version", b"\x00" + tcp_hello(1, version=2))
write("tcp", "other_job", b"\x00" + tcp_hello(1, job=7))
write("tcp", "bad_count", b"\x00" + tcp_hello(1, count=9))
write("tcp", "half_hello", b"\x00" + tcp_hello(0)[:30])
# Odd first byte: frames after the real handshake (bit 1: on the control socket).
write("tcp", "data_frame", b"\x01" + frame(1, 0, bytes(range(256))))
write("tcp", "short_frame", b"\x01" + frame(1, 0, b"abc"))
write("tcp", "long_frame", b"\x01" + frame(1, 0, bytes(300)))
write("tcp", "wrong_seq", b"\x01" + frame(1, 5, bytes(256)))
# Error frames: origin rank, lost rank (-1: none), text.
write("tcp", "error_frame", b"\x01" + frame(2, 4, struct.pack("<ii", 0, -1) + b"rank 0 failed"))
write("tcp", "control_error", b"\x03" + frame(2, 4, struct.pack("<ii", 0, 3) + b"peer 3 lost"))
write("tcp", "control_garbage", b"\x03" + frame(7, 0, b"x" * 20))
write("tcp", "huge_length", b"\x01" + struct.pack("<IIQ", 1, 0, 1 << 62))

# --- the fixed-layout decoders (first byte picks the decoder) --------------------------------
write("decoders", "hello", b"\x00" + tcp_hello(1))
write("decoders", "reply", b"\x01" + struct.pack("<IIII", REPLY, 0, 0, 0) + bytes(64))
write("decoders", "verdict", b"\x02" + struct.pack("<IIII", REPLY, 9, 3, 0))
write("decoders", "frame", b"\x03" + struct.pack("<IIQ", 1, 7, 4096))
write("decoders", "blob", b"\x04" + struct.pack("<IIQHH", BLOB, TCP_VERSION, JOB_ID, 2, 29500) +
      bytes([127, 0, 0, 1]) + bytes(12))
fp = struct.pack("<IIBBBBiQQ", 0x524C4348, 1, 1, 0, 0, 0, -1, 7, 1024)
write("decoders", "fingerprint_same", b"\x05" + fp + fp)
write("decoders", "fingerprint_other", b"\x05" + fp + struct.pack("<IIBBBBiQQ", 0x524C4348, 1, 2,
                                                                  0, 0, 0, 3, 7, 1024))
write("decoders", "counter", b"\x06" + b"-9223372036854775808")
write("decoders", "counter_bad", b"\x06" + b"12x")
