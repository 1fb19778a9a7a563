/*  ggml_types.h: the ggml tensor types splitmesh reads, one table of facts.

    Each block format is a struct with a static_assert on its size (in
    ggml_types.c); per-type facts (name, elements per block, bytes per
    block, dequantize-to-f32) live in one table indexed by the type enum.
    Type numbers are ggml's, since they are stored in GGUF files.
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
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_COUNT = 40        //  bound for tables indexed by type
} ggml_type_t;

typedef struct {
    const char *name;           //  "q4_1", as llama.cpp names it
    int block_size;             //  elements per block (1 for plain floats)
    size_t type_size;           //  bytes per block
    //  Dequantizes n elements (a multiple of block_size) from src to dst.
    void (*to_float) (const void *src, float *dst, int64_t n);
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

#ifdef __cplusplus
}
#endif

#endif
