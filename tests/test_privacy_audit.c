/*  test_privacy_audit.c: the privacy audit's arithmetic (core/privacy_audit.h)
    and `splitmesh privacy-audit` end to end on a tiny generated model.

    The attacks must find what is there and nothing else: nearest
    neighbour returns the planted row of a scaled, slightly perturbed
    embedding and is at chance on random vectors; the ridge fit recovers a
    known linear map with intercept; the noise has the asked-for size; the
    int8 link changes values by at most its quantisation step. The command
    must run on a tiny model, refuse bad arguments, and report, at L = 1
    without noise and an fp32 link, a top-1 agreement of 1 (the split
    itself changes nothing) with recovery rates in [0, 1]. The layer-table
    attack (nn_layer) must find what it is built to find: with windows of
    2 every other position is a token alone in its cache, exactly what the
    attacker's table holds, so it recovers at least half the positions.
*/
#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "privacy_audit.h"
#include "rng.h"
#include "sm_cli.h"
#include "sm_proc.h"

static char *s_dir;

static void
s_fini (void)
{
    sm_tmpdir_remove (&s_dir);
    sm_proc_kill_all ();
}

TestSuite (privacy_audit, .fini = s_fini, .timeout = 60);

static void
s_random (float *x, size_t n, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++)
        x [i] = (float) rng_normal (rng);
}

Test (privacy_audit, nearest_neighbour_finds_planted_rows_and_not_random_ones)
{
    enum { V = 300, D = 24, Q = 40 };
    uint64_t rng = 5;
    float *table = malloc (sizeof (float) * V * D), *q = malloc (sizeof (float) * Q * D);
    int32_t out [Q], want [Q];
    s_random (table, V * D, &rng);
    float *unit = malloc (sizeof (float) * V * D);
    memcpy (unit, table, sizeof (float) * V * D);
    privacy_normalize_rows (unit, V, D);
    for (int i = 0; i < Q; i++) {
        want [i] = (int32_t) (rng_next (&rng) % V);
        for (int d = 0; d < D; d++)     //  scaled by 3.5 plus 10% noise: cosine ignores scale
            q [i * D + d] = 3.5f * table [want [i] * D + d] + 0.1f * (float) rng_normal (&rng);
    }
    threadpool_t *pool = threadpool_new (2);
    cr_assert_eq (privacy_nn (unit, V, D, q, Q, out, pool), 0);
    for (int i = 0; i < Q; i++)
        cr_assert_eq (out [i], want [i], "query %d: got %d, planted %d", i, out [i], want [i]);
    //  Random queries: hits at about chance (1/300 each).
    s_random (q, Q * D, &rng);
    cr_assert_eq (privacy_nn (unit, V, D, q, Q, out, NULL), 0);
    int hits = 0;
    for (int i = 0; i < Q; i++) {
        cr_assert (out [i] >= 0 && out [i] < V);
        hits += out [i] == want [i];
    }
    cr_assert_leq (hits, 2, "%d random queries hit their planted row", hits);
    threadpool_destroy (&pool);
    free (table);
    free (unit);
    free (q);
}

Test (privacy_audit, ridge_recovers_a_linear_map_with_intercept)
{
    enum { N = 400, DI = 12, DO = 7 };
    uint64_t rng = 9;
    float *x = malloc (sizeof (float) * N * DI), *y = malloc (sizeof (float) * N * DO);
    float m [DI * DO], c [DO], w [DI * DO], b [DO];
    s_random (x, N * DI, &rng);
    s_random (m, DI * DO, &rng);
    s_random (c, DO, &rng);
    privacy_ridge_apply (x, N, DI, DO, m, c, y);
    char err [256];
    cr_assert_eq (privacy_ridge_fit (x, y, N, DI, DO, 1e-9, w, b, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < DI * DO; i++)
        cr_assert_float_eq (w [i], m [i], 1e-3, "W[%d] = %g, want %g", i, w [i], m [i]);
    for (int i = 0; i < DO; i++)
        cr_assert_float_eq (b [i], c [i], 1e-3, "b[%d] = %g, want %g", i, b [i], c [i]);
    //  A strong ridge shrinks W towards 0.
    cr_assert_eq (privacy_ridge_fit (x, y, N, DI, DO, 100.0, w, b, err, sizeof err), 0, "%s", err);
    double norm_w = 0, norm_m = 0;
    for (int i = 0; i < DI * DO; i++) {
        norm_w += w [i] * w [i];
        norm_m += m [i] * m [i];
    }
    cr_assert_lt (norm_w, 0.05 * norm_m);
    //  Too few rows: an error, not a crash.
    cr_assert_eq (privacy_ridge_fit (x, y, 1, DI, DO, 1e-3, w, b, err, sizeof err), -1);
    cr_assert (strstr (err, "at least 2 rows"), "%s", err);
    free (x);
    free (y);
}

Test (privacy_audit, noise_and_int8_link_have_the_stated_size)
{
    enum { N = 64, D = 256 };
    uint64_t rng = 3;
    float *x = malloc (sizeof (float) * N * D), *z = malloc (sizeof (float) * N * D);
    s_random (x, N * D, &rng);
    for (int i = 0; i < N * D; i++)
        x [i] *= 2.0f;                  //  row RMS ~2
    memcpy (z, x, sizeof (float) * N * D);
    uint64_t nrng = 77;
    privacy_add_noise (z, N, D, 0.1, &nrng);
    double e = 0, s = 0;
    for (int i = 0; i < N * D; i++) {
        e += (double) (z [i] - x [i]) * (z [i] - x [i]);
        s += (double) x [i] * x [i];
    }
    double ratio = sqrt (e / s);        //  should be ~0.1
    cr_assert (ratio > 0.09 && ratio < 0.11, "noise RMS / signal RMS = %g, want 0.1", ratio);
    memcpy (z, x, sizeof (float) * N * D);
    privacy_add_noise (z, N, D, 0.0, &nrng);
    cr_assert_eq (memcmp (z, x, sizeof (float) * N * D), 0, "sigma 0 changed the values");
    char err [256];
    cr_assert_eq (privacy_transport (z, N, D, WIRE_DTYPE_INT8, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < N; i++) {
        float amax = 0;
        for (int d = 0; d < D; d++)
            amax = fmaxf (amax, fabsf (x [i * D + d]));
        for (int d = 0; d < D; d++)
            cr_assert_leq (fabsf (z [i * D + d] - x [i * D + d]), amax / 254.0f * 1.0001f);
    }
    free (x);
    free (z);
}

static void
s_text (const char *path, int words, uint64_t seed)
{
    static const char *vocab [] = { "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran",
                                    "far", "away", "from", "home", "in", "rain", "." };
    FILE *f = fopen (path, "w");
    cr_assert (f);
    uint64_t rng = seed;
    for (int i = 0; i < words; i++)
        fprintf (f, "%s ", vocab [rng_next (&rng) % 16]);
    fclose (f);
}

Test (privacy_audit, command_runs_on_a_tiny_model_and_checks_arguments)
{
    s_dir = sm_tmpdir_new ("privacy_audit");
    cr_assert (s_dir);
    char model [PATH_MAX], calib [PATH_MAX], eval [PATH_MAX], out [PATH_MAX];
    snprintf (model, sizeof model, "%s/tiny.gguf", s_dir);
    snprintf (calib, sizeof calib, "%s/calib.txt", s_dir);
    snprintf (eval, sizeof eval, "%s/eval.txt", s_dir);
    snprintf (out, sizeof out, "%s/privacy.json", s_dir);
    sm_cli_result_t *r = SM_SPLITMESH (60, "tiny-model", "--out", model, "--layers", "4",
                                       "--seed", "3", "--ctx", "256");
    cr_assert_eq (r->status, 0, "%s", r->err);
    sm_cli_result_destroy (&r);
    s_text (calib, 600, 1);
    s_text (eval, 300, 2);

    r = SM_SPLITMESH (60, "privacy-audit", "--model", model, "--calib", calib, "--eval", eval,
                      "--format", "f32", "--dtype", "fp32", "--depths", "1,2", "--sigmas", "0,1",
                      "--fit-tokens", "128", "--eval-tokens", "64", "--window", "32", "--out", out);
    cr_assert_eq (r->status, 0, "privacy-audit failed:\n%s", r->err);
    sm_cli_result_destroy (&r);
    FILE *f = fopen (out, "r");
    cr_assert (f);
    char json [8192];
    size_t n = fread (json, 1, sizeof json - 1, f);
    json [n] = 0;
    fclose (f);
    //  Four settings: (1, 0), (1, 1), (2, 0), (2, 1).
    int settings = 0;
    for (const char *p = json; (p = strstr (p, "\"L\":")); p++)
        settings++;
    cr_assert_eq (settings, 4, "%s", json);
    const char *first = strstr (json, "{\"L\": 1, \"sigma\": 0,");
    cr_assert (first, "%s", json);
    double top1 = -1, nn = -1, probe = -1, ppl = -1;
    cr_assert_eq (sm_json_number (first, "top1_agreement", &top1), 0);
    cr_assert_eq (sm_json_number (first, "nn_recovery", &nn), 0);
    cr_assert_eq (sm_json_number (first, "probe_recovery", &probe), 0);
    cr_assert_eq (sm_json_number (first, "perplexity", &ppl), 0);
    //  fp32 link, no noise: the split alone changes no answer.
    cr_assert_float_eq (top1, 1.0, 1e-9, "top-1 agreement %g at sigma 0 over fp32", top1);
    cr_assert (nn >= 0 && nn <= 1 && probe >= 0 && probe <= 1);
    double nnl = -1, nnlc = -1;
    cr_assert_eq (sm_json_number (first, "nn_layer_recovery", &nnl), 0, "%s", json);
    cr_assert_eq (sm_json_number (first, "nn_layer_centred_recovery", &nnlc), 0);
    cr_assert (nnl >= 0 && nnl <= 1 && nnlc >= 0 && nnlc <= 1);
    double clean = -1;
    cr_assert_eq (sm_json_number (json, "clean_perplexity", &clean), 0);
    cr_assert_float_eq (ppl, clean, 1e-3 * clean, "sigma 0 perplexity %g vs clean %g", ppl, clean);
    //  Noise of the activations' own size changes answers.
    const char *noisy = strstr (json, "{\"L\": 1, \"sigma\": 1,");
    cr_assert (noisy);
    cr_assert_eq (sm_json_number (noisy, "top1_agreement", &top1), 0);
    cr_assert_lt (top1, 1.0, "sigma 1 left every answer unchanged");

    //  Windows of 2: every other position is a lone token (position 0 of
    //  an empty cache), whose activation is exactly its row of the table.
    r = SM_SPLITMESH (60, "privacy-audit", "--model", model, "--calib", calib, "--eval", eval,
                      "--format", "f32", "--dtype", "fp32", "--depths", "2", "--sigmas", "0",
                      "--fit-tokens", "64", "--eval-tokens", "64", "--window", "2", "--out", out);
    cr_assert_eq (r->status, 0, "privacy-audit failed:\n%s", r->err);
    sm_cli_result_destroy (&r);
    f = fopen (out, "r");
    cr_assert (f);
    n = fread (json, 1, sizeof json - 1, f);
    json [n] = 0;
    fclose (f);
    cr_assert_eq (sm_json_number (json, "nn_layer_recovery", &nnl), 0, "%s", json);
    cr_assert_eq (sm_json_number (json, "nn_recovery", &nn), 0);
    cr_assert_geq (nnl, 0.5, "nn_layer recovered %g with lone tokens at half the positions", nnl);
    cr_log_info ("windows of 2, L = 2: nn_layer %g, nn (embeddings) %g", nnl, nn);

    r = SM_SPLITMESH (20, "privacy-audit", "--model", model, "--calib", calib, "--eval", eval,
                      "--depths", "4");
    cr_assert_eq (r->status, 2, "%s", r->err);
    cr_assert (strstr (r->err, "depths must be increasing integers in [1, 4)"), "%s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (20, "privacy-audit", "--model", model, "--calib", calib, "--eval", eval,
                      "--sigmas", "0,-1");
    cr_assert_eq (r->status, 2);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (20, "privacy-audit", "--calib", calib);
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "--calib and --eval are required"), "%s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (20, "privacy-audit", "--model", model, "--calib", "/nonexistent/x.txt",
                      "--eval", eval, "--depths", "1");
    cr_assert_eq (r->status, 1);
    cr_assert (strstr (r->err, "cannot read /nonexistent/x.txt"), "%s", r->err);
    sm_cli_result_destroy (&r);
}
