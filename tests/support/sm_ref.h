/*  sm_ref.h: single-process reference generation for the end-to-end tests.

    The mesh's claims are relative to the target model run in one process:
    at temperature 0 its tokens equal target-only greedy decoding, and with
    sampling its output distribution equals the target's. This module is
    that one process, in the test itself, with the same engine calls as
    `splitmesh run` (model_embed, model_forward over every layer,
    model_head, the sampler): greedy continuations of a prompt, and the
    exact (truncated, renormalised) sampling distribution after a context.
    Loading the model once serves every prompt of a test.
*/
#ifndef SM_REF_H_INCLUDED
#define SM_REF_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _sm_ref_t sm_ref_t;

//  Loads `model` in `format` ("f32", "w8", "w4") with one thread. Returns
//  NULL with a message in err. Caller owns it: sm_ref_destroy.
sm_ref_t *
    sm_ref_new (const char *model, const char *format, char *err, size_t err_size);

void
    sm_ref_destroy (sm_ref_t **self_p);

//  The prompt's token ids as the mesh's tokenizer makes them (add_special
//  on, parse_special off). Caller frees *ids_p. Returns 0 or -1.
int
    sm_ref_tokenize (sm_ref_t *self, const char *prompt, int32_t **ids_p, size_t *n_p);

//  Greedy continuation of prompt: up to n tokens, stopping before an
//  end-of-generation token (not included). Caller frees *out_p. Returns 0
//  or -1.
int
    sm_ref_greedy (sm_ref_t *self, const char *prompt, int n, int32_t **out_p, size_t *n_out_p);

//  The distribution the sampler (params) draws the next token from after
//  the context tokens: fills out (at most max pairs), returns how many, or
//  -1 on error.
int
    sm_ref_dist (sm_ref_t *self, const int32_t *context, size_t n_context,
                 const sampler_params_t *params, sampler_prob_t *out, int max);

//  Vocabulary size; true when id ends generation.
int
    sm_ref_vocab (sm_ref_t *self);
bool
    sm_ref_is_eog (sm_ref_t *self, int32_t id);

#ifdef __cplusplus
}
#endif

#endif
