#!/usr/bin/env python3
"""codec_roundtrip.py: the Python half of the C <-> Python codec test.

tests/test_codec_python.c encodes the schema's example of every message with
the C codec into DIR/<name>.c.mp, then runs

    codec_roundtrip.py schemas/messages.toml DIR

which, for every message,
  1. decodes DIR/<name>.c.mp with python3-msgpack and checks it equals the
     example as the schema defines it (schemas/gen.py's reading of the TOML:
     example plus defaults), value by value and type by type, with `v` and
     `t` first and the fields in schema order;
  2. re-encodes what it decoded into DIR/<name>.py.mp (and checks the bytes
     equal C's where no float32 is involved: both sides use the smallest
     MessagePack encodings);
  3. encodes the example its own way into DIR/<name>.own.mp: keys in reverse
     order, `t` last, fields equal to their default left out;
  4. checks C's bytes with tests/python/wire.py, a second implementation of
     the schema's rules, and that wire.py rejects bad bodies with the
     statuses the C codec uses;
and exits 1 naming every mismatch. The C test then decodes both files and
compares them with the example.
"""

import os
import sys

import msgpack

sys.dont_write_bytecode = True  # do not litter schemas/ with __pycache__

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "schemas"))
import gen  # noqa: E402
import wire  # noqa: E402


def same(a, b, path, errors):
    """Equality that also compares types (True is not 1, bytes not str)."""
    if type(a) is not type(b):
        errors.append(f"{path}: type {type(a).__name__} != expected {type(b).__name__}")
        return
    if isinstance(a, dict):
        if list(a.keys()) != list(b.keys()):
            errors.append(f"{path}: keys {list(a.keys())} != expected {list(b.keys())}")
            return
        for k in a:
            same(a[k], b[k], f"{path}.{k}", errors)
    elif isinstance(a, list):
        if len(a) != len(b):
            errors.append(f"{path}: {len(a)} elements != expected {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]", errors)
    elif a != b:
        errors.append(f"{path}: {a!r} != expected {b!r}")


def has_float32(schema, msg):
    for f in msg["fields"]:
        if f["type"]["base"] == "float32":
            return True
        if f["type"]["base"] == "msg" and has_float32(schema, gen.msg_by_name(schema, f["type"]["ref"])):
            return True
    return False


def expected_of(schema, msg):
    values = gen.resolved(schema, msg, msg["example"])
    if not msg["nested"]:
        values = {"v": schema["version"], "t": msg["name"], **values}
    return values


def own_encoding(schema, msg, values, top):
    """Reverse key order, `t` last, defaults left out (recursively)."""
    out = {}
    fields = {f["key"]: f for f in msg["fields"]}
    for key in reversed([k for k in values if k not in ("v", "t")]):
        fld = fields[key]
        v = values[key]
        if fld["default"] is not None and v == fld["default"]:
            continue
        if fld["type"]["base"] == "msg":
            sub = gen.msg_by_name(schema, fld["type"]["ref"])
            if fld["type"]["is_array"]:
                v = [own_encoding(schema, sub, e, False) for e in v]
            else:
                v = own_encoding(schema, sub, v, False)
        out[key] = v
    if top:
        out = {"v": values["v"], **out, "t": values["t"]}
    return out


def wire_selftest():
    """wire.py rejects what the C codec rejects, with the same status."""
    errors = []
    cases = [
        (413, "generate", {"prompt": "x" * (wire.LIMITS["max_string_bytes"] + 1)}),
        (422, "generate", {"prompt": "hi", "max_tokens": 0}),
        (422, "generate", {"prompt": "hi", "privacy": "everything"}),
        (422, "generate", {}),
        (400, "generate", {"prompt": "hi", "stream": 1}),
        (400, "extend", {"session": "s", "tokens": [1]}),
        (413, "session_close", {"session": "s" * 65}),
    ]
    for status, name, fields in cases:
        try:
            wire.validate(name, fields)
            errors.append(f"wire.py accepted bad {name} {sorted(fields)}")
        except wire.WireError as e:
            if e.status != status:
                errors.append(f"wire.py: {name} {sorted(fields)}: status {e.status}, want {status}")
    body = wire.pack("generate", prompt="hi", max_tokens=16)
    if wire.unpack(body, expect="generate") != ("generate", {"prompt": "hi", "max_tokens": 16}):
        errors.append("wire.pack/unpack do not round-trip")
    return errors


def main(argv):
    if len(argv) != 3:
        print("usage: codec_roundtrip.py messages.toml DIR", file=sys.stderr)
        return 2
    schema = gen.load(argv[1])
    folder = argv[2]
    errors = []
    checked = 0
    for msg in schema["messages"]:
        name = msg["name"]
        with open(os.path.join(folder, f"{name}.c.mp"), "rb") as f:
            cbytes = f.read()
        try:
            decoded = msgpack.unpackb(cbytes, raw=False)
        except Exception as e:  # noqa: BLE001 (report and go on)
            errors.append(f"{name}: python msgpack cannot decode C output: {e}")
            continue
        expected = expected_of(schema, msg)
        same(decoded, expected, name, errors)
        # a second, independent validator of the schema's rules
        try:
            if msg["nested"]:
                wire.validate(name, decoded)
            else:
                got, _ = wire.unpack(cbytes, expect=name)
                if got != name:
                    errors.append(f"{name}: wire.unpack says it is '{got}'")
        except wire.WireError as e:
            errors.append(f"{name}: wire.py rejects C's encoding: {e}")
        again = msgpack.packb(decoded, use_bin_type=True)
        if not has_float32(schema, msg) and again != cbytes:
            errors.append(f"{name}: python re-encoding differs from C's bytes")
        with open(os.path.join(folder, f"{name}.py.mp"), "wb") as f:
            f.write(again)
        own = own_encoding(schema, msg, expected, not msg["nested"])
        with open(os.path.join(folder, f"{name}.own.mp"), "wb") as f:
            f.write(msgpack.packb(own, use_bin_type=True))
        checked += 1
    errors += wire_selftest()
    for e in errors:
        print("MISMATCH", e)
    print(f"codec_roundtrip.py: {checked} messages checked, {len(errors)} mismatches")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
