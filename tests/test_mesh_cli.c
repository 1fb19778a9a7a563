/*  test_mesh_cli.c: `splitmesh up` / `down` / `generate` as processes, without models.

    The life cycle of a mesh, checked with stand-in services so that it runs
    in a second and needs no model: a folder of small shell scripts named
    splitmesh-tokenizer, -split-prefix, -cloud-target and -edge-draft, each
    parsing the flags `up` gives it and exec'ing the test echo worker for
    its service name (tokenizer, prefix, target, generate); the brokers are
    the real splitmesh-broker. `up` finds them through SPLITMESH_BIN_DIR.
    What is checked is `up`'s own job: every process started as a daemon
    and recorded, readiness through MMI, refusal of a second mesh, a failed
    service's log tail and a full stop, `down` stopping everything and
    being idempotent, and clear usage errors. The real services are
    exercised by test_e2e_*.
*/
#include <criterion/criterion.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sm_cli.h"
#include "sm_proc.h"

static char *s_dir;             //  temp dir: bin/ (stand-ins), run/ (the mesh)
static char s_bin [1024], s_run [1024], s_model [1024];

//  Writes an executable shell script.
static void
s_script (const char *name, const char *body)
{
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/%s", s_bin, name);
    FILE *f = fopen (path, "w");
    cr_assert (f);
    fprintf (f, "#!/bin/sh\n%s", body);
    fclose (f);
    chmod (path, 0755);
}

//  A stand-in service: registers `service` on the --broker it is given.
static void
s_standin (const char *name, const char *service)
{
    char body [4096];
    snprintf (body, sizeof body,
        "broker=; inst=standin\n"
        "while [ $# -gt 0 ]; do case \"$1\" in\n"
        "  --broker) broker=$2; shift;; --instance) inst=$2; shift;; esac; shift; done\n"
        "echo \"%s stand-in for %s on $broker\"\n"
        "exec '%s/splitmesh-test-echo-worker' -e \"$broker\" -s %s -n \"$inst\" --heartbeat-ms 250\n",
        name, service, sm_bin_dir (), service);
    s_script (name, body);
}

static void
s_setup (void)
{
    s_dir = sm_tmpdir_new ("mesh_cli");
    cr_assert (s_dir);
    snprintf (s_bin, sizeof s_bin, "%s/bin", s_dir);
    snprintf (s_run, sizeof s_run, "%s/run", s_dir);
    snprintf (s_model, sizeof s_model, "%s/model.gguf", s_dir);
    mkdir (s_bin, 0755);
    //  `up` only checks that the model file exists; the stand-ins ignore it.
    FILE *f = fopen (s_model, "w");
    cr_assert (f);
    fclose (f);
    char path [PATH_MAX], target [PATH_MAX];
    snprintf (path, sizeof path, "%s/splitmesh-broker", s_bin);
    snprintf (target, sizeof target, "%s/splitmesh-broker", sm_bin_dir ());
    cr_assert_eq (symlink (target, path), 0);
    s_standin ("splitmesh-tokenizer", "tokenizer");
    s_standin ("splitmesh-split-prefix", "prefix");
    s_standin ("splitmesh-cloud-target", "target");
    s_standin ("splitmesh-edge-draft", "generate");
}

static void
s_teardown (void)
{
    sm_mesh_teardown (s_run);
    sm_proc_kill_all ();
    sm_tmpdir_remove (&s_dir);
}

TestSuite (mesh_cli, .init = s_setup, .fini = s_teardown, .timeout = 60);

//  Runs `splitmesh up` with the stand-ins and extra arguments.
static sm_cli_result_t *
s_up (const char *extra1, const char *extra2)
{
    char env_bin [PATH_MAX + 32];
    snprintf (env_bin, sizeof env_bin, "SPLITMESH_BIN_DIR=%s", s_bin);
    const char *env [] = { env_bin, NULL };
    const char *argv [] = { "", "up", "--run-dir", s_run, "--model", s_model, "--targets", "2",
                            "--heartbeat-ms", "250", "--timeout", "10", extra1, extra2, NULL };
    return sm_cli_run ("splitmesh", 30, env, argv);
}

typedef struct {
    int n;
    int pids [40];
    char names [40][64];
} s_procs_t;

//  The processes listed in the run dir's mesh.env.
static bool
s_read_procs (s_procs_t *procs)
{
    char path [PATH_MAX], line [1024];
    snprintf (path, sizeof path, "%s/mesh.env", s_run);
    memset (procs, 0, sizeof *procs);
    FILE *f = fopen (path, "r");
    if (!f)
        return false;
    while (fgets (line, sizeof line, f) && procs->n < 40)
        if (sscanf (line, "SPLITMESH_PROC='%63s %d", procs->names [procs->n], &procs->pids [procs->n]) == 2)
            procs->n++;
    fclose (f);
    return true;
}

static bool
s_pid_alive (int pid)
{
    char path [64], state = 0;
    snprintf (path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return false;
    int ok = fscanf (f, "%*d %*s %c", &state);
    fclose (f);
    return ok == 1 && state != 'Z';
}

Test (mesh_cli, up_generate_down_life_cycle)
{
    sm_cli_result_t *r = s_up (NULL, NULL);
    cr_assert_eq (r->status, 0, "up failed (%d):\n%s\n%s", r->status, r->out, r->err);
    cr_assert (strstr (r->out, "mesh running in"), "%s", r->out);
    cr_assert (strstr (r->out, "telemetry      off"), "no telemetry binary among the stand-ins: %s", r->out);
    sm_cli_result_destroy (&r);

    s_procs_t procs;
    cr_assert (s_read_procs (&procs));
    //  Two brokers, tokenizer, split-prefix, two cloud-targets, edge-draft.
    cr_assert_eq (procs.n, 7);
    const char *expect [] = { "broker-device", "broker-cloud", "tokenizer", "split-prefix",
                              "cloud-target-1", "cloud-target-2", "edge-draft" };
    for (int i = 0; i < 7; i++) {
        cr_assert_str_eq (procs.names [i], expect [i]);
        cr_assert (s_pid_alive (procs.pids [i]), "%s is not running", procs.names [i]);
        //  Daemons: each in its own session, not in ours.
        cr_assert_eq (getsid (procs.pids [i]), procs.pids [i], "%s is not a session leader", procs.names [i]);
        char log [PATH_MAX];
        snprintf (log, sizeof log, "%s/logs/%s.log", s_run, procs.names [i]);
        cr_assert_eq (access (log, R_OK), 0, "no log %s", log);
    }

    //  A second mesh in the same run dir is refused, the first untouched.
    r = s_up (NULL, NULL);
    cr_assert_eq (r->status, 1);
    cr_assert (strstr (r->err, "already running"), "%s", r->err);
    sm_cli_result_destroy (&r);
    for (int i = 0; i < procs.n; i++)
        cr_assert (s_pid_alive (procs.pids [i]));

    //  generate finds the mesh through the run dir and reaches `generate`
    //  (the stand-in's echo is no generate_final: a clear error, exit 1).
    r = SM_SPLITMESH (20, "generate", "--run-dir", s_run, "--timeout", "5", "hello");
    cr_assert_eq (r->status, 1, "%s", r->err);
    cr_assert (strstr (r->err, "bad final reply"), "%s", r->err);
    sm_cli_result_destroy (&r);

    r = SM_SPLITMESH (30, "down", "--run-dir", s_run);
    cr_assert_eq (r->status, 0, "%s", r->err);
    cr_assert (strstr (r->out, "stopped 7 processes"), "%s", r->out);
    sm_cli_result_destroy (&r);
    for (int i = 0; i < procs.n; i++)
        cr_assert_not (s_pid_alive (procs.pids [i]), "%s survived down", procs.names [i]);
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/mesh.env", s_run);
    cr_assert_neq (access (path, F_OK), 0, "state left behind");

    //  Idempotent.
    r = SM_SPLITMESH (30, "down", "--run-dir", s_run);
    cr_assert_eq (r->status, 0);
    cr_assert (strstr (r->out, "no mesh"), "%s", r->out);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (20, "generate", "--run-dir", s_run, "hello");
    cr_assert_eq (r->status, 1);
    cr_assert (strstr (r->err, "no mesh"), "%s", r->err);
    sm_cli_result_destroy (&r);
}

Test (mesh_cli, failing_service_shows_its_log_and_stops_the_rest)
{
    s_script ("splitmesh-tokenizer",
              "echo 'splitmesh-tokenizer: cannot load model: bad magic (not a GGUF file)' >&2\nexit 3\n");
    sm_cli_result_t *r = s_up (NULL, NULL);
    cr_assert_eq (r->status, 1, "%s", r->out);
    cr_assert (strstr (r->err, "tokenizer exited with status 3"), "%s", r->err);
    cr_assert (strstr (r->err, "bad magic (not a GGUF file)"), "the log tail is missing: %s", r->err);
    sm_cli_result_destroy (&r);
    //  Nothing left running, no state.
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/mesh.env", s_run);
    cr_assert_neq (access (path, F_OK), 0, "state left behind");
}

Test (mesh_cli, service_without_worker_times_out_and_stops_the_rest)
{
    //  A prefix that starts but never registers.
    s_script ("splitmesh-split-prefix", "echo 'stuck loading'\nexec sleep 60\n");
    char env_bin [PATH_MAX + 32];
    snprintf (env_bin, sizeof env_bin, "SPLITMESH_BIN_DIR=%s", s_bin);
    const char *env [] = { env_bin, NULL };
    const char *argv [] = { "", "up", "--run-dir", s_run, "--model", s_model,
                            "--heartbeat-ms", "250", "--timeout", "2", NULL };
    sm_cli_result_t *r = sm_cli_run ("splitmesh", 30, env, argv);
    cr_assert_eq (r->status, 1, "%s", r->out);
    cr_assert (strstr (r->err, "service 'prefix' has no worker after 2 s"), "%s", r->err);
    cr_assert (strstr (r->err, "stuck loading"), "%s", r->err);
    cr_assert (r->seconds < 15, "took %.1f s", r->seconds);
    sm_cli_result_destroy (&r);
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/mesh.env", s_run);
    cr_assert_neq (access (path, F_OK), 0, "state left behind");
}

Test (mesh_cli, usage_errors)
{
    sm_cli_result_t *r = SM_SPLITMESH (20, "up", "--split", "x");
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "bad value 'x' for --split"), "%s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (20, "up", "--link", "rtt=banana");
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "bad --link"), "%s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (20, "up", "--format", "w5");
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "unknown format 'w5'"), "%s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (20, "up", "--run-dir", s_run, "--model", "/nonexistent/model.gguf");
    cr_assert_eq (r->status, 1);
    cr_assert (strstr (r->err, "/nonexistent/model.gguf"), "%s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (20, "generate", "--run-dir", s_run);
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "PROMPT argument is required"), "%s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (20, "generate", "--run-dir", s_run, "--mode", "fast", "x");
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "bad value 'fast' for --mode"), "%s", r->err);
    sm_cli_result_destroy (&r);
    //  The schema's limits, checked before anything is sent.
    r = SM_SPLITMESH (20, "generate", "--broker", "ipc:///nonexistent", "-n", "0", "x");
    cr_assert_eq (r->status, 1);
    cr_assert (strstr (r->err, "max_tokens"), "%s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (20, "down", "--grace-ms", "-1");
    cr_assert_eq (r->status, 2);
    sm_cli_result_destroy (&r);
}

Test (mesh_cli, dead_mesh_is_reported_and_down_cleans_up)
{
    sm_cli_result_t *r = s_up (NULL, NULL);
    cr_assert_eq (r->status, 0, "up failed (%d):\n%s\n%s", r->status, r->out, r->err);
    sm_cli_result_destroy (&r);
    s_procs_t procs;
    cr_assert (s_read_procs (&procs));
    cr_assert_str_eq (procs.names [0], "broker-device");
    //  The device broker dies: generate says so at once instead of waiting.
    cr_assert_eq (kill (procs.pids [0], SIGKILL), 0);
    for (int i = 0; i < 100 && s_pid_alive (procs.pids [0]); i++)
        usleep (20000);
    r = SM_SPLITMESH (20, "generate", "--run-dir", s_run, "hello");
    cr_assert_eq (r->status, 1, "%s", r->err);
    cr_assert (strstr (r->err, "is not running"), "%s", r->err);
    cr_assert_lt (r->seconds, 5.0);
    sm_cli_result_destroy (&r);
    //  down stops the rest and removes the state and the stale socket.
    r = SM_SPLITMESH (30, "down", "--run-dir", s_run);
    cr_assert_eq (r->status, 0, "%s", r->err);
    cr_assert (strstr (r->out, "stopped 6 processes"), "%s", r->out);
    sm_cli_result_destroy (&r);
    for (int i = 0; i < procs.n; i++)
        cr_assert_not (s_pid_alive (procs.pids [i]), "%s survived down", procs.names [i]);
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/device.ipc", s_run);
    cr_assert_neq (access (path, F_OK), 0, "stale socket left behind");
    //  And a new mesh can start in the same run dir.
    r = s_up (NULL, NULL);
    cr_assert_eq (r->status, 0, "second up failed:\n%s\n%s", r->out, r->err);
    sm_cli_result_destroy (&r);
}
