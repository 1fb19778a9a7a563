/*  kernels_neon.c: the ARM NEON kernel family (every AArch64 CPU).

    The edge devices splitmesh targets are mostly ARM. Same arithmetic as
    the scalar family in kernels.c: int8 activations per group of 32,
    integer dot per group, float scale algebra. Products are s8 x s8 with
    vmull_s8 / vmlal_high_s8 (two products summed in int16: at most
    2 * 128 * 127 = 32512, so w8 cannot overflow, w4's nibbles even less)
    and pairwise-added into int32 lanes; with the ARMv8.2 dot product
    extension (__ARM_FEATURE_DOTPROD, e.g. -march=armv8.2-a+dotprod) one
    vdotq_s32 does that. With the block layout (kernels.h) each int32 lane
    is one group, so a block of 8 groups accumulates in int32 and is scaled
    once; there is one horizontal sum per row and token. Rows are read once
    per tile of up to four tokens.

    Tested under qemu-aarch64 by tests/cross/run-neon.sh (bit-exact
    activation quantization, matmuls against the exact quantized math).
*/
#include "kernels.h"

//  Other architectures compile this file to nothing.
#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>

#define TT 4                    //  tokens per tile

//  Rounds 8 float vectors' worth (32 values) to int8 in natural order:
//  half to even, NaN to -127 as on x86, clamped to [-127, 127]; adds the
//  int32 values to *sum and keeps them in iv (for the residual).
static inline void
s_round_group (const float32x4_t f[8], int8_t out[32], int32x4_t iv[8], int32x4_t *sum)
{
    const int32x4_t lo = vdupq_n_s32 (-127), hi = vdupq_n_s32 (127);
    int16x8_t h[4];
    for (int k = 0; k < 8; k++) {
        int32x4_t v = vcvtnq_s32_f32 (f[k]);
        v = vbslq_s32 (vceqq_f32 (f[k], f[k]), v, lo);
        iv[k] = vminq_s32 (vmaxq_s32 (v, lo), hi);
        *sum = vaddq_s32 (*sum, iv[k]);
    }
    for (int k = 0; k < 8; k += 2)
        h[k / 2] = vcombine_s16 (vmovn_s32 (iv[k]), vmovn_s32 (iv[k + 1]));
    vst1q_s8 (out, vcombine_s8 (vmovn_s16 (h[0]), vmovn_s16 (h[1])));
    vst1q_s8 (out + 16, vcombine_s8 (vmovn_s16 (h[2]), vmovn_s16 (h[3])));
}

static void
s_quantize_act (const float *x, int nb, int nbp, int8_t *q, int8_t *q2, float *d, float *s)
{
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
        float32x4_t f[8];
        int32x4_t iv[8], sum = vdupq_n_s32 (0);
        for (int k = 0; k < 8; k++)
            f[k] = vmulq_n_f32 (v[k], id);
        int8_t tmp[32];
        s_round_group (f, tmp, iv, &sum);
        kernels_put_act_group (q, nb, g, tmp);
        if (q2) {
            //  Exact residual and power-of-two scale (see the scalar
            //  reference); f also feeds the conversion, so it is never
            //  contracted into an FMA.
            int32x4_t rv[8], sum2 = vdupq_n_s32 (0);
            float32x4_t r[8];
            for (int k = 0; k < 8; k++)
                r[k] = vmulq_n_f32 (vsubq_f32 (f[k], vcvtq_f32_s32 (iv[k])),
                                    (float) (1 << KERNELS_ACT2_SHIFT));
            s_round_group (r, tmp, rv, &sum2);
            kernels_put_act_group (q2, nb, g, tmp);
            d[g] = dg / (float) (1 << KERNELS_ACT2_SHIFT);
            s[g] = d[g] * (float) (vaddvq_s32 (sum) * (1 << KERNELS_ACT2_SHIFT) + vaddvq_s32 (sum2));
        }
        else {
            d[g] = dg;
            s[g] = dg * (float) vaddvq_s32 (sum);
        }
    }
    memset (q + (size_t) nb * 32, 0, (size_t) (nbp - nb) * 32);
    if (q2)
        memset (q2 + (size_t) nb * 32, 0, (size_t) (nbp - nb) * 32);
    for (int g = nb; g < nbp; g++) {
        d[g] = 0.0f;
        s[g] = 0.0f;
    }
}

//  4 int32 lanes += dot of 16 int8 weights with 16 int8 activations, four
//  bytes (one group's) per lane.
static inline int32x4_t
s_dot16 (int32x4_t acc, int8x16_t w, int8x16_t x)
{
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32 (acc, w, x);
#else
    int16x8_t lo = vmull_s8 (vget_low_s8 (w), vget_low_s8 (x));
    int16x8_t hi = vmull_high_s8 (w, x);
    return vaddq_s32 (acc, vpaddq_s32 (vpaddlq_s16 (lo), vpaddlq_s16 (hi)));
#endif
}

//  Loads 4 fp16 scales from src[0, n) as floats, zeros past n.
static inline float32x4_t
s_load_fp16x4 (const uint16_t *src, int n)
{
    uint16_t tmp[4] = { 0 };
    if (n >= 4)
        return vcvt_f32_f16 (vreinterpret_f16_u16 (vld1_u16 (src)));
    memcpy (tmp, src, (size_t) (n > 0 ? n : 0) * sizeof (uint16_t));
    return vcvt_f32_f16 (vreinterpret_f16_u16 (vld1_u16 (tmp)));
}

//  One w4 or w8 row (is_w4 constant after inlining) against nt tokens. A
//  full block of 8 groups accumulates in two int32x4 (groups 0-3, 4-7) and
//  is scaled once; the last T < 8 groups (32 T activation bytes) go in
//  16-byte chunks whose lane k belongs to group (4 c + k) mod T.
static inline __attribute__ ((always_inline)) void
s_q_tile (const qmatrix_t *W, const qact_t *a, int r, int t0, int nt, int is_w4, int two, float *y,
          int ldy)
{
    const int nb = W->nb, nbp = a->nbp, nfull = nb >> 3, tail = nb & 7;
    const uint8_t *qs = W->qs + (size_t) r * W->qs_stride;
    const uint16_t *dw = W->d + (size_t) r * nb;
    const uint16_t *mw = W->m + (size_t) r * nb;
    const uint8x16_t mask = vdupq_n_u8 (0x0f);
    float32x4_t acc[TT];
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++)
        acc[u] = vdupq_n_f32 (0.0f);
    for (int B = 0; B < nfull; B++) {
        int g0 = B * 8;
        const uint8_t *p = qs + (size_t) B * (is_w4 ? 128 : 256);
        float32x4_t dv0 = s_load_fp16x4 (dw + g0, 4), dv1 = s_load_fp16x4 (dw + g0 + 4, 4);
        float32x4_t mv0 = s_load_fp16x4 (mw + g0, 4), mv1 = s_load_fp16x4 (mw + g0 + 4, 4);
        int8x16_t w[16];                //  w[2 j + h] meets activation bytes 32 j + 16 h
        if (is_w4)
            for (int i = 0; i < 8; i++) {
                uint8x16_t v = vld1q_u8 (p + 16 * i);
                w[i] = vreinterpretq_s8_u8 (vandq_u8 (v, mask));
                w[i + 8] = vreinterpretq_s8_u8 (vshrq_n_u8 (v, 4));
            }
        else
            for (int i = 0; i < 16; i++)
                w[i] = vld1q_s8 ((const int8_t *) p + 16 * i);
        #pragma GCC unroll 4
        for (int u = 0; u < nt; u++) {
            size_t off = (size_t) (t0 + u) * nbp + g0;
            const int8_t *xq = a->q + off * 32;
            int32x4_t i0 = vdupq_n_s32 (0), i1 = vdupq_n_s32 (0);
            for (int j = 0; j < 8; j++) {
                i0 = s_dot16 (i0, w[2 * j], vld1q_s8 (xq + 32 * j));
                i1 = s_dot16 (i1, w[2 * j + 1], vld1q_s8 (xq + 32 * j + 16));
            }
            if (two) {
                const int8_t *xq2 = a->q2 + off * 32;
                int32x4_t j0 = vdupq_n_s32 (0), j1 = vdupq_n_s32 (0);
                for (int j = 0; j < 8; j++) {
                    j0 = s_dot16 (j0, w[2 * j], vld1q_s8 (xq2 + 32 * j));
                    j1 = s_dot16 (j1, w[2 * j + 1], vld1q_s8 (xq2 + 32 * j + 16));
                }
                i0 = vaddq_s32 (vshlq_n_s32 (i0, KERNELS_ACT2_SHIFT), j0);
                i1 = vaddq_s32 (vshlq_n_s32 (i1, KERNELS_ACT2_SHIFT), j1);
            }
            acc[u] = vfmaq_f32 (acc[u], vcvtq_f32_s32 (i0), vmulq_f32 (dv0, vld1q_f32 (a->d + off)));
            acc[u] = vfmaq_f32 (acc[u], vcvtq_f32_s32 (i1), vmulq_f32 (dv1, vld1q_f32 (a->d + off + 4)));
            acc[u] = vfmaq_f32 (acc[u], mv0, vld1q_f32 (a->s + off));
            acc[u] = vfmaq_f32 (acc[u], mv1, vld1q_f32 (a->s + off + 4));
        }
    }
    if (tail) {
        int g0 = nfull * 8;
        const uint8_t *p = qs + (size_t) nfull * (is_w4 ? 128 : 256);
        float dwf[8] = { 0 }, mwf[8] = { 0 };
        for (int g = 0; g < tail; g++) {
            dwf[g] = ggml_fp16_to_fp32 (dw[g0 + g]);
            mwf[g] = ggml_fp16_to_fp32 (mw[g0 + g]);
        }
        int8x16_t w[14];
        for (int c = 0; c < 2 * tail; c++) {
            int k0 = 16 * c;
            if (!is_w4)
                w[c] = vld1q_s8 ((const int8_t *) p + k0);
            else
            if (k0 < 16 * tail)
                w[c] = vreinterpretq_s8_u8 (vandq_u8 (vld1q_u8 (p + k0), mask));
            else
                w[c] = vreinterpretq_s8_u8 (vshrq_n_u8 (vld1q_u8 (p + k0 - 16 * tail), 4));
        }
        #pragma GCC unroll 4
        for (int u = 0; u < nt; u++) {
            size_t off = (size_t) (t0 + u) * nbp + g0;
            const int8_t *xq = a->q + off * 32;
            float sc[8], lane[4];
            float msum = 0.0f;
            for (int g = 0; g < tail; g++) {
                sc[g] = dwf[g] * a->d[off + g];
                msum += mwf[g] * a->s[off + g];
            }
            for (int c = 0; c < 2 * tail; c++) {
                int32x4_t ip = s_dot16 (vdupq_n_s32 (0), w[c], vld1q_s8 (xq + 16 * c));
                if (two)
                    ip = vaddq_s32 (vshlq_n_s32 (ip, KERNELS_ACT2_SHIFT),
                                    s_dot16 (vdupq_n_s32 (0), w[c], vld1q_s8 (a->q2 + off * 32 + 16 * c)));
                for (int k = 0; k < 4; k++)
                    lane[k] = sc[(4 * c + k) % tail];
                acc[u] = vfmaq_f32 (acc[u], vcvtq_f32_s32 (ip), vld1q_f32 (lane));
            }
            acc[u] = vsetq_lane_f32 (vgetq_lane_f32 (acc[u], 0) + msum, acc[u], 0);
        }
    }
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++)
        y[(size_t) (t0 + u) * ldy + r] = vaddvq_f32 (acc[u]);
}

//  All tokens of rows [r0, r1) in tiles of TT, one instantiation per tile
//  size, format and activation levels.
static inline __attribute__ ((always_inline)) void
s_q_rows (const qmatrix_t *W, const qact_t *a, int r0, int r1, int is_w4, int two, float *y, int ldy)
{
    for (int r = r0; r < r1; r++)
        for (int t0 = 0; t0 < a->n_tokens; t0 += TT) {
            switch (a->n_tokens - t0) {
                case 1: s_q_tile (W, a, r, t0, 1, is_w4, two, y, ldy); break;
                case 2: s_q_tile (W, a, r, t0, 2, is_w4, two, y, ldy); break;
                case 3: s_q_tile (W, a, r, t0, 3, is_w4, two, y, ldy); break;
                default: s_q_tile (W, a, r, t0, 4, is_w4, two, y, ldy); break;
            }
        }
}

static void
s_matmul_w4 (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy)
{
    if (a->q2)
        s_q_rows (W, a, r0, r1, 1, 1, y, ldy);
    else
        s_q_rows (W, a, r0, r1, 1, 0, y, ldy);
}

static void
s_matmul_w8 (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy)
{
    if (a->q2)
        s_q_rows (W, a, r0, r1, 0, 1, y, ldy);
    else
        s_q_rows (W, a, r0, r1, 0, 0, y, ldy);
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
