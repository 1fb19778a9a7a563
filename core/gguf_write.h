/*  gguf_write.h: builds a GGUF v3 file (metadata and tensors) in memory.

    The tiny-model tool and the quantize tool write model files through
    this. Metadata keeps insertion order (setting a key again replaces its
    value in place); tensors keep insertion order and their data is laid out
    at general.alignment (default 32), as llama.cpp writes and expects.
    Everything the reader (gguf.h) would reject is refused here first, with a
    message, so the writer never produces a file splitmesh cannot read.

    File layout written:
      1. "GGUF", version 3, tensor count, metadata count
      2. metadata entries in insertion order
      3. tensor infos in insertion order, offsets relative to the data section
      4. zero padding to the alignment, then each tensor's data, each padded
         to the alignment
*/
#ifndef SPLITMESH_GGUF_WRITE_H
#define SPLITMESH_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _gguf_writer_t gguf_writer_t;

//  Creates an empty writer. Caller owns the result and must destroy it.
gguf_writer_t *gguf_writer_new (void);

//  Frees the writer and everything it copied; sets *self_p to NULL.
void gguf_writer_destroy (gguf_writer_t **self_p);

//  Why the last call returned -1 ("tensor 'x': ne[0] = 33 is not a
//  multiple of the q4_0 block size 32"); owned by the writer.
const char *gguf_writer_error (const gguf_writer_t *self);

//  --- metadata: each returns 0, or -1 (see gguf_writer_error) -----------
//  Keys and values are copied. A key set twice keeps its first position.
int gguf_writer_set_u8   (gguf_writer_t *self, const char *key, uint8_t value);
int gguf_writer_set_i8   (gguf_writer_t *self, const char *key, int8_t value);
int gguf_writer_set_u16  (gguf_writer_t *self, const char *key, uint16_t value);
int gguf_writer_set_i16  (gguf_writer_t *self, const char *key, int16_t value);
int gguf_writer_set_u32  (gguf_writer_t *self, const char *key, uint32_t value);
int gguf_writer_set_i32  (gguf_writer_t *self, const char *key, int32_t value);
int gguf_writer_set_u64  (gguf_writer_t *self, const char *key, uint64_t value);
int gguf_writer_set_i64  (gguf_writer_t *self, const char *key, int64_t value);
int gguf_writer_set_f32  (gguf_writer_t *self, const char *key, float value);
int gguf_writer_set_f64  (gguf_writer_t *self, const char *key, double value);
int gguf_writer_set_bool (gguf_writer_t *self, const char *key, bool value);
//  NUL-terminated string, or len bytes (may hold any bytes).
int gguf_writer_set_str  (gguf_writer_t *self, const char *key, const char *value);
int gguf_writer_set_strn (gguf_writer_t *self, const char *key, const char *value, size_t len);
//  Numeric or bool array: count elements of elem_type, little-endian,
//  contiguous at data (any alignment).
int gguf_writer_set_array (gguf_writer_t *self, const char *key, gguf_value_type_t elem_type,
                           const void *data, uint64_t count);
//  String array: count strings; lens may be NULL for NUL-terminated ones.
int gguf_writer_set_str_array (gguf_writer_t *self, const char *key,
                               const char *const *strs, const size_t *lens, uint64_t count);
//  Copies key's value (any type, arrays included) from an open file.
int gguf_writer_copy_key (gguf_writer_t *self, const gguf_t *src, const char *key);
//  Removes a key; returns 0, or -1 when it was not set.
int gguf_writer_remove_key (gguf_writer_t *self, const char *key);

//  --- tensors --------------------------------------------------------------
//  Adds a tensor of n_dims dims (ne[0] fastest) whose data (nbytes, which
//  must equal ggml_row_size (type, ne[0]) * rows) is copied.
int gguf_writer_add_tensor (gguf_writer_t *self, const char *name, ggml_type_t type,
                            int n_dims, const uint64_t *ne, const void *data, size_t nbytes);
//  Same, quantizing n_elements floats from src to type.
int gguf_writer_add_tensor_f32 (gguf_writer_t *self, const char *name, ggml_type_t type,
                                int n_dims, const uint64_t *ne, const float *src);

//  --- output ---------------------------------------------------------------
//  Serialises into a new buffer. Returns NULL on failure (see
//  gguf_writer_error). Caller owns the result and must free() it.
void *gguf_writer_write_mem (gguf_writer_t *self, size_t *size);
//  Writes path atomically (a temporary file renamed into place).
//  Returns 0, or -1 (see gguf_writer_error).
int gguf_writer_write_file (gguf_writer_t *self, const char *path);

#ifdef __cplusplus
}
#endif

#endif
