"""report.py: bench/results/quant.{json,md}, quant_speed.json, quant_mesh.json
(and the gnuplot data) from the run's raw files: quantize --json lines
(mixed.jsonl), bench_quant lines (bench.jsonl), mesh_accept.sh lines
(mesh.jsonl), bench_quant_speed lines (speed.jsonl), llama.cpp check lines
(llamacpp.jsonl), dups.json (byte-identical files, evaluated once) and
meta.json. Standard library only (runs under /usr/bin/python3)."""
import json
import os
import sys


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def base(p):
    return os.path.basename(p)


def kind_of(name):
    if name.startswith("uniform_"):
        return "uniform"
    return "mixed+w4g128" if name.startswith("mixedsm_") else "mixed"


def main():
    d, out_json, out_md, out_dat = sys.argv[1:5]
    results = os.path.dirname(out_json)
    meta = json.load(open(os.path.join(d, "meta.json")))
    plans = {base(p["out"]): p for p in lines(os.path.join(d, "mixed.jsonl"))}
    bench = lines(os.path.join(d, "bench.jsonl"))
    dups = json.load(open(os.path.join(d, "dups.json"))) if os.path.exists(os.path.join(d, "dups.json")) else {}
    mesh = {base(r["file"]): r for r in lines(os.path.join(d, "mesh.jsonl"))}
    speed = {base(r["file"]): r for r in lines(os.path.join(d, "speed.jsonl"))}
    llcpp = {base(r["file"]): r for r in lines(os.path.join(d, "llamacpp.jsonl"))}
    basel = next(b for b in bench if b.get("baseline"))
    evaluated = {base(b["file"]): b for b in bench if not b.get("baseline") and "error" not in b}
    f32 = next(iter(plans.values()))["f32_bytes"]
    names = list(evaluated) + [n for n in dups if dups[n] in evaluated]
    rows = []
    for name in names:
        twin = dups.get(name, name)
        b = evaluated[twin]
        plan = plans.get(name, {})
        types = {}
        for u in plan.get("units", []):
            types[u["type"]] = types.get(u["type"], 0) + 1
        lc, ms, sp = llcpp.get(twin, {}), mesh.get(twin, {}), speed.get(twin, {})
        k = kind_of(name)
        rows.append({
            "file": name, "kind": k, "same_bytes_as": twin if twin != name else None,
            "budget": name.split("_", 1)[1][:-len(".gguf")] if k != "uniform" else None,
            "uniform_type": name[len("uniform_"):-len(".gguf")] if k == "uniform" else None,
            "budget_bytes": plan.get("budget_bytes"),
            "budget_x_vs_fp32": round(f32 / plan["budget_bytes"], 3) if plan.get("budget_bytes") else None,
            "tensor_bytes": b["tensor_bytes"],
            "compression_vs_fp32": round(f32 / b["tensor_bytes"], 4),
            "ppl": b["ppl"], "ppl_ratio": b["ppl_ratio"],
            "quality_retained": b["quality_retained"],
            "top1_agreement": b["top1_agreement"],
            "draft_acceptance_simulated": b["acceptance"],
            "draft_acceptance_mesh": ms.get("mesh_acceptance"),
            "mesh_drafts": [ms.get("drafts_accepted"), ms.get("drafts_proposed")] if ms else None,
            "decode_tps_median": sp.get("decode_tps_median"),
            "speed_peer": base(sp["peer"]) if sp.get("peer") else None,
            "decode_ratio_to_peer": sp.get("ratio_to_peer_median"),
            "runtime_weight_bytes": b["runtime_weight_bytes"],
            "kl_sum_estimate": plan.get("kl_sum"),
            "units_by_type": types or None,
            "llama_cpp_loaded": lc.get("loaded"), "llama_cpp_ppl_256": lc.get("ppl"),
        })
    rows.sort(key=lambda r: (r["compression_vs_fp32"], r["file"]))
    mixed = [r for r in rows if r["kind"] != "uniform"]
    std = [r for r in rows if r["kind"] == "mixed"]
    def best_of(rs):
        ok = [r for r in rs if r["quality_retained"] >= 0.98]
        return max(ok, key=lambda r: (r["compression_vs_fp32"], r["quality_retained"])) if ok else None
    best, best_std, best_any = best_of(mixed), best_of(std), best_of(rows)
    src_mesh = mesh.get(base(basel["file"]), {})
    any_plan = next(iter(plans.values()))
    res = {
        "benchmark": "quant",
        "commit": meta["commit"], "machine": meta["machine"], "command": meta["command"],
        "date": meta["date"], "model": meta["model"],
        "baseline": ("F32 = the source Q4_1 file's weights dequantized to f32 (no true fp32 "
                     "checkpoint available); fp32 size = 4 bytes x every tensor element"),
        "f32_tensor_bytes": f32,
        "baseline_ppl": basel["ppl"], "baseline_tokens_scored": basel["tokens_scored"],
        "baseline_acceptance_self": basel["acceptance"],
        "source_as_draft_mesh_acceptance": src_mesh.get("mesh_acceptance"),
        "calibration": meta["calibration"], "evaluation": meta["evaluation"],
        "calib_tokens": any_plan["calib_tokens"],
        "sensitivity_measure_wall_s": meta.get("measure_wall_s"),
        "candidates": ["w4g128 (splitmesh, opt-in)", "q4_0", "q4_K", "q4_1", "q5_0", "q5_1", "q6_K", "q8_0", "f16"],
        "infeasible_budgets": meta.get("infeasible", {}),
        "best_compression_vs_fp32_at_98pct": best["compression_vs_fp32"] if best else None,
        "quality_retained": best["quality_retained"] if best else None,
        "best_file_at_98pct": best["file"] if best else None,
        "best_standard_types_at_98pct": {"file": best_std["file"], "compression_vs_fp32": best_std["compression_vs_fp32"],
                                         "quality_retained": best_std["quality_retained"]} if best_std else None,
        "best_any_file_at_98pct": {"file": best_any["file"], "compression_vs_fp32": best_any["compression_vs_fp32"],
                                   "quality_retained": best_any["quality_retained"]} if best_any else None,
        "goal_98pct_at_6x_met": bool(best and best["compression_vs_fp32"] >= 6),
        "rows": rows,
    }
    json.dump(res, open(out_json, "w"), indent=1)
    json.dump({"commit": meta["commit"], "machine": meta["machine"], "command": meta["command"],
               "what": "decode tokens/s (greedy, 32 tokens after an 8-token prompt, 2 threads) of each "
                       "file, all loaded with file_formats, rounds interleaved; ratio = median over "
                       "rounds of (mixed / nearest-size uniform) in the same round",
               "rows": lines(os.path.join(d, "speed.jsonl"))},
              open(os.path.join(results, "quant_speed.json"), "w"), indent=1)
    json.dump({"commit": meta["commit"], "machine": meta["machine"], "command": meta["command"],
               "what": "acceptance of each file as the DRAFT of a real splitmesh up mesh (draft at f32 = "
                       "the file's own values; target = the source at f32), greedy, k=4 fixed, final "
                       "stats of splitmesh generate --json summed over the prompts",
               "rows": lines(os.path.join(d, "mesh.jsonl"))},
              open(os.path.join(results, "quant_mesh.json"), "w"), indent=1)
    with open(out_dat, "w") as f:
        for kind in ("mixed", "mixed+w4g128", "uniform"):
            for r in rows:
                if r["kind"] == kind and not r["same_bytes_as"]:
                    f.write("%s %.4f %.5f %.5f %s\n" % (r["file"], r["compression_vs_fp32"],
                            r["quality_retained"], r["top1_agreement"],
                            "%.4f" % r["draft_acceptance_mesh"] if r["draft_acceptance_mesh"] is not None else "?"))
            f.write("\n\n")
    def fmt(v, p="%.3f"):
        return p % v if v is not None else "-"
    md = []
    md.append("# Tailored quantization (`splitmesh quantize`)\n")
    md.append("Model: `%s`. Baseline: %s. Baseline perplexity %.3f (%d scored test tokens).\n" % (
        meta["model"], res["baseline"], basel["ppl"], basel["tokens_scored"]))
    md.append("Calibration (sensitivity): %s. Evaluation: %s.\n" % (meta["calibration"], meta["evaluation"]))
    n_meas = sum(1 for u in any_plan["units"] for v in u["kl"].values() if v is not None)
    md.append("Sensitivity: %d units, %d (unit, format) KLs known (formats dearer than one that reproduces the "
              "source exactly are dominated and not measured), on %d calibration tokens; measured once%s into "
              "a cache that every budget reused.\n" % (len(any_plan["units"]), n_meas, any_plan["calib_tokens"],
              " in %d s wall (niced, on the shared machine)" % meta["measure_wall_s"] if meta.get("measure_wall_s") else ""))
    md.append("Machine: %s. Commit `%s`. Command: `%s`.\n" % (meta["machine"], meta["commit"], meta["command"]))
    md.append("Quality retained = baseline perplexity / model perplexity. Top-1 = share of positions where the "
              "model's most likely token is the baseline's. Acceptance (sim) = greedy draft tokens accepted by "
              "the F32 target in-process (k=4); acceptance (mesh) = the same through a real `splitmesh up` mesh "
              "(bench/results/quant_mesh.json; the source file itself as draft: %s). Decode ratio = the file's "
              "decode tokens/s over that of the uniform file of the nearest size, same rounds, median of %s "
              "interleaved rounds (bench/results/quant_speed.json). Files run in the engine with file_formats "
              "(Q4_x and W4G128 -> W4, Q8_0/Q5_x/Q4_K/Q6_K -> W8, F16 -> F32).\n" % (
              fmt(src_mesh.get("mesh_acceptance"), "%.4f"),
              (lines(os.path.join(d, "speed.jsonl")) or [{}])[0].get("repeats", "?")))
    if best:
        md.append("**Best mixed compression at >= 98%% quality: %.2fx smaller than fp32, quality retained %.4f "
                  "(`%s`).** Goal (98%% at >= 6x): %s.%s\n" % (best["compression_vs_fp32"], best["quality_retained"],
                  best["file"], "met" if res["goal_98pct_at_6x_met"] else "not met",
                  " Standard ggml types only (llama.cpp loads it): %.2fx, quality %.4f (`%s`)." % (
                      best_std["compression_vs_fp32"], best_std["quality_retained"], best_std["file"]) if best_std else ""))
    md.append("| file | budget (x) | x smaller than fp32 | MB | ppl | quality | top-1 | acceptance (sim) | acceptance (mesh) | decode ratio (peer) | units by type | llama.cpp loads |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        md.append("| %s%s | %s | %.2f | %.1f | %.3f | %.4f | %.4f | %.3f | %s | %s | %s | %s |" % (
            r["file"], " (= %s)" % r["same_bytes_as"] if r["same_bytes_as"] else "",
            fmt(r["budget_x_vs_fp32"], "%.2f"), r["compression_vs_fp32"], r["tensor_bytes"] / 1e6, r["ppl"],
            r["quality_retained"], r["top1_agreement"], r["draft_acceptance_simulated"],
            fmt(r["draft_acceptance_mesh"]),
            "%.2f (%s)" % (r["decode_ratio_to_peer"], r["speed_peer"]) if r["decode_ratio_to_peer"] else "-",
            ", ".join("%s %d" % kv for kv in sorted((r["units_by_type"] or {}).items())) or "-",
            {True: "yes", False: "NO", None: "not checked"}[r["llama_cpp_loaded"]]))
    md.append("")
    for b, msg in res["infeasible_budgets"].items():
        md.append("- budget %s: %s" % (b, msg))
    prov = os.path.join(d, "provenance.md")
    if os.path.exists(prov):
        md.append("")
        md.append(open(prov).read().strip())
    md.append("\n![quality vs compression](quant.png)\n")
    open(out_md, "w").write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
