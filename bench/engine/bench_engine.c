/*  bench_engine.c: prompt and decode throughput of the engine on one model file.

    Reads token ids (whitespace-separated) from a file so that the engine and
    llama.cpp (bench/engine/llamacpp_bench.py) process exactly the same
    tokens. For each run: a prefill of the first P ids in one model_forward
    call (prompt tokens/s, head on the last position only, as llama.cpp
    does), then D greedy decode steps of one token each (embed, forward,
    head, argmax: decode tokens/s). Repeats R times and reports the best run
    (the machine is shared; the best run is the least disturbed).

    Output: one JSON object per line on stdout:
      {"format":"w4","threads":2,"prompt_tokens":P,"prompt_tps":...,"decode_tokens":D,"decode_tps":...}

    usage: bench_engine --model M --tokens FILE [--format f32|w8|w4] [--threads T]
                        [--prompt P] [--decode D] [--repeat R]
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "kvcache.h"
#include "model.h"

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

int
main (int argc, char **argv)
{
    const char *model_path = NULL, *tokens_path = NULL, *format = "w4";
    int threads = 1, n_prompt = 128, n_decode = 128, repeat = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf (stderr, "bench_engine: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp (a, "--model")) model_path = v;
        else if (!strcmp (a, "--tokens")) tokens_path = v;
        else if (!strcmp (a, "--format")) format = v;
        else if (!strcmp (a, "--threads")) threads = atoi (v);
        else if (!strcmp (a, "--prompt")) n_prompt = atoi (v);
        else if (!strcmp (a, "--decode")) n_decode = atoi (v);
        else if (!strcmp (a, "--repeat")) repeat = atoi (v);
        else {
            fprintf (stderr, "bench_engine: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (!model_path || !tokens_path || n_prompt < 1 || n_decode < 1 || repeat < 1) {
        fprintf (stderr, "usage: bench_engine --model M --tokens FILE [--format f32|w8|w4] "
                 "[--threads T] [--prompt P] [--decode D] [--repeat R]\n");
        return 2;
    }
    model_options_t o = model_options_default ();
    if (qfmt_parse (format, &o.format)) {
        fprintf (stderr, "bench_engine: unknown format '%s'\n", format);
        return 2;
    }
    o.n_threads = threads;
    int32_t *tokens = malloc ((size_t) n_prompt * sizeof *tokens);
    FILE *f = fopen (tokens_path, "r");
    if (!f) {
        fprintf (stderr, "bench_engine: cannot open %s\n", tokens_path);
        return 1;
    }
    int n = 0;
    while (n < n_prompt && fscanf (f, "%d", &tokens[n]) == 1)
        n++;
    fclose (f);
    if (n < n_prompt) {
        fprintf (stderr, "bench_engine: %s holds %d ids, need %d\n", tokens_path, n, n_prompt);
        return 1;
    }
    char err[256] = "";
    model_t *m = model_load (model_path, &o, err, sizeof err);
    if (!m) {
        fprintf (stderr, "bench_engine: %s\n", err);
        return 1;
    }
    const model_config_t *c = model_config (m);
    kvcache_t *kv = kvcache_new (m, n_prompt + n_decode);
    float *x = malloc ((size_t) n_prompt * c->dim * sizeof (float));
    float *logits = malloc ((size_t) c->vocab_size * sizeof (float));
    if (!kv || !x || !logits) {
        fprintf (stderr, "bench_engine: out of memory\n");
        return 1;
    }
    double best_p = 0, best_d = 0;
    for (int r = 0; r < repeat; r++) {
        kvcache_truncate (kv, 0);
        double t0 = s_now ();
        if (model_embed (m, tokens, n_prompt, x)
        ||  model_forward (m, kv, 0, c->n_layers, 0, n_prompt, x)
        ||  model_head (m, x + (size_t) (n_prompt - 1) * c->dim, 1, logits)) {
            fprintf (stderr, "bench_engine: %s\n", model_error (m));
            return 1;
        }
        double t1 = s_now ();
        for (int i = 0; i < n_decode; i++) {
            int32_t tok = s_argmax (logits, c->vocab_size);
            if (model_embed (m, &tok, 1, x)
            ||  model_forward (m, kv, 0, c->n_layers, n_prompt + i, 1, x)
            ||  model_head (m, x, 1, logits)) {
                fprintf (stderr, "bench_engine: %s\n", model_error (m));
                return 1;
            }
        }
        double t2 = s_now ();
        double p = n_prompt / (t1 - t0), d = n_decode / (t2 - t1);
        if (p > best_p) best_p = p;
        if (d > best_d) best_d = d;
    }
    printf ("{\"format\":\"%s\",\"threads\":%d,\"simd\":\"%s\",\"prompt_tokens\":%d,\"prompt_tps\":%.2f,"
            "\"decode_tokens\":%d,\"decode_tps\":%.2f,\"weight_bytes\":%zu}\n",
            qfmt_name (o.format), threads, kernels_simd_name (), n_prompt, best_p, n_decode, best_d,
            model_weight_bytes (m));
    kvcache_destroy (&kv);
    model_destroy (&m);
    free (x);
    free (logits);
    free (tokens);
    return 0;
}
