/*  drafter.h: proposes the next k tokens of a generation cheaply, on the
    device, for the cloud target to verify (speculative decoding).

    Two drafters share one interface:

      - model: a small draft model (by default the target's own GGUF file
        loaded at W4) with its own KV cache per session. Each call is given
        the whole context (prompt + accepted tokens, the last one not yet in
        any cache); the drafter compares it with the tokens in its cache,
        rolls the cache back to their common prefix and feeds only what is
        new, so rejected drafts are undone and accepted ones are caught up
        incrementally. It then decodes k tokens one by one. At temperature
        > 0 each d_i is sampled and q_i (the exact truncated distribution it
        was drawn from, sampler_dist) is kept for rejection sampling.
      - ngram: prompt lookup, no model. The longest suffix of the context of
        n = 3, 2 or 1 tokens that occurred earlier is located (most recent
        occurrence) and the tokens that followed it are proposed. Its q is a
        point mass (prob 1 on the proposed token): a valid q for rejection
        sampling, which then accepts d_i with probability p(d_i).

    At most DRAFTER_MAX_CANDIDATES (token, prob) pairs describe one q, the
    wire limit; a model drafter sampling with top_k = 0 or a larger top_k
    therefore truncates its own distribution to the 256 most likely tokens.
    Any q is lossless for rejection sampling as long as it is the exact
    distribution the draft was drawn from, which it is.

    Adaptive draft length (drafter_adapt_k): after a round of k proposed and
    a accepted drafts, k grows by one when all were accepted, shrinks by one
    when fewer than half were, and stays otherwise; always within
    [1, k_max]. Greedy equality holds for any k, so the rule only trades
    wasted draft work against round trips.

    Threading: a drafter_t belongs to one generation (one thread at a time).
    Model drafters of several sessions may share one model_t: pass a mutex
    and every call into the model holds it.
*/
#ifndef SPLITMESH_DRAFTER_H
#define SPLITMESH_DRAFTER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "model.h"
#include "sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DRAFTER_MAX_K           32      //  = WIRE_MAX_DRAFT_K
#define DRAFTER_MAX_CANDIDATES  256     //  = WIRE_MAX_DRAFT_CANDIDATES
#define DRAFTER_NGRAM_MAX_N     3       //  longest suffix the n-gram drafter matches
#define DRAFTER_NGRAM_WINDOW    8192    //  most recent tokens it searches

typedef enum {
    DRAFTER_MODEL = 0,
    DRAFTER_NGRAM = 1
} drafter_kind_t;

//  One round's proposal. q[i] is the distribution d[i] was drawn from
//  (q_n[i] pairs); at temperature 0 it is the point mass on d[i].
typedef struct {
    int k;                                          //  drafts proposed (may be < asked)
    int32_t d [DRAFTER_MAX_K];                      //  d_1..d_k
    int q_n [DRAFTER_MAX_K];                        //  pairs in q[i]
    float conf [DRAFTER_MAX_K];                     //  model: p(d_i) (softmax / q); ngram: 1
    sampler_prob_t q [DRAFTER_MAX_K][DRAFTER_MAX_CANDIDATES];
} drafter_proposal_t;

typedef struct _drafter_t drafter_t;

//  A model drafter over `model` (which must have embeddings, every layer and
//  the head loaded) with a KV cache of max_ctx positions. `lock` may be NULL
//  (model not shared) and must outlive the drafter, as must the model.
//  Returns NULL with the reason in err. Caller owns the result and must
//  destroy it.
drafter_t *drafter_new_model (model_t *model, pthread_mutex_t *lock, int max_ctx,
                              char *err, size_t err_size);

//  An n-gram prompt-lookup drafter. Caller owns the result and must destroy it.
drafter_t *drafter_new_ngram (void);

//  Confidence stop (model drafter): a round ends early after a draft whose
//  probability under the draft (softmax of its logits at greedy, q(d_i)
//  when sampling) is below min_p, since the target is then unlikely to
//  accept the drafts after it and each costs a forward pass. 0 (default)
//  drafts all k.
void drafter_set_min_p (drafter_t *self, float min_p);

//  Frees the drafter (and its KV cache); sets *self_p to NULL. Safe on NULL.
void drafter_destroy (drafter_t **self_p);

drafter_kind_t drafter_kind (const drafter_t *self);

//  Proposes up to k (1..DRAFTER_MAX_K) tokens following ctx[0..n_ctx)
//  (n_ctx >= 1). sampler draws the drafts (params as the request's, with
//  top_k clamped to DRAFTER_MAX_CANDIDATES when > 0 temperature); it may be
//  NULL for greedy. The n-gram drafter may propose fewer than k (0 when no
//  suffix matches). Returns 0, or -1 with the reason in err (context longer
//  than the cache, model failure).
int drafter_propose (drafter_t *self, const int32_t *ctx, int n_ctx, int k,
                     sampler_t *sampler, drafter_proposal_t *out,
                     char *err, size_t err_size);

//  Feeds ctx[0..n_ctx) into the model drafter's cache now (rolling back to
//  the common prefix first), so that the next drafter_propose on a context
//  extending it only feeds what is new: edge-draft does this while the
//  target's prefill travels. Nothing for n-gram. Returns 0, or -1 with the
//  reason in err.
int drafter_prefill (drafter_t *self, const int32_t *ctx, int n_ctx, char *err, size_t err_size);

//  Forgets every cached position from n_pos on (the model drafter's KV
//  cache; nothing for n-gram). drafter_propose does this by itself when
//  the context diverges from the cache; this is for callers that know.
void drafter_rollback (drafter_t *self, int n_pos);

//  Positions held in the model drafter's KV cache (0 for n-gram).
int drafter_cached (const drafter_t *self);

//  The model drafter's KV cache (NULL for n-gram), for tests that compare
//  it with a fresh prefill. Owned by the drafter.
kvcache_t *drafter_kv (const drafter_t *self);

//  Sampler parameters for drafting under a request's settings: top_k
//  clamped so q fits DRAFTER_MAX_CANDIDATES pairs when sampling.
sampler_params_t drafter_sampler_params (float temperature, int top_k, float top_p, uint64_t seed);

//  n-gram lookup on its own (for tests and the drafter): writes up to k
//  tokens that followed the most recent earlier occurrence of the longest
//  matching suffix (n = max_n..1) of ctx into out. Returns how many.
int drafter_ngram_lookup (const int32_t *ctx, int n_ctx, int k, int max_n, int32_t *out);

//  The adaptive draft length after a round of `proposed` drafts with
//  `accepted` of them accepted (see the file comment). Returns a value in
//  [1, k_max].
int drafter_adapt_k (int k, int proposed, int accepted, int k_max);

#ifdef __cplusplus
}
#endif

#endif
