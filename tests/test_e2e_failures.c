/*  test_e2e_failures.c: the mesh survives a killed replica and answers bad requests.

    Two of issue 4's Shows, on a real mesh (`splitmesh up`) of tiny
    random-weight models (no model download; f32 target, its w4 self as the
    draft, fp32 activations so the in-process greedy reference is exact):

    - kill -9 replica: two cloud-target replicas. A greedy generation runs
      over an emulated 30 ms link; after its first PARTIAL the replica that
      serves the session (the one whose log shows requests: services run
      with -v, one log line per request) is killed with SIGKILL. The
      generation must still complete, through the other replica (edge-draft
      re-prefills it after its `404 unknown session`), with exactly the
      tokens of target-only greedy decoding.
    - bad requests: empty prompt, max_tokens 0 and above the limit, a
      prompt longer than the context, a body that is not MessagePack, and
      models that cannot be served (missing file, not a GGUF file) each get
      a clear error, and the mesh answers a good request after every one.
*/
#include <criterion/criterion.h>
#include <limits.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "codec.h"
#include "mdp_client.h"
#include "mdp_common.h"
#include "sm_cli.h"
#include "sm_proc.h"
#include "sm_ref.h"

static char *s_dir;
static char s_run_dir [1024], s_target [1024], s_endpoint [1100];

static void
s_fini (void)
{
    if (s_dir) {
        sm_mesh_teardown (s_run_dir);
        sm_tmpdir_remove (&s_dir);
    }
    sm_proc_kill_all ();
}

TestSuite (e2e_failures, .fini = s_fini, .timeout = 180);

static void
s_need_services (void)
{
    const char *names [] = { "splitmesh-broker", "splitmesh-tokenizer", "splitmesh-split-prefix",
                             "splitmesh-cloud-target", "splitmesh-edge-draft" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        char path [PATH_MAX];
        snprintf (path, sizeof path, "%s/%s", sm_bin_dir (), names [i]);
        if (access (path, X_OK))
            cr_skip_test ("%s is not built", names [i]);
    }
}

//  A temp dir with a tiny target model.
static void
s_prepare (void)
{
    s_need_services ();
    s_dir = sm_tmpdir_new ("e2e_failures");
    cr_assert (s_dir);
    snprintf (s_run_dir, sizeof s_run_dir, "%s/run", s_dir);
    snprintf (s_target, sizeof s_target, "%s/target.gguf", s_dir);
    snprintf (s_endpoint, sizeof s_endpoint, "ipc://%s/device.ipc", s_run_dir);
    sm_cli_result_t *r = SM_SPLITMESH (60, "tiny-model", "--out", s_target, "--layers", "4",
                                       "--seed", "11", "--ctx", "256");
    cr_assert_eq (r->status, 0, "%s", r->err);
    sm_cli_result_destroy (&r);
}

//  Request lines ("-byte request ->", written by services run with -v) in a log.
static int
s_request_lines (const char *name)
{
    char path [PATH_MAX], line [2048];
    snprintf (path, sizeof path, "%s/logs/%s.log", s_run_dir, name);
    FILE *f = fopen (path, "r");
    if (!f)
        return 0;
    int n = 0;
    while (fgets (line, sizeof line, f))
        if (strstr (line, "-byte request ->"))
            n++;
    fclose (f);
    return n;
}

//  Pid of a mesh process from mesh.env, or -1.
static int
s_mesh_pid (const char *name)
{
    char path [PATH_MAX], line [1024], want [80];
    snprintf (path, sizeof path, "%s/mesh.env", s_run_dir);
    snprintf (want, sizeof want, "SPLITMESH_PROC='%s ", name);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    int pid = -1;
    while (fgets (line, sizeof line, f))
        if (!strncmp (line, want, strlen (want)))
            pid = atoi (line + strlen (want));
    fclose (f);
    return pid;
}

Test (e2e_failures, kill_9_serving_replica_mid_generation)
{
    s_prepare ();
    sm_cli_result_t *r = SM_SPLITMESH (120, "up", "--run-dir", s_run_dir, "--model", s_target,
                                       "--split", "2", "--format", "f32", "--draft-format", "w4",
                                       "--act-dtype", "fp32", "--targets", "2", "--link", "rtt=30",
                                       "--heartbeat-ms", "250", "--no-telemetry", "-v",
                                       "--timeout", "60");
    cr_assert_eq (r->status, 0, "up failed:\n%s\n%s", r->out, r->err);
    sm_cli_result_destroy (&r);

    const char *prompt = "the cat sat on the";
    const int n_tokens = 96;
    char err [256] = "";
    sm_ref_t *ref = sm_ref_new (s_target, "f32", err, sizeof err);
    cr_assert (ref, "%s", err);
    int32_t *want = NULL;
    size_t n_want = 0;
    cr_assert_eq (sm_ref_greedy (ref, prompt, n_tokens, &want, &n_want), 0);

    //  The request, streamed, with a small draft length: many rounds.
    wire_generate_t req;
    wire_msg_init (&wire_generate_desc, &req);
    req.prompt = (char *) prompt;
    req.max_tokens = n_tokens;
    req.temperature = 0;
    req.stream = true;
    req.draft_k = 2;
    uint8_t *data = NULL;
    size_t size = 0;
    cr_assert_eq (wire_encode (&wire_generate_desc, &req, &data, &size, NULL), 0);
    int before [2] = { s_request_lines ("cloud-target-1"), s_request_lines ("cloud-target-2") };
    mdp_client_t *client = mdp_client_new (s_endpoint);
    cr_assert (client);
    cr_assert_eq (mdp_client_send_mem (client, "generate", data, size), 0);
    free (data);

    int32_t got [1024];
    size_t n_got = 0;
    int partials = 0, victim = -1, finish = -1;
    int victim_pid = -1, after_kill [2] = { 0, 0 };
    while (true) {
        int command = 0;
        zmsg_t *reply = mdp_client_recv (client, 60000, &command, NULL);
        cr_assert (reply, "no reply within 60 s (after %d partials, victim %d)", partials, victim);
        zframe_t *frame = zmsg_first (reply);
        wire_peek_t peek;
        wire_err_t werr;
        cr_assert_eq (wire_peek (zframe_data (frame), zframe_size (frame), &peek, &werr), 0);
        if (peek.desc == &wire_error_desc || peek.status >= 400) {
            wire_error_t e;
            wire_decode_frame (&wire_error_desc, frame, &e, &werr);
            cr_assert_fail ("error reply %u: %s", e.status, e.error ? e.error : "");
        }
        if (command == MDPC_PARTIAL) {
            wire_generate_partial_t part;
            cr_assert_eq (wire_decode_frame (&wire_generate_partial_desc, frame, &part, &werr), 0, "%s", werr.text);
            for (size_t i = 0; i < part.tokens_count && n_got < 1024; i++)
                got [n_got++] = part.tokens [i];
            wire_msg_free (&wire_generate_partial_desc, &part);
            zmsg_destroy (&reply);
            if (++partials == 1) {
                //  Who served the first rounds?
                int grew [2] = { s_request_lines ("cloud-target-1") - before [0],
                                 s_request_lines ("cloud-target-2") - before [1] };
                cr_assert (grew [0] > 0 || grew [1] > 0,
                           "no cloud-target logged a request (%d, %d)", grew [0], grew [1]);
                cr_assert (grew [0] == 0 || grew [1] == 0,
                           "both replicas served the session (%d, %d): affinity broken", grew [0], grew [1]);
                victim = grew [0] > 0 ? 0 : 1;
                victim_pid = s_mesh_pid (victim == 0 ? "cloud-target-1" : "cloud-target-2");
                cr_assert_gt (victim_pid, 1);
                fprintf (stderr, "e2e_failures: killing cloud-target-%d (pid %d) after %zu tokens\n",
                         victim + 1, victim_pid, n_got);
                cr_assert_eq (kill (victim_pid, SIGKILL), 0);
                after_kill [0] = s_request_lines ("cloud-target-1");
                after_kill [1] = s_request_lines ("cloud-target-2");
            }
            continue;
        }
        wire_generate_final_t final;
        cr_assert_eq (wire_decode_frame (&wire_generate_final_desc, frame, &final, &werr), 0, "%s", werr.text);
        for (size_t i = 0; i < final.tokens_count && n_got < 1024; i++)
            got [n_got++] = final.tokens [i];
        finish = (int) final.finish_reason;
        wire_msg_free (&wire_generate_final_desc, &final);
        zmsg_destroy (&reply);
        break;
    }
    mdp_client_destroy (&client);
    cr_assert_geq (victim, 0, "the generation finished before its first partial");
    cr_assert_neq (finish, (int) WIRE_FINISH_REASON_ERROR, "the generation ended with an error");
    //  The survivor took the session over.
    int survivor = 1 - victim;
    int survivor_lines = s_request_lines (survivor == 0 ? "cloud-target-1" : "cloud-target-2");
    cr_assert_gt (survivor_lines, after_kill [survivor], "the surviving replica served nothing after the kill");
    while (n_got > 0 && sm_ref_is_eog (ref, got [n_got - 1]))
        n_got--;
    cr_assert_eq (n_got, n_want, "%zu tokens, reference %zu", n_got, n_want);
    for (size_t i = 0; i < n_want; i++)
        cr_assert_eq (got [i], want [i], "token %zu is %d, reference %d", i, got [i], want [i]);
    fprintf (stderr, "e2e_failures: %zu tokens identical to target-only greedy after the kill\n", n_got);
    free (want);
    sm_ref_destroy (&ref);
}

//  A `generate` body built by hand (the encoder refuses what the schema
//  forbids): {"v":1,"t":"generate","prompt":P,"max_tokens":N}.
static void
s_raw_generate (msgpack_sbuffer *buf, const char *prompt, long max_tokens)
{
    msgpack_sbuffer_init (buf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 4);
    msgpack_pack_str_with_body (&pk, "v", 1);
    msgpack_pack_int (&pk, 1);
    msgpack_pack_str_with_body (&pk, "t", 1);
    msgpack_pack_str_with_body (&pk, "generate", 8);
    msgpack_pack_str_with_body (&pk, "prompt", 6);
    msgpack_pack_str_with_body (&pk, prompt, strlen (prompt));
    msgpack_pack_str_with_body (&pk, "max_tokens", 10);
    msgpack_pack_long (&pk, max_tokens);
}

//  The mesh still answers a good request.
static void
s_expect_serving (const char *after)
{
    sm_gen_result_t *g = sm_generate_simple (s_endpoint, "hello there", 8, 0.0, 0, 1, 4,
                                             "model", "speculative", 30000);
    cr_assert_eq (g->status, 0, "after %s, a good request failed: %d %s", after, g->status, g->error);
    cr_assert_gt (g->n_tokens, 0, "after %s: no tokens", after);
    sm_gen_result_destroy (&g);
}

//  Sends a raw body and expects an error status in [lo, hi] whose text
//  contains `needle`.
static void
s_expect_error (const char *what, const void *body, size_t size, int lo, int hi, const char *needle)
{
    sm_gen_result_t *g = sm_generate (s_endpoint, body, size, 30000);
    cr_assert (g->status >= lo && g->status <= hi, "%s: status %d (%s), expected %d..%d",
               what, g->status, g->error, lo, hi);
    cr_assert (strstr (g->error, needle), "%s: error '%s' does not mention '%s'", what, g->error, needle);
    fprintf (stderr, "e2e_failures: %s -> %d %s\n", what, g->status, g->error);
    sm_gen_result_destroy (&g);
    s_expect_serving (what);
}

Test (e2e_failures, bad_requests_get_clear_errors_and_the_mesh_keeps_serving)
{
    s_prepare ();
    sm_cli_result_t *r = SM_SPLITMESH (120, "up", "--run-dir", s_run_dir, "--model", s_target,
                                       "--split", "2", "--format", "f32", "--draft-format", "w4",
                                       "--ctx", "64", "--no-telemetry", "--timeout", "60");
    cr_assert_eq (r->status, 0, "up failed:\n%s\n%s", r->out, r->err);
    sm_cli_result_destroy (&r);
    s_expect_serving ("start");

    msgpack_sbuffer buf;
    s_raw_generate (&buf, "", 8);
    s_expect_error ("empty prompt", buf.data, buf.size, 400, 422, "prompt");
    msgpack_sbuffer_destroy (&buf);

    s_raw_generate (&buf, "hello", 0);
    s_expect_error ("max_tokens 0", buf.data, buf.size, 400, 422, "max_tokens");
    msgpack_sbuffer_destroy (&buf);

    s_raw_generate (&buf, "hello", WIRE_MAX_NEW_TOKENS + 1);
    s_expect_error ("max_tokens above the limit", buf.data, buf.size, 400, 422, "max_tokens");
    msgpack_sbuffer_destroy (&buf);

    //  About 300 tokens against a context of 64.
    char long_prompt [4096] = "";
    for (int i = 0; i < 100; i++)
        strcat (long_prompt, "one two three ");
    s_raw_generate (&buf, long_prompt, 8);
    s_expect_error ("prompt longer than the context", buf.data, buf.size, 413, 422, "context");
    msgpack_sbuffer_destroy (&buf);

    const char garbage [] = "\xc1 this is not MessagePack";
    s_expect_error ("malformed body", garbage, sizeof garbage - 1, 400, 400, "");

    //  The same through the CLI: a clear message, exit 1.
    r = SM_SPLITMESH (60, "generate", "--run-dir", s_run_dir, "");
    cr_assert_eq (r->status, 1, "%s", r->err);
    cr_assert (strstr (r->err, "error 422") && strstr (r->err, "prompt"), "%s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (60, "generate", "--run-dir", s_run_dir, "-n", "9000", "x");
    cr_assert_eq (r->status, 1, "%s", r->err);
    cr_assert (strstr (r->err, "max_tokens"), "%s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (60, "generate", "--run-dir", s_run_dir, long_prompt);
    cr_assert_eq (r->status, 1, "%s", r->err);
    cr_assert (strstr (r->err, "error 413"), "%s", r->err);
    sm_cli_result_destroy (&r);
    s_expect_serving ("the CLI's bad requests");
}

Test (e2e_failures, unusable_models_are_clear_errors)
{
    s_prepare ();
    //  A model file that does not exist: nothing starts.
    char missing [1100];
    snprintf (missing, sizeof missing, "%s/no-such-model.gguf", s_dir);
    sm_cli_result_t *r = SM_SPLITMESH (60, "up", "--run-dir", s_run_dir, "--model", missing,
                                       "--no-telemetry");
    cr_assert_eq (r->status, 1);
    cr_assert (strstr (r->err, "no-such-model.gguf") && strstr (r->err, "No such file"), "%s", r->err);
    sm_cli_result_destroy (&r);
    //  A file that is not a GGUF model: the services refuse it, `up` shows
    //  why and stops everything.
    char bogus [1100];
    snprintf (bogus, sizeof bogus, "%s/not-a-model.gguf", s_dir);
    FILE *f = fopen (bogus, "w");
    cr_assert (f);
    fprintf (f, "this is a text file, not a GGUF model\n");
    fclose (f);
    r = SM_SPLITMESH (60, "up", "--run-dir", s_run_dir, "--model", bogus, "--no-telemetry",
                      "--timeout", "30");
    cr_assert_eq (r->status, 1, "%s", r->out);
    cr_assert (strstr (r->err, "exited with status"), "%s", r->err);
    cr_assert (strstr (r->err, "last lines of"), "no log tail: %s", r->err);
    fprintf (stderr, "e2e_failures: not a model ->\n%s\n", r->err);
    sm_cli_result_destroy (&r);
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/mesh.env", s_run_dir);
    cr_assert_neq (access (path, F_OK), 0, "state left behind");
}
