/*  main.c: the `splitmesh` command, a dispatcher over subcommands.

    Each subcommand lives in cli/cmd_<name>.c and is listed once in the
    table below; `splitmesh help` prints the table.
*/
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "version.h"

typedef struct {
    const char *name;
    int (*run) (int argc, char **argv);     //  argv[0] is the subcommand
    const char *summary;
} s_command_t;

static const s_command_t s_commands[] = {
    //  Subcommands register here, one line each (keep alphabetical).
    { "down", cmd_down, "stop the local mesh that `splitmesh up` started" },
    { "generate", cmd_generate, "generate text with the running mesh (streams; stats on stderr)" },
    { "health", cmd_health, "probe a broker/service (MMI) or an HTTP /health: exit 0 if healthy" },
    { "keygen", cmd_keygen, "write a CurveZMQ key pair for crypt-proxy (zcert format)" },
    { "perplexity", cmd_perplexity, "perplexity of a weight format on a text file" },
    { "privacy-audit", cmd_privacy_audit, "tokens an attacker recovers from link activations, per L and noise" },
    { "quantize", cmd_quantize, "mixed-precision GGUF under a byte budget (per-matrix KL)" },
    { "run", cmd_run, "generate text in one process (the reference path)" },
    { "tiny-model", cmd_tiny_model, "write a tiny random-weight GGUF for tests" },
    { "tokenize",   cmd_tokenize,   "text <-> token ids with a model's own vocabulary" },
    { "up", cmd_up, "start the local mesh (brokers, services) as background processes" },
    { NULL, NULL, NULL }
};

static void
s_usage (FILE *out)
{
    fprintf (out, "usage: splitmesh <command> [options]\n\ncommands:\n");
    for (const s_command_t *c = s_commands; c->name; c++)
        fprintf (out, "  %-16s %s\n", c->name, c->summary);
    fprintf (out, "  %-16s %s\n", "version", "print the version and build options");
    fprintf (out, "\n`splitmesh <command> --help` describes each command's options.\n");
}

int
main (int argc, char **argv)
{
    if (argc < 2 || !strcmp (argv[1], "help") || !strcmp (argv[1], "--help")) {
        s_usage (argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp (argv[1], "version") || !strcmp (argv[1], "--version")) {
        printf ("%s\n", splitmesh_version_string ());
        return 0;
    }
    for (const s_command_t *c = s_commands; c->name; c++)
        if (!strcmp (argv[1], c->name))
            return c->run (argc - 1, argv + 1);
    fprintf (stderr, "splitmesh: unknown command '%s'\n\n", argv[1]);
    s_usage (stderr);
    return 2;
}
