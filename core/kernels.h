/*  kernels.h: internals shared by quant.c and the per-ISA kernel files.

    Not a public header: it exposes the qmatrix layout (see quant.h for the
    formats) and the table of kernel entry points each ISA family fills in.
    A family is one file (kernels.c for scalar C, kernels_avx2.c,
    kernels_avx512.c, kernels_neon.c) defining one kernels_t. The build gives *_avx2.c / *_avx512.c files their ISA flags;
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
#include "ggml_types.h"

struct _qmatrix_t {
    qfmt_t fmt;                 //  f32, w8 or w4
    int rows;                   //  output features
    int cols;                   //  input features, multiple of 32
    int nb;                     //  groups of 32 per row (cols / 32)
    int nbp;                    //  nb rounded up to a whole block (activation groups)
    size_t qs_stride;           //  bytes of quants per row (w8: nb*32, w4: nb*16)
    float *f;                   //  f32: (rows, cols)
    uint8_t *qs;                //  w8, w4: (rows, qs_stride) in blocks, see below
    uint16_t *d;                //  w8, w4: (rows, nb) fp16 scales
    uint16_t *m;                //  w8, w4: (rows, nb) fp16 mins (w8: 0 when symmetric)
    void *mem;                  //  the one 64-byte aligned allocation
    size_t mem_size;            //  its size
};

/*  Quant layout: groups go in blocks of KERNELS_BLOCK = 8 (the last block
    of a row may hold T < 8), and within a block the groups are interleaved
    four elements at a time, so that one 32-bit lane of a SIMD integer dot
    product always belongs to one group:
      1. activations and w8, 32 T bytes a block: byte 4 T j + 4 g + b is
         element 4 j + b of group g (j < 8, g < T, b < 4); so in a full
         block 4-byte unit u is group u mod 8, in any block group u mod T;
      2. w4, 16 T bytes a block: byte k holds in its low nibble the weight
         for activation byte k of the block and in its high nibble the one
         for activation byte 16 T + k (within a group that is q4_1's order:
         element e low, element 16 + e high).
    Rows are stored without padding (w8 nb*32 bytes, w4 nb*16); the quant
    array has 64 zero bytes of slack after the last row. Activations are
    padded with zeros to nbp = nb rounded up to 8 groups. */
#define KERNELS_BLOCK 8
#define KERNELS_QS_SLACK 64

//  Groups in the block holding group G (8, or the tail's count).
static inline int
kernels_block_groups (int nb, int G)
{
    return (G >> 3) == (nb >> 3) ? (nb & 7) : 8;
}

//  Byte offset of element e (< 32) of group G in a token's activations or
//  in a w8 row of nb groups.
static inline size_t
kernels_w8_offset (int nb, int G, int e)
{
    int T = kernels_block_groups (nb, G);
    return (size_t) (G >> 3) * 256 + (size_t) (4 * T) * (e >> 2) + 4 * (G & 7) + (e & 3);
}

//  Stores one group's 32 quantized activations (natural order) into the
//  block layout.
static inline void
kernels_put_act_group (int8_t *q, int nb, int G, const int8_t v[32])
{
    int T = kernels_block_groups (nb, G);
    int8_t *dst = q + (size_t) (G >> 3) * 256 + 4 * (G & 7);
    for (int j = 0; j < 8; j++)
        memcpy (dst + 4 * T * j, v + 4 * j, 4);
}

//  Byte offset of element e of group G in a w4 row of nb groups; the
//  element is in the low nibble for e < 16, else in the high one.
static inline size_t
kernels_w4_offset (int nb, int G, int e)
{
    int T = kernels_block_groups (nb, G);
    int e16 = e & 15;
    return (size_t) (G >> 3) * 128 + (size_t) (4 * T) * (e16 >> 2) + 4 * (G & 7) + (e16 & 3);
}

//  Activations quantized to int8 per group of 32, for every token, in the
//  block layout above. Bytes past the nb groups (up to nbp * 32) are zero,
//  as are scales and sums past nb, so kernels may read whole vectors.
//
//  One level (q2 NULL): x ~ d q, q = round (x / d1), d = d1 = amax / 127.
//  Two levels (q2 given, w8 matmuls): the rounding residual is quantized
//  again, x ~ d (256 q + q2) with d = d1 / 256 and
//  q2 = round (256 (x / d1 - q)), |q2| <= 127, so a group keeps about 15
//  bits instead of 8; the kernels take two int8 dot products per group and
//  combine them exactly in int32 as 256 isum(q) + isum(q2).
typedef struct {
    int n_tokens;               //  rows of x
    int nb;                     //  groups per token
    int nbp;                    //  padded groups per token (multiple of 8, >= nb)
    int8_t *q;                  //  (n_tokens, nbp*32) quants, block layout
    int8_t *q2;                 //  NULL, or (n_tokens, nbp*32) residual quants, same layout
    float *d;                   //  (n_tokens, nbp) scale per group (d1, or d1 / 256)
    float *s;                   //  (n_tokens, nbp) d * sum(q) (or d * sum(256 q + q2)) per group
} qact_t;

//  Scale between the two activation levels (a power of two, so d1 / 256 is
//  exact and 256 isum(q) is a shift).
#define KERNELS_ACT2_SHIFT 8

typedef struct {
    const char *name;           //  "scalar", "avx2", "avx512vnni", "neon"
    //  Quantizes one token's cols floats into q (nbp*32, block layout), d
    //  and s (nbp); with q2 non-NULL, two levels (see qact_t).
    void (*quantize_act) (const float *x, int nb, int nbp, int8_t *q, int8_t *q2, float *d, float *s);
    //  y[t*ldy + r] for r in [r0, r1), every token of a.
    void (*matmul_w8) (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy);
    void (*matmul_w4) (const qmatrix_t *W, const qact_t *a, int r0, int r1, float *y, int ldy);
    void (*matmul_f32) (const qmatrix_t *W, const float *x, int n_tokens, int r0, int r1,
                        float *y, int ldy);
} kernels_t;

extern const kernels_t kernels_scalar;
//  x86-64 SIMD families are compiled in (kernels_avx2.c, kernels_avx512.c).
#if defined(__x86_64__)
#define KERNELS_HAVE_X86 1
#else
#define KERNELS_HAVE_X86 0
#endif
#if KERNELS_HAVE_X86
extern const kernels_t kernels_avx2;
extern const kernels_t kernels_avx512;
#endif
#if defined(__aarch64__)
extern const kernels_t kernels_neon;        //  kernels_neon.c
#endif

//  The family in use (cached; see kernels_simd_refresh in quant.h).
const kernels_t *kernels_get (void);

//  Activation groups whose largest magnitude is below this are quantized
//  as zero (1/d would overflow to infinity).
#define KERNELS_ACT_TINY 1e-30f

//  The scalar reference for one token's activation quantization; SIMD
//  versions must produce the same bytes (same operations, same rounding).
void kernels_quantize_act_ref (const float *x, int nb, int nbp, int8_t *q, int8_t *q2, float *d,
                               float *s);

#endif
