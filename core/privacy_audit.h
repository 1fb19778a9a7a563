/*  privacy_audit.h: the arithmetic of `splitmesh privacy-audit`: what an
    attacker who holds the public weights recovers from the layer-L
    activations that cross the edge-cloud link.

    Two attacks, both over the whole vocabulary V (rows of token_embd):
      - nearest neighbour: the recovered token of an activation a is
        argmax_v cos (a, E[v]), E the model's input embedding table. No
        training; it tests how much of the input embedding survives in the
        residual stream after L layers.
      - linear probe: ridge regression W (with intercept) from activations
        to the embedding of the token at that position, fitted on other
        text, then nearest neighbour of a W over E as above.
    Plus what the link does to the activations: Gaussian noise of standard
    deviation sigma x (the row's RMS) added by the device at the split,
    then the wire encoding (int8 by default), as cloud-target would see it.

    Everything is deterministic for a given seed. Matrices are row-major
    float, n rows x dim.
*/
#ifndef SPLITMESH_PRIVACY_AUDIT_H
#define SPLITMESH_PRIVACY_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include "codec.h"
#include "threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Scales each of the n rows of x to unit L2 norm (zero rows stay zero).
void privacy_normalize_rows (float *x, int n, int dim);

//  For each of the n query rows of q, writes to out[i] the index of the
//  row of table (vocab x dim, rows already unit-norm: privacy_normalize_rows)
//  with the largest cosine similarity (ties: the lowest index). q is not
//  modified. pool may be NULL (one thread). Returns 0, or -1 out of memory.
int privacy_nn (const float *table, int vocab, int dim, const float *q, int n,
                int32_t *out, threadpool_t *pool);

//  Adds N(0, (sigma * rms(row))^2) to every element of each row, from the
//  splitmix64 state *rng. sigma <= 0 leaves x as it is.
void privacy_add_noise (float *x, int n, int dim, double sigma, uint64_t *rng);

//  Replaces x by what the link delivers: packed as dtype and unpacked.
//  Returns 0, or -1 with a message in err.
int privacy_transport (float *x, int n, int dim, wire_dtype_t dtype, char *err, size_t err_size);

//  Ridge regression with intercept: finds W (dim_in x dim_out) and b
//  (dim_out) minimising sum |x_i W + b - y_i|^2 + lambda * |W|^2 over the
//  n rows, with lambda = ridge * trace (Xc^T Xc) / dim_in (Xc: centred x),
//  so ridge is scale-free. Solved by Cholesky in double. Returns 0, or -1
//  (err) when n < 2, out of memory or the system is not positive definite.
int privacy_ridge_fit (const float *x, const float *y, int n, int dim_in, int dim_out,
                       double ridge, float *w, float *b, char *err, size_t err_size);

//  out (n x dim_out) = x W + b.
void privacy_ridge_apply (const float *x, int n, int dim_in, int dim_out,
                          const float *w, const float *b, float *out);

#ifdef __cplusplus
}
#endif

#endif
