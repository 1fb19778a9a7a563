#!/usr/bin/env python3
"""tokenizer_golden.py: writes the tokenizer goldens from llama.cpp (llama-cpp-python).

The C tokenizer must give llama.cpp's ids, so llama.cpp itself makes the
expected answers, through llama-cpp-python's bindings with vocab_only=True.
Run it with the pyenv python that has llama_cpp and jinja2:

  python3 scripts/reference/tokenizer_golden.py \
      --model /work/models/SmolLM2-135M-Instruct.Q4_1.gguf \
      --vocab-dir <llama.cpp>/models --out tests/golden/tokenizer

Outputs (all compact text, plus one binary id file):
  corpus.txt         corpus sha256, chunk count and each chunk's byte length
  <name>_chunks.txt  per chunk: n_ids and sha256 of the ids as int32 LE,
                     for smollm, llama-spm, gpt-2, llama-bpe
  smollm_head.u16    every id (uint16 LE) of the first HEAD_CHUNKS chunks
  <name>_cases.txt   corner cases: flags, input hex, ids
  <name>_unicode.txt every code point in context, per block of 256: ids sha256
  <name>_long.txt    long runs of one unit (spaces, letters, emoji, bad bytes)
  <name>_decode.txt  detokenize cases: flags, ids, output hex; plus the
                     sha256 of every token's piece (special on and off)
  chatml_cases.txt   SmolLM2 chat template rendered by jinja2 from the
                     GGUF's own tokenizer.chat_template, and its ids
  chat_templates.txt llama.cpp's ChatML templates (copied to templates/)
                     rendered by jinja2 for CONVERSATIONS
The corpus comes from tokenizer_corpus.py (same directory).
"""
import argparse
import ctypes
import hashlib
import os
import struct
import subprocess
import sys

import llama_cpp

HERE = os.path.dirname(os.path.abspath(__file__))
HEAD_CHUNKS = 6

#  Corner cases: runs of spaces and newlines, apostrophes, digits, scripts,
#  invalid UTF-8, special-token text. (bytes, add_special, parse_special)
CASES = [
    b"", b" ", b"  ", b"   ", b"\t", b"\n", b"\n\n", b"\n\n\n", b"\t\n", b" \n", b"\n ",
    b"  \n  ", b"a  b", b"a   b", b"a \n b", b"a\n\nb", b"a \t\n\t b", b"    Hello\n    Hello",
    b"Hello world", b" Hello world", b"Hello World!", b"  leading", b"trailing  ", b"x" + b" " * 40 + b"y",
    b"\r\n\r\n", b"line1\r\nline2\r\n", b"\xc2\xa0nbsp\xc2\xa0", b"\xe3\x80\x80ideo\xe3\x80\x80", b"nel\xc2\x85x",
    b"\xe2\x80\x83em\xe2\x80\x83space", b"don't won't I'm you're they've we'll he'd it's",
    b"DON'T WON'T I'M YOU'RE", b"' era", b"''", b"'s", b"3", b"33", b"333", b"3333", b"1234567890123",
    b"3.14159 -2.5e10 1,000,000", "\u0663\u0664\u0665 \u00bd \u2167 x\u00b2".encode(),
    "Привет мир".encode(), "こんにちは世界".encode(), "你好，世界！".encode(), "안녕하세요".encode(),
    "مرحبا بالعالم".encode(), "café naïve e\u0301".encode(), "\U0001F999.cpp".encode(),
    "\U0001F468\u200D\U0001F469\u200D\U0001F467 \U0001F1EB\U0001F1F7 1\uFE0F\u20E3".encode(),
    "\U0001F680 (normal) \U0001F636\u200D\U0001F32B\uFE0F (multiple emojis concatenated) \u2705".encode(),
    b"int main() {\n\treturn 0;\n}\n", b"def f(x):\n    return x**2  # sq\n",
    # invalid UTF-8: lone continuation, bad leads, truncated sequences, overlong, surrogate
    b"\x80", b"\xff", b"a\xffb", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82x", b"\xf0\x9f\x98",
    b"\xf0\x9f\x98 ok", b"\xc0\x80", b"\xc1\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf x", b"\xfe\xfe",
    b"ok \x80\x80\x80 ok", b"\xf8\x88\x80\x80\x80",
    # special-token text
    b"<|im_start|>user\nhi<|im_end|>\n", b"<|im_start|><|im_start|>", b"a<|endoftext|>b",
    b"<|im_start", b"<jupyter_code>x=1", b"<s> </s> <unk>", b"[INST] hi [/INST]",
]



def fuzz_cases(n=300, seed=7):
    """Random byte strings: invalid UTF-8 mixed with text. Lead bytes
    F4-F7 are left out: sequences above U+10FFFF make llama.cpp throw
    (std::invalid_argument, the process aborts), so there is no reference."""
    import random
    r = random.Random(seed)
    pool = [b" ", b"  ", b"\n", b"\t", b"a", b"Z", b"7", b"'s", b".", b"\xc3\xa9", b"\xe4\xb8\xad",
            b"\xf0\x9f\x98\x80", b"\xc2\xa0", b"<|im_end|>", b"<s>"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(r.randint(1, 12)):
            if r.random() < 0.5:
                parts.append(r.choice(pool))
            else:
                b = r.randint(0x80, 0xff)
                while 0xf4 <= b <= 0xf7:
                    b = r.randint(0x80, 0xff)
                parts.append(bytes([b]))
        out.append(b"".join(parts))
    return out


CASES += fuzz_cases()


def chunks_of(corpus, lengths):
    out, o = [], 0
    for n in lengths:
        out.append(corpus[o:o + n])
        o += n
    return out


def ids_hash(ids):
    return hashlib.sha256(struct.pack("<%di" % len(ids), *ids)).hexdigest()


class Ref:
    """llama.cpp's tokenizer for one vocabulary file."""

    def __init__(self, path):
        self.llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_vocab = self.llm.n_vocab()

    def tokenize(self, text, add_special=False, parse_special=False):
        n = len(text) + 8
        buf = (llama_cpp.llama_token * n)()
        k = llama_cpp.llama_tokenize(self.vocab, text, len(text), buf, n, add_special, parse_special)
        if k < 0:
            n = -k
            buf = (llama_cpp.llama_token * n)()
            k = llama_cpp.llama_tokenize(self.vocab, text, len(text), buf, n, add_special, parse_special)
        assert k >= 0
        return list(buf[:k])

    def detokenize(self, ids, remove_special, unparse_special):
        arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
        size = 64 + 64 * len(ids)
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(self.vocab, arr, len(ids), buf, size, remove_special, unparse_special)
        if n < 0:
            size = -n
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_detokenize(self.vocab, arr, len(ids), buf, size, remove_special, unparse_special)
        assert n >= 0
        return buf.raw[:n]

    def piece(self, tok, special):
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self.vocab, tok, buf, 256, 0, special)
        assert n >= 0
        return buf.raw[:n]


def write_chunks(ref, name, chunks, out):
    with open(os.path.join(out, f"{name}_chunks.txt"), "w") as f:
        f.write(f"# {name}: per corpus chunk, n_ids and sha256 of ids as int32 LE "
                "(add_special=0 parse_special=0), made by scripts/reference/tokenizer_golden.py\n")
        all_ids = []
        for i, c in enumerate(chunks):
            ids = ref.tokenize(c)
            all_ids.append(ids)
            f.write(f"{i} {len(ids)} {ids_hash(ids)}\n")
    return all_ids


def write_cases(ref, name, out):
    with open(os.path.join(out, f"{name}_cases.txt"), "w") as f:
        f.write(f"# {name}: add_special parse_special <TAB> input hex <TAB> ids (llama.cpp)\n")
        for text in CASES:
            for add_special, parse_special in ((0, 0), (0, 1), (1, 1)):
                ids = ref.tokenize(text, bool(add_special), bool(parse_special))
                f.write(f"{add_special} {parse_special}\t{text.hex() or '-'}\t{' '.join(map(str, ids)) or '-'}\n")


#  Every code point up to U+31FFF (and the E0000 block), 256 per line, each
#  in contexts where its class (letter, number, whitespace, other) decides
#  the split: catches any difference between PCRE2's and llama.cpp's
#  Unicode tables. Surrogates are written as llama.cpp decodes them (CESU).
UNICODE_BLOCKS = list(range(0, 0x320)) + [0xE00, 0xE01]


def unicode_block(blk):
    s = []
    for cp in range(blk * 256, blk * 256 + 256):
        ch = chr(cp)
        s.append(f"a{ch}1{ch} {ch}{ch}a {ch}'s\n")
    return "".join(s).encode("utf-8", "surrogatepass")


def write_unicode(ref, name, out):
    with open(os.path.join(out, f"{name}_unicode.txt"), "w") as f:
        f.write(f"# {name}: per block of 256 code points (see tokenizer_golden.py unicode_block): "
                "block n_ids sha256(int32 LE ids)\n")
        for blk in UNICODE_BLOCKS:
            ids = ref.tokenize(unicode_block(blk))
            f.write(f"{blk} {len(ids)} {ids_hash(ids)}\n")


#  Long runs of one unit (unit, repeat): whitespace, letters, digits, emoji,
#  invalid bytes. Checks ids and that nothing is quadratic.
LONG_RUNS = [(b" ", 100000), (b"a", 100000), (b"7", 100000), (b"\n", 50000), (b"\t \n", 20000),
             ("\U0001F600".encode(), 20000), (b"\xff", 50000), (b"ab ", 30000), ("\u4e2d".encode(), 50000),
             (b"'s", 30000), ("\u2003".encode(), 20000), (b"  x", 30000)]


def write_long(ref, name, out):
    with open(os.path.join(out, f"{name}_long.txt"), "w") as f:
        f.write(f"# {name}: unit hex, repeat, n_ids, sha256(int32 LE ids) of unit * repeat\n")
        for unit, rep in LONG_RUNS:
            ids = ref.tokenize(unit * rep)
            f.write(f"{unit.hex()} {rep} {len(ids)} {ids_hash(ids)}\n")


def write_decode(ref, name, out, corpus_ids):
    seqs = []
    for text in CASES:
        seqs.append(ref.tokenize(text, True, True))
    special_ids = [i for i in range(min(ref.n_vocab, 300))]
    seqs.append(special_ids)
    seqs.append(corpus_ids[:500])
    with open(os.path.join(out, f"{name}_decode.txt"), "w") as f:
        f.write(f"# {name}: remove_special unparse_special <TAB> ids <TAB> llama_detokenize output hex\n")
        for ids in seqs:
            for rs, us in ((0, 0), (0, 1), (1, 0), (1, 1)):
                text = ref.detokenize(ids, bool(rs), bool(us))
                f.write(f"{rs} {us}\t{' '.join(map(str, ids)) or '-'}\t{text.hex() or '-'}\n")
        for special in (0, 1):
            h = hashlib.sha256()
            for t in range(ref.n_vocab):
                p = ref.piece(t, bool(special))
                h.update(struct.pack("<I", len(p)) + p)
            f.write(f"pieces {special}\t{ref.n_vocab}\t{h.hexdigest()}\n")


CONVERSATIONS = [
    [("user", "Hello!")],
    [("system", "You are terse."), ("user", "What is 2+2?")],
    [("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke about CPUs.")],
    [("system", "Системный промпт 🤖"), ("user", "多语言 test\n\nwith  spaces"), ("assistant", "OK"),
     ("user", "<|im_start|> inside text")],
    [("assistant", "I start.")],
    [("user", "")],
    [],
]


def hf_jinja_env():
    """The environment transformers' apply_chat_template renders in."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.TemplateError(msg)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    return env


def write_templates(template_dir, out, extra):
    """Every ChatML template in llama.cpp's models/templates rendered by
    jinja2 (no tools), copied with its outputs: the C renderer must either
    refuse a template or reproduce jinja2 exactly."""
    import jinja2
    env = hf_jinja_env()
    tdir = os.path.join(out, "templates")
    os.makedirs(tdir, exist_ok=True)
    with open(os.path.join(out, "chat_templates.txt"), "w") as f:
        f.write("# llama.cpp models/templates/*.jinja with <|im_start|>, rendered by jinja2 "
                f"{jinja2.__version__} as transformers does (trim_blocks, lstrip_blocks; "
                "bos_token='<s>', eos_token='</s>')\n"
                "# template <TAB> add_generation_prompt <TAB> role:content_hex,... <TAB> rendered hex or ERROR\n")
        sources = [(n, open(os.path.join(template_dir, n), encoding="utf-8").read())
                   for n in sorted(os.listdir(template_dir))] + extra
        for name, src in sources:
            if not name.endswith(".jinja") or "<|im_start|>" not in src:
                continue
            try:
                tmpl = env.from_string(src)
            except jinja2.TemplateError:
                continue            # jinja2 cannot even parse it: no reference
            with open(os.path.join(tdir, name), "w", encoding="utf-8") as t:
                t.write(src)
            for conv in CONVERSATIONS:
                for agp in (1, 0):
                    msgs = [{"role": r_, "content": c} for r_, c in conv]
                    try:
                        text = tmpl.render(messages=msgs, add_generation_prompt=bool(agp),
                                           bos_token="<s>", eos_token="</s>").encode().hex() or "-"
                    except Exception:
                        text = "ERROR"
                    enc = ",".join(f"{r_}:{c.encode().hex() or '-'}" for r_, c in conv) or "-"
                    f.write(f"{name}\t{agp}\t{enc}\t{text}\n")


def write_chatml(ref, model_path, out):
    import gguf
    import jinja2
    r = gguf.GGUFReader(model_path)
    field = r.fields["tokenizer.chat_template"]
    template = bytes(field.parts[field.data[0]]).decode()
    tmpl = hf_jinja_env().from_string(template)
    convs = [
        [("user", "Hello!")],
        [("system", "You are terse."), ("user", "What is 2+2?")],
        [("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke about CPUs.")],
        [("system", "Системный промпт 🤖"), ("user", "多语言 test\n\nwith  spaces"), ("assistant", "OK"),
         ("user", "<|im_start|> inside text")],
        [("assistant", "I start.")],
        [("user", "")],
    ]
    with open(os.path.join(out, "chatml_cases.txt"), "w") as f:
        f.write("# SmolLM2 chat template rendered by jinja2 from the GGUF's tokenizer.chat_template\n"
                "# add_generation_prompt <TAB> role:content_hex,... <TAB> rendered hex <TAB> ids "
                "(add_special=1 parse_special=1)\n")
        for conv in convs:
            for agp in (1, 0):
                msgs = [{"role": r_, "content": c} for r_, c in conv]
                text = tmpl.render(messages=msgs, add_generation_prompt=bool(agp)).encode()
                ids = ref.tokenize(text, True, True)
                enc = ",".join(f"{r_}:{c.encode().hex() or '-'}" for r_, c in conv)
                f.write(f"{agp}\t{enc}\t{text.hex()}\t{' '.join(map(str, ids))}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="SmolLM2 GGUF")
    ap.add_argument("--vocab-dir", required=True, help="llama.cpp models/ with ggml-vocab-*.gguf")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)

    corpus_path = os.path.join(a.out, ".corpus.tmp")
    lengths = subprocess.run([sys.executable, os.path.join(HERE, "tokenizer_corpus.py"),
                              "--out", corpus_path, "--manifest"],
                             check=True, capture_output=True, text=True).stdout.split()
    lengths = [int(x) for x in lengths]
    corpus = open(corpus_path, "rb").read()
    os.unlink(corpus_path)
    chunks = chunks_of(corpus, lengths)
    with open(os.path.join(a.out, "corpus.txt"), "w") as f:
        f.write("# corpus from scripts/reference/tokenizer_corpus.py: sha256, chunks, then bytes per chunk\n")
        f.write(f"{hashlib.sha256(corpus).hexdigest()} {len(chunks)}\n")
        f.write(" ".join(map(str, lengths)) + "\n")

    smol = Ref(a.model)
    ids = write_chunks(smol, "smollm", chunks, a.out)
    head = [t for c in ids[:HEAD_CHUNKS] for t in c]
    with open(os.path.join(a.out, "smollm_head.u16"), "wb") as f:
        f.write(struct.pack("<%dH" % len(head), *head))
    write_cases(smol, "smollm", a.out)
    write_unicode(smol, "smollm", a.out)
    write_long(smol, "smollm", a.out)
    write_decode(smol, "smollm", a.out, head)
    write_chatml(smol, a.model, a.out)
    import gguf
    field = gguf.GGUFReader(a.model).fields["tokenizer.chat_template"]
    smol_template = bytes(field.parts[field.data[0]]).decode()
    write_templates(os.path.join(a.vocab_dir, "templates"), a.out,
                    [("SmolLM2-135M-Instruct.jinja", smol_template)])

    for name in ("llama-spm", "gpt-2", "llama-bpe"):
        path = os.path.join(a.vocab_dir, f"ggml-vocab-{name}.gguf")
        ref = Ref(path)
        cids = write_chunks(ref, name, chunks, a.out)
        write_cases(ref, name, a.out)
        write_unicode(ref, name, a.out)
        write_long(ref, name, a.out)
        write_decode(ref, name, a.out, cids[0])
    print(f"corpus {len(corpus)} bytes in {len(chunks)} chunks; smollm head {len(head)} ids", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
