#!/usr/bin/env python3
"""llamacpp_logits.py: reference logits from llama.cpp (PyPI llama-cpp-python) on the same GGUF.

llama.cpp evaluates the file's own quantized weights (Q4_1 matrices with
8-bit activations on CPU), so its logits are a second, independent
reference beside transformers' fp32 ones. It evaluates exactly the token ids
stored in the transformers golden (hf_logits.py), so both references and the
engine see the same inputs, and writes the same golden format (golden.py)
plus a JSON sidecar.

  python3 scripts/reference/llamacpp_logits.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
      --ids-from tests/golden/logits/hf_smollm2_f32.bin --select 0,3 \
      --out tests/golden/logits/llamacpp_smollm2_q4_1.bin
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids-from", required=True, help="golden whose token ids to evaluate")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--select", default="0,3",
                    help="indices of the prompts to keep (the file stays ~1 MB)")
    args = ap.parse_args()

    import llama_cpp
    _, ref = golden.read_logits(args.ids_from)
    ref = [ref[int(i)] for i in args.select.split(",")]
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=512, n_batch=512, logits_all=True,
                          n_threads=args.threads, verbose=False)
    entries = []
    for ids, _ in ref:
        ids = [int(i) for i in ids]
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
        entries.append((ids, logits))
        print(f"{len(ids)} tokens, top1 {logits.argmax(1).tolist()[:8]}", file=sys.stderr)
    golden.write_logits(args.out, entries)
    meta = {"what": "llama.cpp logits, every position, fp16-stored",
            "token_ids_from": os.path.basename(args.ids_from), "prompts_selected": args.select,
            "model_file": os.path.basename(args.model),
            "llama_cpp_python": llama_cpp.__version__, "threads": args.threads,
            "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    with open(args.out + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
