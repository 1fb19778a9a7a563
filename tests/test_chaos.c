/*  test_chaos.c: one fault of each kind during 12 greedy generations.

    The CI-sized run of bench/chaos/chaos.py (the 100-generation bench on
    the real model is bench/chaos/run.sh). On a tiny random-weight model
    (`splitmesh tiny-model`, seconds to load) the harness starts a whole
    mesh of real processes: device broker with 2 tokenizers, 2 split-prefix,
    2 edge-draft; device crypt-proxy ==CURVE==> cloud crypt-proxy; cloud
    broker with 2 cloud-targets. It generates every prompt once without
    faults, then 12 greedy generations with one fault each: kill -9 and
    SIGSTOP (SIGCONT 2 s later) of a working replica of tokenizer,
    split-prefix, cloud-target and edge-draft, and restarts of both brokers
    and both crypt-proxies.

    Asserted here from its JSON: all 12 generations completed (a failed
    attempt is retried by the client and must be a counted error, never a
    hang), each output equals the fault-free pass token for token, or is
    flagged degraded; every fault kind ran; every process was reaped
    (the harness waits for each; this test also scans /proc for anything
    still naming the run directory and kills it, so nothing outlives a
    failed run either).
*/
#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sm_cli.h"
#include "sm_proc.h"

static char *s_dir;

//  Pids of processes (other than us) whose command line names `text`.
static int
s_find (const char *text, pid_t *pids, int max)
{
    int n = 0;
    DIR *proc = opendir ("/proc");
    if (!proc)
        return 0;
    struct dirent *e;
    while ((e = readdir (proc)) && n < max) {
        pid_t pid = (pid_t) atoi (e->d_name);
        if (pid <= 0 || pid == getpid ())
            continue;
        char path [64], cmd [4096];
        snprintf (path, sizeof path, "/proc/%d/cmdline", (int) pid);
        FILE *f = fopen (path, "r");
        if (!f)
            continue;
        size_t len = fread (cmd, 1, sizeof cmd - 1, f);
        fclose (f);
        for (size_t i = 0; i < len; i++)
            if (cmd [i] == '\0')
                cmd [i] = ' ';
        cmd [len] = '\0';
        if (strstr (cmd, text))
            pids [n++] = pid;
    }
    closedir (proc);
    return n;
}

static void
s_init (void)
{
    s_dir = sm_tmpdir_new ("chaos");
    cr_assert_not_null (s_dir);
}

//  Whatever a failed or killed harness left behind dies here: every
//  process naming our temp dir (all of them were started by this test).
static void
s_fini (void)
{
    pid_t pids [64];
    int n = s_dir ? s_find (s_dir, pids, 64) : 0;
    for (int i = 0; i < n; i++) {
        kill (pids [i], SIGCONT);
        kill (pids [i], SIGKILL);
    }
    sm_proc_kill_all ();
    if (getenv ("SPLITMESH_KEEP_TMP"))
        fprintf (stderr, "chaos files kept in %s\n", s_dir);
    else
        sm_tmpdir_remove (&s_dir);
}

static double
s_number (const char *json, const char *key)
{
    double value = -1;
    cr_assert_eq (sm_json_number (json, key, &value), 0, "no \"%s\" in the chaos JSON", key);
    return value;
}

Test (chaos, one_fault_of_each_kind_during_12_generations, .init = s_init, .fini = s_fini, .timeout = 170)
{
    const char *python = getenv ("SPLITMESH_PYTHON");
    if (!python || !*python)
        python = SPLITMESH_PYTHON;
    char model [PATH_MAX], run [PATH_MAX], json_path [PATH_MAX], script [PATH_MAX];
    snprintf (model, sizeof model, "%s/tiny.gguf", s_dir);
    snprintf (run, sizeof run, "%s/run", s_dir);
    snprintf (json_path, sizeof json_path, "%s/chaos.json", s_dir);
    snprintf (script, sizeof script, "%s/bench/chaos/chaos.py", SPLITMESH_SOURCE_DIR);
    sm_cli_result_t *r = SM_SPLITMESH (60, "tiny-model", "--out", model, "--layers", "2", "--ctx", "256");
    cr_assert_eq (r->status, 0, "tiny-model failed: %s", r->err);
    sm_cli_result_destroy (&r);

    r = sm_cli_run (python, 150, NULL, (const char *const []) {
        "", script, "--bin-dir", sm_bin_dir (), "--model", model, "--json", json_path,
        "--run-dir", run, "--generations", "12", "--fault-every", "1", "--prompts", "6",
        "--tokens", "40", "--split", "1", "--format", "f32", "--draft-format", "w8",
        "--fault-at-partial", "2", "--stop-s", "2", "--restart-delay", "0.5",
        "--silence-s", "8", "--call-timeout-ms", "2000", "--expiry-ms", "10000",
        "--link", "rtt=4", "--draft-k", "2", "--start-timeout", "60", NULL });
    fprintf (stderr, "%s", r->err);
    printf ("%s", r->out);
    cr_assert_neq (r->status, -1, "the chaos harness hung (killed after %.0f s)", r->seconds);
    FILE *f = fopen (json_path, "r");
    cr_assert_not_null (f, "no chaos JSON (exit %d): %s", r->status, r->err);
    static char json [1 << 20];
    size_t len = fread (json, 1, sizeof json - 1, f);
    json [len] = '\0';
    fclose (f);

    //  Nothing left: the harness reaped each child, and no process names
    //  the run directory now.
    pid_t pids [64];
    cr_expect_eq (s_find (run, pids, 64), 0, "processes outlived the harness");
    cr_expect (strstr (json, "\"all_reaped\": true"), "the harness did not reap every process");
    cr_expect (strstr (json, "\"crash_logs\": []"), "a service crashed (see crash_logs)");

    //  Every fault kind ran, each during a generation.
    const char *kinds [] = {
        "kill9 tokenizer", "sigstop tokenizer", "kill9 split-prefix", "sigstop split-prefix",
        "kill9 cloud-target", "sigstop cloud-target", "kill9 edge-draft", "sigstop edge-draft",
        "restart broker-device", "restart broker-cloud", "restart proxy-device", "restart proxy-cloud"
    };
    const char *run_list = strstr (json, "\"fault_kinds_run\"");
    cr_assert_not_null (run_list);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds [0]; i++) {
        char quoted [64];
        snprintf (quoted, sizeof quoted, "\"%s\"", kinds [i]);
        cr_expect (strstr (run_list, quoted), "fault %s did not run", kinds [i]);
    }

    //  All generations complete; equal to the fault-free pass, or flagged.
    double completed = s_number (json, "completed");
    double equal = s_number (json, "equal_to_fault_free");
    double degraded = s_number (json, "degraded");
    cr_expect_eq (completed, 12, "%.0f of 12 generations completed (failed after retries: %.0f)",
                  completed, s_number (json, "failed"));
    cr_expect_geq (equal + degraded, 12, "%.0f equal to the fault-free run, %.0f degraded, of 12",
                   equal, degraded);
    cr_expect (strstr (json, "\"pass\": true"), "the harness' own verdict is fail (exit %d)", r->status);
    cr_expect_eq (r->status, 0);
    sm_cli_result_destroy (&r);
}
