/*  test_openai.c: splitmesh-gateway against a real mesh, with the official
    `openai` Python package (scripts/install-deps.sh puts it in .venv).

    1. The package streams a chat completion (temperature 0) and gets the
       same text as `splitmesh generate --chat --json`; non-streaming gives
       it too, with usage from the FINAL's stats; /v1/completions gives
       the raw-prompt text; unsupported parameters (n, logprobs, tools),
       bad values, bad JSON, unknown paths and models get OpenAI-shaped
       errors with the right status, and the gateway keeps serving.
       The gateway is the one `splitmesh up` started.
    2. /health is 503 before the mesh is up and 200 after; SIGTERM during
       a long stream: /health is 503 at once, new requests get 503, the
       stream finishes with its finish_reason and [DONE], exit status 0.

    The mesh runs a 4-layer tiny model with the real model's vocabulary
    when that file is there (SPLITMESH_MODEL), else the built-in one.
*/
#include <criterion/criterion.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>
#include "sm_cli.h"
#include "sm_gateway.h"
#include "sm_http.h"
#include "sm_proc.h"

static sm_mesh_t s_mesh;
static const char *s_prompt = "Hello there, who are you?";

static void
s_fini (void)
{
    sm_proc_kill_all ();
    sm_mesh_down (&s_mesh);
}

TestSuite (openai, .fini = s_fini, .timeout = 240);

static double
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void
s_skip_unless_built (void)
{
    const char *names [] = { "splitmesh", "splitmesh-gateway", "splitmesh-edge-draft" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        char path [1200];
        snprintf (path, sizeof path, "%s/%s", sm_bin_dir (), names [i]);
        if (access (path, X_OK))
            cr_skip_test ("%s is not built", names [i]);
    }
}

//  `splitmesh generate --json` on the test mesh; returns its parsed JSON.
static json_t *
s_generate (bool chat, int n_tokens)
{
    char n [16];
    snprintf (n, sizeof n, "%d", n_tokens);
    sm_cli_result_t *r = chat?
        SM_SPLITMESH (60, "generate", "--run-dir", s_mesh.run_dir, "--chat", "--json", "-n", n, s_prompt):
        SM_SPLITMESH (60, "generate", "--run-dir", s_mesh.run_dir, "--json", "-n", n, s_prompt);
    cr_assert_eq (r->status, 0, "generate failed: %s", r->err);
    json_error_t jerr;
    json_t *json = json_loads (r->out, 0, &jerr);
    cr_assert (json, "generate printed no JSON: %s (%s)", r->out, jerr.text);
    sm_cli_result_destroy (&r);
    return json;
}

static const char *
s_str (json_t *object, const char *key)
{
    json_t *v = json_object_get (object, key);
    cr_assert (json_is_string (v), "no string '%s'", key);
    return json_string_value (v);
}

//  errors[name] == [status, type, param, code, has message]
static void
s_expect_error (json_t *errors, const char *name, int status, const char *param, const char *code)
{
    json_t *e = json_object_get (errors, name);
    cr_assert (json_is_array (e), "no result for error case '%s'", name);
    char *text = json_dumps (e, JSON_COMPACT);
    cr_expect_eq (json_integer_value (json_array_get (e, 0)), status, "%s: %s", name, text);
    json_t *type = json_array_get (e, 1);
    cr_expect (json_is_string (type) && strstr (json_string_value (type), "error"), "%s: %s", name, text);
    json_t *p = json_array_get (e, 2);
    if (param)
        cr_expect (json_is_string (p) && !strcmp (json_string_value (p), param), "%s: %s", name, text);
    json_t *c = json_array_get (e, 3);
    if (code)
        cr_expect (json_is_string (c) && !strcmp (json_string_value (c), code), "%s: %s", name, text);
    cr_expect (json_is_true (json_array_get (e, 4)), "%s: no message: %s", name, text);
    free (text);
}

Test (openai, package_streams_same_text_as_generate)
{
    s_skip_unless_built ();
    char err [4096] = "";
    cr_assert_eq (sm_mesh_prepare (&s_mesh, "openai", err, sizeof err), 0, "%s", err);
    cr_assert_eq (sm_mesh_up (&s_mesh, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_gt (s_mesh.gateway_port, 0, "`splitmesh up` printed no gateway URL");
    sm_http_reply_t health = { 0 };
    sm_http_get (s_mesh.gateway_port, "/health", 5000, &health);
    cr_assert_eq (health.status, 200, "/health: %d %s", health.status, health.body? health.body: "");
    sm_http_reply_free (&health);

    const int n_tokens = 40;
    json_t *chat = s_generate (true, n_tokens);
    json_t *raw = s_generate (false, 8);
    const char *expected = s_str (chat, "text");
    cr_assert_gt (strlen (expected), 0);

    char base [128], n [16], log [1200];
    snprintf (base, sizeof base, "http://127.0.0.1:%d/v1", s_mesh.gateway_port);
    snprintf (n, sizeof n, "%d", n_tokens);
    char script [1200];
    snprintf (script, sizeof script, "%s/tests/python/openai_gateway.py", SPLITMESH_SOURCE_DIR);
    sm_cli_result_t *r = sm_cli_run (SPLITMESH_PYTHON, 120, NULL,
                                     (const char *const []) { "", script, base, s_prompt, n, NULL });
    if (r->status != 0 && strstr (r->err, "No module named 'openai'"))
        cr_skip_test ("the openai package is missing from %s (scripts/install-deps.sh)", SPLITMESH_PYTHON);
    snprintf (log, sizeof log, "%s/logs/gateway.log", s_mesh.run_dir);
    cr_assert_eq (r->status, 0, "openai_gateway.py failed:\n%s\n%s", r->out, r->err);
    json_error_t jerr;
    json_t *out = json_loads (r->out, 0, &jerr);
    cr_assert (out, "bad JSON from the script: %s", r->out);
    sm_cli_result_destroy (&r);

    //  Streamed and whole answers equal `splitmesh generate` at temperature 0.
    cr_expect_str_eq (s_str (out, "stream_text"), expected);
    cr_expect_str_eq (s_str (out, "text"), expected);
    cr_expect_str_eq (s_str (out, "after_errors_text"), expected,
                      "the gateway serves differently after bad requests");
    const char *finish = s_str (chat, "finish_reason");
    cr_expect_str_eq (s_str (out, "stream_finish"), finish);
    cr_expect_str_eq (s_str (out, "finish"), finish);
    cr_expect_gt (json_integer_value (json_object_get (out, "stream_chunks")), 2,
                  "the answer was not streamed in pieces");
    cr_expect_str_eq (s_str (out, "object"), "chat.completion");
    //  usage comes from the FINAL's stats.
    json_t *stats = json_object_get (chat, "stats"), *usage = json_object_get (out, "usage");
    cr_expect_eq (json_integer_value (json_object_get (usage, "prompt_tokens")),
                  json_integer_value (json_object_get (stats, "prompt_tokens")));
    cr_expect_eq (json_integer_value (json_object_get (usage, "completion_tokens")),
                  json_integer_value (json_object_get (stats, "tokens")));
    cr_expect_eq (json_integer_value (json_object_get (usage, "total_tokens")),
                  json_integer_value (json_object_get (stats, "prompt_tokens"))
                + json_integer_value (json_object_get (stats, "tokens")));
    //  /v1/completions: the raw prompt, no chat template.
    cr_expect_str_eq (s_str (out, "completion_text"), s_str (raw, "text"));
    json_t *models = json_object_get (out, "models");
    cr_expect (json_is_array (models) && json_array_size (models) == 1
            && !strcmp (json_string_value (json_array_get (models, 0)), "splitmesh"));

    json_t *errors = json_object_get (out, "errors");
    s_expect_error (errors, "n", 400, "n", "unsupported_parameter");
    s_expect_error (errors, "logprobs", 400, "logprobs", "unsupported_parameter");
    s_expect_error (errors, "tools", 400, "tools", "unsupported_parameter");
    s_expect_error (errors, "model", 404, NULL, "model_not_found");
    s_expect_error (errors, "temperature", 400, "temperature", NULL);
    s_expect_error (errors, "max_tokens", 400, "max_tokens", NULL);
    s_expect_error (errors, "json", 400, NULL, "invalid_json");
    s_expect_error (errors, "messages", 400, "messages", NULL);
    s_expect_error (errors, "path", 404, NULL, NULL);
    s_expect_error (errors, "method", 405, NULL, NULL);
    json_decref (out);
    json_decref (chat);
    json_decref (raw);
}

static int s_port;
static bool
s_health_ok (void *arg)
{
    sm_http_reply_t reply = { 0 };
    sm_http_get (s_port, "/health", 2000, &reply);
    bool ok = reply.status == 200;
    sm_http_reply_free (&reply);
    return ok;
}

Test (openai, health_and_sigterm_drain)
{
    s_skip_unless_built ();
    char err [4096] = "";
    cr_assert_eq (sm_mesh_prepare (&s_mesh, "openai_term", err, sizeof err), 0, "%s", err);
    //  Our own gateway, started before the mesh exists.
    s_port = sm_free_tcp_port ();
    cr_assert_gt (s_port, 0);
    char port [16], log [1200];
    snprintf (port, sizeof port, "%d", s_port);
    snprintf (log, sizeof log, "%s/gateway.log", s_mesh.dir);
    pid_t pid = sm_spawn (log, "splitmesh-gateway", "--broker", s_mesh.broker, "--http-port", port,
                          "--timeout-ms", "30000", NULL);
    cr_assert_gt (pid, 0);
    sm_http_reply_t reply = { 0 };
    double t0 = s_now_ms ();
    while (sm_http_get (s_port, "/health", 2000, &reply) && s_now_ms () - t0 < 10000) {
        sm_http_reply_free (&reply);
        usleep (50 * 1000);
    }
    cr_assert_eq (reply.status, 503, "/health before the mesh: %d", reply.status);
    cr_expect (strstr (reply.body, "unavailable"), "%s", reply.body);
    sm_http_reply_free (&reply);

    cr_assert_eq (sm_mesh_up (&s_mesh, "--no-gateway", err, sizeof err), 0, "%s", err);
    cr_assert (sm_poll_until (s_health_ok, NULL, 20000, 100), "/health never became 200");

    //  A long stream over a raw socket.
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) s_port) };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    cr_assert_eq (connect (fd, (struct sockaddr *) &addr, sizeof addr), 0);
    const char *body = "{\"model\":\"splitmesh\",\"messages\":[{\"role\":\"user\",\"content\":\"Tell me "
                       "a long story.\"}],\"temperature\":0,\"max_tokens\":600,\"stream\":true}";
    char request [1024];
    int n = snprintf (request, sizeof request, "POST /v1/chat/completions HTTP/1.0\r\n"
                      "Host: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                      strlen (body), body);
    cr_assert_eq (write (fd, request, (size_t) n), n);
    size_t size = 0, cap = 1 << 20, at_term = 0;
    char *buf = calloc (1, cap);
    bool termed = false;
    double deadline = s_now_ms () + 120000;
    while (s_now_ms () < deadline && size + 1 < cap) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll (&p, 1, 1000) < 0)
            break;
        if (p.revents) {
            ssize_t got = read (fd, buf + size, cap - size - 1);
            if (got <= 0)
                break;
            size += (size_t) got;
            buf [size] = 0;
        }
        //  Once three events arrived (role + 2 pieces of text): SIGTERM.
        int events = 0;
        for (const char *s = buf; (s = strstr (s, "data: ")); s++)
            events++;
        if (!termed && events >= 3) {
            cr_assert (!strstr (buf, "[DONE]"), "the stream ended before SIGTERM; make it longer");
            at_term = size;
            cr_assert_eq (kill (pid, SIGTERM), 0);
            termed = true;
            double t = s_now_ms ();
            sm_http_get (s_port, "/health", 2000, &reply);
            double health_ms = s_now_ms () - t;
            cr_expect_eq (reply.status, 503, "/health after SIGTERM: %d %s", reply.status,
                          reply.body? reply.body: "");
            cr_expect (reply.body && strstr (reply.body, "draining"));
            cr_expect_lt (health_ms, 1500, "/health took %.0f ms after SIGTERM", health_ms);
            sm_http_reply_free (&reply);
            char *answer = NULL;
            int status = sm_http_post (s_port, "/v1/chat/completions",
                "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}", 5000, &answer);
            cr_expect_eq (status, 503, "a new request while draining: %s", answer? answer: "");
            cr_expect (answer && strstr (answer, "\"error\""), "not an OpenAI error: %s", answer);
            free (answer);
            fprintf (stderr, "openai: SIGTERM after %zu bytes; /health 503 in %.1f ms\n", size, health_ms);
        }
    }
    close (fd);
    cr_assert (termed, "the stream never got going: %s", buf);
    //  The stream ran on after SIGTERM and ended properly.
    cr_expect_gt (size, at_term, "nothing arrived after SIGTERM");
    cr_expect (strstr (buf + at_term, "\"finish_reason\":\"length\""),
               "no final chunk after SIGTERM: %s", buf + at_term);
    size_t len = strlen (buf);
    cr_expect (len >= 14 && !strcmp (buf + len - 14, "data: [DONE]\n\n"),
               "the stream does not end with [DONE]: ...%s", len > 200? buf + len - 200: buf);
    free (buf);
    int status = 0;
    cr_assert_eq (sm_wait (pid, 20000, &status), 0, "the gateway did not exit after its stream");
    cr_expect (WIFEXITED (status) && WEXITSTATUS (status) == 0, "exit status %d", status);
}

//  One check on the real model (skipped without it): the streamed chat
//  text from the openai package equals `splitmesh generate --chat`.
Test (openai, real_model_stream_equals_generate)
{
    s_skip_unless_built ();
    const char *model = sm_model_path ();
    if (!model)
        cr_skip_test ("no model file (set SPLITMESH_MODEL or run scripts/fetch-model.sh)");
    s_mesh.dir = sm_tmpdir_new ("openai_real");
    cr_assert (s_mesh.dir);
    snprintf (s_mesh.run_dir, sizeof s_mesh.run_dir, "%s/run", s_mesh.dir);
    snprintf (s_mesh.model, sizeof s_mesh.model, "%s", model);
    char err [4096] = "";
    cr_assert_eq (sm_mesh_up (&s_mesh, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_gt (s_mesh.gateway_port, 0);
    const char *question = "What is the capital of France?";
    sm_cli_result_t *r = SM_SPLITMESH (60, "generate", "--run-dir", s_mesh.run_dir, "--chat",
                                       "--json", "-n", "24", question);
    cr_assert_eq (r->status, 0, "%s", r->err);
    json_error_t jerr;
    json_t *expected = json_loads (r->out, 0, &jerr);
    cr_assert (expected, "%s", r->out);
    sm_cli_result_destroy (&r);
    char base [128];
    snprintf (base, sizeof base, "http://127.0.0.1:%d/v1", s_mesh.gateway_port);
    r = sm_cli_run (SPLITMESH_PYTHON, 60, NULL, (const char *const []) { "", "-c",
        "import sys, openai\n"
        "c = openai.OpenAI(base_url=sys.argv[1], api_key='unused', max_retries=0)\n"
        "s = c.chat.completions.create(model='splitmesh', temperature=0, max_tokens=24, stream=True,\n"
        "    messages=[{'role': 'user', 'content': sys.argv[2]}])\n"
        "sys.stdout.write(''.join(ch.choices[0].delta.content or '' for ch in s if ch.choices))\n",
        base, question, NULL });
    if (r->status != 0 && strstr (r->err, "No module named 'openai'"))
        cr_skip_test ("the openai package is missing from %s (scripts/install-deps.sh)", SPLITMESH_PYTHON);
    cr_assert_eq (r->status, 0, "%s", r->err);
    const char *want = json_string_value (json_object_get (expected, "text"));
    cr_expect_gt (strlen (want), 0);
    cr_expect_str_eq (r->out, want);
    fprintf (stderr, "openai: real model streamed \"%s\"\n", r->out);
    sm_cli_result_destroy (&r);
    json_decref (expected);
}
