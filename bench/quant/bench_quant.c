/*  bench_quant.c: quality and speed of quantized GGUF files against the F32
    baseline of their source, for bench/results/quant.{json,md,png}.

    The baseline is the source model loaded at F32 (for a Q4_1 source: its
    dequantized weights). Each candidate file is loaded the way the engine
    runs mixed files (model_options_t.file_formats). Measured per file:

      - perplexity on the first --tokens tokens of --text, in windows of
        --ctx from an empty cache (as `splitmesh perplexity`), and its ratio
        to the baseline's (quality retained = baseline ppl / file ppl);
      - top-1 agreement: fraction of those positions where the file's most
        likely next token is the baseline's;
      - speculative acceptance as a draft for the F32 target, greedy: for
        --prompts prompts of 32 tokens from the text, the target's greedy
        continuation of --gen tokens is fixed; the draft proposes --k tokens
        greedily from each accepted prefix, the longest matching prefix is
        accepted and the target adds one token, until --gen tokens: rate =
        accepted / proposed;
      - prefill and decode tokens/s (full speed check).

    Prints one JSON object per file (and the baseline) on stdout, one a line.
    With --base-cache FILE the baseline's results (NLL, top-1 per position,
    greedy continuations, speeds) are read from FILE when it matches the
    same text, tokens, windows and prompts, else computed and written
    there, so a second run (e.g. the mixed files once measured) does not
    redo the slow F32 baseline.
    A file that does not exist yet is waited for (up to an hour), so the
    evaluation can overlap a quantize run that writes the files.
*/
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "gguf.h"
#include "kvcache.h"
#include "model.h"
#include "tokenizer.h"

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int
s_argmax (const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

typedef struct {
    int n_tok, ctx, n_win;
    int32_t *toks;
    int *base_top;              //  per scored position
    double base_nll;
    int n_prompts, gen, k;
    int32_t *target;            //  n_prompts x gen greedy continuations of the baseline
} s_ref_t;

//  Perplexity windows: NLL sum and (with top) argmax per scored position;
//  agree counts matches with ref_top when given. Returns prefill tokens/s.
static double
s_windows (model_t *m, const s_ref_t *r, double *nll, int *top, const int *ref_top, int *agree)
{
    const model_config_t *c = model_config (m);
    kvcache_t *kv = kvcache_new (m, r->ctx);
    float *x = malloc ((size_t) r->ctx * c->dim * sizeof *x);
    float *logits = malloc ((size_t) 64 * c->vocab_size * sizeof *logits);
    double t = 0;
    int idx = 0;
    *nll = 0;
    if (agree)
        *agree = 0;
    for (int w = 0; w < r->n_win; w++) {
        const int32_t *tk = r->toks + (size_t) w * r->ctx;
        kvcache_truncate (kv, 0);
        double t0 = s_now ();
        model_embed (m, tk, r->ctx, x);
        model_forward (m, kv, 0, c->n_layers, 0, r->ctx, x);
        t += s_now () - t0;
        for (int p0 = 0; p0 < r->ctx - 1; p0 += 64) {
            int n = r->ctx - 1 - p0 < 64 ? r->ctx - 1 - p0 : 64;
            model_head (m, x + (size_t) p0 * c->dim, n, logits);
            for (int i = 0; i < n; i++) {
                const float *l = logits + (size_t) i * c->vocab_size;
                float mx = l[s_argmax (l, c->vocab_size)];
                double s = 0;
                for (int v = 0; v < c->vocab_size; v++)
                    s += exp ((double) l[v] - mx);
                *nll += mx + log (s) - l[tk[p0 + i + 1]];
                int a = s_argmax (l, c->vocab_size);
                if (top)
                    top[idx] = a;
                if (ref_top && agree)
                    *agree += a == ref_top[idx];
                idx++;
            }
        }
    }
    free (x);
    free (logits);
    kvcache_destroy (&kv);
    return (double) r->n_win * r->ctx / t;
}

//  Greedy next token after feeding n tokens at pos; x scratch.
static int
s_step (model_t *m, kvcache_t *kv, const int32_t *tk, int n, float *x, float *logits)
{
    const model_config_t *c = model_config (m);
    int pos = kvcache_pos (kv);
    model_embed (m, tk, n, x);
    model_forward (m, kv, 0, c->n_layers, pos, n, x);
    model_head (m, x + (size_t) (n - 1) * c->dim, 1, logits);
    return s_argmax (logits, c->vocab_size);
}

//  Greedy continuations of the baseline (target).
static void
s_targets (model_t *m, s_ref_t *r)
{
    const model_config_t *c = model_config (m);
    kvcache_t *kv = kvcache_new (m, 32 + r->gen + 1);
    float *x = malloc ((size_t) 32 * c->dim * sizeof *x), *logits = malloc ((size_t) c->vocab_size * 4);
    for (int p = 0; p < r->n_prompts; p++) {
        const int32_t *prompt = r->toks + (size_t) p * r->ctx;
        int32_t *out = r->target + (size_t) p * r->gen;
        kvcache_truncate (kv, 0);
        int t = s_step (m, kv, prompt, 32, x, logits);
        for (int i = 0; i < r->gen; i++) {
            out[i] = t;
            t = s_step (m, kv, &out[i], 1, x, logits);
        }
    }
    free (x);
    free (logits);
    kvcache_destroy (&kv);
}

//  Acceptance of m as greedy draft for the stored targets; also decode tok/s.
static double
s_acceptance (model_t *m, const s_ref_t *r, double *decode_tps)
{
    const model_config_t *c = model_config (m);
    int cap = 32 + r->gen + r->k + 1;
    kvcache_t *kv = kvcache_new (m, cap);
    int32_t *seq = malloc ((size_t) cap * sizeof *seq);
    float *x = malloc ((size_t) 32 * c->dim * sizeof *x), *logits = malloc ((size_t) c->vocab_size * 4);
    long proposed = 0, accepted = 0, steps = 0;
    double t_dec = 0;
    for (int p = 0; p < r->n_prompts; p++) {
        const int32_t *target = r->target + (size_t) p * r->gen;
        memcpy (seq, r->toks + (size_t) p * r->ctx, 32 * sizeof *seq);
        kvcache_truncate (kv, 0);
        int done = 0;           //  target tokens accepted so far
        int fed = 0;            //  tokens of seq in the cache
        while (done < r->gen) {
            int n_ctx = 32 + done;
            kvcache_truncate (kv, fed < n_ctx ? fed : n_ctx);
            fed = kvcache_pos (kv);
            int d = s_step (m, kv, seq + fed, n_ctx - fed, x, logits);
            int k = r->k < r->gen - done ? r->k : r->gen - done;
            int a = 0;
            bool match = true;
            double t0 = s_now ();
            for (int i = 0; i < k; i++) {
                if (match && d == target[done + i])
                    a++;
                else
                    match = false;
                if (i + 1 < k) {
                    int32_t tok = d;
                    d = s_step (m, kv, &tok, 1, x, logits);
                    steps++;
                }
            }
            t_dec += s_now () - t0;
            proposed += k;
            accepted += a;
            fed = n_ctx;        //  cache holds context + drafts; truncated next round
            //  Accepted drafts plus the target's own next token.
            int adv = a + 1 < r->gen - done ? a + 1 : r->gen - done;
            for (int i = 0; i < adv; i++)
                seq[n_ctx + i] = target[done + i];
            done += adv;
        }
    }
    *decode_tps = t_dec > 0 ? steps / t_dec : 0;
    free (seq);
    free (x);
    free (logits);
    kvcache_destroy (&kv);
    return proposed ? (double) accepted / proposed : 0;
}

//  The baseline cache: a header of the run's parameters, then the results.
typedef struct {
    char magic[8];
    int n_tok, ctx, n_prompts, gen, k, n_scored;
    char text[256];
    double nll, acc, tps, dec;
} s_base_header_t;

static bool
s_base_load (const char *path, const s_base_header_t *want, s_ref_t *r, s_base_header_t *got)
{
    FILE *f = path ? fopen (path, "rb") : NULL;
    bool ok = false;
    if (!f)
        return false;
    if (fread (got, sizeof *got, 1, f) == 1 && !memcmp (got->magic, want->magic, 8)
    &&  got->n_tok == want->n_tok && got->ctx == want->ctx && got->n_prompts == want->n_prompts
    &&  got->gen == want->gen && got->k == want->k && got->n_scored == want->n_scored
    &&  !strcmp (got->text, want->text)
    &&  fread (r->base_top, sizeof (int), (size_t) got->n_scored, f) == (size_t) got->n_scored
    &&  fread (r->target, sizeof (int32_t), (size_t) got->n_prompts * got->gen, f)
            == (size_t) got->n_prompts * got->gen)
        ok = true;
    fclose (f);
    return ok;
}

static void
s_base_save (const char *path, const s_base_header_t *h, const s_ref_t *r)
{
    FILE *f = path ? fopen (path, "wb") : NULL;
    if (!f)
        return;
    fwrite (h, sizeof *h, 1, f);
    fwrite (r->base_top, sizeof (int), (size_t) h->n_scored, f);
    fwrite (r->target, sizeof (int32_t), (size_t) h->n_prompts * h->gen, f);
    fclose (f);
}

static uint64_t
s_tensor_bytes (const char *path)
{
    char err[256];
    gguf_t *g = gguf_open (path, err, sizeof err);
    uint64_t b = 0;
    for (int i = 0; g && i < gguf_tensor_count (g); i++)
        b += gguf_tensor_at (g, i)->nbytes;
    gguf_destroy (&g);
    return b;
}

int
main (int argc, char **argv)
{
    const char *base_path = NULL, *text_path = NULL, *base_cache = NULL;
    s_ref_t r = { .n_tok = 2048, .ctx = 256, .n_prompts = 4, .gen = 32, .k = 4 };
    int threads = 2, first_file = argc;
    for (int i = 1; i < argc; i++) {
        if (!strcmp (argv[i], "--base") && i + 1 < argc) base_path = argv[++i];
        else if (!strcmp (argv[i], "--text") && i + 1 < argc) text_path = argv[++i];
        else if (!strcmp (argv[i], "--tokens") && i + 1 < argc) r.n_tok = atoi (argv[++i]);
        else if (!strcmp (argv[i], "--ctx") && i + 1 < argc) r.ctx = atoi (argv[++i]);
        else if (!strcmp (argv[i], "--threads") && i + 1 < argc) threads = atoi (argv[++i]);
        else if (!strcmp (argv[i], "--prompts") && i + 1 < argc) r.n_prompts = atoi (argv[++i]);
        else if (!strcmp (argv[i], "--gen") && i + 1 < argc) r.gen = atoi (argv[++i]);
        else if (!strcmp (argv[i], "--k") && i + 1 < argc) r.k = atoi (argv[++i]);
        else if (!strcmp (argv[i], "--base-cache") && i + 1 < argc) base_cache = argv[++i];
        else { first_file = i; break; }
    }
    if (!base_path || !text_path || r.ctx < 64 || r.n_tok < r.ctx || threads < 1 || r.k < 1
    ||  r.gen < 1 || r.n_prompts < 1) {
        fprintf (stderr, "usage: bench_quant --base F32SRC.gguf --text TEST.txt [--tokens N] [--ctx C] "
                 "[--threads T] [--prompts P] [--gen G] [--k K] [--base-cache FILE] FILE.gguf...\n");
        return 2;
    }
    r.n_win = r.n_tok / r.ctx;
    if (r.n_prompts > r.n_win)
        r.n_prompts = r.n_win;
    char err[512];
    model_options_t mo = model_options_default ();
    mo.n_threads = threads;
    model_t *base = model_load (base_path, &mo, err, sizeof err);
    if (!base) {
        fprintf (stderr, "bench_quant: %s: %s\n", base_path, err);
        return 1;
    }
    FILE *f = fopen (text_path, "rb");
    if (!f) {
        fprintf (stderr, "bench_quant: cannot open %s\n", text_path);
        return 1;
    }
    size_t cap = (size_t) r.n_tok * 16 + 4096;
    char *text = malloc (cap);
    size_t len = fread (text, 1, cap, f);
    fclose (f);
    tokenizer_t *tok = tokenizer_new_from_gguf (model_gguf (base), err, sizeof err);
    size_t n_ids = 0;
    if (!tok || tokenizer_encode (tok, text, len, false, false, &r.toks, &n_ids, err, sizeof err)
    ||  n_ids < (size_t) r.n_win * r.ctx) {
        fprintf (stderr, "bench_quant: tokenizing %s: %s\n", text_path, err);
        return 1;
    }
    int n_scored = r.n_win * (r.ctx - 1);
    r.base_top = malloc ((size_t) n_scored * sizeof (int));
    r.target = malloc ((size_t) r.n_prompts * r.gen * sizeof (int32_t));
    s_base_header_t want = { .magic = "SMQBASE", .n_tok = r.n_tok, .ctx = r.ctx,
                             .n_prompts = r.n_prompts, .gen = r.gen, .k = r.k, .n_scored = n_scored }, got;
    const char *tb = strrchr (text_path, '/');
    snprintf (want.text, sizeof want.text, "%s", tb ? tb + 1 : text_path);
    double tps, dec = 0, base_acc;
    if (s_base_load (base_cache, &want, &r, &got)) {
        r.base_nll = got.nll;
        tps = got.tps;
        dec = got.dec;
        base_acc = got.acc;
    }
    else {
        tps = s_windows (base, &r, &r.base_nll, r.base_top, NULL, NULL);
        s_targets (base, &r);
        base_acc = s_acceptance (base, &r, &dec);
        want.nll = r.base_nll;
        want.acc = base_acc;
        want.tps = tps;
        want.dec = dec;
        s_base_save (base_cache, &want, &r);
    }
    double base_ppl = exp (r.base_nll / n_scored);
    printf ("{\"file\":\"%s\",\"baseline\":true,\"ppl\":%.4f,\"tokens_scored\":%d,"
            "\"acceptance\":%.4f,\"prefill_tps\":%.1f,\"decode_tps\":%.1f}\n",
            base_path, base_ppl, n_scored, base_acc, tps, dec);
    fflush (stdout);
    for (int i = first_file; i < argc; i++) {
        //  Files still being written by a quantize run (renamed into place
        //  when complete) are waited for, up to an hour.
        for (int waited = 0; access (argv[i], F_OK) && waited < 3600; waited += 5)
            sleep (5);
        model_options_t qo = mo;
        qo.file_formats = true;
        model_t *m = model_load (argv[i], &qo, err, sizeof err);
        if (!m) {
            fprintf (stderr, "bench_quant: %s: %s\n", argv[i], err);
            printf ("{\"file\":\"%s\",\"error\":\"load failed\"}\n", argv[i]);
            continue;
        }
        double nll = 0;
        int agree = 0;
        double ptps = s_windows (m, &r, &nll, NULL, r.base_top, &agree);
        double dtps = 0;
        double acc = s_acceptance (m, &r, &dtps);
        double ppl = exp (nll / n_scored);
        printf ("{\"file\":\"%s\",\"tensor_bytes\":%llu,\"runtime_weight_bytes\":%zu,\"ppl\":%.4f,"
                "\"ppl_ratio\":%.5f,\"quality_retained\":%.5f,\"top1_agreement\":%.5f,"
                "\"acceptance\":%.4f,\"prefill_tps\":%.1f,\"decode_tps\":%.1f}\n",
                argv[i], (unsigned long long) s_tensor_bytes (argv[i]), model_weight_bytes (m), ppl,
                ppl / base_ppl, base_ppl / ppl, (double) agree / n_scored, acc, ptps, dtps);
        fflush (stdout);
        model_destroy (&m);
    }
    free (text);
    free (r.toks);
    free (r.base_top);
    free (r.target);
    tokenizer_destroy (&tok);
    model_destroy (&base);
    return 0;
}
