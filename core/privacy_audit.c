/*  privacy_audit.c: see privacy_audit.h.

    The nearest-neighbour search is the cost centre (queries x vocabulary x
    dim multiply-adds per setting), so it scores a block of queries against
    each table row at once: the block is stored transposed, the inner loop
    runs over the block's queries and the compiler vectorises it without
    reordering any sum (so results do not depend on the build's flags).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "activations.h"
#include "privacy_audit.h"
#include "rng.h"

#define S_BLOCK 16              //  queries scored together

void
privacy_normalize_rows (float *x, int n, int dim)
{
    for (int i = 0; i < n; i++) {
        float *r = x + (size_t) i * dim;
        double s = 0;
        for (int d = 0; d < dim; d++)
            s += (double) r [d] * r [d];
        if (s > 0) {
            float inv = (float) (1.0 / sqrt (s));
            for (int d = 0; d < dim; d++)
                r [d] *= inv;
        }
    }
}

typedef struct {
    const float *table;
    int vocab, dim;
    const float *q;             //  unit-norm queries
    int n;
    int32_t *out;
} s_nn_job_t;

static void
s_nn_worker (void *arg, int ith, int nth)
{
    s_nn_job_t *job = (s_nn_job_t *) arg;
    int dim = job->dim;
    float *qt = malloc ((size_t) dim * S_BLOCK * sizeof *qt);
    if (!qt)
        return;                 //  the caller's out stays -1: reported there
    int blocks = (job->n + S_BLOCK - 1) / S_BLOCK;
    for (int blk = ith; blk < blocks; blk += nth) {
        int q0 = blk * S_BLOCK;
        int m = job->n - q0 < S_BLOCK? job->n - q0: S_BLOCK;
        memset (qt, 0, (size_t) dim * S_BLOCK * sizeof *qt);
        for (int j = 0; j < m; j++)
            for (int d = 0; d < dim; d++)
                qt [(size_t) d * S_BLOCK + j] = job->q [(size_t) (q0 + j) * dim + d];
        float best [S_BLOCK];
        int32_t arg_best [S_BLOCK];
        for (int j = 0; j < S_BLOCK; j++) {
            best [j] = -INFINITY;
            arg_best [j] = -1;
        }
        for (int v = 0; v < job->vocab; v++) {
            const float *e = job->table + (size_t) v * dim;
            float acc [S_BLOCK] = { 0 };
            for (int d = 0; d < dim; d++) {
                float ed = e [d];
                const float *col = qt + (size_t) d * S_BLOCK;
                for (int j = 0; j < S_BLOCK; j++)
                    acc [j] += ed * col [j];
            }
            for (int j = 0; j < S_BLOCK; j++)
                if (acc [j] > best [j]) {
                    best [j] = acc [j];
                    arg_best [j] = v;
                }
        }
        for (int j = 0; j < m; j++)
            job->out [q0 + j] = arg_best [j];
    }
    free (qt);
}

int
privacy_nn (const float *table, int vocab, int dim, const float *q, int n,
            int32_t *out, threadpool_t *pool)
{
    float *qn = malloc ((size_t) n * dim * sizeof *qn);
    if (!qn)
        return -1;
    memcpy (qn, q, (size_t) n * dim * sizeof *qn);
    privacy_normalize_rows (qn, n, dim);
    for (int i = 0; i < n; i++)
        out [i] = -1;
    s_nn_job_t job = { table, vocab, dim, qn, n, out };
    threadpool_run (pool, s_nn_worker, &job);
    free (qn);
    for (int i = 0; i < n; i++)
        if (out [i] < 0)
            return -1;
    return 0;
}

void
privacy_add_noise (float *x, int n, int dim, double sigma, uint64_t *rng)
{
    if (sigma <= 0)
        return;
    for (int i = 0; i < n; i++) {
        float *r = x + (size_t) i * dim;
        double s = 0;
        for (int d = 0; d < dim; d++)
            s += (double) r [d] * r [d];
        double sd = sigma * sqrt (s / dim);
        for (int d = 0; d < dim; d++)
            r [d] += (float) (sd * rng_normal (rng));
    }
}

int
privacy_transport (float *x, int n, int dim, wire_dtype_t dtype, char *err, size_t err_size)
{
    wire_activations_t a;
    if (activations_pack (x, (uint32_t) n, (uint32_t) dim, dtype, 0, &a, err, err_size))
        return -1;
    int rc = activations_unpack (&a, x, (size_t) n * dim, err, err_size);
    wire_msg_free (&wire_activations_desc, &a);
    return rc;
}

int
privacy_ridge_fit (const float *x, const float *y, int n, int dim_in, int dim_out,
                   double ridge, float *w, float *b, char *err, size_t err_size)
{
    int rc = -1;
    double *mx = calloc ((size_t) dim_in, sizeof *mx);
    double *my = calloc ((size_t) dim_out, sizeof *my);
    double *g = calloc ((size_t) dim_in * dim_in, sizeof *g);        //  Xc^T Xc, then its Cholesky factor
    double *r = calloc ((size_t) dim_in * dim_out, sizeof *r);       //  Xc^T Yc, then the solution
    float *xc = malloc ((size_t) dim_in * sizeof *xc);
    float *yc = malloc ((size_t) dim_out * sizeof *yc);
    if (n < 2) {
        snprintf (err, err_size, "ridge fit needs at least 2 rows, got %d", n);
        goto done;
    }
    if (!mx || !my || !g || !r || !xc || !yc) {
        snprintf (err, err_size, "out of memory for a %d x %d ridge fit", dim_in, dim_out);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        for (int d = 0; d < dim_in; d++)
            mx [d] += x [(size_t) i * dim_in + d];
        for (int d = 0; d < dim_out; d++)
            my [d] += y [(size_t) i * dim_out + d];
    }
    for (int d = 0; d < dim_in; d++)
        mx [d] /= n;
    for (int d = 0; d < dim_out; d++)
        my [d] /= n;
    for (int i = 0; i < n; i++) {
        for (int d = 0; d < dim_in; d++)
            xc [d] = (float) (x [(size_t) i * dim_in + d] - mx [d]);
        for (int d = 0; d < dim_out; d++)
            yc [d] = (float) (y [(size_t) i * dim_out + d] - my [d]);
        for (int p = 0; p < dim_in; p++) {
            double xp = xc [p];
            double *gp = g + (size_t) p * dim_in;
            for (int q = 0; q <= p; q++)        //  lower triangle
                gp [q] += xp * xc [q];
            double *rp = r + (size_t) p * dim_out;
            for (int q = 0; q < dim_out; q++)
                rp [q] += xp * yc [q];
        }
    }
    double tr = 0;
    for (int p = 0; p < dim_in; p++)
        tr += g [(size_t) p * dim_in + p];
    double lambda = ridge * tr / dim_in;
    if (!(lambda > 0))
        lambda = 1e-12;
    for (int p = 0; p < dim_in; p++)
        g [(size_t) p * dim_in + p] += lambda;
    //  Cholesky G = L L^T, in place in the lower triangle.
    for (int j = 0; j < dim_in; j++) {
        double *gj = g + (size_t) j * dim_in;
        double s = gj [j];
        for (int k = 0; k < j; k++)
            s -= gj [k] * gj [k];
        if (!(s > 0)) {
            snprintf (err, err_size, "ridge system is not positive definite at row %d", j);
            goto done;
        }
        gj [j] = sqrt (s);
        for (int i = j + 1; i < dim_in; i++) {
            double *gi = g + (size_t) i * dim_in;
            double t = gi [j];
            for (int k = 0; k < j; k++)
                t -= gi [k] * gj [k];
            gi [j] = t / gj [j];
        }
    }
    //  Solve L Z = R, then L^T W = Z, for all dim_out columns at once.
    for (int i = 0; i < dim_in; i++) {
        double *ri = r + (size_t) i * dim_out;
        const double *gi = g + (size_t) i * dim_in;
        for (int k = 0; k < i; k++) {
            const double *rk = r + (size_t) k * dim_out;
            for (int q = 0; q < dim_out; q++)
                ri [q] -= gi [k] * rk [q];
        }
        for (int q = 0; q < dim_out; q++)
            ri [q] /= gi [i];
    }
    for (int i = dim_in - 1; i >= 0; i--) {
        double *ri = r + (size_t) i * dim_out;
        for (int k = i + 1; k < dim_in; k++) {
            double lki = g [(size_t) k * dim_in + i];
            const double *rk = r + (size_t) k * dim_out;
            for (int q = 0; q < dim_out; q++)
                ri [q] -= lki * rk [q];
        }
        double lii = g [(size_t) i * dim_in + i];
        for (int q = 0; q < dim_out; q++)
            ri [q] /= lii;
    }
    for (size_t i = 0; i < (size_t) dim_in * dim_out; i++)
        w [i] = (float) r [i];
    //  b = my - mx W
    for (int q = 0; q < dim_out; q++) {
        double s = my [q];
        for (int p = 0; p < dim_in; p++)
            s -= mx [p] * r [(size_t) p * dim_out + q];
        b [q] = (float) s;
    }
    rc = 0;
done:
    free (mx);
    free (my);
    free (g);
    free (r);
    free (xc);
    free (yc);
    return rc;
}

void
privacy_ridge_apply (const float *x, int n, int dim_in, int dim_out,
                     const float *w, const float *b, float *out)
{
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t) i * dim_out;
        for (int q = 0; q < dim_out; q++)
            o [q] = b [q];
        for (int p = 0; p < dim_in; p++) {
            float xp = x [(size_t) i * dim_in + p];
            const float *wp = w + (size_t) p * dim_out;
            for (int q = 0; q < dim_out; q++)
                o [q] += xp * wp [q];
        }
    }
}
