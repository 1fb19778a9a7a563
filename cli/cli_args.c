/*  cli_args.c: strict option-value parsing and the usage errors shared by
    the CLI subcommands (see cli_args.h).  */
#include "cli_args.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
cli_parse_long (const char *s, long lo, long hi, long *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol (s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int
cli_parse_double (const char *s, double lo, double hi, double *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    double v = strtod (s, &end);
    if (errno || *end || !isfinite (v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int
cli_parse_u64 (const char *s, unsigned long long *out)
{
    if (!s || !*s || *s == '-')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull (s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

const char *
cli_model_path (const char *flag)
{
    if (flag && *flag)
        return flag;
    const char *env = getenv ("SPLITMESH_MODEL");
    return env && *env? env: CLI_DEFAULT_MODEL;
}

int
cli_model_options (const char *command, const char *format, long threads, model_options_t *mo)
{
    *mo = model_options_default ();
    if (qfmt_parse (format, &mo->format)) {
        fprintf (stderr, "splitmesh %s: unknown format '%s' (f32, w8, w4)\n", command, format);
        return 2;
    }
    mo->n_threads = (int) threads;
    return 0;
}

const char *
cli_option_name (const struct option *longopts, int val)
{
    for (const struct option *lo = longopts; lo->name; lo++)
        if (lo->val == val)
            return lo->name;
    return "?";
}

int
cli_getopt_error (const char *command, int opt, char *const argv [], cli_usage_fn *usage)
{
    //  With opterr = 0 and a leading ':', getopt_long has just stepped over
    //  the offending element: it is argv [optind - 1].
    const char *arg = optind > 0? argv [optind - 1]: "?";
    if (opt == ':') {
        fprintf (stderr, "splitmesh %s: %s needs a value\n", command, arg);
        return 2;
    }
    fprintf (stderr, "splitmesh %s: unknown option '%s'\n", command, arg);
    if (usage)
        usage (stderr);
    return 2;
}

int
cli_bad_value (const char *command, const struct option *longopts, int opt, const char *value)
{
    fprintf (stderr, "splitmesh %s: bad value '%s' for --%s\n", command, value? value: "",
             cli_option_name (longopts, opt));
    return 2;
}

int
cli_no_operands (const char *command, int argc, char *const argv [])
{
    if (optind >= argc)
        return 0;
    fprintf (stderr, "splitmesh %s: unexpected argument '%s'\n", command, argv [optind]);
    return 2;
}
