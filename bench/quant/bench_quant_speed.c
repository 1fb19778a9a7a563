/*  bench_quant_speed.c: do mixed-precision files decode at full speed?

    Each mixed file is compared with the uniform file of the nearest tensor
    size (its peer) in the same process and the same minutes: all files are
    loaded once the way the engine runs them (model_options_t.file_formats),
    then --repeats rounds each time every file in turn (interleaved, so load
    changes on a shared machine hit all files alike) decodes --gen tokens
    greedily after the same prompt, one token per step, timed per round.
    Reported per file: median decode tokens/s over the rounds, and for a
    mixed file the ratio of its median to its peer's (ratios of per-round
    pairs, median) — a ratio, not an absolute claim: the box is shared.

    Usage: bench_quant_speed [--threads T] [--gen G] [--repeats R]
           --uniform U.gguf... --mixed M.gguf...
    Prints one JSON object per file, one a line, and the load average
    before and after.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "gguf.h"
#include "kvcache.h"
#include "model.h"

#define S_MAX_FILES 48

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int
s_cmp (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

static double
s_median (double *v, int n)
{
    qsort (v, (size_t) n, sizeof *v, s_cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
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

//  Decodes gen tokens greedily after an 8-token prompt; returns tokens/s of
//  the single-token steps, or -1 on a model error.
static double
s_decode (model_t *m, int gen)
{
    const model_config_t *c = model_config (m);
    kvcache_t *kv = kvcache_new (m, 8 + gen + 1);
    float *x = malloc ((size_t) 8 * c->dim * sizeof *x);
    float *logits = malloc ((size_t) c->vocab_size * sizeof *logits);
    int32_t prompt[8] = { 504, 3458, 282, 1345, 314, 253, 1789, 30 };
    double rate = -1;
    if (!kv || !x || !logits)
        goto done;
    for (int i = 0; i < 8; i++)
        prompt[i] %= c->vocab_size;
    if (model_embed (m, prompt, 8, x) || model_forward (m, kv, 0, c->n_layers, 0, 8, x)
    ||  model_head (m, x + 7 * c->dim, 1, logits))
        goto done;
    double t0 = s_now ();
    for (int i = 0; i < gen; i++) {
        int best = 0;
        for (int v = 1; v < c->vocab_size; v++)
            best = logits[v] > logits[best] ? v : best;
        int32_t tok = best;
        if (model_embed (m, &tok, 1, x) || model_forward (m, kv, 0, c->n_layers, 8 + i, 1, x)
        ||  model_head (m, x, 1, logits))
            goto done;
    }
    rate = gen / (s_now () - t0);
done:
    free (x);
    free (logits);
    kvcache_destroy (&kv);
    return rate;
}

static void
s_load_avg (double *l)
{
    FILE *f = fopen ("/proc/loadavg", "r");
    l[0] = l[1] = l[2] = -1;
    if (f) {
        if (fscanf (f, "%lf %lf %lf", &l[0], &l[1], &l[2]) != 3)
            l[0] = l[1] = l[2] = -1;
        fclose (f);
    }
}

int
main (int argc, char **argv)
{
    int threads = 2, gen = 32, repeats = 5, n = 0, n_uniform = 0;
    const char *path[S_MAX_FILES];
    bool uniform[S_MAX_FILES];
    int mode = 0;               //  1: uniform files, 2: mixed files
    for (int i = 1; i < argc; i++) {
        if (!strcmp (argv[i], "--threads") && i + 1 < argc) threads = atoi (argv[++i]);
        else if (!strcmp (argv[i], "--gen") && i + 1 < argc) gen = atoi (argv[++i]);
        else if (!strcmp (argv[i], "--repeats") && i + 1 < argc) repeats = atoi (argv[++i]);
        else if (!strcmp (argv[i], "--uniform")) mode = 1;
        else if (!strcmp (argv[i], "--mixed")) mode = 2;
        else if (mode && n < S_MAX_FILES) {
            path[n] = argv[i];
            uniform[n] = mode == 1;
            n_uniform += mode == 1;
            n++;
        }
        else {
            fprintf (stderr, "bench_quant_speed: unexpected '%s'\n", argv[i]);
            return 2;
        }
    }
    if (n_uniform < 1 || n == n_uniform || threads < 1 || gen < 1 || repeats < 1 || repeats > 1000) {
        fprintf (stderr, "usage: bench_quant_speed [--threads T] [--gen G] [--repeats R] "
                 "--uniform U.gguf... --mixed M.gguf...\n");
        return 2;
    }
    model_t *m[S_MAX_FILES] = { 0 };
    uint64_t bytes[S_MAX_FILES];
    double *tps = calloc ((size_t) n * repeats, sizeof *tps);
    char err[512];
    int rc = 1;
    for (int i = 0; i < n; i++) {
        model_options_t mo = model_options_default ();
        mo.n_threads = threads;
        mo.file_formats = true;
        m[i] = model_load (path[i], &mo, err, sizeof err);
        if (!m[i]) {
            fprintf (stderr, "bench_quant_speed: %s: %s\n", path[i], err);
            goto done;
        }
        bytes[i] = s_tensor_bytes (path[i]);
    }
    double load0[3], load1[3];
    s_load_avg (load0);
    for (int i = 0; i < n; i++)         //  warm-up round, not counted
        s_decode (m[i], 4);
    for (int r = 0; r < repeats; r++)
        for (int k = 0; k < n; k++) {
            int i = (k + r) % n;        //  rotate the order too
            tps[(size_t) i * repeats + r] = s_decode (m[i], gen);
        }
    s_load_avg (load1);
    for (int i = 0; i < n; i++) {
        int peer = -1;
        for (int j = 0; j < n; j++)
            if (uniform[j] && j != i
            && (peer < 0 || llabs ((long long) bytes[j] - (long long) bytes[i])
                          < llabs ((long long) bytes[peer] - (long long) bytes[i])))
                peer = j;
        double med[1000], ratio[1000];
        for (int r = 0; r < repeats; r++) {
            med[r] = tps[(size_t) i * repeats + r];
            ratio[r] = peer >= 0 ? med[r] / tps[(size_t) peer * repeats + r] : NAN;
        }
        double mi = s_median (med, repeats);
        printf ("{\"file\":\"%s\",\"kind\":\"%s\",\"tensor_bytes\":%llu,\"runtime_weight_bytes\":%zu,"
                "\"decode_tps_median\":%.2f,\"repeats\":%d,\"gen\":%d,\"threads\":%d",
                path[i], uniform[i] ? "uniform" : "mixed", (unsigned long long) bytes[i],
                model_weight_bytes (m[i]), mi, repeats, gen, threads);
        if (!uniform[i] && peer >= 0)
            printf (",\"peer\":\"%s\",\"peer_tensor_bytes\":%llu,\"ratio_to_peer_median\":%.3f",
                    path[peer], (unsigned long long) bytes[peer], s_median (ratio, repeats));
        printf (",\"load_before\":[%.2f,%.2f,%.2f],\"load_after\":[%.2f,%.2f,%.2f]}\n",
                load0[0], load0[1], load0[2], load1[0], load1[1], load1[2]);
    }
    rc = 0;
done:
    for (int i = 0; i < n; i++)
        model_destroy (&m[i]);
    free (tps);
    return rc;
}
