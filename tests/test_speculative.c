/*  test_speculative.c: the verification step (core/speculative) on its own.

    Exact cases: greedy acceptance stops at the first mismatch and returns
    the argmax there, or a bonus argmax after k acceptances; q = p accepts
    every draft; a seed and position replay the same answer; bad drafts are
    refused with a message. Statistical: over 40000 seeds, the first token
    emitted by draft + verify (with q unlike p: q puts mass on tokens p
    excludes, and p on tokens q lacks) follows p exactly (chi-square at the
    99.9% quantile, with excluded tokens required to never appear), and so
    does the second token given the first draft was accepted. Seeds are
    fixed, so the test is deterministic.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "speculative.h"

#define V 8
#define TRIALS 40000

//  The target's distribution of a logits row under params, dense by token.
static void
s_p (const float *logits, const sampler_params_t *params, double *p)
{
    sampler_t *s = sampler_new (params, V);
    cr_assert_not_null (s);
    sampler_prob_t list [V];
    int n = sampler_distribution (s, logits, list, V);
    cr_assert_gt (n, 0);
    memset (p, 0, V * sizeof *p);
    for (int i = 0; i < n; i++)
        p [list [i].token] = list [i].prob;
    sampler_destroy (&s);
}

//  Chi-square statistic of counts against p; excluded tokens must be 0.
static double
s_chi2 (const long *counts, const double *p, long total, int *df)
{
    double chi2 = 0.0;
    *df = -1;
    for (int t = 0; t < V; t++) {
        if (p [t] == 0.0) {
            cr_assert_eq (counts [t], 0, "token %d has p = 0 but appeared %ld times", t, counts [t]);
            continue;
        }
        double e = p [t] * total;
        chi2 += (counts [t] - e) * (counts [t] - e) / e;
        (*df)++;
    }
    return chi2;
}

//  99.9% quantiles of chi-square for df 1..7.
static const double s_chi2_999 [] = { 0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32 };

//  Draws from a small list with a uniform from an LCG (the drafter's side).
static int32_t
s_draw_q (const int32_t *tokens, const float *probs, int n, uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    double u = (*state >> 11) * (1.0 / 9007199254740992.0);
    double acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += probs [i];
        if (u < acc)
            return tokens [i];
    }
    return tokens [n - 1];
}

Test (speculative, greedy_accepts_prefix_then_argmax)
{
    speculative_t *spec = speculative_new (V);
    cr_assert_not_null (spec);
    //  Row r's argmax is token (r + 1) % V.
    float logits [5 * V];
    for (int r = 0; r < 5; r++)
        for (int t = 0; t < V; t++)
            logits [r * V + t] = t == (r + 1) % V? 3.0f: (float) t * 0.1f;
    sampler_params_t sp = sampler_params_default ();
    int accepted;
    int32_t next;
    char err [256];
    //  All four right: bonus from row 4.
    int32_t good [4] = { 1, 2, 3, 4 };
    cr_assert_eq (speculative_verify (spec, logits, 4, good, NULL, &sp, 7, &accepted, &next,
                                      err, sizeof err), 0, "%s", err);
    cr_assert_eq (accepted, 4);
    cr_assert_eq (next, 5);
    //  Third wrong: two accepted, the correction is row 2's argmax.
    int32_t bad [4] = { 1, 2, 6, 4 };
    cr_assert_eq (speculative_verify (spec, logits, 4, bad, NULL, &sp, 7, &accepted, &next,
                                      err, sizeof err), 0);
    cr_assert_eq (accepted, 2);
    cr_assert_eq (next, 3);
    //  First wrong.
    int32_t first [1] = { 0 };
    cr_assert_eq (speculative_verify (spec, logits, 1, first, NULL, &sp, 7, &accepted, &next,
                                      err, sizeof err), 0);
    cr_assert_eq (accepted, 0);
    cr_assert_eq (next, 1);
    //  k = 0: just the next token.
    cr_assert_eq (speculative_verify (spec, logits, 0, NULL, NULL, &sp, 7, &accepted, &next,
                                      err, sizeof err), 0);
    cr_assert_eq (accepted, 0);
    cr_assert_eq (next, 1);
    //  Ties go to the lowest id, as the sampler's greedy path.
    float tie [V] = { 0, 2, 5, 5, 1, 0, 0, 0 };
    cr_assert_eq (speculative_verify (spec, tie, 0, NULL, NULL, &sp, 0, &accepted, &next,
                                      err, sizeof err), 0);
    cr_assert_eq (next, 2);
    //  top_k 1 at a positive temperature is greedy too.
    sampler_params_t k1 = { .temperature = 0.7f, .top_k = 1, .top_p = 1.0f, .seed = 3 };
    cr_assert (speculative_is_greedy (&k1));
    cr_assert_eq (speculative_verify (spec, logits, 4, bad, NULL, &k1, 7, &accepted, &next,
                                      err, sizeof err), 0);
    cr_assert_eq (accepted, 2);
    cr_assert_eq (next, 3);
    speculative_destroy (&spec);
    cr_assert_null (spec);
}

Test (speculative, q_equal_to_p_always_accepts)
{
    speculative_t *spec = speculative_new (V);
    float logits [3 * V];
    for (int i = 0; i < 3 * V; i++)
        logits [i] = (float) ((i * 37) % 11) * 0.3f;
    sampler_params_t sp = { .temperature = 0.9f, .top_k = 6, .top_p = 0.95f, .seed = 11 };
    //  q_i = p_{i-1} exactly, as a drafter with the target's own model has.
    sampler_t *s = sampler_new (&sp, V);
    sampler_prob_t lists [2][V];
    int n [2];
    int32_t qt [2][V];
    float qp [2][V];
    speculative_q_t q [2];
    for (int r = 0; r < 2; r++) {
        n [r] = sampler_distribution (s, logits + r * V, lists [r], V);
        for (int j = 0; j < n [r]; j++) {
            qt [r][j] = lists [r][j].token;
            qp [r][j] = lists [r][j].prob;
        }
        q [r] = (speculative_q_t) { qt [r], qp [r], n [r] };
    }
    uint64_t state = 5;
    for (uint64_t seed = 0; seed < 2000; seed++) {
        int32_t draft [2];
        for (int r = 0; r < 2; r++)
            draft [r] = s_draw_q (qt [r], qp [r], n [r], &state);
        sp.seed = seed;
        int accepted;
        int32_t next;
        char err [256];
        if (speculative_verify (spec, logits, 2, draft, q, &sp, (uint32_t) seed,
                                &accepted, &next, err, sizeof err) || accepted != 2)
            cr_assert_fail ("seed %lu: q = p must accept every draft (accepted %d) %s",
                      (unsigned long) seed, accepted, err);
    }
    sampler_destroy (&s);
    speculative_destroy (&spec);
}

Test (speculative, replay_is_deterministic)
{
    speculative_t *a = speculative_new (V), *b = speculative_new (V);
    float logits [4 * V];
    for (int i = 0; i < 4 * V; i++)
        logits [i] = (float) ((i * 13) % 7) * 0.5f;
    int32_t draft [3] = { 1, 2, 3 };
    int32_t qt [2] = { 1, 5 };
    float qp [2] = { 0.6f, 0.4f };
    int32_t qt2 [1] = { 2 }, qt3 [1] = { 3 };
    float one [1] = { 1.0f };
    speculative_q_t q [3] = { { qt, qp, 2 }, { qt2, one, 1 }, { qt3, one, 1 } };
    sampler_params_t sp = { .temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 99 };
    int differs = 0;
    for (uint32_t pos = 0; pos < 200; pos++) {
        int na, nb, nc;
        int32_t ta, tb, tc;
        char err [256];
        cr_assert_eq (speculative_verify (a, logits, 3, draft, q, &sp, pos, &na, &ta, err, sizeof err), 0);
        //  Another verifier (another replica) that has served other requests.
        sampler_params_t other = { .temperature = 0.5f, .top_k = 3, .top_p = 0.8f, .seed = pos };
        cr_assert_eq (speculative_verify (b, logits, 3, draft, q, &other, pos, &nc, &tc, err, sizeof err), 0);
        cr_assert_eq (speculative_verify (b, logits, 3, draft, q, &sp, pos, &nb, &tb, err, sizeof err), 0);
        cr_assert_eq (na, nb, "pos %u", pos);
        cr_assert_eq (ta, tb, "pos %u", pos);
        //  A different position gives a different stream (some answer changes).
        int nd;
        int32_t td;
        cr_assert_eq (speculative_verify (a, logits, 3, draft, q, &sp, pos + 1000, &nd, &td, err, sizeof err), 0);
        differs += nd != na || td != ta;
    }
    cr_assert_gt (differs, 20);
    speculative_destroy (&a);
    speculative_destroy (&b);
}

Test (speculative, bad_drafts_are_refused)
{
    speculative_t *spec = speculative_new (V);
    float logits [2 * V] = { 0 };
    sampler_params_t sp = { .temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 1 };
    int accepted;
    int32_t next;
    char err [256] = "";
    int32_t out [1] = { V };
    cr_assert_eq (speculative_verify (spec, logits, 1, out, NULL, &sp, 0, &accepted, &next, err, sizeof err), -1);
    cr_assert (strstr (err, "outside the vocabulary"), "%s", err);
    int32_t d [1] = { 2 };
    int32_t qt [2] = { 3, 4 };
    float qp [2] = { 0.5f, 0.5f };
    speculative_q_t q = { qt, qp, 2 };
    cr_assert_eq (speculative_verify (spec, logits, 1, d, &q, &sp, 0, &accepted, &next, err, sizeof err), -1);
    cr_assert (strstr (err, "no probability"), "%s", err);
    float heavy [2] = { 0.9f, 0.9f };
    int32_t qt2 [2] = { 2, 4 };
    speculative_q_t q2 = { qt2, heavy, 2 };
    cr_assert_eq (speculative_verify (spec, logits, 1, d, &q2, &sp, 0, &accepted, &next, err, sizeof err), -1);
    cr_assert (strstr (err, "sum"), "%s", err);
    float nan_logits [V];
    for (int i = 0; i < V; i++)
        nan_logits [i] = NAN;
    cr_assert_eq (speculative_verify (spec, nan_logits, 0, NULL, NULL, &sp, 0, &accepted, &next, err, sizeof err), -1);
    sampler_params_t greedy = sampler_params_default ();
    cr_assert_eq (speculative_verify (spec, nan_logits, 0, NULL, NULL, &greedy, 0, &accepted, &next, err, sizeof err), -1);
    speculative_destroy (&spec);
}

//  Draft + verify over many seeds; counts the first emitted token and,
//  when the first draft was accepted, the second.
static void
s_run_chain (const float *logits, const sampler_params_t *base, int k,
             const int32_t (*qt) [V], const float (*qp) [V], const int *qn, bool use_q,
             long *first, long *second, long *second_total)
{
    speculative_t *spec = speculative_new (V);
    uint64_t state = 12345;
    speculative_q_t q [3];
    for (int r = 0; r < k; r++)
        q [r] = (speculative_q_t) { qt [r], qp [r], qn [r] };
    for (long trial = 0; trial < TRIALS; trial++) {
        int32_t draft [3];
        for (int r = 0; r < k; r++)
            draft [r] = s_draw_q (qt [r], qp [r], qn [r], &state);
        sampler_params_t sp = *base;
        sp.seed = (uint64_t) trial * 7919 + 17;
        int accepted;
        int32_t next;
        char err [256];
        //  Plain checks in the loop: --full-stats makes every cr_assert costly.
        if (speculative_verify (spec, logits, k, draft, use_q? q: NULL, &sp, 42,
                                &accepted, &next, err, sizeof err) || accepted < 0 || accepted > k)
            cr_assert_fail ("trial %ld: %s (accepted %d)", trial, err, accepted);
        int32_t emitted [4];
        for (int i = 0; i < accepted; i++)
            emitted [i] = draft [i];
        emitted [accepted] = next;
        first [emitted [0]]++;
        if (accepted >= 1) {
            second [emitted [1]]++;
            (*second_total)++;
        }
    }
    speculative_destroy (&spec);
}

Test (speculative, output_distribution_equals_target, .timeout = 60)
{
    //  Row 0 and row 1: the target's logits after t0 and after d1.
    float logits [3 * V] = {
        2.0f, 1.5f, 1.0f, 0.5f, 0.2f, -1.0f, -3.0f, -5.0f,
        -1.0f, 0.0f, 2.5f, 0.3f, 1.2f, 0.8f, -2.0f, 0.1f,
        0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f
    };
    //  top_k 5 at temperature 0.8: p excludes tokens 5..7 in row 0.
    sampler_params_t sp = { .temperature = 0.8f, .top_k = 5, .top_p = 1.0f, .seed = 0 };
    //  q_1 puts mass on 6 and 7 (p excludes them) and lacks 2, 3, 4 (p has
    //  them); q_2 differs from p_1 as well.
    const int32_t qt [3][V] = { { 0, 1, 6, 7 }, { 2, 5, 6, 0 }, { 1 } };
    const float qp [3][V] = { { 0.2f, 0.5f, 0.2f, 0.1f }, { 0.3f, 0.3f, 0.2f, 0.2f }, { 1.0f } };
    const int qn [3] = { 4, 4, 1 };
    double p0 [V], p1 [V];
    s_p (logits, &sp, p0);
    s_p (logits + V, &sp, p1);
    for (int k = 1; k <= 2; k++) {
        long first [V] = { 0 }, second [V] = { 0 }, second_total = 0;
        s_run_chain (logits, &sp, k, qt, qp, qn, true, first, second, &second_total);
        int df;
        double chi2 = s_chi2 (first, p0, TRIALS, &df);
        cr_assert_lt (chi2, s_chi2_999 [df], "k=%d first token: chi2 %.2f df %d", k, chi2, df);
        if (k == 2) {
            cr_assert_gt (second_total, 1000);
            chi2 = s_chi2 (second, p1, second_total, &df);
            cr_assert_lt (chi2, s_chi2_999 [df], "second token: chi2 %.2f df %d (n %ld)",
                          chi2, df, second_total);
        }
    }
    //  Deterministic drafter (no q sent: point masses), no truncation in p.
    sampler_params_t full = { .temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 0 };
    const int32_t pt [3][V] = { { 3 }, { 4 }, { 0 } };
    const float pp [3][V] = { { 1.0f }, { 1.0f }, { 1.0f } };
    const int pn [3] = { 1, 1, 1 };
    s_p (logits, &full, p0);
    s_p (logits + V, &full, p1);
    long first [V] = { 0 }, second [V] = { 0 }, second_total = 0;
    s_run_chain (logits, &full, 2, pt, pp, pn, false, first, second, &second_total);
    int df;
    double chi2 = s_chi2 (first, p0, TRIALS, &df);
    cr_assert_lt (chi2, s_chi2_999 [df], "point-mass draft, first token: chi2 %.2f df %d", chi2, df);
    chi2 = s_chi2 (second, p1, second_total, &df);
    cr_assert_lt (chi2, s_chi2_999 [df], "point-mass draft, second token: chi2 %.2f df %d", chi2, df);
}
