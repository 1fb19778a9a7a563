/*  kernels.h: internals shared by quant.c and the per-ISA kernel files.

    Not a public header: it exposes the qmatrix layout (see quant.h for the
    formats) and the table of kernel entry points each ISA family fills in.
    A family is one file (kernels.c for scalar C, kernels_avx2.c,
    kernels_avx512.c; a NEON family would be kernels_neon.c) defining one
    kernels_t. The build gives *_avx2.c / *_avx512.c files their ISA flags;
    kernels_get picks a family at run time from the CPU and SPLITMESH_SIMD.

    Every kernel computes whole rows [r0, r1) for all tokens, so threads own
    disjoint output ranges and need no synchronisation.
*/
#ifndef SPLITMESH_KERNELS_H
#define SPLITMESH_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "quant.h"

struct _qmatrix_t {
    qfmt_t fmt;                 //  f32, w8 or w4
    int rows;                   //  output features
    int cols;                   //  input features, multiple of 32
    int nb;                     //  groups of 32 per row (cols / 32)
    int nbp;                    //  nb rounded up to even (w4 pairs groups)
    size_t qs_stride;           //  bytes of quants per row (w8: nbp*32, w4: nbp*16)
    float *f;                   //  f32: (rows, cols)
    uint8_t *qs;                //  w8: (rows, nbp*32) int8; w4: (rows, nbp*16) nibble pairs
    uint16_t *d;                //  w8, w4: (rows, nb) fp16 scales
    uint16_t *m;                //  w4: (rows, nb) fp16 mins
    void *mem;                  //  the one 64-byte aligned allocation
    size_t mem_size;            //  its size
};

//  Activations quantized to int8 per group of 32, for every token. Groups
//  past nb (up to nbp, and the padding of a group pair) are zero, so kernels
//  can run over whole pairs of groups.
typedef struct {
    int n_tokens;               //  rows of x
    int nb;                     //  groups per token
    int nbp;                    //  padded groups per token (even, >= nb)
    int8_t *q;                  //  (n_tokens, nbp*32) quants
    float *d;                   //  (n_tokens, nbp) scale per group
    float *s;                   //  (n_tokens, nbp) d * sum(q) per group
} qact_t;

typedef struct {
    const char *name;           //  "scalar", "avx2", "avx512vnni"
    //  Quantizes one token's cols floats into q (nbp*32), d and s (nbp).
    void (*quantize_act) (const float *x, int nb, int nbp, int8_t *q, float *d, float *s);
    //  y[t*ldy + r] for r in [r0, r1), every token of a.
    void (*matmul_w8) (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy);
    void (*matmul_w4) (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy);
    void (*matmul_f32) (const qmatrix_t *W, const float *x, int n_tokens, int r0, int r1,
                        float *y, int ldy);
} kernels_t;

extern const kernels_t kernels_scalar;
//  x86-64 SIMD families are compiled in (kernels_avx2.c, kernels_avx512.c).
#if defined(__x86_64__)
#define KERNELS_HAVE_X86 0
#else
#define KERNELS_HAVE_X86 0
#endif
#if KERNELS_HAVE_X86
extern const kernels_t kernels_avx2;
extern const kernels_t kernels_avx512;
#endif

//  The family in use (cached; see kernels_simd_refresh in quant.h).
const kernels_t *kernels_get (void);

//  The scalar reference for one token's activation quantization; SIMD
//  versions must produce the same bytes (same operations, same rounding).
void kernels_quantize_act_ref (const float *x, int nb, int nbp, int8_t *q, float *d, float *s);

//  IEEE half <-> float, round to nearest even. Used by the converters and
//  the scalar kernels (SIMD kernels use F16C).
static inline float
kernels_fp16_to_f32 (uint16_t h)
{
    uint32_t sign = (uint32_t) (h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f)
        bits = sign | 0x7f800000u | (mant << 13);
    else
    if (exp != 0)
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    else
    if (mant == 0)
        bits = sign;
    else {
        //  Subnormal half: normalise into a float.
        int e = -1;
        do {
            e++;
            mant <<= 1;
        } while ((mant & 0x400) == 0);
        bits = sign | ((uint32_t) (112 - e) << 23) | ((mant & 0x3ff) << 13);
    }
    float f;
    memcpy (&f, &bits, sizeof f);
    return f;
}

static inline uint16_t
kernels_f32_to_fp16 (float f)
{
    uint32_t x;
    memcpy (&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)          //  inf or nan
        return (uint16_t) (sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u)          //  rounds to >= 65520: overflow to inf
        return (uint16_t) (sign | 0x7c00);
    if (ax < 0x38800000u) {         //  below the smallest normal half: subnormal
        if (ax < 0x33000000u)       //  below half the smallest subnormal
            return (uint16_t) sign;
        uint32_t e = ax >> 23;
        uint32_t mant = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e;   //  14..24
        uint32_t q = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return (uint16_t) (sign | q);
    }
    uint32_t r = ax + 0xfff + ((ax >> 13) & 1);     //  round to nearest even
    return (uint16_t) (sign | ((r - 0x38000000u) >> 13));
}

#endif
