/*  test_dashboard.c: headless Chromium loads the live dashboard under load.

    Starts splitmesh-broker, splitmesh-telemetry and an echo worker, runs
    traffic in a background thread, then loads http://.../ in Debian's
    `chromium --headless` twice: once with --dump-dom, whose output is
    parsed for every chart's data-count / data-values attributes (what the
    page's JavaScript drew, written into the DOM), which must be non-empty;
    once with --screenshot, saved under the build dir
    (test-artifacts/dashboard.png) for people to look at.

    The traffic. Until edge-draft's `generate` service exists, the
    background thread stands in for a generation: each echo round trip
    through the real broker plays one verify round, and the thread
    publishes, through core/metrics and the real telemetry bus, what
    edge-draft will: tokens generated, drafts proposed/accepted per
    position (a fixed pseudo-random acceptance pattern), time to first
    token, inter-token and verify latency (the measured round-trip times)
    and link bytes (the bytes sent and received). The broker publishes its
    own request counter. To run during a real generation instead, replace
    s_traffic_round with one `generate` call (and drop the publishing:
    edge-draft will do it); nothing else changes.

    Skips when chromium is not installed. Children are killed in .fini.
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include "metrics.h"
#include "sm_http.h"
#include "sm_mdp.h"
#include "sm_proc.h"
#include "sm_telemetry.h"

#define s_CHROMIUM "/usr/bin/chromium"

static sm_telemetry_mesh_t s_mesh;
static pthread_t s_thread;
static bool s_thread_started;
static atomic_bool s_stop;
static atomic_int s_rounds;

static void
s_fini (void)
{
    if (s_thread_started) {
        atomic_store (&s_stop, true);
        pthread_join (s_thread, NULL);
        s_thread_started = false;
    }
    sm_proc_kill_all ();
    sm_telemetry_mesh_stop (&s_mesh);
}

TestSuite (dashboard, .fini = s_fini, .timeout = 140);

//  ---------------------------------------------------------------------
//  Traffic

//  One round of the stand-in generation (see the file comment). `first`
//  marks the first round of a request (time to first token).
static void
s_traffic_round (metrics_t *m, int64_t request_start_us, bool first, unsigned *seed)
{
    int64_t start = zclock_usecs ();
    zmsg_t *body = sm_body_new (NULL, -1, -1);
    size_t sent = zmsg_content_size (body);
    zmsg_t *reply = sm_mdp_call (s_mesh.mdp, "echo", &body, 3000);
    if (!reply)
        return;
    double seconds = (double) (zclock_usecs () - start) / 1e6;
    const int k = 4;
    int accepted = rand_r (seed) % (k + 1);     //  accepted prefix of k drafts
    char labels [32];
    for (int pos = 0; pos < k; pos++) {
        snprintf (labels, sizeof labels, "pos=%d", pos);
        metrics_count (m, "drafts_proposed_total", labels, 1);
        if (pos < accepted)
            metrics_count (m, "drafts_accepted_total", labels, 1);
    }
    metrics_count (m, "tokens_generated_total", NULL, accepted + 1);
    metrics_observe (m, "verify_seconds", NULL, seconds);
    metrics_observe (m, "inter_token_seconds", NULL, seconds / (accepted + 1));
    if (first)
        metrics_observe (m, "ttft_seconds", NULL, (double) (zclock_usecs () - request_start_us) / 1e6);
    metrics_count (m, "link_bytes_total", "direction=up", (double) sent);
    metrics_count (m, "link_bytes_total", "direction=down", (double) zmsg_content_size (reply));
    zmsg_destroy (&reply);
    atomic_fetch_add (&s_rounds, 1);
}

static void *
s_traffic (void *arg)
{
    metrics_t *m = metrics_new ("edge-draft", "dashboard-test", s_mesh.xsub);
    unsigned seed = 7;
    while (m && !atomic_load (&s_stop)) {
        //  One "request" of 8 rounds, then a short pause.
        int64_t request_start = zclock_usecs ();
        for (int round = 0; round < 8 && !atomic_load (&s_stop); round++)
            s_traffic_round (m, request_start, round == 0, &seed);
        zclock_sleep (20);
    }
    metrics_destroy (&m);
    return NULL;
}

//  ---------------------------------------------------------------------
//  DOM parsing

//  Copies attribute `name` of the element whose id is `id` from the dumped
//  DOM into out (HTML entities for quotes decoded). Returns false if absent.
static bool
s_attribute (const char *dom, const char *id, const char *name, char *out, size_t size)
{
    char needle [128];
    snprintf (needle, sizeof needle, "id=\"%s\"", id);
    const char *element = strstr (dom, needle);
    if (!element)
        return false;
    const char *tag_end = strchr (element, '>');
    snprintf (needle, sizeof needle, " %s=\"", name);
    const char *attr = strstr (element, needle);
    if (!attr || !tag_end || attr > tag_end)
        return false;
    attr += strlen (needle);
    size_t n = 0;
    while (*attr && *attr != '"' && n + 1 < size) {
        if (strncmp (attr, "&quot;", 6) == 0) {
            out [n++] = '"';
            attr += 6;
        }
        else
        if (strncmp (attr, "&amp;", 5) == 0) {
            out [n++] = '&';
            attr += 5;
        }
        else
            out [n++] = *attr++;
    }
    out [n] = '\0';
    return true;
}

//  True if a JSON array in `values` holds at least one number.
static bool
s_has_number (const char *values)
{
    for (const char *p = strchr (values, '['); p && *p; p = strchr (p + 1, '[')) {
        const char *q = p + 1;
        while (*q == ' ')
            q++;
        if ((*q >= '0' && *q <= '9') || *q == '-')
            return true;
    }
    return false;
}

static char *
s_read_file (const char *path)
{
    FILE *file = fopen (path, "rb");
    if (!file)
        return NULL;
    fseek (file, 0, SEEK_END);
    long size = ftell (file);
    fseek (file, 0, SEEK_SET);
    char *data = (char *) malloc ((size_t) size + 1);
    size_t got = data? fread (data, 1, (size_t) size, file): 0;
    fclose (file);
    if (data)
        data [got] = '\0';
    return data;
}

//  Runs chromium headless on the dashboard with `mode_args` (up to 3);
//  stdout/stderr go to out_path. Returns the exit status or -1.
static int
s_chromium (const char *out_path, const char *profile, const char *a1, const char *a2, const char *a3)
{
    char url [64], profile_arg [600];
    snprintf (url, sizeof url, "http://127.0.0.1:%d/", s_mesh.http_port);
    snprintf (profile_arg, sizeof profile_arg, "--user-data-dir=%s", profile);
    pid_t pid = sm_spawn (out_path, s_CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
                          "--disable-extensions", "--mute-audio", profile_arg,
                          "--virtual-time-budget=4000", a1, a2, a3, url, NULL);
    cr_assert_gt (pid, 0, "cannot start chromium");
    int status = 0;
    if (sm_wait (pid, 60000, &status)) {
        sm_kill (pid, 9, 2000);
        cr_assert (false, "chromium did not finish within 60 s (output: %s)", out_path);
    }
    return WIFEXITED (status)? WEXITSTATUS (status): -1;
}

static bool
s_series_has_tokens (void *arg)
{
    (void) arg;
    sm_http_reply_t reply;
    bool ok = sm_http_get (s_mesh.http_port, "/api/series", 2000, &reply) == 0
           && reply.status == 200
           && strstr (reply.body, "\"edge-draft\":{");
    //  A point with traffic: a non-zero token rate.
    if (ok) {
        ok = false;
        for (const char *p = reply.body; (p = strstr (p, "\"tokens_per_s\":")); p++) {
            double v = strtod (p + 15, NULL);
            if (v > 0)
                ok = true;
        }
    }
    sm_http_reply_free (&reply);
    return ok;
}

Test (dashboard, charts_show_live_data_in_headless_chromium)
{
    if (access (s_CHROMIUM, X_OK))
        cr_skip_test ("%s not installed (Debian package chromium; scripts/install-deps.sh)", s_CHROMIUM);
    cr_assert_eq (sm_telemetry_mesh_start (&s_mesh, "sm-dashboard", 500, 3000), 0);
    pid_t worker = sm_spawn (s_mesh.log, "splitmesh-test-echo-worker", "-e", s_mesh.mdp,
                             "-s", "echo", "-n", "w1", "--delay-ms", "5", NULL);
    cr_assert_gt (worker, 0);
    cr_assert (sm_mdp_wait_workers (s_mesh.mdp, "echo", 1, 10000));
    atomic_store (&s_stop, false);
    cr_assert_eq (pthread_create (&s_thread, NULL, s_traffic, NULL), 0);
    s_thread_started = true;
    cr_assert (sm_poll_until (s_series_has_tokens, NULL, 15000, 200),
               "the dashboard series never showed traffic (log: %s)", s_mesh.log);

    //  Artifacts go next to the build: <build>/test-artifacts/.
    char artifacts [600], dom_path [700], png_path [700], profile [700], shot_log [700];
    snprintf (artifacts, sizeof artifacts, "%s/../test-artifacts", sm_bin_dir ());
    mkdir (artifacts, 0755);
    snprintf (dom_path, sizeof dom_path, "%s/dashboard-dom.html", artifacts);
    snprintf (png_path, sizeof png_path, "%s/dashboard.png", artifacts);
    snprintf (shot_log, sizeof shot_log, "%s/chromium-screenshot.log", s_mesh.dir);
    snprintf (profile, sizeof profile, "%s/chromium-profile", s_mesh.dir);
    unlink (dom_path);
    unlink (png_path);

    int rc = s_chromium (dom_path, profile, "--dump-dom", "--window-size=1280,900", "--disable-sync");
    char *dom = s_read_file (dom_path);
    cr_assert_not_null (dom, "no DOM written (%s)", dom_path);
    cr_assert_eq (rc, 0, "chromium --dump-dom exited with %d; output in %s", rc, dom_path);

    //  Every chart drew data and wrote it into the DOM.
    const char *charts [] = { "chart-tokens", "chart-acceptance", "chart-requests",
                              "chart-latency", "chart-link", "chart-health" };
    char count [32], values [16384];
    for (size_t i = 0; i < sizeof charts / sizeof charts [0]; i++) {
        cr_assert (s_attribute (dom, charts [i], "data-count", count, sizeof count),
                   "%s has no data-count in %s", charts [i], dom_path);
        cr_assert_gt (atoi (count), 0, "%s drew no data (data-count %s; DOM %s)", charts [i], count, dom_path);
        cr_assert (s_attribute (dom, charts [i], "data-values", values, sizeof values));
        if (!streq (charts [i], "chart-health"))
            cr_assert (s_has_number (values), "%s data-values hold no number: %s", charts [i], values);
        fprintf (stderr, "dashboard: %s data-count=%s data-values=%.160s\n", charts [i], count, values);
    }
    //  The health table lists the broker and the generating service as up.
    cr_assert (s_attribute (dom, "chart-health", "data-values", values, sizeof values));
    cr_assert (strstr (values, "\"broker\":{\"up\":true"), "%s", values);
    cr_assert (strstr (values, "\"edge-draft\":{\"up\":true"), "%s", values);
    cr_assert (strstr (dom, "data-service=\"broker\" data-up=\"true\""), "no broker row in the table");
    //  Acceptance is a ratio; the latency chart has the verify percentiles.
    cr_assert (s_attribute (dom, "chart-latency", "data-values", values, sizeof values));
    cr_assert (strstr (values, "\"verify p50\":["), "%s", values);
    cr_assert (s_attribute (dom, "acceptance-by-pos", "data-values", values, sizeof values));
    cr_assert (strstr (values, "\"0\":"), "acceptance by position missing: %s", values);
    free (dom);

    //  The screenshot, taken while traffic still flows.
    char screenshot_arg [800];
    snprintf (screenshot_arg, sizeof screenshot_arg, "--screenshot=%s", png_path);
    rc = s_chromium (shot_log, profile, screenshot_arg, "--window-size=1280,900", "--disable-sync");
    struct stat st;
    cr_assert_eq (stat (png_path, &st), 0, "chromium wrote no screenshot (exit %d, log: %s)", rc, shot_log);
    cr_assert_gt (st.st_size, 10000, "screenshot suspiciously small: %ld bytes", (long) st.st_size);
    fprintf (stderr, "dashboard: %d traffic rounds; DOM %s, screenshot %s (%ld bytes)\n",
             atomic_load (&s_rounds), dom_path, png_path, (long) st.st_size);
}
