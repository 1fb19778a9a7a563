#!/usr/bin/env python3
"""make_golden.py: golden files for splitmesh's ggml (de)quantizers.

The reference is the Python `gguf` package (llama.cpp's own gguf-py:
`pip install gguf numpy`), whose quants module mirrors ggml's scalar code.
For each type this writes tests/golden/ggml/<type>.bin:

  1. magic b"SMGG", then uint32 LE: version (1), ggml type, n (elements),
     nbytes (bytes of n elements of the type), flags (bit 0: quantize section)
  2. dequantize section: nbytes of random blocks, then n float32 = gguf's
     dequantize of them
  3. quantize section (types gguf-py can quantize): n float32 inputs, then
     nbytes = gguf's quantize of them

tests/test_ggml_types.c compares splitmesh's results bit for bit. Random
blocks have sane fp16 scales (no NaN) so the comparison is of the formats,
not of NaN payload handling, which the C test checks on its own.

Run: python3 tests/golden/ggml/make_golden.py   (deterministic: fixed seed)
"""
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

OUT = os.path.dirname(os.path.abspath(__file__))
N = 512  # elements per file: 2 K-quant super-blocks, 16 small blocks

rng = np.random.default_rng(20261121)


def fp16_bytes(values):
    return np.asarray(values, dtype=np.float32).astype(np.float16).view(np.uint8).reshape(-1, 2)


def random_blocks(qtype):
    """Random raw blocks whose fp16 scale fields hold sane finite values."""
    bs, ts = GGML_QUANT_SIZES[qtype]
    nb = N // bs
    raw = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    if qtype == T.F16:
        v = rng.integers(0, 1 << 16, size=N, dtype=np.uint16)
        v = np.where((v & 0x7C00) == 0x7C00, v & 0x83FF, v)  # no inf/NaN from random
        v[:8] = [0x0000, 0x8000, 0x0001, 0x83FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00]  # zeros, subnormals, normals, infs
        return v.view(np.uint8).reshape(nb, ts)
    if qtype == T.BF16:
        v = rng.integers(0, 1 << 16, size=N, dtype=np.uint16)
        v = np.where((v & 0x7F80) == 0x7F80, v & 0x807F, v)  # no inf/NaN from random
        v[:6] = [0x0000, 0x8000, 0x0001, 0x7F7F, 0x7F80, 0xFF80]
        return v.view(np.uint8).reshape(nb, ts)
    if qtype in (T.Q4_0, T.Q8_0, T.Q5_0):
        raw[:, 0:2] = fp16_bytes(rng.normal(0, 0.02, nb))
    elif qtype in (T.Q4_1, T.Q5_1):
        raw[:, 0:2] = fp16_bytes(rng.uniform(0, 0.01, nb))
        raw[:, 2:4] = fp16_bytes(rng.normal(0, 0.05, nb))
    elif qtype == T.Q4_K:
        raw[:, 0:2] = fp16_bytes(rng.uniform(0, 0.001, nb))
        raw[:, 2:4] = fp16_bytes(rng.uniform(0, 0.001, nb))
    elif qtype == T.Q6_K:
        raw[:, -2:] = fp16_bytes(rng.normal(0, 0.001, nb))
    return raw


def quant_inputs(qtype):
    """Inputs that exercise rounding: normal weights, zeros, ties, extremes."""
    x = rng.normal(0, 1, N).astype(np.float32) * np.repeat(
        np.float32([0.02, 1.0, 1e-3, 50.0, 0.1, 3.0, 1e-6, 0.5] * 2), N // 16)
    x[32:64] = 0.0                       # an all-zero block
    x[64:96] = 0.25                      # a constant block
    x[96:128] = np.linspace(-1, 1, 32)   # evenly spaced, exact ties for q8_0
    if qtype == T.F16:
        x[128:160] = [65504, 65519, 65520, -65520, 1e6, 6.1e-5, 6.0e-5, 5.96e-8,
                      2.98e-8, 2.9802322e-08, 1.5e-8, -3e-8, 1.0009765625, 1.00048828125,
                      1.00146484375, 2049, 2051, 4097, -0.0, 0.1, 0.2, 0.3, 1 / 3,
                      65536, 1e-7, 1.2e-7, 3.1e-5, 3.05e-5, 6.097555e-05, 6.103516e-05,
                      1.0, -1.0]
    if qtype == T.BF16:
        x[128:136] = [3.4e38, -3.4e38, 1e-40, 1.00390625, 1.01171875, 1.0078125, 3e38, 1.0]
    return x


def main():
    types = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q8_0, T.Q4_K, T.Q6_K, T.Q5_0, T.Q5_1]
    can_quantize = {T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q8_0, T.Q5_0, T.Q5_1}
    for qtype in types:
        bs, ts = GGML_QUANT_SIZES[qtype]
        nbytes = N // bs * ts
        if qtype == T.F32:
            raw = rng.normal(0, 1, N).astype(np.float32).view(np.uint8).reshape(-1, 4)
            deq = raw.view(np.float32).reshape(-1)
        else:
            raw = random_blocks(qtype)
            deq = quants.dequantize(raw.reshape(-1), qtype).astype(np.float32).reshape(-1)
        assert raw.size == nbytes and deq.size == N
        flags = 1 if qtype in can_quantize else 0
        parts = [b"SMGG", struct.pack("<5I", 1, int(qtype), N, nbytes, flags),
                 raw.tobytes(), deq.tobytes()]
        if flags:
            x = quant_inputs(qtype)
            q = quants.quantize(x.reshape(1, -1), qtype)
            q = np.asarray(q).view(np.uint8).reshape(-1)
            assert q.size == nbytes, (qtype, q.size, nbytes)
            parts += [x.tobytes(), q.tobytes()]
        path = os.path.join(OUT, qtype.name.lower() + ".bin")
        with open(path, "wb") as f:
            f.write(b"".join(parts))
        print(f"{path}: {sum(len(p) for p in parts)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
