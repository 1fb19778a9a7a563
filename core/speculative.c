/*  speculative.c: greedy and rejection-sampling verification of drafted
    tokens against the target's logits (see speculative.h for the rules).

    The target's distributions come from the same sampler code `splitmesh
    run` samples with, so "p under the request's settings" means exactly
    the distribution a target-only run would draw from. p is scattered into
    a dense vocab-sized array for O(1) lookups of p(d) and for the residual;
    only the entries touched are cleared afterwards.
*/
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rng.h"
#include "speculative.h"

struct _speculative_t {
    int vocab_size;             //  logits per row
    sampler_t *sampler;         //  for sampler_distribution and the PRNG
    sampler_params_t params;    //  the sampler's current settings
    sampler_prob_t *p;          //  (vocab_size) target distribution, sorted
    float *dense;               //  (vocab_size) p scattered by token id, else 0
    float *resid;               //  (vocab_size) residual max(0, p - q)
};

speculative_t *
speculative_new (int vocab_size)
{
    if (vocab_size < 1)
        return NULL;
    speculative_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->vocab_size = vocab_size;
    self->params = sampler_params_default ();
    self->sampler = sampler_new (&self->params, vocab_size);
    self->p = malloc ((size_t) vocab_size * sizeof *self->p);
    self->dense = calloc ((size_t) vocab_size, sizeof *self->dense);
    self->resid = calloc ((size_t) vocab_size, sizeof *self->resid);
    if (!self->sampler || !self->p || !self->dense || !self->resid)
        speculative_destroy (&self);
    return self;
}

void
speculative_destroy (speculative_t **self_p)
{
    assert (self_p);
    speculative_t *self = *self_p;
    if (self) {
        sampler_destroy (&self->sampler);
        free (self->p);
        free (self->dense);
        free (self->resid);
        free (self);
        *self_p = NULL;
    }
}

bool
speculative_is_greedy (const sampler_params_t *params)
{
    return params->temperature <= 0.0f || params->top_k == 1;
}

//  Argmax of a logits row, ties to the lowest id (as the sampler); -1 when
//  no value is finite.
static int32_t
s_argmax (const float *logits, int n)
{
    int32_t best = -1;
    for (int i = 0; i < n; i++)
        if (isfinite (logits [i]) && (best < 0 || logits [i] > logits [best]))
            best = i;
    return best;
}

//  PRNG key of (seed, pos): one splitmix64 step (core/rng.h) over the seed
//  offset by the position, so neighbouring positions get unrelated streams
//  (the sampler mixes again when seeding).
static uint64_t
s_key (uint64_t seed, uint32_t pos)
{
    uint64_t state = seed ^ ((uint64_t) pos * 0xd1b54a32d192ed03ULL);
    return rng_next (&state);
}

//  Computes p for one logits row into self->p (list) and self->dense.
//  Returns the list length, or -1 on logits without a finite value.
//  Without truncation (no top-k, no top-p) p is the plain softmax at the
//  temperature, computed here with the sampler's arithmetic (float logits
//  times 1/T, expf of the difference to the maximum, a double sum) but
//  without sorting the whole vocabulary, which nothing here needs: that
//  takes a verification of 8 drafts over 49152 tokens from ~33 ms to a few.
//  With truncation the sampler computes it (its top-k heap keeps it cheap).
static int
s_dist (speculative_t *self, const float *logits)
{
    const sampler_params_t *sp = &self->params;
    int V = self->vocab_size;
    bool top_k = sp->top_k > 0 && sp->top_k < V;
    bool top_p = sp->top_p > 0.0f && sp->top_p < 1.0f;
    if (!top_k && !top_p) {
        int32_t best = s_argmax (logits, V);
        if (best < 0)
            return -1;
        float inv_t = 1.0f / sp->temperature;
        float mx = logits [best] * inv_t;
        double sum = 0.0;
        int n = 0;
        for (int i = 0; i < V; i++)
            if (isfinite (logits [i])) {
                float e = expf (logits [i] * inv_t - mx);
                self->p [n++] = (sampler_prob_t) { i, e };
                sum += e;
            }
        for (int i = 0; i < n; i++) {
            self->p [i].prob = (float) (self->p [i].prob / sum);
            self->dense [self->p [i].token] = self->p [i].prob;
        }
        return n;
    }
    int n = sampler_distribution (self->sampler, logits, self->p, V);
    if (n <= 0)
        return -1;
    for (int i = 0; i < n; i++)
        self->dense [self->p [i].token] = self->p [i].prob;
    return n;
}

static void
s_dist_clear (speculative_t *self, int n)
{
    for (int i = 0; i < n; i++)
        self->dense [self->p [i].token] = 0.0f;
}

//  Draws a token from the list (token, prob) by inverting its CDF with u;
//  the list need not sum to exactly 1 (u is scaled by its total).
static int32_t
s_draw (const sampler_prob_t *list, int n, double u)
{
    double total = 0.0;
    for (int i = 0; i < n; i++)
        total += list [i].prob;
    double target = u * total, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += list [i].prob;
        if (target < acc)
            return list [i].token;
    }
    //  Rounding left u * total at or above the sum: the last token with mass.
    for (int i = n - 1; i > 0; i--)
        if (list [i].prob > 0.0f)
            return list [i].token;
    return list [0].token;
}

//  Checks one q: ids in range, probs in [0, 1], finite, sum <= 1.001.
static int
s_check_q (const speculative_q_t *q, int i, int vocab, char *err, size_t err_size)
{
    if (q->n < 1 || !q->tokens || !q->probs) {
        snprintf (err, err_size, "drafts[%d] is empty", i);
        return -1;
    }
    double sum = 0.0;
    for (int j = 0; j < q->n; j++) {
        if (q->tokens [j] < 0 || q->tokens [j] >= vocab) {
            snprintf (err, err_size, "drafts[%d].tokens[%d] = %d is outside the vocabulary (%d)",
                      i, j, q->tokens [j], vocab);
            return -1;
        }
        if (!(q->probs [j] >= 0.0f && q->probs [j] <= 1.0f)) {
            snprintf (err, err_size, "drafts[%d].probs[%d] is not in [0, 1]", i, j);
            return -1;
        }
        sum += q->probs [j];
    }
    if (sum > 1.001) {
        snprintf (err, err_size, "drafts[%d].probs sum to %.4f > 1", i, sum);
        return -1;
    }
    return 0;
}

int
speculative_verify (speculative_t *self, const float *logits, int k,
                    const int32_t *draft, const speculative_q_t *q,
                    const sampler_params_t *params, uint32_t pos,
                    int *accepted, int32_t *next_token,
                    char *err, size_t err_size)
{
    assert (self);
    assert (logits);
    assert (params);
    int V = self->vocab_size;
    if (k < 0 || (k > 0 && !draft)) {
        snprintf (err, err_size, "bad draft count %d", k);
        return -1;
    }
    for (int i = 0; i < k; i++)
        if (draft [i] < 0 || draft [i] >= V) {
            snprintf (err, err_size, "draft_tokens[%d] = %d is outside the vocabulary (%d)",
                      i, draft [i], V);
            return -1;
        }

    //  Greedy: exact match against the argmax, no randomness.
    if (speculative_is_greedy (params)) {
        int n = 0;
        for (;;) {
            int32_t best = s_argmax (logits + (size_t) n * V, V);
            if (best < 0) {
                snprintf (err, err_size, "target logits of row %d hold no finite value", n);
                return -1;
            }
            if (n == k || draft [n] != best) {
                *accepted = n;
                *next_token = best;
                return 0;
            }
            n++;
        }
    }

    //  Sampling: validate every q before drawing anything.
    for (int i = 0; q && i < k; i++) {
        if (s_check_q (&q [i], i, V, err, err_size))
            return -1;
        bool found = false;
        for (int j = 0; j < q [i].n && !found; j++)
            found = q [i].tokens [j] == draft [i] && q [i].probs [j] > 0.0f;
        if (!found) {
            snprintf (err, err_size, "drafts[%d] gives draft token %d no probability", i, draft [i]);
            return -1;
        }
    }
    if (params->temperature != self->params.temperature || params->top_k != self->params.top_k
    ||  params->top_p != self->params.top_p) {
        sampler_t *fresh = sampler_new (params, V);
        if (!fresh) {
            snprintf (err, err_size, "bad sampling parameters");
            return -1;
        }
        sampler_destroy (&self->sampler);
        self->sampler = fresh;
        self->params = *params;
    }
    sampler_seed (self->sampler, s_key (params->seed, pos));

    for (int i = 0; i <= k; i++) {
        int n_p = s_dist (self, logits + (size_t) i * V);
        if (n_p < 0) {
            snprintf (err, err_size, "target logits of row %d hold no finite value", i);
            return -1;
        }
        if (i == k) {
            //  Every draft accepted: the bonus token from p_k.
            double u = sampler_uniform (self->sampler);
            *accepted = k;
            *next_token = s_draw (self->p, n_p, u);
            s_dist_clear (self, n_p);
            return 0;
        }
        //  q_{i+1}(d): from the list, or 1 for the point mass.
        int32_t d = draft [i];
        float qd = 1.0f;
        if (q)
            for (int j = 0; j < q [i].n; j++)
                if (q [i].tokens [j] == d)
                    qd = q [i].probs [j];
        float pd = self->dense [d];
        double u = sampler_uniform (self->sampler);
        if (pd >= qd || u < (double) pd / qd) {
            s_dist_clear (self, n_p);
            continue;
        }
        //  Rejected: next ~ normalize (max (0, p - q)), built over p's
        //  support (outside it p is 0, so the residual is 0 too). q is
        //  scattered into resid, and p compacted in place into the residual.
        s_dist_clear (self, n_p);
        if (q)
            for (int j = 0; j < q [i].n; j++)
                self->resid [q [i].tokens [j]] = q [i].probs [j];
        else
            self->resid [d] = 1.0f;
        int m = 0;
        for (int j = 0; j < n_p; j++) {
            int32_t t = self->p [j].token;
            float r = self->p [j].prob - self->resid [t];
            if (r > 0.0f)
                self->p [m++] = (sampler_prob_t) { t, r };
        }
        if (q)
            for (int j = 0; j < q [i].n; j++)
                self->resid [q [i].tokens [j]] = 0.0f;
        else
            self->resid [d] = 0.0f;
        u = sampler_uniform (self->sampler);
        *accepted = i;
        //  m == 0 is only reachable through rounding (p <= q everywhere yet
        //  a rejection happened): fall back to p's most likely token.
        *next_token = m > 0? s_draw (self->p, m, u): s_argmax (logits + (size_t) i * V, V);
        return 0;
    }
    return 0;       //  not reached
}
