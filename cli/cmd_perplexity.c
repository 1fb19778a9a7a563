/*  cmd_perplexity.c: `splitmesh perplexity`, the quality yardstick of a weight format.

    Tokenizes a text file with the model's own tokenizer, cuts the first N
    tokens into non-overlapping windows of C tokens, evaluates each window
    from an empty KV cache and scores every token of the window after its
    first (C - 1 predictions per window): perplexity = exp (mean negative
    log-likelihood). The same windows and tokens are used for every format,
    so F32 / W8 / W4 numbers are directly comparable.
*/
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cli.h"
#include "cli_args.h"
#include "kvcache.h"
#include "model.h"
#include "tokenizer.h"

#define S_HEAD_ROWS 64              //  positions per head call (bounds logits memory)
#define S_MAX_FILE (64u << 20)

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh perplexity --file TEXT [options]\n"
        "      --file PATH        text to score (e.g. ../shared/data/wikitext-2-test.txt)\n"
        "      --model FILE       GGUF model (default $SPLITMESH_MODEL, else " CLI_DEFAULT_MODEL ")\n"
        "      --format F         weight format: f32, w8, w4 (default w4)\n"
        "      --tokens N         score the first N tokens of the file (default 8192)\n"
        "      --ctx C            window size (default 512)\n"
        "      --threads T        threads (default 2)\n"
        "      --json             print one JSON object instead of text\n");
}

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

//  Reads a whole file (at most S_MAX_FILE bytes). Caller frees.
static char *
s_read_file (const char *path, size_t *len)
{
    FILE *f = fopen (path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc (S_MAX_FILE);
    size_t n = buf ? fread (buf, 1, S_MAX_FILE, f) : 0;
    fclose (f);
    *len = n;
    return buf;
}

int
cmd_perplexity (int argc, char **argv)
{
    const char *file = NULL, *model_path = NULL, *format = "w4";
    long n_tokens = 8192, ctx = 512, threads = 2;
    bool json = false;
    static const struct option longopts[] = {
        { "file", required_argument, NULL, 'F' },
        { "model", required_argument, NULL, 'm' },
        { "format", required_argument, NULL, 'f' },
        { "tokens", required_argument, NULL, 'n' },
        { "ctx", required_argument, NULL, 'c' },
        { "threads", required_argument, NULL, 't' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, ":h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
            case 'F': file = optarg; break;
            case 'm': model_path = optarg; break;
            case 'f': format = optarg; break;
            case 'n': bad = cli_parse_long (optarg, 2, 1 << 24, &n_tokens); break;
            case 'c': bad = cli_parse_long (optarg, 2, 1 << 20, &ctx); break;
            case 't': bad = cli_parse_long (optarg, 1, 256, &threads); break;
            case 'j': json = true; break;
            case 'h': s_usage (stdout); return 0;
            default: return cli_getopt_error ("perplexity", opt, argv, s_usage);
        }
        if (bad)
            return cli_bad_value ("perplexity", longopts, opt, optarg);
    }
    if (!file || optind < argc) {
        fprintf (stderr, "splitmesh perplexity: --file is required (and no other arguments)\n");
        s_usage (stderr);
        return 2;
    }
    model_options_t mo;
    if (cli_model_options ("perplexity", format, threads, &mo))
        return 2;
    model_path = cli_model_path (model_path);

    int rc = 1;
    char err[512] = "";
    model_t *model = NULL;
    tokenizer_t *tok = NULL;
    kvcache_t *kv = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    float *x = NULL, *logits = NULL;

    size_t text_len = 0;
    text = s_read_file (file, &text_len);
    if (!text) {
        fprintf (stderr, "splitmesh perplexity: cannot read %s\n", file);
        goto done;
    }
    model = model_load (model_path, &mo, err, sizeof err);
    if (!model) {
        fprintf (stderr, "splitmesh perplexity: %s: %s\n", model_path, err);
        goto done;
    }
    const model_config_t *c = model_config (model);
    if (ctx > c->context_length) {
        fprintf (stderr, "splitmesh perplexity: --ctx %ld exceeds the model's context %d\n",
                 ctx, c->context_length);
        rc = 2;
        goto done;
    }
    tok = tokenizer_new_from_gguf (model_gguf (model), err, sizeof err);
    if (!tok) {
        fprintf (stderr, "splitmesh perplexity: tokenizer: %s\n", err);
        goto done;
    }
    size_t n_ids = 0;
    if (tokenizer_encode (tok, text, text_len, false, false, &ids, &n_ids, err, sizeof err)) {
        fprintf (stderr, "splitmesh perplexity: %s\n", err);
        goto done;
    }
    if ((long) n_ids < n_tokens)
        n_tokens = (long) n_ids;
    long windows = n_tokens / ctx;
    if (windows < 1) {
        fprintf (stderr, "splitmesh perplexity: %s has %zu tokens, fewer than one window of %ld\n",
                 file, n_ids, ctx);
        goto done;
    }
    kv = kvcache_new (model, (int) ctx);
    x = malloc ((size_t) ctx * c->dim * sizeof *x);
    logits = malloc ((size_t) S_HEAD_ROWS * c->vocab_size * sizeof *logits);
    if (!kv || !x || !logits) {
        fprintf (stderr, "splitmesh perplexity: out of memory\n");
        goto done;
    }
    double nll = 0.0, t0 = s_now ();
    long scored = 0;
    for (long w = 0; w < windows; w++) {
        const int32_t *win = ids + w * ctx;
        kvcache_truncate (kv, 0);
        if (model_embed (model, win, (int) ctx, x)
        ||  model_forward (model, kv, 0, c->n_layers, 0, (int) ctx, x)) {
            fprintf (stderr, "splitmesh perplexity: %s\n", model_error (model));
            goto done;
        }
        //  Position t predicts win[t + 1].
        for (long t0r = 0; t0r < ctx - 1; t0r += S_HEAD_ROWS) {
            int rows = (int) (ctx - 1 - t0r < S_HEAD_ROWS ? ctx - 1 - t0r : S_HEAD_ROWS);
            if (model_head (model, x + (size_t) t0r * c->dim, rows, logits)) {
                fprintf (stderr, "splitmesh perplexity: %s\n", model_error (model));
                goto done;
            }
            for (int r = 0; r < rows; r++) {
                const float *l = logits + (size_t) r * c->vocab_size;
                float mx = l[0];
                for (int i = 1; i < c->vocab_size; i++)
                    if (l[i] > mx)
                        mx = l[i];
                double z = 0.0;
                for (int i = 0; i < c->vocab_size; i++)
                    z += exp ((double) l[i] - mx);
                nll += log (z) + mx - l[win[t0r + r + 1]];
                scored++;
            }
        }
        if (!json)
            fprintf (stderr, "\rwindow %ld/%ld: ppl so far %.4f", w + 1, windows, exp (nll / scored));
    }
    double secs = s_now () - t0;
    double ppl = exp (nll / scored);
    if (!json)
        fprintf (stderr, "\n");
    const char *base = strrchr (file, '/') ? strrchr (file, '/') + 1 : file;
    if (json)
        printf ("{\"format\":\"%s\",\"file\":\"%s\",\"file_tokens\":%zu,\"tokens\":%ld,\"ctx\":%ld,"
                "\"windows\":%ld,\"scored\":%ld,\"perplexity\":%.4f,\"seconds\":%.1f,\"tokens_per_s\":%.1f}\n",
                qfmt_name (mo.format), base, n_ids, windows * ctx, ctx, windows, scored, ppl, secs,
                windows * ctx / secs);
    else
        printf ("perplexity %.4f (%s, %s: %ld windows of %ld tokens, %ld predictions; %.1f s)\n",
                ppl, qfmt_name (mo.format), base, windows, ctx, scored, secs);
    rc = 0;

done:
    free (x);
    free (logits);
    free (ids);
    free (text);
    kvcache_destroy (&kv);
    tokenizer_destroy (&tok);
    model_destroy (&model);
    return rc;
}
