"""golden.py: read/write the logits golden format of scripts/reference/hf_logits.py.

Layout (little-endian), as hf_logits.py writes it and tests/test_forward_ref.c reads it:
  1. magic b"SMLG", uint32 version (1)
  2. uint32 n_prompts, uint32 n_vocab
  3. per prompt: uint32 n_tokens, int32 ids[n_tokens], fp16 logits[n_tokens][n_vocab]
A JSON sidecar (same name + .json) records prompts, token ids, versions, command.
"""
import struct

import numpy as np

MAGIC = b"SMLG"
VERSION = 1


def write_logits(path, entries):
    """entries: list of (ids list[int], logits float32 array [n_tokens, n_vocab])."""
    n_vocab = entries[0][1].shape[1]
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<III", VERSION, len(entries), n_vocab))
        for ids, logits in entries:
            assert logits.shape == (len(ids), n_vocab), logits.shape
            f.write(struct.pack("<I", len(ids)))
            f.write(np.asarray(ids, dtype="<i4").tobytes())
            f.write(np.asarray(logits, dtype=np.float32).astype("<f2").tobytes())


def read_logits(path):
    """Returns (n_vocab, [(ids int32 array, logits float32 array [n, n_vocab])])."""
    data = open(path, "rb").read()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: bad magic")
    version, n, n_vocab = struct.unpack_from("<III", data, 4)
    if version != VERSION:
        raise ValueError(f"{path}: version {version}")
    off, out = 16, []
    for _ in range(n):
        (nt,) = struct.unpack_from("<I", data, off)
        off += 4
        ids = np.frombuffer(data, "<i4", nt, off)
        off += 4 * nt
        logits = np.frombuffer(data, "<f2", nt * n_vocab, off).astype(np.float32).reshape(nt, n_vocab)
        off += 2 * nt * n_vocab
        out.append((ids, logits))
    return n_vocab, out
