/*  ggml_types.h: the ggml tensor types splitmesh reads, one table of facts.

    Each block format is a struct with a static_assert on its size (in
    ggml_types.c); per-type facts (name, elements per block, bytes per
    block, dequantize-to-f32) live in one table indexed by the type enum.
    Type numbers are ggml's, since they are stored in GGUF files; the one
    exception, SPLITMESH_TYPE_W4G128, is numbered far outside ggml's range.

    Every layout and rounding rule is ggml's reference (scalar) code, so data
    written here loads in llama.cpp and data from llama.cpp dequantizes to
    the same bits; tests/golden/ggml/ pins that against the Python `gguf`
    package.
*/
#ifndef SPLITMESH_GGML_TYPES_H
#define SPLITMESH_GGML_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GGML_TYPE_F32  = 0,
    GGML_TYPE_F16  = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_COUNT = 40,       //  bound for ggml's own types
    //  splitmesh's own type, outside ggml's range (llama.cpp cannot load a
    //  file that holds it): W4 with groups of 128, a block of 128 elements
    //  is fp16 d, fp16 m and 64 bytes of nibbles (low = element j, high =
    //  element j + 64), x = d * q + m; 4.25 bits per weight. Written only
    //  when the user allows splitmesh types (splitmesh quantize
    //  --allow-splitmesh-types); the engine loads it as w4 with the group's
    //  d and m repeated for each of its four 32-element groups (lossless).
    SPLITMESH_TYPE_W4G128 = 4128
} ggml_type_t;

typedef struct {
    const char *name;           //  "q4_1", as llama.cpp names it
    int block_size;             //  elements per block (1 for plain floats)
    size_t type_size;           //  bytes per block
    //  Dequantizes n elements (a multiple of block_size) from src to dst.
    //  src need not be aligned.
    void (*to_float) (const void *src, float *dst, int64_t n);
    //  Quantizes n elements (a multiple of block_size) from src into dst,
    //  which holds ggml_row_size (type, n) bytes and need not be aligned.
    //  Rounding is ggml's reference quantizer's, bit for bit.
    void (*from_float) (const float *src, void *dst, int64_t n);
} ggml_type_traits_t;

//  Facts for a type, or NULL when splitmesh does not read that type.
const ggml_type_traits_t *ggml_type_traits (int type);

//  Bytes for n elements of type (n a multiple of the block size); 0 when the
//  type is unsupported or n is not a whole number of blocks.
size_t ggml_row_size (int type, int64_t n);

//  IEEE half and bfloat16 conversions used by the loaders and codecs.
float ggml_fp16_to_fp32 (uint16_t h);
uint16_t ggml_fp32_to_fp16 (float f);
float ggml_bf16_to_fp32 (uint16_t h);
//  Round to nearest even; NaN stays a (quiet) NaN, overflow becomes inf.
uint16_t ggml_fp32_to_bf16 (float f);

//  Looks a type up by its llama.cpp name ("q4_1", "F16", case-insensitive).
//  Returns the type number, or -1 when splitmesh does not read that type.
int ggml_type_from_name (const char *name);

//  Quantizes n elements (a multiple of the type's block size) of src into
//  dst (ggml_row_size (type, n) bytes). Returns 0, or -1 when the type is
//  unsupported or n is not a whole number of blocks.
int ggml_quantize (int type, const float *src, void *dst, int64_t n);

//  Dequantizes n elements; returns 0, or -1 as ggml_quantize.
int ggml_dequantize (int type, const void *src, float *dst, int64_t n);

//  True for splitmesh's own types (not ggml's: llama.cpp cannot load them).
int ggml_type_is_splitmesh (int type);

//  Rewrites n elements (a multiple of 128) of SPLITMESH_TYPE_W4G128 data as
//  Q4_1 blocks (ggml_row_size (GGML_TYPE_Q4_1, n) bytes at dst), each group
//  of 128 becoming four blocks with the group's d and m: the same values,
//  bit for bit, in a type the engine converts to w4 without loss. Returns
//  0, or -1 when n is not a whole number of groups.
int ggml_w4g128_to_q4_1 (const void *src, void *dst, int64_t n);

//  Rewrites n elements (a multiple of 256) of Q4_K as Q4_1 blocks when that
//  is exact: every 32-element sub-block's scale and min (super-block scale
//  times 6-bit code) must be an fp16 value. Returns 0 (dst holds the same
//  values bit for bit), or -1 when a sub-block is not exact (dst partly
//  written) or n is not whole super-blocks.
int ggml_q4_K_to_q4_1_exact (const void *src, void *dst, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
