/*  test_cli_args.c: every subcommand with a getopt loop reports usage
    errors the same way (cli/cli_args.h): exit status 2 and a message that
    names the command and the option.

    For each of up, down, generate, run, perplexity, quantize and
    privacy-audit: an unknown option (message and the usage on stderr), a
    numeric option without its value, the same with a bad value, and, for
    those that take no operands and have no other check for them, a stray
    argument. Every error is found
    while parsing, before anything is loaded or started (up and down get a
    temp run dir of their own all the same).
*/
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include "sm_cli.h"
#include "sm_proc.h"

static char *s_dir;

static void
s_fini (void)
{
    if (s_dir)
        sm_tmpdir_remove (&s_dir);
}

TestSuite (cli_args, .fini = s_fini, .timeout = 60);

//  Runs splitmesh with argv (NULL-terminated, at most 8) and checks exit
//  status 2 and every NULL-terminated `want` string in stderr.
static void
s_expect (const char *const *args, const char *const *want)
{
    const char *argv [12] = { "" };
    int n = 1;
    for (int i = 0; args [i]; i++)
        argv [n++] = args [i];
    argv [n] = NULL;
    sm_cli_result_t *r = sm_cli_run ("splitmesh", 20, NULL, argv);
    cr_assert_not_null (r);
    char line [256] = "";
    for (int i = 0; args [i]; i++)
        snprintf (line + strlen (line), sizeof line - strlen (line), " %s", args [i]);
    cr_assert_eq (r->status, 2, "splitmesh%s: exit %d, want 2; stderr:\n%s", line, r->status, r->err);
    for (int i = 0; want [i]; i++)
        cr_assert (strstr (r->err, want [i]), "splitmesh%s: want '%s' in stderr:\n%s",
                   line, want [i], r->err);
    sm_cli_result_destroy (&r);
}

#define ARGS(...) (const char *const []) { __VA_ARGS__, NULL }

Test (cli_args, usage_errors_are_the_same_in_every_command)
{
    s_dir = sm_tmpdir_new ("cliargs");
    cr_assert_not_null (s_dir);
    struct {
        const char *command;
        const char *pre [3];            //  flags before the bad one (a run dir)
        const char *numeric;            //  an option taking a number
        bool stray;                     //  says "unexpected argument" for an operand
    } cases [] = {
        { "up", { "--run-dir", s_dir }, "--split", true },
        { "down", { "--run-dir", s_dir }, "--grace-ms", true },
        { "generate", { "--run-dir", s_dir }, "--timeout", false },
        { "run", { "-p", "x" }, "--tokens", true },
        { "perplexity", { "--file", "/nonexistent" }, "--tokens", false },
        { "quantize", { "--out", "/nonexistent/out.gguf" }, "--threads", false },
        { "privacy-audit", { "--calib", "/nonexistent" }, "--window", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        const char *cmd = cases [i].command;
        const char *a = cases [i].pre [0], *b = cases [i].pre [1];
        char unknown [128], usage [128], needs [128], bad [128], stray [128];
        snprintf (unknown, sizeof unknown, "splitmesh %s: unknown option '--bogus'", cmd);
        snprintf (usage, sizeof usage, "usage: splitmesh %s", cmd);
        snprintf (needs, sizeof needs, "splitmesh %s: %s needs a value", cmd, cases [i].numeric);
        snprintf (bad, sizeof bad, "splitmesh %s: bad value '12x' for %s", cmd, cases [i].numeric);
        snprintf (stray, sizeof stray, "splitmesh %s: unexpected argument 'stray'", cmd);
        s_expect (ARGS (cmd, a, b, "--bogus"), ARGS (unknown, usage));
        s_expect (ARGS (cmd, a, b, cases [i].numeric), ARGS (needs));
        s_expect (ARGS (cmd, a, b, cases [i].numeric, "12x"), ARGS (bad));
        if (cases [i].stray)
            s_expect (ARGS (cmd, a, b, "stray"), ARGS (stray));
    }
}
