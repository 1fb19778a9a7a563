/*  cli_args.c: strict option-value parsing and the ChatML prompt wrapper.  */
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

int
cli_chatml (const char *prompt, char **text_p, size_t *len_p)
{
    static const char *head =
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\n";
    static const char *tail = "<|im_end|>\n<|im_start|>assistant\n";
    size_t n = strlen (head) + strlen (prompt) + strlen (tail);
    char *t = malloc (n + 1);
    if (!t)
        return -1;
    snprintf (t, n + 1, "%s%s%s", head, prompt, tail);
    *text_p = t;
    *len_p = n;
    return 0;
}
