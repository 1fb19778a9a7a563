/*  test_prometheus.c: a real Prometheus server scrapes splitmesh-telemetry.

    Starts splitmesh-broker (with its telemetry proxy), splitmesh-telemetry,
    one splitmesh-test-echo-worker and Debian's `prometheus` with a
    temporary config that scrapes the telemetry service every second. The
    test makes N requests through the broker, waits for scrapes, and asks
    Prometheus' HTTP API for the broker's request counter: it must be N
    exactly, and stay N on later scrapes (nothing counted twice). The
    counter travels the whole path: broker -> metrics publisher -> XSUB/XPUB
    proxy -> splitmesh-telemetry -> /metrics -> Prometheus TSDB -> PromQL.
    Skips when prometheus is not installed. Every child (prometheus
    included) is killed and reaped in .fini.
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <math.h>
#include "sm_http.h"
#include "sm_mdp.h"
#include "sm_proc.h"
#include "sm_telemetry.h"

#define s_PROMETHEUS "/usr/bin/prometheus"
#define s_REQUESTS 25

static sm_telemetry_mesh_t s_mesh;

static void
s_fini (void)
{
    sm_proc_kill_all ();            //  prometheus and the worker too
    sm_telemetry_mesh_stop (&s_mesh);
}

TestSuite (prometheus, .fini = s_fini, .timeout = 100);

//  Percent-encodes a PromQL expression for a query string.
static void
s_url_encode (const char *text, char *out, size_t size)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *) text; *p && n + 4 < size; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
        ||  *p == '_' || *p == '.' || *p == '-')
            out [n++] = (char) *p;
        else
            n += (size_t) snprintf (out + n, size - n, "%%%02X", *p);
    }
    out [n] = '\0';
}

//  Runs an instant query; returns the first result's value, or NAN when
//  the result is empty or Prometheus does not answer.
static double
s_query (int port, const char *promql)
{
    char encoded [1024], path [1200];
    s_url_encode (promql, encoded, sizeof encoded);
    snprintf (path, sizeof path, "/api/v1/query?query=%s", encoded);
    sm_http_reply_t reply;
    double value = NAN;
    if (sm_http_get (port, path, 3000, &reply) == 0 && reply.status == 200
    &&  strstr (reply.body, "\"status\":\"success\"")) {
        //  ..."value":[1700000000.123,"25"]...
        const char *v = strstr (reply.body, "\"value\":[");
        const char *quote = v? strchr (v + 9, '"'): NULL;
        if (quote)
            value = strtod (quote + 1, NULL);
    }
    sm_http_reply_free (&reply);
    return value;
}

static bool
s_ready (void *arg)
{
    sm_http_reply_t reply;
    bool ok = sm_http_get (*(int *) arg, "/-/ready", 1000, &reply) == 0 && reply.status == 200;
    sm_http_reply_free (&reply);
    return ok;
}

Test (prometheus, scraped_request_counter_equals_requests_made)
{
    if (access (s_PROMETHEUS, X_OK))
        cr_skip_test ("%s not installed (Debian package prometheus; scripts/install-deps.sh)",
                      s_PROMETHEUS);
    cr_assert_eq (sm_telemetry_mesh_start (&s_mesh, "sm-prometheus", 1000, 3000), 0);
    pid_t worker = sm_spawn (s_mesh.log, "splitmesh-test-echo-worker", "-e", s_mesh.mdp,
                             "-s", "echo", "-n", "w1", NULL);
    cr_assert_gt (worker, 0);
    cr_assert (sm_mdp_wait_workers (s_mesh.mdp, "echo", 1, 10000), "echo worker not registered");

    //  Prometheus: scrape splitmesh-telemetry every second.
    char config [600], tsdb [600];
    snprintf (config, sizeof config, "%s/prometheus.yml", s_mesh.dir);
    snprintf (tsdb, sizeof tsdb, "%s/tsdb", s_mesh.dir);
    FILE *file = fopen (config, "w");
    cr_assert_not_null (file);
    fprintf (file,
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: splitmesh\n"
        "    honor_labels: true\n"          //  keep our service/instance labels
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 900ms\n"
        "    static_configs:\n"
        "      - targets: ['127.0.0.1:%d']\n", s_mesh.http_port);
    fclose (file);
    int port = sm_free_tcp_port ();
    char config_arg [700], tsdb_arg [700], listen_arg [100];
    snprintf (config_arg, sizeof config_arg, "--config.file=%s", config);
    snprintf (tsdb_arg, sizeof tsdb_arg, "--storage.tsdb.path=%s", tsdb);
    snprintf (listen_arg, sizeof listen_arg, "--web.listen-address=127.0.0.1:%d", port);
    pid_t prometheus = sm_spawn (s_mesh.log, s_PROMETHEUS, config_arg, tsdb_arg, listen_arg,
                                 "--log.level=warn", NULL);
    cr_assert_gt (prometheus, 0);
    cr_assert (sm_poll_until (s_ready, &port, 30000, 200),
               "prometheus not ready within 30 s (log: %s)", s_mesh.log);

    //  N requests through the broker.
    for (int i = 0; i < s_REQUESTS; i++) {
        zmsg_t *body = sm_body_new (NULL, -1, -1);
        zmsg_t *reply = sm_mdp_call (s_mesh.mdp, "echo", &body, 5000);
        cr_assert_not_null (reply, "request %d got no reply", i);
        int64_t status = 0;
        cr_assert_eq (sm_body_int (reply, "status", &status), 0);
        cr_assert_eq (status, 200);
        zmsg_destroy (&reply);
    }

    //  The target is up and the counter reaches N.
    const char *promql = "sum(splitmesh_broker_requests_total{mdp_service=\"echo\",status=\"200\"})";
    double value = NAN;
    int64_t until = zclock_mono () + 30000;
    while (zclock_mono () < until) {
        value = s_query (port, promql);
        if (value == s_REQUESTS)
            break;
        cr_assert (isnan (value) || value < s_REQUESTS, "counter overshot: %g > %d", value, s_REQUESTS);
        zclock_sleep (250);
    }
    cr_assert_eq (value, s_REQUESTS, "Prometheus says %g requests, %d were made (log: %s)",
                  value, s_REQUESTS, s_mesh.log);
    cr_assert_eq (s_query (port, "up{job=\"splitmesh\"}"), 1);
    //  The broker's gauges arrive too: one echo worker, nothing queued.
    //  Gauges ride the broker's 1 s tick, so wait (bounded) for a scrape
    //  that holds them rather than asking once.
    double workers = NAN, depth = NAN;
    until = zclock_mono () + 15000;
    while (zclock_mono () < until) {
        workers = s_query (port, "splitmesh_broker_workers{mdp_service=\"echo\"}");
        depth = s_query (port, "splitmesh_broker_queue_depth{mdp_service=\"echo\"}");
        if (workers == 1 && depth == 0)
            break;
        zclock_sleep (250);
    }
    cr_assert_eq (workers, 1, "Prometheus says %g echo workers, 1 is running", workers);
    cr_assert_eq (depth, 0, "Prometheus says %g requests queued, none are", depth);
    //  The exposition says the same, and later scrapes do not change it.
    sm_http_reply_t reply;
    cr_assert_eq (sm_http_get (s_mesh.http_port, "/metrics", 3000, &reply), 0);
    char line [128];
    snprintf (line, sizeof line, ",mdp_service=\"echo\",status=\"200\"} %d\n", s_REQUESTS);
    cr_assert (strstr (reply.body, line), "/metrics lacks '%s':\n%s", line, reply.body);
    sm_http_reply_free (&reply);
    zclock_sleep (2500);
    cr_assert_eq (s_query (port, promql), s_REQUESTS, "counter moved without requests");
    //  Prometheus saw more than one scrape of it (the series is a real time series).
    double samples = s_query (port, "count_over_time(splitmesh_broker_requests_total{mdp_service=\"echo\",status=\"200\"}[1m])");
    cr_assert_geq (samples, 2, "only %g samples scraped", samples);
    fprintf (stderr, "prometheus: %d requests made, PromQL %s = %g (%g samples)\n",
             s_REQUESTS, promql, value, samples);
}
