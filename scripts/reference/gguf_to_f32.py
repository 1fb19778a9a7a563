#!/usr/bin/env python3
"""gguf_to_f32.py: writes a GGUF whose tensors are the source's, dequantized to F32.

For the greedy comparison with llama.cpp (llamacpp_greedy.py --kv-f32): a
Q4_1 file makes llama.cpp quantize activations to q8_1 and keep K/V in f16,
a different function from the engine's F32 path. On this file llama.cpp's
matmuls are f32 x f32, so with an f32 KV cache both engines compute the same
function from the same weights (the dequantized Q4_1/Q8_0 values, exactly
what the engine's F32 path and transformers use) and differ only in float
summation order.

Metadata is copied as is (architecture, hyperparameters, tokenizer); every
tensor is dequantized with the `gguf` package (gguf.quants.dequantize).

  python3 scripts/reference/gguf_to_f32.py /work/models/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2_f32.gguf
"""
import sys

import numpy as np


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gguf_to_f32.py IN.gguf OUT.gguf")
    import gguf
    from gguf import GGUFReader, GGUFWriter, GGUFValueType
    from gguf.quants import dequantize

    src = GGUFReader(sys.argv[1])
    arch = src.fields["general.architecture"].contents()
    out = GGUFWriter(sys.argv[2], arch)
    for name, field in src.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == GGUFValueType.ARRAY:
            out.add_key_value(name, value, vtype, sub_type=field.types[-1])
        else:
            out.add_key_value(name, value, vtype)
    out.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in src.tensors:
        data = dequantize(t.data, t.tensor_type).astype(np.float32)
        #  numpy shape is ggml's ne reversed; the writer expects that.
        data = data.reshape([int(d) for d in reversed(t.shape)])
        out.add_tensor(t.name, data)
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()
    print(f"wrote {sys.argv[2]}", file=sys.stderr)


if __name__ == "__main__":
    main()
