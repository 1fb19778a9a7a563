/*  test_offline.c: the cloud goes away mid-generation and comes back.

    Starts `splitmesh up` on the real model (skipped when it is absent),
    restarts its edge-draft with a short call timeout (--timeout-ms 1500,
    so a dead link is noticed in seconds), sends one long greedy
    streamed generation, and at its first PARTIAL cuts the link by
    SIGSTOPping the cloud broker: the cloud is unreachable, calls time out
    and edge-draft carries on with the draft model alone. Six seconds
    later SIGCONT restores it. The FINAL
    must be a normal one (no error), flagged degraded, and must report at
    least one resume: edge-draft noticed the cloud was back, re-prefilled
    split-prefix and cloud-target with the context so far, and went back
    to speculative rounds (services/edge-draft/edge_gen.c, s_try_resume).
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include "codec.h"
#include "schema_gen.h"
#include "mdp_common.h"
#include "sm_cli.h"
#include "sm_mdp.h"
#include "sm_proc.h"

static char *s_dir;
static char s_run [PATH_MAX];
static char s_log [PATH_MAX];
static char s_broker [700];
static int s_cloud_pid, s_edge_pid;

static void
s_init (void)
{
    s_dir = sm_tmpdir_new ("offline");
    cr_assert_not_null (s_dir);
    snprintf (s_run, sizeof s_run, "%s/run", s_dir);
    snprintf (s_log, sizeof s_log, "%s/restarted-target.log", s_dir);
}

static void
s_fini (void)
{
    if (s_cloud_pid > 0)
        kill (s_cloud_pid, SIGCONT);
    sm_mesh_teardown (s_run);
    sm_proc_kill_all ();
    if (getenv ("SPLITMESH_KEEP_TMP"))
        fprintf (stderr, "run dir kept in %s\n", s_dir);
    else
        sm_tmpdir_remove (&s_dir);
}

static void
s_read_env (void)
{
    char path [PATH_MAX + 16], line [1024], name [64];
    int pid;
    snprintf (path, sizeof path, "%s/mesh.env", s_run);
    FILE *f = fopen (path, "r");
    cr_assert_not_null (f, "no %s", path);
    while (fgets (line, sizeof line, f)) {
        if (sscanf (line, "SPLITMESH_PROC='%63s %d", name, &pid) == 2 && streq (name, "broker-cloud"))
            s_cloud_pid = pid;
        if (sscanf (line, "SPLITMESH_PROC='%63s %d", name, &pid) == 2 && streq (name, "edge-draft"))
            s_edge_pid = pid;
        sscanf (line, "SPLITMESH_BROKER='%699[^']'", s_broker);
    }
    fclose (f);
    cr_assert (s_broker [0] && s_cloud_pid > 0 && s_edge_pid > 0, "incomplete mesh.env");
}

//  argv of a running process from /proc/<pid>/cmdline (NULL-terminated,
//  strings inside `buf`).
static void
s_cmdline (int pid, char *buf, size_t size, char **argv, int max)
{
    char path [64];
    snprintf (path, sizeof path, "/proc/%d/cmdline", pid);
    FILE *f = fopen (path, "r");
    cr_assert_not_null (f);
    size_t n = fread (buf, 1, size - 1, f);
    fclose (f);
    buf [n] = '\0';
    int argc = 0;
    for (size_t at = 0; at < n && argc < max - 1; at += strlen (buf + at) + 1)
        argv [argc++] = buf + at;
    argv [argc] = NULL;
    cr_assert_gt (argc, 1);
}

Test (offline, cloud_cut_and_restored_mid_generation, .init = s_init, .fini = s_fini, .timeout = 280)
{
    const char *model = sm_model_path ();
    if (!model)
        cr_skip_test ("no model file (set SPLITMESH_MODEL or run scripts/fetch-model.sh)");
    sm_cli_result_t *r = SM_SPLITMESH (200, "up", "--run-dir", s_run, "--model", model, "--no-telemetry",
                                       "--heartbeat-ms", "250", "--timeout", "150");
    cr_assert_eq (r->status, 0, "splitmesh up failed: %s", r->err);
    sm_cli_result_destroy (&r);
    s_read_env ();
    //  edge-draft again, with calls that give up after 1.5 s (+20 ms a
    //  position) instead of 5 s, so the test needs seconds, not minutes.
    char cmdbuf [8192];
    char *argv [128];
    s_cmdline (s_edge_pid, cmdbuf, sizeof cmdbuf, argv, 126);
    int argc = 0;
    while (argv [argc])
        argc++;
    argv [argc++] = "--timeout-ms";
    argv [argc++] = "1500";
    argv [argc] = NULL;
    kill (s_edge_pid, SIGTERM);
    for (int i = 0; i < 100 && kill (s_edge_pid, 0) == 0; i++)
        zclock_sleep (100);
    pid_t edge = sm_spawnv (s_log, argv [0], argv);
    cr_assert_gt (edge, 0, "cannot restart %s", argv [0]);
    cr_assert (sm_mdp_wait_workers (s_broker, "generate", 1, 60000), "edge-draft did not come back");

    //  One long greedy generation (counting keeps the model going).
    wire_generate_t req;
    wire_msg_init (&wire_generate_desc, &req);
    req.prompt = "Count from 1 to 1000, separated by commas: 1, 2, 3, 4, 5, 6, 7, 8,";
    req.max_tokens = 800;
    req.temperature = 0;
    req.stream = true;
    zframe_t *body = wire_encode_frame (&wire_generate_desc, &req, NULL);
    cr_assert_not_null (body);
    zsock_t *client = zsock_new_dealer (s_broker);
    cr_assert_not_null (client);
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, MDPC_CLIENT);
    zmsg_addmem (msg, (uint8_t []) { MDPC_REQUEST }, 1);
    zmsg_addstr (msg, "generate");
    zmsg_append (msg, &body);
    zmsg_send (&msg, client);

    //  At the first PARTIAL (speculative rounds are running) cut the
    //  link; six seconds later restore it.
    zsock_set_rcvtimeo (client, 200000);
    zmsg_t *reply = NULL;
    int partials = 0;
    int64_t cut_at = 0;
    while (true) {
        reply = zmsg_recv (client);
        if (cut_at && zclock_mono () - cut_at > 6000) {
            kill (s_cloud_pid, SIGCONT);
            cut_at = 0;
            zsock_set_rcvtimeo (client, 200000);
        }
        if (!reply && partials > 0 && zsock_rcvtimeo (client) == 500)
            continue;                           //  cut: keep the 5 s clock going
        cr_assert_not_null (reply, "no FINAL within 200 s");
        zframe_t *cmd = zmsg_first (reply);     //  [MDPC02][cmd][service][body]
        cmd = zmsg_next (reply);
        if (zframe_data (cmd) [0] == MDPC_FINAL)
            break;
        zmsg_destroy (&reply);
        if (++partials == 1) {
            cr_assert_eq (kill (s_cloud_pid, SIGSTOP), 0, "cannot stop the cloud broker");
            cut_at = zclock_mono ();
            zsock_set_rcvtimeo (client, 500);
        }
    }
    if (cut_at)
        kill (s_cloud_pid, SIGCONT);
    zframe_t *frame = zmsg_last (reply);
    wire_peek_t peek;
    wire_err_t err;
    cr_assert_eq (wire_peek (zframe_data (frame), zframe_size (frame), &peek, &err), 0);
    cr_assert_eq (peek.status, 0, "error reply %d", peek.status);
    wire_generate_final_t final;
    cr_assert_eq (wire_decode_frame (&wire_generate_final_desc, frame, &final, &err), 0, "%s", err.text);
    cr_assert_not_null (final.stats);
    printf ("offline: finish %s, %u tokens, degraded %d, resumes %u, drafts %llu/%llu\n",
            wire_finish_reason_names [final.finish_reason], final.stats->tokens,
            final.stats->degraded, final.stats->resumes,
            (unsigned long long) final.stats->drafts_accepted,
            (unsigned long long) final.stats->drafts_proposed);
    cr_expect_neq (final.finish_reason, WIRE_FINISH_REASON_ERROR, "generation ended with an error");
    cr_expect (final.stats->degraded, "the cut went unnoticed (not degraded)");
    cr_expect_geq (final.stats->resumes, 1, "edge-draft never went back to speculative mode");
    wire_msg_free (&wire_generate_final_desc, &final);
    zmsg_destroy (&reply);
    zsock_destroy (&client);
}
