#!/usr/bin/env python3
"""tokenizer_corpus.py: the deterministic UTF-8 corpus the tokenizer goldens are made from.

The tokenizer must give the same ids as llama.cpp on "a few MB of varied
UTF-8". This script writes that text: English prose with contractions,
CJK, Japanese and Korean, emoji (modifiers, ZWJ sequences, flags, keycaps),
accented Latin (precomposed and combining), Arabic, Hebrew, Cyrillic, Greek,
Devanagari and Thai, runs of spaces, tabs, CR/LF and Unicode spaces, long
numbers and non-ASCII digits, code, and text that looks like special tokens.

Everything comes from this file and a fixed seed (Python's random with
integer seeds, stable across versions), never from files on the machine, so
the C test can regenerate the same bytes with any python3 (stdlib only) and
compare with the goldens. Characters come from blocks assigned long before
Unicode 14, so PCRE2's and llama.cpp's Unicode tables agree on them.

Usage: tokenizer_corpus.py --out FILE [--chunks N] [--chunk-bytes B]
Chunk i is generated from seed 1000 + i alone and is exactly the text
between consecutive offsets listed with --manifest.
"""
import argparse
import random
import sys

CHUNKS = 96
CHUNK_BYTES = 32 * 1024

WORDS = """the of and to in is was for that on as with by he at from his an were are which
this be or had it not but have first one their also its new after who they has her two she
been other when there all during into school time may years more most only over city some world
would where later up such used many can state about national out known university united then made
between she's don't won't isn't it's we're they've I'm you'll he'd can't wouldn't
tokenizer model layer cloud device edge split mesh quantization activation latency bandwidth
privacy speculative draft target verify accept reject broker session worker heartbeat""".split()

CAPS = "The A In It This When After Although However Meanwhile Yesterday Nobody".split()

ACCENTED = """café naïve résumé façade jalapeño São Paulo Zürich Ærøskøbing coöperate
crème brûlée déjà vu Ångström Łódź Dvořák Köln straße Œuvre mañana piñata fiancée
Tiếng Việt Hà Nội Nguyễn đường phố İstanbul ğüşöç Ελλάδα""".split()

CYRILLIC = "Привет мир это тест токенизатора на Български език нещо Москва Київ Беларусь".split()
GREEK = "Καλημέρα κόσμε αυτό είναι μια δοκιμή Ἀθῆναι λόγος".split()
ARABIC = "مرحبا بالعالم هذا اختبار للمحلل اللغوي العربية القاهرة".split()
HEBREW = "שלום עולם זהו מבחן של המפרק ירושלים".split()
DEVANAGARI = "नमस्ते दुनिया यह एक परीक्षण है हिन्दी भाषा".split()
THAI = "สวัสดีชาวโลก นี่คือการทดสอบ ภาษาไทย กรุงเทพมหานคร".split()
JAPANESE = "こんにちは世界 これはテストです トークナイザー 東京 ひらがな カタカナ 漢字".split()
KOREAN_WORDS = "안녕하세요 세계 이것은 시험입니다 서울 한국어".split()

EMOJI_SEQS = [
    "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",   # family ZWJ
    "\U0001F3F3\uFE0F\u200D\U0001F308",                             # rainbow flag
    "\U0001F469\U0001F3FD\u200D\U0001F4BB",                         # woman technologist, tone
    "\U0001F636\u200D\U0001F32B\uFE0F",                             # face in clouds
    "\U0001F44D\U0001F3FB", "\U0001F44B\U0001F3FF",                 # skin tones
    "\U0001F1EB\U0001F1F7", "\U0001F1EF\U0001F1F5", "\U0001F1FA\U0001F1F8",   # flags
    "1\uFE0F\u20E3", "#\uFE0F\u20E3",                               # keycaps
    "\u2764\uFE0F", "\u2705", "\u2728", "\u263A\uFE0F",
    "\U0001F999", "\U0001F680", "\U0001F600", "\U0001F602", "\U0001F525",
]

CODE_SNIPPETS = [
    '#include <stdio.h>\n\nint main (int argc, char **argv)\n{\n    for (int i = 0; i < argc; i++)\n'
    '        printf ("%d: %s\\n", i, argv[i]);\n    return 0;\n}\n',
    'def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n'
    '    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\nif __name__ == "__main__":\n'
    '    print([fib(i) for i in range(20)])\n',
    'const sum = (xs) => xs.reduce((a, b) => a + b, 0);\nexport default function App() {\n'
    '\treturn <div className="app">{sum([1, 2, 3])}</div>;\n}\n',
    'SELECT id, name, COUNT(*) AS n\n  FROM users u\n  JOIN orders o ON o.user_id = u.id\n'
    ' WHERE u.created_at >= \'2024-01-01\'\n GROUP BY id, name\nHAVING n > 10;\n',
    'fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n'
    '    println!("{:?}", v);\n}\n',
    '<html>\n  <body>\n    <p class="note">Hello &amp; welcome!</p>\n  </body>\n</html>\n',
    '{\n  "name": "splitmesh",\n  "version": "0.1.0",\n  "tags": ["edge", "cloud"],\n'
    '  "ratio": 0.75,\n  "nested": {"a": [1, 2, {"b": null}]}\n}\n',
    'if [ -z "${FOO:-}" ]; then\n    echo "FOO is unset" >&2\n    exit 1\nfi\n'
    'for f in *.c; do gcc -O2 -c "$f"; done\n',
]

IDENT_PARTS = "get set init load save parse token vocab merge rank buf len idx ptr ctx cfg err tmp".split()
OPERATORS = ["=", "==", "!=", "+=", "->", "::", "&&", "||", "<<", ">>", "<=", ">=", "++", "--", "**", "//"]

SPECIAL_LOOKALIKES = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<jupyter_code>",
                      "<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|eot_id|>", "[INST]", "<<SYS>>"]

WHITESPACE_RUNS = [" ", "  ", "   ", "    ", "        ", "\t", "\t\t", "\n", "\n\n", "\n\n\n",
                   "\r\n", "\r\n\r\n", " \n", "\n ", " \t \n", "\t\n", "\u00A0", "\u3000",
                   "\u2003", "\u0085", " \u00A0 ", "\n\n\n\n\n\n", " " * 17, "\t \t \t"]


def cjk(r, n):
    return "".join(chr(r.randint(0x4E00, 0x9FA5)) for _ in range(n))


def hangul(r, n):
    return "".join(chr(r.randint(0xAC00, 0xD7A3)) for _ in range(n))


def emoji(r):
    if r.random() < 0.5:
        return r.choice(EMOJI_SEQS)
    ranges = [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6C5), (0x1F910, 0x1F9E6)]
    lo, hi = r.choice(ranges)
    return chr(r.randint(lo, hi))


def number(r):
    k = r.random()
    if k < 0.3:
        return str(r.randint(0, 10 ** r.randint(1, 30)))
    if k < 0.45:
        return f"{r.randint(0, 10**9):,}"
    if k < 0.6:
        return f"{r.uniform(-1e6, 1e6):.{r.randint(1, 8)}f}"
    if k < 0.7:
        return "".join(chr(0x0660 + int(d)) for d in str(r.randint(0, 99999)))   # Arabic-Indic
    if k < 0.8:
        return "".join(chr(0x0966 + int(d)) for d in str(r.randint(0, 99999)))   # Devanagari
    if k < 0.9:
        return r.choice(["x²", "10³", "½", "¾", "Ⅻ", "ⅷ", "①②③", "٣.١٤", "1e-9", "0xDEADBEEF"])
    return "".join(r.choice("0123456789") for _ in range(r.randint(40, 120)))


def english(r):
    n = r.randint(4, 24)
    words = [r.choice(CAPS)] + [r.choice(WORDS) for _ in range(n)]
    s = " ".join(words)
    return s + r.choice([".", "!", "?", "...", ";", ":", " —", ",", "'s", "'ll", "'VE", "'re"])


def code_like(r):
    lines = []
    depth = 0
    for _ in range(r.randint(3, 12)):
        ident = "_".join(r.choice(IDENT_PARTS) for _ in range(r.randint(1, 3)))
        op = r.choice(OPERATORS)
        line = "    " * depth + f"{ident} {op} {r.choice(IDENT_PARTS)}({r.randint(0, 999)});"
        if r.random() < 0.2:
            line += "  // " + english(r)
        lines.append(line)
        if r.random() < 0.25:
            lines.append("    " * depth + "if (" + ident + ") {")
            depth += 1
        elif depth and r.random() < 0.3:
            depth -= 1
            lines.append("    " * depth + "}")
    lines += ["    " * d + "}" for d in range(depth - 1, -1, -1)]
    return "\n".join(lines) + "\n"


def piece(r):
    k = r.random()
    if k < 0.25:
        return english(r)
    if k < 0.32:
        return cjk(r, r.randint(1, 40))
    if k < 0.36:
        return r.choice(JAPANESE) + r.choice(["。", "、", "！", ""]) + hangul(r, r.randint(0, 6))
    if k < 0.39:
        return " ".join(r.choice(KOREAN_WORDS) for _ in range(r.randint(1, 6)))
    if k < 0.47:
        return "".join(emoji(r) + r.choice(["", "", " ", "\n"]) for _ in range(r.randint(1, 8)))
    if k < 0.53:
        return " ".join(r.choice(ACCENTED) for _ in range(r.randint(1, 8)))
    if k < 0.55:
        return "e\u0301 a\u0300 o\u0308 n\u0303 c\u0327 A\u030A " + r.choice(ACCENTED)   # combining
    if k < 0.62:
        pool = r.choice([CYRILLIC, GREEK, ARABIC, HEBREW, DEVANAGARI, THAI])
        return " ".join(r.choice(pool) for _ in range(r.randint(1, 10)))
    if k < 0.70:
        return r.choice(WHITESPACE_RUNS) * r.randint(1, 4)
    if k < 0.78:
        return " ".join(number(r) for _ in range(r.randint(1, 6)))
    if k < 0.84:
        return r.choice(CODE_SNIPPETS)
    if k < 0.90:
        return code_like(r)
    if k < 0.93:
        return r.choice(SPECIAL_LOOKALIKES) + r.choice(["", " ", "\n"]) + english(r)
    if k < 0.96:
        return "".join(r.choice("!@#$%^&*()[]{}<>?/\\|~`'\".,;:-_=+") for _ in range(r.randint(1, 12)))
    # mixed-script run without spaces
    return english(r).replace(" ", "") + cjk(r, 3) + number(r) + emoji(r) + r.choice(ACCENTED)


def chunk(i, size):
    r = random.Random(1000 + i)
    parts = []
    total = 0
    while True:
        p = piece(r) + r.choice(["", " ", " ", "\n", "\n\n", "  ", "\t"])
        b = len(p.encode("utf-8"))
        if total + b > size:
            break
        parts.append(p)
        total += b
    return "".join(parts).encode("utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--chunks", type=int, default=CHUNKS)
    ap.add_argument("--chunk-bytes", type=int, default=CHUNK_BYTES)
    ap.add_argument("--manifest", action="store_true", help="print each chunk's byte length")
    a = ap.parse_args()
    with open(a.out, "wb") as f:
        for i in range(a.chunks):
            c = chunk(i, a.chunk_bytes)
            f.write(c)
            if a.manifest:
                print(len(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
