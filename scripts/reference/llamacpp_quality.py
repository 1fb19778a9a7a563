#!/usr/bin/env python3
"""llamacpp_quality.py: llama.cpp's own agreement with the transformers fp32 golden.

Evaluates every prompt of tests/golden/logits/hf_smollm2_f32.bin with
llama-cpp-python on the same GGUF and prints, as one JSON line, the same
statistics tests/test_forward_ref.c reports for the engine (top-1 agreement,
worst cosine, mean KL(ref || llama.cpp)): the yardstick for W4/W8 quality.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--golden", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import llama_cpp
    _, ref = golden.read_logits(args.golden)
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=512, logits_all=True, n_threads=args.threads,
                          verbose=False)
    same = tot = 0
    kl = 0.0
    min_cos = 1.0
    for ids, r in ref:
        llm.reset()
        llm.eval([int(i) for i in ids])
        q = np.array(llm.scores[: len(ids)], dtype=np.float64)
        p = r.astype(np.float64)
        same += int((q.argmax(1) == p.argmax(1)).sum())
        tot += len(ids)
        lp = p - p.max(1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(1, keepdims=True))
        lq = q - q.max(1, keepdims=True)
        lq -= np.log(np.exp(lq).sum(1, keepdims=True))
        kl += float((np.exp(lp) * (lp - lq)).sum())
        cos = (p * q).sum(1) / np.linalg.norm(p, axis=1) / np.linalg.norm(q, axis=1)
        min_cos = min(min_cos, float(cos.min()))
    print(json.dumps({"format": "llama.cpp q4_1", "reference": os.path.basename(args.golden),
                      "engine": "llama-cpp-python " + llama_cpp.__version__, "positions": tot,
                      "top1_same": same, "top1_pct": round(100.0 * same / tot, 2),
                      "min_cosine": round(min_cos, 6), "mean_kl": round(kl / tot, 6)}))


if __name__ == "__main__":
    main()
