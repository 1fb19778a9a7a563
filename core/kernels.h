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
    const char *name;           //  "scalar", "avx2", "avx512vnni", "neon"
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
void kernels_quantize_act_ref (const float *x, int nb, int nbp, int8_t *q, float *d, float *s);

#endif
