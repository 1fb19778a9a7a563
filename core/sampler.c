/*  sampler.c: greedy / temperature / top-k / top-p sampling with a seeded
    xoshiro256** PRNG, returning the distribution it drew from.

    Work per call is O(V) for the softmax plus O(V log k) for top-k (a
    min-heap of k candidates) or, for top-p alone, a sort of only the tokens
    that can be in the nucleus: a token whose probability is below
    (1 - top_p) / (V - 1) cannot be, because all tokens below it together
    hold less than 1 - top_p (the llama2.c cut-off).
*/
#include "sampler.h"
#include "rng.h"
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct _sampler_t {
    sampler_params_t params;    //  as given to sampler_new
    int vocab_size;             //  logits per call
    uint64_t rng[4];            //  xoshiro256** state
    sampler_prob_t *cand;       //  (vocab_size) candidates; logits, then probabilities
    sampler_prob_t *dist;       //  (vocab_size) the last distribution drawn from
    int n_dist;                 //  entries in dist
};

static inline uint64_t
s_rotl (uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
s_next (sampler_t *self)
{
    uint64_t *s = self->rng;
    uint64_t result = s_rotl (s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s_rotl (s[3], 45);
    return result;
}

void
sampler_seed (sampler_t *self, uint64_t seed)
{
    assert (self);
    //  splitmix64 expands the seed into the state, as xoshiro's authors advise.
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        self->rng[i] = rng_next (&x);
}

double
sampler_uniform (sampler_t *self)
{
    assert (self);
    return (double) (s_next (self) >> 11) * (1.0 / 9007199254740992.0);
}

sampler_params_t
sampler_params_default (void)
{
    sampler_params_t p = { .temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 0 };
    return p;
}

sampler_t *
sampler_new (const sampler_params_t *params, int vocab_size)
{
    if (!params || vocab_size < 1 || !isfinite (params->temperature) || !isfinite (params->top_p))
        return NULL;
    sampler_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->params = *params;
    self->vocab_size = vocab_size;
    self->cand = malloc ((size_t) vocab_size * sizeof *self->cand);
    self->dist = malloc ((size_t) vocab_size * sizeof *self->dist);
    if (!self->cand || !self->dist) {
        sampler_destroy (&self);
        return NULL;
    }
    sampler_seed (self, params->seed);
    return self;
}

void
sampler_destroy (sampler_t **self_p)
{
    assert (self_p);
    sampler_t *self = *self_p;
    if (self) {
        free (self->cand);
        free (self->dist);
        free (self);
        *self_p = NULL;
    }
}

//  a ranks before b: higher value, then lower token id.
static inline bool
s_before (const sampler_prob_t *a, const sampler_prob_t *b)
{
    return a->prob > b->prob || (a->prob == b->prob && a->token < b->token);
}

static int
s_cmp_desc (const void *pa, const void *pb)
{
    const sampler_prob_t *a = pa, *b = pb;
    if (s_before (a, b))
        return -1;
    if (s_before (b, a))
        return 1;
    return 0;
}

//  Min-heap (by rank: the root is the worst kept candidate) sift-down.
static void
s_heap_down (sampler_prob_t *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && s_before (&h[m], &h[l]))
            m = l;
        if (r < n && s_before (&h[m], &h[r]))
            m = r;
        if (m == i)
            return;
        sampler_prob_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static int32_t
s_argmax (const float *logits, int n)
{
    int32_t best = -1;
    for (int i = 0; i < n; i++)
        if (isfinite (logits[i]) && (best < 0 || logits[i] > logits[best]))
            best = i;
    return best;
}

//  Builds the truncated, renormalised distribution into self->dist.
//  Returns its length, or -1 when no logit is finite.
static int
s_build (sampler_t *self, const float *logits)
{
    const sampler_params_t *p = &self->params;
    int V = self->vocab_size;
    int32_t best = s_argmax (logits, V);
    if (best < 0)
        return -1;
    if (p->temperature <= 0.0f || p->top_k == 1) {
        self->dist[0] = (sampler_prob_t) { best, 1.0f };
        return 1;
    }
    //  1. Temperature; non-finite logits (-inf masks) are dropped.
    float inv_t = 1.0f / p->temperature;
    sampler_prob_t *c = self->cand;
    int n = 0;
    bool sorted = false;
    if (p->top_k > 0 && p->top_k < V) {
        //  2. Top-k through a min-heap of k candidates, then sort them.
        int k = p->top_k;
        for (int i = 0; i < V; i++) {
            if (!isfinite (logits[i]))
                continue;
            sampler_prob_t e = { i, logits[i] * inv_t };
            if (n < k) {
                //  Insert by sifting up.
                int j = n++;
                c[j] = e;
                while (j > 0 && s_before (&c[(j - 1) / 2], &c[j])) {
                    sampler_prob_t t = c[j];
                    c[j] = c[(j - 1) / 2];
                    c[(j - 1) / 2] = t;
                    j = (j - 1) / 2;
                }
            }
            else
            if (s_before (&e, &c[0])) {
                c[0] = e;
                s_heap_down (c, n, 0);
            }
        }
        qsort (c, (size_t) n, sizeof *c, s_cmp_desc);
        sorted = true;
    }
    else {
        for (int i = 0; i < V; i++)
            if (isfinite (logits[i]))
                c[n++] = (sampler_prob_t) { i, logits[i] * inv_t };
    }
    //  3. Softmax over the candidates (in double for the sum).
    float mx = logits[best] * inv_t;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        c[i].prob = expf (c[i].prob - mx);
        sum += c[i].prob;
    }
    for (int i = 0; i < n; i++)
        c[i].prob = (float) (c[i].prob / sum);
    //  4. Top-p: the smallest prefix (by probability) whose mass reaches p.
    if (p->top_p > 0.0f && p->top_p < 1.0f && n > 1) {
        if (!sorted) {
            float cutoff = (1.0f - p->top_p) / (float) (n - 1);
            int m = 0;
            for (int i = 0; i < n; i++)
                if (c[i].prob >= cutoff)
                    c[m++] = c[i];
            n = m;
            qsort (c, (size_t) n, sizeof *c, s_cmp_desc);
        }
        double cum = 0.0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += c[i].prob;
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        sorted = true;
    }
    if (!sorted)
        qsort (c, (size_t) n, sizeof *c, s_cmp_desc);
    //  5. Renormalise what is left.
    sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += c[i].prob;
    for (int i = 0; i < n; i++)
        self->dist[i] = (sampler_prob_t) { c[i].token, (float) (c[i].prob / sum) };
    return n;
}

int32_t
sampler_sample (sampler_t *self, const float *logits)
{
    assert (self);
    assert (logits);
    int n = s_build (self, logits);
    if (n < 0) {
        self->n_dist = 0;
        return -1;
    }
    self->n_dist = n;
    if (n == 1)
        return self->dist[0].token;
    //  6. Draw by inverse CDF; the last entry absorbs rounding.
    double r = sampler_uniform (self);
    double cum = 0.0;
    for (int i = 0; i < n - 1; i++) {
        cum += self->dist[i].prob;
        if (r < cum)
            return self->dist[i].token;
    }
    return self->dist[n - 1].token;
}

const sampler_prob_t *
sampler_dist (const sampler_t *self, int *n)
{
    assert (self);
    assert (n);
    *n = self->n_dist;
    return self->dist;
}

int
sampler_distribution (sampler_t *self, const float *logits, sampler_prob_t *out, int max_out)
{
    assert (self);
    assert (logits);
    int n = s_build (self, logits);
    self->n_dist = n < 0 ? 0 : n;
    if (n < 0)
        return -1;
    int m = n < max_out ? n : max_out;
    if (m > 0)
        memcpy (out, self->dist, (size_t) m * sizeof *out);
    return n;
}
