/*  cli_args.h: strict option-value parsing shared by the CLI subcommands.

    Every numeric flag goes through these so that "-n 12x", "-n ''" or an
    out-of-range value is a usage error (exit 2) with a message, never a
    silently truncated number.
*/
#ifndef SPLITMESH_CLI_ARGS_H
#define SPLITMESH_CLI_ARGS_H

#include <stddef.h>

//  Whole string is a base-10 integer in [lo, hi]. Returns 0, or -1.
int cli_parse_long (const char *s, long lo, long hi, long *out);
//  Whole string is a finite number in [lo, hi]. Returns 0, or -1.
int cli_parse_double (const char *s, double lo, double hi, double *out);
//  Whole string is a base-10 unsigned 64-bit integer. Returns 0, or -1.
int cli_parse_u64 (const char *s, unsigned long long *out);

#endif
