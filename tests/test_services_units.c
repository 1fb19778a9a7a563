/*  test_services_units.c: the pieces under the services, without processes.

    - core/activations: int8 rows are within scale/2 of the input (scale =
      absmax/127, exact zeros stay zero, the absmax element is exact up to
      rounding), fp16 within 2^-11 relative, fp32 exact; sizes and the
      layer tag; corrupt blocks and non-finite inputs are refused.
    - core/session_store: LRU order (a lookup refreshes), eviction reports
      the id, replace and remove destroy the item exactly once.
    - KV caches after rollback: a split-prefix cache for layers [0, 2) and a
      cloud-target cache for [2, 4), fed as the services feed them (int8
      activations between them), after a rejected round and the next round
      at the accepted prefix, hold exactly (bit for bit) what a fresh
      prefill of the accepted text puts there: the KV-cache equality of the
      issue's "Show", on the caches themselves.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "activations.h"
#include "kvcache.h"
#include "model.h"
#include "session_store.h"
#include "sm_proc.h"

Test (activations, int8_fp16_fp32_bounds)
{
    enum { R = 5, D = 96 };
    float x [R * D], y [R * D];
    uint64_t s = 99;
    for (int i = 0; i < R * D; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x [i] = (float) ((s >> 11) * (1.0 / 9007199254740992.0) - 0.5) * (float) (1 << (i % 5 * 3));
    }
    for (int c = 0; c < D; c++)
        x [2 * D + c] = 0.0f;               //  an all-zero row
    x [3 * D + 7] = 0.0f;
    char err [256];
    wire_activations_t a;
    //  int8
    cr_assert_eq (activations_pack (x, R, D, WIRE_DTYPE_INT8, 7, &a, err, sizeof err), 0, "%s", err);
    cr_assert_eq (a.data.size, R * D);
    cr_assert_eq (a.scales.size, R * 4);
    cr_assert (a.has_layer && a.layer == 7);
    cr_assert_eq (activations_wire_bytes (WIRE_DTYPE_INT8, R, D), R * D + R * 4);
    cr_assert_eq (activations_unpack (&a, y, R * D, err, sizeof err), 0, "%s", err);
    for (int r = 0; r < R; r++) {
        float amax = 0;
        for (int c = 0; c < D; c++)
            amax = fmaxf (amax, fabsf (x [r * D + c]));
        float scale = amax / 127.0f;
        for (int c = 0; c < D; c++) {
            float e = fabsf (y [r * D + c] - x [r * D + c]);
            cr_assert_leq (e, scale * 0.5f * 1.0001f + 1e-30f, "row %d col %d: %g vs %g", r, c,
                           y [r * D + c], x [r * D + c]);
            if (x [r * D + c] == 0.0f)
                cr_assert_eq (y [r * D + c], 0.0f);
        }
    }
    //  The codec accepts what pack makes.
    wire_err_t werr;
    cr_assert_eq (wire_validate (&wire_activations_desc, &a, &werr), 0, "%s", werr.text);
    //  A short buffer, a wrong data size, a missing scale, a NaN scale.
    cr_assert_eq (activations_unpack (&a, y, R * D - 1, err, sizeof err), -1);
    a.data.size--;
    cr_assert_eq (activations_unpack (&a, y, R * D, err, sizeof err), -1);
    a.data.size++;
    size_t ss = a.scales.size;
    a.scales.size = 4;
    cr_assert_eq (activations_unpack (&a, y, R * D, err, sizeof err), -1);
    cr_assert (strstr (err, "scales"), "%s", err);
    a.scales.size = ss;
    memset (a.scales.data, 0xff, 4);
    cr_assert_eq (activations_unpack (&a, y, R * D, err, sizeof err), -1);
    wire_msg_free (&wire_activations_desc, &a);
    //  fp16
    cr_assert_eq (activations_pack (x, R, D, WIRE_DTYPE_FP16, 3, &a, err, sizeof err), 0);
    cr_assert_eq (a.data.size, R * D * 2);
    cr_assert_null (a.scales.data);
    cr_assert_eq (activations_unpack (&a, y, R * D, err, sizeof err), 0);
    for (int i = 0; i < R * D; i++)
        cr_assert_leq (fabsf (y [i] - x [i]), fabsf (x [i]) * (1.0f / 2048) + 6e-8f, "%d", i);
    wire_msg_free (&wire_activations_desc, &a);
    //  fp32
    cr_assert_eq (activations_pack (x, R, D, WIRE_DTYPE_FP32, 3, &a, err, sizeof err), 0);
    cr_assert_eq (activations_unpack (&a, y, R * D, err, sizeof err), 0);
    cr_assert_arr_eq (x, y, sizeof x);
    wire_msg_free (&wire_activations_desc, &a);
    //  Non-finite input.
    x [11] = INFINITY;
    cr_assert_eq (activations_pack (x, R, D, WIRE_DTYPE_INT8, 3, &a, err, sizeof err), -1);
    cr_assert (strstr (err, "non-finite"), "%s", err);
    cr_assert_null (a.data.data);
    //  Names.
    wire_dtype_t d;
    cr_assert_eq (activations_dtype_parse ("fp16", &d), 0);
    cr_assert_eq (d, WIRE_DTYPE_FP16);
    cr_assert_eq (activations_dtype_parse ("int4", &d), -1);
}

static int s_freed;

static void
s_free (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
    s_freed++;
}

static int *
s_int (int v)
{
    int *p = malloc (sizeof *p);
    *p = v;
    return p;
}

Test (session_store, lru_eviction_and_ownership)
{
    s_freed = 0;
    session_store_t *store = session_store_new (3, s_free);
    cr_assert_not_null (store);
    char evicted [64];
    cr_assert_eq (session_store_insert (store, "a", s_int (1), evicted, sizeof evicted), 0);
    cr_assert_eq (session_store_insert (store, "b", s_int (2), evicted, sizeof evicted), 0);
    cr_assert_eq (session_store_insert (store, "c", s_int (3), evicted, sizeof evicted), 0);
    cr_assert_str_empty (evicted);
    //  Touch a: b is now the least recently used.
    cr_assert_eq (*(int *) session_store_lookup (store, "a"), 1);
    cr_assert_eq (session_store_insert (store, "d", s_int (4), evicted, sizeof evicted), 0);
    cr_assert_str_eq (evicted, "b");
    cr_assert_null (session_store_lookup (store, "b"));
    cr_assert_eq (s_freed, 1);
    cr_assert_eq (session_store_size (store), 3);
    //  Replacing an id destroys the old item, evicts nothing.
    cr_assert_eq (session_store_insert (store, "c", s_int (30), evicted, sizeof evicted), 0);
    cr_assert_str_empty (evicted);
    cr_assert_eq (s_freed, 2);
    cr_assert_eq (*(int *) session_store_lookup (store, "c"), 30);
    cr_assert_eq (session_store_remove (store, "a"), 1);
    cr_assert_eq (session_store_remove (store, "a"), 0);
    cr_assert_eq (s_freed, 3);
    session_store_destroy (&store);
    cr_assert_null (store);
    cr_assert_eq (s_freed, 5);
    cr_assert_null (session_store_new (0, s_free));
}

//  ---------------------------------------------------------------------
//  KV caches after rollback

static char *s_dir;
static char s_model [512];

static void
s_tiny (void)
{
    s_dir = sm_tmpdir_new ("svcunits");
    cr_assert_not_null (s_dir);
    snprintf (s_model, sizeof s_model, "%s/tiny.gguf", s_dir);
    pid_t pid = sm_spawn (NULL, "splitmesh", "tiny-model", "--out", s_model, "--layers", "4",
                          "--dim", "64", "--ctx", "128", "--seed", "3", "--type", "q8_0", NULL);
    int status = -1;
    cr_assert_eq (sm_wait (pid, 30000, &status), 0);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0);
}

static void
s_tiny_fini (void)
{
    sm_proc_kill_all ();
    if (s_dir)
        sm_tmpdir_remove (&s_dir);
}

typedef struct {
    model_t *prefix, *target;   //  [0, 2) + embeddings; [2, 4) + head
    kvcache_t *pkv, *tkv;
    int dim;
} s_pair_t;

static void
s_pair_new (s_pair_t *p)
{
    char err [256];
    model_options_t mo = model_options_default ();
    mo.format = QFMT_W8;
    mo.first_layer = 0;
    mo.last_layer = 2;
    mo.load_head = false;
    p->prefix = model_load (s_model, &mo, err, sizeof err);
    cr_assert_not_null (p->prefix, "%s", err);
    mo.first_layer = 2;
    mo.last_layer = -1;
    mo.load_embeddings = false;
    mo.load_head = true;
    p->target = model_load (s_model, &mo, err, sizeof err);
    cr_assert_not_null (p->target, "%s", err);
    p->pkv = kvcache_new (p->prefix, 64);
    p->tkv = kvcache_new (p->target, 64);
    cr_assert (p->pkv && p->tkv);
    p->dim = model_config (p->prefix)->dim;
}

static void
s_pair_destroy (s_pair_t *p)
{
    kvcache_destroy (&p->pkv);
    kvcache_destroy (&p->tkv);
    model_destroy (&p->prefix);
    model_destroy (&p->target);
}

//  One request pair as the services run it: truncate both caches to pos,
//  prefix layers, int8 over the "wire", target layers.
static void
s_step (s_pair_t *p, int pos, const int32_t *tokens, int n)
{
    float *x = malloc ((size_t) n * p->dim * sizeof *x);
    char err [256];
    kvcache_truncate (p->pkv, pos);
    kvcache_truncate (p->tkv, pos);
    cr_assert_eq (model_embed (p->prefix, tokens, n, x), 0);
    cr_assert_eq (model_forward (p->prefix, p->pkv, 0, 2, pos, n, x), 0);
    wire_activations_t a;
    cr_assert_eq (activations_pack (x, (uint32_t) n, (uint32_t) p->dim, WIRE_DTYPE_INT8, 2, &a,
                                    err, sizeof err), 0);
    cr_assert_eq (activations_unpack (&a, x, (size_t) n * p->dim, err, sizeof err), 0);
    wire_msg_free (&wire_activations_desc, &a);
    cr_assert_eq (model_forward (p->target, p->tkv, 2, 4, pos, n, x), 0);
    free (x);
}

static void
s_same_cache (kvcache_t *a, kvcache_t *b, int kv_dim, int n_pos, const char *what)
{
    cr_assert_eq (kvcache_pos (a), n_pos, "%s", what);
    cr_assert_eq (kvcache_pos (b), n_pos, "%s", what);
    //  Positions [0, n_pos) only: the rest is stale memory after a
    //  truncate, by design.
    size_t bytes = (size_t) n_pos * kv_dim * sizeof (float);
    for (int layer = kvcache_first_layer (a); layer < kvcache_last_layer (a); layer++) {
        cr_assert_arr_eq (kvcache_keys (a, layer), kvcache_keys (b, layer), bytes,
                          "%s: keys of layer %d differ", what, layer);
        cr_assert_arr_eq (kvcache_values (a, layer), kvcache_values (b, layer), bytes,
                          "%s: values of layer %d differ", what, layer);
    }
}

Test (kv_rollback, caches_equal_fresh_prefill, .init = s_tiny, .fini = s_tiny_fini, .timeout = 60)
{
    s_pair_t spec, fresh;
    s_pair_new (&spec);
    s_pair_new (&fresh);
    int32_t prompt [9] = { 5, 80, 81, 90, 3, 44, 120, 7, 61 };
    int n = 9;
    //  Speculative history: prefill; a round of t0 + 4 drafts at n of which
    //  1 is accepted (keep n + 2); then the next round of 3 rows at n + 2,
    //  of which 2 are kept (n + 4).
    int32_t round1 [5] = { 11, 12, 13, 14, 15 };
    int32_t round2 [3] = { 21, 22, 23 };
    s_step (&spec, 0, prompt, n);
    s_step (&spec, n, round1, 5);
    s_step (&spec, n + 2, round2, 3);
    kvcache_truncate (spec.pkv, n + 4);
    kvcache_truncate (spec.tkv, n + 4);
    //  Fresh: the accepted text at once.
    int32_t text [13];
    memcpy (text, prompt, sizeof prompt);
    memcpy (text + n, round1, 2 * sizeof *text);
    memcpy (text + n + 2, round2, 2 * sizeof *text);
    s_step (&fresh, 0, text, n + 4);
    int kv_dim = model_config (spec.prefix)->kv_dim;
    s_same_cache (spec.pkv, fresh.pkv, kv_dim, n + 4, "split-prefix [0, 2)");
    s_same_cache (spec.tkv, fresh.tkv, kv_dim, n + 4, "cloud-target [2, 4)");
    s_pair_destroy (&spec);
    s_pair_destroy (&fresh);
}

//  ---------------------------------------------------------------------
//  Options: flags and environment, usage errors, start-up failures

//  Runs program with env settings (NAME=VALUE, NULL-terminated) applied in
//  this process for the spawn; returns the exit status and the output.
static int
s_run_cli (char *out, size_t out_size, const char *const *env, const char *program, ...)
{
    char *dir = sm_tmpdir_new ("svcopt");
    char log [600];
    snprintf (log, sizeof log, "%s/out.log", dir);
    for (const char *const *e = env; e && *e; e++)
        putenv ((char *) *e);
    va_list args;
    va_start (args, program);
    char *argv [16] = { (char *) program };
    int argc = 1;
    char *arg;
    while (argc < 15 && (arg = va_arg (args, char *)))
        argv [argc++] = arg;
    argv [argc] = NULL;
    va_end (args);
    pid_t pid = sm_spawnv (log, program, argv);
    for (const char *const *e = env; e && *e; e++) {
        char name [64];
        snprintf (name, sizeof name, "%.*s", (int) (strchr (*e, '=') - *e), *e);
        unsetenv (name);
    }
    int status = -1;
    cr_assert_eq (sm_wait (pid, 20000, &status), 0, "%s did not exit", program);
    FILE *f = fopen (log, "r");
    size_t n = f? fread (out, 1, out_size - 1, f): 0;
    out [n] = 0;
    if (f)
        fclose (f);
    sm_tmpdir_remove (&dir);
    return WIFEXITED (status)? WEXITSTATUS (status): -1;
}

Test (service_options, flags_environment_and_failures, .fini = s_tiny_fini)
{
    char out [4096];
    //  --help lists the common and the service's own options.
    cr_assert_eq (s_run_cli (out, sizeof out, NULL, "splitmesh-split-prefix", "--help", NULL), 0);
    cr_assert (strstr (out, "--act-dtype") && strstr (out, "SPLITMESH_SPLIT"), "%s", out);
    cr_assert_eq (s_run_cli (out, sizeof out, NULL, "splitmesh-cloud-target", "--help", NULL), 0);
    cr_assert (strstr (out, "--stage-only") && !strstr (out, "--act-dtype"), "%s", out);
    //  Usage errors exit 2 with a reason.
    cr_assert_eq (s_run_cli (out, sizeof out, NULL, "splitmesh-cloud-target", "--split", "2", NULL), 2);
    cr_assert (strstr (out, "--broker"), "%s", out);
    const char *broker_env [] = { "SPLITMESH_BROKER=tcp://127.0.0.1:1", NULL };
    cr_assert_eq (s_run_cli (out, sizeof out, broker_env, "splitmesh-cloud-target", NULL), 2);
    cr_assert (strstr (out, "--split"), "%s", out);
    cr_assert_eq (s_run_cli (out, sizeof out, broker_env, "splitmesh-split-prefix", "--split", "2",
                             "--act-dtype", "int4", NULL), 2);
    cr_assert (strstr (out, "int4"), "%s", out);
    cr_assert_eq (s_run_cli (out, sizeof out, broker_env, "splitmesh-tokenizer", "--split", "2", NULL), 2);
    //  Environment only: the model named by SPLITMESH_MODEL is opened (and
    //  its absence reported), the split by SPLITMESH_SPLIT checked.
    const char *env [] = { "SPLITMESH_BROKER=tcp://127.0.0.1:1", "SPLITMESH_SPLIT=2",
                           "SPLITMESH_MODEL=/nonexistent/model.gguf", "SPLITMESH_FORMAT=w4", NULL };
    cr_assert_eq (s_run_cli (out, sizeof out, env, "splitmesh-split-prefix", NULL), 1);
    cr_assert (strstr (out, "/nonexistent/model.gguf"), "%s", out);
    cr_assert_eq (s_run_cli (out, sizeof out, env, "splitmesh-tokenizer", NULL), 1);
    cr_assert (strstr (out, "/nonexistent/model.gguf"), "%s", out);
    const char *bad_format [] = { "SPLITMESH_BROKER=tcp://127.0.0.1:1", "SPLITMESH_SPLIT=2",
                                  "SPLITMESH_FORMAT=q3", NULL };
    cr_assert_eq (s_run_cli (out, sizeof out, bad_format, "splitmesh-cloud-target", NULL), 2);
    cr_assert (strstr (out, "q3"), "%s", out);
    //  A split beyond the model's layers is refused at start-up.
    s_tiny ();
    cr_assert_eq (s_run_cli (out, sizeof out, broker_env, "splitmesh-cloud-target", "--model", s_model,
                             "--split", "9", NULL), 1);
    cr_assert (strstr (out, "exceeds the model's 4 layers"), "%s", out);
}
