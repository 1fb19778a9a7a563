#!/usr/bin/env python3
"""hf_logits.py: reference logits from Hugging Face transformers for the engine tests.

Loads a GGUF file with transformers (which dequantizes every tensor to fp32
through the `gguf` package), runs a handful of fixed prompts, and writes the
logits at every position to a compact golden file that tests/test_model_golden.c
compares against. Nothing here shares code with splitmesh, so agreement means
splitmesh computes what the model defines.

Golden file layout (little-endian):
  1. magic b"SMLG", uint32 version (1)
  2. uint32 n_prompts, uint32 n_vocab
  3. per prompt: uint32 n_tokens, int32 ids[n_tokens], fp16 logits[n_tokens][n_vocab]
A JSON sidecar (same name + .json) records the prompts, versions, device and
the model's sha256.

Usage (the GPU host has transformers; any machine with torch works):
  python3 scripts/reference/hf_logits.py --model models/X.gguf --out tests/golden/logits/hf_smollm2_f32.bin
"""
import argparse, hashlib, json, os, platform, struct, sys, time

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "<|im_start|>user\nWhat is 17 times 23?<|im_end|>\n<|im_start|>assistant\n",
    "Photosynthesis converts light energy into",
    "Once upon a time, in a small village by the sea, there lived",
    "東京は日本の首都です。 Emoji: 🙂🚀 and numbers 1234567.",
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--out", required=True, help="golden .bin to write")
    ap.add_argument("--device", default="cuda", help="cuda or cpu")
    args = ap.parse_args()

    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = args.device if (args.device != "cuda" or torch.cuda.is_available()) else "cpu"
    # fp32 everywhere and no TF32: the reference must be as exact as fp32 allows.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    folder, name = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    model = model.to(device).eval()

    records = []
    with torch.no_grad():
        for text in PROMPTS:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([ids], device=device)).logits[0].float().cpu().numpy()
            records.append((ids, logits))
            print(f"{len(ids):3d} tokens: {text[:40]!r} top1={[int(r.argmax()) for r in logits][:8]}",
                  file=sys.stderr)

    n_vocab = records[0][1].shape[1]
    with open(args.out, "wb") as f:
        f.write(b"SMLG" + struct.pack("<III", 1, len(records), n_vocab))
        for ids, logits in records:
            f.write(struct.pack("<I", len(ids)))
            f.write(np.asarray(ids, dtype="<i4").tobytes())
            f.write(logits.astype("<f2").tobytes())
    meta = {
        "what": "reference logits, every position, fp16-stored fp32 results",
        "prompts": PROMPTS,
        "token_ids": [ids for ids, _ in records],
        "model_file": name,
        "model_sha256": sha256_file(args.model),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor(),
        "dtype": "float32 (tf32 off)",
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    with open(args.out + ".json", "w") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
