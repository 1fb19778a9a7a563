/*  gpu_common.c: the parts of gpu.h that need no device (format names,
    default options), compiled with and without CUDA so both builds agree.
*/
#include "gpu.h"
#include <stdlib.h>
#include <string.h>

const char *
gpu_fmt_name (gpu_fmt_t fmt)
{
    return fmt == GPU_FMT_FP16 ? "fp16" : fmt == GPU_FMT_W8A8 ? "w8a8" : fmt == GPU_FMT_W8 ? "w8" : "?";
}

int
gpu_fmt_parse (const char *name, gpu_fmt_t *out)
{
    if (!name || !out)
        return -1;
    if (strcmp (name, "fp16") == 0)
        *out = GPU_FMT_FP16;
    else if (strcmp (name, "w8a8") == 0)
        *out = GPU_FMT_W8A8;
    else if (strcmp (name, "w8") == 0)
        *out = GPU_FMT_W8;
    else
        return -1;
    return 0;
}

gpu_options_t
gpu_options_default (void)
{
    gpu_options_t o;
    memset (&o, 0, sizeof o);
    o.format = GPU_FMT_FP16;
    o.max_sessions = 8;
    o.max_ctx = 1024;
    o.max_tokens = 256;
    o.page_size = 16;
    o.n_pages = 0;
    o.use_graphs = true;
    o.graph_max_tokens = 64;
    //  SPLITMESH_GPU_SKINNY=0 falls back to cuBLASLt for every product
    //  (for comparisons on the GPU host without a rebuild).
    const char *sk = getenv ("SPLITMESH_GPU_SKINNY");
    o.skinny_gemm = !(sk && strcmp (sk, "0") == 0);
    return o;
}
