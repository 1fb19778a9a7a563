#!/usr/bin/env python3
"""make_corpus.py: the committed seed corpus for fuzz_gguf (fuzz/corpus/gguf/).

Small GGUF files built byte by byte with struct (no dependencies), valid
ones covering every metadata type, every tensor type, string arrays and
custom alignment, and invalid ones for each check the reader makes, so the
fuzzer starts next to every branch. Deterministic; run from anywhere:
    python3 fuzz/make_corpus.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
# ggml type -> (block size, bytes per block)
GGML = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 8: (32, 34), 12: (256, 144),
        14: (256, 210), 30: (1, 2)}


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    out = s(key) + struct.pack("<I", vtype)
    if vtype == STR:
        return out + s(value)
    if vtype == ARR:
        etype, items = value
        out += struct.pack("<IQ", etype, len(items))
        if etype == STR:
            return out + b"".join(s(x) for x in items)
        return out + b"".join(struct.pack(SCALAR[etype], x) for x in items)
    return out + struct.pack(SCALAR[vtype], value)


def gguf(kvs, tensors, version=3, alignment=32):
    """tensors: list of (name, ne list, ggml type); data is a byte pattern."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    infos, data = b"", b""
    for name, ne, gtype in tensors:
        bs, ts = GGML[gtype]
        n = 1
        for d in ne:
            n *= d
        nbytes = n // bs * ts
        infos += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", gtype, len(data))
        block = bytes((i * 7 + 3) & 0xFF for i in range(nbytes))
        if gtype in (2, 3, 8):    # sane fp16 scale (0.01) at the start of each block
            block = b"".join(struct.pack("<e", 0.01) + block[i + 2:i + ts] for i in range(0, nbytes, ts))
        data += block + b"\0" * (-nbytes % alignment)
    body = head + infos
    return body + b"\0" * (-len(body) % alignment) + data


def main():
    os.makedirs(OUT, exist_ok=True)
    files = {}
    every_kv = [
        kv("general.architecture", STR, "llama"), kv("k.u8", U8, 200), kv("k.i8", I8, -3),
        kv("k.u16", U16, 60000), kv("k.i16", I16, -300), kv("k.u32", U32, 7), kv("k.i32", I32, -7),
        kv("k.f32", F32, 1e-5), kv("k.bool", BOOL, 1), kv("k.u64", U64, 1 << 40),
        kv("k.i64", I64, -5), kv("k.f64", F64, 0.5), kv("k.strs", ARR, (STR, ["<s>", "", "\u0120the"])),
        kv("k.ints", ARR, (I32, [1, 2, 3])), kv("k.floats", ARR, (F32, [0.5, -1.0])),
        kv("k.empty", ARR, (U8, [])),
    ]
    files["valid_minimal"] = gguf([], [])
    files["valid_v2_metadata"] = gguf(every_kv, [], version=2)
    every_type = [("t.%d" % t, [GGML[t][0] * 2, 2], t) for t in sorted(GGML)]
    files["valid_every_tensor_type"] = gguf([kv("general.architecture", STR, "llama")], every_type)
    files["valid_llama_like"] = gguf(
        [kv("general.architecture", STR, "llama"), kv("llama.block_count", U32, 1),
         kv("llama.embedding_length", U32, 32), kv("tokenizer.ggml.model", STR, "gpt2"),
         kv("tokenizer.ggml.tokens", ARR, (STR, ["<|endoftext|>", "a", "b", "ab", "\u0120"])),
         kv("tokenizer.ggml.token_type", ARR, (I32, [3, 1, 1, 1, 1])),
         kv("tokenizer.ggml.merges", ARR, (STR, ["a b"]))],
        [("token_embd.weight", [32, 5], 2), ("blk.0.attn_norm.weight", [32], 0),
         ("blk.0.attn_q.weight", [32, 32], 8), ("output_norm.weight", [32], 0)])
    files["valid_align64"] = gguf([kv("general.alignment", U32, 64)],
                                  [("a", [4], 0), ("b", [32], 2), ("c", [3, 2], 1)], alignment=64)
    files["valid_4d"] = gguf([], [("t4", [2, 3, 2, 2], 0)])

    base = files["valid_llama_like"]
    files["bad_magic"] = b"GGML" + base[4:]
    files["bad_version1"] = base[:4] + struct.pack("<I", 1) + base[8:]
    files["bad_version99"] = base[:4] + struct.pack("<I", 99) + base[8:]
    files["bad_big_endian"] = base[:4] + struct.pack(">I", 3) + base[8:]
    files["bad_truncated_header"] = base[:13]
    files["bad_truncated_metadata"] = base[:150]
    files["bad_truncated_data"] = base[:-40]
    files["bad_tensor_count"] = b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 0)
    files["bad_kv_count"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 70000)
    files["bad_string_len"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40) + b"x" * 16
    files["bad_array_count"] = gguf([s("a") + struct.pack("<IIQ", ARR, U64, 1 << 62)], [])
    files["bad_nested_array"] = gguf([s("a") + struct.pack("<IIQ", ARR, ARR, 1)], [])
    files["bad_value_type"] = gguf([s("a") + struct.pack("<II", 13, 0)], [])
    files["bad_duplicate_key"] = gguf([kv("a", U32, 1), kv("a", U32, 2)], [])
    files["bad_alignment"] = gguf([kv("general.alignment", U32, 48)], [])
    files["bad_n_dims5"] = gguf([], [("t", [1, 1, 1, 1, 1], 0)])
    files["bad_zero_dim"] = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + s("t") + struct.pack("<IQQIQ", 2, 4, 0, 0, 0) + b"\0" * 64
    files["bad_dim_overflow"] = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + s("t") + \
        struct.pack("<IQQQIQ", 3, 1 << 32, 1 << 32, 1 << 32, 0, 0) + b"\0" * 64
    files["bad_type"] = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + s("t") + struct.pack("<IQIQ", 1, 32, 99, 0) + b"\0" * 96
    files["bad_block_size"] = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + s("t") + struct.pack("<IQIQ", 1, 33, 2, 0) + b"\0" * 96
    files["bad_offset_eof"] = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + s("t") + struct.pack("<IQIQ", 1, 4, 0, 1 << 40) + b"\0" * 64
    files["bad_misaligned"] = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + s("t") + struct.pack("<IQIQ", 1, 4, 0, 8) + b"\0" * 64
    dup = gguf([], [("t", [4], 0), ("u", [4], 0)])
    files["bad_duplicate_tensor"] = dup.replace(s("u"), s("t"), 1)
    files["bad_overlap"] = b"GGUF" + struct.pack("<IQQ", 3, 2, 0) + s("a") + struct.pack("<IQIQ", 1, 16, 0, 0) + \
        s("b") + struct.pack("<IQIQ", 1, 4, 0, 32)
    files["bad_overlap"] += b"\0" * (-len(files["bad_overlap"]) % 32) + b"\0" * 96
    for name, data in files.items():
        with open(os.path.join(OUT, name + ".gguf"), "wb") as f:
            f.write(data)
    print(f"{len(files)} files in {OUT}, {sum(len(d) for d in files.values())} bytes")


if __name__ == "__main__":
    main()
