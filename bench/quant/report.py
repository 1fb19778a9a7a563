"""report.py: bench/results/quant.{json,md} (and the gnuplot data) from the
run's raw files: quantize --json lines (mixed.jsonl), bench_quant lines
(bench.jsonl), llama.cpp check lines (llamacpp.jsonl) and meta.json.
Standard library only (runs under /usr/bin/python3)."""
import json
import os
import sys


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def main():
    d, out_json, out_md, out_dat = sys.argv[1:5]
    meta = json.load(open(os.path.join(d, "meta.json")))
    plans = {os.path.basename(p["out"]): p for p in lines(os.path.join(d, "mixed.jsonl"))}
    bench = lines(os.path.join(d, "bench.jsonl"))
    llcpp = {os.path.basename(r["file"]): r for r in lines(os.path.join(d, "llamacpp.jsonl"))}
    base = next(b for b in bench if b.get("baseline"))
    f32 = next(iter(plans.values()))["f32_bytes"] if plans else meta["f32_bytes"]
    rows = []
    for b in bench:
        if b.get("baseline") or "error" in b:
            continue
        name = os.path.basename(b["file"])
        kind = "uniform" if name.startswith("uniform_") else "mixed"
        plan = plans.get(name, {})
        types = {}
        for u in plan.get("units", []):
            types[u["type"]] = types.get(u["type"], 0) + 1
        lc = llcpp.get(name, {})
        rows.append({
            "file": name, "kind": kind,
            "budget": name[len("mixed_"):-len(".gguf")] if kind == "mixed" else None,
            "uniform_type": name[len("uniform_"):-len(".gguf")] if kind == "uniform" else None,
            "budget_bytes": plan.get("budget_bytes"),
            "budget_x_vs_fp32": round(f32 / plan["budget_bytes"], 3) if plan.get("budget_bytes") else None,
            "tensor_bytes": b["tensor_bytes"],
            "compression_vs_fp32": round(f32 / b["tensor_bytes"], 4),
            "ppl": b["ppl"], "ppl_ratio": b["ppl_ratio"],
            "quality_retained": b["quality_retained"],
            "top1_agreement": b["top1_agreement"],
            "draft_acceptance": b["acceptance"],
            "prefill_tps": b["prefill_tps"], "decode_tps": b["decode_tps"],
            "runtime_weight_bytes": b["runtime_weight_bytes"],
            "kl_sum_estimate": plan.get("kl_sum"),
            "units_by_type": types or None,
            "llama_cpp_loaded": lc.get("loaded"), "llama_cpp_ppl_256": lc.get("ppl"),
        })
    rows.sort(key=lambda r: r["compression_vs_fp32"])
    mixed = [r for r in rows if r["kind"] == "mixed"]
    ok = [r for r in mixed if r["quality_retained"] >= 0.98]
    best = max(ok, key=lambda r: r["compression_vs_fp32"]) if ok else None
    okall = [r for r in rows if r["quality_retained"] >= 0.98]
    bestall = max(okall, key=lambda r: r["compression_vs_fp32"]) if okall else None
    res = {
        "benchmark": "quant",
        "commit": meta["commit"], "machine": meta["machine"], "command": meta["command"],
        "date": meta["date"],
        "model": meta["model"],
        "baseline": ("F32 = the source Q4_1 file's weights dequantized to f32 (no true fp32 "
                     "checkpoint available); fp32 size = 4 bytes x every tensor element"),
        "f32_tensor_bytes": f32,
        "baseline_ppl": base["ppl"], "baseline_acceptance_self": base["acceptance"],
        "baseline_prefill_tps": base["prefill_tps"], "baseline_decode_tps": base["decode_tps"],
        "calibration": meta["calibration"], "evaluation": meta["evaluation"],
        "calib_tokens": next(iter(plans.values()))["calib_tokens"] if plans else None,
        "sensitivity_measure_s": next(iter(plans.values()))["measure_s"] if plans else None,
        "candidates": ["q4_0", "q4_1", "q8_0", "f16"],
        "infeasible_budgets": meta.get("infeasible", {}),
        "best_compression_vs_fp32_at_98pct": best["compression_vs_fp32"] if best else None,
        "quality_retained": best["quality_retained"] if best else None,
        "best_file_at_98pct": best["file"] if best else None,
        "best_any_at_98pct": {"file": bestall["file"], "compression_vs_fp32": bestall["compression_vs_fp32"],
                              "quality_retained": bestall["quality_retained"]} if bestall else None,
        "goal_98pct_at_6x_met": bool(best and best["compression_vs_fp32"] >= 6),
        "rows": rows,
    }
    json.dump(res, open(out_json, "w"), indent=1)
    with open(out_dat, "w") as f:
        for kind in ("mixed", "uniform"):
            for r in rows:
                if r["kind"] == kind:
                    f.write("%s %.4f %.5f %.5f %.4f\n" % (r["file"], r["compression_vs_fp32"],
                            r["quality_retained"], r["top1_agreement"], r["draft_acceptance"]))
            f.write("\n\n")
    md = []
    md.append("# Tailored quantization (`splitmesh quantize`)\n")
    md.append("Model: `%s`. Baseline: %s. Baseline perplexity %.3f.\n" % (meta["model"], res["baseline"], base["ppl"]))
    md.append("Calibration (sensitivity): %s. Evaluation: %s.\n" % (meta["calibration"], meta["evaluation"]))
    if res["sensitivity_measure_s"] is not None:
        md.append("Sensitivity: %d units x 3 measured formats on %d calibration tokens took %.0f s "
                  "(one measurement for every budget).\n" % (len(next(iter(plans.values()))["units"]),
                  res["calib_tokens"], res["sensitivity_measure_s"]))
    md.append("Machine: %s. Commit `%s`. Command: `%s`.\n" % (meta["machine"], meta["commit"], meta["command"]))
    md.append("Quality retained = baseline perplexity / model perplexity. Top-1 = share of positions where "
              "the model's most likely token is the baseline's. Acceptance = greedy draft tokens "
              "accepted by the F32 target (k=%s). Files run in the engine with file_formats (Q4_x -> W4, "
              "Q8_0 -> W8, F16 -> F32).\n" % meta.get("k", 4))
    if best:
        md.append("**Best mixed compression at >= 98%% quality: %.2fx smaller than fp32, quality retained %.4f "
                  "(`%s`).** Goal (98%% at >= 6x): %s.\n" % (best["compression_vs_fp32"], best["quality_retained"],
                  best["file"], "met" if res["goal_98pct_at_6x_met"] else "not met"))
    md.append("Budgets below a 5.57x reduction are not binding for this source: every unit's KL is 0 at "
              "Q4_1 (the source's own grid, recovered exactly) and the embedding's at Q8_0 (its source "
              "type), so the assignment stops at the source's layout; F16/Q8_0 upgrades would not lower "
              "the measured KL. Budgets of 8x and 10x are below the smallest file (all Q4_0, 7.10x).\n")
    md.append("Tokens/s were measured on a shared, heavily loaded 2-core machine (load average 10-14): they "
              "vary by 2x between runs and only show that mixed files run on the integer kernels, not a ranking.\n")
    md.append("| file | budget (x) | x smaller than fp32 | MB | ppl | ppl ratio | quality | top-1 | acceptance | decode tok/s | prefill tok/s | units by type | llama.cpp loads |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        md.append("| %s | %s | %.2f | %.1f | %.3f | %.4f | %.4f | %.4f | %.3f | %.1f | %.1f | %s | %s |" % (
            r["file"], "%.2f" % r["budget_x_vs_fp32"] if r["budget_x_vs_fp32"] else "-",
            r["compression_vs_fp32"], r["tensor_bytes"] / 1e6, r["ppl"], r["ppl_ratio"],
            r["quality_retained"], r["top1_agreement"], r["draft_acceptance"], r["decode_tps"],
            r["prefill_tps"], ", ".join("%s %d" % kv for kv in sorted((r["units_by_type"] or {}).items())) or "-",
            {True: "yes", False: "NO", None: "not checked"}[r["llama_cpp_loaded"]]))
    md.append("")
    for b, msg in res["infeasible_budgets"].items():
        md.append("- budget %s: %s" % (b, msg))
    md.append("\nBaseline (F32) decode %.1f tok/s, prefill %.1f tok/s on the same machine.\n" % (
        base["decode_tps"], base["prefill_tps"]))
    md.append("![quality vs compression](quant.png)\n")
    open(out_md, "w").write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
