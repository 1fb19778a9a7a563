/*  bench_gpu.c: the CUDA backend's verify latency and throughput.

    Prints one JSON object (stdout) with, in one run:
      1. the device's copy bandwidth (large device-to-device copy, bytes
         read + written), which sets the floor of a weight-bound step:
         floor = bytes the forward must read / bandwidth;
      2. for a Llama-3-8B-shaped model with synthetic weights generated on
         the device, per format (w8a8, fp16): the latency of one verify step
         (1 session, k+1 = 5 positions at context CTX) and its ratio to the
         floor, and one batched forward over S sessions' 5 positions each
         for S = 1, 8, 32, 64 (verified tokens/s = 5 S / latency);
      3. for SmolLM2-135M (--model), verify and decode latency with and
         without CUDA graphs, and 10,000 verify calls with device memory
         read before and after.
    Latencies are host-clock medians of complete gpu_forward_batch calls
    (inputs uploaded, argmax downloaded, synchronized), after warm-up;
    every step is rolled back with gpu_session_truncate so each repetition
    has the same shape. Inputs are pseudo-random tokens, never zeros.

    usage: bench_gpu [--model PATH] [--ctx 256] [--reps 30] [--skip-8b] [--formats w8a8,fp16,w8]
                     [--profile]
    --profile: per-kernel times of the 8B verify (events after every
    kernel, ungraphed) and the graphed verify under each tuning variant;
    text on stderr only.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "gpu.h"
#include "model.h"

#define K1 5                    //  verify positions: k = 4 drafts + 1

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
    return x < y ? -1 : x > y;
}

static double
s_median (double *v, int n)
{
    qsort (v, n, sizeof *v, s_cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void
s_tokens (int32_t *t, int n, int vocab, unsigned seed)
{
    unsigned s = seed * 2654435761u + 1;
    for (int i = 0; i < n; i++) {
        s = s * 1103515245u + 12345u;
        t[i] = (int32_t) ((s >> 8) % (unsigned) vocab);
    }
}

static void
s_die (const char *what, const char *msg)
{
    fprintf (stderr, "bench_gpu: %s: %s\n", what, msg);
    exit (1);
}

//  Prefills sessions ids[0..n) to ctx positions, batches of up to max_tokens.
static void
s_prefill (gpu_model_t *g, const int *ids, int n, int ctx)
{
    const gpu_options_t *o = gpu_model_options (g);
    int vocab = gpu_model_config (g)->vocab_size;
    int per = o->max_tokens / ctx;
    if (per < 1)
        s_die ("prefill", "max_tokens below ctx");
    int32_t *tok = malloc ((size_t) per * ctx * sizeof (int32_t));
    int32_t *am = malloc ((size_t) o->max_tokens * sizeof (int32_t));
    gpu_seq_t *q = calloc (per, sizeof *q);
    for (int i = 0; i < n; i += per) {
        int m = n - i < per ? n - i : per;
        for (int j = 0; j < m; j++) {
            s_tokens (tok + (size_t) j * ctx, ctx, vocab, 17 + i + j);
            q[j] = (gpu_seq_t) { ids[i + j], 0, ctx, tok + (size_t) j * ctx, NULL };
        }
        gpu_out_t out = { .argmax = am };
        if (gpu_forward_batch (g, q, m, &out))
            s_die ("prefill", gpu_model_error (g));
    }
    free (tok); free (am); free (q);
}

//  Median seconds of one forward over n sessions' K1 positions at ctx.
static double
s_verify (gpu_model_t *g, const int *ids, int n, int ctx, int reps)
{
    int vocab = gpu_model_config (g)->vocab_size;
    int32_t *tok = malloc ((size_t) n * K1 * sizeof (int32_t));
    int32_t *am = malloc ((size_t) n * K1 * sizeof (int32_t));
    gpu_seq_t *q = calloc (n, sizeof *q);
    double *t = malloc ((reps + 3) * sizeof (double));
    for (int r = 0; r < reps + 3; r++) {
        for (int s = 0; s < n; s++) {
            s_tokens (tok + (size_t) s * K1, K1, vocab, 1000 + r * 131 + s);
            q[s] = (gpu_seq_t) { ids[s], ctx, K1, tok + (size_t) s * K1, NULL };
        }
        gpu_out_t out = { .argmax = am };
        double t0 = s_now ();
        if (gpu_forward_batch (g, q, n, &out))
            s_die ("verify", gpu_model_error (g));
        double dt = s_now () - t0;
        if (r >= 3)
            t[r - 3] = dt;      //  first 3: warm-up (plans, graph capture)
        for (int s = 0; s < n; s++)
            gpu_session_truncate (g, ids[s], ctx);
    }
    double m = s_median (t, reps);
    free (tok); free (am); free (q); free (t);
    return m;
}

//  The Llama-3-8B-shaped synthetic model of both 8B runs: S_8B_SESSIONS
//  sessions of ctx + 16 positions, batches up to 64 sessions x K1 (or a
//  2 x ctx prefill), graphs up to 64 positions. Dies on failure.
#define S_8B_SESSIONS 64
static gpu_model_t *
s_new_8b (gpu_fmt_t fmt, int ctx)
{
    model_config_t c;
    memset (&c, 0, sizeof c);
    c.dim = 4096; c.hidden_dim = 14336; c.n_layers = 32; c.n_heads = 32; c.n_kv_heads = 8;
    c.head_dim = 128; c.kv_dim = 1024; c.vocab_size = 128256; c.context_length = 8192;
    c.norm_eps = 1e-5f; c.rope_freq_base = 500000.0f; c.rope_freq_scale = 1.0f;
    gpu_options_t o = gpu_options_default ();
    o.format = fmt;
    o.max_sessions = S_8B_SESSIONS;
    o.max_ctx = ctx + 16;
    o.max_tokens = S_8B_SESSIONS * K1 > 2 * ctx ? S_8B_SESSIONS * K1 : 2 * ctx;
    o.graph_max_tokens = 64;
    char err[512];
    gpu_model_t *g = gpu_model_new_synthetic (&c, &o, 42, err, sizeof err);
    if (!g)
        s_die ("8B model", err);
    return g;
}

static void
s_bench_8b (gpu_fmt_t fmt, int ctx, int reps, double bw, bool first)
{
    enum { MAX_S = S_8B_SESSIONS };
    double t0 = s_now ();
    gpu_model_t *g = s_new_8b (fmt, ctx);
    double gen_s = s_now () - t0;
    int ids[MAX_S];
    for (int s = 0; s < MAX_S; s++)
        if ((ids[s] = gpu_session_open (g)) < 0)
            s_die ("session", gpu_model_error (g));
    s_prefill (g, ids, MAX_S, ctx);
    size_t bytes = gpu_model_stream_bytes (g);
    double floor_s = bytes / bw;
    double v1 = s_verify (g, ids, 1, ctx, reps);
    gpu_model_set_graphs (g, false);
    double v1_nograph = s_verify (g, ids, 1, ctx, reps);
    gpu_model_set_graphs (g, true);
    gpu_model_set_skinny (g, false);
    double v1_cublaslt = s_verify (g, ids, 1, ctx, reps);
    gpu_model_set_skinny (g, true);
    const char *f = gpu_fmt_name (fmt);
    printf ("%s\"%s_8b\": {\"weight_bytes_read\": %zu, \"floor_ms\": %.4f, \"generate_s\": %.2f, "
            "\"ctx\": %d, \"verify_ms\": %.4f, \"verify_ms_no_graphs\": %.4f, \"verify_ms_cublaslt\": %.4f, \"verify_ratio_to_floor\": %.4f, "
            "\"sessions\": {",
            first ? "" : ", ", f, bytes, floor_s * 1e3, gen_s, ctx, v1 * 1e3, v1_nograph * 1e3, v1_cublaslt * 1e3, v1 / floor_s);
    int counts[] = { 1, 8, 32, 64 };
    for (int i = 0; i < 4; i++) {
        double m = s_verify (g, ids, counts[i], ctx, reps);
        printf ("%s\"%d\": {\"ms\": %.4f, \"verified_tps\": %.1f}", i ? ", " : "", counts[i],
                m * 1e3, counts[i] * K1 / m);
        fprintf (stderr, "8B %s: %d sessions x %d positions: %.3f ms, %.0f tokens/s\n", f,
                 counts[i], K1, m * 1e3, counts[i] * K1 / m);
    }
    printf ("}}");
    fflush (stdout);
    fprintf (stderr, "8B %s: verify %.3f ms (no graphs %.3f, cuBLASLt for every GEMM %.3f), floor %.3f ms "
             "(%zu bytes), ratio %.3f\n", f, v1 * 1e3, v1_nograph * 1e3, v1_cublaslt * 1e3, floor_s * 1e3,
             bytes, v1 / floor_s);
    gpu_model_destroy (&g);
}

//  Greedy tokens of one verify of n sessions (fixed inputs), rolled back.
static void
s_verify_argmax (gpu_model_t *g, const int *ids, int n, int ctx, int32_t *am)
{
    int vocab = gpu_model_config (g)->vocab_size;
    int32_t *tok = malloc ((size_t) n * K1 * sizeof (int32_t));
    gpu_seq_t *q = calloc (n, sizeof *q);
    for (int s = 0; s < n; s++) {
        s_tokens (tok + (size_t) s * K1, K1, vocab, 777 + s);
        q[s] = (gpu_seq_t) { ids[s], ctx, K1, tok + (size_t) s * K1, NULL };
    }
    gpu_out_t out = { .argmax = am };
    if (gpu_forward_batch (g, q, n, &out))
        s_die ("verify", gpu_model_error (g));
    for (int s = 0; s < n; s++)
        gpu_session_truncate (g, ids[s], ctx);
    free (tok); free (q);
}

//  --profile: per-kernel times of one 8B verify step (1 and 64 sessions),
//  then the graphed verify under each tuning variant, with the greedy
//  tokens checked against the default's.
static void
s_profile_8b (gpu_fmt_t fmt, int ctx, int reps, double bw)
{
    enum { MAX_S = S_8B_SESSIONS };
    gpu_model_t *g = s_new_8b (fmt, ctx);
    int ids[MAX_S];
    for (int s = 0; s < MAX_S; s++)
        if ((ids[s] = gpu_session_open (g)) < 0)
            s_die ("session", gpu_model_error (g));
    s_prefill (g, ids, MAX_S, ctx);
    const char *f = gpu_fmt_name (fmt);
    double floor_s = gpu_model_stream_bytes (g) / bw;
    int counts[] = { 1, 64 };
    for (int i = 0; i < 2; i++) {
        char title[64];
        snprintf (title, sizeof title, "8B %s, %d x %d positions", f, counts[i], K1);
        gpu_model_tune (g, "profile", 1);
        s_verify (g, ids, counts[i], ctx, reps / 3 + 3);
        gpu_model_profile_print (g, stderr, title, bw);
        gpu_model_tune (g, "profile", 0);
    }
    int32_t ref[MAX_S * K1], am[MAX_S * K1];
    s_verify_argmax (g, ids, 1, ctx, ref);
    //  Session 3 (gpu_mma.cuh): the tensor-core GEMM against cuBLASLt for
    //  every product, without PDL, at each split (warps a row tile), and
    //  w8a8 with one activation level; the last is the default.
    struct { const char *name; int skinny, pdl, split, levels, ld, att_pf, att_lanes, emit_max, res_ep; } var[] = {
        { "cublaslt", 0, 1, 0, 2, 2, 1, 1, 1, 1 }, { "nopdl", 1, 0, 0, 2, 2, 1, 1, 1, 1 },
        { "tiled_s4", 1, 1, 4, 2, 2, 1, 1, 1, 1 }, { "tiled_s8", 1, 1, 8, 2, 2, 1, 1, 1, 1 },
        { "1level", 1, 1, 0, 1, 2, 1, 1, 1, 1 }, { "att_pf0", 1, 1, 0, 2, 2, 0, 1, 1, 1 },
        { "att_warp", 1, 1, 0, 2, 2, 1, 0, 1, 1 }, { "emit_max0", 1, 1, 0, 2, 2, 1, 1, 0, 0 },
        { "res_ep0", 1, 1, 0, 2, 2, 1, 1, 1, 0 }, { "s3_small", 1, 1, 0, 2, 2, 0, 0, 0, 0 },
        { "default", 1, 1, 0, 2, 2, 1, 1, 1, 1 },
    };
    for (size_t v = 0; v < sizeof var / sizeof var[0]; v++) {
        if (var[v].levels == 1 && fmt != GPU_FMT_W8A8)
            continue;
        gpu_model_set_skinny (g, var[v].skinny);
        gpu_model_tune (g, "pdl", var[v].pdl);
        gpu_model_tune (g, "mma_split", var[v].split);
        gpu_model_tune (g, "mma_ld", var[v].ld);
        gpu_model_tune (g, "att_prefetch", var[v].att_pf);
        gpu_model_tune (g, "att_lanes", var[v].att_lanes);
        gpu_model_tune (g, "emit_max", var[v].emit_max);
        gpu_model_tune (g, "res_ep", var[v].res_ep);
        if (fmt == GPU_FMT_W8A8)
            gpu_model_tune (g, "act_levels", var[v].levels);
        double m = s_verify (g, ids, 1, ctx, reps);
        s_verify_argmax (g, ids, 1, ctx, am);
        int same = !memcmp (am, ref, K1 * sizeof (int32_t));
        double m64 = s_verify (g, ids, 64, ctx, reps / 3 + 3);
        fprintf (stderr, "variant 8B %s %-9s: verify 1 x %d %.3f ms = %.2fx floor (%.3f ms); tokens %s; "
                 "64 x %d %.3f ms = %.0f tokens/s\n", f, var[v].name, K1, m * 1e3, m / floor_s,
                 floor_s * 1e3, same ? "equal" : "DIFFER", K1, m64 * 1e3, 64 * K1 / m64);
    }
    //  Ablations (default settings): the graphed step with kernels left
    //  out, so the difference to the full step is what they cost inside
    //  the graph (with PDL), which the ungraphed profile above cannot say.
    //  Bits as gpu.h's "ablate".
    struct { const char *name; long mask, hollow; } abl[] = {
        { "full", 0, 0 }, { "-attention", 1, 0 }, { "hollow_attention", 0, 1 }, { "hollow_emit", 0, 2 },
        { "hollow_emit_ffn", 0, 4 }, { "hollow_add_rmsnorm", 0, 8 }, { "hollow_small", 0, 1 | 2 | 4 | 8 | 512 }, { "-emit", 2 }, { "-emit_ffn", 4 }, { "-add_rmsnorm", 8 },
        { "-small", 1 | 2 | 4 | 8 | 512 }, { "-gemm_qkv", 16 }, { "-gemm_o", 32 }, { "-gemm_gate_up", 64 },
        { "-gemm_down", 128 }, { "gemms_only_qkv", 1 | 2 | 4 | 8 | 512 | 32 | 64 | 128 | 256 },
        { "gemms_only_o", 1 | 2 | 4 | 8 | 512 | 16 | 64 | 128 | 256 },
        { "gemms_only_gu", 1 | 2 | 4 | 8 | 512 | 16 | 32 | 128 | 256 },
        { "gemms_only_down", 1 | 2 | 4 | 8 | 512 | 16 | 32 | 64 | 256 }, { "hollow_head", 0, 512 },
    };
    double full = 0;
    for (size_t a = 0; a < sizeof abl / sizeof abl[0]; a++) {
        if (gpu_model_tune (g, "ablate", abl[a].mask) || gpu_model_tune (g, "hollow", abl[a].hollow))
            s_die ("ablate", gpu_model_error (g));
        double m = s_verify (g, ids, 1, ctx, reps);
        if (a == 0)
            full = m;
        fprintf (stderr, "ablate 8B %s %-18s: verify 1 x %d %.3f ms (%+.3f ms vs full)\n", f, abl[a].name, K1,
                 m * 1e3, (m - full) * 1e3);
    }
    gpu_model_tune (g, "ablate", 0);
    gpu_model_tune (g, "hollow", 0);
    gpu_model_destroy (&g);
}

static void
s_bench_small (const char *path, int reps, double bw)
{
    model_options_t mo = model_options_default ();
    mo.format = QFMT_F32;
    char err[512];
    model_t *cpu = model_load (path, &mo, err, sizeof err);
    if (!cpu)
        s_die ("model", err);
    printf (", \"smollm2\": {");
    for (int f = 0; f < 2; f++) {
        gpu_options_t o = gpu_options_default ();
        o.format = f ? GPU_FMT_W8A8 : GPU_FMT_FP16;
        o.max_sessions = 4;
        o.max_ctx = 512;
        o.max_tokens = 256;
        gpu_model_t *g = gpu_model_new_from_cpu (cpu, &o, err, sizeof err);
        if (!g)
            s_die ("SmolLM2 upload", err);
        int id = gpu_session_open (g);
        int ctx = 128;
        s_prefill (g, &id, 1, ctx);
        double on = s_verify (g, &id, 1, ctx, reps * 4);
        gpu_model_set_graphs (g, false);
        double off = s_verify (g, &id, 1, ctx, reps * 4);
        gpu_model_set_graphs (g, true);
        //  Decode: one position.
        double dec[2];
        for (int gr = 0; gr < 2; gr++) {
            gpu_model_set_graphs (g, gr == 0);
            double *t = malloc (reps * 4 * sizeof (double));
            int32_t tok = 7, am;
            for (int r = 0; r < reps * 4 + 3; r++) {
                gpu_seq_t q = { id, ctx, 1, &tok, NULL };
                gpu_out_t out = { .argmax = &am };
                double t0 = s_now ();
                if (gpu_forward_batch (g, &q, 1, &out))
                    s_die ("decode", gpu_model_error (g));
                if (r >= 3)
                    t[r - 3] = s_now () - t0;
                gpu_session_truncate (g, id, ctx);
                tok = am;
            }
            dec[gr] = s_median (t, reps * 4);
            free (t);
        }
        gpu_model_set_graphs (g, true);
        //  10,000 verify calls: 4 sessions, random acceptance, rollback.
        int ids[4] = { id, gpu_session_open (g), gpu_session_open (g), gpu_session_open (g) };
        size_t mem0 = 0;
        int errors = 0;
        unsigned r = 9;
        double t0 = s_now ();
        for (int call = 0; call < 10000; call++) {
            int32_t tok[4][K1], am[4 * K1];
            gpu_seq_t q[4];
            for (int s = 0; s < 4; s++) {
                int pos = gpu_session_pos (g, ids[s]);
                if (pos + K1 > o.max_ctx) {
                    gpu_session_truncate (g, ids[s], 0);
                    pos = 0;
                }
                s_tokens (tok[s], K1, gpu_model_config (g)->vocab_size, call * 4 + s);
                q[s] = (gpu_seq_t) { ids[s], pos, K1, tok[s], NULL };
            }
            gpu_out_t out = { .argmax = am };
            if (gpu_forward_batch (g, q, 4, &out))
                errors++;
            for (int s = 0; s < 4; s++) {
                r = r * 1103515245u + 12345u;
                gpu_session_truncate (g, ids[s], q[s].pos + 1 + (int) ((r >> 10) % K1));
            }
            if (call == 99)
                mem0 = gpu_memory_used ();
        }
        double loop_s = s_now () - t0;
        size_t mem1 = gpu_memory_used ();
        //  Bad requests in the same model: errors, then it keeps serving.
        int32_t bad_tok = 1, am1;
        gpu_seq_t unknown = { 99, 0, 1, &bad_tok, NULL };
        gpu_seq_t beyond = { ids[0], gpu_session_pos (g, ids[0]), o.max_ctx, &bad_tok, NULL };
        gpu_out_t out1 = { .argmax = &am1 };
        int bad1 = gpu_forward_batch (g, &unknown, 1, &out1);
        char msg1[256];
        snprintf (msg1, sizeof msg1, "%s", gpu_model_error (g));
        int bad2 = gpu_forward_batch (g, &beyond, 1, &out1);
        char msg2[256];
        snprintf (msg2, sizeof msg2, "%s", gpu_model_error (g));
        gpu_seq_t fine = { ids[0], gpu_session_pos (g, ids[0]), 1, &bad_tok, NULL };
        int ok = gpu_forward_batch (g, &fine, 1, &out1);
        const char *fn = gpu_fmt_name (o.format);
        printf ("%s\"%s\": {\"verify_ms_graphs\": %.4f, \"verify_ms_no_graphs\": %.4f, "
                "\"decode_ms_graphs\": %.4f, \"decode_ms_no_graphs\": %.4f, \"floor_ms\": %.4f, "
                "\"calls_10000\": {\"errors\": %d, \"seconds\": %.2f, \"mem_after_100\": %zu, "
                "\"mem_after_10000\": %zu, \"unknown_session_rc\": %d, \"unknown_session_msg\": \"%s\", "
                "\"beyond_ctx_rc\": %d, \"beyond_ctx_msg\": \"%s\", \"serves_after_rc\": %d}}",
                f ? ", " : "", fn, on * 1e3, off * 1e3, dec[0] * 1e3, dec[1] * 1e3,
                gpu_model_stream_bytes (g) / bw * 1e3, errors, loop_s, mem0, mem1, bad1, msg1,
                bad2, msg2, ok);
        fprintf (stderr, "SmolLM2 %s: verify %.3f ms graphs / %.3f ms direct; decode %.3f / %.3f; "
                 "10000 calls %.1f s, %d errors, memory %zu -> %zu\n", fn, on * 1e3, off * 1e3,
                 dec[0] * 1e3, dec[1] * 1e3, loop_s, errors, mem0, mem1);
        gpu_model_destroy (&g);
    }
    printf ("}");
    model_destroy (&cpu);
}

//  Whether name is one of the comma-separated entries of list.
static bool
s_listed (const char *list, const char *name)
{
    size_t n = strlen (name);
    for (const char *p = list; p && *p; p = strchr (p, ',') ? strchr (p, ',') + 1 : NULL)
        if (strncmp (p, name, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

int
main (int argc, char **argv)
{
    const char *model = NULL;
    const char *formats = "w8a8,fp16,w8";
    int ctx = 256, reps = 30;
    bool skip_8b = false, profile = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp (argv[i], "--model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp (argv[i], "--ctx") && i + 1 < argc)
            ctx = atoi (argv[++i]);
        else if (!strcmp (argv[i], "--reps") && i + 1 < argc)
            reps = atoi (argv[++i]);
        else if (!strcmp (argv[i], "--formats") && i + 1 < argc)
            formats = argv[++i];
        else if (!strcmp (argv[i], "--skip-8b"))
            skip_8b = true;
        else if (!strcmp (argv[i], "--profile"))
            profile = true;
        else {
            fprintf (stderr, "usage: bench_gpu [--model PATH] [--ctx 256] [--reps 30] [--skip-8b] "
                     "[--formats w8a8,fp16,w8] [--profile]\n");
            return 2;
        }
    }
    if (ctx < 8 || reps < 1)
        s_die ("options", "ctx >= 8 and reps >= 1 needed");
    char desc[256];
    if (gpu_describe (desc, sizeof desc))
        s_die ("device", "no CUDA device");
    char err[256];
    if (gpu_selftest (err, sizeof err))
        s_die ("selftest", err);
    double bw = gpu_copy_bandwidth ((size_t) 4 << 30, 20);
    if (bw <= 0)
        s_die ("bandwidth", "copy measurement failed");
    fprintf (stderr, "%s; copy bandwidth %.0f GB/s\n", desc, bw / 1e9);
    if (profile) {
        for (int f = 0; f < GPU_FMT_COUNT; f++)
            if (s_listed (formats, gpu_fmt_name ((gpu_fmt_t) f)))
                s_profile_8b ((gpu_fmt_t) f, ctx, reps, bw);
        return 0;
    }
    printf ("{\"device\": \"%s\", \"copy_bandwidth_gbs\": %.1f", desc, bw / 1e9);
    fflush (stdout);
    if (!skip_8b) {
        printf (", ");
        bool first = true;
        for (int f = 0; f < GPU_FMT_COUNT; f++)
            if (s_listed (formats, gpu_fmt_name ((gpu_fmt_t) f)) && f != 0) {
                s_bench_8b ((gpu_fmt_t) f, ctx, reps, bw, first);
                first = false;
            }
        if (s_listed (formats, "fp16"))
            s_bench_8b (GPU_FMT_FP16, ctx, reps, bw, first);
    }
    if (model)
        s_bench_small (model, reps, bw);
    printf ("}\n");
    return 0;
}
