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
kernels_quantize_act_ref (const float *x, int nb, int nbp, int8_t *q, float *d, float *s)
{
    memset (q, 0, (size_t) nbp * 32);
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
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            //  nearbyintf rounds half to even, as the SIMD conversions do;
            //  NaN (from an infinite input) becomes -127 as it does there.
            float fv = nearbyintf (xg[j] * id);
            int v = !(fv >= -127.0f) ? -127 : fv > 127.0f ? 127 : (int) fv;
            q[kernels_w8_offset (nb, g, j)] = (int8_t) v;
            sum += v;
        }
        d[g] = dg;
        s[g] = dg * (float) sum;
    }
    for (int g = nb; g < nbp; g++) {
        d[g] = 0.0f;
        s[g] = 0.0f;
    }
}

static void
s_matmul_w8 (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy)
{
    int nb = W->nb;
    for (int r = r0; r < r1; r++) {
        const int8_t *qs = (const int8_t *) (W->qs + (size_t) r * W->qs_stride);
        const uint16_t *dw = W->d + (size_t) r * nb;
        for (int t = 0; t < a->n_tokens; t++) {
            const int8_t *xq = a->q + (size_t) t * a->nbp * 32;
            const float *dx = a->d + (size_t) t * a->nbp;
            float acc = 0.0f;
            for (int g = 0; g < nb; g++) {
                int isum = 0;
                for (int j = 0; j < 32; j += 4) {
                    const int8_t *wp = qs + kernels_w8_offset (nb, g, j);
                    const int8_t *xp = xq + kernels_w8_offset (nb, g, j);
                    for (int b = 0; b < 4; b++)
                        isum += wp[b] * xp[b];
                }
                acc += ggml_fp16_to_fp32 (dw[g]) * dx[g] * (float) isum;
            }
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
            const float *dx = a->d + (size_t) t * a->nbp;
            const float *sx = a->s + (size_t) t * a->nbp;
            float acc = 0.0f;
            for (int g = 0; g < nb; g++) {
                int isum = 0;
                for (int j = 0; j < 16; j += 4) {
                    const uint8_t *wp = qs + kernels_w4_offset (nb, g, j);
                    const int8_t *lo = xq + kernels_w8_offset (nb, g, j);
                    const int8_t *hi = xq + kernels_w8_offset (nb, g, j + 16);
                    for (int b = 0; b < 4; b++)
                        isum += (wp[b] & 0xf) * lo[b] + (wp[b] >> 4) * hi[b];
                }
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
