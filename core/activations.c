/*  activations.c: int8-per-position, fp16 and fp32 packing of activation
    blocks for the split-prefix -> cloud-target link (see activations.h).

    Everything is little-endian on the wire; the code writes bytes
    explicitly, so it is correct on any host byte order.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "activations.h"
#include "ggml_types.h"

static void
s_put_f32 (uint8_t *p, float f)
{
    uint32_t u;
    memcpy (&u, &f, 4);
    p [0] = (uint8_t) u;
    p [1] = (uint8_t) (u >> 8);
    p [2] = (uint8_t) (u >> 16);
    p [3] = (uint8_t) (u >> 24);
}

static float
s_get_f32 (const uint8_t *p)
{
    uint32_t u = (uint32_t) p [0] | (uint32_t) p [1] << 8
               | (uint32_t) p [2] << 16 | (uint32_t) p [3] << 24;
    float f;
    memcpy (&f, &u, 4);
    return f;
}

static size_t
s_elem_bytes (wire_dtype_t dtype)
{
    return dtype == WIRE_DTYPE_INT8? 1: dtype == WIRE_DTYPE_FP16? 2: 4;
}

int
activations_dtype_parse (const char *name, wire_dtype_t *dtype)
{
    for (int i = 0; name && i < WIRE_DTYPE_COUNT_; i++)
        if (strcmp (name, wire_dtype_names [i]) == 0) {
            *dtype = (wire_dtype_t) i;
            return 0;
        }
    return -1;
}

const char *
activations_dtype_name (wire_dtype_t dtype)
{
    return (int) dtype >= 0 && dtype < WIRE_DTYPE_COUNT_? wire_dtype_names [dtype]: "?";
}

size_t
activations_wire_bytes (wire_dtype_t dtype, size_t n_pos, size_t dim)
{
    return n_pos * dim * s_elem_bytes (dtype) + (dtype == WIRE_DTYPE_INT8? n_pos * 4: 0);
}

int
activations_pack (const float *x, uint32_t n_pos, uint32_t dim, wire_dtype_t dtype,
                  uint32_t layer, wire_activations_t *out, char *err, size_t err_size)
{
    memset (out, 0, sizeof *out);
    if (!x || n_pos < 1 || dim < 1 || n_pos > WIRE_MAX_POSITIONS || dim > WIRE_MAX_DIM
    ||  (int) dtype < 0 || dtype >= WIRE_DTYPE_COUNT_) {
        snprintf (err, err_size, "activations: bad block (%u x %u, dtype %d)", n_pos, dim, (int) dtype);
        return -1;
    }
    size_t n = (size_t) n_pos * dim;
    if (n * s_elem_bytes (dtype) > WIRE_MAX_ACTIVATION_BYTES) {
        snprintf (err, err_size, "activations: %u x %u %s exceeds %d bytes",
                  n_pos, dim, activations_dtype_name (dtype), WIRE_MAX_ACTIVATION_BYTES);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (!isfinite (x [i])) {
            snprintf (err, err_size, "activations: non-finite value at row %zu, column %zu",
                      i / dim, i % dim);
            return -1;
        }
    uint8_t *data = malloc (n * s_elem_bytes (dtype));
    uint8_t *scales = dtype == WIRE_DTYPE_INT8? malloc ((size_t) n_pos * 4): NULL;
    if (!data || (dtype == WIRE_DTYPE_INT8 && !scales)) {
        free (data);
        free (scales);
        snprintf (err, err_size, "activations: out of memory");
        return -1;
    }
    if (dtype == WIRE_DTYPE_INT8) {
        for (uint32_t r = 0; r < n_pos; r++) {
            const float *row = x + (size_t) r * dim;
            float amax = 0.0f;
            for (uint32_t c = 0; c < dim; c++)
                amax = fmaxf (amax, fabsf (row [c]));
            float scale = amax / 127.0f;
            float inv = scale > 0.0f? 1.0f / scale: 0.0f;
            int8_t *q = (int8_t *) data + (size_t) r * dim;
            for (uint32_t c = 0; c < dim; c++) {
                long v = lrintf (row [c] * inv);
                q [c] = (int8_t) (v > 127? 127: v < -127? -127: v);
            }
            s_put_f32 (scales + (size_t) r * 4, scale);
        }
        out->scales.data = scales;
        out->scales.size = (size_t) n_pos * 4;
    }
    else
    if (dtype == WIRE_DTYPE_FP16) {
        for (size_t i = 0; i < n; i++) {
            float v = x [i];
            //  Saturate rather than overflow to infinity.
            v = v > 65504.0f? 65504.0f: v < -65504.0f? -65504.0f: v;
            uint16_t h = ggml_fp32_to_fp16 (v);
            data [2 * i] = (uint8_t) h;
            data [2 * i + 1] = (uint8_t) (h >> 8);
        }
    }
    else
        for (size_t i = 0; i < n; i++)
            s_put_f32 (data + 4 * i, x [i]);
    out->dtype = dtype;
    out->n_pos = n_pos;
    out->dim = dim;
    out->data.data = data;
    out->data.size = n * s_elem_bytes (dtype);
    out->layer = layer;
    out->has_layer = true;
    return 0;
}

int
activations_unpack (const wire_activations_t *a, float *x, size_t x_cap,
                    char *err, size_t err_size)
{
    if (!a || (int) a->dtype < 0 || a->dtype >= WIRE_DTYPE_COUNT_ || a->n_pos < 1 || a->dim < 1) {
        snprintf (err, err_size, "activations: bad block header");
        return -1;
    }
    size_t n = (size_t) a->n_pos * a->dim;
    if (n > x_cap) {
        snprintf (err, err_size, "activations: %u x %u block exceeds the %zu-element buffer",
                  a->n_pos, a->dim, x_cap);
        return -1;
    }
    if (!a->data.data || a->data.size != n * s_elem_bytes (a->dtype)) {
        snprintf (err, err_size, "activations: data has %zu bytes, %u x %u %s needs %zu",
                  a->data.size, a->n_pos, a->dim, activations_dtype_name (a->dtype),
                  n * s_elem_bytes (a->dtype));
        return -1;
    }
    const uint8_t *d = a->data.data;
    if (a->dtype == WIRE_DTYPE_INT8) {
        if (!a->scales.data || a->scales.size != (size_t) a->n_pos * 4) {
            snprintf (err, err_size, "activations: int8 needs %u scales", a->n_pos);
            return -1;
        }
        for (uint32_t r = 0; r < a->n_pos; r++) {
            float scale = s_get_f32 (a->scales.data + (size_t) r * 4);
            if (!isfinite (scale)) {
                snprintf (err, err_size, "activations: scale of row %u is not finite", r);
                return -1;
            }
            const int8_t *q = (const int8_t *) d + (size_t) r * a->dim;
            float *row = x + (size_t) r * a->dim;
            for (uint32_t c = 0; c < a->dim; c++)
                row [c] = q [c] * scale;
        }
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        float v = a->dtype == WIRE_DTYPE_FP16
                ? ggml_fp16_to_fp32 ((uint16_t) (d [2 * i] | d [2 * i + 1] << 8))
                : s_get_f32 (d + 4 * i);
        if (!isfinite (v)) {
            snprintf (err, err_size, "activations: non-finite value at row %zu, column %zu",
                      i / a->dim, i % a->dim);
            return -1;
        }
        x [i] = v;
    }
    return 0;
}
