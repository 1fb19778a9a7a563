#!/usr/bin/env bash
# Runs bench_tokenizer on the golden corpus and records its numbers, with the
# machine, the commit and the command, in bench/results/tokenizer.json and
# bench/results/tokenizer.md. Vocabularies: the default model
# ($SPLITMESH_MODEL or models/), llama.cpp's llama-spm vocab (committed with
# the goldens) and, when fetched (scripts/reference/fetch_llama_vocab.sh),
# gpt-2 and llama-bpe. When python3 has llama_cpp, llama.cpp's own
# tokenizer is timed on the same chunks for comparison.
# Usage: bench/tokenizer/run.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-${SPLITMESH_BUILD_DIR:-build}}
cmake -S . -B "$BUILD_DIR" -DSPLITMESH_BENCH=ON >/dev/null
cmake --build "$BUILD_DIR" --target bench_tokenizer -j2 >/dev/null
MODEL=${SPLITMESH_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
G=tests/golden/tokenizer
vocabs=("smollm=$MODEL" "llama-spm=$G/ggml-vocab-llama-spm.gguf")
for v in gpt-2 llama-bpe; do
  [ -f "models/llama-vocab/ggml-vocab-$v.gguf" ] && vocabs+=("$v=models/llama-vocab/ggml-vocab-$v.gguf")
done
corpus=$(mktemp); trap 'rm -f "$corpus"' EXIT
/usr/bin/python3 scripts/reference/tokenizer_corpus.py --out "$corpus"
read -r -a lens < <(sed -n 3p $G/corpus.txt)
numbers=$("$BUILD_DIR/bin/bench_tokenizer" "$corpus" "${lens[@]}" -- "${vocabs[@]}")
reference=null
if python3 -c "import llama_cpp" 2>/dev/null; then
  reference=$(python3 - "$corpus" "${lens[*]}" "${vocabs[@]}" <<'PY'
import json, sys, time, llama_cpp
corpus = open(sys.argv[1], "rb").read()
lens = [int(x) for x in sys.argv[2].split()]
chunks, o = [], 0
for n in lens:
    chunks.append(corpus[o:o + n]); o += n
out = {}
for spec in sys.argv[3:]:
    name, path = spec.split("=", 1)
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        for c in chunks:
            buf = (llama_cpp.llama_token * (len(c) + 8))()
            llama_cpp.llama_tokenize(vocab, c, len(c), buf, len(c) + 8, False, False)
        best = min(best, time.perf_counter() - t)
    out[name] = {"encode_s": round(best, 3), "encode_MBps": round(len(corpus) / best / 1e6, 2)}
print(json.dumps({"llama_cpp_python": llama_cpp.__version__, "vocabularies": out}))
PY
)
fi
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- core/tokenizer.c core/tokenizer_gguf.c bench/tokenizer || echo "-dirty")
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p bench/results
cat > bench/results/tokenizer.json <<JSON
{"bench": "tokenizer", "date": "$date", "commit": "$commit", "cpu": "$cpu",
 "nproc": $(nproc), "loadavg": "$(cut -d' ' -f1-3 /proc/loadavg)", "command": "bench/tokenizer/run.sh $BUILD_DIR",
 "build_type": "$(grep -m1 CMAKE_BUILD_TYPE: "$BUILD_DIR/CMakeCache.txt" | cut -d= -f2)",
 "results": $numbers,
 "llama_cpp_reference": $reference}
JSON
/usr/bin/python3 - bench/results/tokenizer.json > bench/results/tokenizer.md <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r = d["results"]
ref = (d.get("llama_cpp_reference") or {}).get("vocabularies", {})
print("# Tokenizer throughput\n")
print(f"{d['date']}, commit {d['commit']}, {d['cpu']} ({d['nproc']} cores), {d['build_type']}, "
      f"single thread, load average {d['loadavg']} (shared machine: treat as upper bounds). "
      f"Corpus: {r['corpus_bytes']} bytes of varied UTF-8 in {r['chunks']} chunks "
      f"(scripts/reference/tokenizer_corpus.py); best of 3 passes. Command: `{d['command']}`.\n")
print("| vocabulary | tokens | load ms | bytes/token | encode MB/s | encode tokens/s | decode MB/s | llama.cpp encode MB/s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, v in r["vocabularies"].items():
    lc = ref.get(name, {}).get("encode_MBps", "n/a")
    print(f"| {name} | {v['n_vocab']} | {v['load_ms']:.0f} | {v['bytes_per_token']:.2f} | {v['encode_MBps']:.2f} | "
          f"{v['encode_tokens_per_s']:.0f} | {v['decode_MBps']:.0f} | {lc} |")
if ref:
    print(f"\nllama.cpp column: llama-cpp-python {d['llama_cpp_reference']['llama_cpp_python']} "
          "(llama_tokenize per chunk, same corpus, best of 3), measured in the same run.")
PY
cat bench/results/tokenizer.md
