#!/usr/bin/env python3
"""gen.py: turn schemas/messages.toml into the C codec tables and the docs.

The wire schema is written once, in messages.toml. This script is the only
reader of that file: it checks it (every length bounded, every reference
resolved, every example valid) and renders

  gen.py c  messages.toml OUTDIR     -> OUTDIR/schema_gen.h, OUTDIR/schema_gen.c
  gen.py md messages.toml OUT.md     -> the wire reference for other languages
  gen.py json messages.toml OUT.json -> the resolved schema (tests use it)

It needs only the Python 3.11 standard library (tomllib). Generated files
say so at the top and are never edited by hand.
"""

import json
import math
import os
import re
import sys
import tomllib

SCALARS = {
    # toml type: (C type, WIRE_T_ enum, wire type for the docs)
    "bool": ("bool", "WIRE_T_BOOL", "bool"),
    "int": ("int64_t", "WIRE_T_INT64", "int (64-bit)"),
    "int32": ("int32_t", "WIRE_T_INT32", "int (32-bit)"),
    "uint": ("uint64_t", "WIRE_T_UINT64", "uint (64-bit)"),
    "uint32": ("uint32_t", "WIRE_T_UINT32", "uint (32-bit)"),
    "float": ("double", "WIRE_T_FLOAT64", "float (64-bit)"),
    "float32": ("float", "WIRE_T_FLOAT32", "float (32-bit)"),
    "str": ("char *", "WIRE_T_STR", "str"),
    "bin": ("wire_bin_t", "WIRE_T_BIN", "bin"),
}
INT_RANGE = {
    "int": (-(2**63), 2**63 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint": (0, 2**64 - 1),
    "uint32": (0, 2**32 - 1),
}
KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED_KEYS = {"v", "t"}


class SchemaError(Exception):
    pass


def fail(msg):
    raise SchemaError(msg)


# ------------------------------------------------------------------ loading

def parse_type(text, enums, messages):
    """Returns a dict: base (scalar name | 'enum' | 'msg' | 'map'),
    is_array, ref (enum or message name)."""
    t = {"is_array": False, "ref": None, "text": text}
    m = re.fullmatch(r"array<(.+)>", text)
    if m:
        t["is_array"] = True
        text = m.group(1)
    if text in SCALARS:
        t["base"] = text
    elif text.startswith("enum:"):
        t["base"] = "enum"
        t["ref"] = text[5:]
        if t["ref"] not in enums:
            fail(f"unknown enum '{t['ref']}'")
    elif text.startswith("msg:"):
        t["base"] = "msg"
        t["ref"] = text[4:]
        if t["ref"] not in messages:
            fail(f"unknown message '{t['ref']}'")
    elif text == "map<str,str>" and not t["is_array"]:
        t["base"] = "map"
    else:
        fail(f"unknown type '{t['text']}'")
    if t["is_array"] and t["base"] in ("bin", "map", "enum", "bool"):
        fail(f"type '{t['text']}' is not supported (arrays of bin, map, enum, bool)")
    return t


def load(path):
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    schema = {"version": doc["version"], "limits": {}, "status": [], "enums": {},
              "messages": []}
    for name, lim in doc["limits"].items():
        schema["limits"][name] = {"name": name, "value": int(lim["value"]),
                                  "doc": lim["doc"]}
    for st in doc["status"]:
        where = f"status {st.get('code')}"
        if not isinstance(st.get("is_error"), bool):
            fail(f"{where}: needs is_error = true or false (does a reply with it count "
                 f"in errors_total?)")
        if st["code"] < 400 and st["is_error"]:
            fail(f"{where}: a status below 400 cannot be an error")
        schema["status"].append({"code": st["code"], "name": st["name"],
                                 "is_error": st["is_error"], "doc": st["doc"]})
    for name, en in doc["enums"].items():
        schema["enums"][name] = {"name": name, "values": list(en["values"]),
                                 "doc": en["doc"]}
    names = [m["name"] for m in doc["message"]]
    if len(set(names)) != len(names):
        fail("duplicate message names")
    for mid, m in enumerate(doc["message"], start=1):
        msg = {"name": m["name"], "id": mid, "doc": m["doc"],
               "nested": bool(m.get("nested", False)),
               "service": m.get("service", ""), "check": m.get("check"),
               "rules": m.get("rules", ""),
               "one_of": [list(g) for g in m.get("one_of", [])],
               "example": m.get("example", {}), "fields": []}
        for f in m.get("field", []):
            msg["fields"].append(load_field(schema, msg, f, names))
        keys = [f["key"] for f in msg["fields"]]
        if len(keys) > 64:
            fail(f"{msg['name']}: more than 64 fields (the decoder tracks them in a bitmask)")
        if len(set(keys)) != len(keys):
            fail(f"{msg['name']}: duplicate field keys")
        for gi, group in enumerate(msg["one_of"], start=1):
            for key in group:
                fld = next((f for f in msg["fields"] if f["key"] == key), None)
                if fld is None:
                    fail(f"{msg['name']}: one_of names unknown field '{key}'")
                if fld["required"] or fld["default"] is not None:
                    fail(f"{msg['name']}: one_of field '{key}' must be optional without default")
                fld["group"] = gi
        if msg["check"] and not msg["rules"]:
            fail(f"{msg['name']}: a message with a check states its rules")
        schema["messages"].append(msg)
    for msg in schema["messages"]:
        check_example(schema, msg, msg["example"], msg["name"])
    return schema


def limit_value(schema, value, where):
    if isinstance(value, str):
        if value not in schema["limits"]:
            fail(f"{where}: unknown limit '{value}'")
        return schema["limits"][value]["value"], value
    return value, None


def load_field(schema, msg, f, msg_names):
    where = f"{msg['name']}.{f.get('key')}"
    key = f["key"]
    if not KEY_RE.match(key) or key in RESERVED_KEYS:
        fail(f"{where}: bad key")
    t = parse_type(f["type"], schema["enums"], msg_names)
    fld = {"key": key, "type": t, "doc": f["doc"], "required": bool(f.get("required", False)),
           "default": f.get("default"), "group": 0}
    for bound in ("min", "max", "min_len", "max_len", "min_count", "max_count"):
        if bound in f:
            fld[bound], fld[bound + "_limit"] = limit_value(schema, f[bound], where)
        else:
            fld[bound], fld[bound + "_limit"] = None, None
    base = t["base"]
    if fld["required"] and fld["default"] is not None:
        fail(f"{where}: required fields have no default")
    # Every length is bounded: the decoder checks before it allocates.
    if base in ("str", "bin", "map") and fld["max_len"] is None:
        fail(f"{where}: {base} needs max_len")
    if (t["is_array"] or base == "map") and fld["max_count"] is None:
        fail(f"{where}: arrays and maps need max_count")
    if base == "enum" and not fld["required"] and fld["default"] is None:
        fail(f"{where}: an optional enum needs a default")
    if base == "enum" and fld["default"] is not None:
        if fld["default"] not in schema["enums"][t["ref"]]["values"]:
            fail(f"{where}: default not in enum")
    if base in ("str", "bin", "msg", "map") and fld["default"] is not None:
        fail(f"{where}: {base} fields take no default")
    if base in INT_RANGE:
        lo, hi = INT_RANGE[base]
        fld["min"] = lo if fld["min"] is None else fld["min"]
        fld["max"] = hi if fld["max"] is None else fld["max"]
        if not lo <= fld["min"] <= fld["max"] <= hi:
            fail(f"{where}: bounds outside the type's range")
    if base in ("float", "float32"):
        fld["min"] = -math.inf if fld["min"] is None else float(fld["min"])
        fld["max"] = math.inf if fld["max"] is None else float(fld["max"])
    return fld


def field_has_flag(fld):
    """Optional scalar without a default: needs bool has_<key>."""
    return (not fld["type"]["is_array"] and fld["type"]["base"] in INT_RANGE.keys() | {"bool", "float", "float32"}
            and not fld["required"] and fld["default"] is None)


def msg_by_name(schema, name):
    return next(m for m in schema["messages"] if m["name"] == name)


def hex_bytes(value, where):
    if not isinstance(value, str) or not value.startswith("hex:"):
        fail(f"{where}: bin examples are written 'hex:...'")
    return bytes.fromhex(value[4:])


def check_value(schema, fld, value, where):
    t = fld["type"]
    base = t["base"]
    if t["is_array"]:
        if not isinstance(value, list):
            fail(f"{where}: expected a list")
        if not (fld["min_count"] or 0) <= len(value) <= fld["max_count"]:
            fail(f"{where}: count out of bounds")
        for i, v in enumerate(value):
            check_scalar(schema, fld, v, f"{where}[{i}]")
    else:
        check_scalar(schema, fld, value, where)


def check_scalar(schema, fld, value, where):
    base = fld["type"]["base"]
    if base == "bool":
        ok = isinstance(value, bool)
    elif base in INT_RANGE:
        ok = isinstance(value, int) and not isinstance(value, bool) and fld["min"] <= value <= fld["max"]
    elif base in ("float", "float32"):
        ok = isinstance(value, (int, float)) and fld["min"] <= value <= fld["max"]
        if ok and base == "float32":
            import struct
            ok = struct.unpack("<f", struct.pack("<f", value))[0] == value
    elif base == "str":
        ok = isinstance(value, str) and (fld["min_len"] or 0) <= len(value.encode()) <= fld["max_len"]
    elif base == "bin":
        ok = len(hex_bytes(value, where)) <= fld["max_len"]
    elif base == "enum":
        ok = value in schema["enums"][fld["type"]["ref"]]["values"]
    elif base == "msg":
        check_example(schema, msg_by_name(schema, fld["type"]["ref"]), value, where)
        ok = True
    elif base == "map":
        ok = isinstance(value, dict) and len(value) <= fld["max_count"]
    if not ok:
        fail(f"{where}: example value {value!r} does not fit the field")


def check_example(schema, msg, example, where):
    if not isinstance(example, dict):
        fail(f"{where}: example must be a table")
    keys = {f["key"] for f in msg["fields"]}
    for k in example:
        if k not in keys:
            fail(f"{where}: example has unknown key '{k}'")
    for fld in msg["fields"]:
        if fld["key"] in example:
            check_value(schema, fld, example[fld["key"]], f"{where}.{fld['key']}")
        elif fld["required"]:
            fail(f"{where}: example lacks required '{fld['key']}'")
    for group in msg["one_of"]:
        if sum(1 for k in group if k in example) != 1:
            fail(f"{where}: example needs exactly one of {group}")


def resolved(schema, msg, example):
    """The values a C encoder writes for example: example plus defaults, in
    field order, bins as bytes. JSON-able except bins (see to_json)."""
    out = {}
    for fld in msg["fields"]:
        key = fld["key"]
        if key in example:
            out[key] = resolve_value(schema, fld, example[key])
        elif fld["default"] is not None:
            out[key] = fld["default"]
    return out


def resolve_value(schema, fld, value):
    base = fld["type"]["base"]
    if fld["type"]["is_array"]:
        return [resolve_value(schema, dict(fld, type=dict(fld["type"], is_array=False)), v)
                for v in value]
    if base == "bin":
        return hex_bytes(value, fld["key"])
    if base == "msg":
        return resolved(schema, msg_by_name(schema, fld["type"]["ref"]), value)
    if base in ("float", "float32"):
        return float(value)
    return value


def to_json(value):
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


# ------------------------------------------------------------------ C output

BANNER = "GENERATED by schemas/gen.py from messages.toml: do not edit"


def cname(name):
    return name.upper()


def c_float(v):
    if v == math.inf:
        return "INFINITY"
    if v == -math.inf:
        return "-INFINITY"
    return repr(float(v))


def c_int(v, unsigned):
    if unsigned:
        return f"UINT64_C({v})"
    if v == -(2**63):
        return "INT64_MIN"
    return f"INT64_C({v})"


def c_bound(fld, bound, unsigned):
    lim = fld.get(bound + "_limit")
    if lim:
        return f"WIRE_{cname(lim)}"
    return c_int(fld[bound], unsigned)


def c_member(schema, fld):
    t = fld["type"]
    base = t["base"]
    key = fld["key"]
    lines = []
    if base == "msg":
        ctype = f"wire_{t['ref']}_t"
        decl = f"{ctype} *{key}"
    elif base == "enum":
        decl = f"wire_{t['ref']}_t {key}"
    elif base == "map":
        decl = f"wire_kv_t *{key}"
    else:
        ctype = SCALARS[base][0]
        if t["is_array"]:
            decl = f"{ctype} *{key}" if not ctype.endswith("*") else f"{ctype}*{key}"
        else:
            decl = f"{ctype} {key}" if not ctype.endswith("*") else f"{ctype}{key}"
    if t["is_array"] and base == "msg":
        pass
    lines.append((decl, fld["doc"]))
    if t["is_array"] or base == "map":
        lines.append((f"size_t {key}_count", f"entries in {key}"))
    if field_has_flag(fld):
        lines.append((f"bool has_{key}", f"{key} is present"))
    return lines


def render_c(schema, outdir):
    h = []
    w = h.append
    w(f"//  {BANNER}.")
    w("//  schema_gen.h (from schemas/messages.toml)")
    w("//")
    w("//  Structs, descriptors, enums and limits of every wire message. Include")
    w("//  codec.h, which includes this file; see it for the conventions.")
    w("")
    w('#include "codec.h"')
    w("")
    w("#ifndef SPLITMESH_SCHEMA_GEN_H")
    w("#define SPLITMESH_SCHEMA_GEN_H")
    w("")
    w("#ifdef __cplusplus")
    w('extern "C" {')
    w("#endif")
    w("")
    w(f"#define WIRE_SCHEMA_VERSION {schema['version']}")
    w("")
    for lim in schema["limits"].values():
        w(f"//  {lim['doc']}")
        w(f"#define WIRE_{cname(lim['name'])} {lim['value']}")
    w("")
    w("//  Status codes (HTTP-like).")
    w("typedef enum {")
    for st in schema["status"]:
        w(f"    WIRE_STATUS_{cname(st['name'])} = {st['code']},")
    w("} wire_status_t;")
    w("")
    for en in schema["enums"].values():
        w(f"//  {en['doc']}")
        w("typedef enum {")
        for i, v in enumerate(en["values"]):
            w(f"    WIRE_{cname(en['name'])}_{cname(v)} = {i},")
        w(f"    WIRE_{cname(en['name'])}_COUNT_ = {len(en['values'])}")
        w(f"}} wire_{en['name']}_t;")
        w(f"extern const char *const wire_{en['name']}_names [];")
        w("")
    w("//  Message ids.")
    w("typedef enum {")
    for m in schema["messages"]:
        w(f"    WIRE_MSG_{cname(m['name'])} = {m['id']},")
    w(f"    WIRE_MSG_COUNT_ = {len(schema['messages']) + 1}")
    w("} wire_msg_id_t;")
    w("")
    for m in schema["messages"]:
        w(f"typedef struct _wire_{m['name']}_t wire_{m['name']}_t;")
    w("")
    for m in schema["messages"]:
        w(f"//  {m['name']}: {m['doc']}")
        w(f"struct _wire_{m['name']}_t {{")
        members = [ln for fld in m["fields"] for ln in c_member(schema, fld)]
        width = max(len(d) for d, _ in members) + 2
        for decl, doc in members:
            w(f"    {(decl + ';').ljust(width)}//  {doc.splitlines()[0][:90]}")
        w("};")
        w(f"extern const wire_desc_t wire_{m['name']}_desc;")
        w("")
    w("//  Every descriptor, indexed by id (entry 0 is NULL).")
    w("extern const wire_desc_t *const wire_descs [WIRE_MSG_COUNT_];")
    w("")
    w("//  The schema's example of message id (static data: read it, never")
    w("//  free it); NULL for an unknown id.")
    w("const void *")
    w("    wire_example (int id);")
    w("")
    w("#ifdef __cplusplus")
    w("}")
    w("#endif")
    w("")
    w("#endif")

    c = []
    w = c.append
    w(f"//  {BANNER}.")
    w("//  schema_gen.c (from schemas/messages.toml)")
    w("//")
    w("//  Field descriptor tables the generic codec (codec.c) walks, and the")
    w("//  schema's examples as C data (the round-trip tests use them).")
    w("")
    w("#include <float.h>")
    w("#include <math.h>")
    w("#include <stddef.h>")
    w("#include <stdint.h>")
    w('#include "codec.h"')
    w("")
    checks = sorted({m["check"] for m in schema["messages"] if m["check"]})
    for ck in checks:
        w(f"int wire_check_{ck} (const void *msg, wire_err_t *err);")
    w("")
    for en in schema["enums"].values():
        vals = ", ".join(f'"{v}"' for v in en["values"])
        w(f"const char *const wire_{en['name']}_names [] = {{ {vals}, NULL }};")
        w(f"_Static_assert (sizeof (wire_{en['name']}_t) == sizeof (int), \"enum size\");")
    w("")
    w("const char *")
    w("wire_status_name (int status)")
    w("{")
    w("    switch (status) {")
    for st in schema["status"]:
        w(f"        case {st['code']}: return \"{st['name']}\";")
    w("        default: return \"unknown\";")
    w("    }")
    w("}")
    w("")
    w("bool")
    w("wire_status_is_error (int status)")
    w("{")
    w("    switch (status) {")
    for st in schema["status"]:
        w(f"        case {st['code']}: return {'true' if st['is_error'] else 'false'};")
    w("        default: return status >= 400;")
    w("    }")
    w("}")
    w("")
    for m in schema["messages"]:
        w(f"extern const wire_desc_t wire_{m['name']}_desc;")
    w("")
    for m in schema["messages"]:
        st = f"wire_{m['name']}_t"
        w(f"static const wire_field_t s_{m['name']}_fields [] = {{")
        for fld in m["fields"]:
            t = fld["type"]
            base = t["base"]
            key = fld["key"]
            wt = {"enum": "WIRE_T_ENUM", "msg": "WIRE_T_MSG", "map": "WIRE_T_MAP"}.get(
                base, SCALARS.get(base, (None, None))[1])
            parts = [f'.key = "{key}"', f".type = {wt}"]
            if t["is_array"]:
                parts.append(".is_array = true")
            if fld["required"]:
                parts.append(".required = true")
            parts.append(f".offset = offsetof ({st}, {key})")
            if t["is_array"] or base == "map":
                parts.append(f".count_offset = offsetof ({st}, {key}_count)")
            if field_has_flag(fld):
                parts.append(f".has_offset = offsetof ({st}, has_{key})")
            else:
                parts.append(".has_offset = SIZE_MAX")
            if base in ("int", "int32"):
                parts.append(f".imin = {c_bound(fld, 'min', False)}")
                parts.append(f".imax = {c_bound(fld, 'max', False)}")
            if base in ("uint", "uint32"):
                parts.append(f".umin = {c_bound(fld, 'min', True)}")
                parts.append(f".umax = {c_bound(fld, 'max', True)}")
            if base in ("float", "float32"):
                parts.append(f".fmin = {c_float(fld['min'])}")
                parts.append(f".fmax = {c_float(fld['max'])}")
            if fld["min_len"] is not None:
                parts.append(f".min_len = {c_bound(fld, 'min_len', True)}")
            if fld["max_len"] is not None:
                parts.append(f".max_len = {c_bound(fld, 'max_len', True)}")
            if fld["min_count"] is not None:
                parts.append(f".min_count = {c_bound(fld, 'min_count', True)}")
            if fld["max_count"] is not None:
                parts.append(f".max_count = {c_bound(fld, 'max_count', True)}")
            d = fld["default"]
            if d is not None:
                parts.append(".has_default = true")
                if base in ("int", "int32"):
                    parts.append(f".idef = {c_int(d, False)}")
                elif base in ("uint", "uint32"):
                    parts.append(f".udef = {c_int(d, True)}")
                elif base == "bool":
                    parts.append(f".udef = {1 if d else 0}")
                elif base in ("float", "float32"):
                    parts.append(f".fdef = {c_float(d)}")
                elif base == "enum":
                    idx = schema["enums"][t["ref"]]["values"].index(d)
                    parts.append(f".udef = {idx}")
            if base == "msg":
                parts.append(f".sub = &wire_{t['ref']}_desc")
            if base == "enum":
                parts.append(f".enum_names = wire_{t['ref']}_names")
                parts.append(f".enum_count = {len(schema['enums'][t['ref']]['values'])}")
            if fld["group"]:
                parts.append(f".group = {fld['group']}")
            w("    { " + ",\n      ".join(parts) + " },")
        if not m["fields"]:
            w("    { .key = NULL }")
        w("};")
        w("")
        check = f"wire_check_{m['check']}" if m["check"] else "NULL"
        w(f"const wire_desc_t wire_{m['name']}_desc = {{")
        w(f'    .name = "{m["name"]}", .id = WIRE_MSG_{cname(m["name"])},')
        w(f"    .nested = {'true' if m['nested'] else 'false'}, .size = sizeof ({st}),")
        w(f"    .fields = s_{m['name']}_fields, .field_count = {len(m['fields'])},")
        w(f"    .group_count = {len(m['one_of'])}, .check = {check}")
        w("};")
        w("")
    w("const wire_desc_t *const wire_descs [WIRE_MSG_COUNT_] = {")
    w("    NULL,")
    for m in schema["messages"]:
        w(f"    &wire_{m['name']}_desc,")
    w("};")
    w("")
    render_c_examples(schema, w)

    os.makedirs(outdir, exist_ok=True)
    write_if_changed(os.path.join(outdir, "schema_gen.h"), "\n".join(h) + "\n")
    write_if_changed(os.path.join(outdir, "schema_gen.c"), "\n".join(c) + "\n")


def c_str(s):
    out = '"'
    for b in s.encode():
        ch = chr(b)
        if ch == '"' or ch == "\\":
            out += "\\" + ch
        elif 32 <= b < 127 and ch != "?":
            out += ch
        else:
            out += f'\\{b:03o}'
    return out + '"'


def render_c_examples(schema, w):
    """Each example becomes static C data; nested values become their own
    statics, emitted before their parents."""
    counter = [0]

    def fresh(prefix):
        counter[0] += 1
        return f"s_ex{counter[0]}_{prefix}"

    def scalar_c(fld, v):
        base = fld["type"]["base"]
        if base == "bool":
            return "true" if v else "false"
        if base in ("float", "float32"):
            return repr(float(v))
        if base == "str":
            return c_str(v)
        if base == "enum":
            return f"WIRE_{cname(fld['type']['ref'])}_{cname(v)}"
        if base in ("uint", "uint32"):
            return f"UINT64_C({v})"
        return f"INT64_C({v})"

    def emit_msg(msg, values):
        """Emits statics for values (already resolved), returns the
        designated initializer body."""
        parts = []
        for fld in msg["fields"]:
            key = fld["key"]
            if key not in values:
                continue
            v = values[key]
            t = fld["type"]
            base = t["base"]
            if t["is_array"]:
                if base == "msg":
                    sub = msg_by_name(schema, t["ref"])
                    bodies = [emit_msg(sub, e) for e in v]
                    name = fresh(key)
                    w(f"static wire_{t['ref']}_t {name} [] = {{")
                    for b in bodies:
                        w(f"    {{ {b} }},")
                    w("};")
                else:
                    name = fresh(key)
                    ctype = SCALARS[base][0]
                    elems = ", ".join(scalar_c(fld, e) for e in v)
                    w(f"static {ctype.replace(' *', '*')} {name} [] = {{ {elems} }};")
                if v:
                    parts.append(f".{key} = {name}, .{key}_count = {len(v)}")
            elif base == "msg":
                sub = msg_by_name(schema, t["ref"])
                body = emit_msg(sub, v)
                name = fresh(key)
                w(f"static wire_{t['ref']}_t {name} = {{ {body} }};")
                parts.append(f".{key} = &{name}")
            elif base == "map":
                name = fresh(key)
                entries = ", ".join(f"{{ {c_str(k)}, {c_str(x)} }}" for k, x in v.items())
                w(f"static wire_kv_t {name} [] = {{ {entries} }};")
                parts.append(f".{key} = {name}, .{key}_count = {len(v)}")
            elif base == "bin":
                name = fresh(key)
                w(f"static uint8_t {name} [] = {{ {', '.join(str(b) for b in v) or '0'} }};")
                parts.append(f".{key} = {{ {name}, {len(v)} }}")
            else:
                parts.append(f".{key} = {scalar_c(fld, v)}")
                if field_has_flag(fld):
                    parts.append(f".has_{key} = true")
        return ", ".join(parts)

    names = []
    for m in schema["messages"]:
        body = emit_msg(m, resolved(schema, m, m["example"]))
        name = f"s_example_{m['name']}"
        w(f"static wire_{m['name']}_t {name} = {{ {body} }};")
        names.append(name)
        w("")
    w("const void *")
    w("wire_example (int id)")
    w("{")
    w("    switch (id) {")
    for m, name in zip(schema["messages"], names):
        w(f"        case WIRE_MSG_{cname(m['name'])}: return &{name};")
    w("        default: return NULL;")
    w("    }")
    w("}")


def write_if_changed(path, text):
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w") as f:
        f.write(text)


# ------------------------------------------------------------------ JSON output

def render_json(schema, out):
    doc = {"version": schema["version"],
           "limits": {k: v["value"] for k, v in schema["limits"].items()},
           "status": {st["name"]: st["code"] for st in schema["status"]},
           "status_is_error": {st["name"]: st["is_error"] for st in schema["status"]},
           "enums": {k: v["values"] for k, v in schema["enums"].items()},
           "messages": []}
    for m in schema["messages"]:
        fields = []
        for f in m["fields"]:
            ff = {k: f[k] for k in ("key", "required", "default", "group", "min_len",
                                    "max_len", "min_count", "max_count")}
            ff["type"] = f["type"]["text"]
            for b in ("min", "max"):
                v = f[b]
                ff[b] = None if v is None or (isinstance(v, float) and math.isinf(v)) else v
            fields.append(ff)
        doc["messages"].append({"name": m["name"], "id": m["id"], "nested": m["nested"],
                                "fields": fields,
                                "example": to_json(resolved(schema, m, m["example"]))})
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


# ------------------------------------------------------------------ markdown

def md_type(schema, fld):
    t = fld["type"]
    base = t["base"]
    if base == "enum":
        inner = "str: " + " \\| ".join(f"`{v}`" for v in schema["enums"][t["ref"]]["values"])
    elif base == "msg":
        inner = f"map: [`{t['ref']}`](#{t['ref']})"
    elif base == "map":
        inner = "map&lt;str, str&gt;"
    else:
        inner = SCALARS[base][2]
    return f"array of {inner}" if t["is_array"] else inner


def md_num(v):
    if isinstance(v, float):
        return repr(v) if not math.isinf(v) else None
    return str(v)


def md_bounds(schema, fld):
    """Human-readable bounds, naming limits where the schema does."""
    out = []
    base = fld["type"]["base"]

    def lim(bound):
        name = fld.get(bound + "_limit")
        val = fld[bound]
        return f"{val} ({name})" if name else md_num(val)

    if base in INT_RANGE or base in ("float", "float32"):
        lo, hi = fld["min"], fld["max"]
        trange = INT_RANGE.get(base)
        show_lo = lo is not None and not (trange and lo == trange[0]) and not (isinstance(lo, float) and math.isinf(lo))
        show_hi = hi is not None and not (trange and hi == trange[1]) and not (isinstance(hi, float) and math.isinf(hi))
        each = "each " if fld["type"]["is_array"] else ""
        if show_lo:
            out.append(f"{each}min {lim('min')}")
        if show_hi:
            out.append(f"{each}max {lim('max')}")
    if fld["min_count"] is not None:
        out.append(f"min count {lim('min_count')}")
    if fld["max_count"] is not None:
        out.append(f"max count {lim('max_count')}")
    what = "bytes each" if (fld["type"]["is_array"] or base == "map") else "bytes"
    if fld["min_len"] is not None:
        out.append(f"min {lim('min_len')} {what}")
    if fld["max_len"] is not None:
        out.append(f"max {lim('max_len')} {what}")
    return ", ".join(out) or "-"


def md_presence(fld):
    if fld["required"]:
        return "required"
    if fld["default"] is not None:
        d = fld["default"]
        d = json.dumps(d)
        return f"optional, default `{d}`"
    if fld["group"]:
        return "one of"
    return "optional"


def md_example(schema, msg):
    values = to_json(resolved(schema, msg, msg["example"]))
    if not msg["nested"]:
        values = {"v": schema["version"], "t": msg["name"], **values}
    return json.dumps(values, indent=2, ensure_ascii=False)


def render_md(schema):
    L = []
    w = L.append
    w(f"<!-- {BANNER}. Regenerate: python3 schemas/gen.py md schemas/messages.toml docs/wire-protocol.md -->")
    w("")
    w("# splitmesh wire protocol")
    w("")
    w(f"Schema version **{schema['version']}**. This reference is rendered from "
      "`schemas/messages.toml`, the same source the C codec is generated from; "
      "use it to talk to splitmesh services from any language.")
    w("")
    w("## Framing")
    w("")
    w("- Requests and replies travel over ZeroMQ with Majordomo framing (MDP/0.2, "
      "[RFC 18](https://rfc.zeromq.org/spec/18/)). The body is **one frame** of "
      "[MessagePack](https://msgpack.org/). Streaming replies are MDP PARTIAL "
      "frames followed by one FINAL.")
    w("- Every top-level body is a MessagePack **map** with string keys. It starts "
      "with `v` (the schema version, an int) and `t` (the message name, a str, "
      "e.g. `\"verify\"`), then the fields listed below. Nested messages (marked "
      "*nested*) are maps without `v` and `t`.")
    w("- A receiver rejects a body whose `v` it does not speak, and one whose `t` "
      "names a different message than the service expects. A body without `t` "
      "is accepted as the message the service expects.")
    w("- **Unknown keys are ignored**, so a newer sender may add optional fields. "
      "Duplicate keys are rejected.")
    w("- An optional field may be left out or sent as nil; both mean absent, and "
      "an absent field with a default takes the default. Senders generated from "
      "this schema write every field that has a value, defaults included.")
    w("- `str` is UTF-8 without NUL bytes. `bin` is MessagePack bin (Python: "
      "`bytes` with `use_bin_type=True`). Integers use the smallest MessagePack "
      "encoding; `float` fields also accept integers; int fields accept only "
      "integers. Multi-byte numbers inside `bin` payloads are little-endian.")
    w("- Before anything is allocated, the receiver bounds the frame size, every "
      "str/bin length, every array/map count, the nesting depth (unknown keys "
      "included) and the number of objects (see Limits). A bad body gets an "
      "`error` reply (400, 413 or 422) naming the field and the limit; the "
      "service keeps serving.")
    w("- Errors are replies, not silence: a service answers `error` in place of "
      "the normal reply.")
    w("")
    w("In the examples below, MessagePack is shown as JSON; a `bin` value is "
      "shown as `{\"$bin\": \"<hex>\"}`.")
    w("")
    w("## Limits")
    w("")
    w("| name | value | meaning |")
    w("|---|---:|---|")
    for lim in schema["limits"].values():
        w(f"| `{lim['name']}` | {lim['value']} | {lim['doc']} |")
    w("")
    w("## Status codes")
    w("")
    w("Carried in `error.status`; grouped like HTTP (2xx ok, 4xx the caller's "
      "fault, 5xx ours). *error* says whether a reply with the status counts in "
      "`splitmesh_errors_total` (`wire_status_is_error` in C; a status not listed "
      "counts when it is 400 or more).")
    w("")
    w("| code | name | error | meaning |")
    w("|---:|---|---|---|")
    for st in schema["status"]:
        flag = "yes" if st["is_error"] else "no"
        w(f"| {st['code']} | `{st['name']}` | {flag} | {st['doc']} |")
    w("")
    w("## Enumerations")
    w("")
    w("Sent as str; any other value is rejected with 422.")
    w("")
    w("| enum | values | meaning |")
    w("|---|---|---|")
    for en in schema["enums"].values():
        vals = ", ".join(f"`{v}`" for v in en["values"])
        w(f"| `{en['name']}` | {vals} | {en['doc']} |")
    w("")
    w("## Messages")
    w("")
    w("| message | service | kind |")
    w("|---|---|---|")
    for m in schema["messages"]:
        kind = "nested" if m["nested"] else "top-level"
        w(f"| [`{m['name']}`](#{m['name']}) | {m['service'] or '-'} | {kind} |")
    w("")
    for m in schema["messages"]:
        w(f"### {m['name']}")
        w("")
        if m["nested"]:
            w("*Nested* (no `v`, no `t`).")
        else:
            w(f"Service `{m['service']}`; `t` = `\"{m['name']}\"`.")
        w("")
        w(m["doc"])
        w("")
        if m["fields"]:
            w("| key | type | presence | bounds | meaning |")
            w("|---|---|---|---|---|")
            for f in m["fields"]:
                w(f"| `{f['key']}` | {md_type(schema, f)} | {md_presence(f)} | "
                  f"{md_bounds(schema, f)} | {f['doc']} |")
            w("")
        for group in m["one_of"]:
            w("Exactly one of " + ", ".join(f"`{k}`" for k in group) + " must be given (else 422).")
            w("")
        if m["rules"]:
            w("Rules across fields (422 when broken, 413 for sizes over a limit): " + m["rules"])
            w("")
        w("Example:")
        w("")
        w("```json")
        w(md_example(schema, m))
        w("```")
        w("")
    return "\n".join(L)


# ------------------------------------------------------------------ main

def main(argv):
    if len(argv) != 4 or argv[1] not in ("c", "md", "json"):
        print("usage: gen.py c|md|json messages.toml OUT", file=sys.stderr)
        return 2
    try:
        schema = load(argv[2])
        if argv[1] == "c":
            render_c(schema, argv[3])
        elif argv[1] == "md":
            text = render_md(schema)
            with open(argv[3], "w") as f:
                f.write(text)
        else:
            render_json(schema, argv[3])
    except SchemaError as e:
        print(f"gen.py: {argv[2]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
