/*  gpu_none.c: the gpu.h API for builds without CUDA.

    It reports no device, so callers take the CPU path. It is chosen by
    gpu/CMakeLists.txt only when SPLITMESH_CUDA is off.
*/
#include "gpu.h"
#include <stdio.h>

int
gpu_device_count (void)
{
    return 0;
}

int
gpu_describe (char *buf, size_t size)
{
    if (size)
        snprintf (buf, size, "no GPU backend (built without CUDA)");
    return -1;
}

int
gpu_selftest (char *err, size_t err_size)
{
    if (err_size)
        snprintf (err, err_size, "built without CUDA");
    return -1;
}

//  No model can be made without CUDA; the functions taking a model are
//  never reachable with a valid one, and answer as for an unknown session.
gpu_model_t *
gpu_model_new_from_cpu (const model_t *cpu, const gpu_options_t *opts, char *err, size_t err_size)
{
    if (err_size)
        snprintf (err, err_size, "built without CUDA");
    return NULL;
}

gpu_model_t *
gpu_model_new_synthetic (const model_config_t *config, const gpu_options_t *opts, uint64_t seed,
                         char *err, size_t err_size)
{
    if (err_size)
        snprintf (err, err_size, "built without CUDA");
    return NULL;
}

void
gpu_model_destroy (gpu_model_t **self_p)
{
    if (self_p)
        *self_p = NULL;
}

const model_config_t *gpu_model_config (const gpu_model_t *self) { return NULL; }
const gpu_options_t *gpu_model_options (const gpu_model_t *self) { return NULL; }
void gpu_model_range (const gpu_model_t *self, int *first, int *last, bool *embeddings, bool *head) { }
size_t gpu_model_stream_bytes (const gpu_model_t *self) { return 0; }
const char *gpu_model_error (const gpu_model_t *self) { return "built without CUDA"; }
int gpu_model_set_graphs (gpu_model_t *self, bool on) { return -1; }
int gpu_model_set_skinny (gpu_model_t *self, bool on) { return -1; }
int gpu_model_tune (gpu_model_t *self, const char *name, long value) { return -1; }
int gpu_model_profile_print (const gpu_model_t *self, FILE *f, const char *title, double copy_bw) { return -1; }
int gpu_model_free_pages (const gpu_model_t *self) { return 0; }
int gpu_model_total_pages (const gpu_model_t *self) { return 0; }
int gpu_session_open (gpu_model_t *self) { return -1; }
int gpu_session_close (gpu_model_t *self, int session) { return -1; }
int gpu_session_truncate (gpu_model_t *self, int session, int n_pos) { return -1; }
int gpu_session_pos (const gpu_model_t *self, int session) { return -1; }

int
gpu_forward_batch (gpu_model_t *self, const gpu_seq_t *seqs, int n_seqs, const gpu_out_t *out)
{
    return -1;
}

int
gpu_forward_batch_from (gpu_model_t *self, int first_layer, const gpu_seq_t *seqs, int n_seqs,
                        const gpu_out_t *out)
{
    return -1;
}

int
gpu_model_head (gpu_model_t *self, const float *x, int n, const gpu_out_t *out)
{
    return -1;
}

size_t
gpu_memory_used (void)
{
    return 0;
}

double
gpu_copy_bandwidth (size_t bytes, int reps)
{
    return 0;
}
