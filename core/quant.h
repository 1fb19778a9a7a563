/*  quant.h: the engine's runtime weight formats and their matmul.

    The loader converts every weight matrix from its GGUF type to one of the
    engine's own formats, laid out for the kernels rather than for the file:

      1. f32: row-major floats, the reference path (float FMA).
      2. w8:  per row, groups of 32 columns; int8 quants and an fp16 scale
              and min per group: w = d * q + m. Q8_0 (m = 0), Q4_1 and
              Q4_0 (q in 0..15, m as in w4) convert losslessly; other
              sources are requantized symmetrically (m = 0).
      3. w4:  per row, groups of 32 columns; 4-bit unsigned quants and an
              fp16 scale and min per group: w = d * q + m (asymmetric, as
              ggml's q4_1), 20 bytes per 32 weights like q4_1. Q4_1 and
              Q4_0 (m = -8 d) convert losslessly.

    Quants come in blocks of 8 groups, interleaved four elements at a time
    (kernels.h gives the byte order), so each 32-bit lane of a SIMD integer
    dot product always belongs to one group: a whole block accumulates in
    int32 and is scaled once. Scales and mins live in separate per-row
    arrays, so the kernels stream two or three contiguous arrays per row.

    w8 and w4 matmuls quantize the activations to int8 per group of 32 (one
    float scale per group, round to nearest even, like ggml's q8_1) and use
    integer dot products: dot = sum_g d_w d_x isum_g + m_w d_x sum(xq)_g.
    w8 by default quantizes the activations on two levels (the rounding
    residual again to int8, x ~ d (256 q + q2), about 15 bits per value;
    two integer dot products per group, combined exactly in int32), so a
    w8 matmul of lossless weights is close to the f32 one (kernels.h,
    qact_t; qmatrix_act_levels).
    Kernels exist for AVX-512 VNNI, AVX2, ARM NEON and portable scalar C,
    chosen at run time (kernels.h).
*/
#ifndef SPLITMESH_QUANT_H
#define SPLITMESH_QUANT_H

#include <stddef.h>
#include "threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { QFMT_F32 = 0, QFMT_W8, QFMT_W4, QFMT_COUNT } qfmt_t;

//  Elements per quantization group (w8, w4 and the int8 activations).
#define QUANT_GROUP 32

//  "f32", "w8", "w4"; "?" for an out-of-range value. Static string.
const char *qfmt_name (qfmt_t fmt);

//  Parses a format name ("f32", "w8", "w4"). Returns 0 and sets *out, or
//  -1 when the name is unknown or NULL (then *out is untouched).
int qfmt_parse (const char *name, qfmt_t *out);

//  A rows x cols weight matrix (out x in), row-major.
typedef struct _qmatrix_t qmatrix_t;

//  Quantizes a row-major rows x cols f32 matrix. cols must be a positive
//  multiple of 32 and rows positive; returns NULL on bad arguments or when a
//  value is not finite or too large for an fp16 scale. Caller owns the
//  result and must destroy it.
qmatrix_t *qmatrix_new_from_f32 (qfmt_t fmt, const float *w, int rows, int cols);

//  Builds a matrix from a ggml tensor's raw data (rows x cols, row-major,
//  cols along ggml's ne0); data must hold rows * ggml_row_size (type, cols)
//  bytes (gguf.c checks that for tensors from a file). Types: every type
//  ggml_type_traits knows (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K);
//  cols must be a whole number of the type's blocks. Lossless where the formats allow (Q4_1 -> w4 keeps d and m
//  bit-exact, Q4_0 -> w4, Q8_0 -> w8, F32 -> f32), otherwise dequantize and
//  requantize. On NULL, err (if given) gets a message. Does not keep a
//  reference to data. Caller owns the result and must destroy it.
qmatrix_t *qmatrix_new_from_ggml (qfmt_t fmt, int ggml_type, const void *data, int rows, int cols,
                                  char *err, size_t err_size);

//  Frees the matrix and sets *self_p to NULL; NULL *self_p is a no-op.
void qmatrix_destroy (qmatrix_t **self_p);

qfmt_t qmatrix_format (const qmatrix_t *self);
int qmatrix_rows (const qmatrix_t *self);
int qmatrix_cols (const qmatrix_t *self);

//  Bytes of weight memory (quants, scales, mins), for reports.
size_t qmatrix_bytes (const qmatrix_t *self);

//  Writes the dequantized row (cols floats) to out, e.g. for an embedding
//  lookup. Returns 0, or -1 (out untouched) when row is not in [0, rows),
//  so a bad token id from the wire cannot read outside the matrix.
int qmatrix_get_row (const qmatrix_t *self, int row, float *out);

//  y[t][r] = sum_c W[r][c] * x[t][c] for t < n_tokens; x is n_tokens x cols,
//  y is n_tokens x rows (both row-major, y must not overlap x). pool may be
//  NULL (single thread). Rows are split among the pool's threads; several
//  tokens share each weight row while it is in cache, so verifying k+1
//  positions costs about one read of the weights. n_tokens <= 0 does nothing.
//  Several threads may multiply at once (the activation scratch is per
//  calling thread), each with its own pool or none: a pool runs one job at
//  a time. The caller's thread quantizes x; W is only read.
void qmatrix_matmul (const qmatrix_t *W, const float *x, int n_tokens, float *y, threadpool_t *pool);

//  Activation levels a w8 or w4 matmul uses: 2 (int8 plus an int8
//  residual) or 1 (plain int8); 0 for f32. Defaults: w8 2, w4 1; the
//  environment variables SPLITMESH_W8_ACT_LEVELS and SPLITMESH_W4_ACT_LEVELS
//  ("1" or "2") override them, read on first use (for benchmarks and
//  accuracy comparisons).
int qmatrix_act_levels (qfmt_t fmt);

//  Re-reads those variables (tests, benchmarks). Not thread-safe against
//  concurrent matmuls.
void qmatrix_act_levels_refresh (void);

//  Which kernel family runs: "avx512vnni", "avx2" or "scalar" on x86-64,
//  "neon" or "scalar" on AArch64: the best the CPU supports, capped by the
//  environment variable SPLITMESH_SIMD (scalar|avx2|avx512), read on first
//  use. Static string.
const char *kernels_simd_name (void);

//  Re-reads SPLITMESH_SIMD and the CPU features (for tests and benchmarks
//  that compare paths in one process). Not thread-safe against concurrent
//  matmuls. Returns the new family name.
const char *kernels_simd_refresh (void);

#ifdef __cplusplus
}
#endif

#endif
