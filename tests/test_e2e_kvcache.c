/*  test_e2e_kvcache.c: after rejected drafts, every KV cache equals a fresh prefill.

    Issue 4's KV-cache Show, for the three caches of a generation:

    - split-prefix and cloud-target, as running processes of a real mesh
      (`splitmesh up`, tiny f32 model, fp32 activations). The test speaks
      their protocol itself, as edge-draft does: prefill, then rounds of
      extend + verify whose drafts are partly the target's own greedy
      tokens (accepted) and partly wrong tokens (rejected), each round
      starting at the accepted position (the protocol's only rollback).
      Then session A (after the rejections) and session B (one fresh
      prefill of the accepted text) get the same probe: the next token at
      the same position. A cache is compared through what it determines:
      split-prefix's activations of the probe row (fp32), and cloud-target's
      final hidden state of it (`return_hidden`), both of which attend over
      every cached position. They must agree to float rounding. A session
      C whose cache differs in one early token must differ, which shows the
      probe sees the cache.
    - the draft model's cache (core/drafter.h, in-process, as edge-draft
      uses it): after proposing k drafts and then being given a context
      that rejected some, its proposals and its whole truncated
      distributions q equal those of a fresh drafter given the same context.
*/
#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "activations.h"
#include "codec.h"
#include "drafter.h"
#include "mdp_client.h"
#include "model.h"
#include "quant.h"
#include "sm_cli.h"
#include "sm_proc.h"
#include "sm_ref.h"

static char *s_dir;
static char s_run_dir [1024], s_target [1024];
static char s_device [1100], s_cloud [256];

static void
s_fini (void)
{
    if (s_dir) {
        sm_mesh_teardown (s_run_dir);
        sm_tmpdir_remove (&s_dir);
    }
    sm_proc_kill_all ();
}

TestSuite (e2e_kvcache, .fini = s_fini, .timeout = 120);

static void
s_tiny_model (void)
{
    s_dir = sm_tmpdir_new ("e2e_kvcache");
    cr_assert (s_dir);
    snprintf (s_run_dir, sizeof s_run_dir, "%s/run", s_dir);
    snprintf (s_target, sizeof s_target, "%s/target.gguf", s_dir);
    sm_cli_result_t *r = SM_SPLITMESH (60, "tiny-model", "--out", s_target, "--layers", "4",
                                       "--seed", "5", "--ctx", "256");
    cr_assert_eq (r->status, 0, "%s", r->err);
    sm_cli_result_destroy (&r);
}

//  One request/reply with a service; decodes the reply into `reply` (of
//  reply_desc). Fails the test on an error reply.
static void
s_call (const char *endpoint, const char *service, const wire_desc_t *desc, const void *msg,
        const wire_desc_t *reply_desc, void *reply)
{
    uint8_t *data = NULL;
    size_t size = 0;
    wire_err_t err;
    cr_assert_eq (wire_encode (desc, msg, &data, &size, &err), 0, "encode %s: %s", desc->name, err.text);
    mdp_client_t *client = mdp_client_new (endpoint);
    mdp_client_set_timeout (client, 20000);
    mdp_client_set_retries (client, 0);
    zmsg_t *body = zmsg_new ();
    zmsg_addmem (body, data, size);
    free (data);
    zmsg_t *answer = mdp_client_request (client, service, &body);
    mdp_client_destroy (&client);
    cr_assert (answer, "%s.%s: no answer", service, desc->name);
    zframe_t *frame = zmsg_first (answer);
    wire_peek_t peek;
    cr_assert_eq (wire_peek (zframe_data (frame), zframe_size (frame), &peek, &err), 0);
    if (peek.desc == &wire_error_desc || peek.status >= 400) {
        wire_error_t e;
        wire_decode_frame (&wire_error_desc, frame, &e, &err);
        cr_assert_fail ("%s.%s: error %u %s", service, desc->name, e.status, e.error ? e.error : "");
    }
    cr_assert_eq (wire_decode_frame (reply_desc, frame, reply, &err), 0, "%s: %s", reply_desc->name, err.text);
    zmsg_destroy (&answer);
}

//  prefix.extend (or prefill when pos == 0); returns the activations
//  reply, which the caller frees.
static void
s_prefix (const char *session, uint32_t pos, const int32_t *tokens, size_t n, wire_activations_reply_t *out)
{
    if (pos == 0) {
        wire_prefill_t req;
        wire_msg_init (&wire_prefill_desc, &req);
        req.session = (char *) session;
        req.tokens = (int32_t *) tokens;
        req.tokens_count = n;
        s_call (s_device, "prefix", &wire_prefill_desc, &req, &wire_activations_reply_desc, out);
    }
    else {
        wire_extend_t req;
        wire_msg_init (&wire_extend_desc, &req);
        req.session = (char *) session;
        req.pos = pos;
        req.tokens = (int32_t *) tokens;
        req.tokens_count = n;
        s_call (s_device, "prefix", &wire_extend_desc, &req, &wire_activations_reply_desc, out);
    }
    cr_assert (out->activations);
    cr_assert_eq (out->activations->n_pos, n);
}

//  target.prefill at pos 0 with activations; returns next_token.
static int32_t
s_target_prefill (const char *session, wire_activations_t *acts)
{
    wire_prefill_t req;
    wire_msg_init (&wire_prefill_desc, &req);
    req.session = (char *) session;
    req.activations = acts;
    req.temperature = 0;
    wire_prefill_reply_t out;
    s_call (s_cloud, "target", &wire_prefill_desc, &req, &wire_prefill_reply_desc, &out);
    cr_assert (out.has_next_token);
    int32_t next = out.next_token;
    wire_msg_free (&wire_prefill_reply_desc, &out);
    return next;
}

//  target.verify greedy; returns accepted and sets *next.
static int
s_target_verify (const char *session, uint32_t pos, wire_activations_t *acts,
                 const int32_t *drafts, size_t k, int32_t *next, uint32_t *n_pos)
{
    wire_verify_t req;
    wire_msg_init (&wire_verify_desc, &req);
    req.session = (char *) session;
    req.pos = pos;
    req.activations = acts;
    req.draft_tokens = (int32_t *) drafts;
    req.draft_tokens_count = k;
    req.temperature = 0;
    wire_verify_reply_t out;
    s_call (s_cloud, "target", &wire_verify_desc, &req, &wire_verify_reply_desc, &out);
    cr_assert (out.has_next_token);
    *next = out.next_token;
    *n_pos = out.n_pos;
    int accepted = (int) out.accepted;
    wire_msg_free (&wire_verify_reply_desc, &out);
    return accepted;
}

//  The probe: `token` at `pos` through split-prefix (its activation row)
//  and cloud-target (its final hidden state). Writes both as floats.
static void
s_probe (const char *session, uint32_t pos, int32_t token, float *prefix_row, float *hidden_row, int dim)
{
    wire_activations_reply_t acts;
    s_prefix (session, pos, &token, 1, &acts);
    char err [256] = "";
    cr_assert_eq (activations_unpack (acts.activations, prefix_row, (size_t) dim, err, sizeof err), 0, "%s", err);
    wire_verify_t req;
    wire_msg_init (&wire_verify_desc, &req);
    req.session = (char *) session;
    req.pos = pos;
    req.activations = acts.activations;
    req.temperature = 0;
    req.return_hidden = true;
    wire_verify_reply_t out;
    s_call (s_cloud, "target", &wire_verify_desc, &req, &wire_verify_reply_desc, &out);
    cr_assert (out.hidden, "cloud-target returned no hidden state");
    cr_assert_eq (activations_unpack (out.hidden, hidden_row, (size_t) dim, err, sizeof err), 0, "%s", err);
    wire_msg_free (&wire_verify_reply_desc, &out);
    wire_msg_free (&wire_activations_reply_desc, &acts);
}

static double
s_max_diff (const float *a, const float *b, int n, double *scale)
{
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) {
        if (fabs (a [i] - b [i]) > d)
            d = fabs (a [i] - b [i]);
        if (fabs (a [i]) > s)
            s = fabs (a [i]);
    }
    *scale = s;
    return d;
}

//  A fresh session prefilled with text[0..n) in one request.
static void
s_fresh (const char *session, const int32_t *text, size_t n)
{
    wire_activations_reply_t acts;
    s_prefix (session, 0, text, n, &acts);
    s_target_prefill (session, acts.activations);
    wire_msg_free (&wire_activations_reply_desc, &acts);
}

Test (e2e_kvcache, prefix_and_target_caches_after_rejections_equal_a_fresh_prefill)
{
    const char *names [] = { "splitmesh-broker", "splitmesh-tokenizer", "splitmesh-split-prefix",
                             "splitmesh-cloud-target", "splitmesh-edge-draft" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        char path [PATH_MAX];
        snprintf (path, sizeof path, "%s/%s", sm_bin_dir (), names [i]);
        if (access (path, X_OK))
            cr_skip_test ("%s is not built", names [i]);
    }
    s_tiny_model ();
    sm_cli_result_t *r = SM_SPLITMESH (120, "up", "--run-dir", s_run_dir, "--model", s_target,
                                       "--split", "2", "--format", "f32", "--act-dtype", "fp32",
                                       "--no-telemetry", "--timeout", "60");
    cr_assert_eq (r->status, 0, "up failed:\n%s\n%s", r->out, r->err);
    sm_cli_result_destroy (&r);
    snprintf (s_device, sizeof s_device, "ipc://%s/device.ipc", s_run_dir);
    //  The cloud broker's endpoint, from the state file.
    char path [PATH_MAX], line [1024];
    snprintf (path, sizeof path, "%s/mesh.env", s_run_dir);
    FILE *f = fopen (path, "r");
    cr_assert (f);
    while (fgets (line, sizeof line, f))
        sscanf (line, "SPLITMESH_CLOUD='%255[^']'", s_cloud);
    fclose (f);
    cr_assert (*s_cloud, "no SPLITMESH_CLOUD in %s", path);

    char err [256] = "";
    sm_ref_t *ref = sm_ref_new (s_target, "f32", err, sizeof err);
    cr_assert (ref, "%s", err);
    const char *prompt = "one two three four";
    int32_t *ptoks = NULL, *greedy = NULL;
    size_t n_prompt = 0, n_greedy = 0;
    cr_assert_eq (sm_ref_tokenize (ref, prompt, &ptoks, &n_prompt), 0);
    cr_assert_eq (sm_ref_greedy (ref, prompt, 24, &greedy, &n_greedy), 0);
    cr_assert_geq (n_greedy, 16, "the tiny model stopped early");
    int vocab = sm_ref_vocab (ref);

    //  Session A: prefill, then rounds with `good` right drafts followed by
    //  wrong ones (a token other than the greedy one), so that every round
    //  but the last rejects something.
    int32_t text [512];
    size_t n_text = n_prompt;
    memcpy (text, ptoks, n_prompt * sizeof *text);
    wire_activations_reply_t acts;
    s_prefix ("A", 0, ptoks, n_prompt, &acts);
    int32_t next = s_target_prefill ("A", acts.activations);
    wire_msg_free (&wire_activations_reply_desc, &acts);
    cr_assert_eq (next, greedy [0]);
    size_t produced = 1;            //  greedy[0..produced) are accepted; the last is not cached
    const int goods [] = { 1, 0, 2, 3, 0 };
    int rejected_rounds = 0;
    for (size_t round = 0; round < sizeof goods / sizeof goods [0]; round++) {
        int32_t rows [8];
        size_t k = 0;
        rows [0] = next;
        for (int g = 0; g < goods [round] && produced + k < n_greedy; g++, k++)
            rows [1 + k] = greedy [produced + k];
        //  Two wrong drafts.
        for (int w = 0; w < 2; w++, k++)
            rows [1 + k] = (greedy [produced + k] + 1 + w) % vocab;
        uint32_t pos = (uint32_t) (n_prompt + produced - 1);
        s_prefix ("A", pos, rows, k + 1, &acts);
        uint32_t n_pos = 0;
        int accepted = s_target_verify ("A", pos, acts.activations, rows + 1, k, &next, &n_pos);
        wire_msg_free (&wire_activations_reply_desc, &acts);
        cr_assert_eq (accepted, goods [round], "round %zu: %d accepted, expected %d",
                      round, accepted, goods [round]);
        cr_assert_eq (n_pos, pos + 1 + (uint32_t) accepted);
        produced += (size_t) accepted;
        cr_assert_eq (next, greedy [produced], "round %zu: correction %d, greedy %d",
                      round, next, greedy [produced]);
        produced++;
        rejected_rounds++;
    }
    //  Accepted text: prompt + greedy[0..produced); the caches should hold
    //  all but its last token.
    for (size_t i = 0; i + 1 < produced; i++)
        text [n_text++] = greedy [i];
    uint32_t probe_pos = (uint32_t) n_text;
    int32_t probe_token = greedy [produced - 1];

    //  Session B: one fresh prefill of the same text. C: one token changed.
    s_fresh ("B", text, n_text);
    int32_t changed [512];
    memcpy (changed, text, n_text * sizeof *text);
    changed [1] = (changed [1] + 7) % vocab;
    s_fresh ("C", changed, n_text);

    int dim = 64;
    float pa [64], ha [64], pb [64], hb [64], pc [64], hc [64];
    s_probe ("A", probe_pos, probe_token, pa, ha, dim);
    s_probe ("B", probe_pos, probe_token, pb, hb, dim);
    s_probe ("C", probe_pos, probe_token, pc, hc, dim);
    double scale_p, scale_h, sp, sh;
    double d_prefix = s_max_diff (pa, pb, dim, &scale_p);
    double d_hidden = s_max_diff (ha, hb, dim, &scale_h);
    double c_prefix = s_max_diff (pc, pb, dim, &sp);
    double c_hidden = s_max_diff (hc, hb, dim, &sh);
    fprintf (stderr, "e2e_kvcache: %d rounds with rejections, %zu cached positions; "
                     "A vs fresh B: prefix max diff %.3g (scale %.3g), target %.3g (scale %.3g); "
                     "C (one token changed) vs B: prefix %.3g, target %.3g\n",
             rejected_rounds, n_text, d_prefix, scale_p, d_hidden, scale_h, c_prefix, c_hidden);
    //  Float rounding only (a different batching of the same rows).
    cr_assert_leq (d_prefix, 1e-4 * (scale_p + 1e-6), "split-prefix's cache differs from a fresh prefill");
    cr_assert_leq (d_hidden, 1e-4 * (scale_h + 1e-6), "cloud-target's cache differs from a fresh prefill");
    //  The probe sees the cache.
    cr_assert_gt (c_prefix, 1e-2 * scale_p, "the probe does not see split-prefix's cache");
    cr_assert_gt (c_hidden, 1e-2 * scale_h, "the probe does not see cloud-target's cache");
    free (ptoks);
    free (greedy);
    sm_ref_destroy (&ref);
}

Test (e2e_kvcache, draft_cache_after_rejections_equals_a_fresh_one)
{
    s_tiny_model ();
    model_options_t mo = model_options_default ();
    cr_assert_eq (qfmt_parse ("w4", &mo.format), 0);
    char err [256] = "";
    model_t *model = model_load (s_target, &mo, err, sizeof err);
    cr_assert (model, "%s", err);
    drafter_t *used = drafter_new_model (model, NULL, 256, err, sizeof err);
    drafter_t *fresh = drafter_new_model (model, NULL, 256, err, sizeof err);
    cr_assert (used && fresh, "%s", err);
    int vocab = model_config (model)->vocab_size;
    sampler_params_t sp = drafter_sampler_params (1.0f, 0, 1.0f, 42);
    sampler_t *s1 = sampler_new (&sp, vocab), *s2 = sampler_new (&sp, vocab);

    int32_t ctx [64] = { 1, 17, 33, 45, 60, 71 };
    int n_ctx = 6;
    drafter_proposal_t *p1 = calloc (1, sizeof *p1), *p2 = calloc (1, sizeof *p2);
    int rounds_rejected = 0;
    for (int round = 0; round < 4; round++) {
        cr_assert_eq (drafter_propose (used, ctx, n_ctx, 6, s1, p1, err, sizeof err), 0, "%s", err);
        cr_assert_eq (p1->k, 6);
        //  The target "accepts" round drafts, then corrects with another token.
        int accepted = round % 3;
        for (int i = 0; i < accepted; i++)
            ctx [n_ctx++] = p1->d [i];
        ctx [n_ctx++] = (p1->d [accepted] + 3) % vocab;
        rounds_rejected++;
    }
    //  Same context, a used drafter (cache holds rejected drafts) and a fresh one.
    sampler_seed (s1, 7);
    sampler_seed (s2, 7);
    cr_assert_eq (drafter_propose (used, ctx, n_ctx, 6, s1, p1, err, sizeof err), 0, "%s", err);
    cr_assert_eq (drafter_propose (fresh, ctx, n_ctx, 6, s2, p2, err, sizeof err), 0, "%s", err);
    cr_assert_eq (p1->k, p2->k);
    double max_dq = 0;
    for (int i = 0; i < p1->k; i++) {
        cr_assert_eq (p1->d [i], p2->d [i], "draft %d: %d after rejections, %d fresh", i, p1->d [i], p2->d [i]);
        cr_assert_eq (p1->q_n [i], p2->q_n [i]);
        for (int j = 0; j < p1->q_n [i]; j++) {
            cr_assert_eq (p1->q [i][j].token, p2->q [i][j].token);
            double d = fabs (p1->q [i][j].prob - p2->q [i][j].prob);
            if (d > max_dq)
                max_dq = d;
        }
    }
    fprintf (stderr, "e2e_kvcache: draft after %d rejecting rounds: %d drafts x %d candidates, "
                     "max |q - q_fresh| %.3g\n", rounds_rejected, p1->k, p1->q_n [0], max_dq);
    cr_assert_leq (max_dq, 1e-5, "the draft's distributions differ from a fresh cache's");
    cr_assert_eq (drafter_cached (used), drafter_cached (fresh));
    free (p1);
    free (p2);
    sampler_destroy (&s1);
    sampler_destroy (&s2);
    drafter_destroy (&used);
    drafter_destroy (&fresh);
    model_destroy (&model);
}
