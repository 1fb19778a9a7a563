#!/usr/bin/env python3
"""llamacpp_greedy.py: greedy continuations from llama.cpp (PyPI llama-cpp-python) for the golden.

For each prompt of the transformers golden (its stored token ids, so no
tokenizer is involved) it decodes --tokens tokens greedily, one token per
step, and records at every step the chosen token and the margin between the
best and second-best logits. tests/test_forward_ref.c runs the engine
greedily on the same ids and allows a divergence only at a step whose margin
here is below 1e-3 (a near-tie that rounding may flip).

With --kv-f32 llama.cpp keeps K and V in f32 (type_k = type_v = 0, no
flash attention); run on an F32 GGUF (gguf_to_f32.py) that makes llama.cpp
compute the same function as the engine's F32 path (f32 x f32 matmuls, f32
attention), so any divergence must sit at a near-tie. On the Q4_1 file
llama.cpp quantizes activations to q8_1 and caches K/V in f16: a different
function, kept as a looser comparison for the engine's W4 path.

Output: a text file, one record per line, which C parses with strtol/strtof:
  prompt <n> <id> ...
  gen <n> <id> ...
  margin <n> <float> ...
Lines starting with '#' are comments (reference version, command).

  python3 scripts/reference/llamacpp_greedy.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
      --ids-from tests/golden/logits/hf_smollm2_f32.bin \
      --out tests/golden/greedy/llamacpp_smollm2_q4_1.txt
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden  # noqa: E402


def last_logits(llm):
    """Logits of the last evaluated position. With logits_all=False
    llama-cpp-python 0.3.x no longer copies them into llm.scores, so read
    them from the context (the batch's one output row)."""
    import llama_cpp
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids-from", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kv-f32", action="store_true", help="f32 K/V cache, no flash attention")
    args = ap.parse_args()

    import llama_cpp
    _, ref = golden.read_logits(args.ids_from)
    extra = dict(type_k=0, type_v=0, flash_attn=False) if args.kv_f32 else {}
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=512, n_batch=512, logits_all=False,
                          n_threads=args.threads, verbose=False, **extra)
    lines = [f"# llama-cpp-python {llama_cpp.__version__} CPU greedy, {args.threads} threads, "
             f"model {os.path.basename(args.model)}, prompt ids from {os.path.basename(args.ids_from)}, "
             f"KV cache {'f32' if args.kv_f32 else 'default (f16)'}",
             f"# command: {' '.join(sys.argv)}"]
    for ids, _ in ref:
        ids = [int(i) for i in ids]
        llm.reset()
        llm.eval(ids)
        gen, margins = [], []
        for _ in range(args.tokens):
            logits = last_logits(llm)
            order = np.argsort(-logits, kind="stable")
            gen.append(int(order[0]))
            margins.append(float(logits[order[0]] - logits[order[1]]))
            llm.eval([int(order[0])])
        lines.append(f"prompt {len(ids)} " + " ".join(map(str, ids)))
        lines.append(f"gen {len(gen)} " + " ".join(map(str, gen)))
        lines.append(f"margin {len(margins)} " + " ".join(f"{m:.6g}" for m in margins))
        print(repr(llm.detokenize(gen).decode("utf-8", "replace")), file=sys.stderr)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
