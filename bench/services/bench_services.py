#!/usr/bin/env python3
"""bench_services.py: latency of the split-prefix and cloud-target services.

Starts splitmesh-broker, splitmesh-split-prefix and splitmesh-cloud-target
(--stage-only) on the real model, then times, through the broker with a
Python MDP client (tests/python/mdp_client.py):
  - prefill of a P-token prompt: prefix.prefill + target.prefill;
  - one speculative round at k drafts: prefix.extend of k+1 rows, then
    target.verify of those rows (the round trip pair every generated batch
    costs, without link delay);
for each activation dtype (int8, fp16, fp32 restart the prefix service).
Reports medians and the bytes of each reply/request body. Machine load is
recorded: the build machine is shared, so absolute times are noisy.
"""
import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import msgpack  # noqa: E402
from mdp_client import MdpClient  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", default=os.environ.get("SPLITMESH_MODEL")
                    or os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--split", type=int, default=15)
    ap.add_argument("--format", default="w8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "services"))
    args = ap.parse_args()
    if not os.path.exists(args.model):
        sys.exit("bench_services: model %s absent (scripts/fetch-model.sh)" % args.model)

    tmp = tempfile.mkdtemp(prefix="bench_services")
    ep = "tcp://127.0.0.1:%d" % free_port()
    procs = []

    def spawn(name, *extra):
        log = open(os.path.join(tmp, name + ".log"), "w")
        p = subprocess.Popen([os.path.join(args.bin, name), "--broker", ep, *extra],
                             stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    common = ["--model", args.model, "--split", str(args.split), "--format", args.format,
              "--threads", str(args.threads)]
    results = {}
    try:
        procs.append(subprocess.Popen([os.path.join(args.bin, "splitmesh-broker"), "-e", ep],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        spawn("splitmesh-cloud-target", *common, "--stage-only")
        client = MdpClient(ep, timeout_ms=60000, retries=0)

        def call(service, body):
            frames = client.request(service, msgpack.packb(body, use_bin_type=True))
            reply = msgpack.unpackb(frames[0], raw=False)
            if "status" in reply:
                raise RuntimeError("%s: %s" % (service, reply))
            return reply, len(frames[0])

        prompt = [(17 * i + 5) % 40000 + 100 for i in range(args.prompt)]
        for dtype in ("int8", "fp16", "fp32"):
            prefix = spawn("splitmesh-split-prefix", *common, "--act-dtype", dtype)
            time.sleep(0.5)
            call("prefix", {"v": 1, "t": "session_close", "session": "warm"})  # waits for the worker
            row = {}
            pre = []
            for r in range(args.reps):
                sid = "p%d" % r
                t0 = time.perf_counter()
                a, abytes = call("prefix", {"v": 1, "t": "prefill", "session": sid, "tokens": prompt})
                t1 = time.perf_counter()
                p, _ = call("target", {"v": 1, "t": "prefill", "session": sid,
                                       "activations": a["activations"]})
                t2 = time.perf_counter()
                pre.append((t1 - t0, t2 - t1))
                call("prefix", {"v": 1, "t": "session_close", "session": sid})
                call("target", {"v": 1, "t": "session_close", "session": sid})
            row["prefill"] = {
                "prompt_tokens": args.prompt,
                "prefix_ms": round(statistics.median(x[0] for x in pre) * 1e3, 2),
                "target_ms": round(statistics.median(x[1] for x in pre) * 1e3, 2),
                "activation_bytes": abytes,
            }
            a, _ = call("prefix", {"v": 1, "t": "prefill", "session": "r", "tokens": prompt})
            p, _ = call("target", {"v": 1, "t": "prefill", "session": "r", "activations": a["activations"]})
            rounds = {}
            for k in (0, 1, 4, 8):
                ext, ver = [], []
                rows = [p["next_token"]] + [(31 * j + 7) % 40000 + 100 for j in range(k)]
                for r in range(args.reps):
                    t0 = time.perf_counter()
                    e, ebytes = call("prefix", {"v": 1, "t": "extend", "session": "r",
                                                "pos": args.prompt, "tokens": rows})
                    t1 = time.perf_counter()
                    body = {"v": 1, "t": "verify", "session": "r", "pos": args.prompt,
                            "activations": e["activations"], "draft_tokens": rows[1:]}
                    vbytes = len(msgpack.packb(body, use_bin_type=True))
                    v, _ = call("target", body)
                    t2 = time.perf_counter()
                    ext.append(t1 - t0)
                    ver.append(t2 - t1)
                rounds["k%d" % k] = {
                    "rows": k + 1,
                    "extend_ms": round(statistics.median(ext) * 1e3, 2),
                    "verify_ms": round(statistics.median(ver) * 1e3, 2),
                    "verify_request_bytes": vbytes,
                    "activation_bytes_per_row": (len(e["activations"]["data"])
                                                 + len(e["activations"].get("scales") or b"")) // (k + 1),
                }
            row["rounds"] = rounds
            results[dtype] = row
            prefix.terminate()
            prefix.wait(10)
            procs.remove(prefix)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    doc = {
        "benchmark": "services",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "command": "bench/services/run.sh " + " ".join(sys.argv[3:]),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
                    "platform": platform.platform()},
        "params": {"model": os.path.basename(args.model), "split": args.split,
                   "format": args.format, "threads": args.threads, "reps": args.reps,
                   "backend": "cpu"},
        "results": results,
    }
    with open(args.out + ".json", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    with open(args.out + ".md", "w") as f:
        f.write("# services: split-prefix and cloud-target latency (CPU backend)\n\n")
        f.write("%s, commit %s, %s, %d cores, load %.2f; model %s at %s, split L=%d, %d threads, "
                "median of %d.\n\n" % (doc["date"], commit, cpu, os.cpu_count(),
                                      doc["machine"]["loadavg_1m"], doc["params"]["model"],
                                      args.format, args.split, args.threads, args.reps))
        f.write("| act dtype | prefill %d tok: prefix ms | target ms | activation bytes |"
                " k | extend ms | verify ms | verify request bytes | activation bytes/row |\n" % args.prompt)
        f.write("|---|---|---|---|---|---|---|---|---|\n")
        for dtype, row in results.items():
            for k, rd in row["rounds"].items():
                f.write("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" % (
                    dtype, row["prefill"]["prefix_ms"], row["prefill"]["target_ms"],
                    row["prefill"]["activation_bytes"], rd["rows"] - 1, rd["extend_ms"],
                    rd["verify_ms"], rd["verify_request_bytes"], rd["activation_bytes_per_row"]))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
