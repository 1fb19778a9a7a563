/*  options.c: the table-driven option parser (see options.h for the rules).

    Values are kept as text, one slot per table entry, filled from the
    default, then the environment, then the flags (getopt_long, so
    `--name=value`, `--name value`, `-xVALUE` and unambiguous abbreviations
    work as they did in the hand-written mains). Every value is checked
    against its spec when it is read, so a bad SPLITMESH_* variable is
    refused exactly like a bad flag, naming both.
*/
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "options.h"

//  Long-only ids for getopt_long start above any char.
#define S_ID_BASE    1000
#define S_ID_HELP    999
#define S_ID_JSON    998

struct _options_t {
    const char *program;            //  program name for messages
    const char *synopsis;           //  text after "usage: program "
    const char *summary;            //  paragraph under the usage line, or NULL
    const options_spec_t *specs;    //  the table (not owned)
    size_t count;                   //  entries in specs
    char **values;                  //  (count) current text of each option, owned
    bool *set;                      //  (count) set by env or flag, not default
    bool help_short;                //  -h means --help (table does not use 'h')
};

static void
s_clear (options_t *self)
{
    for (size_t i = 0; i < self->count; i++) {
        free (self->values [i]);
        self->values [i] = NULL;
        self->set [i] = false;
    }
}

static bool
s_choice_ok (const char *choices, const char *text)
{
    size_t len = strlen (text);
    const char *p = choices;
    while (p && *p) {
        const char *bar = strchr (p, '|');
        size_t n = bar? (size_t) (bar - p): strlen (p);
        if (n == len && len > 0 && strncmp (p, text, n) == 0)
            return true;
        p = bar? bar + 1: NULL;
    }
    return false;
}

//  Bool text: returns 1 true, 0 false, -1 neither.
static int
s_bool_text (const char *text)
{
    if (!strcasecmp (text, "1") || !strcasecmp (text, "true")
    ||  !strcasecmp (text, "yes") || !strcasecmp (text, "on"))
        return 1;
    if (!strcasecmp (text, "0") || !strcasecmp (text, "false")
    ||  !strcasecmp (text, "no") || !strcasecmp (text, "off"))
        return 0;
    return -1;
}

//  Checks text against spec; on error writes why into err and returns -1.
static int
s_check (const options_spec_t *spec, const char *text, char *err, size_t err_size)
{
    switch (spec->type) {
        case OPTIONS_STRING:
            if (!*text) {
                snprintf (err, err_size, "needs a value, got an empty string");
                return -1;
            }
            return 0;
        case OPTIONS_INT: {
            char *end = NULL;
            errno = 0;
            long value = strtol (text, &end, 10);
            bool any = spec->min == 0 && spec->max == 0;
            long min = any? -2147483647L: spec->min;
            long max = any? 2147483647L: spec->max;
            if (!*text || !end || *end || errno == ERANGE || value < min || value > max) {
                snprintf (err, err_size, "needs a number in %ld..%ld, got '%s'", min, max, text);
                return -1;
            }
            return 0;
        }
        case OPTIONS_BOOL:
            if (s_bool_text (text) < 0) {
                snprintf (err, err_size, "needs 1/true/yes/on or 0/false/no/off, got '%s'", text);
                return -1;
            }
            return 0;
        case OPTIONS_ENUM:
            if (!s_choice_ok (spec->choices, text)) {
                snprintf (err, err_size, "needs one of %s, got '%s'", spec->choices, text);
                return -1;
            }
            return 0;
    }
    snprintf (err, err_size, "has an unknown type");
    return -1;
}

static const char *
s_type_name (options_type_t type)
{
    switch (type) {
        case OPTIONS_STRING: return "string";
        case OPTIONS_INT:    return "int";
        case OPTIONS_BOOL:   return "bool";
        case OPTIONS_ENUM:   return "enum";
    }
    return "?";
}

options_t *
options_new (const char *program, const char *synopsis, const char *summary,
             const options_spec_t *specs, size_t count)
{
    assert (program);
    assert (specs || count == 0);
    options_t *self = calloc (1, sizeof (options_t));
    if (!self)
        return NULL;
    self->program = program;
    self->synopsis = synopsis? synopsis: "[options]";
    self->summary = summary;
    self->specs = specs;
    self->count = count;
    self->values = calloc (count? count: 1, sizeof (char *));
    self->set = calloc (count? count: 1, sizeof (bool));
    self->help_short = true;
    if (!self->values || !self->set)
        goto failed;
    for (size_t i = 0; i < count; i++) {
        const options_spec_t *spec = &specs [i];
        char err [256];
        if (!spec->name || !*spec->name
        ||  !strcmp (spec->name, "help") || !strcmp (spec->name, "options-json")) {
            fprintf (stderr, "%s: option table entry %zu has a bad name\n", program, i);
            goto failed;
        }
        if (spec->type == OPTIONS_ENUM && (!spec->choices || !*spec->choices)) {
            fprintf (stderr, "%s: enum option --%s has no choices\n", program, spec->name);
            goto failed;
        }
        if (spec->def && s_check (spec, spec->def, err, sizeof err)) {
            fprintf (stderr, "%s: default of --%s %s\n", program, spec->name, err);
            goto failed;
        }
        if (spec->short_name == 'h')
            self->help_short = false;
        for (size_t j = 0; j < i; j++) {
            if (!strcmp (specs [j].name, spec->name)
            ||  (spec->short_name && specs [j].short_name == spec->short_name)
            ||  (spec->env && specs [j].env && !strcmp (specs [j].env, spec->env))) {
                fprintf (stderr, "%s: option --%s repeats a name, letter or variable\n",
                         program, spec->name);
                goto failed;
            }
        }
    }
    return self;
failed:
    options_destroy (&self);
    return NULL;
}

void
options_destroy (options_t **self_p)
{
    assert (self_p);
    options_t *self = *self_p;
    if (self) {
        if (self->values)
            s_clear (self);
        free (self->values);
        free (self->set);
        free (self);
        *self_p = NULL;
    }
}

//  Sets slot i to text, or appends for a repeatable option that a flag
//  already set in this parse. Returns -1 on allocation failure.
static int
s_store (options_t *self, size_t i, const char *text, bool append)
{
    char *value;
    if (append && self->values [i]) {
        size_t len = strlen (self->values [i]) + strlen (text) + 2;
        value = malloc (len);
        if (value)
            snprintf (value, len, "%s,%s", self->values [i], text);
    }
    else
        value = strdup (text);
    if (!value)
        return -1;
    free (self->values [i]);
    self->values [i] = value;
    return 0;
}

int
options_parse (options_t *self, int argc, char **argv, int *status)
{
    assert (self);
    assert (status);
    *status = 0;
    s_clear (self);
    char err [256];
    struct option *longopts = calloc (self->count + 3, sizeof (struct option));
    char *shortopts = calloc (self->count * 2 + 4, 1);
    bool *from_flag = calloc (self->count? self->count: 1, sizeof (bool));
    int rc = -1;
    *status = 2;
    if (!longopts || !shortopts || !from_flag) {
        fprintf (stderr, "%s: out of memory parsing options\n", self->program);
        goto done;
    }
    //  1. Defaults, then the environment.
    for (size_t i = 0; i < self->count; i++) {
        const options_spec_t *spec = &self->specs [i];
        if (spec->def && s_store (self, i, spec->def, false))
            goto done;
        const char *env = spec->env? getenv (spec->env): NULL;
        if (env && *env) {
            if (s_check (spec, env, err, sizeof err)) {
                fprintf (stderr, "%s: %s (for --%s) %s\n", self->program, spec->env,
                         spec->name, err);
                goto done;
            }
            if (s_store (self, i, env, false))
                goto done;
            self->set [i] = true;
        }
    }
    //  2. The flags, through getopt_long; its own messages name unknown
    //  options and missing arguments.
    size_t n = 0;
    char *sp = shortopts;
    *sp++ = ':';                //  we report a missing argument ourselves
    for (size_t i = 0; i < self->count; i++) {
        const options_spec_t *spec = &self->specs [i];
        bool has_arg = spec->type != OPTIONS_BOOL;
        longopts [n++] = (struct option) {
            spec->name, has_arg? required_argument: no_argument, NULL, S_ID_BASE + (int) i };
        if (spec->short_name) {
            *sp++ = spec->short_name;
            if (has_arg)
                *sp++ = ':';
        }
    }
    longopts [n++] = (struct option) { "help", no_argument, NULL, S_ID_HELP };
    longopts [n++] = (struct option) { "options-json", no_argument, NULL, S_ID_JSON };
    if (self->help_short)
        *sp++ = 'h';
    optind = 0;                 //  glibc: full re-initialisation for repeated parses
    opterr = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, shortopts, longopts, NULL)) != -1) {
        if (opt == S_ID_HELP || (opt == 'h' && self->help_short)) {
            options_print_usage (self, stdout);
            *status = 0;
            goto done;
        }
        if (opt == S_ID_JSON) {
            options_print_json (self, stdout);
            *status = 0;
            goto done;
        }
        if (opt == '?' || opt == ':') {
            const char *arg = argv [optind - 1];
            if (optopt && optopt < S_ID_BASE && optopt != '?')
                fprintf (stderr, "%s: -%c %s\n", self->program, optopt,
                         opt == ':'? "needs a value": "is not an option");
            else
            if (opt == ':')
                fprintf (stderr, "%s: %s needs a value\n", self->program, arg);
            else
                fprintf (stderr, "%s: unknown or ambiguous option '%s'\n", self->program, arg);
            fprintf (stderr, "(see %s --help)\n", self->program);
            goto done;
        }
        size_t i = 0;
        if (opt >= S_ID_BASE)
            i = (size_t) (opt - S_ID_BASE);
        else
            while (i < self->count && self->specs [i].short_name != opt)
                i++;
        assert (i < self->count);
        const options_spec_t *spec = &self->specs [i];
        const char *text = spec->type == OPTIONS_BOOL? "1": optarg;
        if (s_check (spec, text, err, sizeof err)) {
            fprintf (stderr, "%s: --%s %s\n", self->program, spec->name, err);
            goto done;
        }
        bool append = (spec->flags & OPTIONS_REPEAT) && from_flag [i];
        if (s_store (self, i, text, append))
            goto done;
        self->set [i] = true;
        from_flag [i] = true;
    }
    if (optind < argc) {
        fprintf (stderr, "%s: unexpected argument '%s'\n(see %s --help)\n",
                 self->program, argv [optind], self->program);
        goto done;
    }
    //  3. Required options.
    for (size_t i = 0; i < self->count; i++) {
        const options_spec_t *spec = &self->specs [i];
        if ((spec->flags & OPTIONS_REQUIRED) && !self->values [i]) {
            fprintf (stderr, "%s: --%s is required", self->program, spec->name);
            if (spec->env)
                fprintf (stderr, " (or %s)", spec->env);
            fprintf (stderr, "\n(see %s --help)\n", self->program);
            goto done;
        }
    }
    rc = 0;
done:
    free (longopts);
    free (shortopts);
    free (from_flag);
    return rc;
}

options_t *
options_new_from_args (const char *program, const char *synopsis, const char *summary,
                       const options_spec_t *specs, size_t count,
                       int argc, char **argv, int *status)
{
    assert (status);
    *status = 2;
    options_t *self = options_new (program, synopsis, summary, specs, count);
    if (self && options_parse (self, argc, argv, status))
        options_destroy (&self);
    return self;
}

static size_t
s_find (options_t *self, const char *name)
{
    for (size_t i = 0; i < self->count; i++)
        if (!strcmp (self->specs [i].name, name))
            return i;
    assert (!"option name not in the table");
    return 0;
}

const char *
options_string (options_t *self, const char *name)
{
    assert (self);
    size_t i = s_find (self, name);
    assert (self->specs [i].type == OPTIONS_STRING || self->specs [i].type == OPTIONS_ENUM);
    return self->values [i];
}

int
options_int (options_t *self, const char *name)
{
    assert (self);
    size_t i = s_find (self, name);
    assert (self->specs [i].type == OPTIONS_INT);
    return self->values [i]? (int) strtol (self->values [i], NULL, 10): 0;
}

bool
options_bool (options_t *self, const char *name)
{
    assert (self);
    size_t i = s_find (self, name);
    assert (self->specs [i].type == OPTIONS_BOOL);
    return self->values [i] && s_bool_text (self->values [i]) == 1;
}

bool
options_is_set (options_t *self, const char *name)
{
    assert (self);
    return self->set [s_find (self, name)];
}

void
options_print_usage (options_t *self, FILE *out)
{
    assert (self);
    fprintf (out, "usage: %s %s\n", self->program, self->synopsis);
    if (self->summary)
        fprintf (out, "\n%s\n", self->summary);
    fprintf (out, "\noptions (environment variable in brackets; flags override it):\n");
    for (size_t i = 0; i < self->count; i++) {
        const options_spec_t *spec = &self->specs [i];
        char left [96];
        const char *arg = spec->arg? spec->arg:
            spec->type == OPTIONS_INT? "N": spec->type == OPTIONS_ENUM? spec->choices: "VALUE";
        snprintf (left, sizeof left, "%c%c%c --%s%s%s",
                  spec->short_name? '-': ' ', spec->short_name? spec->short_name: ' ',
                  spec->short_name? ',': ' ', spec->name,
                  spec->type == OPTIONS_BOOL? "": " ",
                  spec->type == OPTIONS_BOOL? "": arg);
        if (strlen (left) > 27)
            fprintf (out, "  %s\n  %-27s ", left, "");
        else
            fprintf (out, "  %-27s ", left);
        //  Help lines: each '\n' continues under the help column.
        const char *help = spec->help? spec->help: "";
        for (const char *p = help; *p; p++) {
            fputc (*p, out);
            if (*p == '\n')
                fprintf (out, "  %-27s ", "");
        }
        if (spec->def && spec->type != OPTIONS_BOOL)
            fprintf (out, " (default %s)", spec->def);
        if (spec->flags & OPTIONS_REQUIRED)
            fprintf (out, " (required)");
        if (spec->flags & OPTIONS_REPEAT)
            fprintf (out, " (repeat or comma-separate)");
        if (spec->env)
            fprintf (out, " [%s]", spec->env);
        fputc ('\n', out);
    }
    fprintf (out, "  %-27s this text\n", self->help_short? "-h, --help": "    --help");
    fprintf (out, "  %-27s the option table as JSON\n", "    --options-json");
}

static void
s_json_string (FILE *out, const char *text)
{
    if (!text) {
        fputs ("null", out);
        return;
    }
    fputc ('"', out);
    for (const unsigned char *p = (const unsigned char *) text; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf (out, "\\%c", *p);
        else
        if (*p == '\n')
            fputs ("\\n", out);
        else
        if (*p < 0x20)
            fprintf (out, "\\u%04x", *p);
        else
            fputc (*p, out);
    }
    fputc ('"', out);
}

void
options_print_json (options_t *self, FILE *out)
{
    assert (self);
    fputs ("{\"program\": ", out);
    s_json_string (out, self->program);
    fputs (", \"options\": [", out);
    for (size_t i = 0; i < self->count; i++) {
        const options_spec_t *spec = &self->specs [i];
        char shortname [2] = { spec->short_name, 0 };
        fputs (i? ",\n  {\"name\": ": "\n  {\"name\": ", out);
        s_json_string (out, spec->name);
        fputs (", \"short\": ", out);
        s_json_string (out, spec->short_name? shortname: NULL);
        fputs (", \"env\": ", out);
        s_json_string (out, spec->env);
        fprintf (out, ", \"type\": \"%s\", \"arg\": ", s_type_name (spec->type));
        s_json_string (out, spec->arg);
        fputs (", \"default\": ", out);
        s_json_string (out, spec->def);
        if (spec->type == OPTIONS_INT && (spec->min || spec->max))
            fprintf (out, ", \"min\": %ld, \"max\": %ld", spec->min, spec->max);
        fputs (", \"choices\": ", out);
        if (spec->type == OPTIONS_ENUM) {
            fputc ('[', out);
            const char *p = spec->choices;
            bool first = true;
            while (p && *p) {
                const char *bar = strchr (p, '|');
                size_t len = bar? (size_t) (bar - p): strlen (p);
                fprintf (out, "%s\"%.*s\"", first? "": ", ", (int) len, p);
                first = false;
                p = bar? bar + 1: NULL;
            }
            fputc (']', out);
        }
        else
            fputs ("null", out);
        fprintf (out, ", \"required\": %s, \"repeat\": %s, \"help\": ",
                 spec->flags & OPTIONS_REQUIRED? "true": "false",
                 spec->flags & OPTIONS_REPEAT? "true": "false");
        s_json_string (out, spec->help);
        fputc ('}', out);
    }
    fputs ("\n]}\n", out);
}
