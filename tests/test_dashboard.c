/*  test_dashboard.c: headless Chromium loads the live dashboard during real
    generations, and what it draws matches what the generations did.

    `splitmesh up` on a tiny model (sm_gateway.h; the real model's
    vocabulary when present) WITH splitmesh-telemetry: every service
    publishes its own metrics. A background thread runs real `generate`
    requests (greedy, speculative with the draft model)
    through the device broker and adds up what their FINAL stats say.
    Meanwhile Debian's `chromium --headless` loads http://.../ twice:
    --dump-dom, whose output is parsed for every chart's data-count /
    data-values attributes (what the page's JavaScript drew, written into
    the DOM), and --screenshot (test-artifacts/dashboard.png under the
    build dir; docs/dashboard.png is a copy of one).

    Live checks: every chart is non-empty, tokens/s > 0, every acceptance
    point in (0, 1], link bytes/s > 0, all six services up. Then the
    traffic stops, and once /metrics has caught up a third load checks the
    dashboard's totals line against the sum of the FINAL stats: tokens,
    prompt tokens, drafts proposed and accepted, acceptance ratio, link
    bytes up and down.

    Skips when chromium is not installed. The mesh is torn down in .fini.
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <pthread.h>
#include <stdatomic.h>
#include <math.h>
#include <sys/stat.h>
#include "sm_cli.h"
#include "sm_gateway.h"
#include "sm_http.h"
#include "sm_proc.h"

#define s_CHROMIUM "/usr/bin/chromium"

static sm_mesh_t s_mesh;
static pthread_t s_thread;
static bool s_thread_started;
static atomic_bool s_stop;

//  What the finished generations reported in their FINAL stats.
typedef struct {
    pthread_mutex_t lock;
    int generations, failures;
    uint64_t tokens, prompt, proposed, accepted, up, down;
    char last_error [600];
} s_totals_t;

static s_totals_t s_totals = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void
s_fini (void)
{
    if (s_thread_started) {
        atomic_store (&s_stop, true);
        pthread_join (s_thread, NULL);
        s_thread_started = false;
    }
    sm_mesh_down (&s_mesh);
}

TestSuite (dashboard, .fini = s_fini, .timeout = 170);

//  ---------------------------------------------------------------------
//  Traffic: real generations, one after another, until told to stop.

static void *
s_traffic (void *arg)
{
    (void) arg;
    const char *prompts [] = { "The capital of France is", "Once upon a time there was",
                               "Write a short poem about the sea", "List three colours:" };
    for (unsigned i = 0; !atomic_load (&s_stop); i++) {
        sm_gen_result_t *r = sm_generate_simple (s_mesh.broker, prompts [i % 4], 48,
                                                 0.0, 0, 100 + i, 4, "model",
                                                 "speculative", 30000);
        pthread_mutex_lock (&s_totals.lock);
        if (r && r->status == 0 && r->has_stats) {
            s_totals.generations++;
            s_totals.tokens += r->n_tokens;
            s_totals.prompt += r->prompt_tokens;
            s_totals.proposed += r->drafts_proposed;
            s_totals.accepted += r->drafts_accepted;
            s_totals.up += r->link_bytes_up;
            s_totals.down += r->link_bytes_down;
        }
        else {
            s_totals.failures++;
            snprintf (s_totals.last_error, sizeof s_totals.last_error, "%d %s",
                      r? r->status: -1, r? r->error: "no result");
        }
        pthread_mutex_unlock (&s_totals.lock);
        sm_gen_result_destroy (&r);
    }
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
    snprintf (url, sizeof url, "http://127.0.0.1:%d/", s_mesh.telemetry_port);
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
    bool ok = sm_http_get (s_mesh.telemetry_port, "/api/series", 2000, &reply) == 0
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

//  The numbers in a JSON text, in order (at most max). Returns how many.
static int
s_numbers (const char *json, double *out, int max)
{
    int n = 0;
    for (const char *p = json; *p && n < max; p++) {
        bool start = (*p >= '0' && *p <= '9') || (*p == '-' && p [1] >= '0' && p [1] <= '9');
        //  Skip digits inside keys ("p50", "0": ...): numbers follow ':' ',' or '['.
        const char *q = p;
        while (q > json && q [-1] == ' ')
            q--;
        if (start && q > json && (q [-1] == ':' || q [-1] == ',' || q [-1] == '[')) {
            char *end;
            out [n++] = strtod (p, &end);
            p = end - 1;
        }
        else
        if (*p == '"') {
            const char *close = strchr (p + 1, '"');   //  skip strings (keys)
            if (!close)
                break;
            p = close;
        }
    }
    return n;
}

//  Loads the dashboard with --dump-dom; returns the DOM (caller frees).
static char *
s_dump_dom (const char *dom_path, const char *profile)
{
    unlink (dom_path);
    int rc = s_chromium (dom_path, profile, "--dump-dom", "--window-size=1280,900", "--disable-sync");
    char *dom = s_read_file (dom_path);
    cr_assert_not_null (dom, "no DOM written (%s)", dom_path);
    cr_assert_eq (rc, 0, "chromium --dump-dom exited with %d; output in %s", rc, dom_path);
    return dom;
}

static double
s_metric_tokens (void)
{
    char *text = sm_prom_scrape (s_mesh.telemetry_port);
    int found = 0;
    double v = text? sm_prom_sum (text, "splitmesh_tokens_generated_total", &found,
                                   "service=\"edge-draft\"", NULL): -1;
    free (text);
    return v;
}

Test (dashboard, charts_show_live_generations_in_headless_chromium)
{
    if (access (s_CHROMIUM, X_OK))
        cr_skip_test ("%s not installed (Debian package chromium; scripts/install-deps.sh)", s_CHROMIUM);
    char err [4096];
    cr_assert_eq (sm_mesh_prepare (&s_mesh, "sm-dashboard", err, sizeof err), 0, "%s", err);
    s_mesh.telemetry = true;
    cr_assert_eq (sm_mesh_up (&s_mesh, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_gt (s_mesh.telemetry_port, 0, "up printed no telemetry port");
    atomic_store (&s_stop, false);
    cr_assert_eq (pthread_create (&s_thread, NULL, s_traffic, NULL), 0);
    s_thread_started = true;
    cr_assert (sm_poll_until (s_series_has_tokens, NULL, 30000, 200),
               "the dashboard series never showed generated tokens (run dir %s; last error %s)",
               s_mesh.run_dir, s_totals.last_error);

    //  Artifacts go next to the build: <build>/test-artifacts/.
    char artifacts [600], dom_path [700], png_path [700], profile [1200], shot_log [1200];
    snprintf (artifacts, sizeof artifacts, "%s/../test-artifacts", sm_bin_dir ());
    mkdir (artifacts, 0755);
    snprintf (dom_path, sizeof dom_path, "%s/dashboard-dom.html", artifacts);
    snprintf (png_path, sizeof png_path, "%s/dashboard.png", artifacts);
    snprintf (shot_log, sizeof shot_log, "%s/chromium-screenshot.log", s_mesh.dir);
    snprintf (profile, sizeof profile, "%s/chromium-profile", s_mesh.dir);
    unlink (png_path);

    //  1. During the generations: every chart drew data into the DOM.
    char *dom = s_dump_dom (dom_path, profile);
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
    //  ... and what they drew is what generations look like.
    double v [512];
    cr_assert (s_attribute (dom, "chart-tokens", "data-values", values, sizeof values));
    int n = s_numbers (values, v, 512);
    double best = 0;
    for (int i = 0; i < n; i++)
        best = v [i] > best? v [i]: best;
    cr_assert_gt (best, 0, "tokens/s never above 0: %s", values);
    cr_assert (s_attribute (dom, "chart-acceptance", "data-values", values, sizeof values));
    n = s_numbers (values, v, 512);
    cr_assert_gt (n, 0, "no acceptance point: %s", values);
    for (int i = 0; i < n; i++)
        cr_assert (v [i] > 0 && v [i] <= 1, "acceptance point %g outside (0, 1]: %s", v [i], values);
    cr_assert (s_attribute (dom, "chart-link", "data-values", values, sizeof values));
    n = s_numbers (values, v, 512);
    best = 0;
    for (int i = 0; i < n; i++)
        best = v [i] > best? v [i]: best;
    cr_assert_gt (best, 0, "link bytes/s never above 0: %s", values);
    cr_assert (s_attribute (dom, "chart-latency", "data-values", values, sizeof values));
    cr_assert (strstr (values, "\"verify p50\":["), "%s", values);
    cr_assert (strstr (values, "\"ttft p50\":["), "%s", values);
    cr_assert (s_attribute (dom, "acceptance-by-pos", "data-values", values, sizeof values));
    cr_assert (strstr (values, "\"0\":"), "acceptance by position missing: %s", values);
    n = s_numbers (values, v, 512);
    for (int i = 0; i < n; i++)
        cr_assert (v [i] >= 0 && v [i] <= 1, "acceptance by position %g outside [0, 1]: %s", v [i], values);
    cr_assert (s_attribute (dom, "chart-health", "data-values", values, sizeof values));
    const char *services [] = { "broker", "tokenizer", "split-prefix", "cloud-target", "edge-draft", "gateway" };
    for (size_t i = 0; i < sizeof services / sizeof services [0]; i++) {
        char needle [64];
        snprintf (needle, sizeof needle, "\"%s\":{\"up\":true", services [i]);
        cr_assert (strstr (values, needle), "%s not shown up: %s", services [i], values);
    }
    cr_assert (strstr (dom, "data-service=\"edge-draft\" data-up=\"true\""), "no edge-draft row in the table");
    free (dom);

    //  2. The screenshot, taken while the generations still run.
    char screenshot_arg [800];
    snprintf (screenshot_arg, sizeof screenshot_arg, "--screenshot=%s", png_path);
    int rc = s_chromium (shot_log, profile, screenshot_arg, "--window-size=1280,900", "--disable-sync");
    struct stat st;
    cr_assert_eq (stat (png_path, &st), 0, "chromium wrote no screenshot (exit %d, log: %s)", rc, shot_log);
    cr_assert_gt (st.st_size, 10000, "screenshot suspiciously small: %ld bytes", (long) st.st_size);

    //  3. Stop the traffic; once /metrics shows every token, the totals
    //  line must equal the sum of the FINAL stats.
    atomic_store (&s_stop, true);
    pthread_join (s_thread, NULL);
    s_thread_started = false;
    pthread_mutex_lock (&s_totals.lock);
    s_totals_t t = s_totals;
    pthread_mutex_unlock (&s_totals.lock);
    cr_assert_eq (t.failures, 0, "%d generations failed (last: %s)", t.failures, t.last_error);
    cr_assert_gt (t.generations, 0);
    cr_assert_gt (t.proposed, 0);
    int64_t end = zclock_mono () + 10000;
    while (s_metric_tokens () != (double) t.tokens && zclock_mono () < end)
        zclock_sleep (100);
    cr_assert_eq (s_metric_tokens (), (double) t.tokens, "/metrics never showed the %llu tokens",
                  (unsigned long long) t.tokens);
    zclock_sleep (600);         //  two more flushes: the other counters of the last FINAL
    dom = s_dump_dom (dom_path, profile);
    cr_assert (s_attribute (dom, "totals", "data-values", values, sizeof values), "no totals in the DOM");
    double tokens, prompt, proposed, accepted, acceptance, up, down;
    cr_assert_eq (sm_json_number (values, "tokens", &tokens), 0, "%s", values);
    cr_assert_eq (sm_json_number (values, "prompt_tokens", &prompt), 0, "%s", values);
    cr_assert_eq (sm_json_number (values, "drafts_proposed", &proposed), 0, "%s", values);
    cr_assert_eq (sm_json_number (values, "drafts_accepted", &accepted), 0, "%s", values);
    cr_assert_eq (sm_json_number (values, "acceptance", &acceptance), 0, "%s", values);
    cr_assert_eq (sm_json_number (values, "link_bytes_up", &up), 0, "%s", values);
    cr_assert_eq (sm_json_number (values, "link_bytes_down", &down), 0, "%s", values);
    cr_assert_eq (tokens, (double) t.tokens, "%s", values);
    cr_assert_eq (prompt, (double) t.prompt, "%s", values);
    cr_assert_eq (proposed, (double) t.proposed, "%s", values);
    cr_assert_eq (accepted, (double) t.accepted, "%s", values);
    double ratio = (double) t.accepted / (double) t.proposed;
    cr_assert (acceptance > 0 && acceptance <= 1 && fabs (acceptance - ratio) < 1e-6,
               "dashboard acceptance %g, FINAL stats %llu/%llu = %g", acceptance,
               (unsigned long long) t.accepted, (unsigned long long) t.proposed, ratio);
    cr_assert_eq (up, (double) t.up, "%s", values);
    cr_assert_eq (down, (double) t.down, "%s", values);
    cr_assert_gt (up, 0);
    free (dom);
    fprintf (stderr, "dashboard: %d generations, %llu tokens, acceptance %.3f (%llu/%llu), link %llu B up "
             "%llu B down: the dashboard shows the same; screenshot %s (%ld bytes)\n",
             t.generations, (unsigned long long) t.tokens, ratio, (unsigned long long) t.accepted,
             (unsigned long long) t.proposed, (unsigned long long) t.up, (unsigned long long) t.down,
             png_path, (long) st.st_size);
}
