/*  test_gateway_python_client.c: the client examples against a real mesh.

    clients/python/examples/generate.py (the splitmesh_client package:
    pyzmq + msgpack, no C) and clients/c/example.c (core/mdp_client.h and
    the codec) each stream a greedy chat completion from a mesh started
    with `splitmesh up`; both must print exactly the text (and, for
    Python, the token ids) of `splitmesh generate --chat --json`. A bad
    request through the Python package must raise GenerateError with the
    mesh's status, not hang or crash.
*/
#define _GNU_SOURCE                 //  asprintf
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sm_cli.h"
#include "sm_gateway.h"
#include "sm_proc.h"

static sm_mesh_t s_mesh;
static const char *s_prompt = "Write one line about the sea.";

static void
s_fini (void)
{
    sm_proc_kill_all ();
    sm_mesh_down (&s_mesh);
}

TestSuite (gateway_python_client, .fini = s_fini, .timeout = 180);

static void
s_start_mesh (void)
{
    const char *names [] = { "splitmesh", "splitmesh-edge-draft", "splitmesh-client-example" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        char path [1200];
        snprintf (path, sizeof path, "%s/%s", sm_bin_dir (), names [i]);
        if (access (path, X_OK))
            cr_skip_test ("%s is not built", names [i]);
    }
    char err [4096] = "";
    cr_assert_eq (sm_mesh_prepare (&s_mesh, "pyclient", err, sizeof err), 0, "%s", err);
    cr_assert_eq (sm_mesh_up (&s_mesh, "--no-gateway", err, sizeof err), 0, "%s", err);
}

static json_t *
s_json (const char *text)
{
    json_error_t jerr;
    json_t *json = json_loads (text, 0, &jerr);
    cr_assert (json, "not JSON (%s): %s", jerr.text, text);
    return json;
}

static json_t *
s_expected (void)
{
    sm_cli_result_t *r = SM_SPLITMESH (60, "generate", "--run-dir", s_mesh.run_dir, "--chat",
                                       "--json", "-n", "24", s_prompt);
    cr_assert_eq (r->status, 0, "generate failed: %s", r->err);
    json_t *json = s_json (r->out);
    sm_cli_result_destroy (&r);
    return json;
}

//  PYTHONPATH=clients/python python3 ARGS...
static sm_cli_result_t *
s_python (const char *const *argv)
{
    char env [1200];
    snprintf (env, sizeof env, "PYTHONPATH=%s/clients/python", SPLITMESH_SOURCE_DIR);
    return sm_cli_run (SPLITMESH_PYTHON, 60, (const char *const []) { env, NULL }, argv);
}

Test (gateway_python_client, python_example_matches_generate)
{
    s_start_mesh ();
    json_t *expected = s_expected ();
    char script [1200];
    snprintf (script, sizeof script, "%s/clients/python/examples/generate.py", SPLITMESH_SOURCE_DIR);
    sm_cli_result_t *r = s_python ((const char *const []) {
        "", script, "--broker", s_mesh.broker, "--chat", "-n", "24", "--json", s_prompt, NULL });
    cr_assert_eq (r->status, 0, "generate.py failed:\n%s\n%s", r->out, r->err);
    json_t *got = s_json (r->out);
    sm_cli_result_destroy (&r);
    cr_expect_str_eq (json_string_value (json_object_get (got, "text")),
                      json_string_value (json_object_get (expected, "text")));
    cr_expect (json_equal (json_object_get (got, "tokens"), json_object_get (expected, "tokens")),
               "token ids differ");
    cr_expect_str_eq (json_string_value (json_object_get (got, "finish_reason")),
                      json_string_value (json_object_get (expected, "finish_reason")));
    cr_expect_eq (json_integer_value (json_object_get (json_object_get (got, "stats"), "tokens")),
                  (json_int_t) json_array_size (json_object_get (expected, "tokens")));

    //  The printed (streaming) form carries the same text.
    r = s_python ((const char *const []) {
        "", script, "--broker", s_mesh.broker, "--chat", "-n", "24", s_prompt, NULL });
    cr_assert_eq (r->status, 0, "%s", r->err);
    char *want = NULL;
    cr_assert (asprintf (&want, "%s\n", json_string_value (json_object_get (expected, "text"))) > 0);
    cr_expect_str_eq (r->out, want);
    free (want);
    sm_cli_result_destroy (&r);

    //  An invalid request: GenerateError with the mesh's status.
    r = s_python ((const char *const []) { "", "-c",
        "import sys\n"
        "from splitmesh_client import generate, GenerateError\n"
        "try:\n"
        "    generate(sys.argv[1], 'hi', model='no-such-model', max_tokens=4)\n"
        "except GenerateError as e:\n"
        "    print(e.status)\n",
        s_mesh.broker, NULL });
    cr_assert_eq (r->status, 0, "%s", r->err);
    cr_expect_eq (atoi (r->out), 404, "status: %s", r->out);
    sm_cli_result_destroy (&r);
    json_decref (got);
    json_decref (expected);
}

Test (gateway_python_client, c_example_matches_generate)
{
    s_start_mesh ();
    json_t *expected = s_expected ();
    sm_cli_result_t *r = sm_cli_run ("splitmesh-client-example", 60, NULL,
        (const char *const []) { "", s_mesh.broker, s_prompt, "24", NULL });
    cr_assert_eq (r->status, 0, "example failed:\n%s\n%s", r->out, r->err);
    char *want = NULL;
    cr_assert (asprintf (&want, "%s\n", json_string_value (json_object_get (expected, "text"))) > 0);
    cr_expect_str_eq (r->out, want);
    cr_expect (strstr (r->err, "finish_reason"), "%s", r->err);
    free (want);
    sm_cli_result_destroy (&r);
    //  A bad argument is a usage error, not a crash.
    r = sm_cli_run ("splitmesh-client-example", 10, NULL,
                    (const char *const []) { "", s_mesh.broker, "x", "0", NULL });
    cr_expect_eq (r->status, 2, "%s", r->err);
    sm_cli_result_destroy (&r);
    json_decref (expected);
}
