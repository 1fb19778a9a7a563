/*  kernels.c: the portable scalar kernel family and the run-time dispatcher.

    The scalar family is the fallback on CPUs without AVX2 and the readable
    statement of what every SIMD family computes: same activation
    quantization (bit for bit), same integer dot products per group, same
    scale algebra; only the float summation order differs. kernels_get picks
    the best family the CPU supports, capped by SPLITMESH_SIMD.
*/
#include "kernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

void
kernels_quantize_act_ref (const float *x, int nb, int nbp, int8_t *q, int8_t *q2, float *d, float *s)
{
    memset (q, 0, (size_t) nbp * 32);
    if (q2)
        memset (q2, 0, (size_t) nbp * 32);
    for (int g = 0; g < nb; g++) {
        const float *xg = x + (size_t) g * 32;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            float a = fabsf (xg[j]);
            amax = a > amax ? a : amax;
        }
        //  A group below 1e-30 (or NaN) counts as zero: its 1/d would
        //  overflow. Every family makes the same choice.
        float dg = amax >= KERNELS_ACT_TINY ? amax / 127.0f : 0.0f;
        float id = dg != 0.0f ? 1.0f / dg : 0.0f;
        int sum = 0, sum2 = 0;
        for (int j = 0; j < 32; j++) {
            //  nearbyintf rounds half to even, as the SIMD conversions do;
            //  NaN (from an infinite input) becomes -127 as it does there.
            float v = xg[j] * id;
            float fv = nearbyintf (v);
            int iv = !(fv >= -127.0f) ? -127 : fv > 127.0f ? 127 : (int) fv;
            q[kernels_w8_offset (nb, g, j)] = (int8_t) iv;
            sum += iv;
            if (q2) {
                //  v - iv is exact (|v - iv| <= 1/2 and both within a factor
                //  two, or iv = 0), and so is the power-of-two scaling: the
                //  only rounding is nearbyintf's, the same in every family.
                float r = (v - (float) iv) * (float) (1 << KERNELS_ACT2_SHIFT);
                float fr = nearbyintf (r);
                int ir = !(fr >= -127.0f) ? -127 : fr > 127.0f ? 127 : (int) fr;
                q2[kernels_w8_offset (nb, g, j)] = (int8_t) ir;
                sum2 += ir;
            }
        }
        if (q2) {
            d[g] = dg / (float) (1 << KERNELS_ACT2_SHIFT);
            s[g] = d[g] * (float) (sum * (1 << KERNELS_ACT2_SHIFT) + sum2);
        }
        else {
            d[g] = dg;
            s[g] = dg * (float) sum;
        }
    }
    for (int g = nb; g < nbp; g++) {
        d[g] = 0.0f;
        s[g] = 0.0f;
    }
}

//  Integer dot of one group: w8 weights against one or two activation
//  levels (256 isum(q) + isum(q2), see qact_t).
static int
s_isum_w8 (const int8_t *qs, const int8_t *xq, const int8_t *xq2, int nb, int g)
{
    int isum = 0, isum2 = 0;
    for (int j = 0; j < 32; j += 4) {
        size_t o = kernels_w8_offset (nb, g, j);
        for (int b = 0; b < 4; b++) {
            isum += qs[o + b] * xq[o + b];
            if (xq2)
                isum2 += qs[o + b] * xq2[o + b];
        }
    }
    return xq2 ? isum * (1 << KERNELS_ACT2_SHIFT) + isum2 : isum;
}

static void
s_matmul_w8 (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy)
{
    int nb = W->nb;
    for (int r = r0; r < r1; r++) {
        const int8_t *qs = (const int8_t *) (W->qs + (size_t) r * W->qs_stride);
        const uint16_t *dw = W->d + (size_t) r * nb;
        const uint16_t *mw = W->m + (size_t) r * nb;
        for (int t = 0; t < a->n_tokens; t++) {
            const int8_t *xq = a->q + (size_t) t * a->nbp * 32;
            const int8_t *xq2 = a->q2 ? a->q2 + (size_t) t * a->nbp * 32 : NULL;
            const float *dx = a->d + (size_t) t * a->nbp;
            const float *sx = a->s + (size_t) t * a->nbp;
            float acc = 0.0f;
            for (int g = 0; g < nb; g++)
                acc += ggml_fp16_to_fp32 (dw[g]) * dx[g] * (float) s_isum_w8 (qs, xq, xq2, nb, g)
                     + ggml_fp16_to_fp32 (mw[g]) * sx[g];
            y[(size_t) t * ldy + r] = acc;
        }
    }
}

static void
s_matmul_w4 (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy)
{
    int nb = W->nb;
    for (int r = r0; r < r1; r++) {
        const uint8_t *qs = W->qs + (size_t) r * W->qs_stride;
        const uint16_t *dw = W->d + (size_t) r * nb;
        const uint16_t *mw = W->m + (size_t) r * nb;
        for (int t = 0; t < a->n_tokens; t++) {
            const int8_t *xq = a->q + (size_t) t * a->nbp * 32;
            const int8_t *xq2 = a->q2 ? a->q2 + (size_t) t * a->nbp * 32 : NULL;
            const float *dx = a->d + (size_t) t * a->nbp;
            const float *sx = a->s + (size_t) t * a->nbp;
            float acc = 0.0f;
            for (int g = 0; g < nb; g++) {
                int isum = 0, isum2 = 0;
                for (int j = 0; j < 16; j += 4) {
                    const uint8_t *wp = qs + kernels_w4_offset (nb, g, j);
                    size_t lo = kernels_w8_offset (nb, g, j), hi = kernels_w8_offset (nb, g, j + 16);
                    for (int b = 0; b < 4; b++) {
                        isum += (wp[b] & 0xf) * xq[lo + b] + (wp[b] >> 4) * xq[hi + b];
                        if (xq2)
                            isum2 += (wp[b] & 0xf) * xq2[lo + b] + (wp[b] >> 4) * xq2[hi + b];
                    }
                }
                if (xq2)
                    isum = isum * (1 << KERNELS_ACT2_SHIFT) + isum2;
                acc += ggml_fp16_to_fp32 (dw[g]) * dx[g] * (float) isum
                     + ggml_fp16_to_fp32 (mw[g]) * sx[g];
            }
            y[(size_t) t * ldy + r] = acc;
        }
    }
}

static void
s_matmul_f32 (const qmatrix_t *W, const float *x, int n_tokens, int r0, int r1, float *y, int ldy)
{
    int cols = W->cols;
    for (int r = r0; r < r1; r++) {
        const float *w = W->f + (size_t) r * cols;
        for (int t = 0; t < n_tokens; t++) {
            const float *xt = x + (size_t) t * cols;
            float acc = 0.0f;
            for (int c = 0; c < cols; c++)
                acc += w[c] * xt[c];
            y[(size_t) t * ldy + r] = acc;
        }
    }
}

const kernels_t kernels_scalar = {
    .name = "scalar",
    .quantize_act = kernels_quantize_act_ref,
    .matmul_w8 = s_matmul_w8,
    .matmul_w4 = s_matmul_w4,
    .matmul_f32 = s_matmul_f32,
};

//  ---------------------------------------------------------------------
//  Dispatcher

static _Atomic (const kernels_t *) s_current;

static const kernels_t *
s_select (void)
{
    //  Cap levels from SPLITMESH_SIMD: 0 scalar, 1 avx2, 2 anything.
    int cap = 2;
    const char *env = getenv ("SPLITMESH_SIMD");
    if (env && strcmp (env, "scalar") == 0)
        cap = 0;
    else
    if (env && strcmp (env, "avx2") == 0)
        cap = 1;
#if KERNELS_HAVE_X86
    __builtin_cpu_init ();
    int best = 0;
    if (__builtin_cpu_supports ("avx2") && __builtin_cpu_supports ("fma"))
        best = 1;
    if (best == 1 && __builtin_cpu_supports ("avx512f") && __builtin_cpu_supports ("avx512bw")
    &&  __builtin_cpu_supports ("avx512vl") && __builtin_cpu_supports ("avx512vnni"))
        best = 2;
    int level = best < cap ? best : cap;
    if (level == 2)
        return &kernels_avx512;
    if (level == 1)
        return &kernels_avx2;
#elif defined(__aarch64__)
    //  NEON is part of every AArch64 CPU; only "scalar" caps it.
    if (cap > 0)
        return &kernels_neon;
#else
    (void) cap;
#endif
    return &kernels_scalar;
}

const kernels_t *
kernels_get (void)
{
    const kernels_t *k = atomic_load_explicit (&s_current, memory_order_acquire);
    if (!k) {
        k = s_select ();
        atomic_store_explicit (&s_current, k, memory_order_release);
    }
    return k;
}

const char *
kernels_simd_name (void)
{
    return kernels_get ()->name;
}

const char *
kernels_simd_refresh (void)
{
    atomic_store (&s_current, s_select ());
    return kernels_simd_name ();
}
