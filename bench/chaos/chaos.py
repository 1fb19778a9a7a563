#!/usr/bin/env python3
"""bench/chaos/chaos.py: faults in every process of a mesh during greedy generations.

Why: issue 9 asks that the mesh keep working and lose nothing when any of
its processes dies or stalls. This harness starts a whole mesh of real
processes itself (not `splitmesh up`, which has no replicas of every stage
and no crypt-proxy pair):

  client -> device broker -> 2 x tokenizer, 2 x split-prefix, 2 x edge-draft
                          -> device crypt-proxy ==CURVE (emulated link)==>
            cloud crypt-proxy -> cloud broker -> 2 x cloud-target

Every process is our child (subprocess.Popen), with --heartbeat-ms 250 so a
dead or stopped worker is noticed in under a second. First a fault-free pass
generates every prompt once (temperature 0, fp32 activations across the
split, so greedy output is exact and repeatable); then GENERATIONS greedy
generations cycle through the prompts while the fault schedule runs, one
fault per FAULT_EVERY generations, each kind in turn:

  kill9 / sigstop of a replica of tokenizer, split-prefix, cloud-target and
  edge-draft (the replica that is working on the generation, picked by its
  socket activity since the request went out; for the tokenizer, the one a
  probe shows the broker will hand the request to; a killed replica is
  restarted RESTART_DELAY s later, as a supervisor would; a stopped one
  gets SIGCONT after STOP_S s), and a restart (kill -9, then start again at
  once on the same endpoint) of the device broker, the cloud broker, the
  device crypt-proxy and the cloud crypt-proxy.

Tokenizer faults happen just before the request is sent (edge-draft calls
the tokenizer only at the start of a generation); the others at the
generation's FAULT_AT_PARTIAL-th streamed PARTIAL, i.e. mid-generation.

The client is plain MDP/0.2 over a DEALER (pyzmq + msgpack, no C shared
with the mesh). A generation that gets an error reply, a FINAL with
finish_reason "error", or no frame for SILENCE_S seconds (a request lost in
a restarted broker: MDP clients time out and retry) is counted by kind and
retried on a fresh socket, up to RETRIES times. Each completed generation's
tokens are compared with the fault-free pass of the same prompt. Recovery
time of a fault: from the fault to the first PARTIAL or FINAL the client
receives after it (through retries); stall: the longest wait between two
frames (or the fault and a frame) in the rest of that generation, which
catches a disruption that shows only a round or two after the fault.

At the end every process gets SIGTERM (SIGKILL after 5 s) and is reaped;
/proc is scanned for any process still naming the run directory. Writes one
JSON object (--json); exit status 0 only when every generation completed
with output equal to the fault-free pass, no process is left over, and
every fault kind ran.
"""
import argparse
import ctypes
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import shutil
import time

import msgpack
import zmq

PROMPTS = [
    "The capital of France is",
    "Here is a list of the days of the week: Monday, Tuesday,",
    "A good night's sleep is important because",
    "To bake bread at home you need flour, water, salt and yeast.",
    "The water cycle describes how water moves between",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colours are",
    "Photosynthesis is the process by which plants",
    "The first person to walk on the moon was",
    "In mathematics, a prime number is",
    "The best way to learn a new language is",
    "Count from 1 to 20: 1, 2, 3,",
    "The Great Wall of China was built",
    "Python is a programming language that",
    "The ocean covers most of the Earth's surface and",
    "An apple a day keeps the doctor away, because",
    "The main causes of the First World War were",
    "A recipe for pancakes: mix flour, eggs and milk, then",
    "The speed of light in a vacuum is",
]

REPLICATED = ["tokenizer", "split-prefix", "cloud-target", "edge-draft"]
RESTARTED = ["broker-device", "broker-cloud", "proxy-device", "proxy-cloud"]
FAULTS = ([(s, k) for s in REPLICATED for k in ("kill9", "sigstop")] +
          [(s, "restart") for s in RESTARTED])

MDPC = b"MDPC02"
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_us():
    """In the child: SIGKILL when the harness dies (PR_SET_PDEATHSIG), so a
    killed harness leaves nothing behind."""
    _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)

REQUEST, PARTIAL, FINAL = b"\x01", b"\x02", b"\x03"


def now():
    return time.monotonic()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def io_bytes(pid):
    """Bytes the process read and wrote through syscalls (its sockets' traffic)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            io = dict(line.split(":") for line in f)
        return int(io["rchar"]) + int(io["wchar"])
    except (OSError, KeyError, ValueError):
        return 0


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


class Mesh:
    """The processes, by name (e.g. "split-prefix-2"), each a Popen we reap."""

    def __init__(self, args, run_dir):
        self.args, self.dir = args, run_dir
        self.bin = args.bin_dir
        self.logs = os.path.join(run_dir, "logs")
        os.makedirs(self.logs)
        self.procs, self.argv, self.starts = {}, {}, {}
        self.device_ep = f"tcp://127.0.0.1:{free_port()}"
        self.cloud_ep = f"tcp://127.0.0.1:{free_port()}"
        self.link_ep = f"tcp://127.0.0.1:{free_port()}"
        keys = os.path.join(run_dir, "keys")
        allow = os.path.join(run_dir, "allow")
        os.makedirs(keys)
        os.makedirs(allow)
        for name in ("server", "device"):
            subprocess.run([os.path.join(self.bin, "splitmesh"), "keygen", "--out", os.path.join(keys, name)],
                           check=True, stdout=subprocess.DEVNULL)
        shutil.copy(os.path.join(keys, "device"), allow)
        hb = ["--heartbeat-ms", "250"]
        model = ["--model", args.model]
        split = ["--split", str(args.split), "--format", args.format, "--threads", "1"]
        for name, ep in (("broker-device", self.device_ep), ("broker-cloud", self.cloud_ep)):
            self.argv[name] = ["splitmesh-broker", "-e", ep] + hb + ["--expiry-ms", str(args.expiry_ms)]
        self.argv["proxy-cloud"] = ["splitmesh-crypt-proxy", "--role", "cloud", "--bind", self.link_ep,
                                    "--cert", os.path.join(keys, "server_secret"), "--allow", allow,
                                    "--broker", self.cloud_ep, "--timeout-ms", str(args.call_timeout_ms)] + hb
        self.argv["proxy-device"] = ["splitmesh-crypt-proxy", "--role", "device", "--broker", self.device_ep,
                                     "--services", "target", "--connect", self.link_ep,
                                     "--server-key", os.path.join(keys, "server"),
                                     "--cert", os.path.join(keys, "device_secret"),
                                     "--timeout-ms", str(args.call_timeout_ms)] + hb
        if args.link:
            self.argv["proxy-device"] += ["--link", args.link]
        for r in (1, 2):
            self.argv[f"tokenizer-{r}"] = ["splitmesh-tokenizer", "--broker", self.device_ep,
                                          "--instance", f"tokenizer-{r}"] + model + hb
            self.argv[f"split-prefix-{r}"] = (["splitmesh-split-prefix", "--broker", self.device_ep,
                                              "--instance", f"split-prefix-{r}", "--act-dtype", "fp32"]
                                             + model + split + hb)
            self.argv[f"cloud-target-{r}"] = (["splitmesh-cloud-target", "--broker", self.cloud_ep,
                                              "--instance", f"cloud-target-{r}"] + model + split + hb)
            self.argv[f"edge-draft-{r}"] = (["splitmesh-edge-draft", "--broker", self.device_ep,
                                            "--cloud", self.device_ep, "--instance", f"edge-draft-{r}",
                                            "--draft-format", args.draft_format, "--threads", "1",
                                            "--workers", "2", "--timeout-ms", str(args.call_timeout_ms)]
                                           + (["--draft-k", str(args.draft_k)] if args.draft_k else [])
                                           + model + hb)

    def start(self, name):
        argv = list(self.argv[name])
        argv[0] = os.path.join(self.bin, argv[0])
        log = open(os.path.join(self.logs, name + ".log"), "ab")
        self.procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True, preexec_fn=_die_with_us)
        log.close()
        self.starts[name] = self.starts.get(name, 0) + 1

    def start_all(self):
        for name in ["broker-device", "broker-cloud", "proxy-cloud", "proxy-device"]:
            self.start(name)
        for name in sorted(self.argv):
            if name not in self.procs:
                self.start(name)
        want = [(self.device_ep, "tokenizer", 2), (self.device_ep, "prefix", 2),
                (self.device_ep, "generate", 2), (self.device_ep, "target", 1),
                (self.cloud_ep, "target", 2)]
        deadline = now() + self.args.start_timeout
        while now() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}) while starting: {self.log_tail(name)}")
            if all(self.workers(ep, svc) >= n for ep, svc, n in want):
                return
            time.sleep(0.2)
        raise RuntimeError("mesh not ready in time: " +
                           ", ".join(f"{svc}={self.workers(ep, svc)}" for ep, svc, _ in want))

    def log_tail(self, name):
        try:
            with open(os.path.join(self.logs, name + ".log"), errors="replace") as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def workers(self, ep, service):
        """mmi.workers on a broker: how many workers `service` has (-1: no answer)."""
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(ep)
        try:
            s.send_multipart([MDPC, REQUEST, b"mmi.workers", service.encode()])
            if not s.poll(500):
                return -1
            return int(s.recv_multipart()[-1])
        except ValueError:
            return -1
        finally:
            s.close()

    def probe_tokenizer(self):
        """Sends one tokenize request; returns the replica that answered it
        (by its socket activity meanwhile), or None when unclear."""
        names = self.replicas("tokenizer")
        before = {n: io_bytes(self.procs[n].pid) for n in names}
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(self.device_ep)
        try:
            body = {"v": 1, "t": "tokenize", "text": "which replica answers?"}
            s.send_multipart([MDPC, REQUEST, b"tokenizer", msgpack.packb(body, use_bin_type=True)])
            if not s.poll(2000):
                return None
            s.recv_multipart()
        finally:
            s.close()
        delta = {n: io_bytes(self.procs[n].pid) - before[n] for n in names}
        ranked = sorted(names, key=lambda n: delta[n], reverse=True)
        return ranked[0] if delta[ranked[0]] > 2 * max(delta[ranked[1]], 1) else None

    def replicas(self, service):
        return [n for n in sorted(self.procs) if n.startswith(service + "-") and n[len(service) + 1:].isdigit()]

    def kill9(self, name):
        p = self.procs[name]
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)      # a stopped process dies as well
            p.send_signal(signal.SIGKILL)
        p.wait()

    def stop_all(self):
        """SIGTERM everything (last started first), SIGKILL after 5 s, reap all."""
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = now() + 5
        killed = []
        for name, p in self.procs.items():
            try:
                p.wait(max(0.1, deadline - now()))
            except subprocess.TimeoutExpired:
                killed.append(name)
                p.kill()
                p.wait()
        return killed


def ancestors():
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def leftovers(run_dir):
    """Processes (not us, nor whatever runs us) whose command line names the run directory."""
    found, skip = [], ancestors()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in skip:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if run_dir in cmd:
            found.append(f"{pid} {cmd[:200]}")
    return found


class Client:
    """A streamed greedy generation over MDP/0.2, with retries on failure."""

    def __init__(self, endpoint, args):
        self.ep, self.args = endpoint, args
        self.ctx = zmq.Context.instance()
        self.sock = self.monitor = None

    def fresh(self):
        if self.sock:
            self.sock.disable_monitor()
            self.monitor.close()
            self.sock.close()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        #  A broker that restarts forgets the requests it held; MDP has no
        #  way to say so. The client watches its connection instead: a
        #  disconnect while a request is out means it is lost, and it is
        #  sent again at once rather than after a silent timeout.
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.sock.connect(self.ep)

    def attempt(self, prompt, on_frame):
        """One request. Returns (tokens, text, None) or (None, None, error kind + text)."""
        if not self.sock:
            self.fresh()
        body = {"v": 1, "t": "generate", "prompt": prompt, "max_tokens": self.args.tokens,
                "temperature": 0.0, "stream": True}
        self.sock.send_multipart([MDPC, REQUEST, b"generate", msgpack.packb(body, use_bin_type=True)])
        tokens, text, partials = [], "", 0
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(int(self.args.silence_s * 1000)))
            if self.monitor in ready and self.sock not in ready:
                self.fresh()
                return None, None, ("disconnected", "connection to the broker lost; request sent again")
            if self.sock not in ready:
                self.fresh()
                return None, None, ("no_answer", f"no frame for {self.args.silence_s} s")
            frames = self.sock.recv_multipart()
            if len(frames) < 4 or frames[0] != MDPC or frames[1] not in (PARTIAL, FINAL):
                return None, None, ("bad_reply", repr(frames[:2]))
            try:
                msg = msgpack.unpackb(frames[3], raw=False)
            except Exception as e:  # noqa: BLE001 - an undecodable reply is an error of its own
                return None, None, ("bad_reply", str(e))
            status = msg.get("status", 0) if isinstance(msg, dict) else -1
            if status not in (0, 200, 206):
                if frames[1] == PARTIAL:        # an error is always a FINAL
                    return None, None, ("bad_reply", f"PARTIAL with status {status}")
                return None, None, (f"status_{status}", str(msg.get("error"))[:300])
            tokens += list(msg.get("tokens") or [])
            text += msg.get("text") or ""
            on_frame()
            if frames[1] == PARTIAL:
                partials += 1
                #  Fire a mid-generation fault only when no frame is queued
                #  here, so the next frame was made after the fault.
                if not self.sock.poll(0):
                    on_frame(partials)
                continue
            if msg.get("finish_reason") == "error":
                return None, None, ("finish_error", text[-200:])
            stats = msg.get("stats") or {}
            return tokens, text, {"degraded": bool(stats.get("degraded")),
                                  "resumes": stats.get("resumes", 0), "finish": msg.get("finish_reason")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--generations", type=int, default=100)
    ap.add_argument("--prompts", type=int, default=20, help="distinct prompts (cycled)")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--fault-every", type=int, default=4, help="a fault every N generations")
    ap.add_argument("--fault-at-partial", type=int, default=2)
    ap.add_argument("--stop-s", type=float, default=4.0, help="SIGSTOP lasts this long")
    ap.add_argument("--restart-delay", type=float, default=1.0, help="killed replica restarts after this")
    ap.add_argument("--silence-s", type=float, default=30.0, help="no frame this long: request lost, retry")
    ap.add_argument("--retries", type=int, default=3)
    ap.add_argument("--call-timeout-ms", type=int, default=5000, help="edge-draft and proxy call timeout")
    ap.add_argument("--expiry-ms", type=int, default=20000, help="brokers' queued-request expiry")
    ap.add_argument("--split", type=int, default=2)
    ap.add_argument("--format", default="w8")
    ap.add_argument("--draft-format", default="w4")
    ap.add_argument("--link", default="rtt=10")
    ap.add_argument("--draft-k", type=int, help="edge-draft's most drafts per round (more rounds, more PARTIALs)")
    ap.add_argument("--start-timeout", type=float, default=180)
    ap.add_argument("--run-dir", help="default: a fresh temp dir (removed unless --keep)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only", action="append", help="run only this fault kind, e.g. 'restart broker-device' (repeat)")
    args = ap.parse_args()

    run_dir = args.run_dir or tempfile.mkdtemp(prefix="chaos-")
    os.makedirs(run_dir, exist_ok=True)
    mesh = Mesh(args, run_dir)
    prompts = PROMPTS[:max(1, min(args.prompts, len(PROMPTS)))]
    result = {"bench": "chaos", "model": os.path.basename(args.model), "generations": args.generations,
              "prompts": len(prompts), "max_tokens": args.tokens, "link": args.link,
              "topology": "device broker: 2 tokenizer, 2 split-prefix (fp32 activations), 2 edge-draft "
                          "(2 workers each), device crypt-proxy ==CURVE==> cloud crypt-proxy -> cloud "
                          "broker: 2 cloud-target; heartbeat 250 ms",
              "settings": {k: getattr(args, k) for k in ("fault_every", "fault_at_partial", "stop_s",
                                                          "restart_delay", "silence_s", "retries",
                                                          "call_timeout_ms", "expiry_ms", "split", "draft_k",
                                                          "format", "draft_format")}}
    faults, gens, errors = [], [], {}
    pending = []            # (when, action, name): SIGCONTs and delayed restarts
    try:
        t0 = now()
        mesh.start_all()
        result["startup_s"] = round(now() - t0, 1)
        client = Client(mesh.device_ep, args)

        def run_pending(force=False):
            for item in list(pending):
                when, action, name = item
                if force or now() >= when:
                    pending.remove(item)
                    if action == "cont":
                        os.kill(mesh.procs[name].pid, signal.SIGCONT)
                    else:
                        mesh.start(name)

        def generate(prompt, fault=None):
            """Runs one generation (with retries); fault: dict to fire at the right moment."""
            rec = {"prompt": prompts.index(prompt), "attempts": 0, "errors": []}
            t_start = now()
            state = {"fired": fault is None, "cpu": {}, "io": {}}

            def fire():
                kind, service = fault["kind"], fault["service"]
                if service in REPLICATED:
                    #  The replica at work on this generation: the one whose
                    #  socket traffic (heartbeats aside) grew most since the
                    #  request went out; CPU time tells them apart too, with
                    #  a real model.
                    names = mesh.replicas(service)
                    io = {n: io_bytes(mesh.procs[n].pid) - state["io"].get(n, 0) for n in names}
                    cpu = {n: cpu_ticks(mesh.procs[n].pid) - state["cpu"].get(n, 0) for n in names}
                    ranked = sorted(names, key=lambda n: io[n], reverse=True)
                    probe = mesh.probe_tokenizer() if service == "tokenizer" else None
                    if probe:
                        #  Before the request: the broker hands a new
                        #  session to its least recently used tokenizer,
                        #  i.e. not the one that just answered our probe.
                        name, fault["picked_by"] = [n for n in names if n != probe][0], "probe"
                    elif io[ranked[0]] > 2 * max(io[ranked[1]], 1):
                        name, fault["picked_by"] = ranked[0], "traffic"
                    elif max(cpu.values()) > 0 and list(cpu.values()).count(max(cpu.values())) == 1:
                        name, fault["picked_by"] = max(cpu, key=cpu.get), "cpu"
                    else:
                        name, fault["picked_by"] = names[fault["seq"] % len(names)], "alternate"
                    fault["io_bytes"], fault["cpu_ticks"] = io, cpu
                else:
                    name = service
                fault["process"] = name
                fault["pid"] = mesh.procs[name].pid
                fault["at_s"] = round(now() - t0, 3)
                fault["t"] = state["last"] = now()
                if kind == "sigstop":
                    os.kill(mesh.procs[name].pid, signal.SIGSTOP)
                    pending.append((now() + args.stop_s, "cont", name))
                elif kind == "kill9":
                    mesh.kill9(name)
                    pending.append((now() + args.restart_delay, "start", name))
                else:                           # restart: kill -9, start again at once
                    mesh.kill9(name)
                    mesh.start(name)
                state["fired"] = True

            def on_frame(partials=None):
                run_pending()
                if fault and not state["fired"] and partials is not None and partials >= args.fault_at_partial:
                    fire()
                elif fault and state["fired"] and partials is None:
                    if "recovery_ms" not in fault:
                        fault["recovery_ms"] = round((now() - fault["t"]) * 1000, 1)
                    gap = round((now() - state.get("last", fault["t"])) * 1000, 1)
                    fault["stall_ms"] = max(fault.get("stall_ms", 0), gap)
                if partials is None:
                    state["last"] = now()

            for attempt in range(args.retries + 1):
                rec["attempts"] = attempt + 1
                if fault and not state["fired"]:
                    state["cpu"] = {n: cpu_ticks(p.pid) for n, p in mesh.procs.items()}
                    state["io"] = {n: io_bytes(p.pid) for n, p in mesh.procs.items()}
                    if fault["service"] == "tokenizer" or attempt > 0:
                        fire()              # before the request: the tokenizer is used first
                tokens, text, info = client.attempt(prompt, on_frame)
                if tokens is not None:
                    rec.update({"tokens": tokens, "text": text, **info})
                    break
                kind, detail = info
                rec["errors"].append({"kind": kind, "detail": detail, "at_s": round(now() - t0, 3)})
                errors[kind] = errors.get(kind, 0) + 1
                run_pending()
            rec["ms"] = round((now() - t_start) * 1000, 1)
            return rec

        # Fault-free pass: the reference output of every prompt.
        reference = {}
        t_ref = now()
        for i, p in enumerate(prompts):
            rec = generate(p)
            if "tokens" not in rec:
                raise RuntimeError(f"fault-free generation of prompt {i} failed: {rec['errors']}")
            reference[i] = rec["tokens"]
        result["fault_free_s"] = round(now() - t_ref, 1)
        if errors:
            raise RuntimeError(f"errors in the fault-free pass: {errors}")

        # The chaos pass.
        schedule = [(s, k) for s, k in FAULTS if not args.only or f"{k} {s}" in args.only]
        t_chaos = now()
        seq = 0
        for g in range(args.generations):
            fault = None
            if g % args.fault_every == args.fault_every // 2:
                service, kind = schedule[seq % len(schedule)]
                fault = {"seq": seq, "service": service, "kind": kind, "generation": g}
                seq += 1
            # Wait for the mesh to be whole again before the next fault.
            if fault:
                while pending:
                    time.sleep(0.05)
                    run_pending()
                deadline = now() + 30
                while now() < deadline and not all(
                        mesh.workers(ep, s) >= n for ep, s, n in
                        [(mesh.device_ep, "tokenizer", 2), (mesh.device_ep, "prefix", 2),
                         (mesh.device_ep, "generate", 2), (mesh.device_ep, "target", 1),
                         (mesh.cloud_ep, "target", 2)]):
                    time.sleep(0.1)
            prompt = prompts[g % len(prompts)]
            rec = generate(prompt, fault)
            rec["generation"] = g
            if "tokens" in rec:
                rec["equal"] = rec["tokens"] == reference[rec["prompt"]]
                if not rec["equal"]:
                    ref = reference[rec["prompt"]]
                    rec["first_diff"] = next((i for i, (a, b) in enumerate(zip(rec["tokens"], ref)) if a != b),
                                             min(len(rec["tokens"]), len(ref)))
            if fault:
                fault["outcome"] = {"attempts": rec["attempts"], "errors": [e["kind"] for e in rec["errors"]],
                                    "completed": "tokens" in rec, "equal": rec.get("equal"),
                                    "degraded": rec.get("degraded")}
                fault.pop("t", None)
                faults.append(fault)
                rec["fault"] = f"{fault['kind']} {fault.get('process')}"
            rec.pop("tokens", None)
            rec["text"] = rec.get("text", "")[:80]
            gens.append(rec)
            print(f"chaos: gen {g:3d} prompt {rec['prompt']:2d} attempts {rec['attempts']} "
                  f"{'equal' if rec.get('equal') else 'DIFF' if 'equal' in rec else 'FAILED'}"
                  f"{' degraded' if rec.get('degraded') else ''} {rec['ms']:8.0f} ms"
                  f"{'  <- ' + rec['fault'] + ' recovery ' + str(fault.get('recovery_ms')) + ' ms' if fault else ''}"
                  f"{'  errors ' + ','.join(e['kind'] for e in rec['errors']) if rec['errors'] else ''}",
                  file=sys.stderr, flush=True)
        result["chaos_s"] = round(now() - t_chaos, 1)
        run_pending(force=True)
    finally:
        for when, action, name in pending:
            if action == "cont" and mesh.procs[name].poll() is None:
                os.kill(mesh.procs[name].pid, signal.SIGCONT)
        sigkilled = mesh.stop_all()
        left = leftovers(run_dir)
        crashed = []
        for name in sorted(mesh.procs):
            log = mesh.log_tail(name)
            if "AddressSanitizer" in log or "Assertion" in log or "Segmentation" in log:
                crashed.append(name)
    completed = sum(1 for r in gens if "equal" in r)
    equal = sum(1 for r in gens if r.get("equal"))
    rec_by, stall_by = {}, {}
    for f in faults:
        key = f"{f['kind']} {f['service']}"
        if f.get("recovery_ms") is not None:
            rec_by.setdefault(key, []).append(f["recovery_ms"])
            stall_by.setdefault(key, []).append(f["stall_ms"])
    result.update({
        "completed": completed,
        "equal_to_fault_free": equal,
        "first_try": sum(1 for r in gens if r["attempts"] == 1 and "equal" in r),
        "retried": sum(1 for r in gens if r["attempts"] > 1),
        "failed": len(gens) - completed,
        "degraded": sum(1 for r in gens if r.get("degraded")),
        "errors_by_kind": errors,
        "faults": faults,
        "fault_kinds_run": sorted({f"{f['kind']} {f['service']}" for f in faults}),
        "recovery_ms_by_fault": {k: {"n": len(v), "min": min(v), "max": max(v),
                                     "mean": round(sum(v) / len(v), 1)} for k, v in sorted(rec_by.items())},
        "stall_ms_by_fault": {k: {"n": len(v), "min": min(v), "max": max(v),
                                  "mean": round(sum(v) / len(v), 1)} for k, v in sorted(stall_by.items())},
        "restarts": {n: c - 1 for n, c in sorted(mesh.starts.items()) if c > 1},
        "sigkilled_at_stop": sigkilled,
        "leftover_processes": left,
        "all_reaped": all(p.poll() is not None for p in mesh.procs.values()) and not left,
        "crash_logs": crashed,
        "generations_detail": gens,
        "machine": {"cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                 if l.startswith("model name")), platform.machine()),
                    "nproc": os.cpu_count()},
    })
    #  Pass: every generation completed, each equal to the fault-free pass
    #  or flagged degraded (the draft model alone while the cloud was
    #  unreachable: counted, never silent), every process reaped, and every
    #  fault kind that the schedule had room for ran.
    scheduled = sum(1 for g in range(args.generations) if g % args.fault_every == args.fault_every // 2)
    ok = (completed == args.generations and all(r.get("equal") or r.get("degraded") for r in gens)
          and result["all_reaped"] and not crashed
          and len(result["fault_kinds_run"]) == min(len(args.only or FAULTS), scheduled))
    result["pass"] = ok
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps({k: result[k] for k in ("completed", "equal_to_fault_free", "retried", "failed",
                                             "degraded", "errors_by_kind", "fault_kinds_run",
                                             "recovery_ms_by_fault", "all_reaped")}), flush=True)
    if args.keep or args.run_dir:
        print(f"chaos: run directory kept: {run_dir}", file=sys.stderr)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
