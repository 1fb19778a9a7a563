#!/usr/bin/env python3
"""compare_k_quants.py: splitmesh's Q4_K/Q6_K quantizers against llama.cpp's.

splitmesh's K-quant quantizers are its own (a least-squares fit per
sub-block and a small search over the 6/8-bit scales), not a copy of
ggml's, so their bytes differ from llama.cpp's; the format is the same
(dequantization is golden-checked). This measures quality: the relative
RMS error of each tensor against the f32 original, averaged, for a tiny
model quantized by `splitmesh tiny-model --type` and by llama.cpp's
llama_model_quantize. Needs llama-cpp-python and gguf (pip install).

    python3 tests/golden/ggml/compare_k_quants.py build/bin/splitmesh
"""
import ctypes
import os
import subprocess
import sys
import tempfile

import gguf
import llama_cpp
import numpy as np

SHAPE = ["--dim", "512", "--ff", "1024", "--heads", "8", "--kv-heads", "8", "--layers", "2", "--seed", "5"]


def quantize_llama(src, dst, ftype):
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 1
    assert llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) == 0


def load(path):
    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, np.asarray(gguf.quants.dequantize(t.data, t.tensor_type),
                                                    dtype=np.float32).reshape(-1)) for t in r.tensors}


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/bin/splitmesh"
    d = tempfile.mkdtemp()
    f32 = os.path.join(d, "f32.gguf")
    runs = [("splitmesh q4_K", "q4_K", None), ("llama.cpp Q4_K_S", None, 14),
            ("splitmesh q6_K", "q6_K", None), ("llama.cpp Q6_K", None, 18)]
    subprocess.run([tool, "tiny-model", "--out", f32] + SHAPE, check=True, capture_output=True)
    ref = load(f32)
    for label, ours, ftype in runs:
        out = os.path.join(d, label.replace(" ", "_") + ".gguf")
        if ours:
            subprocess.run([tool, "tiny-model", "--out", out, "--type", ours] + SHAPE, check=True, capture_output=True)
        else:
            quantize_llama(f32, out, ftype)
        errs = {}
        for name, (ty, x) in load(out).items():
            if name.endswith("norm.weight"):
                continue
            r = ref[name][1]
            errs.setdefault(ty, []).append(float(np.sqrt(np.mean((x - r) ** 2) / np.mean(r ** 2))))
        print(f"{label:18s} " + "  ".join(f"{ty}: {np.mean(v):.4f} ({len(v)} tensors)" for ty, v in sorted(errs.items())))


if __name__ == "__main__":
    main()
