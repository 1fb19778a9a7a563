/*  cmd_tokenize.c: `splitmesh tokenize`, the model's tokenizer from the command line.

    Shows what the tokenizer service does with a model file's vocabulary:
    text to ids (optionally with each id's piece), ids back to text, and a
    one-message chat rendered with the model's chat template. Handy for
    comparing against llama.cpp's llama-tokenize by eye, and for scripts.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "chat_template.h"
#include "cli.h"
#include "gguf.h"
#include "tokenizer.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh tokenize [options] [TEXT | -]\n"
        "\n"
        "Tokenizes TEXT (or standard input with -) with a GGUF model's own vocabulary\n"
        "and prints the ids, space-separated.\n"
        "\n"
        "  --model FILE     model file (default: $SPLITMESH_MODEL, else\n"
        "                   models/SmolLM2-135M-Instruct.Q4_1.gguf)\n"
        "  --special        parse control tokens written in the text (<|im_start|>)\n"
        "  --add-special    add BOS/EOS as the vocabulary asks\n"
        "  --pieces         print one 'id<TAB>piece' line per token instead\n"
        "  --chat           treat TEXT as a user message: render the chat template\n"
        "                   (with generation prompt), print it, then its ids\n"
        "  --decode IDS     print the text of space- or comma-separated ids\n");
}

static char *
s_read_stdin (size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc (cap);
    while (buf) {
        size_t got = fread (buf + n, 1, cap - n - 1, stdin);
        n += got;
        if (got == 0)
            break;
        if (n + 1 == cap) {
            char *grown = realloc (buf, cap * 2);
            if (!grown) {
                free (buf);
                return NULL;
            }
            buf = grown;
            cap *= 2;
        }
    }
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

int
cmd_tokenize (int argc, char **argv)
{
    const char *model = getenv ("SPLITMESH_MODEL");
    const char *text = NULL, *decode = NULL;
    bool special = false, add_special = false, pieces = false, chat = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp (a, "--help") || !strcmp (a, "-h")) {
            s_usage (stdout);
            return 0;
        }
        else if (!strcmp (a, "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp (a, "--decode") && i + 1 < argc)
            decode = argv[++i];
        else if (!strcmp (a, "--special"))
            special = true;
        else if (!strcmp (a, "--add-special"))
            add_special = true;
        else if (!strcmp (a, "--pieces"))
            pieces = true;
        else if (!strcmp (a, "--chat"))
            chat = true;
        else if (a[0] == '-' && a[1] != 0) {
            fprintf (stderr, "splitmesh tokenize: unknown option '%s'\n\n", a);
            s_usage (stderr);
            return 2;
        }
        else if (!text)
            text = a;
        else {
            fprintf (stderr, "splitmesh tokenize: one TEXT argument only (quote it)\n");
            return 2;
        }
    }
    if (!text && !decode) {
        s_usage (stderr);
        return 2;
    }
    if (!model || !*model)
        model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

    int rc = 1;
    char err[512] = "";
    char *input = NULL, *rendered = NULL, *out = NULL;
    int32_t *ids = NULL;
    chat_template_t *tmpl = NULL;
    tokenizer_t *tok = NULL;
    gguf_t *gguf = gguf_open (model, err, sizeof err);
    if (!gguf) {
        fprintf (stderr, "splitmesh tokenize: %s: %s\n", model, err);
        return 1;
    }
    tok = tokenizer_new_from_gguf (gguf, err, sizeof err);
    if (!tok) {
        fprintf (stderr, "splitmesh tokenize: %s: %s\n", model, err);
        goto done;
    }
    if (decode) {
        size_t n = 0, cap = 16;
        ids = malloc (cap * sizeof (int32_t));
        for (const char *p = decode; ids && *p; ) {
            char *end;
            long v = strtol (p, &end, 10);
            if (end == p) {
                if (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t') {
                    p++;
                    continue;
                }
                fprintf (stderr, "splitmesh tokenize: bad id list at '%s'\n", p);
                rc = 2;
                goto done;
            }
            if (n == cap) {
                int32_t *grown = realloc (ids, 2 * cap * sizeof (int32_t));
                if (!grown)
                    goto done;
                ids = grown;
                cap *= 2;
            }
            ids[n++] = (int32_t) (v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v);
            p = end;
        }
        size_t len;
        if (tokenizer_decode (tok, ids, n, false, special, &out, &len, err, sizeof err)) {
            fprintf (stderr, "splitmesh tokenize: %s\n", err);
            goto done;
        }
        fwrite (out, 1, len, stdout);
        fputc ('\n', stdout);
        rc = 0;
        goto done;
    }

    size_t len = strlen (text);
    if (!strcmp (text, "-")) {
        input = s_read_stdin (&len);
        if (!input) {
            fprintf (stderr, "splitmesh tokenize: cannot read standard input\n");
            goto done;
        }
        text = input;
    }
    if (chat) {
        tmpl = chat_template_new_from_gguf (gguf, err, sizeof err);
        if (!tmpl) {
            fprintf (stderr, "splitmesh tokenize: %s\n", err);
            goto done;
        }
        chat_message_t msg = { "user", text };
        if (chat_template_apply (tmpl, &msg, 1, true, &rendered, &len, err, sizeof err)) {
            fprintf (stderr, "splitmesh tokenize: %s\n", err);
            goto done;
        }
        fwrite (rendered, 1, len, stdout);
        text = rendered;
        special = true;             //  role markers are control tokens
    }
    size_t n;
    if (tokenizer_encode (tok, text, len, add_special, special, &ids, &n, err, sizeof err)) {
        fprintf (stderr, "splitmesh tokenize: %s\n", err);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (pieces) {
            const char *piece;
            size_t plen;
            tokenizer_token_to_piece (tok, ids[i], true, &piece, &plen, NULL, 0);
            printf ("%d\t%.*s\n", ids[i], (int) plen, piece);
        }
        else
            printf ("%s%d", i ? " " : "", ids[i]);
    }
    if (!pieces)
        printf ("\n");
    rc = 0;
done:
    free (input);
    free (rendered);
    free (out);
    free (ids);
    chat_template_destroy (&tmpl);
    tokenizer_destroy (&tok);
    gguf_destroy (&gguf);
    return rc;
}
