/*  ggml_types.c: block layouts, (de)quantizers and the per-type table.

    splitmesh reads llama.cpp's GGUF files and writes its own (tiny test
    models, the quantize tool), so the block formats here must match ggml's
    byte for byte and the scalar dequantizers must give ggml's results bit
    for bit: tests/test_ggml_types.c checks them against golden files made by
    the Python `gguf` package (tests/golden/ggml/make_golden.py).

    Every function reads and writes blocks through memcpy into a local
    struct, so tensor data may sit at any address (a GGUF file may use an
    alignment of 1). These are the reference paths; the fast kernels live
    elsewhere and are tested against these.

    Floating-point expressions are written in ggml's order (d1 * q - m1, not
    fused), and this file is compiled without FMA, so rounding matches.
*/
#include "ggml_types.h"
#include <assert.h>
#include <ctype.h>
#include <float.h>
#include <math.h>
#include <string.h>

#define QK4_0   32
#define QK4_1   32
#define QK5_0   32
#define QK5_1   32
#define QK8_0   32
#define QW4G128 128
#define QK_K    256
#define K_SCALE_SIZE 12

//  ggml's block layouts. fp16 values are stored as raw uint16 bits.
typedef struct {
    uint16_t d;                 //  scale (fp16)
    uint8_t qs[QK4_0 / 2];      //  nibbles: low = element j, high = element j + 16
} block_q4_0;
static_assert (sizeof (block_q4_0) == 18, "block_q4_0 must be 18 bytes");

typedef struct {
    uint16_t d;                 //  scale (fp16)
    uint16_t m;                 //  minimum (fp16)
    uint8_t qs[QK4_1 / 2];      //  nibbles as in q4_0
} block_q4_1;
static_assert (sizeof (block_q4_1) == 20, "block_q4_1 must be 20 bytes");

typedef struct {
    uint16_t d;                 //  scale (fp16)
    uint8_t qh[4];              //  bit 4 of each quant: bit j = element j (LE uint32)
    uint8_t qs[QK5_0 / 2];      //  low nibbles as in q4_0
} block_q5_0;
static_assert (sizeof (block_q5_0) == 22, "block_q5_0 must be 22 bytes");

typedef struct {
    uint16_t d;                 //  scale (fp16)
    uint16_t m;                 //  minimum (fp16)
    uint8_t qh[4];              //  bit 4 of each quant, as in q5_0
    uint8_t qs[QK5_1 / 2];      //  low nibbles as in q4_0
} block_q5_1;
static_assert (sizeof (block_q5_1) == 24, "block_q5_1 must be 24 bytes");

typedef struct {
    uint16_t d;                 //  scale (fp16)
    uint16_t m;                 //  minimum (fp16)
    uint8_t qs[QW4G128 / 2];    //  nibbles: low = element j, high = element j + 64
} block_w4g128;
static_assert (sizeof (block_w4g128) == 68, "block_w4g128 must be 68 bytes");

typedef struct {
    uint16_t d;                 //  scale (fp16)
    int8_t qs[QK8_0];           //  signed quants
} block_q8_0;
static_assert (sizeof (block_q8_0) == 34, "block_q8_0 must be 34 bytes");

typedef struct {
    uint16_t d;                 //  super-block scale for the 6-bit scales (fp16)
    uint16_t dmin;              //  super-block scale for the 6-bit mins (fp16)
    uint8_t scales[K_SCALE_SIZE]; //  8 scales + 8 mins, 6 bits each, packed
    uint8_t qs[QK_K / 2];       //  4-bit quants: per 64 elements, 32 bytes low then high nibbles
} block_q4_K;
static_assert (sizeof (block_q4_K) == 144, "block_q4_K must be 144 bytes");

typedef struct {
    uint8_t ql[QK_K / 2];       //  low 4 bits of the 6-bit quants
    uint8_t qh[QK_K / 4];       //  high 2 bits
    int8_t scales[QK_K / 16];   //  one 8-bit scale per 16 elements
    uint16_t d;                 //  super-block scale (fp16)
} block_q6_K;
static_assert (sizeof (block_q6_K) == 210, "block_q6_K must be 210 bytes");


//  --------------------------------------------------------------------------
//  Scalar conversions

static inline uint32_t
s_f32_bits (float f)
{
    uint32_t u;
    memcpy (&u, &f, sizeof u);
    return u;
}

static inline float
s_bits_f32 (uint32_t u)
{
    float f;
    memcpy (&f, &u, sizeof f);
    return f;
}

float
ggml_fp16_to_fp32 (uint16_t h)
{
    uint32_t sign = (uint32_t) (h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f)                //  inf or NaN: keep the payload
        return s_bits_f32 (sign | 0x7f800000 | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return s_bits_f32 (sign);
        //  Subnormal: normalise the mantissa into an fp32 normal.
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        man &= 0x3ff;
        return s_bits_f32 (sign | ((uint32_t) (127 - 15 - e) << 23) | (man << 13));
    }
    return s_bits_f32 (sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t
ggml_fp32_to_fp16 (float f)
{
    uint32_t x = s_f32_bits (f);
    uint16_t sign = (uint16_t) ((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffff;

    if (ax > 0x7f800000)            //  NaN: quiet, keep the top payload bits
        return sign | 0x7e00 | (uint16_t) ((ax >> 13) & 0x3ff);
    if (ax >= 0x477ff000)           //  >= 65520 rounds to inf (and inf stays)
        return sign | 0x7c00;
    if (ax >= 0x38800000) {         //  a half normal: rebias, round to nearest even
        uint32_t r = ax - ((uint32_t) 112 << 23);
        r += 0x0fff + ((r >> 13) & 1);
        return sign | (uint16_t) (r >> 13);
    }
    if (ax <= 0x33000000)           //  <= 2^-25 rounds (ties to even) to zero
        return sign;
    //  A half subnormal: value = m * 2^(e - 150), unit 2^-24.
    uint32_t e = ax >> 23;
    uint32_t m = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;       //  14..24
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    return sign | (uint16_t) q;
}

float
ggml_bf16_to_fp32 (uint16_t h)
{
    return s_bits_f32 ((uint32_t) h << 16);
}

uint16_t
ggml_fp32_to_bf16 (float f)
{
    uint32_t u = s_f32_bits (f);
    if ((u & 0x7fffffff) > 0x7f800000)      //  NaN: force quiet
        return (uint16_t) ((u >> 16) | 64);
    return (uint16_t) ((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

//  Unaligned little-endian fp16 read/write (blocks are copied whole, but
//  the plain F16/BF16 rows are read element by element).
static inline uint16_t
s_load_u16 (const uint8_t *p)
{
    uint16_t v;
    memcpy (&v, p, sizeof v);
    return v;
}

static inline void
s_store_u16 (uint8_t *p, uint16_t v)
{
    memcpy (p, &v, sizeof v);
}


//  --------------------------------------------------------------------------
//  Plain floats

static void
s_f32_to_float (const void *src, float *dst, int64_t n)
{
    memcpy (dst, src, (size_t) n * sizeof (float));
}

static void
s_f32_from_float (const float *src, void *dst, int64_t n)
{
    memcpy (dst, src, (size_t) n * sizeof (float));
}

static void
s_f16_to_float (const void *src, float *dst, int64_t n)
{
    const uint8_t *p = (const uint8_t *) src;
    for (int64_t i = 0; i < n; i++)
        dst [i] = ggml_fp16_to_fp32 (s_load_u16 (p + 2 * i));
}

static void
s_f16_from_float (const float *src, void *dst, int64_t n)
{
    uint8_t *p = (uint8_t *) dst;
    for (int64_t i = 0; i < n; i++)
        s_store_u16 (p + 2 * i, ggml_fp32_to_fp16 (src [i]));
}

static void
s_bf16_to_float (const void *src, float *dst, int64_t n)
{
    const uint8_t *p = (const uint8_t *) src;
    for (int64_t i = 0; i < n; i++)
        dst [i] = ggml_bf16_to_fp32 (s_load_u16 (p + 2 * i));
}

static void
s_bf16_from_float (const float *src, void *dst, int64_t n)
{
    uint8_t *p = (uint8_t *) dst;
    for (int64_t i = 0; i < n; i++)
        s_store_u16 (p + 2 * i, ggml_fp32_to_bf16 (src [i]));
}


//  --------------------------------------------------------------------------
//  Q4_0: x = d * (q - 8)

static void
s_q4_0_to_float (const void *src, float *dst, int64_t n)
{
    const uint8_t *p = (const uint8_t *) src;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        block_q4_0 b;
        memcpy (&b, p + i * sizeof b, sizeof b);
        const float d = ggml_fp16_to_fp32 (b.d);
        float *y = dst + i * QK4_0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            const int x0 = (b.qs [j] & 0x0f) - 8;
            const int x1 = (b.qs [j] >> 4) - 8;
            y [j] = x0 * d;
            y [j + QK4_0 / 2] = x1 * d;
        }
    }
}

static void
s_q4_0_from_float (const float *src, void *dst, int64_t n)
{
    uint8_t *p = (uint8_t *) dst;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        const float *x = src + i * QK4_0;
        //  The element of largest magnitude (first one on ties) maps to -8.
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; j++)
            if (amax < fabsf (x [j])) {
                amax = fabsf (x [j]);
                max = x [j];
            }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        block_q4_0 b;
        b.d = ggml_fp32_to_fp16 (d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            const float x0 = x [j] * id;
            const float x1 = x [j + QK4_0 / 2] * id;
            const int q0 = (int8_t) (x0 + 8.5f);
            const int q1 = (int8_t) (x1 + 8.5f);
            b.qs [j] = (uint8_t) ((q0 < 15 ? q0 : 15) | ((q1 < 15 ? q1 : 15) << 4));
        }
        memcpy (p + i * sizeof b, &b, sizeof b);
    }
}


//  --------------------------------------------------------------------------
//  Q4_1: x = d * q + m

static void
s_q4_1_to_float (const void *src, float *dst, int64_t n)
{
    const uint8_t *p = (const uint8_t *) src;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        block_q4_1 b;
        memcpy (&b, p + i * sizeof b, sizeof b);
        const float d = ggml_fp16_to_fp32 (b.d);
        const float m = ggml_fp16_to_fp32 (b.m);
        float *y = dst + i * QK4_1;
        for (int j = 0; j < QK4_1 / 2; j++) {
            const int x0 = b.qs [j] & 0x0f;
            const int x1 = b.qs [j] >> 4;
            y [j] = x0 * d + m;
            y [j + QK4_1 / 2] = x1 * d + m;
        }
    }
}

static void
s_q4_1_from_float (const float *src, void *dst, int64_t n)
{
    uint8_t *p = (uint8_t *) dst;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        const float *x = src + i * QK4_1;
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK4_1; j++) {
            if (x [j] < min) min = x [j];
            if (x [j] > max) max = x [j];
        }
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        block_q4_1 b;
        b.d = ggml_fp32_to_fp16 (d);
        b.m = ggml_fp32_to_fp16 (min);
        for (int j = 0; j < QK4_1 / 2; j++) {
            const float x0 = (x [j] - min) * id;
            const float x1 = (x [j + QK4_1 / 2] - min) * id;
            const int q0 = (int8_t) (x0 + 0.5f);
            const int q1 = (int8_t) (x1 + 0.5f);
            b.qs [j] = (uint8_t) ((q0 < 15 ? q0 : 15) | ((q1 < 15 ? q1 : 15) << 4));
        }
        memcpy (p + i * sizeof b, &b, sizeof b);
    }
}


//  --------------------------------------------------------------------------
//  Q5_0: x = d * (q - 16), q in 0..31; Q5_1: x = d * q + m

static void
s_q5_0_to_float (const void *src, float *dst, int64_t n)
{
    const uint8_t *p = (const uint8_t *) src;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        block_q5_0 b;
        memcpy (&b, p + i * sizeof b, sizeof b);
        const float d = ggml_fp16_to_fp32 (b.d);
        uint32_t qh;
        memcpy (&qh, b.qh, sizeof qh);
        float *y = dst + i * QK5_0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            const uint8_t xh_0 = (uint8_t) (((qh >> j) << 4) & 0x10);
            const uint8_t xh_1 = (uint8_t) ((qh >> (j + 12)) & 0x10);
            const int32_t x0 = ((b.qs [j] & 0x0f) | xh_0) - 16;
            const int32_t x1 = ((b.qs [j] >> 4) | xh_1) - 16;
            y [j] = x0 * d;
            y [j + QK5_0 / 2] = x1 * d;
        }
    }
}

static void
s_q5_0_from_float (const float *src, void *dst, int64_t n)
{
    uint8_t *p = (uint8_t *) dst;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        const float *x = src + i * QK5_0;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK5_0; j++)
            if (amax < fabsf (x [j])) {
                amax = fabsf (x [j]);
                max = x [j];
            }
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        block_q5_0 b;
        b.d = ggml_fp32_to_fp16 (d);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            const float x0 = x [j] * id;
            const float x1 = x [j + QK5_0 / 2] * id;
            const int8_t t0 = (int8_t) (x0 + 16.5f);
            const int8_t t1 = (int8_t) (x1 + 16.5f);
            const uint8_t xi0 = (uint8_t) (t0 < 31 ? t0 : 31);
            const uint8_t xi1 = (uint8_t) (t1 < 31 ? t1 : 31);
            b.qs [j] = (uint8_t) ((xi0 & 0x0f) | ((xi1 & 0x0f) << 4));
            qh |= ((uint32_t) (xi0 & 0x10u) >> 4) << j;
            qh |= ((uint32_t) (xi1 & 0x10u) >> 4) << (j + QK5_0 / 2);
        }
        memcpy (b.qh, &qh, sizeof qh);
        memcpy (p + i * sizeof b, &b, sizeof b);
    }
}

static void
s_q5_1_to_float (const void *src, float *dst, int64_t n)
{
    const uint8_t *p = (const uint8_t *) src;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        block_q5_1 b;
        memcpy (&b, p + i * sizeof b, sizeof b);
        const float d = ggml_fp16_to_fp32 (b.d);
        const float m = ggml_fp16_to_fp32 (b.m);
        uint32_t qh;
        memcpy (&qh, b.qh, sizeof qh);
        float *y = dst + i * QK5_1;
        for (int j = 0; j < QK5_1 / 2; j++) {
            const uint8_t xh_0 = (uint8_t) (((qh >> j) << 4) & 0x10);
            const uint8_t xh_1 = (uint8_t) ((qh >> (j + 12)) & 0x10);
            const int x0 = (b.qs [j] & 0x0f) | xh_0;
            const int x1 = (b.qs [j] >> 4) | xh_1;
            y [j] = x0 * d + m;
            y [j + QK5_1 / 2] = x1 * d + m;
        }
    }
}

static void
s_q5_1_from_float (const float *src, void *dst, int64_t n)
{
    uint8_t *p = (uint8_t *) dst;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        const float *x = src + i * QK5_1;
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK5_1; j++) {
            if (x [j] < min) min = x [j];
            if (x [j] > max) max = x [j];
        }
        const float d = (max - min) / ((1 << 5) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        block_q5_1 b;
        b.d = ggml_fp32_to_fp16 (d);
        b.m = ggml_fp32_to_fp16 (min);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            const float x0 = (x [j] - min) * id;
            const float x1 = (x [j + QK5_1 / 2] - min) * id;
            const uint8_t xi0 = (uint8_t) (x0 + 0.5f);
            const uint8_t xi1 = (uint8_t) (x1 + 0.5f);
            b.qs [j] = (uint8_t) ((xi0 & 0x0f) | ((xi1 & 0x0f) << 4));
            qh |= ((uint32_t) (xi0 & 0x10u) >> 4) << j;
            qh |= ((uint32_t) (xi1 & 0x10u) >> 4) << (j + QK5_1 / 2);
        }
        memcpy (b.qh, &qh, sizeof qh);
        memcpy (p + i * sizeof b, &b, sizeof b);
    }
}


//  --------------------------------------------------------------------------
//  W4G128 (splitmesh's own): x = d * q + m over groups of 128

static void
s_w4g128_to_float (const void *src, float *dst, int64_t n)
{
    const uint8_t *p = (const uint8_t *) src;
    for (int64_t i = 0; i < n / QW4G128; i++) {
        block_w4g128 b;
        memcpy (&b, p + i * sizeof b, sizeof b);
        const float d = ggml_fp16_to_fp32 (b.d);
        const float m = ggml_fp16_to_fp32 (b.m);
        float *y = dst + i * QW4G128;
        for (int j = 0; j < QW4G128 / 2; j++) {
            y [j] = (b.qs [j] & 0x0f) * d + m;
            y [j + QW4G128 / 2] = (b.qs [j] >> 4) * d + m;
        }
    }
}

//  Squared error of x against d * q + m with q rounded into 0..15, against
//  the fp16-rounded d and m that are stored; codes into q when given.
static float
s_w4g128_err (const float *x, float d, float m, uint8_t *q)
{
    const float d16 = ggml_fp16_to_fp32 (ggml_fp32_to_fp16 (d));
    const float m16 = ggml_fp16_to_fp32 (ggml_fp32_to_fp16 (m));
    const float id = d16 ? 1.0f / d16 : 0.0f;
    float err = 0;
    for (int j = 0; j < QW4G128; j++) {
        int c = (int) lrintf ((x [j] - m16) * id);
        c = c < 0 ? 0 : c > 15 ? 15 : c;
        const float diff = c * d16 + m16 - x [j];
        err += diff * diff;
        if (q)
            q [j] = (uint8_t) c;
    }
    return err;
}

//  A group of 128 has outliers more often than one of 32, so the range is
//  not simply min..max: start there, then alternate coding with a least-
//  squares refit of (d, m) for the codes, keeping the best squared error.
static void
s_w4g128_from_float (const float *src, void *dst, int64_t n)
{
    uint8_t *p = (uint8_t *) dst;
    for (int64_t i = 0; i < n / QW4G128; i++) {
        const float *x = src + i * QW4G128;
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QW4G128; j++) {
            if (x [j] < min) min = x [j];
            if (x [j] > max) max = x [j];
        }
        float d = (max - min) / 15, m = min;
        float best_d = d, best_m = m;
        uint8_t q [QW4G128];
        float best_err = s_w4g128_err (x, d, m, q);
        for (int iter = 0; iter < 6 && d > 0; iter++) {
            double sq = 0, sq2 = 0, sx = 0, sxq = 0;
            for (int j = 0; j < QW4G128; j++) {
                sq += q [j];
                sq2 += (double) q [j] * q [j];
                sx += x [j];
                sxq += (double) x [j] * q [j];
            }
            const double det = QW4G128 * sq2 - sq * sq;
            if (det <= 0)
                break;
            const double nd = (QW4G128 * sxq - sx * sq) / det;
            const double nm = (sq2 * sx - sq * sxq) / det;
            if (!(nd > 0) || !isfinite (nd) || !isfinite (nm))
                break;
            d = (float) nd;
            m = (float) nm;
            const float err = s_w4g128_err (x, d, m, q);
            if (!(err < best_err))
                break;
            best_err = err;
            best_d = d;
            best_m = m;
        }
        block_w4g128 b;
        b.d = ggml_fp32_to_fp16 (best_d);
        b.m = ggml_fp32_to_fp16 (best_m);
        s_w4g128_err (x, best_d, best_m, q);
        for (int j = 0; j < QW4G128 / 2; j++)
            b.qs [j] = (uint8_t) (q [j] | (q [j + QW4G128 / 2] << 4));
        memcpy (p + i * sizeof b, &b, sizeof b);
    }
}

static inline void s_q4_K_scale_min (int j, const uint8_t *q, uint8_t *sc, uint8_t *mn);

int
ggml_q4_K_to_q4_1_exact (const void *src, void *dst, int64_t n)
{
    if (n < 0 || n % QK_K)
        return -1;
    const uint8_t *p = (const uint8_t *) src;
    uint8_t *o = (uint8_t *) dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        block_q4_K b;
        memcpy (&b, p + i * sizeof b, sizeof b);
        const float d = ggml_fp16_to_fp32 (b.d);
        const float dmin = ggml_fp16_to_fp32 (b.dmin);
        for (int s = 0; s < QK_K / 32; s++) {
            uint8_t sc, mn;
            s_q4_K_scale_min (s, b.scales, &sc, &mn);
            //  q4_K: x = d1 * q - m1; q4_1: x = q * d' + m' with d' = d1 and
            //  m' = -m1: the same floats when both fit fp16 exactly.
            const float d1 = d * sc, m1 = dmin * mn;
            block_q4_1 c;
            c.d = ggml_fp32_to_fp16 (d1);
            c.m = ggml_fp32_to_fp16 (-m1);
            if (ggml_fp16_to_fp32 (c.d) != d1 || ggml_fp16_to_fp32 (c.m) != -m1 || !isfinite (d1)
            ||  !isfinite (m1))
                return -1;
            //  Sub-block s: 64-element chunk s / 2, low (even s) or high nibbles.
            const uint8_t *q = b.qs + 32 * (s / 2);
            uint8_t codes [32];
            for (int l = 0; l < 32; l++)
                codes [l] = s % 2 ? q [l] >> 4 : q [l] & 0x0f;
            for (int j = 0; j < QK4_1 / 2; j++)
                c.qs [j] = (uint8_t) (codes [j] | (codes [j + QK4_1 / 2] << 4));
            memcpy (o + (i * (QK_K / QK4_1) + s) * sizeof c, &c, sizeof c);
        }
    }
    return 0;
}

int
ggml_w4g128_to_q4_1 (const void *src, void *dst, int64_t n)
{
    if (n < 0 || n % QW4G128)
        return -1;
    const uint8_t *p = (const uint8_t *) src;
    uint8_t *o = (uint8_t *) dst;
    for (int64_t i = 0; i < n / QW4G128; i++) {
        block_w4g128 b;
        memcpy (&b, p + i * sizeof b, sizeof b);
        uint8_t q [QW4G128];
        for (int j = 0; j < QW4G128 / 2; j++) {
            q [j] = b.qs [j] & 0x0f;
            q [j + QW4G128 / 2] = b.qs [j] >> 4;
        }
        for (int s = 0; s < QW4G128 / QK4_1; s++) {
            block_q4_1 c;
            c.d = b.d;
            c.m = b.m;
            const uint8_t *qs = q + s * QK4_1;
            for (int j = 0; j < QK4_1 / 2; j++)
                c.qs [j] = (uint8_t) (qs [j] | (qs [j + QK4_1 / 2] << 4));
            memcpy (o + (i * (QW4G128 / QK4_1) + s) * sizeof c, &c, sizeof c);
        }
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Q8_0: x = d * q

static void
s_q8_0_to_float (const void *src, float *dst, int64_t n)
{
    const uint8_t *p = (const uint8_t *) src;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        block_q8_0 b;
        memcpy (&b, p + i * sizeof b, sizeof b);
        const float d = ggml_fp16_to_fp32 (b.d);
        float *y = dst + i * QK8_0;
        for (int j = 0; j < QK8_0; j++)
            y [j] = b.qs [j] * d;
    }
}

static void
s_q8_0_from_float (const float *src, void *dst, int64_t n)
{
    uint8_t *p = (uint8_t *) dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *x = src + i * QK8_0;
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++)
            amax = fmaxf (amax, fabsf (x [j]));
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        block_q8_0 b;
        b.d = ggml_fp32_to_fp16 (d);
        for (int j = 0; j < QK8_0; j++)
            b.qs [j] = (int8_t) roundf (x [j] * id);
        memcpy (p + i * sizeof b, &b, sizeof b);
    }
}


//  --------------------------------------------------------------------------
//  Q4_K: 8 sub-blocks of 32; x = d * sc[s] * q - dmin * mn[s]

//  Unpacks sub-block j's 6-bit scale and min from the 12 packed bytes:
//  bytes 0-3 hold scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7,
//  bytes 4-7 the same for the mins, bytes 8-11 the low 4 bits of scale and
//  min 4-7.
static inline void
s_q4_K_scale_min (int j, const uint8_t *q, uint8_t *sc, uint8_t *mn)
{
    if (j < 4) {
        *sc = q [j] & 63;
        *mn = q [j + 4] & 63;
    }
    else {
        *sc = (uint8_t) ((q [j + 4] & 0x0f) | ((q [j - 4] >> 6) << 4));
        *mn = (uint8_t) ((q [j + 4] >> 4) | ((q [j] >> 6) << 4));
    }
}

static void
s_q4_K_to_float (const void *src, float *dst, int64_t n)
{
    const uint8_t *p = (const uint8_t *) src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        block_q4_K b;
        memcpy (&b, p + i * sizeof b, sizeof b);
        const float d = ggml_fp16_to_fp32 (b.d);
        const float dmin = ggml_fp16_to_fp32 (b.dmin);
        const uint8_t *q = b.qs;
        float *y = dst + i * QK_K;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
            uint8_t sc, mn;
            s_q4_K_scale_min (is, b.scales, &sc, &mn);
            const float d1 = d * sc, m1 = dmin * mn;
            s_q4_K_scale_min (is + 1, b.scales, &sc, &mn);
            const float d2 = d * sc, m2 = dmin * mn;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (q [l] & 0x0f) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (q [l] >> 4) - m2;
        }
    }
}

static inline int
s_clamp (int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

//  Fits x ~= scale * q - offset with q in 0..15 for one 32-element
//  sub-block: start from the min/max range, then alternate a least-squares
//  refit of (scale, offset) for the current codes with re-coding, keeping
//  the best squared error. offset >= 0 (the range always includes 0 from
//  below), as the format stores it unsigned.
static void
s_fit_q4_sub (const float *x, float *scale_out, float *offset_out)
{
    float min = x [0], max = x [0];
    for (int l = 1; l < 32; l++) {
        if (x [l] < min) min = x [l];
        if (x [l] > max) max = x [l];
    }
    if (min > 0)
        min = 0;
    if (max <= min) {
        *scale_out = 0;
        *offset_out = -min;
        return;
    }
    float scale = (max - min) / 15, offset = -min;
    float best_err = FLT_MAX, best_scale = scale, best_offset = offset;
    for (int iter = 0; iter < 4 && scale > 0; iter++) {
        float sum_q = 0, sum_q2 = 0, sum_x = 0, sum_xq = 0, err = 0;
        for (int l = 0; l < 32; l++) {
            int q = s_clamp ((int) lrintf ((x [l] + offset) / scale), 0, 15);
            float diff = scale * q - offset - x [l];
            err += diff * diff;
            sum_q += q;
            sum_q2 += (float) q * q;
            sum_x += x [l];
            sum_xq += x [l] * q;
        }
        if (err < best_err) {
            best_err = err;
            best_scale = scale;
            best_offset = offset;
        }
        //  Least squares for x = s*q - o over the current codes.
        float det = 32 * sum_q2 - sum_q * sum_q;
        if (det <= 0)
            break;
        float s = (32 * sum_xq - sum_x * sum_q) / det;
        float o = (sum_q * sum_xq - sum_q2 * sum_x) / det;
        if (o < 0) {                //  offset must stay >= 0: fit scale alone
            o = 0;
            s = sum_q2 > 0 ? sum_xq / sum_q2 : 0;
        }
        if (!(s > 0))
            break;
        scale = s;
        offset = o;
    }
    *scale_out = best_scale;
    *offset_out = best_offset;
}

static void
s_q4_K_from_float (const float *src, void *dst, int64_t n)
{
    uint8_t *p = (uint8_t *) dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        float scales [8], offsets [8], max_scale = 0, max_offset = 0;
        for (int s = 0; s < 8; s++) {
            s_fit_q4_sub (x + 32 * s, &scales [s], &offsets [s]);
            if (scales [s] > max_scale) max_scale = scales [s];
            if (offsets [s] > max_offset) max_offset = offsets [s];
        }
        //  Scales and offsets become 6-bit multiples of d and dmin. For
        //  each sub-block try the codes around the rounded ones against d
        //  and dmin as stored, and keep the pair with the least squared
        //  error: plain rounding can round a scale down and saturate.
        block_q4_K b;
        memset (&b, 0, sizeof b);
        b.d = ggml_fp32_to_fp16 (max_scale / 63.f);
        b.dmin = ggml_fp32_to_fp16 (max_offset / 63.f);
        const float d = ggml_fp16_to_fp32 (b.d);
        const float dmin = ggml_fp16_to_fp32 (b.dmin);
        uint8_t codes [QK_K];
        for (int s = 0; s < 8; s++) {
            const float *xs = x + 32 * s;
            const int rs = d > 0 ? s_clamp ((int) lrintf (scales [s] / d), 0, 63) : 0;
            const int rm = dmin > 0 ? s_clamp ((int) lrintf (offsets [s] / dmin), 0, 63) : 0;
            float best_err = INFINITY;
            int best_s = rs, best_m = rm;
            for (int cs = rs - 1; cs <= rs + 1; cs++)
                for (int cm = rm - 1; cm <= rm + 1; cm++) {
                    if (cs < 0 || cs > 63 || cm < 0 || cm > 63)
                        continue;
                    const float ds = d * cs, ms = dmin * cm;
                    float err = 0;
                    for (int l = 0; l < 32; l++) {
                        int q = ds > 0 ? s_clamp ((int) lrintf ((xs [l] + ms) / ds), 0, 15) : 0;
                        float diff = ds * q - ms - xs [l];
                        err += diff * diff;
                    }
                    if (err < best_err) {
                        best_err = err;
                        best_s = cs;
                        best_m = cm;
                    }
                }
            const uint8_t ls = (uint8_t) best_s, lm = (uint8_t) best_m;
            if (s < 4) {
                b.scales [s] |= ls;
                b.scales [s + 4] |= lm;
            }
            else {
                b.scales [s + 4] = (uint8_t) ((ls & 0x0f) | ((lm & 0x0f) << 4));
                b.scales [s - 4] |= (uint8_t) ((ls >> 4) << 6);
                b.scales [s] |= (uint8_t) ((lm >> 4) << 6);
            }
            const float ds = d * ls, ms = dmin * lm;
            for (int l = 0; l < 32; l++)
                codes [32 * s + l] = ds > 0
                    ? (uint8_t) s_clamp ((int) lrintf ((xs [l] + ms) / ds), 0, 15)
                    : 0;
        }
        for (int j = 0; j < QK_K; j += 64)
            for (int l = 0; l < 32; l++)
                b.qs [j / 2 + l] = (uint8_t) (codes [j + l] | (codes [j + l + 32] << 4));
        memcpy (p + i * sizeof b, &b, sizeof b);
    }
}


//  --------------------------------------------------------------------------
//  Q6_K: 16 sub-blocks of 16; x = d * sc[s] * (q - 32)

static void
s_q6_K_to_float (const void *src, float *dst, int64_t n)
{
    const uint8_t *p = (const uint8_t *) src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        block_q6_K b;
        memcpy (&b, p + i * sizeof b, sizeof b);
        const float d = ggml_fp16_to_fp32 (b.d);
        const uint8_t *ql = b.ql, *qh = b.qh;
        const int8_t *sc = b.scales;
        float *y = dst + i * QK_K;
        for (int half = 0; half < 2; half++, y += 128, ql += 64, qh += 32, sc += 8)
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = (int8_t) ((ql [l] & 0x0f) | (((qh [l] >> 0) & 3) << 4)) - 32;
                const int q2 = (int8_t) ((ql [l + 32] & 0x0f) | (((qh [l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int8_t) ((ql [l] >> 4) | (((qh [l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int8_t) ((ql [l + 32] >> 4) | (((qh [l] >> 6) & 3) << 4)) - 32;
                y [l] = d * sc [is + 0] * q1;
                y [l + 32] = d * sc [is + 2] * q2;
                y [l + 64] = d * sc [is + 4] * q3;
                y [l + 96] = d * sc [is + 6] * q4;
            }
    }
}

static void
s_q6_K_from_float (const float *src, void *dst, int64_t n)
{
    uint8_t *p = (uint8_t *) dst;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float *x = src + i * QK_K;
        //  Per 16 elements: the element of largest magnitude maps to -32,
        //  the full signed 6-bit range; the scales then share one fp16 d.
        float scales [16], amax_scale = 0, max_scale = 0;
        for (int s = 0; s < 16; s++) {
            float amax = 0, max = 0;
            for (int l = 0; l < 16; l++)
                if (amax < fabsf (x [16 * s + l])) {
                    amax = fabsf (x [16 * s + l]);
                    max = x [16 * s + l];
                }
            scales [s] = max / -32;
            if (fabsf (scales [s]) > amax_scale) {
                amax_scale = fabsf (scales [s]);
                max_scale = scales [s];
            }
        }
        block_q6_K b;
        memset (&b, 0, sizeof b);
        //  The largest scale maps to -128 (int8 range, sign folded into d).
        //  Each sub-block then takes the 8-bit scale near its own that
        //  gives the least squared error (rounding alone may round a scale
        //  down and saturate the codes).
        b.d = ggml_fp32_to_fp16 (max_scale != 0 ? max_scale / -128.f : 0.f);
        const float d = ggml_fp16_to_fp32 (b.d);
        uint8_t codes [QK_K];
        for (int s = 0; s < 16; s++) {
            const float *xs = x + 16 * s;
            const int r = d != 0 ? s_clamp ((int) lrintf (scales [s] / d), -128, 127) : 0;
            float best_err = INFINITY;
            int best = r;
            for (int c = r - 2; c <= r + 2; c++) {
                if (c < -128 || c > 127)
                    continue;
                const float ds = d * c;
                float err = 0;
                for (int l = 0; l < 16; l++) {
                    int q = ds != 0 ? s_clamp ((int) lrintf (xs [l] / ds), -32, 31) : 0;
                    float diff = ds * q - xs [l];
                    err += diff * diff;
                }
                if (err < best_err) {
                    best_err = err;
                    best = c;
                }
            }
            b.scales [s] = (int8_t) best;
            const float ds = d * best;
            for (int l = 0; l < 16; l++)
                codes [16 * s + l] = ds != 0
                    ? (uint8_t) (s_clamp ((int) lrintf (xs [l] / ds), -32, 31) + 32)
                    : 32;
        }
        //  Pack: per 128 elements, ql holds low nibbles of elements l and
        //  l + 64 (l < 64), qh the top 2 bits of l, l + 32, l + 64, l + 96.
        for (int h = 0; h < 2; h++) {
            const uint8_t *c = codes + 128 * h;
            uint8_t *ql = b.ql + 64 * h, *qh = b.qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql [l] = (uint8_t) ((c [l] & 0x0f) | ((c [l + 64] & 0x0f) << 4));
                ql [l + 32] = (uint8_t) ((c [l + 32] & 0x0f) | ((c [l + 96] & 0x0f) << 4));
                qh [l] = (uint8_t) ((c [l] >> 4) | ((c [l + 32] >> 4) << 2)
                                    | ((c [l + 64] >> 4) << 4) | ((c [l + 96] >> 4) << 6));
            }
        }
        memcpy (p + i * sizeof b, &b, sizeof b);
    }
}


//  --------------------------------------------------------------------------
//  The table

static const ggml_type_traits_t s_traits [GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32]  = { "f32",  1,     4,                   s_f32_to_float,  s_f32_from_float  },
    [GGML_TYPE_F16]  = { "f16",  1,     2,                   s_f16_to_float,  s_f16_from_float  },
    [GGML_TYPE_Q4_0] = { "q4_0", QK4_0, sizeof (block_q4_0), s_q4_0_to_float, s_q4_0_from_float },
    [GGML_TYPE_Q4_1] = { "q4_1", QK4_1, sizeof (block_q4_1), s_q4_1_to_float, s_q4_1_from_float },
    [GGML_TYPE_Q5_0] = { "q5_0", QK5_0, sizeof (block_q5_0), s_q5_0_to_float, s_q5_0_from_float },
    [GGML_TYPE_Q5_1] = { "q5_1", QK5_1, sizeof (block_q5_1), s_q5_1_to_float, s_q5_1_from_float },
    [GGML_TYPE_Q8_0] = { "q8_0", QK8_0, sizeof (block_q8_0), s_q8_0_to_float, s_q8_0_from_float },
    [GGML_TYPE_Q4_K] = { "q4_K", QK_K,  sizeof (block_q4_K), s_q4_K_to_float, s_q4_K_from_float },
    [GGML_TYPE_Q6_K] = { "q6_K", QK_K,  sizeof (block_q6_K), s_q6_K_to_float, s_q6_K_from_float },
    [GGML_TYPE_BF16] = { "bf16", 1,     2,                   s_bf16_to_float, s_bf16_from_float },
};

static const ggml_type_traits_t s_w4g128_traits = {
    "w4g128", QW4G128, sizeof (block_w4g128), s_w4g128_to_float, s_w4g128_from_float
};

int
ggml_type_is_splitmesh (int type)
{
    return type == SPLITMESH_TYPE_W4G128;
}

const ggml_type_traits_t *
ggml_type_traits (int type)
{
    if (type == SPLITMESH_TYPE_W4G128)
        return &s_w4g128_traits;
    if (type < 0 || type >= GGML_TYPE_COUNT || !s_traits [type].name)
        return NULL;
    return &s_traits [type];
}

size_t
ggml_row_size (int type, int64_t n)
{
    const ggml_type_traits_t *t = ggml_type_traits (type);
    if (!t || n < 0 || n % t->block_size)
        return 0;
    return (size_t) (n / t->block_size) * t->type_size;
}

int
ggml_type_from_name (const char *name)
{
    if (!name)
        return -1;
    for (int type = 0; type <= GGML_TYPE_COUNT; type++) {
        const char *a = type < GGML_TYPE_COUNT ? s_traits [type].name : s_w4g128_traits.name;
        const char *b = name;
        if (!a)
            continue;
        while (*a && *b && tolower ((unsigned char) *a) == tolower ((unsigned char) *b))
            a++, b++;
        if (!*a && !*b)
            return type < GGML_TYPE_COUNT ? type : SPLITMESH_TYPE_W4G128;
    }
    return -1;
}

int
ggml_quantize (int type, const float *src, void *dst, int64_t n)
{
    const ggml_type_traits_t *t = ggml_type_traits (type);
    if (!t || n < 0 || n % t->block_size)
        return -1;
    t->from_float (src, dst, n);
    return 0;
}

int
ggml_dequantize (int type, const void *src, float *dst, int64_t n)
{
    const ggml_type_traits_t *t = ggml_type_traits (type);
    if (!t || n < 0 || n % t->block_size)
        return -1;
    t->to_float (src, dst, n);
    return 0;
}
