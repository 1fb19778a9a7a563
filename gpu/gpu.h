/*  gpu.h: the GPU backend's C API, with no CUDA types.

    Everything outside gpu/ includes only this header, so the whole mesh
    builds and runs without CUDA: gpu_none.c implements it by reporting no
    device, and callers fall back to the CPU engine.
*/
#ifndef SPLITMESH_GPU_H
#define SPLITMESH_GPU_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

//  Number of usable CUDA devices; 0 when built without CUDA, when no driver
//  is loaded, or when no device is present. Never fails otherwise.
int gpu_device_count (void);

//  Writes a one-line description of device 0 (name, memory, compute
//  capability) into buf. Returns 0, or -1 when there is no device.
int gpu_describe (char *buf, size_t size);

//  Runs a small end-to-end check on device 0: uploads data, runs a kernel
//  and a cuBLASLt GEMM, and compares with a CPU result. Returns 0 when the
//  device computes correctly, -1 with a message in err otherwise.
int gpu_selftest (char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
