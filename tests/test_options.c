/*  test_options.c: the table-driven option parser (core/options.c).

    Every service main and the deployment consistency test rely on these
    rules: defaults, then SPLITMESH_* variables, then flags; usage errors
    are status 2 with a message naming the option; --help and
    --options-json come from the same table.
*/
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "options.h"

static const options_spec_t s_specs [] = {
    { "endpoint", 'e', "SMTEST_ENDPOINT", OPTIONS_STRING, .arg = "EP",
      .def = "tcp://*:5555", .flags = OPTIONS_REPEAT, .help = "bind here" },
    { "threads", 't', "SMTEST_THREADS", OPTIONS_INT, .def = "4", .min = 1, .max = 64,
      .help = "threads" },
    { "role", 0, "SMTEST_ROLE", OPTIONS_ENUM, .choices = "device|cloud", .help = "role" },
    { "verbose", 'v', "SMTEST_VERBOSE", OPTIONS_BOOL, .help = "chatty" },
    { "name", 0, "SMTEST_NAME", OPTIONS_STRING, .flags = OPTIONS_REQUIRED,
      .help = "a \"quoted\" name\nsecond line" },
};

static options_t *opts;

static void
s_setup (void)
{
    unsetenv ("SMTEST_ENDPOINT");
    unsetenv ("SMTEST_THREADS");
    unsetenv ("SMTEST_ROLE");
    unsetenv ("SMTEST_VERBOSE");
    unsetenv ("SMTEST_NAME");
    opts = options_new ("smtest", "[options]", "A test program.", s_specs, OPTIONS_COUNT (s_specs));
    cr_assert_not_null (opts);
}

static void
s_teardown (void)
{
    options_destroy (&opts);
    cr_assert_null (opts);
    options_destroy (&opts);        //  harmless twice
}

//  Parses a NULL-terminated argument list; returns options_parse's result.
static int
s_parse (int *status, ...)
{
    char *argv [32] = { "smtest" };
    int argc = 1;
    va_list args;
    va_start (args, status);
    char *arg;
    while ((arg = va_arg (args, char *)) && argc < 31)
        argv [argc++] = arg;
    va_end (args);
    argv [argc] = NULL;
    return options_parse (opts, argc, argv, status);
}

TestSuite (options, .init = s_setup, .fini = s_teardown);

Test (options, defaults_apply_when_nothing_is_set)
{
    int status = -1;
    cr_assert_eq (s_parse (&status, "--name", "x", NULL), 0);
    cr_assert_str_eq (options_string (opts, "endpoint"), "tcp://*:5555");
    cr_assert_eq (options_int (opts, "threads"), 4);
    cr_assert_null (options_string (opts, "role"));
    cr_assert_not (options_bool (opts, "verbose"));
    cr_assert_not (options_is_set (opts, "threads"));
    cr_assert (options_is_set (opts, "name"));
}

Test (options, environment_then_flags_override)
{
    setenv ("SMTEST_THREADS", "8", 1);
    setenv ("SMTEST_ROLE", "cloud", 1);
    setenv ("SMTEST_VERBOSE", "yes", 1);
    setenv ("SMTEST_NAME", "from-env", 1);
    int status;
    cr_assert_eq (s_parse (&status, NULL), 0);
    cr_assert_eq (options_int (opts, "threads"), 8);
    cr_assert_str_eq (options_string (opts, "role"), "cloud");
    cr_assert (options_bool (opts, "verbose"));
    cr_assert_str_eq (options_string (opts, "name"), "from-env");
    cr_assert (options_is_set (opts, "threads"));

    cr_assert_eq (s_parse (&status, "-t", "16", "--role=device", "--name", "flag", NULL), 0);
    cr_assert_eq (options_int (opts, "threads"), 16);
    cr_assert_str_eq (options_string (opts, "role"), "device");
    cr_assert_str_eq (options_string (opts, "name"), "flag");

    setenv ("SMTEST_VERBOSE", "off", 1);
    cr_assert_eq (s_parse (&status, NULL), 0);
    cr_assert_not (options_bool (opts, "verbose"));
    cr_assert_eq (s_parse (&status, "-v", NULL), 0);
    cr_assert (options_bool (opts, "verbose"));
}

Test (options, repeat_flags_replace_env_then_append)
{
    setenv ("SMTEST_ENDPOINT", "ipc://env", 1);
    int status;
    cr_assert_eq (s_parse (&status, "--name", "x", NULL), 0);
    cr_assert_str_eq (options_string (opts, "endpoint"), "ipc://env");
    cr_assert_eq (s_parse (&status, "--name", "x", "-e", "tcp://a:1", "--endpoint", "tcp://b:2", NULL), 0);
    cr_assert_str_eq (options_string (opts, "endpoint"), "tcp://a:1,tcp://b:2");
    //  A plain option: the last flag wins.
    cr_assert_eq (s_parse (&status, "--name", "x", "--name", "y", NULL), 0);
    cr_assert_str_eq (options_string (opts, "name"), "y");
}

Test (options, bad_values_are_usage_errors, .init = cr_redirect_stderr)
{

    int status = 0;
    cr_assert_eq (s_parse (&status, "--name", "x", "--threads", "0", NULL), -1);
    cr_assert_eq (status, 2);
    cr_assert_eq (s_parse (&status, "--name", "x", "--threads", "12abc", NULL), -1);
    cr_assert_eq (s_parse (&status, "--name", "x", "--threads", "99999999999999999999", NULL), -1);
    cr_assert_eq (s_parse (&status, "--name", "x", "--role", "fog", NULL), -1);
    cr_assert_eq (s_parse (&status, "--name", "", NULL), -1);
    cr_assert_eq (s_parse (&status, "--name", "x", "--bogus", NULL), -1);
    cr_assert_eq (s_parse (&status, "--name", "x", "-z", NULL), -1);
    cr_assert_eq (s_parse (&status, "--name", "x", "stray", NULL), -1);
    cr_assert_eq (s_parse (&status, "--name", NULL), -1);
    cr_assert_eq (s_parse (&status, NULL), -1);                    //  required
    cr_assert_eq (status, 2);
    setenv ("SMTEST_THREADS", "65", 1);
    cr_assert_eq (s_parse (&status, "--name", "x", NULL), -1);
    unsetenv ("SMTEST_THREADS");
    setenv ("SMTEST_VERBOSE", "maybe", 1);
    cr_assert_eq (s_parse (&status, "--name", "x", NULL), -1);
    unsetenv ("SMTEST_VERBOSE");
    //  Still usable after errors.
    cr_assert_eq (s_parse (&status, "--name", "x", "--threads", "64", NULL), 0);
    cr_assert_eq (options_int (opts, "threads"), 64);
    fflush (stderr);
    cr_assert_stderr_neq_str ("");
}

Test (options, error_messages_name_the_option_and_variable, .init = cr_redirect_stderr)
{

    setenv ("SMTEST_THREADS", "0", 1);
    int status;
    cr_assert_eq (s_parse (&status, "--name", "x", NULL), -1);
    fflush (stderr);
    cr_assert_stderr_eq_str ("smtest: SMTEST_THREADS (for --threads) needs a number in 1..64, got '0'\n");
}

Test (options, help_and_json_exit_zero, .init = cr_redirect_stdout)
{

    int status = 2;
    cr_assert_eq (s_parse (&status, "--help", NULL), -1);
    cr_assert_eq (status, 0);
    status = 2;
    cr_assert_eq (s_parse (&status, "--options-json", NULL), -1);
    cr_assert_eq (status, 0);
    fflush (stdout);
}

Test (options, usage_and_json_come_from_the_table)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    options_print_usage (opts, out);
    fclose (out);
    cr_assert (strstr (text, "usage: smtest [options]"));
    cr_assert (strstr (text, "-e, --endpoint EP"));
    cr_assert (strstr (text, "(default tcp://*:5555)"));
    cr_assert (strstr (text, "[SMTEST_THREADS]"));
    cr_assert (strstr (text, "--options-json"));
    cr_assert (strstr (text, "-h, --help"));
    free (text);

    out = open_memstream (&text, &size);
    options_print_json (opts, out);
    fclose (out);
    cr_assert (strstr (text, "\"program\": \"smtest\""), "%s", text);
    cr_assert (strstr (text, "{\"name\": \"endpoint\", \"short\": \"e\", \"env\": \"SMTEST_ENDPOINT\", "
                             "\"type\": \"string\", \"arg\": \"EP\", \"default\": \"tcp://*:5555\""), "%s", text);
    cr_assert (strstr (text, "\"min\": 1, \"max\": 64"));
    cr_assert (strstr (text, "\"choices\": [\"device\", \"cloud\"]"));
    cr_assert (strstr (text, "\"required\": true"));
    cr_assert (strstr (text, "\"repeat\": true"));
    cr_assert (strstr (text, "a \\\"quoted\\\" name\\nsecond line"), "%s", text);
    free (text);
}

Test (options, malformed_tables_are_refused, .init = cr_redirect_stderr)
{
    static const options_spec_t dup [] = {
        { "a", 'x', NULL, OPTIONS_BOOL }, { "a", 0, NULL, OPTIONS_BOOL } };
    static const options_spec_t dup_short [] = {
        { "a", 'x', NULL, OPTIONS_BOOL }, { "b", 'x', NULL, OPTIONS_BOOL } };
    static const options_spec_t dup_env [] = {
        { "a", 0, "E", OPTIONS_BOOL }, { "b", 0, "E", OPTIONS_BOOL } };
    static const options_spec_t bad_default [] = {
        { "n", 0, NULL, OPTIONS_INT, .def = "9", .min = 1, .max = 5 } };
    static const options_spec_t no_choices [] = { { "r", 0, NULL, OPTIONS_ENUM } };
    static const options_spec_t reserved [] = { { "help", 0, NULL, OPTIONS_BOOL } };
    cr_assert_null (options_new ("t", NULL, NULL, dup, 2));
    cr_assert_null (options_new ("t", NULL, NULL, dup_short, 2));
    cr_assert_null (options_new ("t", NULL, NULL, dup_env, 2));
    cr_assert_null (options_new ("t", NULL, NULL, bad_default, 1));
    cr_assert_null (options_new ("t", NULL, NULL, no_choices, 1));
    cr_assert_null (options_new ("t", NULL, NULL, reserved, 1));
}

Test (options, h_is_left_to_a_table_that_uses_it)
{
    static const options_spec_t with_h [] = {
        { "host", 'h', NULL, OPTIONS_STRING, .def = "localhost" } };
    options_t *own = options_new ("t", NULL, NULL, with_h, 1);
    cr_assert_not_null (own);
    char *argv [] = { "t", "-h", "example.org", NULL };
    int status;
    cr_assert_eq (options_parse (own, 3, argv, &status), 0);
    cr_assert_str_eq (options_string (own, "host"), "example.org");
    options_destroy (&own);
}

Test (options, new_from_args_runs_or_gives_the_exit_status, .init = cr_redirect_stdout)
{
    char *run [] = { "smtest", "--name", "n", "-t", "3", NULL };
    int status = -1;
    options_t *own = options_new_from_args ("smtest", NULL, NULL, s_specs,
                                            OPTIONS_COUNT (s_specs), 5, run, &status);
    cr_assert_not_null (own);
    cr_assert_eq (options_int (own, "threads"), 3);
    options_destroy (&own);

    char *help [] = { "smtest", "--help", NULL };
    cr_assert_null (options_new_from_args ("smtest", NULL, NULL, s_specs,
                                           OPTIONS_COUNT (s_specs), 2, help, &status));
    cr_assert_eq (status, 0);
    char *bad [] = { "smtest", "--threads", "x", NULL };
    cr_assert_null (options_new_from_args ("smtest", NULL, NULL, s_specs,
                                           OPTIONS_COUNT (s_specs), 3, bad, &status));
    cr_assert_eq (status, 2);
}
