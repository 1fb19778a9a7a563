/*  test_gpu_batcher.c: continuous batching in the cloud-target service
    (services/cloud-target/batcher.c), proven on the CPU backend so CI runs
    it (the CUDA backend shares the gathering code and adds one
    gpu_forward_batch per batch; bench/gpu/device.sh measures that on the
    H100).

    The fixture writes a 4-layer tiny model, starts splitmesh-broker and
    splitmesh-cloud-target (--split 2, f32, -v so each batch is logged)
    with a 300 ms batch wait and capacity 16, so requests sent together are
    gathered into one batch. Checked:
    - gathering: 8 prefills of 8 sessions sent at once are served as one
      batch of 8 (the service's log says so), and each reply equals the
      reply of the same request sent alone to a fresh session;
    - verify in a batch: 8 concurrent verifies with drafts give the same
      accepted counts and next tokens as one at a time;
    - out-of-order replies and error isolation: a bad request (unknown
      session, a token outside the vocabulary, a position gap) sent in the
      middle of a batch is answered first (at admission, before the batch
      it arrived with is computed), and its batch mates all succeed;
    - one session's requests stay in order: a prefill and the verify that
      follows it, sent back to back, land in consecutive batches and the
      verify sees the prefill's positions.
    These run with the fixed wait (SPLITMESH_BATCH_ADAPTIVE=0), so what is
    gathered does not depend on arrival timing. The suite gpu_batcher_adaptive
    runs the default adaptive wait (1 s wait_us, so a wait is unmistakable):
    - a lone session never waits: a prefill and 5 verifies one after another
      take well under one wait in all;
    - two active sessions' concurrent verifies are one batch of 2, answered
      without the full wait; a request of one while the other is due waits
      for it (~wait_us); after the other closes, no wait again.
*/
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "activations.h"
#include "codec.h"
#include "mdp_client.h"
#include "mdp_common.h"
#include "sm_mdp.h"
#include "sm_proc.h"

#define S_N 8
#define S_DIM 64
#define S_TIMEOUT 15000

static char *s_dir;
static char s_model [512];
static char s_broker [64];
static char s_target_log [600];

static void
s_start (bool adaptive)
{
    s_dir = sm_tmpdir_new ("batch");
    cr_assert_not_null (s_dir);
    snprintf (s_model, sizeof s_model, "%s/tiny.gguf", s_dir);
    char log [600];
    snprintf (log, sizeof log, "%s/tiny-model.log", s_dir);
    pid_t pid = sm_spawn (log, "splitmesh", "tiny-model", "--out", s_model, "--layers", "4",
                          "--dim", "64", "--ctx", "256", "--seed", "11", NULL);
    int status = -1;
    cr_assert_eq (sm_wait (pid, 30000, &status), 0);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "tiny-model failed (see %s)", log);
    snprintf (s_broker, sizeof s_broker, "tcp://127.0.0.1:%d", sm_free_tcp_port ());
    snprintf (log, sizeof log, "%s/broker.log", s_dir);
    cr_assert_gt (sm_spawn (log, "splitmesh-broker", "-e", s_broker, NULL), 0);
    setenv ("SPLITMESH_BATCH_WAIT_US", adaptive? "1000000": "300000", 1);
    setenv ("SPLITMESH_BATCH_ADAPTIVE", adaptive? "1": "0", 1);
    setenv ("SPLITMESH_BATCH_ACTIVE_US", "30000000", 1);
    setenv ("SPLITMESH_BATCH_CAPACITY", "16", 1);
    setenv ("SPLITMESH_TARGET_BACKEND", "cpu", 1);
    snprintf (s_target_log, sizeof s_target_log, "%s/target.log", s_dir);
    cr_assert_gt (sm_spawn (s_target_log, "splitmesh-cloud-target", "-v", "--broker", s_broker,
                            "--model", s_model, "--split", "2", "--format", "f32", "--ctx", "64",
                            "--max-sessions", "64", "--threads", "1", NULL), 0);
    cr_assert (sm_mdp_wait_workers (s_broker, "target", 1, S_TIMEOUT), "no target worker");
}

static void
s_setup (void)
{
    s_start (false);
}

static void
s_setup_adaptive (void)
{
    s_start (true);
}

static void
s_teardown (void)
{
    sm_proc_kill_all ();
    if (s_dir)
        sm_tmpdir_remove (&s_dir);
}

TestSuite (gpu_batcher, .init = s_setup, .fini = s_teardown, .timeout = 90);

//  n rows of layer-2 activations for request r (deterministic).
static void
s_acts (int r, int n, wire_activations_t *acts)
{
    float x [8 * S_DIM];
    uint64_t s = 1000 + (uint64_t) r;
    for (int i = 0; i < n * S_DIM; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x [i] = (float) ((s >> 11) * (1.0 / 9007199254740992.0) - 0.5) * 2.0f;
    }
    char err [256];
    cr_assert_eq (activations_pack (x, (uint32_t) n, S_DIM, WIRE_DTYPE_FP32, 2, acts, err, sizeof err),
                  0, "%s", err);
}

static zframe_t *
s_prefill_body (const char *session, int r, int n)
{
    wire_activations_t acts;
    s_acts (r, n, &acts);
    wire_prefill_t req;
    wire_msg_init (&wire_prefill_desc, &req);
    req.session = (char *) session;
    req.activations = &acts;
    wire_err_t err = { 0 };
    zframe_t *body = wire_encode_frame (&wire_prefill_desc, &req, &err);
    cr_assert_not_null (body, "%s", err.text);
    wire_msg_free (&wire_activations_desc, &acts);
    return body;
}

static zframe_t *
s_verify_body (const char *session, uint32_t pos, int r, const int32_t *drafts, int k)
{
    wire_activations_t acts;
    s_acts (r, k + 1, &acts);
    wire_verify_t req;
    wire_msg_init (&wire_verify_desc, &req);
    req.session = (char *) session;
    req.pos = pos;
    req.activations = &acts;
    req.draft_tokens = (int32_t *) drafts;
    req.draft_tokens_count = (size_t) k;
    wire_err_t err = { 0 };
    zframe_t *body = wire_encode_frame (&wire_verify_desc, &req, &err);
    cr_assert_not_null (body, "%s", err.text);
    wire_msg_free (&wire_activations_desc, &acts);
    return body;
}

static void
s_send (mdp_client_t *client, zframe_t **body_p)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_append (msg, body_p);
    cr_assert_eq (mdp_client_send (client, "target", &msg), 0);
}

//  The next FINAL's body frame (caller owns it).
static zframe_t *
s_recv (mdp_client_t *client)
{
    int command = 0;
    zmsg_t *msg = mdp_client_recv (client, S_TIMEOUT, &command, NULL);
    cr_assert_not_null (msg, "no reply from the target");
    cr_assert_eq (command, MDPC_FINAL);
    zframe_t *frame = zmsg_pop (msg);
    zmsg_destroy (&msg);
    return frame;
}

//  One request alone: send, wait for its reply.
static zframe_t *
s_call (zframe_t *body)
{
    mdp_client_t *client = mdp_client_new (s_broker);
    s_send (client, &body);
    zframe_t *reply = s_recv (client);
    mdp_client_destroy (&client);
    return reply;
}

static int
s_status (zframe_t *frame, wire_peek_t *peek)
{
    wire_err_t err;
    cr_assert_eq (wire_peek (zframe_data (frame), zframe_size (frame), peek, &err), 0);
    return peek->status? peek->status: 200;
}

//  Sizes of the batches the target logged ("batch of N requests"), in order.
static int
s_batches (int *sizes, int max)
{
    FILE *f = fopen (s_target_log, "r");
    cr_assert_not_null (f);
    char line [1024];
    int n = 0;
    while (fgets (line, sizeof line, f) && n < max) {
        const char *p = strstr (line, "batch of ");
        if (p && strstr (p, " requests in "))
            sizes [n++] = atoi (p + 9);
    }
    fclose (f);
    return n;
}

typedef struct {
    int32_t next;
    uint32_t n_pos, accepted;
} s_result_t;

static void
s_prefill_result (zframe_t *frame, char *session, s_result_t *out)
{
    wire_prefill_reply_t r;
    wire_err_t err = { 0 };
    cr_assert_eq (wire_decode_frame (&wire_prefill_reply_desc, frame, &r, &err), 0, "%s", err.text);
    cr_assert (r.has_next_token);
    snprintf (session, 64, "%s", r.session);
    *out = (s_result_t) { r.next_token, r.n_pos, 0 };
    wire_msg_free (&wire_prefill_reply_desc, &r);
}

static void
s_verify_result (zframe_t *frame, char *session, s_result_t *out)
{
    wire_verify_reply_t r;
    wire_err_t err = { 0 };
    cr_assert_eq (wire_decode_frame (&wire_verify_reply_desc, frame, &r, &err), 0, "%s", err.text);
    cr_assert (r.has_next_token);
    snprintf (session, 64, "%s", r.session);
    *out = (s_result_t) { r.next_token, r.n_pos, r.accepted };
    wire_msg_free (&wire_verify_reply_desc, &r);
}

//  Opens S_N sessions "<prefix><i>" at once (3 rows each, request i's
//  rows) and checks each reply against the same prefill sent alone to
//  "<prefix>alone<i>". Returns the results in *res (by session index).
static void
s_open_batch (const char *prefix, s_result_t *res)
{
    s_result_t alone [S_N];
    char id [64], got [64];
    for (int i = 0; i < S_N; i++) {
        snprintf (id, sizeof id, "%salone%d", prefix, i);
        zframe_t *reply = s_call (s_prefill_body (id, i, 3));
        s_prefill_result (reply, got, &alone [i]);
        zframe_destroy (&reply);
    }
    mdp_client_t *client = mdp_client_new (s_broker);
    for (int i = 0; i < S_N; i++) {
        snprintf (id, sizeof id, "%s%d", prefix, i);
        zframe_t *body = s_prefill_body (id, i, 3);
        s_send (client, &body);
    }
    bool seen [S_N] = { false };
    for (int i = 0; i < S_N; i++) {
        zframe_t *reply = s_recv (client);
        wire_peek_t peek;
        cr_assert_eq (s_status (reply, &peek), 200, "prefill failed in a batch");
        s_result_t r;
        s_prefill_result (reply, got, &r);
        zframe_destroy (&reply);
        int k = atoi (got + strlen (prefix));
        cr_assert (k >= 0 && k < S_N && !seen [k], "unexpected reply for '%s'", got);
        seen [k] = true;
        cr_assert_eq (r.n_pos, 3);
        cr_assert_eq (r.next, alone [k].next, "session %d: %d batched vs %d alone", k, r.next,
                      alone [k].next);
        res [k] = r;
    }
    mdp_client_destroy (&client);
}

Test (gpu_batcher, gathers_concurrent_prefills_into_one_batch)
{
    s_result_t res [S_N];
    int before [64], after [64];
    int n0 = s_batches (before, 64);
    s_open_batch ("g", res);
    int n1 = s_batches (after, 64);
    //  The S_N requests sent alone were batches of 1; the concurrent ones
    //  one batch of S_N.
    cr_assert_eq (n1 - n0, S_N + 1, "%d batches logged", n1 - n0);
    for (int i = n0; i < n1 - 1; i++)
        cr_assert_eq (after [i], 1);
    cr_assert_eq (after [n1 - 1], S_N, "the concurrent prefills ran as a batch of %d", after [n1 - 1]);
}

Test (gpu_batcher, batched_verifies_equal_sequential_ones)
{
    s_result_t open [S_N];
    s_open_batch ("v", open);
    //  The same verifies on the "alone" sessions, one at a time.
    char id [64], got [64];
    s_result_t alone [S_N];
    int32_t drafts [S_N][3];
    for (int i = 0; i < S_N; i++) {
        //  Drafts: the first is the target's own next token (accepted),
        //  then arbitrary ones.
        drafts [i][0] = open [i].next;
        drafts [i][1] = (i * 7) % 200;
        drafts [i][2] = (i * 13) % 200;
        snprintf (id, sizeof id, "valone%d", i);
        zframe_t *reply = s_call (s_verify_body (id, 3, 100 + i, drafts [i], 3));
        s_verify_result (reply, got, &alone [i]);
        zframe_destroy (&reply);
    }
    mdp_client_t *client = mdp_client_new (s_broker);
    for (int i = 0; i < S_N; i++) {
        snprintf (id, sizeof id, "v%d", i);
        zframe_t *body = s_verify_body (id, 3, 100 + i, drafts [i], 3);
        s_send (client, &body);
    }
    for (int i = 0; i < S_N; i++) {
        zframe_t *reply = s_recv (client);
        s_result_t r;
        s_verify_result (reply, got, &r);
        zframe_destroy (&reply);
        int k = atoi (got + 1);
        cr_assert (k >= 0 && k < S_N);
        cr_assert_eq (r.accepted, alone [k].accepted, "session %d accepted %u vs %u alone", k,
                      r.accepted, alone [k].accepted);
        cr_assert_eq (r.next, alone [k].next);
        cr_assert_eq (r.n_pos, alone [k].n_pos);
        cr_assert_eq (r.n_pos, 3 + 1 + r.accepted);
    }
    mdp_client_destroy (&client);
}

Test (gpu_batcher, bad_requests_fail_alone_and_are_answered_first)
{
    s_result_t open [S_N];
    s_open_batch ("e", open);
    mdp_client_t *client = mdp_client_new (s_broker);
    char id [64];
    //  Valid verifies with bad ones among them: an unknown session, a draft
    //  outside the vocabulary, a position gap.
    int32_t bad_token [1] = { 1 << 30 };
    for (int i = 0; i < S_N; i++) {
        snprintf (id, sizeof id, "e%d", i);
        zframe_t *body = s_verify_body (id, 3, 200 + i, NULL, 0);
        s_send (client, &body);
        if (i == 2) {
            body = s_verify_body ("nobody", 0, 0, NULL, 0);
            s_send (client, &body);
        }
        if (i == 4) {
            body = s_verify_body ("ealone0", 3, 0, bad_token, 1);
            s_send (client, &body);
        }
        if (i == 6) {
            body = s_verify_body ("ealone1", 9, 0, NULL, 0);
            s_send (client, &body);
        }
    }
    int errors = 0, ok = 0;
    for (int i = 0; i < S_N + 3; i++) {
        zframe_t *reply = s_recv (client);
        wire_peek_t peek;
        int status = s_status (reply, &peek);
        if (status != 200) {
            //  Every error comes before any batch reply, though each was
            //  sent after some of the batch's requests.
            cr_assert_eq (ok, 0, "error reply %d after %d batch replies", status, ok);
            cr_assert (status == 404 || status == 422, "status %d", status);
            errors++;
        }
        else {
            char got [64];
            s_result_t r;
            s_verify_result (reply, got, &r);
            cr_assert_eq (r.n_pos, 4, "%s: n_pos %u", got, r.n_pos);
            ok++;
        }
        zframe_destroy (&reply);
    }
    cr_assert_eq (errors, 3);
    cr_assert_eq (ok, S_N);
    mdp_client_destroy (&client);
    //  The sessions the bad requests named still serve.
    char got [64];
    s_result_t r;
    zframe_t *reply = s_call (s_verify_body ("ealone0", 3, 7, NULL, 0));
    s_verify_result (reply, got, &r);
    cr_assert_eq (r.n_pos, 4);
    zframe_destroy (&reply);
}

Test (gpu_batcher, one_sessions_requests_stay_in_order)
{
    int before [64], after [64];
    int n0 = s_batches (before, 64);
    mdp_client_t *client = mdp_client_new (s_broker);
    zframe_t *body = s_prefill_body ("ordered", 5, 3);
    s_send (client, &body);
    body = s_verify_body ("ordered", 3, 6, NULL, 0);
    s_send (client, &body);
    body = s_prefill_body ("other", 7, 2);
    s_send (client, &body);
    char got [64];
    s_result_t pre = { 0 }, ver = { 0 }, other = { 0 };
    for (int i = 0; i < 3; i++) {
        zframe_t *reply = s_recv (client);
        wire_peek_t peek;
        cr_assert_eq (s_status (reply, &peek), 200, "a request failed");
        if (streq (peek.tag, "verify_reply"))
            s_verify_result (reply, got, &ver);
        else {
            s_result_t r;
            s_prefill_result (reply, got, &r);
            if (streq (got, "ordered"))
                pre = r;
            else
                other = r;
        }
        zframe_destroy (&reply);
    }
    mdp_client_destroy (&client);
    cr_assert_eq (pre.n_pos, 3);
    cr_assert_eq (other.n_pos, 2);
    cr_assert_eq (ver.n_pos, 4, "the verify ran after its prefill");
    //  Batches: {prefill ordered, prefill other}, then {verify ordered}.
    int n1 = s_batches (after, 64);
    cr_assert_eq (n1 - n0, 2);
    cr_assert_eq (after [n0], 2);
    cr_assert_eq (after [n0 + 1], 1);
}

TestSuite (gpu_batcher_adaptive, .init = s_setup_adaptive, .fini = s_teardown, .timeout = 90);

static double
s_ms (int64_t since)
{
    return (zclock_usecs () - since) / 1000.0;
}

static zframe_t *
s_close_body (const char *session)
{
    wire_session_close_t cl;
    wire_msg_init (&wire_session_close_desc, &cl);
    cl.session = (char *) session;
    wire_err_t err = { 0 };
    zframe_t *body = wire_encode_frame (&wire_session_close_desc, &cl, &err);
    cr_assert_not_null (body, "%s", err.text);
    return body;
}

Test (gpu_batcher_adaptive, lone_session_never_waits)
{
    //  With the fixed 1 s wait these 6 requests would take >= 6 s.
    int64_t t0 = zclock_usecs ();
    char got [64];
    s_result_t r;
    zframe_t *reply = s_call (s_prefill_body ("solo", 1, 3));
    s_prefill_result (reply, got, &r);
    zframe_destroy (&reply);
    for (int i = 0; i < 5; i++) {
        reply = s_call (s_verify_body ("solo", 3 + i, 10 + i, NULL, 0));
        s_verify_result (reply, got, &r);
        zframe_destroy (&reply);
        cr_assert_eq (r.n_pos, (uint32_t) (4 + i));
    }
    double ms = s_ms (t0);
    cr_assert_lt (ms, 3000.0, "6 requests of a lone session took %.0f ms (the wait is 1000 ms)", ms);
}

Test (gpu_batcher_adaptive, active_sessions_batch_and_wait_only_while_due)
{
    char got [64];
    s_result_t r;
    zframe_t *reply = s_call (s_prefill_body ("a", 1, 3));
    s_prefill_result (reply, got, &r);
    zframe_destroy (&reply);
    //  b's prefill arrives while a is active and due: it waits (~1 s).
    int64_t t0 = zclock_usecs ();
    reply = s_call (s_prefill_body ("b", 2, 3));
    s_prefill_result (reply, got, &r);
    zframe_destroy (&reply);
    double waited = s_ms (t0);
    cr_assert_gt (waited, 800.0, "b's prefill did not wait for a (%.0f ms)", waited);
    //  Both active, both sent at once: one batch of 2, no full wait.
    int before [64], after [64];
    int n0 = s_batches (before, 64);
    t0 = zclock_usecs ();
    mdp_client_t *client = mdp_client_new (s_broker);
    zframe_t *body = s_verify_body ("a", 3, 20, NULL, 0);
    s_send (client, &body);
    body = s_verify_body ("b", 3, 21, NULL, 0);
    s_send (client, &body);
    for (int i = 0; i < 2; i++) {
        reply = s_recv (client);
        s_verify_result (reply, got, &r);
        zframe_destroy (&reply);
        cr_assert_eq (r.n_pos, 4);
    }
    mdp_client_destroy (&client);
    double both = s_ms (t0);
    int n1 = s_batches (after, 64);
    cr_assert_eq (n1 - n0, 1, "%d batches for the 2 concurrent verifies", n1 - n0);
    cr_assert_eq (after [n0], 2);
    cr_assert_lt (both, 800.0, "the batch of 2 waited %.0f ms", both);
    //  b closes: a alone no longer waits.
    reply = s_call (s_close_body ("b"));
    wire_peek_t peek;
    cr_assert_eq (s_status (reply, &peek), 200);
    zframe_destroy (&reply);
    t0 = zclock_usecs ();
    reply = s_call (s_verify_body ("a", 4, 22, NULL, 0));
    s_verify_result (reply, got, &r);
    zframe_destroy (&reply);
    double alone = s_ms (t0);
    cr_assert_eq (r.n_pos, 5);
    cr_assert_lt (alone, 800.0, "a waited %.0f ms after b closed", alone);
}
