#!/usr/bin/env python3
"""bench/e2e/e2e.py: cloud-only vs split speculative decoding over an emulated link.

Drives the real mesh the way a user does: for each emulated round-trip time
it starts a mesh (`splitmesh up --link rtt=R`), sends the same prompts in
three ways (`splitmesh generate --json`): cloud_only (token ids to the cloud,
one verify of k = 0 per token: one round trip per token), speculative with
the model drafter, and speculative with n-gram prompt lookup; then stops it
(`splitmesh down`). From the FINAL statistics of every request it computes
tokens/s, per-token latency, time to first token, acceptance, mean accepted
length and bytes over the link per token, and writes JSON, Markdown and a
gnuplot PNG of the speedup against RTT.

Only the standard library: it runs under Debian's /usr/bin/python3.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

PROMPTS = [
    "The history of the Roman Empire begins with",
    "Write a Python function that returns the n-th Fibonacci number.\n\ndef fibonacci(n):",
    "The water cycle describes how water moves between the oceans, the air and the land. First,",
    "Here is a list of the days of the week: Monday, Tuesday, Wednesday,",
    "A good night's sleep is important because",
    "To bake bread at home you need flour, water, salt and yeast. The steps are:",
]

CONFIGS = [
    # (name, mode, drafter, mesh)
    ("cloud_only", "cloud_only", "model", "main"),
    ("split_spec_model", "speculative", "model", "main"),
    ("split_spec_ngram", "speculative", "ngram", "main"),
    # The same as split_spec_model on a second mesh whose edge-draft sends no
    # verify before the answer to the last one (SPLITMESH_NO_PIPELINE=1): the
    # design before pipelined verifies, measured in the same run as a peer.
    ("split_spec_model_serial", "speculative", "model", "serial"),
]


def run(cmd, timeout, env=None):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout,
                       env=env)
    return p.returncode, p.stdout, p.stderr


def generate(sm, run_dir, prompt, tokens, mode, drafter, draft_k):
    cmd = [sm, "generate", "--run-dir", run_dir, "--json", "-n", str(tokens), "--temperature", "0",
           "--mode", mode, "--drafter", drafter, "--draft-k", str(draft_k), prompt]
    rc, out, err = run(cmd, 600)
    if rc != 0:
        raise RuntimeError(f"generate failed ({rc}): {err.strip()}")
    return json.loads(out)


def summarize(reqs):
    """Aggregates the FINALs of one (rtt, config) cell."""
    tokens = sum(r["stats"]["tokens"] for r in reqs)
    elapsed_s = sum(r["client"]["elapsed_ms"] for r in reqs) / 1000.0
    ttft = [r["stats"]["ttft_ms"] for r in reqs]
    proposed = sum(r["stats"]["drafts_proposed"] for r in reqs)
    accepted = sum(r["stats"]["drafts_accepted"] for r in reqs)
    # Every verify round yields its accepted drafts plus one target token;
    # the first token comes from the prefill.
    rounds = sum(max(r["stats"]["tokens"] - 1 - r["stats"]["drafts_accepted"], 0) for r in reqs)
    link = sum(r["stats"]["link_bytes_up"] + r["stats"]["link_bytes_down"] for r in reqs)
    link_up = sum(r["stats"]["link_bytes_up"] for r in reqs)
    # Per-token latency after the first token, weighted by tokens.
    decode_tokens = sum(max(r["stats"]["tokens"] - 1, 0) for r in reqs)
    per_token = (sum(r["stats"]["per_token_ms"] * max(r["stats"]["tokens"] - 1, 0) for r in reqs)
                 / decode_tokens) if decode_tokens else 0.0
    return {
        "requests": len(reqs),
        "tokens": tokens,
        "elapsed_s": round(elapsed_s, 3),
        "tokens_per_s": round(tokens / elapsed_s, 3) if elapsed_s else 0.0,
        "per_token_ms": round(per_token, 3),
        "ttft_ms_mean": round(sum(ttft) / len(ttft), 3) if ttft else 0.0,
        "drafts_proposed": proposed,
        "drafts_accepted": accepted,
        "acceptance_rate": round(accepted / proposed, 4) if proposed else None,
        "verify_rounds": rounds,
        "mean_accepted_len": round(accepted / rounds, 3) if rounds else None,
        "tokens_per_round": round((tokens - len(reqs)) / rounds, 3) if rounds else None,
        "link_bytes": link,
        "link_bytes_up": link_up,
        "link_bytes_per_token": round(link / tokens, 1) if tokens else None,
    }


def agreement(a, b):
    """Tokens identical before the first difference, over the shorter length."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--splitmesh", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--rtts", default="0,10,25,50,100")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--draft-k", type=int, default=4)
    ap.add_argument("--split", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", required=True)
    ap.add_argument("--raw", required=True, help="where the per-request FINALs go")
    ap.add_argument("--serial", type=int, default=1,
                    help="1: also measure split_spec_model_serial (edge-draft --no-pipeline) on a second mesh")
    args = ap.parse_args()
    sm = args.splitmesh
    rtts = [int(x) for x in args.rtts.split(",")]
    prompts = PROMPTS[: args.prompts]
    cells = []
    raw = []
    agreements = []
    pipelined_vs_serial = []
    configs = [c for c in CONFIGS if c[3] == "main" or args.serial]
    for rtt in rtts:
        run_dirs = {mesh: tempfile.mkdtemp(prefix=f"e2e-bench-rtt{rtt}-{mesh}-")
                    for mesh in sorted(set(c[3] for c in configs))}
        try:
            for mesh, run_dir in run_dirs.items():
                env = dict(os.environ)
                env["SPLITMESH_NO_PIPELINE"] = "1" if mesh == "serial" else "0"
                rc, out, err = run([sm, "up", "--run-dir", run_dir, "--model", args.model,
                                    "--split", str(args.split), "--threads", str(args.threads),
                                    "--link", f"rtt={rtt}", "--no-telemetry", "--timeout", "300"], 400, env)
                if rc != 0:
                    raise RuntimeError(f"up failed: {err}")
                # Warm-up: page in the weights of every process.
                generate(sm, run_dir, "Hello", 8, "speculative", "model", args.draft_k)
                generate(sm, run_dir, "Hello", 4, "cloud_only", "model", args.draft_k)
            tokens_by = {}
            reqs_by = {name: [] for name, _, _, _ in configs}
            # Interleaved (prompt outer, path inner): the machine is shared,
            # and a load change during the run then hits every path alike.
            for i, prompt in enumerate(prompts):
                for name, mode, drafter, mesh in configs:
                    r = generate(sm, run_dirs[mesh], prompt, args.tokens, mode, drafter, args.draft_k)
                    reqs_by[name].append(r)
                    raw.append({"rtt_ms": rtt, "config": name, "prompt": i, "final": r})
                    tokens_by.setdefault(name, []).append(r["tokens"])
            for name, mode, drafter, _ in configs:
                reqs = reqs_by[name]
                cell = {"rtt_ms": rtt, "config": name, "mode": mode, "drafter": drafter}
                cell.update(summarize(reqs))
                cells.append(cell)
                print(f"rtt {rtt:3d} ms  {name:18s} {cell['tokens_per_s']:7.2f} tok/s  "
                      f"per token {cell['per_token_ms']:7.2f} ms  acceptance {cell['acceptance_rate']}  "
                      f"accepted/round {cell['mean_accepted_len']}  link B/token {cell['link_bytes_per_token']}",
                      file=sys.stderr, flush=True)
            # int8 activations (the default transport) against the cloud-only
            # path, which runs the whole target in one process on token ids.
            for i in range(len(prompts)):
                for name in ("split_spec_model", "split_spec_ngram"):
                    same, n = agreement(tokens_by[name][i], tokens_by["cloud_only"][i])
                    agreements.append({"rtt_ms": rtt, "config": name, "prompt": i, "identical_prefix": same,
                                       "compared": n})
                if "split_spec_model_serial" in tokens_by:
                    # Pipelining must not change a greedy token.
                    same, n = agreement(tokens_by["split_spec_model"][i], tokens_by["split_spec_model_serial"][i])
                    pipelined_vs_serial.append(same == n and len(tokens_by["split_spec_model"][i]) == n)
        finally:
            for run_dir in run_dirs.values():
                run([sm, "down", "--run-dir", run_dir, "-q"], 120)
                shutil.rmtree(run_dir, ignore_errors=True)

    def cell(rtt, name):
        for c in cells:
            if c["rtt_ms"] == rtt and c["config"] == name:
                return c
        return None

    speedup = {}
    for rtt in rtts:
        base = cell(rtt, "cloud_only")["tokens_per_s"]
        speedup[str(rtt)] = {
            name: round(cell(rtt, name)["tokens_per_s"] / base, 3) if base else None
            for name, _, _, _ in configs if name != "cloud_only"
        }
    per_drafter = {}
    for name, drafter in (("split_spec_model", "model"), ("split_spec_ngram", "ngram")):
        cs = [c for c in cells if c["config"] == name]
        proposed = sum(c["drafts_proposed"] for c in cs)
        accepted = sum(c["drafts_accepted"] for c in cs)
        rounds = sum(c["verify_rounds"] for c in cs)
        tokens = sum(c["tokens"] for c in cs)
        link = sum(c["link_bytes"] for c in cs)
        per_drafter[drafter] = {
            "acceptance_rate": round(accepted / proposed, 4) if proposed else None,
            "mean_accepted_len": round(accepted / rounds, 3) if rounds else None,
            "link_bytes_per_token": round(link / tokens, 1) if tokens else None,
        }
    cloud = [c for c in cells if c["config"] == "cloud_only"]
    cloud_link = sum(c["link_bytes"] for c in cloud) / max(sum(c["tokens"] for c in cloud), 1)
    total_same = sum(a["identical_prefix"] for a in agreements)
    total_n = sum(a["compared"] for a in agreements)
    headline_rtt = 50 if 50 in rtts else rtts[-1]
    result = {
        "speedup_vs_cloud_only_rtt50ms": speedup[str(headline_rtt)]["split_spec_model"],
        "speedup_vs_cloud_only_rtt50ms_ngram": speedup[str(headline_rtt)]["split_spec_ngram"],
        "speedup_vs_cloud_only_rtt50ms_serial": speedup[str(headline_rtt)].get("split_spec_model_serial"),
        "acceptance_rate": per_drafter["model"]["acceptance_rate"],
        "mean_accepted_len": per_drafter["model"]["mean_accepted_len"],
        "link_bytes_per_token": per_drafter["model"]["link_bytes_per_token"],
        "link_bytes_per_token_cloud_only": round(cloud_link, 1),
        "per_drafter": per_drafter,
        "speedup_vs_cloud_only": speedup,
        "int8_greedy_agreement": {
            "identical_prefix_tokens": total_same,
            "compared_tokens": total_n,
            "fraction": round(total_same / total_n, 4) if total_n else None,
            "generations_fully_identical": sum(1 for a in agreements if a["identical_prefix"] == a["compared"]),
            "generations": len(agreements),
        },
        "pipelined_equals_serial": {"generations": len(pipelined_vs_serial),
                                    "identical": sum(pipelined_vs_serial)},
        "cells": cells,
        "config": {
            "rtts_ms": rtts, "prompts": len(prompts), "tokens_per_request": args.tokens,
            "draft_k": args.draft_k, "split": args.split, "threads_per_service": args.threads,
            "target_format": "w8", "draft_format": "w4", "act_dtype": "int8", "temperature": 0,
        },
    }
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    with open(args.raw, "w") as f:
        json.dump(raw, f)


if __name__ == "__main__":
    main()
