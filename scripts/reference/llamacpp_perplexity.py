#!/usr/bin/env python3
"""llamacpp_perplexity.py: llama.cpp's perplexity with exactly `splitmesh perplexity`'s method.

Tokenizes the file with llama.cpp's tokenizer (no BOS), takes the first
--tokens ids, cuts them into non-overlapping windows of --ctx, evaluates each
window from an empty cache and scores every token after the window's first.
bench/engine/perplexity.sh puts its number beside the engine's F32/W8/W4 ones.
Prints one JSON object.
"""
import argparse
import json
import os
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import llama_cpp
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.ctx, n_batch=args.ctx, n_ubatch=args.ctx,
                          logits_all=True, n_threads=args.threads, n_threads_batch=args.threads,
                          verbose=False)
    text = open(args.file, "rb").read()
    ids = llm.tokenize(text, add_bos=False, special=False)
    n = min(args.tokens, len(ids))
    windows = n // args.ctx
    nll, scored, t0 = 0.0, 0, time.perf_counter()
    for w in range(windows):
        win = ids[w * args.ctx:(w + 1) * args.ctx]
        llm.reset()
        llm.eval(win)
        logits = np.array(llm.scores[: args.ctx - 1], dtype=np.float64)
        mx = logits.max(1, keepdims=True)
        lse = np.log(np.exp(logits - mx).sum(1)) + mx[:, 0]
        nll += float((lse - logits[np.arange(args.ctx - 1), win[1:]]).sum())
        scored += args.ctx - 1
    secs = time.perf_counter() - t0
    print(json.dumps({"format": "llama.cpp q4_1", "engine": "llama.cpp " + llama_cpp.__version__,
                      "file": os.path.basename(args.file), "file_tokens": len(ids),
                      "tokens": windows * args.ctx, "ctx": args.ctx, "windows": windows, "scored": scored,
                      "perplexity": round(float(np.exp(nll / scored)), 4), "seconds": round(secs, 1),
                      "tokens_per_s": round(windows * args.ctx / secs, 1)}))


if __name__ == "__main__":
    main()
