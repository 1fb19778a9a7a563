/*  gpu_device.cu: device discovery and a self-test for the CUDA backend.

    The self-test exercises the parts the cloud-target backend relies on
    (device memory, a custom kernel, a cuBLASLt int8 GEMM with int32
    accumulation) against a CPU result, so a broken driver or library is
    reported as a clear error before any model is loaded.
*/
#include "gpu.h"
#include <cuda_runtime.h>
#include <cublasLt.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>

extern "C" int
gpu_device_count (void)
{
    int count = 0;
    if (cudaGetDeviceCount (&count) != cudaSuccess) {
        cudaGetLastError ();    //  clear the sticky "no driver" error
        return 0;
    }
    return count;
}

extern "C" int
gpu_describe (char *buf, size_t size)
{
    if (gpu_device_count () == 0) {
        if (size)
            snprintf (buf, size, "no CUDA device");
        return -1;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties (&prop, 0) != cudaSuccess)
        return -1;
    snprintf (buf, size, "%s, %.1f GiB, sm_%d%d, %d SMs", prop.name,
              prop.totalGlobalMem / (1024.0 * 1024 * 1024), prop.major, prop.minor,
              prop.multiProcessorCount);
    return 0;
}

//  y[i] = 2 * x[i] + 1, the smallest kernel that proves launches work.
static __global__ void
s_affine_kernel (const int8_t *x, int8_t *y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = (int8_t) (2 * x[i] + 1);
}

#define S_CHECK_CUDA(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    snprintf (err, err_size, "%s: %s", #call, cudaGetErrorString (e_)); goto cleanup; } } while (0)
#define S_CHECK_LT(call) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) { \
    snprintf (err, err_size, "%s: cublas status %d", #call, (int) s_); goto cleanup; } } while (0)

extern "C" int
gpu_selftest (char *err, size_t err_size)
{
    //  C (m x n, int32) = A (m x k, int8) * B (k x n, int8), column-major,
    //  with A transposed as cuBLASLt's int8 path requires (TN layout).
    enum { M = 32, N = 8, K = 64 };
    int rc = -1;
    int8_t *d_a = NULL, *d_b = NULL, *d_y = NULL;
    int32_t *d_c = NULL;
    cublasLtHandle_t lt = NULL;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    int8_t a[K * M], b[K * N], y[K * M];
    int32_t c[M * N];
    cublasOperation_t trans_a = CUBLAS_OP_T;
    int32_t alpha = 1, beta = 0;

    if (gpu_device_count () == 0) {
        snprintf (err, err_size, "no CUDA device");
        return -1;
    }
    for (int i = 0; i < K * M; i++)
        a[i] = (int8_t) ((i * 7) % 11 - 5);
    for (int i = 0; i < K * N; i++)
        b[i] = (int8_t) ((i * 5) % 9 - 4);

    S_CHECK_CUDA (cudaMalloc (&d_a, sizeof a));
    S_CHECK_CUDA (cudaMalloc (&d_b, sizeof b));
    S_CHECK_CUDA (cudaMalloc (&d_y, sizeof y));
    S_CHECK_CUDA (cudaMalloc (&d_c, sizeof c));
    S_CHECK_CUDA (cudaMemcpy (d_a, a, sizeof a, cudaMemcpyHostToDevice));
    S_CHECK_CUDA (cudaMemcpy (d_b, b, sizeof b, cudaMemcpyHostToDevice));

    s_affine_kernel<<<(K * M + 127) / 128, 128>>> (d_a, d_y, K * M);
    S_CHECK_CUDA (cudaGetLastError ());
    S_CHECK_CUDA (cudaMemcpy (y, d_y, sizeof y, cudaMemcpyDeviceToHost));
    for (int i = 0; i < K * M; i++)
        if (y[i] != (int8_t) (2 * a[i] + 1)) {
            snprintf (err, err_size, "kernel result wrong at %d", i);
            goto cleanup;
        }

    S_CHECK_LT (cublasLtCreate (&lt));
    S_CHECK_LT (cublasLtMatmulDescCreate (&op, CUBLAS_COMPUTE_32I, CUDA_R_32I));
    S_CHECK_LT (cublasLtMatmulDescSetAttribute (op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof trans_a));
    //  A is stored k x m (column-major, ld = K) and used transposed.
    S_CHECK_LT (cublasLtMatrixLayoutCreate (&la, CUDA_R_8I, K, M, K));
    S_CHECK_LT (cublasLtMatrixLayoutCreate (&lb, CUDA_R_8I, K, N, K));
    S_CHECK_LT (cublasLtMatrixLayoutCreate (&lc, CUDA_R_32I, M, N, M));
    S_CHECK_LT (cublasLtMatmul (lt, op, &alpha, d_a, la, d_b, lb, &beta, d_c, lc, d_c, lc,
                                NULL, NULL, 0, 0));
    S_CHECK_CUDA (cudaMemcpy (c, d_c, sizeof c, cudaMemcpyDeviceToHost));
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            int32_t want = 0;
            for (int p = 0; p < K; p++)
                want += (int32_t) a[i * K + p] * b[j * K + p];
            if (c[j * M + i] != want) {
                snprintf (err, err_size, "int8 GEMM wrong at (%d,%d): %d != %d",
                          i, j, c[j * M + i], want);
                goto cleanup;
            }
        }
    rc = 0;
cleanup:
    if (la) cublasLtMatrixLayoutDestroy (la);
    if (lb) cublasLtMatrixLayoutDestroy (lb);
    if (lc) cublasLtMatrixLayoutDestroy (lc);
    if (op) cublasLtMatmulDescDestroy (op);
    if (lt) cublasLtDestroy (lt);
    cudaFree (d_a); cudaFree (d_b); cudaFree (d_y); cudaFree (d_c);
    return rc;
}

static __global__ void
s_fill_random (uint32_t *p, size_t n)
{
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
         i += (size_t) gridDim.x * blockDim.x) {
        uint32_t z = (uint32_t) i * 2654435761u + 0x9e3779b9u;
        z ^= z >> 16;
        z *= 0x85ebca6bu;
        z ^= z >> 13;
        p[i] = z;
    }
}

static int
s_cmp_float (const void *a, const void *b)
{
    float x = *(const float *) a, y = *(const float *) b;
    return x < y ? -1 : x > y;
}

extern "C" double
gpu_copy_bandwidth (size_t bytes, int reps)
{
    if (gpu_device_count () == 0 || reps < 1 || bytes < 1024)
        return 0;
    bytes &= ~(size_t) 15;
    void *src = NULL, *dst = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    double result = 0;
    float *ms = (float *) calloc (reps, sizeof (float));
    if (!ms || cudaMalloc (&src, bytes) != cudaSuccess || cudaMalloc (&dst, bytes) != cudaSuccess
        || cudaEventCreate (&e0) != cudaSuccess || cudaEventCreate (&e1) != cudaSuccess)
        goto cleanup;
    s_fill_random<<<1024, 256>>> ((uint32_t *) src, bytes / 4);
    if (cudaMemcpy (dst, src, bytes, cudaMemcpyDeviceToDevice) != cudaSuccess)
        goto cleanup;
    for (int r = 0; r < reps; r++) {
        cudaEventRecord (e0);
        cudaMemcpyAsync (dst, src, bytes, cudaMemcpyDeviceToDevice);
        cudaEventRecord (e1);
        if (cudaEventSynchronize (e1) != cudaSuccess || cudaEventElapsedTime (&ms[r], e0, e1) != cudaSuccess)
            goto cleanup;
    }
    qsort (ms, reps, sizeof (float), s_cmp_float);
    if (ms[reps / 2] > 0)
        result = 2.0 * bytes / (ms[reps / 2] * 1e-3);
cleanup:
    cudaGetLastError ();
    if (e0) cudaEventDestroy (e0);
    if (e1) cudaEventDestroy (e1);
    cudaFree (src);
    cudaFree (dst);
    free (ms);
    return result;
}
