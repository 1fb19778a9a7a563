#!/usr/bin/env python3
"""tokenizer_hf_check.py: Hugging Face `tokenizers` against the llama.cpp goldens (SmolLM2).

The goldens come from llama.cpp. This cross-checks them with the Hugging Face
tokenizers library, configured as SmolLM2's tokenizer.json is (BPE, pre-
tokenizer Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=
False)], byte-level decoder) with the vocabulary and merges read from the
GGUF, and reports how many corpus chunks and Unicode blocks give identical
ids. Special tokens are not added as such: the goldens are for
parse_special=false, where "<|im_start|>" in text is plain text.

Usage: python3 scripts/reference/tokenizer_hf_check.py --model SmolLM2.gguf
(needs pip packages tokenizers and gguf; the corpus is regenerated).
"""
import argparse
import hashlib
import os
import struct
import subprocess
import sys

import gguf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "..", "tests", "golden", "tokenizer")


def ids_hash(ids):
    return hashlib.sha256(struct.pack("<%di" % len(ids), *ids)).hexdigest()


def unicode_block(blk):
    return "".join(f"a{chr(cp)}1{chr(cp)} {chr(cp)}{chr(cp)}a {chr(cp)}'s\n"
                   for cp in range(blk * 256, blk * 256 + 256))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    r = gguf.GGUFReader(a.model)
    f = r.fields["tokenizer.ggml.tokens"]
    toks = [bytes(f.parts[i]).decode() for i in f.data]
    m = r.fields["tokenizer.ggml.merges"]
    merges = [tuple(bytes(m.parts[i]).decode().split(" ", 1)) for i in m.data]
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()

    tmp = os.path.join(GOLDEN, ".hf-corpus.tmp")
    subprocess.run([sys.executable, os.path.join(HERE, "tokenizer_corpus.py"), "--out", tmp], check=True)
    corpus = open(tmp, "rb").read()
    os.unlink(tmp)
    lines = open(os.path.join(GOLDEN, "corpus.txt")).read().split("\n")
    lens = [int(x) for x in lines[2].split()]
    gold = [ln.split() for ln in open(os.path.join(GOLDEN, "smollm_chunks.txt")) if not ln.startswith("#")]
    same, o, diff = 0, 0, []
    for i, n in enumerate(lens):
        ids = tk.encode(corpus[o:o + n].decode(), add_special_tokens=False).ids
        o += n
        if ids_hash(ids) == gold[i][2]:
            same += 1
        else:
            diff.append(i)
    print(f"corpus: {same} of {len(lens)} chunks ({len(corpus)} bytes) give llama.cpp's ids; differing {diff}")

    bad = []
    gold_u = [ln.split() for ln in open(os.path.join(GOLDEN, "smollm_unicode.txt")) if not ln.startswith("#")]
    checked = 0
    for blk_s, _, sha in gold_u:
        blk = int(blk_s)
        if 0xD8 <= blk <= 0xDF:
            continue                    # surrogates: not representable in HF's strings
        checked += 1
        if ids_hash(tk.encode(unicode_block(blk), add_special_tokens=False).ids) != sha:
            bad.append(f"U+{blk * 256:04X}")
    print(f"unicode blocks: {checked - len(bad)} of {checked} agree with llama.cpp; differing: {' '.join(bad)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
