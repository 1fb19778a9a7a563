#!/usr/bin/env python3
"""check_consistency.py: the code, docker/compose.yaml and deploy/ agree.

Run by tests/test_deploy.c. Inputs are what the real tools rendered:
`docker-compose config` (anchors and merges resolved, every profile on)
and `kubectl kustomize` of each overlay. For every container it finds the
binary it runs and that binary's option table:

  - `BINARY --options-json` (core/options.c) when the binary has it;
  - otherwise, explicitly reported as a FALLBACK, the flag names and
    SPLITMESH_* variables mentioned in `BINARY --help` (the pipeline
    services until they adopt core/options);
  - a binary that is not built is reported as NOT CHECKED.

Then it checks:
  1. every SPLITMESH_* variable and every flag given to a container exists
     in its binary (and, with an options table, its value has the right
     type, range or choice);
  2. every published/exposed port (compose) and every Service port
     (Kubernetes) is a port some selected container listens on by its
     flags (tcp://*:P endpoints, *-port options and their defaults);
  3. every tcp://HOST:PORT a container connects to names a compose service
     on a shared network / a Service of the same overlay that has PORT
     (hosts with a dot are external and reported as such);
  4. health checks and probes call `splitmesh health` with its real flags,
     ask about the MDP service the container registers, and HTTP probes
     hit a port the container listens on; crypt-proxy bridges only MDP
     services some binary of the deployment registers;
  6. (--dockerfile) the runtime image's packages provide every shared
     library the built binaries link, and each service stage of the
     Dockerfiles runs splitmesh-<stage> with a valid HEALTHCHECK and sets
     only variables its binary reads;
  5. names agree: every Kubernetes workload has a compose service of the
     same name (or name-device / name-cloud / name-cpu) running the same
     binary, and the reverse; CURVE key volumes are read-only, Secrets are
     mounted as directories (no subPath) and exist.

Prints one line per finding; exits 1 if anything FAILed, 0 otherwise.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys

import yaml

# The MDP service each binary registers (docs/pipeline.md); crypt-proxy's
# comes from its --services option.
MDP_SERVICE = {
    "splitmesh-tokenizer": "tokenizer",
    "splitmesh-split-prefix": "prefix",
    "splitmesh-cloud-target": "target",
    "splitmesh-edge-draft": "generate",
}
# Compose-only services, by design (explained in docs/deploy.md).
COMPOSE_ONLY = {"gateway": "the HTTP gateway (issue 7) joins deploy/ when it exists"}
LOCAL_HOSTS = {"*", "0.0.0.0", "127.0.0.1", "localhost"}
ENDPOINT = re.compile(r"tcp://([^:/,\s]+):(\d+)")

failures = 0


def say(kind, text):
    global failures
    if kind == "FAIL":
        failures += 1
    print(f"{kind:5} {text}")


class Table:
    """A binary's options: from --options-json, or from --help (fallback)."""

    def __init__(self, binary, bin_dir):
        self.binary = binary
        self.source = None          # "options-json", "help" or None (not built)
        self.options = {}           # long name -> spec (dict; {} for help-derived)
        self.shorts = {}            # letter -> long name (or itself)
        self.envs = {}              # variable -> long name (or None)
        path = os.path.join(bin_dir, binary)
        if not os.access(path, os.X_OK):
            return
        argv = [path] if binary != "splitmesh" else [path, "health"]
        run = subprocess.run(argv + ["--options-json"], capture_output=True, text=True, timeout=20)
        if run.returncode == 0 and run.stdout.lstrip().startswith("{"):
            try:
                table = json.loads(run.stdout)
            except ValueError as error:
                say("FAIL", f"{binary} --options-json is not valid JSON: {error}")
                table = None
            if table and "options" in table:
                self.source = "options-json"
                for spec in table["options"]:
                    self.options[spec["name"]] = spec
                    if spec.get("short"):
                        self.shorts[spec["short"]] = spec["name"]
                    if spec.get("env"):
                        self.envs[spec["env"]] = spec["name"]
                self.options["help"] = {"type": "bool"}
                return
        run = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=20)
        text = run.stdout + run.stderr
        self.source = "help"
        for name in re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", text):
            self.options.setdefault(name, {})
        for letter in re.findall(r"(?<![\w-])-([a-zA-Z])\b", text):
            self.shorts[letter] = letter
        for var in re.findall(r"\b(SPLITMESH_[A-Z0-9_]+)", text):
            self.envs[var] = None

    def describe(self):
        if self.source == "options-json":
            return f"{self.binary}: {len(self.options) - 1} options from --options-json"
        if self.source == "help":
            return (f"{self.binary}: FALLBACK, no --options-json; flag names and variables "
                    f"taken from its --help text (types and ranges not checked)")
        return f"{self.binary}: NOT BUILT in the bin dir; its flags and variables are NOT checked"

    def check_value(self, name, value, where):
        spec = self.options.get(name, {})
        kind = spec.get("type")
        if kind == "int":
            try:
                number = int(str(value), 10)
            except ValueError:
                say("FAIL", f"{where}: --{name} needs a number, got '{value}'")
                return
            if ("min" in spec and number < spec["min"]) or ("max" in spec and number > spec["max"]):
                say("FAIL", f"{where}: --{name}={value} outside {spec['min']}..{spec['max']}")
        elif kind == "enum" and str(value) not in spec["choices"]:
            say("FAIL", f"{where}: --{name}={value} is not one of {spec['choices']}")
        elif kind == "bool" and str(value).lower() not in (
                "1", "0", "true", "false", "yes", "no", "on", "off"):
            say("FAIL", f"{where}: --{name} is a switch, got '{value}'")

    def takes_value(self, name):
        spec = self.options.get(name, {})
        if self.source == "options-json":
            return spec.get("type") != "bool"
        return None                 # unknown from --help

    def parse_args(self, args, where):
        """Checks args; returns {long name: value} for what it understood."""
        values = {}
        if self.source is None:
            return values
        i = 0
        while i < len(args):
            arg = str(args[i])
            i += 1
            if arg.startswith("--"):
                name, eq, value = arg[2:].partition("=")
            elif arg.startswith("-") and len(arg) >= 2:
                letter, value, eq = arg[1], arg[2:], bool(arg[2:])
                if letter not in self.shorts:
                    say("FAIL", f"{where}: {self.binary} has no option -{letter}")
                    continue
                name = self.shorts[letter]
            else:
                say("FAIL", f"{where}: stray argument '{arg}' for {self.binary}")
                continue
            if name not in self.options:
                say("FAIL", f"{where}: {self.binary} has no option --{name}")
                continue
            takes = self.takes_value(name)
            if not eq and takes is not False and i < len(args) and not str(args[i]).startswith("-"):
                value = str(args[i])
                i += 1
            elif not eq:
                value = "1"
            values[name] = value
            self.check_value(name, value, where)
        return values

    def check_env(self, env, where):
        values = {}
        for var, value in env.items():
            if not var.startswith("SPLITMESH_") or self.source is None:
                continue
            if var not in self.envs:
                say("FAIL", f"{where}: {self.binary} reads no variable {var}")
                continue
            name = self.envs[var]
            if name:
                if value is not None:
                    self.check_value(name, value, where + f" ({var})")
                values[name] = value
            else:
                values[var] = value
        return values

    def listen_ports(self, values, texts):
        """Ports a container listens on: tcp://*:P in its settings, and
        options named *port* (given, or their defaults)."""
        ports = set()
        for text in texts:
            for host, port in ENDPOINT.findall(str(text)):
                if host in ("*", "0.0.0.0"):
                    ports.add(int(port))
        for name, spec in self.options.items():
            if "port" in name:
                value = values.get(name, spec.get("default"))
                if value is not None and str(value).isdigit():
                    ports.add(int(value))
        return ports


class Checker:
    def __init__(self, bin_dir):
        self.bin_dir = bin_dir
        self.tables = {}

    def table(self, binary):
        if binary not in self.tables:
            self.tables[binary] = Table(binary, self.bin_dir)
            say("info", self.tables[binary].describe())
        return self.tables[binary]

    def check_health(self, command, env, binary, mdp, where, resolve):
        """command: argv list that may be `sh -c "..."` or contain `splitmesh health`."""
        if len(command) >= 3 and command[0] in ("sh", "/bin/sh") and command[1] == "-c":
            text = command[2]
            for var, value in env.items():
                if value is not None:
                    text = text.replace('"$' + var + '"', shlex.quote(str(value)))
                    text = text.replace("$" + var, shlex.quote(str(value)))
            if "$" in text:
                say("FAIL", f"{where}: health check uses an unset variable: {command[2]}")
                return
            command = shlex.split(text)
        if command[:1] == ["CMD-SHELL"]:
            return self.check_health(["sh", "-c", command[1]], env, binary, mdp, where, resolve)
        if command[:1] == ["CMD"]:
            command = command[1:]
        if command[:2] != ["splitmesh", "health"]:
            say("FAIL", f"{where}: health check is not `splitmesh health`: {command}")
            return
        values = self.table("splitmesh").parse_args(command[2:], where + " health check")
        service = values.get("service")
        if service is not None and mdp is not None and service != mdp:
            say("FAIL", f"{where}: health check asks for MDP service '{service}' but "
                        f"{binary} registers '{mdp}'")
        elif service is not None:
            say("ok", f"{where}: health check asks the broker for '{service}'")
        if values.get("broker"):
            resolve(values["broker"], where + " health check")
        if values.get("http"):
            resolve(values["http"].replace("http://", "tcp://"), where + " health check")


def mdp_of(binary, values):
    if binary == "splitmesh-crypt-proxy":
        services = values.get("services")
        return services.split(",")[0] if services else None
    return MDP_SERVICE.get(binary)


def check_compose(checker, path):
    config = yaml.safe_load(open(path))
    services = config.get("services", {})
    seen = {}
    listen = {}
    nets = {}
    parsed = {}
    for name, svc in services.items():
        target = (svc.get("build") or {}).get("target")
        entry = svc.get("entrypoint")
        binary = entry[0] if entry else f"splitmesh-{target}" if target else None
        where = f"compose {name}"
        if not binary:
            say("FAIL", f"{where}: no build target or entrypoint names its binary")
            continue
        table = checker.table(binary)
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        command = svc.get("command") or []
        if isinstance(command, str):
            command = shlex.split(command)
        values = table.check_env(env, where)
        values.update(table.parse_args(command, where))
        ports = table.listen_ports(values, list(command) + list(env.values()))
        seen[name] = binary
        listen[name] = ports
        nets[name] = set(svc.get("networks") or ["default"])
        parsed[name] = (binary, env, values, svc)
        for spec in (svc.get("ports") or []) + [str(p) for p in (svc.get("expose") or [])]:
            if isinstance(spec, dict):
                port = int(spec["target"])
            else:
                port = int(str(spec).split(":")[-1].split("/")[0])
            if table.source and port not in ports:
                say("FAIL", f"{where}: publishes/exposes {port} but listens on {sorted(ports)}")
            elif table.source:
                say("ok", f"{where}: port {port} is one it listens on")
        for volume in svc.get("volumes") or []:
            target_path = volume.get("target") if isinstance(volume, dict) else str(volume).split(":")[1]
            read_only = volume.get("read_only") if isinstance(volume, dict) else str(volume).endswith(":ro")
            if target_path in ("/keys", "/allow") and not read_only:
                say("FAIL", f"{where}: key volume {target_path} is not read-only")

    registered = {mdp_of(b, v) for b, _, v, _ in parsed.values()} - {None}
    for name, (binary, env, values, svc) in parsed.items():
        where = f"compose {name}"

        def resolve(endpoint, what, name=name):
            for host, port in ENDPOINT.findall(endpoint):
                if host in LOCAL_HOSTS:
                    port_ok = int(port) in listen[name]
                    if checker.table(seen[name]).source and not port_ok:
                        say("FAIL", f"{what}: {endpoint}: the container listens on {sorted(listen[name])}")
                    continue
                if host not in services:
                    say("FAIL", f"{what}: {endpoint}: no compose service '{host}'")
                elif not (nets[name] & nets[host]):
                    say("FAIL", f"{what}: {endpoint}: '{host}' shares no network with {name}")
                elif checker.table(seen[host]).source and int(port) not in listen[host]:
                    say("FAIL", f"{what}: {endpoint}: '{host}' listens on {sorted(listen[host])}")
                else:
                    say("ok", f"{what}: {endpoint} reaches {host} ({seen[host]})")

        for value in list(env.values()) + [str(c) for c in (svc.get("command") or [])]:
            if isinstance(value, str) and "tcp://" in value and "*" not in value:
                resolve(value, where)
        health = (svc.get("healthcheck") or {}).get("test")
        if health:
            checker.check_health(list(health), env, binary, mdp_of(binary, values), where, resolve)
        if binary == "splitmesh-crypt-proxy" and values.get("services"):
            for bridged in values["services"].split(","):
                if bridged not in registered:
                    say("FAIL", f"{where}: bridges MDP service '{bridged}' that nothing registers")
    return seen


def check_kubernetes(checker, overlay, path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    config_maps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    workloads = {}
    for kind in ("Deployment", "DaemonSet", "StatefulSet"):
        for name, doc in by_kind.get(kind, {}).items():
            workloads[name] = doc
    containers = []     # (workload, pod labels, container, binary, env, values, ports)
    for wname, doc in workloads.items():
        pod = doc["spec"]["template"]
        labels = pod["metadata"].get("labels", {})
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for container in pod["spec"]["containers"]:
            where = f"k8s {overlay} {doc['kind']}/{wname}"
            command = container.get("command") or []
            if not command or not command[0].startswith("splitmesh"):
                say("FAIL", f"{where}: container {container['name']} names no splitmesh binary in command")
                continue
            binary = command[0]
            table = checker.table(binary)
            env = {}
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef", {}).get("name")
                if ref not in config_maps:
                    say("FAIL", f"{where}: envFrom ConfigMap '{ref}' is not in the overlay")
                    continue
                env.update(config_maps[ref].get("data", {}))
            for item in container.get("env", []):
                ref = (item.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    data = config_maps.get(ref["name"], {}).get("data", {})
                    if ref["key"] not in data:
                        say("FAIL", f"{where}: {item['name']} refers to missing {ref['name']}/{ref['key']}")
                    env[item["name"]] = data.get(ref["key"])
                else:
                    env[item["name"]] = item.get("value")
            args = list(command[1:]) + list(container.get("args", []))
            values = table.check_env(env, where)
            values.update(table.parse_args(args, where))
            ports = table.listen_ports(values, args + [v for v in env.values() if v])
            named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            for p in container.get("ports", []):
                if table.source and p["containerPort"] not in ports:
                    say("FAIL", f"{where}: containerPort {p['containerPort']} is not one it "
                                f"listens on {sorted(ports)}")
            for mount in container.get("volumeMounts", []):
                volume = volumes.get(mount["name"], {})
                if "secret" in volume:
                    if mount.get("subPath"):
                        say("FAIL", f"{where}: Secret volume {mount['name']} mounted with subPath "
                                    f"(rotation would not reach the pod)")
                    if not mount.get("readOnly"):
                        say("FAIL", f"{where}: Secret volume {mount['name']} is not read-only")
                    if volume["secret"]["secretName"] not in secrets:
                        say("FAIL", f"{where}: Secret {volume['secret']['secretName']} is not in the overlay")
                    else:
                        say("ok", f"{where}: Secret {volume['secret']['secretName']} mounted as a "
                                  f"directory at {mount['mountPath']}")
            containers.append((wname, labels, container, binary, env, values, ports, named, where))

    service_ports = {name: {p["port"] for p in doc["spec"]["ports"]}
                     for name, doc in by_kind.get("Service", {}).items()}
    # 2. every Service port is a port a selected container listens on
    for sname, doc in by_kind.get("Service", {}).items():
        selector = doc["spec"].get("selector", {})
        chosen = [c for c in containers if all(c[1].get(k) == v for k, v in selector.items())]
        if not chosen:
            say("FAIL", f"k8s {overlay} Service/{sname}: selector {selector} matches no workload")
            continue
        for p in doc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            hits = []
            for c in chosen:
                port = c[7].get(target) if isinstance(target, str) else target
                if port is not None and (port in c[6] or not checker.table(c[3]).source):
                    hits.append(c[0])
            if hits:
                say("ok", f"k8s {overlay} Service/{sname}: port {p['port']} -> {target} "
                          f"listened on by {sorted(set(hits))}")
            else:
                say("FAIL", f"k8s {overlay} Service/{sname}: port {p['port']} -> {target}: no "
                            f"selected container listens there")
    # 3. endpoints, 4. probes
    registered = {mdp_of(c[3], c[5]) for c in containers} - {None}
    for wname, labels, container, binary, env, values, ports, named, where in containers:

        def resolve(endpoint, what, ports=ports, binary=binary):
            for host, port in ENDPOINT.findall(endpoint):
                if host in LOCAL_HOSTS:
                    if checker.table(binary).source and int(port) not in ports:
                        say("FAIL", f"{what}: {endpoint}: the container listens on {sorted(ports)}")
                elif "." in host:
                    say("note", f"{what}: {endpoint} is outside this overlay (set per site)")
                elif host not in service_ports:
                    say("FAIL", f"{what}: {endpoint}: no Service '{host}' in the overlay")
                elif int(port) not in service_ports[host]:
                    say("FAIL", f"{what}: {endpoint}: Service '{host}' has ports {sorted(service_ports[host])}")
                else:
                    say("ok", f"{what}: {endpoint} is Service {host}")

        for value in list(env.values()) + list(container.get("args", [])):
            if isinstance(value, str) and "tcp://" in value and "*" not in value:
                resolve(value, where)
        mdp = mdp_of(binary, values)
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if not probe:
                if probe_name != "startupProbe":
                    say("FAIL", f"{where}: no {probe_name}")
                continue
            if "exec" in probe:
                checker.check_health(probe["exec"]["command"], env, binary, mdp,
                                     f"{where} {probe_name}", resolve)
            for kind in ("httpGet", "tcpSocket"):
                if kind in probe:
                    port = probe[kind]["port"]
                    port = named.get(port) if isinstance(port, str) else port
                    if checker.table(binary).source and port not in ports:
                        say("FAIL", f"{where} {probe_name}: port {probe[kind]['port']} is not "
                                    f"one it listens on")
        if not (container.get("lifecycle") or {}).get("preStop"):
            say("FAIL", f"{where}: no preStop hook")
        if binary == "splitmesh-crypt-proxy" and values.get("services"):
            for bridged in values["services"].split(","):
                if bridged not in registered and overlay == "device":
                    say("note", f"{where}: bridges '{bridged}', registered at the other site")
    return {w: c[3] for c in containers for w in [c[0]]}


# Packages every debian:12-slim image already has (apt itself needs them).
SLIM_BASE = {"libc6", "libgcc-s1", "libstdc++6"}


def check_runtime_packages(dockerfile, bin_dir):
    """The runtime stage's apt packages provide every shared library the
    built binaries link directly (readelf NEEDED -> ldd path -> dpkg -S)."""
    text = open(dockerfile).read()
    stage = re.search(r"FROM debian:12-slim AS runtime\n(.*?)\nFROM ", text, re.S)
    if not stage:
        say("FAIL", f"{dockerfile}: no `FROM debian:12-slim AS runtime` stage")
        return
    #  The words of the `apt-get install` command, up to the next `&&`.
    install = re.search(r"apt-get install((?:[^&])*)", stage.group(1))
    words = (install.group(1) if install else "").replace("\\\n", " ").split()
    packages = {w for w in words if not w.startswith("-")}
    say("info", f"{dockerfile}: runtime packages {sorted(packages)}")
    for tool in ("readelf", "ldd", "dpkg"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            say("note", f"runtime packages not checked: {tool} is missing")
            return
    binaries = sorted(b for b in os.listdir(bin_dir)
                      if b.startswith("splitmesh") and not b.startswith("splitmesh-test-"))
    for binary in binaries:
        path = os.path.join(bin_dir, binary)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                            subprocess.run(["readelf", "-d", path], capture_output=True,
                                           text=True).stdout)
        resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", subprocess.run(
            ["ldd", path], capture_output=True, text=True).stdout, re.M))
        missing = []
        for lib in needed:
            if re.match(r"lib(cu|nv)", lib) and binary == "splitmesh-cloud-target":
                # This build has CUDA on: the GPU image (docker/Dockerfile.cuda)
                # runs on nvidia/cuda's runtime, which carries these; the CPU
                # image builds with SPLITMESH_CUDA=OFF and does not link them.
                say("note", f"{dockerfile}: {binary} links {lib} here (a CUDA build); "
                            f"the CPU image builds without CUDA, the GPU image has it from nvidia/cuda")
                continue
            owner = subprocess.run(["dpkg", "-S", os.path.realpath(resolved.get(lib, lib))],
                                   capture_output=True, text=True).stdout.split(":")[0]
            if not owner:
                owner = subprocess.run(["dpkg", "-S", resolved.get(lib, lib)],
                                       capture_output=True, text=True).stdout.split(":")[0]
            if owner not in packages and owner not in SLIM_BASE:
                missing.append(f"{lib} ({owner or 'no package'})")
        if missing:
            say("FAIL", f"{dockerfile}: runtime stage lacks what {binary} links: {', '.join(missing)}")
        else:
            say("ok", f"{dockerfile}: runtime packages cover {binary} ({len(needed)} libraries)")


def check_dockerfile_stages(checker, dockerfile):
    """Each service stage `FROM ... AS NAME` runs splitmesh-NAME (compose
    relies on target NAME -> binary splitmesh-NAME), copies that binary,
    and has a HEALTHCHECK that is a valid `splitmesh health` asking for the
    MDP service the binary registers."""
    text = open(dockerfile).read().replace("\\\n", " ")
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    stage_env = {}
    for stage in stages:
        head = stage.split("\n", 1)[0]
        name = head.split(" AS ")[-1].strip() if " AS " in head else None
        parent = head.split()[0]
        env = dict(stage_env.get(parent, {}))
        for line in re.findall(r"^ENV (.*)$", stage, re.M):
            env.update(item.split("=", 1) for item in shlex.split(line) if "=" in item)
        stage_env[name] = env
        entry = re.search(r"^ENTRYPOINT (\[.*\])", stage, re.M)
        if not name or not entry:
            continue            # builder and the shared runtime stage
        where = f"{dockerfile} target {name}"
        binary = json.loads(entry.group(1))[0]
        checker.table(binary).check_env(env, where + " ENV")
        if binary != f"splitmesh-{name}":
            say("FAIL", f"{where}: runs {binary}, but compose expects splitmesh-{name}")
            continue
        if not re.search(rf"^COPY .*/{re.escape(binary)}\b", stage, re.M):
            say("FAIL", f"{where}: does not copy {binary} into the image")
        health = re.search(r"^HEALTHCHECK .*? CMD (.*)$", stage, re.M)
        if not health:
            say("FAIL", f"{where}: no HEALTHCHECK")
            continue
        command = health.group(1).strip()
        command = json.loads(command) if command.startswith("[") else ["sh", "-c", command]
        # Variables the image expects from compose/Kubernetes: any endpoint will do.
        env = {var: "tcp://127.0.0.1:5555" for var in re.findall(r"\$(SPLITMESH_[A-Z_]+)", str(command))}
        checker.check_health(command, env, binary, MDP_SERVICE.get(binary), where,
                             lambda endpoint, what: None)
        say("ok", f"{where}: runs {binary}, HEALTHCHECK {' '.join(command)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--compose", required=True, help="output of docker-compose config")
    parser.add_argument("--overlay", action="append", default=[], metavar="NAME=RENDERED.yaml")
    parser.add_argument("--dockerfile", help="check its runtime stage's packages")
    args = parser.parse_args()
    checker = Checker(args.bin_dir)
    if not checker.table("splitmesh").source:
        say("FAIL", "splitmesh (the CLI, for `splitmesh health`) is not built")
    compose = check_compose(checker, args.compose)
    k8s = {}
    for item in args.overlay:
        overlay, _, path = item.partition("=")
        k8s[overlay] = check_kubernetes(checker, overlay, path)
    # 5. names agree
    k8s_binaries = set()
    for overlay, workloads in k8s.items():
        for name, binary in workloads.items():
            k8s_binaries.add(binary)
            twins = [c for c in (name, f"{name}-device", f"{name}-cloud", f"{name}-cpu")
                     if compose.get(c) == binary]
            if twins:
                say("ok", f"names: k8s {overlay} {name} = compose {twins[0]} ({binary})")
            else:
                say("FAIL", f"names: k8s {overlay} {name} ({binary}) has no compose service "
                            f"of that name running {binary}")
    for name, binary in compose.items():
        if binary not in k8s_binaries:
            if name in COMPOSE_ONLY:
                say("note", f"names: compose {name} is compose-only: {COMPOSE_ONLY[name]}")
            else:
                say("FAIL", f"names: compose {name} ({binary}) runs in no Kubernetes overlay")
    if args.dockerfile:
        check_runtime_packages(args.dockerfile, args.bin_dir)
        for dockerfile in (args.dockerfile, args.dockerfile + ".cuda"):
            if os.path.exists(dockerfile):
                check_dockerfile_stages(checker, dockerfile)
    not_built = sorted(b for b, t in checker.tables.items() if t.source is None)
    fallback = sorted(b for b, t in checker.tables.items() if t.source == "help")
    print(f"summary: {failures} failures; fallback to --help: {fallback or 'none'}; "
          f"not built (unchecked): {not_built or 'none'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
