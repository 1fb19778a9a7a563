"""llamacpp_check.py: do llama.cpp (llama-cpp-python) load splitmesh's quantized files?

For each GGUF given, loads it with llama.cpp, scores the first --tokens tokens of
--text (one window, logits of every position) and prints one JSON object per
file: loaded (or the error), finite logits, and the perplexity llama.cpp
computes on that window, to compare across files.
Run with the pyenv python3 that has llama_cpp (scripts/install-deps.sh does not
install it: this is an offline check, its result is committed).
"""
import argparse
import json
import math
import sys

import numpy as np
import llama_cpp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", required=True)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    text = open(a.text, encoding="utf-8", errors="replace").read(a.tokens * 16)
    out = []
    for path in a.files:
        rec = {"file": path, "llama_cpp_version": llama_cpp.__version__}
        try:
            llm = llama_cpp.Llama(model_path=path, n_ctx=a.tokens + 8, logits_all=True,
                                  verbose=False, n_threads=2)
            toks = llm.tokenize(text.encode(), add_bos=False, special=False)[: a.tokens]
            llm.reset()
            llm.eval(toks)
            logits = np.array(llm.scores[: len(toks)], dtype=np.float64)
            mx = logits.max(axis=1, keepdims=True)
            lse = (mx + np.log(np.exp(logits - mx).sum(axis=1, keepdims=True)))[:, 0]
            nll = lse[:-1] - logits[np.arange(len(toks) - 1), toks[1:]]
            rec.update(loaded=True, tokens_scored=len(toks) - 1,
                       ppl=float(math.exp(nll.mean())),
                       finite=bool(np.isfinite(logits).all()))
            del llm
        except Exception as e:  # report, do not stop the other files
            rec.update(loaded=False, error=str(e))
        print(json.dumps(rec), flush=True)
        out.append(rec)
    return 0 if all(r.get("loaded") for r in out) else 1


if __name__ == "__main__":
    sys.exit(main())
