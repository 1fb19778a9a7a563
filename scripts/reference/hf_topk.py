#!/usr/bin/env python3
"""hf_topk.py: compact transformers reference logits on many positions, for the accuracy tests.

hf_logits.py stores whole fp16 rows (98 KB a position), which caps a golden
at about 100 positions. This script stores, for every position of a larger
and more varied prompt set (chat template, prose, code, several languages,
math; >= 400 positions), only what the top-1 / KL tests need, in fp32:
  - the K best logits and their token ids (descending), and
  - the row's log-sum-exp over the whole vocabulary,
so the reference's top-1, its top-two margin, its probabilities over the top
K and the probability mass outside them are exact. A C test compares the
engine's full rows with these: top-1 agreement and KL(reference || engine)
with the tail outside the reference's top K merged into one bin (a lower
bound of the full KL, by the data-processing inequality; the sidecar
records how much mass the tail holds: little where the model is confident,
up to about half at the flattest positions, such as a prompt's first).

Golden layout (little-endian):
  1. magic b"SMLK", uint32 version (1)
  2. uint32 n_prompts, uint32 n_vocab, uint32 k
  3. per prompt: uint32 n_tokens, int32 ids[n_tokens], then per position:
     float32 lse, int32 top_ids[k], float32 top_logits[k]
A JSON sidecar (same name + .json) records prompts, ids, versions, command.

Made on the CPU (transformers fp32 has no TF32 there) in a throwaway venv:
  python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch transformers gguf numpy
  /tmp/hfvenv/bin/python scripts/reference/hf_topk.py \
      --model /work/models/SmolLM2-135M-Instruct.Q4_1.gguf --out tests/golden/logits/hf_smollm2_topk.bin
"""
import argparse, hashlib, json, os, platform, struct, sys, time

#  Varied on purpose: ChatML turns (the instruct model's home), English
#  prose, code in three languages, French, German, Spanish, Chinese,
#  Japanese, Russian, arithmetic and a list. Raw text, tokenized without
#  added specials (the chat ones carry their own <|im_start|> markers).
PROMPTS = [
    "<|im_start|>system\nYou are a helpful assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nExplain in two sentences why the sky is blue during the day and red at sunset."
    "<|im_end|>\n<|im_start|>assistant\nThe sky looks blue because air molecules scatter short "
    "wavelengths of sunlight much more strongly than long ones.",
    "<|im_start|>user\nWrite a haiku about autumn leaves.<|im_end|>\n<|im_start|>assistant\n"
    "Crimson leaves drifting,\nwhispers of the cooling wind,\nthe year exhales slow.<|im_end|>\n"
    "<|im_start|>user\nNow one about winter.<|im_end|>\n<|im_start|>assistant\n",
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
    "combined movable metal type, oil-based ink and a wooden press adapted from those used for wine. "
    "Within fifty years, printing shops had spread to more than two hundred cities across Europe, "
    "and the price of books fell so sharply that reading became an ordinary skill rather than a "
    "privilege of the clergy and the nobility.",
    "import numpy as np\n\n\ndef softmax(x, axis=-1):\n    \"\"\"Numerically stable softmax.\"\"\"\n"
    "    z = x - np.max(x, axis=axis, keepdims=True)\n    e = np.exp(z)\n"
    "    return e / e.sum(axis=axis, keepdims=True)\n\n\nclass Linear:\n"
    "    def __init__(self, n_in, n_out):\n        self.w = np.random.randn(n_out, n_in) * 0.02\n",
    "#include <stdio.h>\n#include <stdlib.h>\n\nstatic int\ncompare (const void *a, const void *b)\n{\n"
    "    int x = *(const int *) a, y = *(const int *) b;\n    return (x > y) - (x < y);\n}\n\n"
    "int\nmain (int argc, char **argv)\n{\n    int v[] = { 5, 3, 9, 1 };\n    qsort (v, 4, sizeof v[0], compare);\n",
    "La Révolution française commence en 1789 avec la convocation des états généraux. "
    "Die Französische Revolution veränderte die politische Ordnung Europas grundlegend. "
    "La Revolución Francesa influyó en los movimientos de independencia de América Latina.",
    "人工知能は、人間の知能を模倣するコンピュータシステムです。 机器学习是人工智能的一个分支，"
    "它使计算机能够从数据中学习。 Искусственный интеллект быстро развивается.",
    "Question: A train leaves at 9:40 and arrives at 13:15. How long is the trip?\n"
    "Answer: From 9:40 to 13:40 is 4 hours, minus 25 minutes, so the trip takes 3 hours and 35 minutes.\n"
    "Question: What is 17 * 23?\nAnswer: 17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.\n"
    "Shopping list:\n- 2 kg apples\n- 1 loaf of bread\n- 6 eggs\n- olive oil\n",
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
    ap.add_argument("--k", type=int, default=64, help="logits kept per position")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    folder, name = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()

    records, tails = [], []
    with torch.no_grad():
        for text in PROMPTS:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0].double()
            lse = torch.logsumexp(logits, dim=-1)
            top = torch.topk(logits, args.k, dim=-1)
            tail = 1.0 - torch.exp(top.values - lse[:, None]).sum(-1)
            tails.append((float(tail.max()), float(tail.mean())))
            records.append((ids, lse.float().numpy(), top.indices.numpy().astype("<i4"),
                            top.values.float().numpy()))
            print(f"{len(ids):3d} tokens: {text[:40]!r} max tail mass {tails[-1][0]:.2e}, mean {tails[-1][1]:.2e}", file=sys.stderr)

    n_vocab = int(model.config.vocab_size)
    with open(args.out, "wb") as f:
        f.write(b"SMLK" + struct.pack("<IIII", 1, len(records), n_vocab, args.k))
        for ids, lse, top_ids, top_vals in records:
            f.write(struct.pack("<I", len(ids)))
            f.write(np.asarray(ids, dtype="<i4").tobytes())
            for t in range(len(ids)):
                f.write(struct.pack("<f", float(lse[t])))
                f.write(top_ids[t].astype("<i4").tobytes())
                f.write(top_vals[t].astype("<f4").tobytes())
    meta = {
        "what": f"transformers fp32 reference: top-{args.k} logits (fp32) and log-sum-exp at every position",
        "positions": sum(len(r[0]) for r in records),
        "max_tail_mass_outside_top_k": max(t[0] for t in tails),
        "mean_tail_mass_outside_top_k": sum(t[1] * len(r[0]) for t, r in zip(tails, records))
                                        / sum(len(r[0]) for r in records),
        "prompts": PROMPTS,
        "token_ids": [r[0] for r in records],
        "model_file": name,
        "model_sha256": sha256_file(args.model),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": "cpu " + platform.processor(),
        "dtype": "float32",
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    with open(args.out + ".json", "w") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes), {meta['positions']} positions",
          file=sys.stderr)


if __name__ == "__main__":
    main()
