/*  kernels_neon.c: the ARM NEON kernel family (every AArch64 CPU).

    The edge devices splitmesh targets are mostly ARM. Same arithmetic as
    the scalar family in kernels.c: int8 activations per group of 32,
    integer dot per group, float scale algebra. Products are s8 x s8 with
    vmull_s8 / vmlal_high_s8 (two products summed in int16: at most
    2 * 128 * 127 = 32512, so w8 cannot overflow, w4's nibbles even less)
    and pairwise-added into int32 lanes; with the ARMv8.2 dot product
    extension (__ARM_FEATURE_DOTPROD, e.g. -march=armv8.2-a+dotprod) one
    vdotq_s32 does that. Group scales d_w d_x are formed per chunk of up to
    256 groups, and each group's int32 lanes are scaled by one vfmaq_n_f32,
    so there is one horizontal sum per row and token. Rows are read once per
    tile of up to four tokens.

    Tested under qemu-aarch64 by tests/cross/run-neon.sh (bit-exact
    activation quantization, matmuls against the exact quantized math).
*/
#include "kernels.h"

//  Other architectures compile this file to nothing.
#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>

#define CH 256                  //  groups per scale chunk (even)
#define TT 4                    //  tokens per tile

static void
s_quantize_act (const float *x, int nb, int nbp, int8_t *q, float *d, float *s)
{
    const int32x4_t lo = vdupq_n_s32 (-127), hi = vdupq_n_s32 (127);
    for (int g = 0; g < nb; g++) {
        const float *xg = x + (size_t) g * 32;
        float32x4_t v[8];
        float32x4_t amax = vdupq_n_f32 (0.0f);
        for (int k = 0; k < 8; k++) {
            v[k] = vld1q_f32 (xg + 4 * k);
            amax = vmaxnmq_f32 (amax, vabsq_f32 (v[k]));   //  NaN ignored, as in the reference
        }
        float am = vmaxnmvq_f32 (amax);
        float dg = am >= KERNELS_ACT_TINY ? am / 127.0f : 0.0f;
        float id = dg != 0.0f ? 1.0f / dg : 0.0f;
        int32x4_t sum = vdupq_n_s32 (0);
        int16x8_t h[4];
        for (int k = 0; k < 8; k += 2) {
            int32x4_t i0, i1;
            for (int e = 0; e < 2; e++) {
                float32x4_t f = vmulq_n_f32 (v[k + e], id);
                //  Round half to even; NaN becomes -127 as on x86.
                int32x4_t iv = vcvtnq_s32_f32 (f);
                iv = vbslq_s32 (vceqq_f32 (f, f), iv, lo);
                iv = vminq_s32 (vmaxq_s32 (iv, lo), hi);
                sum = vaddq_s32 (sum, iv);
                if (e == 0)
                    i0 = iv;
                else
                    i1 = iv;
            }
            h[k / 2] = vcombine_s16 (vmovn_s32 (i0), vmovn_s32 (i1));
        }
        vst1q_s8 (q + (size_t) g * 32, vcombine_s8 (vmovn_s16 (h[0]), vmovn_s16 (h[1])));
        vst1q_s8 (q + (size_t) g * 32 + 16, vcombine_s8 (vmovn_s16 (h[2]), vmovn_s16 (h[3])));
        d[g] = dg;
        s[g] = dg * (float) vaddvq_s32 (sum);
    }
    for (int g = nb; g < nbp; g++) {
        memset (q + (size_t) g * 32, 0, 32);
        d[g] = 0.0f;
        s[g] = 0.0f;
    }
}

//  Dot of 32 int8 weights (w0, w1) with 32 int8 activations, as 4 int32
//  lanes (summed later).
static inline int32x4_t
s_dot32 (int8x16_t w0, int8x16_t w1, const int8_t *x)
{
    int8x16_t x0 = vld1q_s8 (x), x1 = vld1q_s8 (x + 16);
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32 (vdotq_s32 (vdupq_n_s32 (0), w0, x0), w1, x1);
#else
    int16x8_t p0 = vmlal_high_s8 (vmull_s8 (vget_low_s8 (w0), vget_low_s8 (x0)), w0, x0);
    int16x8_t p1 = vmlal_high_s8 (vmull_s8 (vget_low_s8 (w1), vget_low_s8 (x1)), w1, x1);
    return vpadalq_s16 (vpaddlq_s16 (p0), p1);
#endif
}

//  fp16 scales [0, n) to floats, zero-filled up to an even count.
static inline void
s_fp16_chunk (const uint16_t *src, int n, float *dst)
{
    int g = 0;
    for (; g + 4 <= n; g += 4)
        vst1q_f32 (dst + g, vcvt_f32_f16 (vreinterpret_f16_u16 (vld1_u16 (src + g))));
    for (; g < n; g++)
        dst[g] = ggml_fp16_to_fp32 (src[g]);
    if (n & 1)
        dst[n] = 0.0f;
}

static inline float
s_dot_f32 (const float *a, const float *b, int n)
{
    float32x4_t acc = vdupq_n_f32 (0.0f);
    int g = 0;
    for (; g + 4 <= n; g += 4)
        acc = vfmaq_f32 (acc, vld1q_f32 (a + g), vld1q_f32 (b + g));
    float s = vaddvq_f32 (acc);
    for (; g < n; g++)
        s += a[g] * b[g];
    return s;
}

//  One w4 or w8 row (is_w4 constant after inlining) against nt tokens.
static inline __attribute__ ((always_inline)) void
s_q_tile (const qmatrix_t *W, const qact_t *a, int r, int t0, int nt, int is_w4, float *y, int ldy)
{
    const int nb = W->nb, nbp = a->nbp;
    const uint8_t *qs = W->qs + (size_t) r * W->qs_stride;
    const uint16_t *dw = W->d + (size_t) r * nb;
    const uint16_t *mw = is_w4 ? W->m + (size_t) r * nb : NULL;
    const uint8x16_t mask = vdupq_n_u8 (0x0f);
    float32x4_t acc[TT];
    float macc[TT];
    float dwf[CH + 1], mwf[CH + 1], sc[TT][CH + 1];
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++) {
        acc[u] = vdupq_n_f32 (0.0f);
        macc[u] = 0.0f;
    }
    for (int g0 = 0; g0 < nb; g0 += CH) {
        int gn = nb - g0 < CH ? nb - g0 : CH;
        s_fp16_chunk (dw + g0, gn, dwf);
        if (is_w4)
            s_fp16_chunk (mw + g0, gn, mwf);
        #pragma GCC unroll 4
        for (int u = 0; u < nt; u++) {
            const float *dx = a->d + (size_t) (t0 + u) * nbp + g0;
            for (int g = 0; g < gn + (gn & 1); g++)
                sc[u][g] = dwf[g] * dx[g];
            if (is_w4)
                macc[u] += s_dot_f32 (mwf, a->s + (size_t) (t0 + u) * nbp + g0, gn);
        }
        if (is_w4)
            for (int g = 0; g < gn; g += 2) {
                const uint8_t *qp = qs + (size_t) (g0 + g) * 16;
                uint8x16_t v0 = vld1q_u8 (qp), v1 = vld1q_u8 (qp + 16);
                int8x16_t a0 = vreinterpretq_s8_u8 (vandq_u8 (v0, mask));
                int8x16_t a1 = vreinterpretq_s8_u8 (vandq_u8 (v1, mask));
                int8x16_t b0 = vreinterpretq_s8_u8 (vshrq_n_u8 (v0, 4));
                int8x16_t b1 = vreinterpretq_s8_u8 (vshrq_n_u8 (v1, 4));
                #pragma GCC unroll 4
                for (int u = 0; u < nt; u++) {
                    const int8_t *xq = a->q + ((size_t) (t0 + u) * nbp + g0 + g) * 32;
                    acc[u] = vfmaq_n_f32 (acc[u], vcvtq_f32_s32 (s_dot32 (a0, a1, xq)), sc[u][g]);
                    acc[u] = vfmaq_n_f32 (acc[u], vcvtq_f32_s32 (s_dot32 (b0, b1, xq + 32)), sc[u][g + 1]);
                }
            }
        else
            for (int g = 0; g < gn; g++) {
                const int8_t *qp = (const int8_t *) qs + (size_t) (g0 + g) * 32;
                int8x16_t w0 = vld1q_s8 (qp), w1 = vld1q_s8 (qp + 16);
                #pragma GCC unroll 4
                for (int u = 0; u < nt; u++) {
                    const int8_t *xq = a->q + ((size_t) (t0 + u) * nbp + g0 + g) * 32;
                    acc[u] = vfmaq_n_f32 (acc[u], vcvtq_f32_s32 (s_dot32 (w0, w1, xq)), sc[u][g]);
                }
            }
    }
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++)
        y[(size_t) (t0 + u) * ldy + r] = vaddvq_f32 (acc[u]) + macc[u];
}

static void
s_matmul_w4 (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy)
{
    for (int r = r0; r < r1; r++)
        for (int t0 = 0; t0 < a->n_tokens; t0 += TT) {
            switch (a->n_tokens - t0) {
                case 1: s_q_tile (W, a, r, t0, 1, 1, y, ldy); break;
                case 2: s_q_tile (W, a, r, t0, 2, 1, y, ldy); break;
                case 3: s_q_tile (W, a, r, t0, 3, 1, y, ldy); break;
                default: s_q_tile (W, a, r, t0, 4, 1, y, ldy); break;
            }
        }
}

static void
s_matmul_w8 (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy)
{
    for (int r = r0; r < r1; r++)
        for (int t0 = 0; t0 < a->n_tokens; t0 += TT) {
            switch (a->n_tokens - t0) {
                case 1: s_q_tile (W, a, r, t0, 1, 0, y, ldy); break;
                case 2: s_q_tile (W, a, r, t0, 2, 0, y, ldy); break;
                case 3: s_q_tile (W, a, r, t0, 3, 0, y, ldy); break;
                default: s_q_tile (W, a, r, t0, 4, 0, y, ldy); break;
            }
        }
}

//  f32: tiles of two tokens, four accumulators each to cover FMA latency.
static inline __attribute__ ((always_inline)) void
s_f32_tile (const float *w, const float *x, int cols, int nt, float *y0, float *y1)
{
    float32x4_t acc[2][4];
    #pragma GCC unroll 2
    for (int u = 0; u < 2; u++)
        for (int k = 0; k < 4; k++)
            acc[u][k] = vdupq_n_f32 (0.0f);
    for (int c = 0; c < cols; c += 16)
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            float32x4_t wv = vld1q_f32 (w + c + 4 * k);
            #pragma GCC unroll 2
            for (int u = 0; u < nt; u++)
                acc[u][k] = vfmaq_f32 (acc[u][k], wv, vld1q_f32 (x + (size_t) u * cols + c + 4 * k));
        }
    *y0 = vaddvq_f32 (vaddq_f32 (vaddq_f32 (acc[0][0], acc[0][1]), vaddq_f32 (acc[0][2], acc[0][3])));
    if (nt == 2)
        *y1 = vaddvq_f32 (vaddq_f32 (vaddq_f32 (acc[1][0], acc[1][1]), vaddq_f32 (acc[1][2], acc[1][3])));
}

static void
s_matmul_f32 (const qmatrix_t *W, const float *x, int n_tokens, int r0, int r1, float *y, int ldy)
{
    int cols = W->cols;
    for (int r = r0; r < r1; r++) {
        const float *w = W->f + (size_t) r * cols;
        int t = 0;
        for (; t + 2 <= n_tokens; t += 2)
            s_f32_tile (w, x + (size_t) t * cols, cols, 2,
                        &y[(size_t) t * ldy + r], &y[(size_t) (t + 1) * ldy + r]);
        if (t < n_tokens)
            s_f32_tile (w, x + (size_t) t * cols, cols, 1, &y[(size_t) t * ldy + r], NULL);
    }
}

const kernels_t kernels_neon = {
    .name = "neon",
    .quantize_act = s_quantize_act,
    .matmul_w8 = s_matmul_w8,
    .matmul_w4 = s_matmul_w4,
    .matmul_f32 = s_matmul_f32,
};

#endif
