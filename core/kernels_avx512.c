/*  kernels_avx512.c: the AVX-512 VNNI kernel family (Ice Lake, Zen 4 and on).

    Built with AVX-512 F/BW/VL/DQ/VNNI flags (core/CMakeLists.txt); called only
    when the CPU has them. One vpdpbusd multiplies 64 u8 weights by 64 s8
    activations and sums groups of four into 16 int32 lanes; with the block
    layout (kernels.h) lanes g and 8 + g always belong to group g of an
    8-group block, so four vpdpbusd accumulate a whole block in int32 and
    one convert and one FMA scale it:
      - w4: a block's 128 bytes are two loads; low and high nibbles (mask,
        shift) are four u8 operands;
      - w8: 256 signed bytes XOR 0x80 are w + 128 as u8; the extra
        128 * sum(xq) per group is taken off with the per-group activation
        sums, in the same FMA that adds w4's mins.
    A last block of T < 8 groups is 32 T activation bytes: 64-byte chunks
    whose lanes belong to groups (16 c + k) mod T, scaled through a permute.
    Rows are read once per tile of up to four tokens.
*/
#include "kernels.h"

//  Other architectures compile this file to nothing (kernels_get never
//  names these families there).
#if KERNELS_HAVE_X86
#include <immintrin.h>

#define TT 4                    //  tokens per tile

static void
s_quantize_act (const float *x, int nb, int nbp, int8_t *q, int8_t *q2, float *d, float *s)
{
    const __m512 sign = _mm512_set1_ps (-0.0f);
    const __m512i lo = _mm512_set1_epi32 (-127), hi = _mm512_set1_epi32 (127);
    const __m512 scale2 = _mm512_set1_ps ((float) (1 << KERNELS_ACT2_SHIFT));
    for (int g = 0; g < nb; g++) {
        const float *xg = x + (size_t) g * 32;
        __m512 v0 = _mm512_loadu_ps (xg), v1 = _mm512_loadu_ps (xg + 16);
        __m512 amax = _mm512_max_ps (_mm512_andnot_ps (sign, v0), _mm512_andnot_ps (sign, v1));
        float am = _mm512_reduce_max_ps (amax);
        float dg = am >= KERNELS_ACT_TINY ? am / 127.0f : 0.0f;
        float id = dg != 0.0f ? 1.0f / dg : 0.0f;
        __m512 vid = _mm512_set1_ps (id);
        __m512 f0 = _mm512_mul_ps (v0, vid), f1 = _mm512_mul_ps (v1, vid);
        __m512i i0 = _mm512_cvtps_epi32 (f0);     //  nearest even
        __m512i i1 = _mm512_cvtps_epi32 (f1);
        i0 = _mm512_min_epi32 (_mm512_max_epi32 (i0, lo), hi);
        i1 = _mm512_min_epi32 (_mm512_max_epi32 (i1, lo), hi);
        int8_t tmp[32];
        _mm_storeu_si128 ((__m128i *) tmp, _mm512_cvtepi32_epi8 (i0));
        _mm_storeu_si128 ((__m128i *) (tmp + 16), _mm512_cvtepi32_epi8 (i1));
        kernels_put_act_group (q, nb, g, tmp);
        int sum = _mm512_reduce_add_epi32 (_mm512_add_epi32 (i0, i1));
        if (q2) {
            //  Exact residual and power-of-two scale (see the scalar
            //  reference); f0/f1 also feed the conversions, so they are
            //  never contracted into an FMA.
            __m512 r0 = _mm512_mul_ps (_mm512_sub_ps (f0, _mm512_cvtepi32_ps (i0)), scale2);
            __m512 r1 = _mm512_mul_ps (_mm512_sub_ps (f1, _mm512_cvtepi32_ps (i1)), scale2);
            __m512i j0 = _mm512_min_epi32 (_mm512_max_epi32 (_mm512_cvtps_epi32 (r0), lo), hi);
            __m512i j1 = _mm512_min_epi32 (_mm512_max_epi32 (_mm512_cvtps_epi32 (r1), lo), hi);
            _mm_storeu_si128 ((__m128i *) tmp, _mm512_cvtepi32_epi8 (j0));
            _mm_storeu_si128 ((__m128i *) (tmp + 16), _mm512_cvtepi32_epi8 (j1));
            kernels_put_act_group (q2, nb, g, tmp);
            int sum2 = _mm512_reduce_add_epi32 (_mm512_add_epi32 (j0, j1));
            d[g] = dg / (float) (1 << KERNELS_ACT2_SHIFT);
            s[g] = d[g] * (float) (sum * (1 << KERNELS_ACT2_SHIFT) + sum2);
        }
        else {
            d[g] = dg;
            s[g] = dg * (float) sum;
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

//  One quantized row (w4 or w8, a compile-time constant after inlining)
//  against nt tokens. A block of 8 groups accumulates in int32 (lane g and
//  lane 8 + g are group g) and is scaled once: d_w d_x for its 8 groups is
//  one vector, repeated in both halves.
static inline __attribute__ ((always_inline)) void
s_q_tile (const qmatrix_t *W, const qact_t *a, int r, int t0, int nt, int is_w4, int two, float *y,
          int ldy, int32_t tidx[4][16])
{
    const int nb = W->nb, nbp = a->nbp, nfull = nb >> 3, tail = nb & 7;
    const uint8_t *qs = W->qs + (size_t) r * W->qs_stride;
    const uint16_t *dw = W->d + (size_t) r * nb;
    const uint16_t *mw = W->m + (size_t) r * nb;
    const __m512i mask = _mm512_set1_epi8 (0x0f);
    const __m512i bias = _mm512_set1_epi8 ((char) 0x80);
    __m512 acc[TT];
    __m256 macc[TT];
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++) {
        acc[u] = _mm512_setzero_ps ();
        macc[u] = _mm256_setzero_ps ();
    }
    for (int B = 0; B < nfull; B++) {
        int g0 = B * 8;
        __m256 dv = _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (dw + g0)));
        //  The per-group constant term: the min times d_x sum(xq); for w8
        //  also the -128 d_w d_x sum(xq) that undoes the +128 bias of the quants.
        __m256 mv = _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (mw + g0)));
        if (!is_w4)
            mv = _mm256_fmadd_ps (dv, _mm256_set1_ps (-128.0f), mv);
        __m512i w0, w1, w2, w3;         //  meet activation bytes [64 k, 64 k + 64)
        if (is_w4) {
            __m512i v0 = _mm512_loadu_si512 (qs + (size_t) B * 128);
            __m512i v1 = _mm512_loadu_si512 (qs + (size_t) B * 128 + 64);
            w0 = _mm512_and_si512 (v0, mask);
            w1 = _mm512_and_si512 (v1, mask);
            w2 = _mm512_and_si512 (_mm512_srli_epi16 (v0, 4), mask);
            w3 = _mm512_and_si512 (_mm512_srli_epi16 (v1, 4), mask);
        }
        else {
            const uint8_t *p = qs + (size_t) B * 256;
            w0 = _mm512_xor_si512 (_mm512_loadu_si512 (p), bias);
            w1 = _mm512_xor_si512 (_mm512_loadu_si512 (p + 64), bias);
            w2 = _mm512_xor_si512 (_mm512_loadu_si512 (p + 128), bias);
            w3 = _mm512_xor_si512 (_mm512_loadu_si512 (p + 192), bias);
        }
        #pragma GCC unroll 4
        for (int u = 0; u < nt; u++) {
            size_t off = (size_t) (t0 + u) * nbp + g0;
            const int8_t *xq = a->q + off * 32;
            __m512i p = _mm512_dpbusd_epi32 (_mm512_setzero_si512 (), w0, _mm512_loadu_si512 (xq));
            p = _mm512_dpbusd_epi32 (p, w1, _mm512_loadu_si512 (xq + 64));
            p = _mm512_dpbusd_epi32 (p, w2, _mm512_loadu_si512 (xq + 128));
            p = _mm512_dpbusd_epi32 (p, w3, _mm512_loadu_si512 (xq + 192));
            if (two) {
                const int8_t *xq2 = a->q2 + off * 32;
                __m512i p2 = _mm512_dpbusd_epi32 (_mm512_setzero_si512 (), w0, _mm512_loadu_si512 (xq2));
                p2 = _mm512_dpbusd_epi32 (p2, w1, _mm512_loadu_si512 (xq2 + 64));
                p2 = _mm512_dpbusd_epi32 (p2, w2, _mm512_loadu_si512 (xq2 + 128));
                p2 = _mm512_dpbusd_epi32 (p2, w3, _mm512_loadu_si512 (xq2 + 192));
                p = _mm512_add_epi32 (_mm512_slli_epi32 (p, KERNELS_ACT2_SHIFT), p2);
            }
            __m256 sc = _mm256_mul_ps (dv, _mm256_loadu_ps (a->d + off));
            acc[u] = _mm512_fmadd_ps (_mm512_cvtepi32_ps (p), _mm512_broadcast_f32x8 (sc), acc[u]);
            macc[u] = _mm256_fmadd_ps (mv, _mm256_loadu_ps (a->s + off), macc[u]);
        }
    }
    if (tail) {
        //  The last T < 8 groups: 32 T activation bytes, in (T + 1) / 2 chunks
        //  of 64; lane k of chunk c is group (16 c + k) mod T, whose scale
        //  tidx[c] picks. w4 quarters come from the low nibbles of bytes
        //  [k, k + 16) below 16 T, else the high nibbles of [k - 16 T, ...).
        int g0 = nfull * 8, nz = (tail + 1) / 2;
        __mmask8 k8 = (__mmask8) ((1u << tail) - 1);
        __m256 dv = _mm256_cvtph_ps (_mm_maskz_loadu_epi16 (k8, dw + g0));
        __m256 mv = _mm256_cvtph_ps (_mm_maskz_loadu_epi16 (k8, mw + g0));
        if (!is_w4)
            mv = _mm256_fmadd_ps (dv, _mm256_set1_ps (-128.0f), mv);
        const uint8_t *p = qs + (size_t) nfull * (is_w4 ? 128 : 256);
        __m512i w[4];
        for (int c = 0; c < nz; c++) {
            if (is_w4) {
                const __m128i m4 = _mm_set1_epi8 (0x0f);
                __m128i qv[4];
                for (int qd = 0; qd < 4; qd++) {
                    int k0 = 64 * c + 16 * qd;
                    if (k0 >= 32 * tail)
                        qv[qd] = _mm_setzero_si128 ();
                    else
                    if (k0 < 16 * tail)
                        qv[qd] = _mm_and_si128 (_mm_loadu_si128 ((const __m128i *) (p + k0)), m4);
                    else
                        qv[qd] = _mm_and_si128 (_mm_srli_epi16 (_mm_loadu_si128 (
                                     (const __m128i *) (p + k0 - 16 * tail)), 4), m4);
                }
                w[c] = _mm512_inserti32x4 (_mm512_inserti32x4 (_mm512_inserti32x4 (
                           _mm512_castsi128_si512 (qv[0]), qv[1], 1), qv[2], 2), qv[3], 3);
            }
            else {
                int n = 32 * tail - 64 * c;
                __mmask64 kb = n >= 64 ? ~(__mmask64) 0 : (((__mmask64) 1 << n) - 1);
                w[c] = _mm512_xor_si512 (_mm512_maskz_loadu_epi8 (kb, p + 64 * c), bias);
            }
        }
        #pragma GCC unroll 4
        for (int u = 0; u < nt; u++) {
            size_t off = (size_t) (t0 + u) * nbp + g0;
            const int8_t *xq = a->q + off * 32;
            __m512 sc = _mm512_castps256_ps512 (_mm256_mul_ps (dv, _mm256_loadu_ps (a->d + off)));
            for (int c = 0; c < nz; c++) {
                __m512i ip = _mm512_dpbusd_epi32 (_mm512_setzero_si512 (), w[c],
                                                  _mm512_loadu_si512 (xq + 64 * c));
                if (two) {
                    __m512i ip2 = _mm512_dpbusd_epi32 (_mm512_setzero_si512 (), w[c],
                                                       _mm512_loadu_si512 (a->q2 + off * 32 + 64 * c));
                    ip = _mm512_add_epi32 (_mm512_slli_epi32 (ip, KERNELS_ACT2_SHIFT), ip2);
                }
                acc[u] = _mm512_fmadd_ps (_mm512_cvtepi32_ps (ip),
                                          _mm512_permutexvar_ps (_mm512_loadu_si512 (tidx[c]), sc), acc[u]);
            }
            macc[u] = _mm256_fmadd_ps (mv, _mm256_loadu_ps (a->s + off), macc[u]);
        }
    }
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++)
        y[(size_t) (t0 + u) * ldy + r] = _mm512_reduce_add_ps (
            _mm512_add_ps (acc[u], _mm512_castps256_ps512 (macc[u])));
}

//  Lane k of tail chunk c belongs to group (16 c + k) mod T.
static void
s_tail_index (int T, int32_t tidx[4][16])
{
    for (int c = 0; c < 4; c++)
        for (int k = 0; k < 16; k++)
            tidx[c][k] = T ? (16 * c + k) % T : 0;
}

//  All tokens of rows [r0, r1) in tiles of TT, one instantiation per tile
//  size, format and activation levels.
static inline __attribute__ ((always_inline)) void
s_q_rows (const qmatrix_t *W, const qact_t *a, int r0, int r1, int is_w4, int two, float *y, int ldy)
{
    int32_t tidx[4][16];
    s_tail_index (W->nb & 7, tidx);
    for (int r = r0; r < r1; r++)
        for (int t0 = 0; t0 < a->n_tokens; t0 += TT) {
            switch (a->n_tokens - t0) {
                case 1: s_q_tile (W, a, r, t0, 1, is_w4, two, y, ldy, tidx); break;
                case 2: s_q_tile (W, a, r, t0, 2, is_w4, two, y, ldy, tidx); break;
                case 3: s_q_tile (W, a, r, t0, 3, is_w4, two, y, ldy, tidx); break;
                default: s_q_tile (W, a, r, t0, 4, is_w4, two, y, ldy, tidx); break;
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
