/*  sampler.h: picks the next token from logits (greedy, temperature, top-k,
    top-p), seeded and reproducible, and says which distribution it used.

    Speculative decoding verifies a draft by comparing the target's
    probabilities with the draft's, so the sampler does not only return a
    token: it also returns the truncated, renormalised distribution it drew
    from, as (token, prob) pairs. That list is exactly q in the rejection
    test min(1, p/q), and it is short whenever top-k or top-p truncates.

    The order of operations matches llama.cpp's common chain: divide by the
    temperature, keep the top-k logits, softmax, keep the smallest prefix of
    tokens (by probability) whose mass reaches top-p, renormalise, draw.
    temperature <= 0 or top_k == 1 is greedy: the argmax with probability 1
    (ties go to the lowest token id). The PRNG is xoshiro256** seeded through
    splitmix64, so a seed gives the same tokens on every platform.
*/
#ifndef SPLITMESH_SAMPLER_H
#define SPLITMESH_SAMPLER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float temperature;          //  <= 0: greedy
    int top_k;                  //  <= 0: no top-k limit
    float top_p;                //  >= 1 (or <= 0): no nucleus limit
    uint64_t seed;              //  PRNG seed
} sampler_params_t;

typedef struct {
    int32_t token;
    float prob;                 //  renormalised over the list; sums to 1
} sampler_prob_t;

typedef struct _sampler_t sampler_t;

//  Defaults: temperature 0 (greedy), top_k 0, top_p 1, seed 0.
sampler_params_t sampler_params_default (void);

//  Creates a sampler for logits of vocab_size entries. Returns NULL when
//  vocab_size < 1 or params are not finite. Caller owns the result and must
//  destroy it.
sampler_t *sampler_new (const sampler_params_t *params, int vocab_size);

//  Frees the sampler; sets *self_p to NULL. Safe on NULL.
void sampler_destroy (sampler_t **self_p);

//  Samples one token from logits (vocab_size floats; not modified). Returns
//  the token id, or -1 when the logits hold no finite value. Advances the
//  PRNG by one draw unless greedy.
int32_t sampler_sample (sampler_t *self, const float *logits);

//  The distribution the last sampler_sample drew from, sorted by probability
//  (descending; ties by token id). *n gets its length (0 before the first
//  call). The array belongs to the sampler and is valid until the next
//  sampler_sample or sampler_destroy.
const sampler_prob_t *sampler_dist (const sampler_t *self, int *n);

//  Computes the distribution params would sample from, without drawing:
//  writes at most max_out pairs into out (sorted as above) and returns the
//  full count, or -1 on bad logits. Used by verification (the target's p).
//  Scratch is the sampler's own, so this invalidates sampler_dist.
int sampler_distribution (sampler_t *self, const float *logits, sampler_prob_t *out, int max_out);

//  A uniform draw in [0, 1) from the sampler's PRNG (53 bits). Verification
//  uses it for its accept test so one seed drives a whole generation.
double sampler_uniform (sampler_t *self);

//  Reseeds the PRNG.
void sampler_seed (sampler_t *self, uint64_t seed);

#ifdef __cplusplus
}
#endif

#endif
