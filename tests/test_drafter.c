/*  test_drafter.c: the model drafter, the n-gram drafter and adaptive k.

    The model drafter must propose exactly what greedy decoding of the same
    model would generate, roll back and continue as if it had been fed the
    new context from scratch, and at temperature > 0 hand out the exact q it
    sampled from. The n-gram drafter is checked case by case, and one test
    compares the drafter against `splitmesh run --format w4` on the real
    model (skipped when the model file is absent).
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "drafter.h"
#include "gguf.h"
#include "kvcache.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

static char s_dir[256];
static char s_path[300];

static const char *
s_bin (void)
{
    const char *bin = getenv ("SPLITMESH_BIN_DIR");
    return bin ? bin : SPLITMESH_BIN_DIR;
}

static const char *
s_tiny (void)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/splitmesh_drafter_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    snprintf (s_path, sizeof s_path, "%s/tiny.gguf", s_dir);
    char cmd[1024];
    snprintf (cmd, sizeof cmd,
              "'%s/splitmesh' tiny-model --out '%s' --layers 3 --dim 64 --heads 4 --kv-heads 2 "
              "--ff 128 --ctx 256 --type f32 --seed 11 >/dev/null",
              s_bin (), s_path);
    cr_assert_eq (system (cmd), 0, "tiny-model failed: %s", cmd);
    return s_path;
}

static void
s_cleanup (void)
{
    if (s_path[0])
        unlink (s_path);
    if (s_dir[0])
        rmdir (s_dir);
    s_path[0] = s_dir[0] = 0;
}

static model_t *
s_load (const char *path, qfmt_t fmt)
{
    model_options_t mo = model_options_default ();
    mo.format = fmt;
    char err[256];
    model_t *m = model_load (path, &mo, err, sizeof err);
    cr_assert_not_null (m, "load %s: %s", path, err);
    return m;
}

//  Reference: greedy decoding as `splitmesh run` does it (prefill, then
//  one token at a time), fresh cache. Writes n tokens after ctx to out.
static void
s_greedy_ref (model_t *m, const int32_t *ctx, int n_ctx, int n, int32_t *out)
{
    const model_config_t *c = model_config (m);
    kvcache_t *kv = kvcache_new (m, n_ctx + n + 1);
    float *x = malloc ((size_t) (n_ctx + 1) * c->dim * sizeof *x);
    float *logits = malloc ((size_t) c->vocab_size * sizeof *logits);
    sampler_params_t sp = sampler_params_default ();
    sampler_t *s = sampler_new (&sp, c->vocab_size);
    cr_assert (kv && x && logits && s);
    cr_assert_eq (model_embed (m, ctx, n_ctx, x), 0);
    cr_assert_eq (model_forward (m, kv, 0, c->n_layers, 0, n_ctx, x), 0);
    cr_assert_eq (model_head (m, x + (size_t) (n_ctx - 1) * c->dim, 1, logits), 0);
    for (int i = 0; i < n; i++) {
        out[i] = sampler_sample (s, logits);
        cr_assert_eq (model_embed (m, &out[i], 1, x), 0);
        cr_assert_eq (model_forward (m, kv, 0, c->n_layers, n_ctx + i, 1, x), 0);
        cr_assert_eq (model_head (m, x, 1, logits), 0);
    }
    sampler_destroy (&s);
    free (x);
    free (logits);
    kvcache_destroy (&kv);
}

Test (drafter, ngram_lookup_cases)
{
    int32_t out[8];
    //  Longest suffix (3) wins over a more recent shorter match.
    int32_t a[] = { 1, 2, 3, 4, 5, 9, 3, 7, 2, 3 };
    //  suffix [7 2 3]? no; [2 3] at 1 -> follows 4 5 9 ...; n=3 [3 7 2]? suffix is [7,2,3]: no match.
    int n = drafter_ngram_lookup (a, 10, 3, 3, out);
    cr_assert_eq (n, 3);
    cr_assert (out[0] == 4 && out[1] == 5 && out[2] == 9, "got %d %d %d", out[0], out[1], out[2]);

    //  A 3-gram match beats a 1-gram match nearer the end.
    int32_t b[] = { 5, 6, 7, 8, 1, 7, 2, 5, 6, 7 };
    n = drafter_ngram_lookup (b, 10, 2, 3, out);
    cr_assert_eq (n, 2);
    cr_assert (out[0] == 8 && out[1] == 1);

    //  Most recent occurrence of the same n-gram.
    int32_t c[] = { 4, 1, 4, 2, 4 };
    n = drafter_ngram_lookup (c, 5, 1, 3, out);
    cr_assert_eq (n, 1);
    cr_assert_eq (out[0], 2);

    //  Proposals stop at the end of the context.
    int32_t d[] = { 3, 3, 3 };
    n = drafter_ngram_lookup (d, 3, 5, 3, out);
    //  suffix [3 3] occurs at 0, followed by one token (3).
    cr_assert_eq (n, 1);
    cr_assert_eq (out[0], 3);

    //  No match: nothing.
    int32_t e[] = { 1, 2, 3, 4 };
    cr_assert_eq (drafter_ngram_lookup (e, 4, 4, 3, out), 0);
    //  Too short.
    cr_assert_eq (drafter_ngram_lookup (e, 1, 4, 3, out), 0);
}

Test (drafter, ngram_drafter_point_mass)
{
    drafter_t *dr = drafter_new_ngram ();
    cr_assert_not_null (dr);
    cr_assert_eq (drafter_kind (dr), DRAFTER_NGRAM);
    drafter_proposal_t *p = calloc (1, sizeof *p);
    int32_t ctx[] = { 10, 11, 12, 13, 10, 11 };
    char err[128];
    cr_assert_eq (drafter_propose (dr, ctx, 6, 4, NULL, p, err, sizeof err), 0, "%s", err);
    cr_assert_eq (p->k, 4);
    int32_t want[] = { 12, 13, 10, 11 };
    for (int i = 0; i < 4; i++) {
        cr_assert_eq (p->d[i], want[i]);
        cr_assert_eq (p->q_n[i], 1);
        cr_assert_eq (p->q[i][0].token, want[i]);
        cr_assert_float_eq (p->q[i][0].prob, 1.0f, 0);
    }
    //  Bad k is an error, not a crash.
    cr_assert_eq (drafter_propose (dr, ctx, 6, 0, NULL, p, err, sizeof err), -1);
    cr_assert_eq (drafter_propose (dr, ctx, 6, DRAFTER_MAX_K + 1, NULL, p, err, sizeof err), -1);
    free (p);
    drafter_destroy (&dr);
    cr_assert_null (dr);
    drafter_destroy (&dr);
}

Test (drafter, adapt_k_rule)
{
    cr_assert_eq (drafter_adapt_k (4, 4, 4, 8), 5);         //  all accepted: grow
    cr_assert_eq (drafter_adapt_k (8, 8, 8, 8), 8);         //  at the cap
    cr_assert_eq (drafter_adapt_k (4, 4, 2, 8), 4);         //  half: keep
    cr_assert_eq (drafter_adapt_k (4, 4, 1, 8), 3);         //  under half: shrink
    cr_assert_eq (drafter_adapt_k (1, 1, 0, 8), 1);         //  floor 1
    cr_assert_eq (drafter_adapt_k (4, 0, 0, 8), 4);         //  nothing proposed: keep
    cr_assert_eq (drafter_adapt_k (40, 4, 4, 99), DRAFTER_MAX_K);
}

Test (drafter, model_greedy_matches_reference_and_rollback, .fini = s_cleanup)
{
    const char *path = s_tiny ();
    model_t *draft = s_load (path, QFMT_W4);
    model_t *ref = s_load (path, QFMT_W4);
    char err[256];
    drafter_t *dr = drafter_new_model (draft, NULL, 200, err, sizeof err);
    cr_assert_not_null (dr, "%s", err);
    drafter_proposal_t *p = calloc (1, sizeof *p);

    int32_t ctx[160] = { 1, 17, 42, 99, 5, 23, 64, 7 };
    int n_ctx = 8;
    int32_t want[32];
    //  1. Accept-everything chain: rounds of k drafts + one more token
    //     reproduce plain greedy decoding.
    s_greedy_ref (ref, ctx, n_ctx, 24, want);
    int got = 0;
    while (got < 20) {
        cr_assert_eq (drafter_propose (dr, ctx, n_ctx, 3, NULL, p, err, sizeof err), 0, "%s", err);
        cr_assert_eq (p->k, 3);
        for (int i = 0; i < 3; i++) {
            cr_assert_eq (p->d[i], want[got + i], "draft %d of round at %d: %d, greedy %d",
                          i, got, p->d[i], want[got + i]);
            cr_assert_eq (p->q_n[i], 1);
        }
        //  Accept all three plus the "target's" bonus token (greedy too).
        for (int i = 0; i < 4; i++)
            ctx[n_ctx++] = want[got + i];
        got += 4;
    }
    //  The cache caught up incrementally: it holds context + k - 1 drafts.
    cr_assert_eq (drafter_cached (dr), n_ctx - 4 + 2);

    //  2. A rejection: keep one draft, then a different token. The next
    //     proposal must equal a fresh model's greedy continuation.
    cr_assert_eq (drafter_propose (dr, ctx, n_ctx, 4, NULL, p, err, sizeof err), 0, "%s", err);
    ctx[n_ctx++] = p->d[0];
    ctx[n_ctx++] = (p->d[1] + 1) % 100;
    cr_assert_eq (drafter_propose (dr, ctx, n_ctx, 4, NULL, p, err, sizeof err), 0, "%s", err);
    s_greedy_ref (ref, ctx, n_ctx, 4, want);
    for (int i = 0; i < 4; i++)
        cr_assert_eq (p->d[i], want[i], "after rollback, draft %d: %d, fresh %d", i, p->d[i], want[i]);

    //  3. Prefill ahead of time: the next proposal is the same and feeds
    //     only the last token.
    drafter_t *dr3 = drafter_new_model (draft, NULL, 200, err, sizeof err);
    cr_assert_eq (drafter_prefill (dr3, ctx, n_ctx - 1, err, sizeof err), 0, "%s", err);
    cr_assert_eq (drafter_cached (dr3), n_ctx - 1);
    cr_assert_eq (drafter_prefill (dr3, ctx, n_ctx - 1, err, sizeof err), 0);     //  nothing new
    cr_assert_eq (drafter_cached (dr3), n_ctx - 1);
    cr_assert_eq (drafter_propose (dr3, ctx, n_ctx, 4, NULL, p, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 4; i++)
        cr_assert_eq (p->d[i], want[i], "after prefill, draft %d: %d, fresh %d", i, p->d[i], want[i]);
    cr_assert_eq (drafter_cached (dr3), n_ctx + 3);
    cr_assert_eq (drafter_prefill (dr3, ctx, 999, err, sizeof err), -1);
    drafter_destroy (&dr3);

    //  4. Explicit rollback to the middle of the prompt, then continue.
    drafter_rollback (dr, 3);
    cr_assert_eq (drafter_cached (dr), 3);
    cr_assert_eq (drafter_propose (dr, ctx, n_ctx, 2, NULL, p, err, sizeof err), 0, "%s", err);
    cr_assert (p->d[0] == want[0] && p->d[1] == want[1]);

    //  5. A context that does not fit is an error.
    int32_t big[256] = { 0 };
    cr_assert_eq (drafter_propose (dr, big, 199, 4, NULL, p, err, sizeof err), -1);
    cr_assert (strstr (err, "exceeds"), "%s", err);

    free (p);
    drafter_destroy (&dr);
    model_destroy (&draft);
    model_destroy (&ref);
}

Test (drafter, model_sampling_q_is_the_sampled_distribution, .fini = s_cleanup)
{
    const char *path = s_tiny ();
    model_t *draft = s_load (path, QFMT_W4);
    char err[256];
    drafter_t *dr = drafter_new_model (draft, NULL, 128, err, sizeof err);
    cr_assert_not_null (dr, "%s", err);
    drafter_proposal_t *p = calloc (1, sizeof *p);
    drafter_proposal_t *p2 = calloc (1, sizeof *p2);
    int32_t ctx[] = { 3, 1, 4, 1, 5, 9, 2, 6 };

    //  top_k 0 is clamped to the wire's candidate limit.
    sampler_params_t sp = drafter_sampler_params (0.9f, 0, 1.0f, 1234);
    cr_assert_eq (sp.top_k, DRAFTER_MAX_CANDIDATES);
    sampler_params_t sp40 = drafter_sampler_params (0.9f, 40, 0.95f, 1234);
    cr_assert_eq (sp40.top_k, 40);

    int vocab = model_config (draft)->vocab_size;
    sampler_t *s = sampler_new (&sp40, vocab);
    cr_assert_eq (drafter_propose (dr, ctx, 8, 5, s, p, err, sizeof err), 0, "%s", err);
    cr_assert_eq (p->k, 5);
    for (int i = 0; i < 5; i++) {
        cr_assert (p->q_n[i] >= 1 && p->q_n[i] <= 40, "q_n %d", p->q_n[i]);
        double sum = 0;
        bool has_d = false;
        for (int j = 0; j < p->q_n[i]; j++) {
            sum += p->q[i][j].prob;
            if (p->q[i][j].token == p->d[i])
                has_d = true;
        }
        cr_assert (fabs (sum - 1.0) < 1e-3, "q sums to %f", sum);
        cr_assert (has_d, "draft %d not in its q", i);
    }
    //  Same seed, same drafts and q (reproducible), after a rollback.
    sampler_seed (s, 1234);
    drafter_rollback (dr, 2);
    cr_assert_eq (drafter_propose (dr, ctx, 8, 5, s, p2, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq (p->d[i], p2->d[i]);
        cr_assert_eq (p->q_n[i], p2->q_n[i]);
        cr_assert_float_eq (p->q[i][0].prob, p2->q[i][0].prob, 1e-6);
    }
    sampler_destroy (&s);
    free (p);
    free (p2);
    drafter_destroy (&dr);
    model_destroy (&draft);
}

Test (drafter, bad_arguments)
{
    char err[256];
    cr_assert_null (drafter_new_model (NULL, NULL, 16, err, sizeof err));
    cr_assert (strlen (err) > 0);
}

//  The real model at W4: the drafter's greedy proposals decode to exactly
//  what `splitmesh run --format w4` prints.
Test (drafter, real_model_matches_splitmesh_run_w4, .timeout = 100)
{
    const char *model = getenv ("SPLITMESH_MODEL");
    static char def[512];
    if (!model || access (model, R_OK) != 0) {
        snprintf (def, sizeof def, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", SPLITMESH_SOURCE_DIR);
        model = def;
    }
    if (access (model, R_OK) != 0) {
        cr_skip_test ("model file %s absent (bash scripts/fetch-model.sh, or SPLITMESH_MODEL)", model);
        return;
    }
    const char *prompt = "The capital of France is";
    const int n = 12;
    char out_path[] = "/tmp/splitmesh_drafter_run_XXXXXX";
    int fd = mkstemp (out_path);
    cr_assert (fd >= 0);
    close (fd);
    char cmd[2048];
    snprintf (cmd, sizeof cmd,
              "timeout 80 '%s/splitmesh' run --model '%s' --format w4 --threads 2 -n %d -p '%s' >'%s' 2>/dev/null",
              s_bin (), model, n, prompt, out_path);
    int rc = system (cmd);
    FILE *f = fopen (out_path, "rb");
    char run_text[4096] = "";
    size_t run_len = f ? fread (run_text, 1, sizeof run_text - 1, f) : 0;
    if (f)
        fclose (f);
    unlink (out_path);
    cr_assert_eq (rc, 0, "splitmesh run failed: %s", cmd);
    run_text[run_len] = 0;
    if (run_len && run_text[run_len - 1] == '\n')
        run_text[--run_len] = 0;

    model_options_t mo = model_options_default ();
    mo.format = QFMT_W4;
    mo.n_threads = 2;
    char err[256];
    model_t *m = model_load (model, &mo, err, sizeof err);
    cr_assert_not_null (m, "%s", err);
    tokenizer_t *tok = tokenizer_new_from_gguf (model_gguf (m), err, sizeof err);
    cr_assert_not_null (tok, "%s", err);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    cr_assert_eq (tokenizer_encode (tok, prompt, strlen (prompt), true, true, &ids, &n_ids, err, sizeof err), 0);
    drafter_t *dr = drafter_new_model (m, NULL, 256, err, sizeof err);
    cr_assert_not_null (dr, "%s", err);
    drafter_proposal_t *p = calloc (1, sizeof *p);
    //  Two rounds (k = 8 then 4) so incremental catch-up is exercised too.
    int32_t ctx[256];
    memcpy (ctx, ids, n_ids * sizeof *ids);
    int n_ctx = (int) n_ids, got = 0;
    int32_t gen[16];
    int ks[] = { 8, 4 };
    for (int r = 0; r < 2; r++) {
        cr_assert_eq (drafter_propose (dr, ctx, n_ctx, ks[r], NULL, p, err, sizeof err), 0, "%s", err);
        for (int i = 0; i < p->k; i++)
            gen[got++] = ctx[n_ctx++] = p->d[i];
    }
    int n_text = 0;
    while (n_text < got && !tokenizer_is_eog (tok, gen[n_text]))
        n_text++;
    char *text = NULL;
    size_t text_len = 0;
    cr_assert_eq (tokenizer_decode (tok, gen, (size_t) n_text, false, false, &text, &text_len, err, sizeof err), 0);
    cr_assert_str_eq (text, run_text, "drafter: '%s'\nrun:     '%s'", text, run_text);
    free (text);
    free (ids);
    free (p);
    drafter_destroy (&dr);
    tokenizer_destroy (&tok);
    model_destroy (&m);
}

//  After rejected drafts, the draft KV cache holds exactly what a fresh
//  prefill of the accepted context would: same positions, same keys and
//  values in every layer.
Test (drafter, kv_cache_after_rejections_equals_fresh_prefill, .fini = s_cleanup)
{
    const char *path = s_tiny ();
    model_t *m = s_load (path, QFMT_W4);
    char err[256];
    drafter_t *dr = drafter_new_model (m, NULL, 128, err, sizeof err);
    cr_assert_not_null (dr, "%s", err);
    drafter_proposal_t *p = calloc (1, sizeof *p);
    int32_t ctx[128] = { 2, 7, 1, 8, 2, 8, 1, 8 };
    int n_ctx = 8;
    //  Rounds: keep some drafts, replace the next with another token.
    int keep[] = { 1, 0, 3, 2, 4 };
    for (int r = 0; r < 5; r++) {
        cr_assert_eq (drafter_propose (dr, ctx, n_ctx, 5, NULL, p, err, sizeof err), 0, "%s", err);
        for (int i = 0; i < keep[r]; i++)
            ctx[n_ctx++] = p->d[i];
        ctx[n_ctx++] = (p->d[keep[r]] + 3 + r) % 200;
    }
    //  Bring the cache to the accepted context minus the last token, as
    //  the next propose does first.
    drafter_rollback (dr, n_ctx - 1);
    kvcache_t *kv = drafter_kv (dr);
    //  The common prefix holds; what is beyond is stale and gets dropped.
    int common = drafter_cached (dr);
    cr_assert (common <= n_ctx - 1);

    //  Fresh prefill of ctx[0..common).
    const model_config_t *c = model_config (m);
    kvcache_t *fresh = kvcache_new (m, 128);
    float *x = malloc ((size_t) common * c->dim * sizeof *x);
    cr_assert_eq (model_embed (m, ctx, common, x), 0);
    cr_assert_eq (model_forward (m, fresh, 0, c->n_layers, 0, common, x), 0);
    cr_assert_eq (kvcache_pos (kv), common);
    cr_assert_eq (kvcache_pos (fresh), common);
    double worst = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const float *a[2] = { kvcache_keys (kv, l), kvcache_values (kv, l) };
        const float *b[2] = { kvcache_keys (fresh, l), kvcache_values (fresh, l) };
        for (int t = 0; t < 2; t++)
            for (size_t i = 0; i < (size_t) common * c->kv_dim; i++) {
                double d = fabs ((double) a[t][i] - b[t][i]);
                if (d > worst)
                    worst = d;
            }
    }
    cr_log_info ("draft cache vs fresh prefill over %d positions: max |diff| %g", common, worst);
    cr_assert (worst <= 1e-5, "draft KV cache differs from a fresh prefill by %g", worst);
    //  And the next proposal equals a fresh drafter's.
    drafter_t *dr2 = drafter_new_model (m, NULL, 128, err, sizeof err);
    drafter_proposal_t *p2 = calloc (1, sizeof *p2);
    cr_assert_eq (drafter_propose (dr, ctx, n_ctx, 4, NULL, p, err, sizeof err), 0);
    cr_assert_eq (drafter_propose (dr2, ctx, n_ctx, 4, NULL, p2, err, sizeof err), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq (p->d[i], p2->d[i]);
    free (x);
    free (p);
    free (p2);
    kvcache_destroy (&fresh);
    drafter_destroy (&dr);
    drafter_destroy (&dr2);
    model_destroy (&m);
}

//  The confidence stop ends a round after a draft whose probability is
//  under min_p, and conf holds that probability.
Test (drafter, confidence_stop, .fini = s_cleanup)
{
    const char *path = s_tiny ();
    model_t *m = s_load (path, QFMT_W4);
    char err[256];
    drafter_t *dr = drafter_new_model (m, NULL, 128, err, sizeof err);
    cr_assert_not_null (dr, "%s", err);
    drafter_proposal_t *p = calloc (1, sizeof *p);
    int32_t ctx[] = { 5, 10, 15, 20, 25 };
    drafter_set_min_p (dr, 1e-9f);
    cr_assert_eq (drafter_propose (dr, ctx, 5, 6, NULL, p, err, sizeof err), 0, "%s", err);
    cr_assert_eq (p->k, 6);
    float first = p->conf[0];
    cr_assert (first > 0 && first < 1, "conf %g", first);
    for (int i = 0; i < 6; i++)
        cr_assert (p->conf[i] > 0 && p->conf[i] <= 1);
    //  A threshold above the first draft's probability: one draft only.
    drafter_set_min_p (dr, first + (1 - first) / 2);
    cr_assert_eq (drafter_propose (dr, ctx, 5, 6, NULL, p, err, sizeof err), 0, "%s", err);
    cr_assert_eq (p->k, 1);
    cr_assert_float_eq (p->conf[0], first, 1e-6);
    //  Off again: all k.
    drafter_set_min_p (dr, 0);
    cr_assert_eq (drafter_propose (dr, ctx, 5, 6, NULL, p, err, sizeof err), 0, "%s", err);
    cr_assert_eq (p->k, 6);
    free (p);
    drafter_destroy (&dr);
    model_destroy (&m);
}
