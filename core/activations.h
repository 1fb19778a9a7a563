/*  activations.h: packs a block of activations (n_pos x dim floats) for the
    wire and unpacks it again.

    Split-prefix sends the residual stream after layers [0, L) to
    cloud-target for every prompt position and for every verification
    round, so these bytes are most of the edge-cloud link's traffic. Three
    encodings (the schema's `dtype` enum):
      - int8 (default): one fp32 scale per position, scale = absmax / 127,
        value = round (x / scale). Error per element <= scale / 2, i.e. at
        most absmax / 254 of the row's largest magnitude. 1 byte/element.
      - fp16: IEEE half, round to nearest even; relative error <= 2^-11 for
        normal values, values beyond 65504 saturate to +-65504. 2 bytes.
      - fp32: exact. 4 bytes (for equality checks against `splitmesh run`).
    The block is tagged with the split depth L (`layer`), which cloud-target
    checks against its own.
*/
#ifndef SPLITMESH_ACTIVATIONS_H
#define SPLITMESH_ACTIVATIONS_H

#include <stddef.h>
#include <stdint.h>
#include "codec.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Parses "int8", "fp16" or "fp32" into *dtype. Returns 0, or -1 if unknown.
int activations_dtype_parse (const char *name, wire_dtype_t *dtype);

//  Name of a dtype ("int8"...), "?" if out of range.
const char *activations_dtype_name (wire_dtype_t dtype);

//  Bytes on the wire (data + scales) of n_pos x dim elements of dtype.
size_t activations_wire_bytes (wire_dtype_t dtype, size_t n_pos, size_t dim);

//  Fills *out (any previous content is ignored) with x (n_pos x dim,
//  row-major) encoded as dtype and tagged with layer. Non-finite inputs are
//  rejected, since neither int8 nor fp16 can carry them meaningfully.
//  Returns 0; the caller owns out's buffers and releases them with
//  wire_msg_free (&wire_activations_desc, out). Returns -1 with a message in
//  err (and *out zeroed) on bad arguments, non-finite values or no memory.
int activations_pack (const float *x, uint32_t n_pos, uint32_t dim, wire_dtype_t dtype,
                      uint32_t layer, wire_activations_t *out, char *err, size_t err_size);

//  Decodes a block into x, which has room for x_cap floats (at least
//  n_pos x dim). Checks the block's consistency again (data and scales
//  sizes for its dtype; the codec already checked a decoded message, but a
//  hand-built struct may not be) and that every value decodes finite.
//  Returns 0, or -1 with a message in err.
int activations_unpack (const wire_activations_t *a, float *x, size_t x_cap,
                        char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
