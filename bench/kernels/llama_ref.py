#!/usr/bin/env python3
"""llama_ref.py: llama.cpp's decode time per token for the default model, the
reference the engine's decode speed goal is set against (>= 0.8x its tok/s).

Prints one "THREADS:MS" per thread count for bench_kernels --llama. Needs
llama-cpp-python and the model file; prints nothing (exit 0) without them.
Usage: llama_ref.py MODEL THREADS...
"""
import sys
import time

try:
    import llama_cpp
except ImportError:
    sys.exit(0)


def main():
    model = sys.argv[1]
    for n_threads in [int(t) for t in sys.argv[2:]]:
        llm = llama_cpp.Llama(model_path=model, n_ctx=512, n_threads=n_threads,
                              n_threads_batch=n_threads, verbose=False)
        toks = llm.tokenize(b"The quick brown fox jumps over the lazy dog")
        best = float("inf")
        for _ in range(5):
            llm.reset()
            llm.eval(toks)
            n = 32
            t0 = time.perf_counter()
            for _ in range(n):
                llm.eval([toks[-1]])
            best = min(best, (time.perf_counter() - t0) / n)
        print(f"{n_threads}:{best * 1000:.3f}")
        del llm


if __name__ == "__main__":
    main()
