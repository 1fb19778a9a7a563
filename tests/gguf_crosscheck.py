#!/usr/bin/env python3
"""gguf_crosscheck.py: checks splitmesh's GGUF files against llama.cpp's gguf-py.

Used by tests/test_gguf_write.c (which skips when no interpreter has the
`gguf` package: `pip install gguf numpy`).

  read FILE OUTDIR   Parse FILE with gguf.GGUFReader. Writes OUTDIR/meta.txt,
                     one line per metadata key:  key<TAB>TYPE<TAB>values
                     (TYPE is the value type name, ARRAY:SUBTYPE for arrays;
                     numbers as hex of their raw little-endian bits, strings
                     as hex of their bytes, array elements comma-separated),
                     and one line per tensor:  tensor<TAB>name<TAB>ggml type
                     <TAB>ne0,ne1,..<TAB>nbytes<TAB>data offset.
                     OUTDIR/tensors.f32 holds every tensor dequantized by
                     gguf.quants, in file order.
  write FILE         Write a file with gguf.GGUFWriter whose contents
                     test_gguf_write.c knows (see there).
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def value_hex(part, vtype):
    if vtype == V.STRING:
        return bytes(part).hex()
    raw = np.asarray(part)
    return "%x" % int(raw.view(UNSIGNED[raw.dtype.itemsize])[0])


def read(path, outdir):
    r = gguf.GGUFReader(path)
    lines = []
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        main = f.types[0]
        if main == V.ARRAY:
            sub = f.types[-1] if len(f.types) > 1 else V.UINT8
            tname = "ARRAY:" + sub.name
            vals = ",".join(value_hex(f.parts[i], sub) for i in f.data)
        else:
            tname = main.name
            vals = value_hex(f.parts[f.data[0]], main)
        lines.append(f"{key}\t{tname}\t{vals}")
    with open(os.path.join(outdir, "tensors.f32"), "wb") as out:
        for t in r.tensors:
            shape = ",".join(str(int(d)) for d in t.shape)
            lines.append(f"tensor\t{t.name}\t{int(t.tensor_type)}\t{shape}\t{int(t.n_bytes)}\t{int(t.data_offset)}")
            deq = gguf.quants.dequantize(t.data, t.tensor_type)
            out.write(np.asarray(deq, dtype=np.float32).reshape(-1).tobytes())
    with open(os.path.join(outdir, "meta.txt"), "w") as out:
        out.write("\n".join(lines) + "\n")


def inputs(n):
    # Exactly representable in float32, so C computes the same numbers.
    i = np.arange(n)
    return (((i * 37) % 101 - 50) / 64.0).astype(np.float32)


def write(path):
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_uint32("llama.block_count", 3)
    w.add_int32("test.i32", -42)
    w.add_float32("test.f32", 0.125)
    w.add_float64("test.f64", -2.5)
    w.add_bool("test.bool", True)
    w.add_uint64("test.u64", 1 << 40)
    w.add_string("test.str", "h\u00e9llo")
    w.add_array("test.strs", ["a", "bc", "\u0120the"])
    w.add_array("test.ints", [1, -2, 3])
    w.add_tensor("t.f32", inputs(64).reshape(2, 32))
    w.add_tensor("t.f16", inputs(32).astype(np.float16))
    for name, qt in (("t.q8_0", Q.Q8_0), ("t.q4_0", Q.Q4_0), ("t.q4_1", Q.Q4_1), ("t.bf16", Q.BF16)):
        x = inputs(128).reshape(2, 64)
        w.add_tensor(name, gguf.quants.quantize(x, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "read":
        read(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
