/*  kernels_avx2.c: the AVX2 + FMA + F16C kernel family (x86-64 since 2013).

    Built with -mavx2 -mfma -mf16c (core/CMakeLists.txt); called only when
    the CPU has them (kernels_get). Same arithmetic as the scalar family in
    kernels.c: int8 activations per group of 32, integer dot per group, then
    float scale algebra. The int8 x int8 products use vpmaddubsw, which takes
    u8 x s8: w4 nibbles are already unsigned (15 * 127 * 2 cannot saturate),
    w8 uses the sign trick |w| x sign(x, w) (128 * 127 * 2 < 32767).

    With the block layout (kernels.h) int32 lane g is always group g of an
    8-group block, so a block accumulates in int32 and is scaled by one
    convert and one FMA; the last T < 8 groups go in 32-byte chunks scaled
    through a permute. Each weight row is read once for a tile of up to
    four tokens (the unpacked nibbles are reused from registers), so
    verifying k+1 positions costs about one pass over the weights.
*/
#include "kernels.h"

//  Other architectures compile this file to nothing (kernels_get never
//  names these families there).
#if KERNELS_HAVE_X86
#include <immintrin.h>

#define TT 4                    //  tokens per tile

static inline float
s_hsum (__m256 v)
{
    __m128 s = _mm_add_ps (_mm256_castps256_ps128 (v), _mm256_extractf128_ps (v, 1));
    s = _mm_add_ps (s, _mm_movehl_ps (s, s));
    s = _mm_add_ss (s, _mm_movehdup_ps (s));
    return _mm_cvtss_f32 (s);
}

static inline int
s_hsum_i32 (__m256i v)
{
    __m128i s = _mm_add_epi32 (_mm256_castsi256_si128 (v), _mm256_extracti128_si256 (v, 1));
    s = _mm_add_epi32 (s, _mm_shuffle_epi32 (s, 0x4e));
    s = _mm_add_epi32 (s, _mm_shuffle_epi32 (s, 0xb1));
    return _mm_cvtsi128_si32 (s);
}

//  Packs four vectors of 8 int32 (each in [-127, 127]) into 32 int8 in
//  natural order.
static inline void
s_pack_i8 (const __m256i iv[4], int8_t out[32])
{
    const __m256i perm = _mm256_setr_epi32 (0, 4, 1, 5, 2, 6, 3, 7);
    __m256i p01 = _mm256_packs_epi32 (iv[0], iv[1]);
    __m256i p23 = _mm256_packs_epi32 (iv[2], iv[3]);
    _mm256_storeu_si256 ((__m256i *) out,
                         _mm256_permutevar8x32_epi32 (_mm256_packs_epi16 (p01, p23), perm));
}

static void
s_quantize_act (const float *x, int nb, int nbp, int8_t *q, int8_t *q2, float *d, float *s)
{
    const __m256 sign = _mm256_set1_ps (-0.0f);
    const __m256i lo = _mm256_set1_epi32 (-127), hi = _mm256_set1_epi32 (127);
    const __m256 scale2 = _mm256_set1_ps ((float) (1 << KERNELS_ACT2_SHIFT));
    for (int g = 0; g < nb; g++) {
        const float *xg = x + (size_t) g * 32;
        __m256 v[4];
        __m256 amax = _mm256_setzero_ps ();
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps (xg + 8 * k);
            amax = _mm256_max_ps (amax, _mm256_andnot_ps (sign, v[k]));
        }
        __m128 m = _mm_max_ps (_mm256_castps256_ps128 (amax), _mm256_extractf128_ps (amax, 1));
        m = _mm_max_ps (m, _mm_movehl_ps (m, m));
        m = _mm_max_ss (m, _mm_movehdup_ps (m));
        float am = _mm_cvtss_f32 (m);
        float dg = am >= KERNELS_ACT_TINY ? am / 127.0f : 0.0f;
        float id = dg != 0.0f ? 1.0f / dg : 0.0f;
        __m256 vid = _mm256_set1_ps (id);
        __m256i iv[4], rv[4];
        __m256i sum = _mm256_setzero_si256 (), sum2 = _mm256_setzero_si256 ();
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m256 f = _mm256_mul_ps (v[k], vid);
            iv[k] = _mm256_cvtps_epi32 (f);                             //  nearest even
            iv[k] = _mm256_min_epi32 (_mm256_max_epi32 (iv[k], lo), hi);
            sum = _mm256_add_epi32 (sum, iv[k]);
            if (q2) {
                //  Exact residual and power-of-two scale (see the scalar
                //  reference); f also feeds the conversion, so it is never
                //  contracted into an FMA.
                __m256 r = _mm256_mul_ps (_mm256_sub_ps (f, _mm256_cvtepi32_ps (iv[k])), scale2);
                rv[k] = _mm256_min_epi32 (_mm256_max_epi32 (_mm256_cvtps_epi32 (r), lo), hi);
                sum2 = _mm256_add_epi32 (sum2, rv[k]);
            }
        }
        int8_t tmp[32];
        s_pack_i8 (iv, tmp);
        kernels_put_act_group (q, nb, g, tmp);
        if (q2) {
            s_pack_i8 (rv, tmp);
            kernels_put_act_group (q2, nb, g, tmp);
            d[g] = dg / (float) (1 << KERNELS_ACT2_SHIFT);
            s[g] = d[g] * (float) (s_hsum_i32 (sum) * (1 << KERNELS_ACT2_SHIFT) + s_hsum_i32 (sum2));
        }
        else {
            d[g] = dg;
            s[g] = dg * (float) s_hsum_i32 (sum);
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

//  int8 dot of 32 unsigned weights with 32 signed activations, as 8 int32.
static inline __m256i
s_dot_u8s8 (__m256i w, __m256i x)
{
    return _mm256_madd_epi16 (_mm256_maddubs_epi16 (w, x), _mm256_set1_epi16 (1));
}

//  Loads 8 fp16 scales from src[0, n) as floats, zeros past n (n <= 8).
static inline __m256
s_load_fp16x8 (const uint16_t *src, int n)
{
    if (n >= 8)
        return _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) src));
    uint16_t tmp[8] = { 0 };
    memcpy (tmp, src, (size_t) n * sizeof (uint16_t));
    return _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) tmp));
}

//  int8 dot of 32 w8 weights with 32 activations, as 8 int32 lanes:
//  |w| x (x sign(w)) is u8 x s8 and cannot saturate (128 * 127 * 2).
static inline __m256i
s_dot_s8s8 (__m256i w, __m256i x)
{
    return s_dot_u8s8 (_mm256_sign_epi8 (w, w), _mm256_sign_epi8 (x, w));
}

//  One w4 or w8 row (is_w4 constant after inlining) against nt tokens. A
//  block of 8 groups accumulates in int32 (lane g is group g) and is scaled
//  once. The last T < 8 groups are 32 T activation bytes: T chunks of 32
//  whose lane k belongs to group (8 c + k) mod T, scaled through a permute.
static inline __attribute__ ((always_inline)) void
s_q_tile (const qmatrix_t *W, const qact_t *a, int r, int t0, int nt, int is_w4, int two, float *y,
          int ldy, const int32_t tidx[8][8])
{
    const int nb = W->nb, nbp = a->nbp, nfull = nb >> 3, tail = nb & 7;
    const uint8_t *qs = W->qs + (size_t) r * W->qs_stride;
    const uint16_t *dw = W->d + (size_t) r * nb;
    const uint16_t *mw = W->m + (size_t) r * nb;
    const __m256i mask = _mm256_set1_epi8 (0x0f);
    __m256 acc[TT];
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++)
        acc[u] = _mm256_setzero_ps ();
    for (int B = 0; B < nfull; B++) {
        int g0 = B * 8;
        const uint8_t *p = qs + (size_t) B * (is_w4 ? 128 : 256);
        __m256 dv = _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (dw + g0)));
        __m256 mv = _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (mw + g0)));
        __m256i w[8];                   //  w[j] meets activation slice j
        if (is_w4)
            for (int i = 0; i < 4; i++) {
                __m256i v = _mm256_loadu_si256 ((const __m256i *) (p + 32 * i));
                w[i] = _mm256_and_si256 (v, mask);
                w[i + 4] = _mm256_and_si256 (_mm256_srli_epi16 (v, 4), mask);
            }
        else
            for (int j = 0; j < 8; j++)
                w[j] = _mm256_loadu_si256 ((const __m256i *) (p + 32 * j));
        #pragma GCC unroll 4
        for (int u = 0; u < nt; u++) {
            size_t off = (size_t) (t0 + u) * nbp + g0;
            const int8_t *xq = a->q + off * 32;
            __m256i ip = _mm256_setzero_si256 ();
            #pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                __m256i x = _mm256_loadu_si256 ((const __m256i *) (xq + 32 * j));
                ip = _mm256_add_epi32 (ip, is_w4 ? s_dot_u8s8 (w[j], x) : s_dot_s8s8 (w[j], x));
            }
            if (two) {
                const int8_t *xq2 = a->q2 + off * 32;
                __m256i ip2 = _mm256_setzero_si256 ();
                #pragma GCC unroll 8
                for (int j = 0; j < 8; j++) {
                    __m256i x = _mm256_loadu_si256 ((const __m256i *) (xq2 + 32 * j));
                    ip2 = _mm256_add_epi32 (ip2, is_w4 ? s_dot_u8s8 (w[j], x) : s_dot_s8s8 (w[j], x));
                }
                ip = _mm256_add_epi32 (_mm256_slli_epi32 (ip, KERNELS_ACT2_SHIFT), ip2);
            }
            __m256 sc = _mm256_mul_ps (dv, _mm256_loadu_ps (a->d + off));
            acc[u] = _mm256_fmadd_ps (_mm256_cvtepi32_ps (ip), sc, acc[u]);
            acc[u] = _mm256_fmadd_ps (mv, _mm256_loadu_ps (a->s + off), acc[u]);
        }
    }
    if (tail) {
        int g0 = nfull * 8;
        const uint8_t *p = qs + (size_t) nfull * (is_w4 ? 128 : 256);
        __m256 dv = s_load_fp16x8 (dw + g0, tail);
        __m256 mv = s_load_fp16x8 (mw + g0, tail);
        __m256i w[8];
        const __m128i m4 = _mm_set1_epi8 (0x0f);
        for (int c = 0; c < tail; c++) {
            if (is_w4) {
                __m128i h[2];
                for (int e = 0; e < 2; e++) {
                    int k0 = 32 * c + 16 * e;
                    h[e] = k0 < 16 * tail
                         ? _mm_and_si128 (_mm_loadu_si128 ((const __m128i *) (p + k0)), m4)
                         : _mm_and_si128 (_mm_srli_epi16 (_mm_loadu_si128 (
                               (const __m128i *) (p + k0 - 16 * tail)), 4), m4);
                }
                w[c] = _mm256_set_m128i (h[1], h[0]);
            }
            else
                w[c] = _mm256_loadu_si256 ((const __m256i *) (p + 32 * c));
        }
        #pragma GCC unroll 4
        for (int u = 0; u < nt; u++) {
            size_t off = (size_t) (t0 + u) * nbp + g0;
            const int8_t *xq = a->q + off * 32;
            __m256 sc = _mm256_mul_ps (dv, _mm256_loadu_ps (a->d + off));
            for (int c = 0; c < tail; c++) {
                __m256i x = _mm256_loadu_si256 ((const __m256i *) (xq + 32 * c));
                __m256i ip = is_w4 ? s_dot_u8s8 (w[c], x) : s_dot_s8s8 (w[c], x);
                if (two) {
                    __m256i x2 = _mm256_loadu_si256 ((const __m256i *) (a->q2 + off * 32 + 32 * c));
                    __m256i ip2 = is_w4 ? s_dot_u8s8 (w[c], x2) : s_dot_s8s8 (w[c], x2);
                    ip = _mm256_add_epi32 (_mm256_slli_epi32 (ip, KERNELS_ACT2_SHIFT), ip2);
                }
                acc[u] = _mm256_fmadd_ps (_mm256_cvtepi32_ps (ip), _mm256_permutevar8x32_ps (
                             sc, _mm256_loadu_si256 ((const __m256i *) tidx[c])), acc[u]);
            }
            acc[u] = _mm256_fmadd_ps (mv, _mm256_loadu_ps (a->s + off), acc[u]);
        }
    }
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++)
        y[(size_t) (t0 + u) * ldy + r] = s_hsum (acc[u]);
}

//  Lane k of tail chunk c belongs to group (8 c + k) mod T.
static void
s_tail_index (int T, int32_t tidx[8][8])
{
    for (int c = 0; c < 8; c++)
        for (int k = 0; k < 8; k++)
            tidx[c][k] = T ? (8 * c + k) % T : 0;
}

//  All tokens of rows [r0, r1) in tiles of TT, one instantiation per tile
//  size, format and activation levels.
static inline __attribute__ ((always_inline)) void
s_q_rows (const qmatrix_t *W, const qact_t *a, int r0, int r1, int is_w4, int two, float *y, int ldy)
{
    int32_t tidx[8][8];
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

//  f32: tiles of two tokens, four accumulators each to cover FMA latency.
static inline __attribute__ ((always_inline)) void
s_f32_tile (const float *w, const float *x, int cols, int nt, float *y0, float *y1)
{
    __m256 acc[2][4];
    #pragma GCC unroll 4
    for (int u = 0; u < 2; u++)
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            acc[u][k] = _mm256_setzero_ps ();
    for (int c = 0; c < cols; c += 32)
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m256 wv = _mm256_loadu_ps (w + c + 8 * k);
            #pragma GCC unroll 4
            for (int u = 0; u < nt; u++)
                acc[u][k] = _mm256_fmadd_ps (wv, _mm256_loadu_ps (x + (size_t) u * cols + c + 8 * k),
                                             acc[u][k]);
        }
    *y0 = s_hsum (_mm256_add_ps (_mm256_add_ps (acc[0][0], acc[0][1]),
                                 _mm256_add_ps (acc[0][2], acc[0][3])));
    if (nt == 2)
        *y1 = s_hsum (_mm256_add_ps (_mm256_add_ps (acc[1][0], acc[1][1]),
                                     _mm256_add_ps (acc[1][2], acc[1][3])));
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

const kernels_t kernels_avx2 = {
    .name = "avx2",
    .quantize_act = s_quantize_act,
    .matmul_w8 = s_matmul_w8,
    .matmul_w4 = s_matmul_w4,
    .matmul_f32 = s_matmul_f32,
};

#endif
