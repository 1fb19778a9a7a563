/*  kernels_avx512.c: the AVX-512 VNNI kernel family (Ice Lake, Zen 4 and on).

    Built with AVX-512 F/BW/VL/DQ/VNNI flags (core/CMakeLists.txt); called only
    when the CPU has them. One vpdpbusd multiplies 64 u8 weights by 64 s8
    activations and sums groups of four into 16 int32 lanes: lanes 0-7 belong
    to one group of 32, lanes 8-15 to the next. So a step covers a pair of
    groups:
      - w4: the pair's 32 bytes are broadcast to both 256-bit halves and
        shifted by 0 / 4 bits per half, giving the even group's nibbles below
        and the odd group's above (the layout quant.h describes), already u8;
      - w8: 64 signed bytes XOR 0x80 are w + 128 as u8; the extra
        128 * sum(xq) per group is taken off with the per-group activation
        sums, as part of the same short dot product that adds w4's mins.
    Per-lane scales [d_w d_x (even) x8 | d_w d_x (odd) x8] come from a
    per-row buffer by one permute. Rows are read once per tile of up to four
    tokens.
*/
#include "kernels.h"

//  Other architectures compile this file to nothing (kernels_get never
//  names these families there).
#if KERNELS_HAVE_X86
#include <immintrin.h>

#define TT 4                    //  tokens per tile

static void
s_quantize_act (const float *x, int nb, int nbp, int8_t *q, float *d, float *s)
{
    const __m512 sign = _mm512_set1_ps (-0.0f);
    const __m512i lo = _mm512_set1_epi32 (-127), hi = _mm512_set1_epi32 (127);
    for (int g = 0; g < nb; g++) {
        const float *xg = x + (size_t) g * 32;
        __m512 v0 = _mm512_loadu_ps (xg), v1 = _mm512_loadu_ps (xg + 16);
        __m512 amax = _mm512_max_ps (_mm512_andnot_ps (sign, v0), _mm512_andnot_ps (sign, v1));
        float am = _mm512_reduce_max_ps (amax);
        float dg = am >= KERNELS_ACT_TINY ? am / 127.0f : 0.0f;
        float id = dg != 0.0f ? 1.0f / dg : 0.0f;
        __m512 vid = _mm512_set1_ps (id);
        __m512i i0 = _mm512_cvtps_epi32 (_mm512_mul_ps (v0, vid));     //  nearest even
        __m512i i1 = _mm512_cvtps_epi32 (_mm512_mul_ps (v1, vid));
        i0 = _mm512_min_epi32 (_mm512_max_epi32 (i0, lo), hi);
        i1 = _mm512_min_epi32 (_mm512_max_epi32 (i1, lo), hi);
        _mm_storeu_si128 ((__m128i *) (q + (size_t) g * 32), _mm512_cvtepi32_epi8 (i0));
        _mm_storeu_si128 ((__m128i *) (q + (size_t) g * 32 + 16), _mm512_cvtepi32_epi8 (i1));
        d[g] = dg;
        s[g] = dg * (float) _mm512_reduce_add_epi32 (_mm512_add_epi32 (i0, i1));
    }
    for (int g = nb; g < nbp; g++) {
        _mm256_storeu_si256 ((__m256i *) (q + (size_t) g * 32), _mm256_setzero_si256 ());
        d[g] = 0.0f;
        s[g] = 0.0f;
    }
}

//  One quantized row (w4 or w8, a compile-time constant after inlining)
//  against nt tokens. Groups go in blocks of 16 (8 pairs) whose scales stay
//  in registers: d_w d_x for 16 groups is one vector per token, and pair p's
//  [even x8 | odd x8] lanes come out of it by one permute with index 2p.
static inline __attribute__ ((always_inline)) void
s_q_tile (const qmatrix_t *W, const qact_t *a, int r, int t0, int nt, int is_w4, float *y, int ldy)
{
    const int nb = W->nb, nbp = a->nbp;
    const uint8_t *qs = W->qs + (size_t) r * W->qs_stride;
    const uint16_t *dw = W->d + (size_t) r * nb;
    const uint16_t *mw = is_w4 ? W->m + (size_t) r * nb : NULL;
    const __m512i idx0 = _mm512_setr_epi32 (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i two = _mm512_set1_epi32 (2);
    const __m512i shifts = _mm512_setr_epi64 (0, 0, 0, 0, 4, 4, 4, 4);
    const __m512i mask = _mm512_set1_epi8 (0x0f);
    const __m512i bias = _mm512_set1_epi8 ((char) 0x80);
    __m512 acc[TT], sc[TT];
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++)
        acc[u] = _mm512_setzero_ps ();
    for (int g0 = 0; g0 < nb; g0 += 16) {
        int gn = nb - g0 < 16 ? nb - g0 : 16;
        __mmask16 k = (__mmask16) ((1u << gn) - 1);
        __m512 dv = _mm512_cvtph_ps (_mm256_maskz_loadu_epi16 (k, dw + g0));
        //  The per-group constant term: w4's min times d_x sum(xq); for w8
        //  the -128 d_w d_x sum(xq) that undoes the +128 bias of the quants.
        __m512 mv = is_w4 ? _mm512_cvtph_ps (_mm256_maskz_loadu_epi16 (k, mw + g0))
                          : _mm512_mul_ps (dv, _mm512_set1_ps (-128.0f));
        #pragma GCC unroll 4
        for (int u = 0; u < nt; u++) {
            size_t off = (size_t) (t0 + u) * nbp + g0;
            sc[u] = _mm512_mul_ps (dv, _mm512_maskz_loadu_ps (k, a->d + off));
            acc[u] = _mm512_fmadd_ps (mv, _mm512_maskz_loadu_ps (k, a->s + off), acc[u]);
        }
        __m512i idx = idx0;
        for (int g = 0; g < gn; g += 2) {
            __m512i w;
            if (is_w4) {
                __m256i v = _mm256_loadu_si256 ((const __m256i *) (qs + (size_t) (g0 + g) * 16));
                w = _mm512_and_si512 (_mm512_srlv_epi64 (_mm512_broadcast_i64x4 (v), shifts), mask);
            }
            else
                w = _mm512_xor_si512 (_mm512_loadu_si512 (qs + (size_t) (g0 + g) * 32), bias);
            #pragma GCC unroll 4
            for (int u = 0; u < nt; u++) {
                const int8_t *xq = a->q + ((size_t) (t0 + u) * nbp + g0 + g) * 32;
                __m512i p = _mm512_dpbusd_epi32 (_mm512_setzero_si512 (), w, _mm512_loadu_si512 (xq));
                acc[u] = _mm512_fmadd_ps (_mm512_cvtepi32_ps (p), _mm512_permutexvar_ps (idx, sc[u]),
                                          acc[u]);
            }
            idx = _mm512_add_epi32 (idx, two);
        }
    }
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++)
        y[(size_t) (t0 + u) * ldy + r] = _mm512_reduce_add_ps (acc[u]);
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

//  f32: tiles of two tokens, two accumulators per token.
static inline __attribute__ ((always_inline)) void
s_f32_tile (const float *w, const float *x, int cols, int nt, float *y0, float *y1)
{
    __m512 acc[2][2];
    #pragma GCC unroll 4
    for (int u = 0; u < 2; u++)
        acc[u][0] = acc[u][1] = _mm512_setzero_ps ();
    for (int c = 0; c < cols; c += 32)
        #pragma GCC unroll 4
        for (int k = 0; k < 2; k++) {
            __m512 wv = _mm512_loadu_ps (w + c + 16 * k);
            #pragma GCC unroll 4
            for (int u = 0; u < nt; u++)
                acc[u][k] = _mm512_fmadd_ps (wv, _mm512_loadu_ps (x + (size_t) u * cols + c + 16 * k),
                                             acc[u][k]);
        }
    *y0 = _mm512_reduce_add_ps (_mm512_add_ps (acc[0][0], acc[0][1]));
    if (nt == 2)
        *y1 = _mm512_reduce_add_ps (_mm512_add_ps (acc[1][0], acc[1][1]));
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

const kernels_t kernels_avx512 = {
    .name = "avx512vnni",
    .quantize_act = s_quantize_act,
    .matmul_w8 = s_matmul_w8,
    .matmul_w4 = s_matmul_w4,
    .matmul_f32 = s_matmul_f32,
};

#endif
