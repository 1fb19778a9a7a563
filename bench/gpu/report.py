"""report.py: merges bench_gpu's and torch_ref.py's JSON into
bench/results/gpu.json (headline keys first, full numbers under "raw") and
gpu.md (a short table), and prints the table.

usage: python3 report.py BENCH.json TORCH.json TESTS.txt OUT.json OUT.md [SERVICE.json]

SERVICE.json (bench_gpu_service, one JSON object a line: the batched
service "capacity_64" (adaptive wait), "capacity_64_fixed_wait" (the
fixed 1 ms wait) and the unbatched peer "capacity_1") adds the
verified tokens/s through the cloud-target service.
"""
import json, sys

bench = json.load(open(sys.argv[1]))
try:
    torch = json.load(open(sys.argv[2]))
except Exception as e:          # torch run failed: report without it
    torch = {"error": str(e), "sessions": {}}
tests = open(sys.argv[3]).read() if len(sys.argv) > 3 else ""
w8, f16 = bench.get("w8a8_8b", {}), bench.get("fp16_8b", {})
t1 = torch.get("sessions", {}).get("1", {}).get("ms")
import os
out = {
    "device": bench.get("device"),
    "commit": os.environ.get("GPU_COMMIT", "unknown"),
    "command": os.environ.get("GPU_COMMAND", "bench/gpu/device.sh"),
    "copy_bandwidth_gbs": bench.get("copy_bandwidth_gbs"),
    "w8a8_8b_verify_ms": w8.get("verify_ms"),
    "w8a8_8b_floor_ms": w8.get("floor_ms"),
    "w8a8_8b_verify_ratio_to_floor": w8.get("verify_ratio_to_floor"),
    "fp16_8b_verify_ms": f16.get("verify_ms"),
    "fp16_8b_floor_ms": f16.get("floor_ms"),
    "fp16_8b_verify_ratio_to_floor": f16.get("verify_ratio_to_floor"),
    "w8_8b_verify_ms": bench.get("w8_8b", {}).get("verify_ms"),
    "w8_8b_verify_ratio_to_floor": bench.get("w8_8b", {}).get("verify_ratio_to_floor"),
    "torch_fp16_8b_verify_ms": t1,
    "speedup_vs_torch_fp16": (t1 / f16["verify_ms"]) if t1 and f16.get("verify_ms") else None,
    "speedup_w8a8_vs_torch_fp16": (t1 / w8["verify_ms"]) if t1 and w8.get("verify_ms") else None,
}
for s in ("1", "8", "32", "64"):
    for name, d in (("w8a8", w8), ("fp16", f16)):
        out[f"verified_tps_{s}_sessions_{name}"] = d.get("sessions", {}).get(s, {}).get("verified_tps")
    out[f"verified_tps_{s}_sessions_torch_fp16"] = torch.get("sessions", {}).get(s, {}).get("verified_tps")
best = [out.get(f"verified_tps_64_sessions_{n}") for n in ("w8a8", "fp16")]
best = [b for b in best if b]
out["verified_tps_64_sessions"] = max(best) if best else None
sm = bench.get("smollm2", {})
for n in ("fp16", "w8a8"):
    d = sm.get(n, {})
    out[f"smollm2_{n}_verify_ms_graphs"] = d.get("verify_ms_graphs")
    out[f"smollm2_{n}_verify_ms_no_graphs"] = d.get("verify_ms_no_graphs")
for line in tests.splitlines():
    if line.startswith("SMOLLM2 w8 (chunks of 5) vs CPU w8"):
        try:
            out["w8_top1_vs_cpu_w8_same_weights"] = float(line.rsplit("= ", 1)[1])
        except ValueError:
            pass
    if line.startswith("SMOLLM2 w8 (chunks of 5) vs CPU f32"):
        try:
            out["w8_top1_vs_cpu_f32"] = float(line.rsplit("= ", 1)[1])
        except ValueError:
            pass
    if line.startswith("SMOLLM2 w8a8: "):
        try:
            out["w8a8_top1_vs_cpu_f32"] = float(line.rsplit("= ", 1)[1])
        except ValueError:
            pass
    if line.startswith("SMOLLM2 w8a8 vs W8A8 reference, whole pass: "):
        try:
            out["w8a8_top1_vs_cpu_w8a8_reference"] = float(line.rsplit("top-1 agreement ", 1)[1])
            out["w8a8_rel_logit_err_vs_cpu_w8a8_reference"] = float(line.split("rel logit err ")[1].split(",")[0])
        except (ValueError, IndexError):
            pass
    if line.startswith("SMOLLM2 fp16: "):
        try:
            out["fp16_rel_logit_err_vs_cpu_f32"] = float(line.split("rel logit err ")[1].split(",")[0])
        except (ValueError, IndexError):
            pass
    if line.startswith("SMOLLM2 "):
        out.setdefault("smollm2_gpu_vs_cpu", []).append(line[8:].strip())
service = {}
if len(sys.argv) > 6:
    try:
        for line in open(sys.argv[6]):
            if line.strip():
                d = json.loads(line)
                service[d["label"]] = d
    except Exception as e:
        service["error"] = str(e)
for s in ("1", "8", "32", "64"):
    for label, key in (("capacity_64", "batched"), ("capacity_1", "unbatched"),
                       ("capacity_64_fixed_wait", "batched_fixed_wait")):
        out[f"service_smollm2_verified_tps_{s}_sessions_{key}"] = \
            service.get(label, {}).get("sessions", {}).get(s, {}).get("verified_tps")
mesh = [l.strip() for l in tests.splitlines() if l.startswith("gpu_mesh:") and " k=" in l]
mesh_diag = [l.strip() for l in tests.splitlines() if l.startswith("gpu_mesh:") and "reference repeated" in l]
if mesh:
    out["mesh_greedy_lines"] = mesh + mesh_diag
    out["mesh_greedy_generations"] = len(mesh)
    import re
    eq = 0
    for l in mesh:
        m = re.search(r"mesh (\d+) tokens, GPU reference (\d+), equal prefix (\d+)", l)
        eq += bool(m and m.group(1) == m.group(2) == m.group(3))
    out["mesh_greedy_equal"] = eq
out["raw"] = {"bench": bench, "torch": torch, "service": service}
json.dump(out, open(sys.argv[4], "w"), indent=2)


def f(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


md = [f"# GPU backend (bench/gpu) on {bench.get('device')}", "",
      f"Commit {out['commit']}, `{out['command']}`.", "",
      f"Copy bandwidth {f(bench.get('copy_bandwidth_gbs'), '.0f')} GB/s (read + write); "
      f"floor = weight bytes read per step / that bandwidth. torch {torch.get('torch', '-')}.", "",
      "| Llama-3-8B shape, ctx %s | w8a8 | fp16 | torch fp16 eager |" % bench.get("w8a8_8b", {}).get("ctx", "-"),
      "| --- | --- | --- | --- |",
      f"| verify 1 session x 5 positions, ms | {f(w8.get('verify_ms'))} | {f(f16.get('verify_ms'))} | {f(t1)} |",
      f"| floor, ms | {f(w8.get('floor_ms'))} | {f(f16.get('floor_ms'))} | |",
      f"| ratio to floor | {f(w8.get('verify_ratio_to_floor'), '.2f')} | {f(f16.get('verify_ratio_to_floor'), '.2f')} | |",
      f"| verify without CUDA graphs, ms | {f(w8.get('verify_ms_no_graphs'))} | {f(f16.get('verify_ms_no_graphs'))} | |",
      f"| verify with cuBLASLt for every GEMM, ms | {f(w8.get('verify_ms_cublaslt'))} | {f(f16.get('verify_ms_cublaslt'))} | |"]
for s in ("1", "8", "32", "64"):
    md.append(f"| verified tokens/s, {s} sessions | {f(out[f'verified_tps_{s}_sessions_w8a8'], '.0f')} | "
              f"{f(out[f'verified_tps_{s}_sessions_fp16'], '.0f')} | {f(out[f'verified_tps_{s}_sessions_torch_fp16'], '.0f')} |")
if service:
    md += ["", "| SmolLM2-135M through the cloud-target service (CUDA, k = 4) | batched, adaptive wait (default) "
           "| batched, fixed 1 ms wait | unbatched (capacity 1) |",
           "| --- | --- | --- | --- |"]
    for s in ("1", "8", "32", "64"):
        md.append(f"| verified tokens/s, {s} sessions | {f(out[f'service_smollm2_verified_tps_{s}_sessions_batched'], '.0f')} | "
                  f"{f(out[f'service_smollm2_verified_tps_{s}_sessions_batched_fixed_wait'], '.0f')} | "
                  f"{f(out[f'service_smollm2_verified_tps_{s}_sessions_unbatched'], '.0f')} |")
if mesh:
    md += ["", f"Mesh at temperature 0 vs GPU target-only greedy: {out['mesh_greedy_equal']} of {len(mesh)} generations equal.", ""]
    md += ["    " + l for l in mesh + mesh_diag]
if out.get("w8_8b_verify_ms"):
    md += ["", f"w8 (CPU w8 numerics, groups of 32) 8B verify: {f(out['w8_8b_verify_ms'])} ms, "
           f"{f(out['w8_8b_verify_ratio_to_floor'], '.2f')}x its floor."]
md += ["", "| SmolLM2-135M | fp16 | w8a8 |", "| --- | --- | --- |"]
for k, label in (("verify_ms_graphs", "verify 5 positions, graphs, ms"),
                 ("verify_ms_no_graphs", "verify 5 positions, no graphs, ms"),
                 ("decode_ms_graphs", "decode 1 position, graphs, ms"),
                 ("decode_ms_no_graphs", "decode 1 position, no graphs, ms")):
    md.append(f"| {label} | {f(sm.get('fp16', {}).get(k))} | {f(sm.get('w8a8', {}).get(k))} |")
for n in ("fp16", "w8a8"):
    c = sm.get(n, {}).get("calls_10000")
    if c:
        md.append(f"\n{n}: 10,000 verify calls in {c['seconds']:.1f} s, {c['errors']} errors, device memory "
                  f"{c['mem_after_100']} -> {c['mem_after_10000']} bytes; unknown session rc {c['unknown_session_rc']} "
                  f"('{c['unknown_session_msg']}'), beyond context rc {c['beyond_ctx_rc']}, serves after: rc {c['serves_after_rc']}.")
for l in out.get("smollm2_gpu_vs_cpu", []):
    md.append(f"\nGPU vs CPU on SmolLM2 (same weights): {l}")
open(sys.argv[5], "w").write("\n".join(md) + "\n")
print("\n".join(md))
