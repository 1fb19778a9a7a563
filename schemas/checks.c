//  checks: cross-field rules of the wire schema that a field table cannot say.
//
//  messages.toml names a check per message (`check = "activations"`); gen.py
//  points that message's descriptor at wire_check_<name>, defined here. The
//  codec runs it after every field passed its own bounds, both when decoding
//  (so services never see an inconsistent message) and when encoding (so a
//  bug is caught at the sender). Each returns 0, or -2 with err filled.

#include <stdio.h>
#include <string.h>
#include "codec.h"

int wire_check_activations (const void *msg, wire_err_t *err);
int wire_check_draft (const void *msg, wire_err_t *err);
int wire_check_verify (const void *msg, wire_err_t *err);

static int
s_invalid (wire_err_t *err, int status, const char *text)
{
    if (err) {
        err->status = status;
        snprintf (err->text, sizeof (err->text), "%s", text);
    }
    return -2;
}

//  data holds exactly n_pos * dim elements of dtype; int8 carries n_pos fp32
//  scales, the float types none.
int
wire_check_activations (const void *msg, wire_err_t *err)
{
    const wire_activations_t *self = (const wire_activations_t *) msg;
    static const size_t elem_bytes [WIRE_DTYPE_COUNT_] = { 1, 2, 4 };
    uint64_t want = (uint64_t) self->n_pos * self->dim * elem_bytes [self->dtype];
    char text [200];
    if (want > WIRE_MAX_ACTIVATION_BYTES) {
        snprintf (text, sizeof (text),
                  "n_pos %u x dim %u of %s need %llu bytes, over max_activation_bytes %d",
                  self->n_pos, self->dim, wire_dtype_names [self->dtype],
                  (unsigned long long) want, WIRE_MAX_ACTIVATION_BYTES);
        return s_invalid (err, 413, text);
    }
    if (self->data.size != want) {
        snprintf (text, sizeof (text),
                  "'data' has %zu bytes, n_pos %u x dim %u of %s need %llu",
                  self->data.size, self->n_pos, self->dim, wire_dtype_names [self->dtype],
                  (unsigned long long) want);
        return s_invalid (err, 422, text);
    }
    if (self->dtype == WIRE_DTYPE_INT8) {
        if (!self->scales.data)
            return s_invalid (err, 422, "int8 needs 'scales' (one fp32 per position)");
        if (self->scales.size != (size_t) self->n_pos * 4) {
            snprintf (text, sizeof (text),
                      "'scales' has %zu bytes, n_pos %u needs %u",
                      self->scales.size, self->n_pos, self->n_pos * 4);
            return s_invalid (err, 422, text);
        }
    }
    else
    if (self->scales.data)
        return s_invalid (err, 422, "'scales' is only for int8");
    return 0;
}

//  One probability per token, no token twice, total mass at most 1.
int
wire_check_draft (const void *msg, wire_err_t *err)
{
    const wire_draft_t *self = (const wire_draft_t *) msg;
    char text [200];
    if (self->tokens_count != self->probs_count) {
        snprintf (text, sizeof (text), "%zu tokens but %zu probs",
                  self->tokens_count, self->probs_count);
        return s_invalid (err, 422, text);
    }
    double total = 0;
    for (size_t i = 0; i < self->probs_count; i++)
        total += self->probs [i];
    if (total > 1.0 + 1e-3) {
        snprintf (text, sizeof (text), "probs sum to %g, more than 1", total);
        return s_invalid (err, 422, text);
    }
    //  counts are at most max_draft_candidates (256): quadratic is fine
    for (size_t i = 0; i < self->tokens_count; i++)
        for (size_t j = 0; j < i; j++)
            if (self->tokens [i] == self->tokens [j]) {
                snprintf (text, sizeof (text), "token %d listed twice", self->tokens [i]);
                return s_invalid (err, 422, text);
            }
    return 0;
}

//  drafts (when given) describe each drafted token; the input has k+1 rows.
int
wire_check_verify (const void *msg, wire_err_t *err)
{
    const wire_verify_t *self = (const wire_verify_t *) msg;
    size_t k = self->draft_tokens_count;
    char text [200];
    if (self->drafts_count != 0 && self->drafts_count != k) {
        snprintf (text, sizeof (text), "%zu drafts for %zu draft_tokens (give none or one each)",
                  self->drafts_count, k);
        return s_invalid (err, 422, text);
    }
    size_t rows = self->activations? self->activations->n_pos: self->tokens_count;
    if (self->return_hidden) {
        //  Privacy full: the cloud only runs the rows and returns hidden
        //  states; the edge verifies, so no token id travels.
        if (k != 0 || self->drafts_count != 0)
            return s_invalid (err, 422, "return_hidden: send no draft_tokens or drafts "
                              "(the edge verifies locally)");
        if (!self->activations || rows < 1 || rows > (size_t) WIRE_MAX_DRAFT_K + 1) {
            snprintf (text, sizeof (text), "return_hidden needs activations of 1..%d rows",
                      WIRE_MAX_DRAFT_K + 1);
            return s_invalid (err, 422, text);
        }
        return 0;
    }
    if (rows != k + 1) {
        snprintf (text, sizeof (text), "%zu input rows for %zu draft_tokens (need k+1 = %zu)",
                  rows, k, k + 1);
        return s_invalid (err, 422, text);
    }
    return 0;
}
