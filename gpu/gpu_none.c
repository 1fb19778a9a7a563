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
