/*  cmd_quantize.c: `splitmesh quantize`, a mixed-precision GGUF under a byte budget.

    Measures each matrix's sensitivity on calibration text, assigns formats
    under the budget and writes the file (core/quantize.h has the method).
    The measurement is the long part, so it draws a progress bar on stderr
    (redrawn in place on a terminal, one line per 10% otherwise). With
    --json, stdout gets one JSON object: sizes, total KL, and every unit's
    chosen type and measured KLs, for reports.
*/
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"
#include "cli_args.h"
#include "ggml_types.h"
#include "quantize.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh quantize --model IN.gguf --budget BYTES|RATIO --out OUT.gguf [options]\n"
        "      --model FILE       source llama GGUF (default $SPLITMESH_MODEL)\n"
        "      --budget B         tensor data budget: bytes (90000000, 90MB, 86MiB) or a\n"
        "                         compression ratio against F32 (6x); a comma-separated\n"
        "                         list writes one file per budget from one measurement\n"
        "      --out FILE         output GGUF (written atomically); with several budgets\n"
        "                         it must contain {} (replaced by each budget)\n"
        "      --calib FILE       calibration text (required unless --uniform)\n"
        "      --calib-seqs N     calibration sequences (default 8)\n"
        "      --calib-len N      tokens per sequence (default 64)\n"
        "      --cache FILE       sensitivity cache: measured KLs are appended as they are\n"
        "                         measured and reused by later runs (same model and\n"
        "                         calibration), so budgets and restarts reuse them\n"
        "      --allow-splitmesh-types  also offer splitmesh's own W4G128 (W4, group 128,\n"
        "                         rows of 128); llama.cpp cannot load such files\n"
        "      --uniform T        no measurement: every matrix at T (q4_0, q4_1, q5_0,\n"
        "                         q5_1, q8_0, f16)\n"
        "      --threads T        threads (default 2)\n"
        "      --json             print a JSON summary (per-unit types and KLs) on stdout\n"
        "      --quiet            no progress bar\n");
}

typedef struct {
    double start;
    int last_decile;
    bool tty;
} s_progress_t;

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void
s_progress (void *arg, int done, int total, const char *what)
{
    s_progress_t *p = arg;
    double el = s_now () - p->start;
    double eta = done > 0 ? el * (total - done) / done : 0;
    int width = 30, fill = total > 0 ? done * width / total : width;
    if (p->tty) {
        char bar[32];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf (stderr, "\rsensitivity [%s] %d/%d %-24s %4.0fs left ", bar, done, total, what, eta);
        if (done == total)
            fprintf (stderr, "\n");
        return;
    }
    int decile = total > 0 ? done * 10 / total : 10;
    if (decile > p->last_decile) {
        p->last_decile = decile;
        fprintf (stderr, "sensitivity %3d%% (%d/%d, %s) %.0fs elapsed, %.0fs left\n",
                 decile * 10, done, total, what, el, eta);
    }
}

#define S_MAX_BUDGETS 16

static void
s_report (quantize_plan_t *plan, const char *model_path, const char *out, uint64_t budget,
          double t_measure, bool json)
{
    uint64_t bytes = quantize_plan_bytes (plan), f32 = quantize_plan_f32_bytes (plan);
    int n_units = quantize_plan_unit_count (plan);
    int count[QUANTIZE_N_CANDIDATES] = { 0 };
    for (int u = 0; u < n_units; u++)
        for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++)
            count[c] += quantize_plan_unit_type (plan, u) == quantize_candidates[c];
    if (json) {
        printf ("{\"model\":\"%s\",\"out\":\"%s\",\"budget_bytes\":%llu,\"bytes\":%llu,"
                "\"f32_bytes\":%llu,\"compression_vs_f32\":%.4f,\"kl_sum\":%.6g,"
                "\"calib_tokens\":%d,\"measured\":%d,\"measure_s\":%.2f,\"units\":[",
                model_path, out, (unsigned long long) budget, (unsigned long long) bytes,
                (unsigned long long) f32, (double) f32 / (double) bytes, quantize_plan_kl (plan),
                quantize_plan_calib_tokens (plan), quantize_plan_measured (plan), t_measure);
        for (int u = 0; u < n_units; u++) {
            printf ("%s{\"name\":\"%s\",\"type\":\"%s\",\"kl\":{", u ? "," : "",
                    quantize_plan_unit_name (plan, u),
                    ggml_type_traits (quantize_plan_unit_type (plan, u))->name);
            for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++) {
                //  null: the type does not apply or was not measured
                //  (dearer than an exact one).
                double kl = quantize_plan_unit_kl (plan, u, c);
                printf ("%s\"%s\":", c ? "," : "", ggml_type_traits (quantize_candidates[c])->name);
                printf (isnan (kl) ? "null" : "%.6g", kl);
            }
            printf ("}}");
        }
        printf ("]}\n");
    }
    else {
        printf ("wrote %s: %llu bytes of tensors (%.2fx smaller than F32's %llu)", out,
                (unsigned long long) bytes, (double) f32 / (double) bytes, (unsigned long long) f32);
        printf (", estimated KL %.4g; units:", quantize_plan_kl (plan));
        for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++)
            printf (" %s %d", ggml_type_traits (quantize_candidates[c])->name, count[c]);
        printf ("\n");
    }
    fflush (stdout);
}

int
cmd_quantize (int argc, char **argv)
{
    const char *model_path = NULL, *budget_text = NULL, *out = NULL, *uniform = NULL;
    quantize_options_t qo = quantize_options_default ();
    long seqs = qo.calib_seqs, len = qo.calib_len, threads = qo.n_threads;
    bool json = false, quiet = false;
    static const struct option longopts[] = {
        { "model", required_argument, NULL, 'm' },
        { "budget", required_argument, NULL, 'b' },
        { "out", required_argument, NULL, 'o' },
        { "calib", required_argument, NULL, 'c' },
        { "calib-seqs", required_argument, NULL, 'S' },
        { "calib-len", required_argument, NULL, 'L' },
        { "uniform", required_argument, NULL, 'u' },
        { "threads", required_argument, NULL, 't' },
        { "cache", required_argument, NULL, 'C' },
        { "allow-splitmesh-types", no_argument, NULL, 'A' },
        { "json", no_argument, NULL, 'j' },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    optind = 1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, ":h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
            case 'm': model_path = optarg; break;
            case 'b': budget_text = optarg; break;
            case 'o': out = optarg; break;
            case 'c': qo.calib_path = optarg; break;
            case 'S': bad = cli_parse_long (optarg, 1, 64, &seqs); break;
            case 'L': bad = cli_parse_long (optarg, 2, 4096, &len); break;
            case 'u': uniform = optarg; break;
            case 't': bad = cli_parse_long (optarg, 1, 256, &threads); break;
            case 'C': qo.cache_path = optarg; break;
            case 'A': qo.allow_splitmesh_types = true; break;
            case 'j': json = true; break;
            case 'q': quiet = true; break;
            case 'h': s_usage (stdout); return 0;
            default: return cli_getopt_error ("quantize", opt, argv, s_usage);
        }
        if (bad)
            return cli_bad_value ("quantize", longopts, opt, optarg);
    }
    if (!model_path)
        model_path = getenv ("SPLITMESH_MODEL");
    if (!model_path || !*model_path || !out || optind < argc || (!uniform && !budget_text)) {
        fprintf (stderr, "splitmesh quantize: --model, --out and --budget (or --uniform) are "
                 "required (and no other arguments)\n");
        s_usage (stderr);
        return 2;
    }
    int uniform_type = -1;
    if (uniform) {
        uniform_type = ggml_type_from_name (uniform);
        bool ok = false;
        for (int c = 0; c < QUANTIZE_N_CANDIDATES; c++)
            ok = ok || quantize_candidates[c] == uniform_type;
        if (!ok || (ggml_type_is_splitmesh (uniform_type) && !qo.allow_splitmesh_types)) {
            fprintf (stderr, "splitmesh quantize: --uniform '%s' is not one of q4_0, q4_1, q5_0, "
                     "q5_1, q8_0, f16%s\n", uniform,
                     ok ? " (w4g128 needs --allow-splitmesh-types)" : "");
            return 2;
        }
        qo.calib_path = NULL;
    }
    else if (!qo.calib_path) {
        fprintf (stderr, "splitmesh quantize: --calib FILE is required to measure sensitivity\n");
        return 2;
    }
    qo.calib_seqs = (int) seqs;
    qo.calib_len = (int) len;
    qo.n_threads = (int) threads;
    s_progress_t prog = { .start = s_now (), .last_decile = 0, .tty = isatty (2) };
    if (!quiet) {
        qo.progress = s_progress;
        qo.progress_arg = &prog;
    }

    int rc = 1;
    char err[512] = "";
    char list[512], *budget_names[S_MAX_BUDGETS];
    uint64_t budgets[S_MAX_BUDGETS];
    int n_budgets = 0;
    //  Opening without measurement first checks the file and the budgets
    //  cheaply, before the long measurement.
    quantize_options_t probe = qo;
    probe.calib_path = NULL;
    quantize_plan_t *plan = quantize_plan_new (model_path, &probe, err, sizeof err);
    if (!plan) {
        fprintf (stderr, "splitmesh quantize: %s: %s\n", model_path, err);
        return 1;
    }
    if (budget_text) {
        snprintf (list, sizeof list, "%s", budget_text);
        char *save = NULL;
        for (char *b = strtok_r (list, ",", &save); b; b = strtok_r (NULL, ",", &save)) {
            if (n_budgets == S_MAX_BUDGETS) {
                fprintf (stderr, "splitmesh quantize: at most %d budgets\n", S_MAX_BUDGETS);
                rc = 2;
                goto done;
            }
            if (quantize_parse_budget (plan, b, &budgets[n_budgets], err, sizeof err)) {
                fprintf (stderr, "splitmesh quantize: %s\n", err);
                rc = 2;
                goto done;
            }
            if (budgets[n_budgets] < quantize_plan_min_bytes (plan) && !uniform) {
                quantize_plan_assign (plan, budgets[n_budgets], err, sizeof err);
                fprintf (stderr, "splitmesh quantize: %s\n", err);
                goto done;
            }
            budget_names[n_budgets++] = b;
        }
        if (n_budgets == 0) {
            fprintf (stderr, "splitmesh quantize: bad budget '%s': give bytes (90000000, 90MB, "
                     "86MiB) or a ratio (6x)\n", budget_text);
            rc = 2;
            goto done;
        }
        if (n_budgets > 1 && !strstr (out, "{}")) {
            fprintf (stderr, "splitmesh quantize: with several budgets --out must contain {}\n");
            rc = 2;
            goto done;
        }
    }
    double t0 = s_now ();
    if (!uniform) {
        quantize_plan_destroy (&plan);
        plan = quantize_plan_new (model_path, &qo, err, sizeof err);
        if (!plan) {
            fprintf (stderr, "splitmesh quantize: %s\n", err);
            goto done;
        }
    }
    double t_measure = s_now () - t0;
    for (int bi = 0; bi < (n_budgets ? n_budgets : 1); bi++) {
        uint64_t budget = n_budgets ? budgets[bi] : 0;
        char path[1024];
        const char *brace = strstr (out, "{}");
        if (brace)
            snprintf (path, sizeof path, "%.*s%s%s", (int) (brace - out), out,
                      n_budgets ? budget_names[bi] : uniform, brace + 2);
        else
            snprintf (path, sizeof path, "%s", out);
        if (uniform) {
            if (quantize_plan_set_uniform (plan, uniform_type)) {
                fprintf (stderr, "splitmesh quantize: --uniform %s does not apply to every matrix "
                         "(its block does not divide every row)\n", uniform);
                rc = 2;
                goto done;
            }
            if (n_budgets && quantize_plan_bytes (plan) > budget) {
                fprintf (stderr, "splitmesh quantize: uniform %s takes %llu bytes, over the budget of %llu\n",
                         uniform, (unsigned long long) quantize_plan_bytes (plan),
                         (unsigned long long) budget);
                goto done;
            }
        }
        else if (quantize_plan_assign (plan, budget, err, sizeof err)) {
            fprintf (stderr, "splitmesh quantize: %s\n", err);
            goto done;
        }
        if (quantize_plan_write (plan, path, err, sizeof err)) {
            fprintf (stderr, "splitmesh quantize: %s\n", err);
            goto done;
        }
        s_report (plan, model_path, path, budget, t_measure, json);
    }
    rc = 0;
done:
    quantize_plan_destroy (&plan);
    return rc;
}
