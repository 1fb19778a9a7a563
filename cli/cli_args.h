/*  cli_args.h: strict option-value parsing shared by the CLI subcommands.

    Every numeric flag goes through these so that "-n 12x", "-n ''" or an
    out-of-range value is a usage error (exit 2) with a message, never a
    silently truncated number.
*/
#ifndef SPLITMESH_CLI_ARGS_H
#define SPLITMESH_CLI_ARGS_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include "model.h"

//  Whole string is a base-10 integer in [lo, hi]. Returns 0, or -1.
int cli_parse_long (const char *s, long lo, long hi, long *out);
//  Whole string is a finite number in [lo, hi]. Returns 0, or -1.
int cli_parse_double (const char *s, double lo, double hi, double *out);
//  Whole string is a base-10 unsigned 64-bit integer. Returns 0, or -1.
int cli_parse_u64 (const char *s, unsigned long long *out);

//  The model every command uses when none is named: the one
//  scripts/fetch-model.sh caches.
#define CLI_DEFAULT_MODEL "models/SmolLM2-135M-Instruct.Q4_1.gguf"

//  The model file a command should load: the --model flag when given, else
//  $SPLITMESH_MODEL when set and non-empty, else CLI_DEFAULT_MODEL.
const char *cli_model_path (const char *flag);

//  Fills *mo with the model defaults, the weight format named by format
//  ("f32", "w8", "w4") and threads. Returns 0, or 2 (the usage exit status)
//  after printing "splitmesh <command>: unknown format ..." to stderr.
int cli_model_options (const char *command, const char *format, long threads, model_options_t *mo);

//  The long name of the option whose getopt value is val, for messages
//  about a bad value; "?" when no entry has it.
const char *cli_option_name (const struct option *longopts, int val);

//  --- Usage errors of a getopt_long loop -------------------------------
//  Every subcommand parses its options the same way: optind = 1, opterr = 0,
//  an optstring that starts with ':', a switch with one case per option.
//  These print the messages (on stderr, naming the command) and return 2,
//  the usage exit status, so that a loop ends with
//
//      default: return cli_getopt_error ("up", opt, argv, s_usage);
//      ...
//      if (bad) return cli_bad_value ("up", longopts, opt, optarg);

//  A subcommand's usage printer (its s_usage).
typedef void (cli_usage_fn) (FILE *out);

//  What getopt_long returned that no case of the command took: ':' (an
//  option without its value) gives "splitmesh CMD: --opt needs a value";
//  anything else (an unknown option) "splitmesh CMD: unknown option '--x'"
//  and then the usage. Returns 2.
int cli_getopt_error (const char *command, int opt, char *const argv [], cli_usage_fn *usage);

//  "splitmesh CMD: bad value 'VALUE' for --NAME", NAME being the long
//  option whose getopt value is opt. Returns 2.
int cli_bad_value (const char *command, const struct option *longopts, int opt, const char *value);

//  After the options, for commands that take no operands: 0 when none is
//  left, else "splitmesh CMD: unexpected argument 'A'" and 2.
int cli_no_operands (const char *command, int argc, char *const argv []);

#endif
