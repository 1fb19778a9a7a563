"""wire.py: splitmesh wire messages for Python tests and tools.

A small, independent reading of schemas/messages.toml (through schemas/gen.py's
loader) so Python test clients can build and check the same MessagePack
bodies the C services speak, without hand-writing keys:

    import wire
    body = wire.pack("generate", prompt="hi", max_tokens=16)
    name, fields = wire.unpack(reply_body)          # checks v, t, types, bounds
    if name == "error": ...

It validates what a field table can say (types, required keys, bounds,
lengths, counts, enums, one_of groups, nested messages); the cross-field rules
(activation shapes, draft sums) are left to the C codec. It is a second,
separate implementation of the schema's rules, so the round-trip test also
checks the C codec's output against it. Needs python3-msgpack.
"""

import math
import os
import struct
import sys

import msgpack

sys.dont_write_bytecode = True
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "..", "schemas"))
import gen  # noqa: E402

SCHEMA = gen.load(os.path.join(_HERE, "..", "..", "schemas", "messages.toml"))
VERSION = SCHEMA["version"]
LIMITS = {k: v["value"] for k, v in SCHEMA["limits"].items()}
STATUS = {st["name"]: st["code"] for st in SCHEMA["status"]}
_MESSAGES = {m["name"]: m for m in SCHEMA["messages"]}


class WireError(Exception):
    """A body that breaks the schema; .status is the code to answer."""

    def __init__(self, status, text):
        super().__init__(f"{status}: {text}")
        self.status = status
        self.text = text


def _check_scalar(fld, value, path):
    base = fld["type"]["base"]
    if base == "bool":
        if not isinstance(value, bool):
            raise WireError(400, f"field '{path}': expected bool")
        return
    if base in gen.INT_RANGE:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError(400, f"field '{path}': expected int")
        if value < fld["min"]:
            raise WireError(422, f"field '{path}': {value} is below the minimum {fld['min']}")
        if value > fld["max"]:
            raise WireError(422, f"field '{path}': {value} is above the maximum {fld['max']}")
        return
    if base in ("float", "float32"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WireError(400, f"field '{path}': expected float")
        if isinstance(value, float) and math.isnan(value):
            raise WireError(422, f"field '{path}': NaN is not a valid value")
        if not fld["min"] <= value <= fld["max"]:
            raise WireError(422, f"field '{path}': {value} is out of range")
        return
    if base in ("str", "enum"):
        if not isinstance(value, str):
            raise WireError(400, f"field '{path}': expected str")
        if base == "enum":
            values = SCHEMA["enums"][fld["type"]["ref"]]["values"]
            if value not in values:
                raise WireError(422, f"field '{path}': '{value}' is not one of {', '.join(values)}")
            return
        _check_len(fld, len(value.encode()), path)
        if "\0" in value:
            raise WireError(422, f"field '{path}': string contains a NUL byte")
        return
    if base == "bin":
        if not isinstance(value, (bytes, bytearray)):
            raise WireError(400, f"field '{path}': expected bin")
        _check_len(fld, len(value), path)
        return
    if base == "msg":
        _check_map(_MESSAGES[fld["type"]["ref"]], value, path)
        return
    if base == "map":
        if not isinstance(value, dict):
            raise WireError(400, f"field '{path}': expected map")
        _check_count(fld, len(value), path)
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise WireError(400, f"field '{path}': expected str keys and values")
            _check_len(fld, len(k.encode()), path)
            _check_len(fld, len(v.encode()), path)
        return
    raise AssertionError(base)


def _check_len(fld, n, path):
    if n > fld["max_len"]:
        raise WireError(413, f"field '{path}': {n} bytes exceed the limit {fld['max_len']}")
    if n < (fld["min_len"] or 0):
        raise WireError(422, f"field '{path}': {n} bytes, shorter than the minimum {fld['min_len']}")


def _check_count(fld, n, path):
    if n > fld["max_count"]:
        raise WireError(413, f"field '{path}': {n} entries exceed the limit {fld['max_count']}")
    if n < (fld["min_count"] or 0):
        raise WireError(422, f"field '{path}': {n} entries, fewer than the minimum {fld['min_count']}")


def _check_map(msg, body, path=""):
    if not isinstance(body, dict):
        raise WireError(400, f"{path or 'message'}: expected map")
    prefix = f"{path}." if path else ""
    for fld in msg["fields"]:
        key = fld["key"]
        value = body.get(key)
        where = prefix + key
        if value is None:
            if fld["required"]:
                raise WireError(400, f"missing required field '{where}'")
            continue
        if fld["type"]["is_array"]:
            if not isinstance(value, list):
                raise WireError(400, f"field '{where}': expected array")
            _check_count(fld, len(value), where)
            for i, v in enumerate(value):
                _check_scalar(fld, v, f"{where}[{i}]")
        else:
            _check_scalar(fld, value, where)
    for group in msg["one_of"]:
        present = sum(1 for k in group if body.get(k) is not None)
        if present != 1:
            names = ", ".join(f"'{k}'" for k in group)
            raise WireError(422, f"{prefix}exactly one of {names} must be given (got {present})")


def validate(name, body):
    """Checks body (a dict, `v` and `t` optional) against message name."""
    _check_map(_MESSAGES[name], body)


def pack(name, **fields):
    """The MessagePack body of message name: `v` and `t` first, then fields
    (None values left out). float32 fields are packed as float64, which the
    C codec accepts. Raises WireError if fields break the schema."""
    msg = _MESSAGES[name]
    body = {k: v for k, v in fields.items() if v is not None}
    validate(name, body)
    if msg["nested"]:
        return msgpack.packb(body, use_bin_type=True)
    return msgpack.packb({"v": VERSION, "t": name, **body}, use_bin_type=True)


def unpack(data, expect=None):
    """Decodes a body; returns (message name, dict without v and t).
    expect: the message name the caller wants (an `error` is always
    accepted: check the name). Raises WireError for a bad body."""
    if len(data) > LIMITS["max_frame_bytes"]:
        raise WireError(413, "message exceeds max_frame_bytes")
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True,
                               max_bin_len=LIMITS["max_frame_bytes"])
    except Exception as e:  # noqa: BLE001 (msgpack raises several kinds)
        raise WireError(400, f"not a MessagePack message: {e}") from None
    if not isinstance(body, dict):
        raise WireError(400, "message is not a map")
    if body.get("v") != VERSION:
        raise WireError(400, f"unsupported schema version {body.get('v')!r}")
    name = body.get("t", expect)
    if name not in _MESSAGES or _MESSAGES[name]["nested"]:
        raise WireError(400, f"unknown message {name!r}")
    if expect is not None and name not in (expect, "error"):
        raise WireError(400, f"expected message '{expect}', got '{name}'")
    fields = {k: v for k, v in body.items() if k not in ("v", "t")}
    validate(name, fields)
    return name, fields


def f32(x):
    """x rounded to float32, as the C side stores float32 fields."""
    return struct.unpack("<f", struct.pack("<f", x))[0]
