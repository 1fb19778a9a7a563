#!/usr/bin/env python3
"""llamacpp_bench.py: llama.cpp's prompt and decode tokens/s on the same file and tokens.

The counterpart of bench_engine.c, measured the same way: a prefill of the
first P token ids in one eval call, then D greedy steps of one token each
(eval, then argmax over the last logits), best of R runs, wall clock.
With --tokenize TEXTFILE --out IDS it instead writes the ids both benchmarks
use (llama.cpp's tokenizer on the start of the text).

Prints one JSON object per line, like bench_engine.
"""
import argparse
import json
import sys
import time

import numpy as np


def last_logits(llm):
    """Logits of the last evaluated position. With logits_all=False
    llama-cpp-python 0.3.x no longer copies them into llm.scores, so read
    them from the context (the batch's one output row)."""
    import llama_cpp
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", help="file of whitespace-separated ids")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tokenize", help="text file to tokenize into --out")
    ap.add_argument("--out")
    args = ap.parse_args()

    import llama_cpp
    if args.tokenize:
        llm = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)
        text = open(args.tokenize, encoding="utf-8").read(20000)
        ids = llm.tokenize(text.encode(), add_bos=False, special=False)
        open(args.out, "w").write(" ".join(map(str, ids)) + "\n")
        print(f"wrote {len(ids)} ids to {args.out}", file=sys.stderr)
        return

    ids = [int(t) for t in open(args.tokens).read().split()][: args.prompt]
    assert len(ids) == args.prompt, f"need {args.prompt} ids, have {len(ids)}"
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.prompt + args.decode + 16,
                          n_batch=max(args.prompt, 32), n_ubatch=max(args.prompt, 32),
                          n_threads=args.threads, n_threads_batch=args.threads,
                          logits_all=False, verbose=False)
    best_p = best_d = 0.0
    for _ in range(args.repeat):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        for _ in range(args.decode):
            tok = int(np.argmax(last_logits(llm)))
            llm.eval([tok])
        t2 = time.perf_counter()
        best_p = max(best_p, args.prompt / (t1 - t0))
        best_d = max(best_d, args.decode / (t2 - t1))
    print(json.dumps({"engine": "llama.cpp", "version": llama_cpp.__version__, "format": "q4_1 file",
                      "threads": args.threads, "prompt_tokens": args.prompt,
                      "prompt_tps": round(best_p, 2), "decode_tokens": args.decode,
                      "decode_tps": round(best_d, 2)}))


if __name__ == "__main__":
    main()
