/*  kernels_avx2.c: the AVX2 + FMA + F16C kernel family (x86-64 since 2013).

    Built with -mavx2 -mfma -mf16c (core/CMakeLists.txt); called only when
    the CPU has them (kernels_get). Same arithmetic as the scalar family in
    kernels.c: int8 activations per group of 32, integer dot per group, then
    float scale algebra. The int8 x int8 products use vpmaddubsw, which takes
    u8 x s8: w4 nibbles are already unsigned (15 * 127 * 2 cannot saturate),
    w8 uses the sign trick |w| x sign(x, w) (128 * 127 * 2 < 32767).

    Each weight row is read once for a tile of up to four tokens (the
    unpacked nibbles are reused from registers), so verifying k+1 positions
    costs about one pass over the weights. Scales are converted per chunk of
    up to 256 groups into small stack buffers: d_w d_x per group and token,
    and the min (w4) or -128-free correction terms as a short dot product.
*/
#include "kernels.h"

//  Other architectures compile this file to nothing (kernels_get never
//  names these families there).
#if KERNELS_HAVE_X86
#include <immintrin.h>

#define CH 256                  //  groups per scale chunk (even)
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

//  fp16 scales [0, n) to floats, zero-filled up to an even count.
static inline void
s_fp16_chunk (const uint16_t *src, int n, float *dst)
{
    int g = 0;
    for (; g + 8 <= n; g += 8)
        _mm256_storeu_ps (dst + g, _mm256_cvtph_ps (_mm_loadu_si128 ((const __m128i *) (src + g))));
    for (; g < n; g++)
        dst[g] = _cvtsh_ss (src[g]);
    if (n & 1)
        dst[n] = 0.0f;
}

//  acc + a[g] * b[g] lane-wise for g < n (summed with acc at the end); the
//  tail goes into lane 0.
static inline __m256
s_dot_acc (const float *a, const float *b, int n, __m256 acc)
{
    int g = 0;
    for (; g + 8 <= n; g += 8)
        acc = _mm256_fmadd_ps (_mm256_loadu_ps (a + g), _mm256_loadu_ps (b + g), acc);
    float s = 0.0f;
    for (; g < n; g++)
        s += a[g] * b[g];
    return _mm256_add_ps (acc, _mm256_setr_ps (s, 0, 0, 0, 0, 0, 0, 0));
}

static void
s_quantize_act (const float *x, int nb, int nbp, int8_t *q, float *d, float *s)
{
    const __m256 sign = _mm256_set1_ps (-0.0f);
    const __m256i lo = _mm256_set1_epi32 (-127), hi = _mm256_set1_epi32 (127);
    const __m256i perm = _mm256_setr_epi32 (0, 4, 1, 5, 2, 6, 3, 7);
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
        __m256i iv[4];
        __m256i sum = _mm256_setzero_si256 ();
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            iv[k] = _mm256_cvtps_epi32 (_mm256_mul_ps (v[k], vid));   //  nearest even
            iv[k] = _mm256_min_epi32 (_mm256_max_epi32 (iv[k], lo), hi);
            sum = _mm256_add_epi32 (sum, iv[k]);
        }
        __m256i p01 = _mm256_packs_epi32 (iv[0], iv[1]);
        __m256i p23 = _mm256_packs_epi32 (iv[2], iv[3]);
        __m256i p = _mm256_permutevar8x32_epi32 (_mm256_packs_epi16 (p01, p23), perm);
        _mm256_storeu_si256 ((__m256i *) (q + (size_t) g * 32), p);
        d[g] = dg;
        s[g] = dg * (float) s_hsum_i32 (sum);
    }
    for (int g = nb; g < nbp; g++) {
        _mm256_storeu_si256 ((__m256i *) (q + (size_t) g * 32), _mm256_setzero_si256 ());
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

//  One w4 row against nt tokens (nt is a constant after inlining).
static inline __attribute__ ((always_inline)) void
s_w4_tile (const qmatrix_t *W, const qact_t *a, int r, int t0, int nt, float *y, int ldy)
{
    const int nb = W->nb, nbp = a->nbp;
    const uint8_t *qs = W->qs + (size_t) r * W->qs_stride;
    const uint16_t *dw = W->d + (size_t) r * nb;
    const uint16_t *mw = W->m + (size_t) r * nb;
    const __m256i mask = _mm256_set1_epi8 (0x0f);
    __m256 acc[TT];
    float dwf[CH + 1], mwf[CH + 1], sc[TT][CH + 1];
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++) {
        acc[u] = _mm256_setzero_ps ();
    }
    for (int g0 = 0; g0 < nb; g0 += CH) {
        int gn = nb - g0 < CH ? nb - g0 : CH;
        s_fp16_chunk (dw + g0, gn, dwf);
        s_fp16_chunk (mw + g0, gn, mwf);
        #pragma GCC unroll 4
        for (int u = 0; u < nt; u++) {
            const float *dx = a->d + (size_t) (t0 + u) * nbp + g0;
            for (int g = 0; g < gn + (gn & 1); g++)
                sc[u][g] = dwf[g] * dx[g];
            acc[u] = s_dot_acc (mwf, a->s + (size_t) (t0 + u) * nbp + g0, gn, acc[u]);
        }
        const uint8_t *qp = qs + (size_t) g0 * 16;
        for (int g = 0; g < gn; g += 2) {
            __m256i v = _mm256_loadu_si256 ((const __m256i *) (qp + (size_t) g * 16));
            __m256i wa = _mm256_and_si256 (v, mask);
            __m256i wb = _mm256_and_si256 (_mm256_srli_epi16 (v, 4), mask);
            #pragma GCC unroll 4
            for (int u = 0; u < nt; u++) {
                const int8_t *xq = a->q + ((size_t) (t0 + u) * nbp + g0 + g) * 32;
                __m256i xa = _mm256_loadu_si256 ((const __m256i *) xq);
                __m256i xb = _mm256_loadu_si256 ((const __m256i *) (xq + 32));
                __m256 fa = _mm256_cvtepi32_ps (s_dot_u8s8 (wa, xa));
                __m256 fb = _mm256_cvtepi32_ps (s_dot_u8s8 (wb, xb));
                acc[u] = _mm256_fmadd_ps (fa, _mm256_broadcast_ss (&sc[u][g]), acc[u]);
                acc[u] = _mm256_fmadd_ps (fb, _mm256_broadcast_ss (&sc[u][g + 1]), acc[u]);
            }
        }
    }
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++)
        y[(size_t) (t0 + u) * ldy + r] = s_hsum (acc[u]);
}

static void
s_matmul_w4 (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy)
{
    for (int r = r0; r < r1; r++)
        for (int t0 = 0; t0 < a->n_tokens; t0 += TT) {
            switch (a->n_tokens - t0) {
                case 1: s_w4_tile (W, a, r, t0, 1, y, ldy); break;
                case 2: s_w4_tile (W, a, r, t0, 2, y, ldy); break;
                case 3: s_w4_tile (W, a, r, t0, 3, y, ldy); break;
                default: s_w4_tile (W, a, r, t0, 4, y, ldy); break;
            }
        }
}

static inline __attribute__ ((always_inline)) void
s_w8_tile (const qmatrix_t *W, const qact_t *a, int r, int t0, int nt, float *y, int ldy)
{
    const int nb = W->nb, nbp = a->nbp;
    const int8_t *qs = (const int8_t *) (W->qs + (size_t) r * W->qs_stride);
    const uint16_t *dw = W->d + (size_t) r * nb;
    __m256 acc[TT];
    float dwf[CH + 1], sc[TT][CH + 1];
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++)
        acc[u] = _mm256_setzero_ps ();
    for (int g0 = 0; g0 < nb; g0 += CH) {
        int gn = nb - g0 < CH ? nb - g0 : CH;
        s_fp16_chunk (dw + g0, gn, dwf);
        #pragma GCC unroll 4
        for (int u = 0; u < nt; u++) {
            const float *dx = a->d + (size_t) (t0 + u) * nbp + g0;
            for (int g = 0; g < gn; g++)
                sc[u][g] = dwf[g] * dx[g];
        }
        for (int g = 0; g < gn; g++) {
            __m256i w = _mm256_loadu_si256 ((const __m256i *) (qs + (size_t) (g0 + g) * 32));
            __m256i aw = _mm256_sign_epi8 (w, w);          //  |w|, as u8 (128 stays 128)
            #pragma GCC unroll 4
            for (int u = 0; u < nt; u++) {
                const int8_t *xq = a->q + ((size_t) (t0 + u) * nbp + g0 + g) * 32;
                __m256i x = _mm256_loadu_si256 ((const __m256i *) xq);
                __m256i sx = _mm256_sign_epi8 (x, w);       //  x * sign(w)
                __m256 f = _mm256_cvtepi32_ps (s_dot_u8s8 (aw, sx));
                acc[u] = _mm256_fmadd_ps (f, _mm256_broadcast_ss (&sc[u][g]), acc[u]);
            }
        }
    }
    #pragma GCC unroll 4
    for (int u = 0; u < nt; u++)
        y[(size_t) (t0 + u) * ldy + r] = s_hsum (acc[u]);
}

static void
s_matmul_w8 (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy)
{
    for (int r = r0; r < r1; r++)
        for (int t0 = 0; t0 < a->n_tokens; t0 += TT) {
            switch (a->n_tokens - t0) {
                case 1: s_w8_tile (W, a, r, t0, 1, y, ldy); break;
                case 2: s_w8_tile (W, a, r, t0, 2, y, ldy); break;
                case 3: s_w8_tile (W, a, r, t0, 3, y, ldy); break;
                default: s_w8_tile (W, a, r, t0, 4, y, ldy); break;
            }
        }
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
