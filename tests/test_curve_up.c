/*  test_curve_up.c: `splitmesh up --crypt`, the whole pipeline over CurveZMQ.

    Issue 6 wants the crypt-proxy in the mesh a user starts, not only in
    test rigs: `up --crypt` makes keys in the run dir, starts a device
    broker and a cloud broker with the crypt-proxy pair between them, and
    edge-draft reaches cloud-target only through that pair. This test
    starts such a mesh on a tiny generated model and checks:

    - the keys exist (server, device, and the device's public certificate
      in the allow directory), mesh.env names the CURVE link;
    - `generate` runs and gives the same tokens as the same model in a
      mesh without --crypt (greedy), so the bridge passes everything through;
    - the crypt-proxy metrics (splitmesh_crypt_proxy_*) reach
      splitmesh-telemetry: both roles counted 200 requests and link bytes
      both ways, and the in-flight gauge is there; and the requests the
      device proxy answered equal the ones the cloud proxy answered (no
      request lost on the way);
    - the link is the only way: when the cloud proxy is stopped, the next
      generation cannot reach cloud-target: edge-draft reports it degraded
      (draft model alone, the design's answer to an unreachable cloud) or
      it fails; it never comes back as a normal cloud-verified answer.
*/
#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sm_cli.h"
#include "sm_crypt.h"
#include "sm_http.h"
#include "sm_proc.h"

static char *s_dir;
static char s_run_dir [1024], s_plain_dir [1024], s_model [1024];

static void
s_fini (void)
{
    if (s_dir) {
        sm_mesh_teardown (s_run_dir);
        sm_mesh_teardown (s_plain_dir);
        sm_tmpdir_remove (&s_dir);
    }
    sm_proc_kill_all ();
}

TestSuite (curve_up, .fini = s_fini, .timeout = 150);

static void
s_need_binaries (void)
{
    const char *names [] = { "splitmesh-broker", "splitmesh-tokenizer", "splitmesh-split-prefix",
                             "splitmesh-cloud-target", "splitmesh-edge-draft",
                             "splitmesh-crypt-proxy", "splitmesh-telemetry" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        char path [PATH_MAX];
        snprintf (path, sizeof path, "%s/%s", sm_bin_dir (), names [i]);
        if (access (path, X_OK))
            cr_skip_test ("%s is not built", names [i]);
    }
}

static int32_t *
s_generate (const char *run_dir, size_t *n)
{
    sm_cli_result_t *r = SM_SPLITMESH (90, "generate", "--run-dir", run_dir, "--json",
                                       "-n", "24", "--draft-k", "4", "--timeout", "30",
                                       "Over the encrypted link, tell me a story");
    cr_assert_eq (r->status, 0, "generate in %s failed:\n%s\n%s", run_dir, r->out, r->err);
    int32_t *tokens = sm_json_ints (r->out, "tokens", n);
    cr_assert (tokens && *n > 0, "no tokens in %s", r->out);
    sm_cli_result_destroy (&r);
    return tokens;
}

//  Sum of the samples of `name` in a Prometheus text whose labels contain
//  every string of `labels` (NULL-terminated); NAN when none matches.
static double
s_metric (const char *text, const char *name, const char *const *labels)
{
    double sum = NAN;
    size_t len = strlen (name);
    for (const char *line = text; line && *line; ) {
        const char *end = strchr (line, '\n');
        size_t size = end? (size_t) (end - line): strlen (line);
        if (size > len && strncmp (line, name, len) == 0 && (line [len] == '{' || line [len] == ' ')) {
            char buf [2048];
            snprintf (buf, sizeof buf, "%.*s", (int) (size < sizeof buf? size: sizeof buf - 1), line);
            bool match = true;
            for (int i = 0; labels && labels [i] && match; i++)
                match = strstr (buf, labels [i]) != NULL;
            const char *value = strrchr (buf, ' ');
            if (match && value)
                sum = (isnan (sum)? 0: sum) + atof (value + 1);
        }
        line = end? end + 1: NULL;
    }
    return sum;
}

#define LABELS(...) ((const char *const []) { __VA_ARGS__, NULL })

Test (curve_up, generate_through_the_proxy_pair_with_metrics)
{
    s_need_binaries ();
    s_dir = sm_tmpdir_new ("curve_up");
    cr_assert (s_dir);
    snprintf (s_run_dir, sizeof s_run_dir, "%s/run", s_dir);
    snprintf (s_plain_dir, sizeof s_plain_dir, "%s/plain", s_dir);
    snprintf (s_model, sizeof s_model, "%s/tiny.gguf", s_dir);
    sm_cli_result_t *r = SM_SPLITMESH (60, "tiny-model", "--out", s_model, "--layers", "4",
                                       "--seed", "5", "--ctx", "256");
    cr_assert_eq (r->status, 0, "%s", r->err);
    sm_cli_result_destroy (&r);

    //  Reference: the same model without --crypt.
    r = SM_SPLITMESH (120, "up", "--run-dir", s_plain_dir, "--model", s_model, "--split", "2",
                      "--no-telemetry", "--no-gateway", "--timeout", "60");
    cr_assert_eq (r->status, 0, "plain up failed:\n%s\n%s", r->out, r->err);
    sm_cli_result_destroy (&r);
    size_t n_plain = 0;
    int32_t *plain = s_generate (s_plain_dir, &n_plain);
    sm_mesh_teardown (s_plain_dir);

    r = SM_SPLITMESH (120, "up", "--crypt", "--run-dir", s_run_dir, "--model", s_model,
                      "--split", "2", "--no-gateway", "--timeout", "60");
    cr_assert_eq (r->status, 0, "up --crypt failed:\n%s\n%s", r->out, r->err);
    cr_assert (strstr (r->out, "crypt link"), "up did not report the crypt link:\n%s", r->out);
    sm_cli_result_destroy (&r);

    //  Keys and state.
    const char *files [] = { "keys/server", "keys/server_secret", "keys/device",
                             "keys/device_secret", "keys/allow/device" };
    for (size_t i = 0; i < sizeof files / sizeof files [0]; i++) {
        char path [1200];
        snprintf (path, sizeof path, "%s/%s", s_run_dir, files [i]);
        cr_assert_eq (access (path, R_OK), 0, "missing %s", path);
    }
    char link [256] = "", port [32] = "";
    cr_assert_eq (sm_mesh_env (s_run_dir, "SPLITMESH_CRYPT_LINK", link, sizeof link), 0);
    cr_assert_gt (sm_endpoint_port (link), 0, "bad crypt link '%s'", link);
    cr_assert_eq (sm_mesh_env (s_run_dir, "SPLITMESH_TELEMETRY_PORT", port, sizeof port), 0);
    int http_port = atoi (port);
    cr_assert_gt (http_port, 0);

    //  The pipeline over CurveZMQ gives the same answer.
    size_t n = 0;
    int32_t *tokens = s_generate (s_run_dir, &n);
    cr_assert_eq (n, n_plain, "--crypt gave %zu tokens, plain %zu", n, n_plain);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq (tokens [i], plain [i], "token %zu: crypt %d, plain %d", i, tokens [i], plain [i]);
    free (tokens);
    free (plain);

    //  The proxies' metrics on the telemetry service (published every
    //  250 ms; poll up to 10 s for both roles to show up).
    double dev_ok = NAN, cloud_ok = NAN, dev_sent = NAN, dev_recv = NAN,
           cloud_sent = NAN, cloud_recv = NAN, inflight = NAN;
    double last_ok = NAN, last_sent = NAN, last_recv = NAN;
    for (int attempt = 0; attempt < 40; attempt++) {
        sm_http_reply_t reply;
        if (sm_http_get (http_port, "/metrics", 2000, &reply) == 0 && reply.status == 200) {
            const char *text = reply.body;
            const char *bytes = "splitmesh_crypt_proxy_link_bytes_total";
            dev_ok = s_metric (text, "splitmesh_crypt_proxy_requests_total",
                               LABELS ("role=\"device\"", "status=\"200\""));
            cloud_ok = s_metric (text, "splitmesh_crypt_proxy_requests_total",
                                 LABELS ("role=\"cloud\"", "status=\"200\""));
            dev_sent = s_metric (text, bytes, LABELS ("role=\"device\"", "direction=\"sent\""));
            dev_recv = s_metric (text, bytes, LABELS ("role=\"device\"", "direction=\"received\""));
            cloud_sent = s_metric (text, bytes, LABELS ("role=\"cloud\"", "direction=\"sent\""));
            cloud_recv = s_metric (text, bytes, LABELS ("role=\"cloud\"", "direction=\"received\""));
            inflight = s_metric (text, "splitmesh_crypt_proxy_inflight", LABELS ("role=\"device\""));
        }
        sm_http_reply_free (&reply);
        //  Metrics arrive every 250 ms per process, so one scrape can show
        //  a consistent but partial picture: wait for two equal scrapes.
        bool consistent = dev_ok > 0 && cloud_ok == dev_ok && dev_sent > 0 && dev_recv > 0
                       && cloud_sent == dev_recv && cloud_recv == dev_sent && !isnan (inflight);
        if (consistent && dev_ok == last_ok && dev_sent == last_sent && dev_recv == last_recv)
            break;
        last_ok = dev_ok;
        last_sent = dev_sent;
        last_recv = dev_recv;
        usleep (300 * 1000);
    }
    cr_log_info ("crypt-proxy metrics: requests 200 device %.0f cloud %.0f; link bytes device "
                 "sent %.0f received %.0f, cloud sent %.0f received %.0f; inflight %.0f",
                 dev_ok, cloud_ok, dev_sent, dev_recv, cloud_sent, cloud_recv, inflight);
    cr_assert_gt (dev_ok, 1, "device proxy: no 200 requests in the metrics");
    cr_assert_eq (cloud_ok, dev_ok, "the cloud proxy answered %.0f, the device proxy %.0f",
                  cloud_ok, dev_ok);
    //  The same messages cross the link: what one side sends the other receives.
    cr_assert_gt (dev_sent, 0);
    cr_assert_gt (dev_recv, 0);
    cr_assert_eq (cloud_recv, dev_sent, "link bytes device->cloud: sent %.0f, received %.0f",
                  dev_sent, cloud_recv);
    cr_assert_eq (cloud_sent, dev_recv, "link bytes cloud->device: sent %.0f, received %.0f",
                  cloud_sent, dev_recv);
    cr_assert (!isnan (inflight), "no splitmesh_crypt_proxy_inflight gauge");

    //  No way around the link: without the cloud proxy, generation fails.
    int cloud_pid = -1;
    FILE *env = NULL;
    {
        char path [1200], line [512];
        snprintf (path, sizeof path, "%s/mesh.env", s_run_dir);
        env = fopen (path, "r");
        while (env && fgets (line, sizeof line, env))
            if (sscanf (line, "SPLITMESH_PROC='crypt-proxy-cloud %d", &cloud_pid) == 1)
                break;
        if (env)
            fclose (env);
    }
    cr_assert_gt (cloud_pid, 0, "no crypt-proxy-cloud in mesh.env");
    cr_assert_eq (kill (cloud_pid, SIGTERM), 0);
    for (int i = 0; i < 50 && kill (cloud_pid, 0) == 0; i++)
        usleep (100 * 1000);
    r = SM_SPLITMESH (90, "generate", "--run-dir", s_run_dir, "--json", "-n", "8",
                      "--timeout", "30", "Is anybody there?");
    cr_assert (r->status != 0 || strstr (r->out, "\"degraded\":true"),
               "generate reached the cloud without the cloud proxy:\n%s", r->out);
    cr_log_info ("without the cloud proxy: status %d, %s", r->status, r->out);
    sm_cli_result_destroy (&r);
}
