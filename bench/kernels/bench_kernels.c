/*  bench_kernels.c: matmul throughput per weight format, kernel family and
    thread count, next to the machine's memory bandwidth.

    Decode is memory bound: every token reads every weight once. So the
    headline case is a "decode sweep": all 30 layers' matmuls of
    SmolLM2-135M (q, k, v, o, gate, up, down; ~60 MB in w4, well past the L3)
    run back to back for one token, exactly the access pattern of a decode
    step, reported as GB/s of weights read and compared with the bandwidth
    of a plain read and a memcpy over a large buffer measured in the same
    run. Small batches (2..16 tokens, the speculative verify shape) show how
    close a k+1 token pass stays to the cost of one token. The thread pool's
    empty-job round trip is reported too.

    Writes <out>/kernels.json and <out>/kernels.md with the machine, the
    commit and the command (run.sh passes them).
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include "quant.h"
#include "threadpool.h"

#define N_LAYERS 30
#define MAX_RESULTS 256

typedef struct {
    const char *name;           //  "q", "k", ...
    int rows, cols;             //  out x in
} shape_t;

//  SmolLM2-135M: hidden 576, 9 heads / 3 kv heads of 64, ffn 1536.
static const shape_t s_layer[] = {
    { "q", 576, 576 }, { "k", 192, 576 }, { "v", 192, 576 }, { "o", 576, 576 },
    { "gate", 1536, 576 }, { "up", 1536, 576 }, { "down", 576, 1536 },
};
#define N_SHAPES (int) (sizeof s_layer / sizeof s_layer[0])

typedef struct {
    char what[32];              //  "decode_sweep" or "lm_head"
    const char *fmt;            //  f32, w8, w4
    const char *simd;           //  kernel family
    int threads;                //  pool size
    int n_tokens;               //  tokens per matmul
    double bytes;               //  weight bytes read per pass
    double flops;               //  2 * rows * cols * n_tokens per pass
    double ms;                  //  best time per pass
} result_t;

static result_t s_results[MAX_RESULTS];
static int s_n_results;

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t s_rng = 88172645463325252ull;

static float
s_uniform (void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (float) ((s_rng >> 40) / 16777216.0) * 2.0f - 1.0f;
}

//  ---------------------------------------------------------------------
//  Memory bandwidth

typedef struct {
    const uint64_t *src;        //  buffer to read
    uint64_t *dst;              //  buffer to write (memcpy), or NULL
    size_t n;                   //  uint64 words
    uint64_t sums[64];          //  per thread, so the reads are not elided
} bw_job_t;

static void
s_bw_task (void *arg, int ith, int nth)
{
    bw_job_t *job = (bw_job_t *) arg;
    size_t chunk = (job->n / nth) & ~(size_t) 7;
    size_t lo = chunk * ith, hi = ith == nth - 1 ? job->n : lo + chunk;
    if (job->dst) {
        memcpy (job->dst + lo, job->src + lo, (hi - lo) * sizeof (uint64_t));
        return;
    }
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = lo; i + 4 <= hi; i += 4) {
        a += job->src[i];
        b += job->src[i + 1];
        c += job->src[i + 2];
        d += job->src[i + 3];
    }
    job->sums[ith] = a + b + c + d;
}

//  Best GB/s over reps passes (read: bytes read; copy: bytes read + written).
static double
s_bandwidth (threadpool_t *pool, uint64_t *src, uint64_t *dst, size_t n, int reps)
{
    bw_job_t job = { .src = src, .dst = dst, .n = n };
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = s_now ();
        threadpool_run (pool, s_bw_task, &job);
        double t = s_now () - t0;
        best = t < best ? t : best;
    }
    double bytes = (double) n * 8 * (dst ? 2 : 1);
    return bytes / best / 1e9;
}

//  The machine's state: this box is shared, so every result says how busy
//  it was. A one-cycle dependent loop shows the share of a core we got, as
//  giga-iterations per second (the core clock when the core is ours alone).
static double
s_calib_ghz (void)
{
    double best = 0;
    for (int r = 0; r < 5; r++) {
        long n = 20000000;
        double t0 = s_now ();
#if defined(__x86_64__)
        __asm__ volatile ("1: dec %0\n jnz 1b" : "+r" (n));
#else
        for (volatile long i = 0; i < n; i++)
            ;
#endif
        double g = 20000000 / (s_now () - t0) / 1e9;
        best = g > best ? g : best;
    }
    return best;
}

static void
s_loadavg (char *buf, size_t size)
{
    snprintf (buf, size, "?");
    FILE *f = fopen ("/proc/loadavg", "r");
    if (f) {
        if (fgets (buf, (int) size, f))
            buf[strcspn (buf, " ")] = 0;    //  the 1-minute average
        fclose (f);
    }
}

static void
s_empty_job (void *arg, int ith, int nth)
{
    (void) arg;
    (void) ith;
    (void) nth;
}

//  ---------------------------------------------------------------------
//  Matmul cases

static void
s_record (const char *what, const char *fmt, int threads, int n_tokens, double bytes,
          double flops, double ms)
{
    if (s_n_results >= MAX_RESULTS)
        return;
    result_t *r = &s_results[s_n_results++];
    snprintf (r->what, sizeof r->what, "%s", what);
    r->fmt = fmt;
    r->simd = kernels_simd_name ();
    r->threads = threads;
    r->n_tokens = n_tokens;
    r->bytes = bytes;
    r->flops = flops;
    r->ms = ms;
    printf ("%-12s %-4s %-11s thr=%d tok=%-2d %8.3f ms  %7.2f GB/s  %7.2f GFLOP/s\n", what, fmt,
            r->simd, threads, n_tokens, ms, bytes / ms / 1e6, flops / ms / 1e6);
    fflush (stdout);
}

static void
s_set_simd (const char *env)
{
    setenv ("SPLITMESH_SIMD", env, 1);
    kernels_simd_refresh ();
}

//  Parses "1,2,4" into out; returns the count.
static int
s_parse_list (const char *s, int *out, int max)
{
    int n = 0;
    char *copy = strdup (s), *save = NULL;
    for (char *tok = strtok_r (copy, ",", &save); tok && n < max; tok = strtok_r (NULL, ",", &save)) {
        int v = atoi (tok);
        if (v > 0)
            out[n++] = v;
    }
    free (copy);
    return n;
}

static void
s_cpu_model (char *buf, size_t size)
{
    snprintf (buf, size, "unknown");
    FILE *f = fopen ("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "model name", 10) == 0) {
            char *p = strchr (line, ':');
            if (p) {
                p++;
                while (*p == ' ')
                    p++;
                p[strcspn (p, "\n")] = 0;
                snprintf (buf, size, "%s", p);
            }
            break;
        }
    fclose (f);
}

int
main (int argc, char **argv)
{
    const char *out_dir = "bench/results", *commit = "unknown", *command = "bench_kernels";
    const char *thread_list = "1,2", *token_list = "1,2,4,8,16";
    int rounds = 10;
    double llama_ms[8] = { 0 };             //  llama.cpp decode ms/token per thread count
    int llama_threads[8], n_llama = 0;
    size_t bw_mb = 256;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv[i], "--out") == 0 && i + 1 < argc)
            out_dir = argv[++i];
        else if (strcmp (argv[i], "--commit") == 0 && i + 1 < argc)
            commit = argv[++i];
        else if (strcmp (argv[i], "--command") == 0 && i + 1 < argc)
            command = argv[++i];
        else if (strcmp (argv[i], "--threads") == 0 && i + 1 < argc)
            thread_list = argv[++i];
        else if (strcmp (argv[i], "--tokens") == 0 && i + 1 < argc)
            token_list = argv[++i];
        else if (strcmp (argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi (argv[++i]) > 0 ? atoi (argv[i]) : 1;
        else if (strcmp (argv[i], "--llama") == 0 && i + 1 < argc && n_llama < 8) {
            //  "THREADS:MS" measured by llama_ref.py in the same run
            if (sscanf (argv[++i], "%d:%lf", &llama_threads[n_llama], &llama_ms[n_llama]) == 2)
                n_llama++;
        }
        else if (strcmp (argv[i], "--bw-mb") == 0 && i + 1 < argc)
            bw_mb = (size_t) atol (argv[++i]);
        else {
            fprintf (stderr, "usage: bench_kernels [--out DIR] [--commit C] [--command S] "
                             "[--threads 1,2] [--tokens 1,2,4,8,16] [--rounds N] [--bw-mb MB] "
                             "[--llama THREADS:MS]...\n");
            return 2;
        }
    }
    int threads[8], tokens[16];
    int n_threads = s_parse_list (thread_list, threads, 8);
    int n_tokens_list = s_parse_list (token_list, tokens, 16);
    int max_threads = 1;
    for (int i = 0; i < n_threads; i++)
        max_threads = threads[i] > max_threads ? threads[i] : max_threads;
    unsetenv ("SPLITMESH_SIMD");
    kernels_simd_refresh ();
    const char *best_simd = kernels_simd_name ();
    threadpool_t *pools[8] = { NULL };
    for (int i = 0; i < n_threads; i++)
        pools[i] = threadpool_new (threads[i]);

    char load_start[32], load_end[32];
    s_loadavg (load_start, sizeof load_start);
    double ghz_start = s_calib_ghz ();
    printf ("machine      load %s, 1-cycle loop at %.2f G/s\n", load_start, ghz_start);

    //  1. Memory bandwidth over a buffer far larger than the caches.
    size_t n_words = bw_mb * 1024 * 1024 / 8;
    uint64_t *src = aligned_alloc (64, n_words * 8), *dst = aligned_alloc (64, n_words * 8);
    if (!src || !dst) {
        fprintf (stderr, "out of memory for the bandwidth buffers\n");
        return 1;
    }
    for (size_t i = 0; i < n_words; i++)
        src[i] = dst[i] = i;
    double bw_read[8], bw_copy[8];
    for (int i = 0; i < n_threads; i++) {
        bw_read[i] = s_bandwidth (pools[i], src, NULL, n_words, 5);
        bw_copy[i] = s_bandwidth (pools[i], src, dst, n_words, 5);
        printf ("memory       %d thread(s): read %.2f GB/s, memcpy %.2f GB/s (read+write)\n",
                threads[i], bw_read[i], bw_copy[i]);
    }
    //  The buffers stay: every round below samples the read bandwidth again,
    //  so the matmuls are compared with the best bandwidth seen alongside.

    //  2. Thread pool round trip for an empty job.
    double pool_ns[8];
    for (int i = 0; i < n_threads; i++) {
        int reps = 20000;
        double best = 1e30;
        for (int k = 0; k < 5; k++) {
            double t0 = s_now ();
            for (int r = 0; r < reps; r++)
                threadpool_run (pools[i], s_empty_job, NULL);
            double t = (s_now () - t0) / reps * 1e9;
            best = t < best ? t : best;
        }
        pool_ns[i] = best;
        printf ("pool         %d thread(s): %.0f ns per empty job\n", threads[i], best);
    }

    //  3. Decode sweeps and lm heads per format, all built up front, then
    //  measured round robin: on a shared machine every case then gets the
    //  same chance at quiet moments, and each keeps its best pass.
    float *src_f[N_SHAPES];
    for (int s = 0; s < N_SHAPES; s++) {
        size_t n = (size_t) s_layer[s].rows * s_layer[s].cols;
        src_f[s] = malloc (n * sizeof (float));
        for (size_t i = 0; i < n; i++)
            src_f[s][i] = s_uniform () * 0.05f;
    }
    size_t nh = (size_t) 49152 * 576;
    float *wh = malloc (nh * sizeof (float));
    for (size_t i = 0; i < nh; i++)
        wh[i] = s_uniform () * 0.05f;
    int max_tok = 1;
    for (int i = 0; i < n_tokens_list; i++)
        max_tok = tokens[i] > max_tok ? tokens[i] : max_tok;
    float *x = malloc ((size_t) max_tok * 1536 * sizeof (float));
    float *y = malloc ((size_t) max_tok * 49152 * sizeof (float));
    for (int i = 0; i < max_tok * 1536; i++)
        x[i] = s_uniform ();

    static qmatrix_t *sweep[QFMT_COUNT][N_LAYERS * N_SHAPES];
    qmatrix_t *head[QFMT_COUNT];
    double sweep_bytes[QFMT_COUNT] = { 0 }, sweep_flops = 0, head_bytes[QFMT_COUNT];
    for (int s = 0; s < N_SHAPES; s++)
        sweep_flops += 2.0 * N_LAYERS * s_layer[s].rows * s_layer[s].cols;
    for (qfmt_t fmt = QFMT_F32; fmt < QFMT_COUNT; fmt++) {
        int n = 0;
        for (int l = 0; l < N_LAYERS; l++)
            for (int s = 0; s < N_SHAPES; s++) {
                qmatrix_t *W = qmatrix_new_from_f32 (fmt, src_f[s], s_layer[s].rows, s_layer[s].cols);
                if (!W) {
                    fprintf (stderr, "cannot build %s matrix\n", qfmt_name (fmt));
                    return 1;
                }
                sweep[fmt][n++] = W;
                sweep_bytes[fmt] += (double) qmatrix_bytes (W);
            }
        head[fmt] = qmatrix_new_from_f32 (fmt, wh, 49152, 576);
        head_bytes[fmt] = (double) qmatrix_bytes (head[fmt]);
        printf ("%s: decode sweep %d matrices %.1f MB, lm head %.1f MB\n", qfmt_name (fmt), n,
                sweep_bytes[fmt] / 1e6, head_bytes[fmt] / 1e6);
    }
    free (wh);

    //  The cases: every family for one token (the decode case), small
    //  batches and the lm head on the best family.
    typedef struct {
        const char *what, *simd_env;
        qfmt_t fmt;
        int pool, n_tokens;
        double best_ms;
        const char *simd;
    } bcase_t;
    static bcase_t cases[MAX_RESULTS];
    int n_cases = 0;
    const char *families[] = { "scalar", "avx2", "avx512" };
    for (qfmt_t fmt = QFMT_F32; fmt < QFMT_COUNT; fmt++) {
        const char *last = "";
        for (int f = 0; f < 3; f++) {
            s_set_simd (families[f]);
            if (strcmp (kernels_simd_name (), last) == 0)
                continue;                   //  the CPU lacks this family
            last = kernels_simd_name ();
            for (int i = 0; i < n_threads && n_cases < MAX_RESULTS; i++)
                cases[n_cases++] = (bcase_t) { "decode_sweep", families[f], fmt, i, 1, 1e30, last };
        }
        for (int k = 0; k < n_tokens_list; k++)
            for (int i = 0; i < n_threads && tokens[k] > 1 && n_cases < MAX_RESULTS; i++)
                cases[n_cases++] = (bcase_t) { "decode_sweep", "avx512", fmt, i, tokens[k], 1e30, best_simd };
        for (int i = 0; i < n_threads && n_cases < MAX_RESULTS; i++)
            cases[n_cases++] = (bcase_t) { "lm_head", "avx512", fmt, i, 1, 1e30, best_simd };
    }
    for (int round = 0; round < rounds; round++) {
        for (int c = 0; c < n_cases; c++) {
            bcase_t *bc = &cases[c];
            s_set_simd (bc->simd_env);
            int is_head = strcmp (bc->what, "lm_head") == 0;
            double t0 = s_now ();
            if (is_head)
                qmatrix_matmul (head[bc->fmt], x, bc->n_tokens, y, pools[bc->pool]);
            else
                for (int i = 0; i < N_LAYERS * N_SHAPES; i++)
                    qmatrix_matmul (sweep[bc->fmt][i], x, bc->n_tokens, y, pools[bc->pool]);
            double ms = (s_now () - t0) * 1e3;
            bc->best_ms = ms < bc->best_ms ? ms : bc->best_ms;
        }
        for (int i = 0; i < n_threads; i++) {
            double bw = s_bandwidth (pools[i], src, NULL, n_words, 1);
            bw_read[i] = bw > bw_read[i] ? bw : bw_read[i];
        }
        printf ("round %d/%d done\n", round + 1, rounds);
        fflush (stdout);
    }
    for (int c = 0; c < n_cases; c++) {
        bcase_t *bc = &cases[c];
        s_set_simd (bc->simd_env);
        int is_head = strcmp (bc->what, "lm_head") == 0;
        s_record (bc->what, qfmt_name (bc->fmt), threads[bc->pool], bc->n_tokens,
                  is_head ? head_bytes[bc->fmt] : sweep_bytes[bc->fmt],
                  (is_head ? 2.0 * nh : sweep_flops) * bc->n_tokens, bc->best_ms);
    }
    for (qfmt_t fmt = QFMT_F32; fmt < QFMT_COUNT; fmt++) {
        for (int i = 0; i < N_LAYERS * N_SHAPES; i++)
            qmatrix_destroy (&sweep[fmt][i]);
        qmatrix_destroy (&head[fmt]);
    }

    s_loadavg (load_end, sizeof load_end);
    double ghz_end = s_calib_ghz ();
    printf ("machine      load %s, 1-cycle loop at %.2f G/s\n", load_end, ghz_end);

    //  4. Write the results.
    char cpu[256], path[1024], host[256] = "";
    s_cpu_model (cpu, sizeof cpu);
    gethostname (host, sizeof host - 1);
    struct utsname un;
    uname (&un);
    time_t now = time (NULL);
    char date[64];
    strftime (date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime (&now));
    long n_cpus = sysconf (_SC_NPROCESSORS_ONLN);

    snprintf (path, sizeof path, "%s/kernels.json", out_dir);
    FILE *js = fopen (path, "w");
    if (!js) {
        fprintf (stderr, "cannot write %s\n", path);
        return 1;
    }
    fprintf (js, "{\n  \"benchmark\": \"kernels\",\n  \"date\": \"%s\",\n  \"commit\": \"%s\",\n"
                 "  \"command\": \"%s\",\n", date, commit, command);
    fprintf (js, "  \"machine\": {\"cpu\": \"%s\", \"cpus\": %ld, \"kernel\": \"%s %s\", "
                 "\"best_simd\": \"%s\", \"loadavg_start\": %s, \"loadavg_end\": %s, "
                 "\"loop_ghz_start\": %.2f, \"loop_ghz_end\": %.2f},\n", cpu, n_cpus, un.sysname,
             un.release, best_simd, load_start, load_end, ghz_start, ghz_end);
    fprintf (js, "  \"llama_cpp_decode_ms_per_token\": [");
    for (int i = 0; i < n_llama; i++)
        fprintf (js, "%s{\"threads\": %d, \"ms\": %.3f}", i ? ", " : "", llama_threads[i], llama_ms[i]);
    fprintf (js, "],\n");
    fprintf (js, "  \"memory_bandwidth\": [");
    for (int i = 0; i < n_threads; i++)
        fprintf (js, "%s\n    {\"threads\": %d, \"read_gbs\": %.2f, \"memcpy_gbs\": %.2f, \"buffer_mb\": %zu}",
                 i ? "," : "", threads[i], bw_read[i], bw_copy[i], bw_mb);
    fprintf (js, "\n  ],\n  \"pool_empty_job_ns\": [");
    for (int i = 0; i < n_threads; i++)
        fprintf (js, "%s\n    {\"threads\": %d, \"ns\": %.0f}", i ? "," : "", threads[i], pool_ns[i]);
    fprintf (js, "\n  ],\n  \"results\": [");
    for (int i = 0; i < s_n_results; i++) {
        result_t *r = &s_results[i];
        fprintf (js, "%s\n    {\"case\": \"%s\", \"format\": \"%s\", \"simd\": \"%s\", \"threads\": %d, "
                     "\"n_tokens\": %d, \"weight_bytes\": %.0f, \"ms\": %.4f, \"gbs\": %.2f, "
                     "\"gflops\": %.2f}",
                 i ? "," : "", r->what, r->fmt, r->simd, r->threads, r->n_tokens, r->bytes, r->ms,
                 r->bytes / r->ms / 1e6, r->flops / r->ms / 1e6);
    }
    fprintf (js, "\n  ]\n}\n");
    fclose (js);

    snprintf (path, sizeof path, "%s/kernels.md", out_dir);
    FILE *md = fopen (path, "w");
    if (!md) {
        fprintf (stderr, "cannot write %s\n", path);
        return 1;
    }
    fprintf (md, "# Matmul kernels: throughput vs memory bandwidth\n\n");
    fprintf (md, "- date: %s\n- commit: `%s`\n- command: `%s`\n- machine: %s, %ld CPUs, %s %s, "
                 "best kernel family %s\n", date, commit, command, cpu, n_cpus, un.sysname,
             un.release, best_simd);
    fprintf (md, "- machine load (1-min average) %s at start, %s at end; a 1-cycle dependent loop "
                 "ran at %.2f / %.2f G iterations/s (the share of a core this run got: the box is "
                 "shared, so compare rows of this run with each other)\n", load_start, load_end,
             ghz_start, ghz_end);
    for (int i = 0; i < n_llama; i++)
        fprintf (md, "- llama.cpp (llama-cpp-python) decode of the same model, %d thread(s), measured "
                     "just before: %.2f ms/token\n", llama_threads[i], llama_ms[i]);
    fprintf (md, "\n");
    fprintf (md, "decode_sweep = all 30 layers' matmuls of SmolLM2-135M (q k v o gate up down) "
                 "for n tokens, back to back, as in a decode step; lm_head = 49152 x 576. "
                 "GB/s = weight bytes read per pass / time (best pass); GFLOP/s = 2 rows cols n / time.\n\n");
    fprintf (md, "## Memory bandwidth (same run, %zu MB buffer; read: best of the start and one sample per round)\n\n| threads | read GB/s | memcpy GB/s (read+write) | pool empty job |\n|---|---|---|---|\n", bw_mb);
    for (int i = 0; i < n_threads; i++)
        fprintf (md, "| %d | %.2f | %.2f | %.0f ns |\n", threads[i], bw_read[i], bw_copy[i], pool_ns[i]);
    fprintf (md, "\n## Matmul\n\n| case | format | kernels | threads | tokens | weights MB | ms/pass | GB/s | GFLOP/s | of read bw |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < s_n_results; i++) {
        result_t *r = &s_results[i];
        double bw = 0;
        for (int k = 0; k < n_threads; k++)
            if (threads[k] == r->threads)
                bw = bw_read[k];
        double gbs = r->bytes / r->ms / 1e6;
        fprintf (md, "| %s | %s | %s | %d | %d | %.1f | %.3f | %.2f | %.2f | %.0f%% |\n", r->what,
                 r->fmt, r->simd, r->threads, r->n_tokens, r->bytes / 1e6, r->ms, gbs,
                 r->flops / r->ms / 1e6, bw > 0 ? 100.0 * gbs / bw : 0.0);
    }
    fclose (md);
    printf ("wrote %s/kernels.json and %s/kernels.md\n", out_dir, out_dir);

    free (src);
    free (dst);
    for (int s = 0; s < N_SHAPES; s++)
        free (src_f[s]);
    free (x);
    free (y);
    for (int i = 0; i < n_threads; i++)
        threadpool_destroy (&pools[i]);
    return 0;
}
