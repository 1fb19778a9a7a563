/*  speculative.h: the verification step of speculative decoding, apart
    from any transport.

    cloud-target evaluates the k+1 rows [t0, d1..dk] in one forward pass and
    gets the target's logits for each; this module turns those logits, the
    drafted tokens and the draft's distributions into "accept n drafts, then
    emit next_token", exactly as docs/pipeline.md step 4c says:

      - greedy (temperature <= 0, or top_k == 1): accept d_i while d_i is the
        argmax of p_{i-1} (ties: lowest id, as the sampler); next_token is
        the argmax of p_n. The drafts' distributions are not needed.
      - sampling: p_i is the target's distribution under the same
        temperature / top-k / top-p (sampler_distribution). Accept d_i with
        probability min(1, p_{i-1}(d_i) / q_i(d_i)); on the first rejection
        next_token ~ normalize (max (0, p_{i-1} - q_i)); after k acceptances
        next_token ~ p_k. The result is distributed exactly as p (lossless).

    q_i is the draft's truncated distribution as (token, prob) pairs. When
    no q is given at temperature > 0, each q_i is taken as the point mass on
    d_i: that is exactly right for a deterministic drafter (n-gram lookup),
    whose proposal is certain.

    Uniform draws come from a PRNG seeded with (seed, pos) alone, so a
    replayed request (another replica after a failover) gives the same
    answer. The draws are, in order: one per accept test made, then one for
    next_token.
*/
#ifndef SPLITMESH_SPECULATIVE_H
#define SPLITMESH_SPECULATIVE_H

#include <stdbool.h>
#include <stdint.h>
#include "sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

//  The draft's distribution at one drafted position. Pointers are borrowed.
typedef struct {
    const int32_t *tokens;      //  n candidate ids, no duplicates
    const float *probs;         //  n probabilities in [0, 1], sum <= 1
    int n;
} speculative_q_t;

typedef struct _speculative_t speculative_t;

//  A verifier for logits of vocab_size entries (scratch allocated once).
//  Returns NULL when vocab_size < 1 or out of memory. Caller owns the
//  result and must destroy it.
speculative_t *speculative_new (int vocab_size);

//  Frees the verifier; sets *self_p to NULL. Safe on NULL.
void speculative_destroy (speculative_t **self_p);

//  True when params sample greedily (temperature <= 0 or top_k == 1).
bool speculative_is_greedy (const sampler_params_t *params);

//  Verifies k >= 0 drafts. logits is (k+1) x vocab_size: row i holds the
//  target's logits after the i-th input row (row 0: after t0). draft holds
//  the k drafted ids. q is NULL or k distributions (ignored when greedy).
//  params gives temperature, top-k, top-p and seed; pos keys the PRNG with
//  the seed. On success returns 0 and sets *accepted (0..k) and *next_token.
//  Returns -1 with a message (for a 422 reply) on a draft or q token out of
//  range, a q that does not contain its own drafted token, bad
//  probabilities, or logits without a finite value.
int speculative_verify (speculative_t *self, const float *logits, int k,
                        const int32_t *draft, const speculative_q_t *q,
                        const sampler_params_t *params, uint32_t pos,
                        int *accepted, int32_t *next_token,
                        char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
