//  test_codec_doc: the committed wire reference (docs/wire-protocol.md) is
//  what schemas/gen.py renders from schemas/messages.toml today, and gen.py
//  refuses schemas that leave a length unbounded.

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *
s_python (void)
{
    const char *python = getenv ("SPLITMESH_PYTHON");
    return python && *python? python: SPLITMESH_PYTHON;
}

//  Runs cmd (bounded by timeout), returns its exit status, output in out.
static int
s_run (const char *cmd, char *out, size_t out_size)
{
    FILE *p = popen (cmd, "r");
    cr_assert_not_null (p);
    size_t used = fread (out, 1, out_size - 1, p);
    out [used] = 0;
    int status = pclose (p);
    return WIFEXITED (status)? WEXITSTATUS (status): -1;
}

Test (codec_doc, reference_is_up_to_date, .timeout = 60)
{
    char tmp [] = "/tmp/splitmesh-doc-XXXXXX";
    int fd = mkstemp (tmp);
    cr_assert_geq (fd, 0);
    close (fd);
    char cmd [2048], out [8192];
    snprintf (cmd, sizeof (cmd),
              "timeout 30 '%s' '%s/schemas/gen.py' md '%s/schemas/messages.toml' '%s' 2>&1 && "
              "diff -u '%s/docs/wire-protocol.md' '%s' 2>&1 | head -40",
              s_python (), SPLITMESH_SOURCE_DIR, SPLITMESH_SOURCE_DIR, tmp,
              SPLITMESH_SOURCE_DIR, tmp);
    int status = s_run (cmd, out, sizeof (out));
    unlink (tmp);
    cr_assert_eq (status, 0, "gen.py md failed:\n%s", out);
    cr_assert_str_empty (out,
        "docs/wire-protocol.md is stale; run: python3 schemas/gen.py md "
        "schemas/messages.toml docs/wire-protocol.md\n%s", out);
}

//  A schema with an unbounded string, or a bad example, is refused with a
//  message naming the field.
Test (codec_doc, generator_rejects_unbounded_and_bad_examples, .timeout = 60)
{
    struct { const char *toml; const char *expect; } cases [] = {
        { "[[message]]\nname = \"m\"\ndoc = \"d\"\n"
          "[[message.field]]\nkey = \"s\"\ntype = \"str\"\ndoc = \"d\"\n",
          "m.s: str needs max_len" },
        { "[[message]]\nname = \"m\"\ndoc = \"d\"\n"
          "[[message.field]]\nkey = \"a\"\ntype = \"array<int>\"\ndoc = \"d\"\n",
          "arrays and maps need max_count" },
        { "[[message]]\nname = \"m\"\ndoc = \"d\"\n"
          "[[message.field]]\nkey = \"n\"\ntype = \"uint32\"\nmax = 5\ndoc = \"d\"\n"
          "[message.example]\nn = 6\n",
          "does not fit the field" },
        { "[[message]]\nname = \"m\"\ndoc = \"d\"\n"
          "[[message.field]]\nkey = \"x\"\ntype = \"msg:nope\"\ndoc = \"d\"\n",
          "unknown message 'nope'" },
        { "[[status]]\ncode = 409\nname = \"stale\"\ndoc = \"d\"\n",
          "status 409: needs is_error" },
        { "[[status]]\ncode = 206\nname = \"partial\"\nis_error = true\ndoc = \"d\"\n",
          "status 206: a status below 400 cannot be an error" },
    };
    for (size_t i = 0; i < sizeof (cases) / sizeof (cases [0]); i++) {
        char tmp [] = "/tmp/splitmesh-toml-XXXXXX";
        int fd = mkstemp (tmp);
        cr_assert_geq (fd, 0);
        FILE *f = fdopen (fd, "w");
        fprintf (f, "version = 1\n[limits.max_x]\nvalue = 1\ndoc = \"x\"\n"
                    "[[status]]\ncode = 200\nname = \"ok\"\nis_error = false\ndoc = \"ok\"\n"
                    "[enums.e]\nvalues = [\"a\"]\ndoc = \"e\"\n%s", cases [i].toml);
        fclose (f);
        char cmd [2048], out [4096];
        snprintf (cmd, sizeof (cmd), "timeout 30 '%s' '%s/schemas/gen.py' json '%s' /dev/null 2>&1",
                  s_python (), SPLITMESH_SOURCE_DIR, tmp);
        int status = s_run (cmd, out, sizeof (out));
        unlink (tmp);
        cr_assert_eq (status, 1, "case %zu: gen.py should refuse (got %d):\n%s", i, status, out);
        cr_assert (strstr (out, cases [i].expect), "case %zu: want '%s' in:\n%s",
                   i, cases [i].expect, out);
    }
}
