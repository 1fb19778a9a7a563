/*  options.h: one table-driven command-line and environment parser for
    every splitmesh process.

    Why: each service main used to carry its own getopt loop, number parser
    and usage text, and Docker/Kubernetes manifests had nothing to check
    their flags and environment variables against. Here one table per
    program says, once, every option's long and short name, environment
    variable, type, range, default and help; the parser, `--help` and
    `--options-json` (what tests/test_deploy.c compares the manifests with)
    are all generated from it.

    Rules: environment first, flags override (a flag given on the command
    line wins over SPLITMESH_*). A bad value, an unknown flag, a missing
    required option or a stray argument is a usage error: one line on
    stderr naming the option, then exit status 2. `--help` (and `-h`
    unless the table takes `h`) prints the generated usage to stdout and
    exits 0; `--options-json` prints the table as JSON and exits 0.

    Guide for a service main (adopt it in three steps):

        static const options_spec_t s_options [] = {
            { "broker", 'b', "SPLITMESH_BROKER", OPTIONS_STRING, .arg = "EP",
              .def = "tcp://127.0.0.1:5555", .help = "MDP broker endpoint" },
            { "threads", 't', "SPLITMESH_THREADS", OPTIONS_INT, .arg = "N",
              .def = "1", .min = 1, .max = 256, .help = "compute threads" },
            { "format", 0, "SPLITMESH_FORMAT", OPTIONS_ENUM, .arg = "F",
              .choices = "f32|w8|w4", .def = "w8", .help = "weight format" },
            { "verbose", 'v', "SPLITMESH_VERBOSE", OPTIONS_BOOL, .help = "log" },
        };
        int main (int argc, char **argv) {
            int status;
            options_t *opts = options_new_from_args ("splitmesh-foo", "[options]",
                "What the foo service does.", s_options, OPTIONS_COUNT (s_options),
                argc, argv, &status);
            if (!opts)
                return status;                  //  0 after --help, 2 on error
            config.broker = options_string (opts, "broker");
            config.threads = options_int (opts, "threads");
            ...run the actor...
            options_destroy (&opts);            //  after the actor: it owns the strings
        }

    Use the common names of docs/pipeline.md (--broker [SPLITMESH_BROKER],
    --telemetry, --model, --threads, --format, --instance, ...) so the
    manifests stay uniform; a process-specific option gets a
    SPLITMESH_<PROCESS>_<OPTION> variable so one exported variable cannot
    reconfigure an unrelated process. Checks that involve several options
    (for example "--a and --b go together") stay in the main, after parsing,
    and also exit 2.
*/
#ifndef SPLITMESH_OPTIONS_H
#define SPLITMESH_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    OPTIONS_STRING,             //  any text (non-empty)
    OPTIONS_INT,                //  decimal integer in [min, max]
    OPTIONS_BOOL,               //  a switch; env: 1/true/yes/on or 0/false/no/off
    OPTIONS_ENUM                //  one of choices ("a|b|c")
} options_type_t;

//  Flags of an option spec.
#define OPTIONS_REQUIRED  1     //  parse fails (exit 2) when neither env nor flag sets it
#define OPTIONS_REPEAT    2     //  string: each flag appends, comma-separated

typedef struct {
    const char *name;           //  long name without "--", e.g. "heartbeat-ms"
    char short_name;            //  'e' for -e, or 0
    const char *env;            //  environment variable (SPLITMESH_*), or NULL
    options_type_t type;
    const char *arg;            //  placeholder in --help ("EP", "N"), or NULL
    const char *def;            //  default as text, or NULL: unset
    long min, max;              //  OPTIONS_INT: inclusive range (both 0: any int)
    const char *choices;        //  OPTIONS_ENUM: "device|cloud"
    const char *help;           //  one line of help; '\n' starts an indented line
    int flags;                  //  OPTIONS_REQUIRED | OPTIONS_REPEAT
} options_spec_t;

#define OPTIONS_COUNT(table) (sizeof (table) / sizeof ((table) [0]))

typedef struct _options_t options_t;

//  Creates a parser for program over the table (specs must outlive it;
//  they are normally static). synopsis follows "usage: program " in
//  --help; summary (may be NULL) is printed below it. Returns NULL if the
//  table is malformed (duplicate or empty names, a default outside its own
//  type): a programmer error, reported on stderr.
//  Caller owns the result and must destroy it with options_destroy.
options_t *
    options_new (const char *program, const char *synopsis, const char *summary,
                 const options_spec_t *specs, size_t count);

//  What a main calls: options_new, then options_parse. Returns the parser
//  when the program should run (caller owns it and destroys it with
//  options_destroy once the strings are no longer used); otherwise returns
//  NULL and sets *status to the exit status: 0 after --help or
//  --options-json, 2 after a usage error or a malformed table.
options_t *
    options_new_from_args (const char *program, const char *synopsis, const char *summary,
                           const options_spec_t *specs, size_t count,
                           int argc, char **argv, int *status);

//  Destroys the parser and every string it returned; nullifies *self_p.
void
    options_destroy (options_t **self_p);

//  Reads the environment, then argv. Returns 0 when the program should run
//  with the parsed values; returns -1 when it should exit now with
//  *status: 0 after --help or --options-json (printed to stdout), 2 after a
//  usage error (printed to stderr). May be called again: each call starts
//  from the defaults.
int
    options_parse (options_t *self, int argc, char **argv, int *status);

//  The value of option name: its text (strings, enums; NULL when unset),
//  number (ints; 0 when unset) or state (bools). The strings belong to
//  self and live until options_destroy. Asking for a name not in the
//  table, or with the wrong type, is a programmer error (assert).
const char *
    options_string (options_t *self, const char *name);
int
    options_int (options_t *self, const char *name);
bool
    options_bool (options_t *self, const char *name);

//  True when the environment or a flag set option name (not the default).
bool
    options_is_set (options_t *self, const char *name);

//  Writes the generated usage text (what --help prints).
void
    options_print_usage (options_t *self, FILE *out);

//  Writes the table as one JSON object (what --options-json prints):
//  {"program": ..., "options": [{"name", "short", "env", "type", "arg",
//  "default", "min", "max", "choices", "required", "repeat", "help"}]}.
void
    options_print_json (options_t *self, FILE *out);

#ifdef __cplusplus
}
#endif

#endif
