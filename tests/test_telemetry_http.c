/*  test_telemetry_http.c: splitmesh-telemetry as a real process.

    Starts `splitmesh-broker` (with its telemetry proxy) and
    `splitmesh-telemetry` in a temp dir; the test process publishes with
    core/metrics like any service would and reads the HTTP endpoints:
    /metrics (values, content type), /health (up, then down after the
    publisher goes away), /api/series, the dashboard files, 404/405 JSON
    errors, and garbage on the bus, which is counted and does not stop the
    service. Children are killed and reaped in .fini.
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <math.h>
#include <pthread.h>
#include <sys/wait.h>
#include "metrics.h"
#include "sm_http.h"
#include "sm_proc.h"
#include "sm_telemetry.h"

static sm_telemetry_mesh_t s_mesh;

static void
s_init (void)
{
    cr_assert_eq (sm_telemetry_mesh_start (&s_mesh, "sm-telemetry-http", 200, 1000), 0,
                  "cannot start broker + splitmesh-telemetry");
}

static void
s_fini (void)
{
    sm_proc_kill_all ();
    sm_telemetry_mesh_stop (&s_mesh);
}

TestSuite (telemetry_http, .init = s_init, .fini = s_fini, .timeout = 60);

static char *
s_get (const char *path, int expect_status, char *content_type, size_t type_size)
{
    sm_http_reply_t reply;
    cr_assert_eq (sm_http_get (s_mesh.http_port, path, 3000, &reply), 0, "GET %s failed", path);
    cr_assert_eq (reply.status, expect_status, "GET %s: status %d, body %s", path, reply.status, reply.body);
    if (content_type)
        cr_assert_not_null (sm_http_header (&reply, "Content-Type", content_type, type_size));
    char *body = reply.body;
    reply.body = NULL;
    sm_http_reply_free (&reply);
    return body;
}

Test (telemetry_http, metrics_from_a_publisher_appear_in_the_exposition)
{
    metrics_t *m = metrics_new ("tester", "t:1", s_mesh.xsub);
    cr_assert_not_null (m);
    cr_assert (metrics_wait_subscriber (m, 5000), "no subscriber reached the publisher");
    for (int i = 0; i < 42; i++)
        metrics_count (m, "requests_total", "status=200", 1);
    metrics_observe (m, "verify_seconds", NULL, 0.02);
    metrics_observe (m, "verify_seconds", NULL, 0.2);
    metrics_gauge (m, "kv_cache_positions", NULL, 1234);
    metrics_flush (m);
    double last = NAN;
    cr_assert (sm_telemetry_wait_sample (s_mesh.http_port,
               "splitmesh_requests_total{service=\"tester\",instance=\"t:1\",status=\"200\"}",
               42, 5000, &last), "counter not 42 (last %g)", last);
    char type [128];
    char *text = s_get ("/metrics", 200, type, sizeof type);
    cr_assert_str_eq (type, "text/plain; version=0.0.4; charset=utf-8");
    cr_assert (strstr (text, "splitmesh_verify_seconds_count{service=\"tester\",instance=\"t:1\"} 2\n"), "%s", text);
    cr_assert (strstr (text, "splitmesh_verify_seconds_bucket{service=\"tester\",instance=\"t:1\",le=\"0.025\"} 1\n"));
    cr_assert (strstr (text, "splitmesh_verify_seconds_bucket{service=\"tester\",instance=\"t:1\",le=\"0.25\"} 2\n"));
    cr_assert (strstr (text, "splitmesh_kv_cache_positions{service=\"tester\",instance=\"t:1\"} 1234\n"));
    free (text);
    //  The broker publishes its own metrics on the same bus (every second).
    metrics_destroy (&m);
    int64_t until = zclock_mono () + 5000;
    bool broker_seen = false;
    while (!broker_seen && zclock_mono () < until) {
        text = s_get ("/metrics", 200, NULL, 0);
        broker_seen = strstr (text, "splitmesh_up{service=\"broker\"") != NULL;
        free (text);
        if (!broker_seen)
            zclock_sleep (100);
    }
    cr_assert (broker_seen, "the broker's splitmesh_up never appeared");
}

Test (telemetry_http, health_follows_publishers)
{
    metrics_t *m = metrics_new ("tester", "t:2", s_mesh.xsub);
    cr_assert (metrics_wait_subscriber (m, 5000));
    metrics_count (m, "x_total", NULL, 1);
    metrics_flush (m);
    char *json = NULL;
    int64_t until = zclock_mono () + 5000;
    while (zclock_mono () < until) {
        free (json);
        json = s_get ("/health", 200, NULL, 0);
        if (strstr (json, "{\"instance\":\"t:2\"") && strstr (json, "\"broker\":{"))
            break;
        zclock_sleep (100);
    }
    cr_assert (strstr (json, "\"status\":\"ok\""), "%s", json);
    const char *tester = strstr (json, "{\"instance\":\"t:2\"");
    cr_assert_not_null (tester, "%s", json);
    cr_assert (strstr (tester, "\"up\":true"), "%s", json);
    free (json);
    //  The publisher goes away: down after --down-after-ms (1 s here).
    metrics_destroy (&m);
    zclock_sleep (1600);
    json = s_get ("/health", 200, NULL, 0);
    tester = strstr (json, "{\"instance\":\"t:2\"");
    cr_assert_not_null (tester);
    const char *end = strchr (tester, '}');
    char entry [256];
    snprintf (entry, sizeof entry, "%.*s", (int) (end - tester + 1), tester);
    cr_assert (strstr (entry, "\"up\":false"), "%s", entry);
    //  The broker keeps publishing splitmesh_up every second: still up.
    const char *broker = strstr (json, "\"broker\":{");
    cr_assert (broker && strstr (broker, "\"up\":true"), "%s", json);
    free (json);
}

Test (telemetry_http, dashboard_files_and_series_are_served)
{
    char type [128];
    char *html = s_get ("/", 200, type, sizeof type);
    cr_assert_str_eq (type, "text/html; charset=utf-8");
    cr_assert (strstr (html, "<canvas>"));
    cr_assert (strstr (html, "id=\"chart-tokens\""));
    cr_assert (strstr (html, "src=\"/dashboard.js\""));
    free (html);
    char *js = s_get ("/dashboard.js", 200, type, sizeof type);
    cr_assert_str_eq (type, "text/javascript; charset=utf-8");
    cr_assert (strstr (js, "/api/series"));
    free (js);
    char *css = s_get ("/dashboard.css", 200, type, sizeof type);
    free (css);
    zclock_sleep (500);         //  a few ticks at 200 ms
    char *series = s_get ("/api/series", 200, type, sizeof type);
    cr_assert_str_eq (type, "application/json");
    cr_assert (strstr (series, "\"points\":[{\"t\":"), "%s", series);
    cr_assert (strstr (series, "\"services\":{"), "%s", series);
    free (series);
}

Test (telemetry_http, bad_paths_and_methods_get_json_errors)
{
    char type [128];
    char *body = s_get ("/nope", 404, type, sizeof type);
    cr_assert_str_eq (type, "application/json");
    cr_assert (strstr (body, "\"status\":404"));
    cr_assert (strstr (body, "no such path: /nope"));
    free (body);
    //  A quote in the path stays valid JSON.
    body = s_get ("/a\"b\\c", 404, NULL, 0);
    cr_assert (strstr (body, "/a\\\"b\\\\c"), "%s", body);
    free (body);
    sm_http_reply_t reply;
    cr_assert_eq (sm_http_request (s_mesh.http_port, "POST", "/metrics", 3000, &reply), 0);
    cr_assert_eq (reply.status, 405);
    cr_assert (strstr (reply.body, "\"status\":405"));
    sm_http_reply_free (&reply);
    //  Still serving.
    body = s_get ("/metrics", 200, NULL, 0);
    free (body);
}

static double
s_rejected (void)
{
    char *text = s_get ("/metrics", 200, NULL, 0);
    const char *line = strstr (text, "splitmesh_telemetry_events_rejected_total{service=\"telemetry\"} ");
    cr_assert_not_null (line);
    double value = strtod (strchr (line, '}') + 2, NULL);
    free (text);
    return value;
}

Test (telemetry_http, garbage_on_the_bus_is_counted_and_service_keeps_serving)
{
    double before = s_rejected ();
    zsock_t *pub = zsock_new (ZMQ_PUB);
    cr_assert_eq (zsock_connect (pub, "%s", s_mesh.xsub), 0);
    //  Publish bad messages until they arrive (the subscription takes a
    //  moment to reach a new publisher).
    const uint8_t not_msgpack [] = { 0xc1, 0xff, 0x00 };
    const uint8_t wrong_map [] = { 0x81, 0xa1, 'v', 0x01 };     //  {"v":1}: fields missing
    double after = before;
    int64_t until = zclock_mono () + 8000;
    while (after < before + 3 && zclock_mono () < until) {
        zmsg_t *msg = zmsg_new ();
        zmsg_addstr (msg, "metric");
        zmsg_addmem (msg, not_msgpack, sizeof not_msgpack);
        zmsg_send (&msg, pub);
        msg = zmsg_new ();
        zmsg_addstr (msg, "metric");
        zmsg_addmem (msg, wrong_map, sizeof wrong_map);
        zmsg_send (&msg, pub);
        zstr_send (pub, "metric");                              //  one frame only
        zclock_sleep (200);
        after = s_rejected ();
    }
    cr_assert_geq (after, before + 3, "rejections not counted: %g -> %g", before, after);
    zsock_destroy (&pub);
    //  Good events still work afterwards.
    metrics_t *m = metrics_new ("tester", "t:3", s_mesh.xsub);
    cr_assert (metrics_wait_subscriber (m, 5000));
    metrics_count (m, "after_garbage_total", NULL, 7);
    metrics_flush (m);
    cr_assert (sm_telemetry_wait_sample (s_mesh.http_port,
               "splitmesh_after_garbage_total{service=\"tester\",instance=\"t:3\"}", 7, 5000, NULL));
    cr_assert (sm_alive (s_mesh.telemetry));
    metrics_destroy (&m);
}

Test (telemetry_http, bad_startup_is_reported_not_hung)
{
    //  The HTTP port is taken (by the running service): exit 1, promptly.
    char port [16];
    snprintf (port, sizeof port, "%d", s_mesh.http_port);
    pid_t pid = sm_spawn (s_mesh.log, "splitmesh-telemetry", "-s", s_mesh.xpub, "-p", port, NULL);
    cr_assert_gt (pid, 0);
    int status = 0;
    cr_assert_eq (sm_wait (pid, 5000, &status), 0, "did not exit when its port was taken");
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 1, "status %d", status);
    //  No endpoint: usage error 2.
    pid = sm_spawn (s_mesh.log, "splitmesh-telemetry", "-p", "0", NULL);
    cr_assert_eq (sm_wait (pid, 5000, &status), 0);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 2, "status %d", status);
    //  A bad endpoint: exit 1.
    pid = sm_spawn (s_mesh.log, "splitmesh-telemetry", "-s", "nonsense://x", "-p", "0", NULL);
    cr_assert_eq (sm_wait (pid, 5000, &status), 0);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 1, "status %d", status);
    //  The running one is unaffected.
    char *body = s_get ("/health", 200, NULL, 0);
    free (body);
}

//  Many clients at once, HEAD included; every answer complete.
static void *
s_client (void *arg)
{
    int *failures = (int *) arg;
    for (int i = 0; i < 20; i++) {
        sm_http_reply_t reply;
        const char *path = i % 3 == 0? "/metrics": i % 3 == 1? "/api/series": "/";
        if (sm_http_get (s_mesh.http_port, path, 5000, &reply) || reply.status != 200
        ||  reply.body_size == 0)
            (*failures)++;
        sm_http_reply_free (&reply);
    }
    return NULL;
}

Test (telemetry_http, concurrent_clients_all_get_answers)
{
    pthread_t threads [8];
    int failures [8] = { 0 };
    for (int i = 0; i < 8; i++)
        pthread_create (&threads [i], NULL, s_client, &failures [i]);
    for (int i = 0; i < 8; i++)
        pthread_join (threads [i], NULL);
    for (int i = 0; i < 8; i++)
        cr_assert_eq (failures [i], 0, "client %d: %d failed requests", i, failures [i]);
    sm_http_reply_t reply;
    cr_assert_eq (sm_http_request (s_mesh.http_port, "HEAD", "/metrics", 3000, &reply), 0);
    cr_assert_eq (reply.status, 200);
    cr_assert_eq (reply.body_size, 0, "HEAD must not send a body");
    sm_http_reply_free (&reply);
}
