/*  test_edge.c: splitmesh-edge-draft against the real mesh processes.

    Each test starts a broker, splitmesh-tokenizer, splitmesh-split-prefix,
    splitmesh-cloud-target (same --split L) and splitmesh-edge-draft as
    separate processes on ipc endpoints in a temp dir, over a tiny
    random-weight model written by `splitmesh tiny-model` (its built-in
    byte-level BPE vocabulary with ChatML specials, so tokenization is
    real), and sends `generate` requests as an MDP client.

    At temperature 0 the mesh must return exactly the tokens of target-only
    greedy decoding (the single-process reference below, the loop `splitmesh
    run` runs, and `splitmesh run` itself for one case), whatever k, split
    depth, drafter, privacy or mode. Activations travel as fp32 here so the
    split adds no rounding; int8/fp16 are the mesh tests' business.
    Children are killed and reaped in every test's fini.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
#include "codec.h"
#include "kvcache.h"
#include "mdp_client.h"
#include "mdp_common.h"
#include "model.h"
#include "sampler.h"
#include "sm_mdp.h"
#include "sm_proc.h"
#include "sm_telemetry.h"
#include "tokenizer.h"

#define S_MAX_OUT 512

static char *s_dir;
static char s_ep [400];
static char s_cloud_ep [400];
static char s_model [400];

static void
s_fini (void)
{
    sm_proc_kill_all ();
    //  SPLITMESH_TEST_KEEP=1 keeps the logs for a post-mortem.
    if (s_dir && !getenv ("SPLITMESH_TEST_KEEP"))
        sm_tmpdir_remove (&s_dir);
}

static void
s_log_path (char *buf, size_t size, const char *name)
{
    snprintf (buf, size, "%s/%s.log", s_dir, name);
}

//  Writes the tiny model once per test process.
static void
s_tiny (void)
{
    if (!s_dir)
        s_dir = sm_tmpdir_new ("splitmesh_edge");
    cr_assert_not_null (s_dir);
    snprintf (s_model, sizeof s_model, "%s/tiny.gguf", s_dir);
    char cmd [1200];
    snprintf (cmd, sizeof cmd,
              "'%s/splitmesh' tiny-model --out '%s' --layers 4 --dim 64 --heads 4 --kv-heads 2 "
              "--ff 128 --ctx 512 --seed 5 >/dev/null",
              sm_bin_dir (), s_model);
    cr_assert_eq (system (cmd), 0, "tiny-model failed: %s", cmd);
}

//  Starts broker, tokenizer, split-prefix and cloud-target at split L, and
//  edge-draft with extra arguments (NULL-terminated list).
//  Options of s_mesh_ex beyond the split.
typedef struct {
    const char *const *edge_extra;  //  more edge-draft arguments, NULL-terminated
    const char *max_sessions;       //  split-prefix and cloud-target --max-sessions
    bool separate_cloud;            //  cloud-target on its own (tcp) broker
    const char *link;               //  edge-draft --link (with separate_cloud)
    bool no_target;                 //  start no cloud-target (unreachable cloud)
    const char *expiry_ms;          //  brokers' --expiry-ms
    const char *broker;             //  use this running broker instead of starting one
    const char *telemetry;          //  edge-draft --telemetry
} s_mesh_opts_t;

static void
s_mesh_ex (const char *model, int L, const s_mesh_opts_t *o)
{
    if (!s_dir)
        s_dir = sm_tmpdir_new ("splitmesh_edge");
    snprintf (s_ep, sizeof s_ep, "ipc://%s/broker", s_dir);
    if (o->broker)
        snprintf (s_ep, sizeof s_ep, "%s", o->broker);
    snprintf (s_cloud_ep, sizeof s_cloud_ep, "%s", s_ep);
    char log [500], split [16];
    snprintf (split, sizeof split, "%d", L);
    const char *sessions = o->max_sessions ? o->max_sessions : "16";
    const char *expiry = o->expiry_ms ? o->expiry_ms : "5000";
    s_log_path (log, sizeof log, "broker");
    if (!o->broker)
        cr_assert (sm_spawn (log, "splitmesh-broker", "-e", s_ep, "--expiry-ms", expiry, NULL) > 0);
    if (o->separate_cloud) {
        int port = sm_free_tcp_port ();
        cr_assert (port > 0);
        snprintf (s_cloud_ep, sizeof s_cloud_ep, "tcp://127.0.0.1:%d", port);
        s_log_path (log, sizeof log, "cloud-broker");
        cr_assert (sm_spawn (log, "splitmesh-broker", "-e", s_cloud_ep, "--expiry-ms", expiry, NULL) > 0);
    }
    s_log_path (log, sizeof log, "tokenizer");
    cr_assert (sm_spawn (log, "splitmesh-tokenizer", "--broker", s_ep, "--model", model, NULL) > 0);
    s_log_path (log, sizeof log, "prefix");
    cr_assert (sm_spawn (log, "splitmesh-split-prefix", "--broker", s_ep, "--model", model,
                         "--split", split, "--act-dtype", "fp32", "--threads", "1",
                         "--max-sessions", sessions, NULL) > 0);
    s_log_path (log, sizeof log, "target");
    if (!o->no_target)
    cr_assert (sm_spawn (log, "splitmesh-cloud-target", "--broker", s_cloud_ep, "--model", model,
                         "--split", split, "--threads", "1", "--max-sessions", sessions, NULL) > 0);
    char *argv [32] = { "splitmesh-edge-draft", "--broker", s_ep, "--model", (char *) model,
                        "--threads", "1", "--workers", "2", "--cloud", s_cloud_ep };
    int argc = 11;
    if (o->link) {
        argv [argc++] = "--link";
        argv [argc++] = (char *) o->link;
    }
    if (o->telemetry) {
        argv [argc++] = "--telemetry";
        argv [argc++] = (char *) o->telemetry;
    }
    const char *const *edge_extra = o->edge_extra;
    for (int i = 0; edge_extra && edge_extra [i] && argc < 30; i++)
        argv [argc++] = (char *) edge_extra [i];
    argv [argc] = NULL;
    s_log_path (log, sizeof log, "edge");
    cr_assert (sm_spawnv (log, "splitmesh-edge-draft", argv) > 0);
    const char *services [] = { "tokenizer", "prefix", "target", "generate" };
    for (int i = 0; i < 4; i++)
        if (i != 2 || !o->no_target)
        cr_assert (sm_mdp_wait_workers (i == 2 ? s_cloud_ep : s_ep, services [i], 1, 30000),
                   "service '%s' did not register (logs in %s)", services [i], s_dir);
}

static void
s_mesh (const char *model, int L, const char *const *edge_extra)
{
    s_mesh_opts_t o = { .edge_extra = edge_extra };
    s_mesh_ex (model, L, &o);
}

typedef struct {
    int status;                 //  0: generate_final; else the error status
    char error [512];
    char text [8192];           //  partials + final text
    int32_t tokens [S_MAX_OUT]; //  partials + final tokens
    int n_tokens;
    int n_partials;
    char final_text [8192];     //  the FINAL's own text
    wire_finish_reason_t finish;
    wire_gen_stats_t stats;
    uint64_t by_pos [64];
} s_result_t;

static void
s_append (s_result_t *r, const char *text, const int32_t *tokens, size_t n)
{
    strncat (r->text, text, sizeof r->text - strlen (r->text) - 1);
    for (size_t i = 0; i < n && r->n_tokens < S_MAX_OUT; i++)
        r->tokens [r->n_tokens++] = tokens [i];
}

//  Collects PARTIALs and the FINAL of the request sent on client.
static void
s_collect (mdp_client_t *client, s_result_t *r, int timeout_ms)
{
    memset (r, 0, sizeof *r);
    int64_t deadline = zclock_mono () + timeout_ms;
    while (true) {
        int64_t left = deadline - zclock_mono ();
        cr_assert (left > 0, "no FINAL within %d ms (logs in %s)", timeout_ms, s_dir);
        int command = 0;
        zmsg_t *body = mdp_client_recv (client, (int) left, &command, NULL);
        cr_assert_not_null (body, "no reply within %d ms (logs in %s)", timeout_ms, s_dir);
        zframe_t *f = zmsg_first (body);
        wire_peek_t peek;
        wire_err_t err;
        cr_assert_eq (wire_peek (zframe_data (f), zframe_size (f), &peek, &err), 0);
        if (peek.status) {
            wire_error_t e;
            cr_assert_eq (wire_decode_frame (&wire_error_desc, f, &e, &err), 0);
            r->status = (int) e.status;
            snprintf (r->error, sizeof r->error, "%s", e.error);
            wire_msg_free (&wire_error_desc, &e);
            cr_assert_eq (command, MDPC_FINAL);
            zmsg_destroy (&body);
            break;
        }
        if (command == MDPC_PARTIAL) {
            wire_generate_partial_t p;
            cr_assert_eq (wire_decode_frame (&wire_generate_partial_desc, f, &p, &err), 0, "%s", err.text);
            s_append (r, p.text, p.tokens, p.tokens_count);
            r->n_partials++;
            wire_msg_free (&wire_generate_partial_desc, &p);
            zmsg_destroy (&body);
            continue;
        }
        wire_generate_final_t fin;
        cr_assert_eq (wire_decode_frame (&wire_generate_final_desc, f, &fin, &err), 0, "%s", err.text);
        s_append (r, fin.text, fin.tokens, fin.tokens_count);
        snprintf (r->final_text, sizeof r->final_text, "%s", fin.text);
        r->finish = fin.finish_reason;
        cr_assert_not_null (fin.stats);
        r->stats = *fin.stats;
        cr_assert (fin.stats->accept_by_pos_count <= 64);
        memcpy (r->by_pos, fin.stats->accept_by_pos, fin.stats->accept_by_pos_count * sizeof (uint64_t));
        r->stats.accept_by_pos = r->by_pos;
        wire_msg_free (&wire_generate_final_desc, &fin);
        zmsg_destroy (&body);
        break;
    }
}

//  Sends a generate request body; returns the client to collect from.
static mdp_client_t *
s_send (const void *data, size_t size)
{
    mdp_client_t *client = mdp_client_new (s_ep);
    cr_assert_not_null (client);
    cr_assert_eq (mdp_client_send_mem (client, "generate", data, size), 0);
    return client;
}

static void
s_generate_raw (const void *data, size_t size, s_result_t *r, int timeout_ms)
{
    mdp_client_t *client = s_send (data, size);
    s_collect (client, r, timeout_ms);
    mdp_client_destroy (&client);
}

static void
s_generate (const wire_generate_t *req, s_result_t *r)
{
    uint8_t *data = NULL;
    size_t size = 0;
    wire_err_t err;
    cr_assert_eq (wire_encode (&wire_generate_desc, req, &data, &size, &err), 0, "%s", err.text);
    s_generate_raw (data, size, r, 60000);
    free (data);
}

static wire_generate_t
s_req (const char *prompt, int max_tokens, int k)
{
    wire_generate_t req;
    wire_msg_init (&wire_generate_desc, &req);
    req.prompt = (char *) prompt;
    req.max_tokens = (uint32_t) max_tokens;
    req.draft_k = (uint32_t) k;
    return req;
}

//  Target-only greedy decoding of prompt, in this process (the loop of
//  `splitmesh run`). Returns the tokens generated before an end-of-
//  generation token, at most n.
static int
s_reference (const char *model_path, qfmt_t fmt, const char *prompt, int n, int32_t *out)
{
    model_options_t mo = model_options_default ();
    mo.format = fmt;
    char err [256];
    model_t *m = model_load (model_path, &mo, err, sizeof err);
    cr_assert_not_null (m, "%s", err);
    tokenizer_t *tok = tokenizer_new_from_gguf (model_gguf (m), err, sizeof err);
    cr_assert_not_null (tok, "%s", err);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    cr_assert_eq (tokenizer_encode (tok, prompt, strlen (prompt), true, true, &ids, &n_ids, err, sizeof err), 0);
    const model_config_t *c = model_config (m);
    kvcache_t *kv = kvcache_new (m, (int) n_ids + n + 1);
    float *x = malloc (n_ids * c->dim * sizeof *x);
    float *logits = malloc ((size_t) c->vocab_size * sizeof *logits);
    sampler_params_t sp = sampler_params_default ();
    sampler_t *s = sampler_new (&sp, c->vocab_size);
    cr_assert_eq (model_embed (m, ids, (int) n_ids, x), 0);
    cr_assert_eq (model_forward (m, kv, 0, c->n_layers, 0, (int) n_ids, x), 0);
    cr_assert_eq (model_head (m, x + (n_ids - 1) * c->dim, 1, logits), 0);
    int got = 0;
    for (int i = 0; i < n; i++) {
        int32_t t = sampler_sample (s, logits);
        if (tokenizer_is_eog (tok, t))
            break;
        out [got++] = t;
        cr_assert_eq (model_embed (m, &t, 1, x), 0);
        cr_assert_eq (model_forward (m, kv, 0, c->n_layers, (int) n_ids + i, 1, x), 0);
        cr_assert_eq (model_head (m, x, 1, logits), 0);
    }
    free (ids);
    free (x);
    free (logits);
    sampler_destroy (&s);
    kvcache_destroy (&kv);
    tokenizer_destroy (&tok);
    model_destroy (&m);
    return got;
}

static void
s_assert_tokens (const s_result_t *r, const int32_t *want, int n_want, const char *what)
{
    cr_assert_eq (r->status, 0, "%s: error %d %s", what, r->status, r->error);
    int n = r->n_tokens < n_want ? r->n_tokens : n_want;
    for (int i = 0; i < n; i++)
        cr_assert_eq (r->tokens [i], want [i], "%s: token %d is %d, reference %d",
                      what, i, r->tokens [i], want [i]);
    cr_assert_eq (r->n_tokens, n_want, "%s: %d tokens, reference %d", what, r->n_tokens, n_want);
}

//  Stats that must add up whatever the drafts were.
static void
s_assert_stats (const s_result_t *r, const char *what)
{
    const wire_gen_stats_t *st = &r->stats;
    cr_assert_eq (st->tokens, (uint32_t) r->n_tokens, "%s: stats.tokens %u, got %d", what, st->tokens, r->n_tokens);
    cr_assert (st->prompt_tokens > 0, "%s", what);
    cr_assert (st->drafts_accepted <= st->drafts_proposed, "%s", what);
    uint64_t sum = 0;
    for (size_t i = 0; i < st->accept_by_pos_count; i++) {
        sum += st->accept_by_pos [i];
        if (i > 0)
            cr_assert (st->accept_by_pos [i] <= st->accept_by_pos [i - 1],
                       "%s: position %zu accepted more often than %zu", what, i, i - 1);
    }
    cr_assert_eq (sum, st->drafts_accepted, "%s: accept_by_pos sums to %llu, accepted %llu",
                  what, (unsigned long long) sum, (unsigned long long) st->drafts_accepted);
    if (r->n_tokens > 0)
        cr_assert (st->ttft_ms > 0, "%s", what);
}

static const char *s_prompts [] = {
    "The quick brown fox",
    "Once upon a time, in a land far away,",
    "1, 2, 3, 4, 5,"
};

static void
s_greedy_matrix (int L)
{
    s_tiny ();
    const char *extra [] = { "--fixed-k", NULL };
    s_mesh (s_model, L, extra);
    for (int p = 0; p < 3; p++) {
        int32_t want [S_MAX_OUT];
        int n_want = s_reference (s_model, QFMT_W8, s_prompts [p], 40, want);
        int ks [] = { 1, 4, 8 };
        for (int i = 0; i < 3; i++) {
            wire_generate_t req = s_req (s_prompts [p], 40, ks [i]);
            s_result_t *r = calloc (1, sizeof *r);
            s_generate (&req, r);
            char what [128];
            snprintf (what, sizeof what, "L=%d k=%d prompt %d", L, ks [i], p);
            s_assert_tokens (r, want, n_want, what);
            s_assert_stats (r, what);
            cr_log_info ("%s: %d tokens, %llu/%llu drafts accepted, %llu B up, %llu B down", what,
                         r->n_tokens, (unsigned long long) r->stats.drafts_accepted,
                         (unsigned long long) r->stats.drafts_proposed,
                         (unsigned long long) r->stats.link_bytes_up,
                         (unsigned long long) r->stats.link_bytes_down);
            cr_assert (r->stats.drafts_proposed > 0, "%s: nothing drafted", what);
            cr_assert (r->stats.accept_by_pos_count <= (size_t) ks [i], "%s", what);
            cr_assert_eq (r->finish, n_want == 40 ? WIRE_FINISH_REASON_LENGTH : WIRE_FINISH_REASON_STOP, "%s", what);
            free (r);
        }
    }
}

TestSuite (edge, .fini = s_fini, .timeout = 150);

Test (edge, greedy_equals_target_only_split1)
{
    s_greedy_matrix (1);
}

Test (edge, greedy_equals_target_only_split2)
{
    s_greedy_matrix (2);
}

Test (edge, streaming_adaptive_ngram_privacy_none_and_modes)
{
    s_tiny ();
    s_mesh (s_model, 2, NULL);
    const char *prompt = s_prompts [1];
    int32_t want [S_MAX_OUT], want_w4 [S_MAX_OUT];
    int n_want = s_reference (s_model, QFMT_W8, prompt, 48, want);
    int n_w4 = s_reference (s_model, QFMT_W4, prompt, 48, want_w4);
    s_result_t *r = calloc (1, sizeof *r), *s = calloc (1, sizeof *s);

    //  Adaptive k (no --fixed-k), not streamed.
    wire_generate_t req = s_req (prompt, 48, 4);
    s_generate (&req, r);
    s_assert_tokens (r, want, n_want, "adaptive");
    s_assert_stats (r, "adaptive");
    cr_assert_eq (r->n_partials, 0);

    //  Streamed: PARTIALs + FINAL concatenate to the same text and tokens.
    req.stream = true;
    s_generate (&req, s);
    s_assert_tokens (s, want, n_want, "streamed");
    cr_assert (s->n_partials >= 2, "only %d partials", s->n_partials);
    cr_assert_str_eq (s->text, r->text);
    cr_assert_str_eq (r->final_text, r->text);

    //  n-gram drafter.
    req = s_req (prompt, 48, 4);
    req.drafter = WIRE_DRAFTER_NGRAM;
    s_generate (&req, r);
    s_assert_tokens (r, want, n_want, "ngram");
    s_assert_stats (r, "ngram");

    //  Privacy none: tokens to the cloud, no split-prefix.
    req = s_req (prompt, 48, 4);
    req.privacy = WIRE_PRIVACY_NONE;
    s_generate (&req, r);
    s_assert_tokens (r, want, n_want, "privacy none");
    s_assert_stats (r, "privacy none");

    //  cloud_only: one verify per token, no drafts.
    req = s_req (prompt, 48, 4);
    req.mode = WIRE_MODE_CLOUD_ONLY;
    s_generate (&req, r);
    s_assert_tokens (r, want, n_want, "cloud_only");
    s_assert_stats (r, "cloud_only");
    cr_assert_eq (r->stats.drafts_proposed, 0);
    cr_assert (r->stats.link_bytes_up > 0 && r->stats.link_bytes_down > 0);
    uint64_t cloud_only_down = r->stats.link_bytes_down;

    //  draft_k 0 (no speculation, privacy prefix) and max_tokens 1.
    req = s_req (prompt, 48, 0);
    s_generate (&req, r);
    s_assert_tokens (r, want, n_want, "draft_k 0");
    cr_assert_eq (r->stats.drafts_proposed, 0);
    req = s_req (prompt, 1, 4);
    s_generate (&req, r);
    s_assert_tokens (r, want, n_want < 1 ? n_want : 1, "max_tokens 1");
    cr_assert_eq (r->finish, n_want >= 1 ? WIRE_FINISH_REASON_LENGTH : WIRE_FINISH_REASON_STOP);

    //  edge_only: the W4 draft model alone, no link.
    req = s_req (prompt, 48, 4);
    req.mode = WIRE_MODE_EDGE_ONLY;
    s_generate (&req, r);
    s_assert_tokens (r, want_w4, n_w4, "edge_only");
    cr_assert_eq (r->stats.link_bytes_up, 0);
    cr_assert_eq (r->stats.drafts_proposed, 0);

    //  Speculation needs fewer round trips than cloud_only: less down-link.
    req = s_req (prompt, 48, 4);
    s_generate (&req, r);
    if (r->stats.drafts_accepted > 8)
        cr_assert (r->stats.link_bytes_down < cloud_only_down,
                   "speculative down %llu >= cloud_only %llu",
                   (unsigned long long) r->stats.link_bytes_down, (unsigned long long) cloud_only_down);
    free (r);
    free (s);
}

Test (edge, sampling_is_seeded_and_stop_strings_cut)
{
    s_tiny ();
    s_mesh (s_model, 1, NULL);
    s_result_t *a = calloc (1, sizeof *a), *b = calloc (1, sizeof *b);
    wire_generate_t req = s_req (s_prompts [0], 32, 4);
    req.temperature = 0.9;
    req.top_k = 40;
    req.top_p = 0.95;
    req.seed = 1234;
    req.has_seed = true;
    s_generate (&req, a);
    s_generate (&req, b);
    cr_assert_eq (a->status, 0, "%s", a->error);
    s_assert_stats (a, "sampling");
    cr_assert_eq (a->n_tokens, b->n_tokens);
    cr_assert_str_eq (a->text, b->text, "same seed, different output");
    for (int i = 0; i < a->n_tokens; i++)
        cr_assert_eq (a->tokens [i], b->tokens [i]);
    //  n-gram drafts at temperature > 0 (point-mass q), also reproducible.
    req.drafter = WIRE_DRAFTER_NGRAM;
    s_generate (&req, a);
    s_generate (&req, b);
    cr_assert_eq (a->status, 0, "%s", a->error);
    s_assert_stats (a, "ngram sampling");
    cr_assert_str_eq (a->text, b->text);
    //  A stop string taken from the greedy output ends the text before it.
    wire_generate_t g = s_req (s_prompts [1], 40, 4);
    s_generate (&g, a);
    cr_assert_eq (a->status, 0, "%s", a->error);
    size_t len = strlen (a->text);
    if (len >= 8) {
        //  Two whole characters from the middle of the text.
        size_t from = len / 2, to;
        while (from < len && ((unsigned char) a->text [from] & 0xC0) == 0x80)
            from++;
        to = from;
        for (int c = 0; c < 2 && to < len; c++) {
            to++;
            while (to < len && ((unsigned char) a->text [to] & 0xC0) == 0x80)
                to++;
        }
        char stop [16] = "";
        if (to - from < sizeof stop)
            memcpy (stop, a->text + from, to - from);
        cr_assert (stop [0]);
        char *stops [] = { stop };
        g.stop = stops;
        g.stop_count = 1;
        g.stream = true;
        s_generate (&g, b);
        cr_assert_eq (b->status, 0, "%s", b->error);
        cr_assert_eq (b->finish, WIRE_FINISH_REASON_STOP);
        char *hit = strstr (a->text, stop);
        cr_assert_not_null (hit);
        cr_assert_eq (strlen (b->text), (size_t) (hit - a->text), "stop '%s': '%s' vs '%s'", stop, b->text, a->text);
        cr_assert (strncmp (b->text, a->text, strlen (b->text)) == 0);
        cr_assert_null (strstr (b->text, stop));
    }
    free (a);
    free (b);
}

Test (edge, bad_requests_get_clear_errors_and_service_keeps_serving)
{
    s_tiny ();
    const char *extra [] = { "--ctx", "64", NULL };
    s_mesh (s_model, 1, extra);
    s_result_t *r = calloc (1, sizeof *r);
    wire_generate_t req = s_req ("", 8, 4);
    s_generate (&req, r);
    cr_assert_eq (r->status, 422, "empty prompt: %d %s", r->status, r->error);
    cr_assert (strstr (r->error, "prompt"), "%s", r->error);

    //  max_tokens 0 and above the limit: the codec's bounds (hand-encoded,
    //  since our encoder refuses them).
    static const char b0 [] = "\x83\xa1v\x01\xa6prompt\xa2hi\xaamax_tokens\x00";
    static const char b1 [] = "\x83\xa1v\x01\xa6prompt\xa2hi\xaamax_tokens\xcd\x27\x10";  //  10000
    static const char b2 [] = "\x92\x01\x02";                                                //  not a map
    const char *bodies [] = { b0, b1, b2 };
    size_t sizes [] = { sizeof b0 - 1, sizeof b1 - 1, sizeof b2 - 1 };
    const char *fields [] = { "max_tokens", "max_tokens", NULL };
    int statuses [] = { 422, 422, 400 };
    for (int i = 0; i < 3; i++) {
        s_generate_raw (bodies [i], sizes [i], r, 20000);
        cr_assert_eq (r->status, statuses [i], "body %d: %d %s", i, r->status, r->error);
        if (fields [i])
            cr_assert (strstr (r->error, fields [i]), "%s", r->error);
    }
    //  Prompt longer than the context (--ctx 64).
    char longp [2000] = "";
    for (int i = 0; i < 100; i++)
        strcat (longp, "fox jumps ");
    req = s_req (longp, 8, 4);
    s_generate (&req, r);
    cr_assert_eq (r->status, 413, "long prompt: %d %s", r->status, r->error);
    cr_assert (strstr (r->error, "context"), "%s", r->error);
    //  Unknown model name: 404; the served one (file name) is fine.
    req = s_req ("hello", 4, 4);
    req.model = "gpt-17";
    s_generate (&req, r);
    cr_assert_eq (r->status, 404, "%d %s", r->status, r->error);
    cr_assert (strstr (r->error, "unknown model 'gpt-17'"), "%s", r->error);
    req.model = "tiny";
    s_generate (&req, r);
    cr_assert_eq (r->status, 0, "%d %s", r->status, r->error);
    req.model = "tiny.gguf";
    s_generate (&req, r);
    cr_assert_eq (r->status, 0, "%d %s", r->status, r->error);
    //  Privacy full is served (the edge verifies; tests/test_privacy_full.c
    //  checks what the cloud sees).
    req = s_req ("hello", 8, 4);
    req.privacy = WIRE_PRIVACY_FULL;
    s_generate (&req, r);
    cr_assert_eq (r->status, 0, "%d %s", r->status, r->error);
    //  And the service still serves, up to the context limit.
    req = s_req ("hello", 200, 4);
    s_generate (&req, r);
    cr_assert_eq (r->status, 0, "%d %s", r->status, r->error);
    s_assert_stats (r, "after errors");
    cr_assert (r->stats.prompt_tokens + r->n_tokens <= 65);
    free (r);
}

Test (edge, chat_messages_through_the_tokenizer_service)
{
    s_tiny ();
    s_mesh (s_model, 2, NULL);
    wire_chat_message_t msgs [] = {
        { WIRE_ROLE_SYSTEM, "Be brief." }, { WIRE_ROLE_USER, "Hi there" }
    };
    wire_generate_t req;
    wire_msg_init (&wire_generate_desc, &req);
    req.messages = msgs;
    req.messages_count = 2;
    req.max_tokens = 16;
    s_result_t *r = calloc (1, sizeof *r);
    s_generate (&req, r);
    //  The reference: the same ChatML text as a raw prompt.
    const char *chat = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                       "<|im_start|>assistant\n";
    int32_t want [S_MAX_OUT];
    int n_want = s_reference (s_model, QFMT_W8, chat, 16, want);
    s_assert_tokens (r, want, n_want, "chat");
    free (r);
}

//  Sessions evicted under the services' feet (--max-sessions 1, two
//  generations at once): every 404 is answered by a re-prefill from the
//  kept context, and both outputs still equal target-only greedy decoding.
Test (edge, evicted_sessions_are_reprefilled)
{
    s_tiny ();
    const char *extra [] = { "--fixed-k", "-v", NULL };
    //  A 10 ms link RTT makes each generation last many round trips, so
    //  the two overlap whatever the machine's load.
    s_mesh_opts_t o = { .edge_extra = extra, .max_sessions = "1", .separate_cloud = true, .link = "rtt=10" };
    s_mesh_ex (s_model, 2, &o);
    const char *prompts [2] = { s_prompts [0], s_prompts [2] };
    int32_t want [2][S_MAX_OUT];
    int n_want [2];
    uint8_t *data [2];
    size_t size [2];
    for (int i = 0; i < 2; i++) {
        n_want [i] = s_reference (s_model, QFMT_W8, prompts [i], 64, want [i]);
        wire_generate_t req = s_req (prompts [i], 64, 2);
        wire_err_t err;
        cr_assert_eq (wire_encode (&wire_generate_desc, &req, &data [i], &size [i], &err), 0);
    }
    mdp_client_t *c0 = s_send (data [0], size [0]);
    mdp_client_t *c1 = s_send (data [1], size [1]);
    s_result_t *r = calloc (2, sizeof *r);
    s_collect (c0, &r [0], 60000);
    s_collect (c1, &r [1], 60000);
    s_assert_tokens (&r [0], want [0], n_want [0], "first of two");
    s_assert_tokens (&r [1], want [1], n_want [1], "second of two");
    //  The edge log shows the recoveries (interleaving decides how many).
    char path [500], line [1024];
    s_log_path (path, sizeof path, "edge");
    FILE *f = fopen (path, "r");
    int reprefills = 0;
    while (f && fgets (line, sizeof line, f))
        if (strstr (line, "re-prefilling"))
            reprefills++;
    if (f)
        fclose (f);
    cr_log_info ("re-prefills: %d", reprefills);
    cr_assert (reprefills > 0, "the two generations never evicted each other (logs in %s)", s_dir);
    mdp_client_destroy (&c0);
    mdp_client_destroy (&c1);
    free (data [0]);
    free (data [1]);
    free (r);
}

//  The cloud on its own broker behind the in-process link emulator: the
//  output is unchanged and every round trip pays the emulated RTT.
Test (edge, cloud_behind_link_emulator)
{
    s_tiny ();
    const char *extra [] = { "-v", NULL };
    s_mesh_opts_t o = { .edge_extra = extra, .separate_cloud = true, .link = "rtt=40" };
    s_mesh_ex (s_model, 1, &o);
    int32_t want [S_MAX_OUT];
    int n_want = s_reference (s_model, QFMT_W8, s_prompts [1], 24, want);
    s_result_t *r = calloc (1, sizeof *r);
    wire_generate_t req = s_req (s_prompts [1], 24, 4);
    s_generate (&req, r);
    s_assert_tokens (r, want, n_want, "through the link");
    s_assert_stats (r, "through the link");
    //  Prefill is one round trip: at least 40 ms to the first token.
    cr_assert (r->stats.ttft_ms >= 40.0, "ttft %.1f ms under a 40 ms RTT", r->stats.ttft_ms);
    cr_assert (r->stats.link_bytes_up > 0);
    //  Greedy lookahead drafted during the 40 ms round trips and some of
    //  those drafts were used (the output above is unchanged by them).
    //  edge-draft logs the session's summary just after sending the FINAL:
    //  wait (bounded) for that line.
    char path [500], line [1024];
    s_log_path (path, sizeof path, "edge");
    FILE *f = NULL;
    int used = -1;
    for (int tries = 0; tries < 50 && used < 0; tries++) {
        if (tries)
            usleep (100 * 1000);
        f = fopen (path, "r");
        while (f && fgets (line, sizeof line, f)) {
            char *hit = strstr (line, "drafts accepted (");
            if (hit)
                used = atoi (hit + strlen ("drafts accepted ("));
        }
        if (f)
            fclose (f);
    }
    cr_assert (used > 0, "no lookahead draft was used (logs in %s)", s_dir);
    //  Pipelined verifies: some rounds' verifies went out while the
    //  previous verify travelled, and their answers were used (the output
    //  above equals the reference all the same).
    f = fopen (path, "r");
    int early = -1, early_void = -1;
    while (f && fgets (line, sizeof line, f)) {
        char *hit = strstr (line, "; ");
        int sent = 0, nvoid = 0;
        if (hit && strstr (line, "verifies sent a round early")
        &&  sscanf (hit, "; %d verifies sent a round early, %d of them void", &sent, &nvoid) == 2) {
            early = sent - nvoid;
            early_void = nvoid;
        }
    }
    if (f)
        fclose (f);
    cr_log_info ("verifies sent a round early and used: %d (void: %d)", early, early_void);
    cr_assert (early > 0, "no verify sent a round early was used (logs in %s)", s_dir);
    //  cloud_only: one round trip per token.
    req.mode = WIRE_MODE_CLOUD_ONLY;
    s_generate (&req, r);
    s_assert_tokens (r, want, n_want, "cloud_only through the link");
    if (r->n_tokens > 2)
        cr_assert (r->stats.per_token_ms >= 40.0, "cloud_only %.1f ms per token under a 40 ms RTT",
                   r->stats.per_token_ms);
    free (r);
}

//  The real model (skipped when absent): the mesh at split 2 prints what
//  `splitmesh run --format w8` prints, and the W4 draft of the same file
//  gets most of its drafts accepted.
Test (edge, real_model_short_check, .timeout = 180)
{
    const char *model = getenv ("SPLITMESH_MODEL");
    static char def [600];
    if (!model || access (model, R_OK) != 0) {
        snprintf (def, sizeof def, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", SPLITMESH_SOURCE_DIR);
        model = def;
    }
    if (access (model, R_OK) != 0) {
        cr_skip_test ("model file %s absent (bash scripts/fetch-model.sh, or SPLITMESH_MODEL)", model);
        return;
    }
    if (!s_dir)
        s_dir = sm_tmpdir_new ("splitmesh_edge");
    const char *prompt = "The capital of France is";
    char out_path [500], cmd [2000];
    snprintf (out_path, sizeof out_path, "%s/run.out", s_dir);
    snprintf (cmd, sizeof cmd,
              "timeout 120 '%s/splitmesh' run --model '%s' --format w8 --threads 1 -n 24 -p '%s' >'%s' 2>/dev/null",
              sm_bin_dir (), model, prompt, out_path);
    cr_assert_eq (system (cmd), 0, "%s", cmd);
    char run_text [4096] = "";
    FILE *f = fopen (out_path, "rb");
    cr_assert_not_null (f);
    size_t n = fread (run_text, 1, sizeof run_text - 1, f);
    fclose (f);
    run_text [n] = 0;
    if (n && run_text [n - 1] == '\n')
        run_text [n - 1] = 0;

    s_mesh (model, 2, NULL);
    s_result_t *r = calloc (1, sizeof *r);
    wire_generate_t req = s_req (prompt, 24, 4);
    s_generate (&req, r);
    cr_assert_eq (r->status, 0, "%d %s", r->status, r->error);
    s_assert_stats (r, "real model");
    cr_assert_str_eq (r->text, run_text, "mesh: '%s'\nrun:  '%s'", r->text, run_text);
    cr_log_info ("real model: %d tokens, %llu/%llu drafts accepted, ttft %.1f ms, %.1f ms/token, "
                 "%llu B up, %llu B down", r->n_tokens,
                 (unsigned long long) r->stats.drafts_accepted, (unsigned long long) r->stats.drafts_proposed,
                 r->stats.ttft_ms, r->stats.per_token_ms,
                 (unsigned long long) r->stats.link_bytes_up, (unsigned long long) r->stats.link_bytes_down);
    cr_assert (r->stats.drafts_accepted * 2 >= r->stats.drafts_proposed,
               "W4 draft of the target's own file: only %llu of %llu accepted",
               (unsigned long long) r->stats.drafts_accepted, (unsigned long long) r->stats.drafts_proposed);
    free (r);
}

//  No cloud-target at all (the cloud is unreachable): the generation
//  completes with the draft model alone and says so; with --drafter ngram
//  (no draft model) it is a clear 503 instead. The service keeps serving.
Test (edge, unreachable_cloud_degrades_to_edge_only)
{
    s_tiny ();
    s_mesh_opts_t o = { .no_target = true, .expiry_ms = "300" };
    s_mesh_ex (s_model, 1, &o);
    int32_t want_w4 [S_MAX_OUT];
    int n_w4 = s_reference (s_model, QFMT_W4, s_prompts [2], 20, want_w4);
    s_result_t *r = calloc (1, sizeof *r);
    wire_generate_t req = s_req (s_prompts [2], 20, 4);
    s_generate (&req, r);
    s_assert_tokens (r, want_w4, n_w4, "degraded");
    cr_assert (r->stats.degraded);
    s_generate (&req, r);
    cr_assert_eq (r->status, 0, "%s", r->error);
    cr_assert (r->stats.degraded);
    free (r);
}

Test (edge, unreachable_cloud_without_draft_model_is_an_error)
{
    s_tiny ();
    const char *extra [] = { "--drafter", "ngram", NULL };
    s_mesh_opts_t o = { .edge_extra = extra, .no_target = true, .expiry_ms = "300" };
    s_mesh_ex (s_model, 1, &o);
    s_result_t *r = calloc (1, sizeof *r);
    wire_generate_t req = s_req (s_prompts [2], 20, 4);
    s_generate (&req, r);
    cr_assert (r->status == 503 || r->status == 504, "%d %s", r->status, r->error);
    cr_assert (strstr (r->error, "target"), "%s", r->error);
    //  edge_only needs the draft model this edge-draft does not have.
    req.mode = WIRE_MODE_EDGE_ONLY;
    s_generate (&req, r);
    cr_assert_eq (r->status, 422, "%d %s", r->status, r->error);
    free (r);
}

//  The process: --help, bad options and unloadable models are reported on
//  stderr with a non-zero exit, never a hang.
Test (edge, process_options)
{
    s_tiny ();
    char cmd [1500], out [500];
    snprintf (out, sizeof out, "%s/opts.log", s_dir);
    struct { const char *args; int rc; const char *says; } cases [] = {
        { "--help", 0, "usage: splitmesh-edge-draft" },
        { "--bogus", 2, "usage" },
        { "--broker ipc:///tmp/x --model /nonexistent.gguf", 1, "/nonexistent.gguf" },
        { "--broker ipc:///tmp/x --drafter magic", 1, "--drafter must be model or ngram" },
        { "--broker ipc:///tmp/x --draft-format w3", 1, "--draft-format" },
        { "--broker ipc:///tmp/x --link rtt=abc", 1, "--link" },
        { "--model x.gguf", 1, "no broker" },
        { "--broker ipc:///tmp/x --drafter ngram --telemetry bogus://x", 1, "--telemetry" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        bool with_model = !strstr (cases [i].args, "--model");
        snprintf (cmd, sizeof cmd, "timeout 30 '%s/splitmesh-edge-draft' %s %s%s >'%s' 2>&1",
                  sm_bin_dir (), cases [i].args, with_model ? "--model " : "",
                  with_model ? s_model : "", out);
        int rc = system (cmd);
        rc = WIFEXITED (rc) ? WEXITSTATUS (rc) : -1;
        char text [4096] = "";
        FILE *f = fopen (out, "r");
        if (f) {
            size_t n = fread (text, 1, sizeof text - 1, f);
            text [n] = 0;
            fclose (f);
        }
        cr_assert_eq (rc, cases [i].rc, "'%s': exit %d, want %d: %s", cases [i].args, rc, cases [i].rc, text);
        cr_assert (strstr (text, cases [i].says), "'%s' does not say '%s': %s", cases [i].args, cases [i].says, text);
    }
}

//  With --telemetry, the generation's numbers reach splitmesh-telemetry
//  (docs/metrics.md's edge-draft rows) and equal the FINAL's statistics.
static sm_telemetry_mesh_t s_tel;

static void
s_tel_fini (void)
{
    sm_proc_kill_all ();
    sm_telemetry_mesh_stop (&s_tel);
    s_fini ();
}

Test (edge, metrics_reach_telemetry, .fini = s_tel_fini)
{
    s_tiny ();
    memset (&s_tel, 0, sizeof s_tel);
    cr_assert_eq (sm_telemetry_mesh_start (&s_tel, "splitmesh_edge_tel", 0, 0), 0);
    const char *extra [] = { "--instance", "edge-1", NULL };
    s_mesh_opts_t o = { .edge_extra = extra, .broker = s_tel.mdp, .telemetry = s_tel.xsub };
    s_mesh_ex (s_model, 1, &o);
    s_result_t *r = calloc (1, sizeof *r);
    wire_generate_t req = s_req (s_prompts [1], 24, 4);
    s_generate (&req, r);
    cr_assert_eq (r->status, 0, "%s", r->error);
    cr_assert (r->n_tokens > 0);
    req = s_req ("", 4, 4);
    s_result_t *bad = calloc (1, sizeof *bad);
    s_generate (&req, bad);
    cr_assert_eq (bad->status, 422);
    #define S_LABELS "{service=\"edge-draft\",instance=\"edge-1\""
    double last = 0;
    cr_assert (sm_telemetry_wait_sample (s_tel.http_port, "splitmesh_tokens_generated_total" S_LABELS "}",
               r->n_tokens, 10000, &last), "tokens: %g, FINAL says %d", last, r->n_tokens);
    cr_assert (sm_telemetry_wait_sample (s_tel.http_port, "splitmesh_prompt_tokens_total" S_LABELS "}",
               r->stats.prompt_tokens, 5000, &last), "prompt tokens: %g", last);
    cr_assert (sm_telemetry_wait_sample (s_tel.http_port, "splitmesh_requests_total" S_LABELS ",status=\"200\"}",
               1, 5000, &last), "requests 200: %g", last);
    cr_assert (sm_telemetry_wait_sample (s_tel.http_port, "splitmesh_errors_total" S_LABELS ",status=\"422\"}",
               1, 5000, &last), "errors 422: %g", last);
    cr_assert (sm_telemetry_wait_sample (s_tel.http_port, "splitmesh_link_bytes_total" S_LABELS ",direction=\"up\"}",
               (double) r->stats.link_bytes_up, 5000, &last), "link up: %g, FINAL %llu",
               last, (unsigned long long) r->stats.link_bytes_up);
    if (r->stats.accept_by_pos_count > 0 && r->stats.accept_by_pos [0] > 0)
        cr_assert (sm_telemetry_wait_sample (s_tel.http_port,
                   "splitmesh_drafts_accepted_total" S_LABELS ",pos=\"0\"}",
                   (double) r->stats.accept_by_pos [0], 5000, &last), "accepted at 0: %g", last);
    #undef S_LABELS
    free (r);
    free (bad);
}
