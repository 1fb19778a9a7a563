#!/usr/bin/env python3
"""make_corpus_wire.py: the committed seed corpora for fuzz_codec and fuzz_mdp.

fuzz/corpus/codec/: for every message of schemas/messages.toml, its example
(as {v, t, ...fields} and bare), then variants that break it one field at a
time (field dropped, nil, wrong type, negative, huge, over-long string), each
prefixed with one byte naming the message (id - 1, as fuzz_codec.c reads it).

fuzz/corpus/mdp/: MDP/0.2 messages in fuzz_mdp.c's framing (first byte:
0 raw, 1 client REQUEST header added, 2 worker header added; then frames,
each a 2-byte little-endian length and its bytes): client requests with
session bodies, MMI, bad commands, worker READY with and without capacity
frames, replies for unknown clients, heartbeats, disconnects, garbage.

Deterministic (file names are content hashes). Needs msgpack (Debian's
python3-msgpack): /usr/bin/python3 fuzz/make_corpus_wire.py
"""
import hashlib
import os
import struct

import msgpack

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
TOML = os.path.join(HERE, "..", "schemas", "messages.toml")


def write(dirname, data):
    out = os.path.join(HERE, "corpus", dirname)
    os.makedirs(out, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def fix(value):
    """Example values: 'hex:..' strings are bin; recurse into tables/arrays."""
    if isinstance(value, str) and value.startswith("hex:"):
        return bytes.fromhex(value[4:])
    if isinstance(value, dict):
        return {k: fix(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fix(v) for v in value]
    return value


def codec_corpus(doc):
    for mid, m in enumerate(doc["message"], start=1):
        ex = fix(m.get("example", {}))
        prefix = bytes([mid - 1])
        full = {"v": 1, "t": m["name"], **ex}

        def emit(obj):
            write("codec", prefix + msgpack.packb(obj, use_bin_type=True))

        emit(full)
        emit(ex)
        emit({"v": 2, "t": m["name"], **ex})
        emit({"v": 1, "t": "no_such_message", **ex})
        for key in ex:
            for bad in (None, "x", -1, 2 ** 40, -(2 ** 63), 1.5e308, b"\x00\xff",
                        [], {}, "\u00e9" * 300, [ex[key]] * 3):
                emit({**full, key: bad})
            emit({k: v for k, v in full.items() if k != key})
        # truncated and doubled-key encodings of the full example
        packed = msgpack.packb(full, use_bin_type=True)
        for cut in (1, len(packed) // 2, len(packed) - 1):
            write("codec", prefix + packed[:cut])
        if len(full) > 2:
            raw = bytearray(packed)
            raw[0] = (raw[0] & 0xF0) | min(15, (raw[0] & 0x0F) + 1) if raw[0] & 0xF0 == 0x80 else raw[0]
            write("codec", prefix + bytes(raw) + msgpack.packb("v") + msgpack.packb(1))


def frames(mode, *parts):
    out = bytes([mode])
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        out += struct.pack("<H", len(p)) + p
    return out


def mdp_corpus():
    pk = lambda o: msgpack.packb(o, use_bin_type=True)
    bodies = [pk({"v": 1, "t": "tokenize", "session": "abc123", "text": "hi"}),
              pk({"v": 1, "session": "s" * 64}), pk({"v": 1, "session": "s" * 65}),
              pk({"v": 9, "session": "x"}), pk({"v": 1, "session": 7}),
              pk({"session": None}), pk([1, 2, 3]), b"", b"plain bytes",
              pk({"a": {"b": {"c": [[[[{"d": 1}]]]]}}}), b"\xdf\xff\xff\xff\xff",
              b"\x81\xa7session\xdb\xff\xff\xff\xff"]
    for body in bodies:
        write("mdp", frames(1, "tokenizer", body))
        write("mdp", frames(1, "tokenizer", body, body))
        write("mdp", frames(0, "MDPC02", b"\x01", "echo", body))
        write("mdp", frames(0, body))
    write("mdp", frames(1, "mmi.service", "echo"))
    write("mdp", frames(1, "mmi.workers", "echo"))
    write("mdp", frames(1, "mmi.bogus", "x"))
    write("mdp", frames(1, "", "x"))
    write("mdp", frames(1, "a\x00b", "x"))
    write("mdp", frames(1, "s" * 256, "x"))
    write("mdp", frames(1, "echo"))
    write("mdp", frames(0, "MDPC02", b"\x02", "echo", "x"))
    write("mdp", frames(0, "MDPC02", b"\x01\x01", "echo", "x"))
    write("mdp", frames(0, "", "MDPC02", b"\x01", "echo", "x"))   # REQ-style
    write("mdp", frames(0, "MDPC01", b"\x01", "echo", "x"))
    for cap in (pk({"v": 1, "capacity": 4}), pk({"v": 1, "capacity": 0}),
                pk({"v": 1, "capacity": 5000}), pk({"v": 1, "capacity": "x"}),
                pk({"capacity": 2}), b"\x80", b"junk"):
        write("mdp", frames(2, b"\x01", "echo", cap))
    write("mdp", frames(2, b"\x01", "echo"))
    write("mdp", frames(2, b"\x01", "mmi.service"))
    write("mdp", frames(2, b"\x01", ""))
    write("mdp", frames(2, b"\x04", "client-id", "", "reply"))
    write("mdp", frames(2, b"\x03", "client-id", "", "partial"))
    write("mdp", frames(2, b"\x04", "client-id", "x", "reply"))
    write("mdp", frames(2, b"\x04"))
    write("mdp", frames(2, b"\x05"))
    write("mdp", frames(2, b"\x06"))
    write("mdp", frames(2, b"\x07"))
    write("mdp", frames(2, b"\x02", "c", "", "x"))
    write("mdp", frames(2))
    write("mdp", frames(0))
    write("mdp", b"\x00")


def main():
    with open(TOML, "rb") as f:
        doc = tomllib.load(f)
    codec_corpus(doc)
    mdp_corpus()


if __name__ == "__main__":
    main()
