#!/usr/bin/env python3
"""bench/soak/soak.py: many concurrent generation sessions against a real mesh.

Starts a mesh (`splitmesh up`: brokers, tokenizer, split-prefix,
cloud-target, edge-draft), then runs SESSIONS client threads for DURATION
seconds; each thread has its own DEALER socket and its own session, and
sends `generate` requests to the device broker back to back (MessagePack
bodies, MDP/0.2, no C code shared), recording each request's latency and
outcome. A 429 "busy" answer is retried after its retry_after_ms and
counted; any other error, a missing answer (timeout) or a FINAL with
finish_reason "error" counts as an error. VmRSS of every mesh process is
read at the start (after warm-up) and at the end. Then `splitmesh down`
stops the mesh with SIGTERM, so every process exits normally: with an ASan
build (-DSPLITMESH_SANITIZE=ON; LeakSanitizer runs at exit) the logs in
<run-dir>/logs/ are scanned for sanitizer reports, which count as leaks.

Writes JSON (see --json): duration, sessions, requests, ok, errors by kind,
latency p50/p90/p99/max, ttft p50/p99, tokens/s, RSS per process, sanitizer
findings, machine and command. Exit status 1 when there was any error or
finding. Standard library + pyzmq + msgpack (Debian's /usr/bin/python3).

    bench/soak/run.sh            # wraps this with the build and the model
"""
import argparse
import glob
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import msgpack
import zmq

PROMPTS = [
    "The history of the Roman Empire begins with",
    "Here is a list of the days of the week: Monday, Tuesday,",
    "A good night's sleep is important because",
    "To bake bread at home you need flour, water, salt and yeast.",
    "The water cycle describes how water moves between",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colours are",
]


def run(cmd, timeout):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def read_env(path):
    env, procs = {}, []
    with open(path) as f:
        for line in f:
            m = re.match(r"^([A-Z_]+)='(.*)'$", line.strip())
            if not m:
                continue
            if m.group(1) == "SPLITMESH_PROC":
                name, pid, _ = m.group(2).split()
                procs.append((name, int(pid)))
            else:
                env[m.group(1)] = m.group(2)
    return env, procs


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 2)


class Session(threading.Thread):
    def __init__(self, idx, endpoint, args, deadline, stats, lock):
        super().__init__(daemon=True)
        self.idx, self.endpoint, self.args = idx, endpoint, args
        self.deadline, self.stats, self.lock = deadline, stats, lock

    def record(self, key, value=None):
        with self.lock:
            if value is None:
                self.stats[key] = self.stats.get(key, 0) + 1
            else:
                self.stats.setdefault(key, []).append(value)

    def run(self):
        ctx = zmq.Context.instance()
        rng = random.Random(self.idx)
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        timeout_ms = self.args.request_timeout * 1000
        n = 0
        while time.monotonic() < self.deadline:
            n += 1
            body = {"v": 1, "t": "generate", "prompt": rng.choice(PROMPTS),
                    "max_tokens": self.args.tokens, "temperature": 0.8, "top_k": 40,
                    "seed": self.idx * 100000 + n, "stream": False}
            t0 = time.monotonic()
            sock.send_multipart([b"MDPC02", b"\x01", b"generate", msgpack.packb(body, use_bin_type=True)])
            final = None
            while True:
                left = timeout_ms - (time.monotonic() - t0) * 1000
                if left <= 0 or not sock.poll(int(left)):
                    break
                frames = sock.recv_multipart()
                if len(frames) >= 4 and frames[1] == b"\x03":
                    final = frames[3]
                    break
            elapsed_ms = (time.monotonic() - t0) * 1000
            if final is None:
                self.record("timeouts")
                print(f"soak: session {self.idx}: no answer in {self.args.request_timeout} s", file=sys.stderr)
                sock.close()
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(self.endpoint)
                continue
            try:
                msg = msgpack.unpackb(final, raw=False)
            except Exception as e:  # noqa: BLE001 - an undecodable reply is an error
                self.record("bad_replies")
                print(f"soak: session {self.idx}: undecodable reply: {e}", file=sys.stderr)
                continue
            status = msg.get("status", 0) if isinstance(msg, dict) else -1
            if status == 429:
                self.record("busy")
                time.sleep(min(msg.get("retry_after_ms", 100), 5000) / 1000.0)
                continue
            if status:
                self.record(f"status_{status}")
                print(f"soak: session {self.idx}: error {status}: {msg.get('error')}", file=sys.stderr)
                continue
            if msg.get("finish_reason") == "error":
                self.record("finish_error")
                continue
            st = msg.get("stats") or {}
            self.record("ok")
            self.record("latency_ms", elapsed_ms)
            self.record("tokens", st.get("tokens", 0))
            if "ttft_ms" in st:
                self.record("ttft_ms", st["ttft_ms"])
            if st.get("degraded"):
                self.record("degraded")
        sock.close()


def sanitizer_findings(run_dir):
    found = []
    pat = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: \w+Sanitizer")
    for log in sorted(glob.glob(os.path.join(run_dir, "logs", "*.log"))):
        with open(log, errors="replace") as f:
            for line in f:
                if pat.search(line):
                    found.append(f"{os.path.basename(log)}: {line.strip()[:300]}")
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splitmesh", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--sessions", type=int, default=64)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--request-timeout", type=int, default=300)
    ap.add_argument("--link", default="rtt=10")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    args = ap.parse_args()

    sm = os.path.abspath(args.splitmesh)
    run_dir = tempfile.mkdtemp(prefix="soak-")
    os.environ.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    os.environ.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    result = {"bench": "soak", "sessions": args.sessions, "duration_s": args.duration,
              "max_tokens": args.tokens, "model": os.path.basename(args.model), "link": args.link}
    stats = {}
    try:
        rc, out, err = run([sm, "up", "--run-dir", run_dir, "--model", args.model,
                            "--max-sessions", str(max(16, args.sessions)), "--threads", str(args.threads),
                            "--link", args.link, "--no-telemetry", "--no-gateway", "--timeout", "300"], 600)
        if rc != 0:
            raise RuntimeError(f"splitmesh up failed: {err.strip()[-2000:]}")
        env, procs = read_env(os.path.join(run_dir, "mesh.env"))
        endpoint = env["SPLITMESH_BROKER"]
        # Warm-up: one request pages in every process' weights.
        rc, out, err = run([sm, "generate", "--run-dir", run_dir, "-n", "4", "Hello"], 600)
        if rc != 0:
            raise RuntimeError(f"warm-up generate failed: {err.strip()}")
        rss_start = {name: rss_kb(pid) for name, pid in procs}
        lock = threading.Lock()
        start = time.monotonic()
        deadline = start + args.duration
        threads = [Session(i, endpoint, args, deadline, stats, lock) for i in range(args.sessions)]
        for t in threads:
            t.start()
        rss_peak = dict(rss_start)
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            for name, pid in procs:
                r = rss_kb(pid)
                if r is not None and (rss_peak.get(name) or 0) < r:
                    rss_peak[name] = r
        wall = time.monotonic() - start
        rss_end = {name: rss_kb(pid) for name, pid in procs}
        alive = {name: rss_end[name] is not None for name, _ in procs}
    finally:
        run([sm, "down", "--run-dir", run_dir, "-q"], 180)
    findings = sanitizer_findings(run_dir)

    lat = stats.get("latency_ms", [])
    ttft = stats.get("ttft_ms", [])
    errors = {k: v for k, v in stats.items()
              if k in ("timeouts", "bad_replies", "finish_error") or k.startswith("status_")}
    result.update({
        "wall_s": round(wall, 1),
        "requests_ok": stats.get("ok", 0),
        "busy_429_retried": stats.get("busy", 0),
        "degraded": stats.get("degraded", 0),
        "verified": stats.get("ok", 0) - stats.get("degraded", 0),
        "errors": errors,
        "error_count": sum(errors.values()),
        "tokens": sum(stats.get("tokens", [])),
        "tokens_per_s": round(sum(stats.get("tokens", [])) / wall, 2) if wall else None,
        "latency_ms": {"p50": percentile(lat, 50), "p90": percentile(lat, 90),
                       "p99": percentile(lat, 99), "max": round(max(lat), 1) if lat else None},
        "ttft_ms": {"p50": percentile(ttft, 50), "p99": percentile(ttft, 99)},
        "rss_kb": {name: {"start": rss_start.get(name), "peak": rss_peak.get(name), "end": rss_end.get(name)}
                   for name, _ in procs},
        "processes_alive_at_end": all(alive.values()),
        "sanitizer_findings": findings,
        "machine": {"cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                 if l.startswith("model name")), platform.machine()),
                    "nproc": os.cpu_count()},
    })
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps({k: result[k] for k in ("requests_ok", "degraded", "error_count", "latency_ms", "tokens_per_s",
                                             "sanitizer_findings")}, indent=None))
    if args.keep:
        print(f"soak: run directory kept: {run_dir}", file=sys.stderr)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    ok = result["error_count"] == 0 and not findings and result["processes_alive_at_end"] and result["requests_ok"] > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
