/*  gguf.h: a bounds-checked, mmap-based reader for GGUF model files (v2, v3).

    GGUF is llama.cpp's single-file model format. The reader maps the file,
    validates the header, every metadata entry and every tensor descriptor
    before anything is used, and then hands out pointers into the mapping.
    Nothing from the file is trusted: a truncated file, wrong magic, unknown
    version, count that overflows, absurd dimension, tensor data outside the
    file or misaligned tensor offset is rejected with a message naming it.

    File layout (little-endian), as the reader checks it:
      1. magic "GGUF" (4 bytes)
      2. version (uint32): 2 or 3
      3. tensor count (uint64), metadata count (uint64)
      4. metadata: key (string), value type (uint32), value
         (string = uint64 length + bytes; array = elem type uint32 + uint64 count + elems)
      5. tensor infos: name (string), n_dims (uint32, <= 4), dims (uint64 each),
         ggml type (uint32), offset (uint64, relative to the data section)
      6. padding to general.alignment (default 32), then the tensor data

    Beyond the checks above, tensor names are 1..63 bytes and unique, keys
    are unique, ne[0] is a whole number of blocks, general.alignment is a
    uint32 power of two, and no two tensors' data overlap. A gguf_t never
    changes after opening, so any number of threads may read one at once.
*/
#ifndef SPLITMESH_GGUF_H
#define SPLITMESH_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ggml_types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GGUF_TYPE_UINT8   = 0,
    GGUF_TYPE_INT8    = 1,
    GGUF_TYPE_UINT16  = 2,
    GGUF_TYPE_INT16   = 3,
    GGUF_TYPE_UINT32  = 4,
    GGUF_TYPE_INT32   = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL    = 7,
    GGUF_TYPE_STRING  = 8,
    GGUF_TYPE_ARRAY   = 9,
    GGUF_TYPE_UINT64  = 10,
    GGUF_TYPE_INT64   = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_value_type_t;

//  Limits beyond which a file is rejected as absurd (not merely large).
//  Names follow ggml (GGML_MAX_NAME = 64 including the NUL).
#define GGUF_MAX_NAME           63              //  tensor name, bytes
#define GGUF_DEFAULT_ALIGNMENT  32
#define GGUF_MAX_DIMS           4
#define GGUF_MAX_TENSORS        65536
#define GGUF_MAX_METADATA       65536
#define GGUF_MAX_STRING         (16u << 20)     //  one string, bytes
#define GGUF_MAX_ARRAY          (64u << 20)     //  one array, elements
#define GGUF_MAX_DIM            (1ull << 32)    //  one dimension, elements

typedef struct _gguf_t gguf_t;

typedef struct {
    const char *name;           //  NUL-terminated copy owned by gguf_t
    ggml_type_t type;           //  one of the types ggml_type_traits knows
    int n_dims;                 //  1..GGUF_MAX_DIMS
    uint64_t ne[GGUF_MAX_DIMS]; //  elements per dimension, ne[0] fastest; unused dims are 1
    uint64_t n_elements;        //  product of ne
    const void *data;           //  into the mapping; nbytes long, inside the file
    size_t nbytes;              //  ggml_row_size (type, ne[0]) * rows
} gguf_tensor_t;

//  Opens and validates a GGUF file. Returns NULL on any problem and writes a
//  message naming it ("bad magic", "tensor 'x' data ends past end of file",
//  ...) into err. Caller owns the result and must destroy it.
gguf_t *gguf_open (const char *path, char *err, size_t err_size);

//  Same, over a caller-owned buffer that must outlive the gguf_t (fuzzing,
//  tests). The buffer is not copied.
gguf_t *gguf_open_buffer (const void *data, size_t size, char *err, size_t err_size);

//  Unmaps and frees; sets *self_p to NULL. Safe on NULL.
void gguf_destroy (gguf_t **self_p);

uint32_t gguf_version (const gguf_t *self);

//  Bytes of one scalar value of type; 0 for string, array and unknown types.
//  The reader and the writer share it.
size_t gguf_scalar_size (uint32_t type);

//  general.alignment (default 32) and the file offset where tensor data
//  starts (a multiple of it).
uint32_t gguf_alignment (const gguf_t *self);
size_t gguf_data_offset (const gguf_t *self);

//  Metadata keys in file order, for walking or copying all of them. The
//  string is owned by gguf_t. gguf_key_at returns NULL when out of range.
int gguf_key_count (const gguf_t *self);
const char *gguf_key_at (const gguf_t *self, int index);

//  Raw little-endian bytes of a scalar value (integer, float or bool; 1, 2,
//  4 or 8 bytes by type, may be unaligned: read with memcpy), or NULL when
//  missing or not a scalar. For copying values of any type verbatim.
const void *gguf_value_data (const gguf_t *self, const char *key);

//  --- metadata ---------------------------------------------------------
//  Lookups return false when the key is missing or has an incompatible type;
//  integer getters accept any integer type whose value fits.
bool gguf_has_key (const gguf_t *self, const char *key);
gguf_value_type_t gguf_key_type (const gguf_t *self, const char *key);    //  GGUF_TYPE_COUNT if missing
bool gguf_get_u32 (const gguf_t *self, const char *key, uint32_t *out);
bool gguf_get_i64 (const gguf_t *self, const char *key, int64_t *out);
bool gguf_get_f32 (const gguf_t *self, const char *key, float *out);     //  float32 or float64
bool gguf_get_bool (const gguf_t *self, const char *key, bool *out);
//  Strings are not NUL-terminated in the file: data points into the
//  mapping, len is its length in bytes.
bool gguf_get_str (const gguf_t *self, const char *key, const char **data, size_t *len);
//  Convenience: copies a string value into buf (NUL-terminated, truncated
//  to size - 1). Returns false when missing or not a string.
bool gguf_get_str_copy (const gguf_t *self, const char *key, char *buf, size_t size);

//  Arrays: element type and count. Numeric arrays are contiguous in the
//  file: gguf_array_data returns a pointer to count elements (may be
//  unaligned: read with memcpy; NULL for string arrays and missing keys).
//  String arrays are indexed at open time so gguf_array_str is O(1).
bool gguf_get_array (const gguf_t *self, const char *key, gguf_value_type_t *elem_type, uint64_t *count);
const void *gguf_array_data (const gguf_t *self, const char *key);
bool gguf_array_str (const gguf_t *self, const char *key, uint64_t index, const char **data, size_t *len);

//  --- tensors ----------------------------------------------------------
int gguf_tensor_count (const gguf_t *self);
const gguf_tensor_t *gguf_tensor_at (const gguf_t *self, int index);
const gguf_tensor_t *gguf_find_tensor (const gguf_t *self, const char *name);

#ifdef __cplusplus
}
#endif

#endif
