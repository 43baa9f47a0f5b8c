/* k_elem.cu — the row and element-wise kernels of the forward pass: RMS norm, residual add, the
 * gated activations (SiLU and tanh-GELU), scaling and soft-capping, RoPE from the step's
 * cos/sin table, row gathering, and the F16 write of new K/V rows into the paged cache.
 *
 * Each kernel follows the scalar reference of the CPU backend (backend_cpu.c) operation for
 * operation: RMS norm sums float-rounded squares in double, RoPE rotates (x0, x1) to
 * (x0 c - x1 s, x0 s + x1 c) with the same table, K/V rows are rounded to F16 with the same
 * round-to-nearest-even conversion (blocks.cuh). Threading: launchers only enqueue. */
#include <cuda_runtime.h>

#include "blocks.cuh"
#include "kernels.h"

static int launched(void)
{
    return (int)cudaGetLastError();
}

static unsigned blocks_for(int64_t n, int threads)
{
    return (unsigned)((n + threads - 1) / threads);
}

/* grid T, block 256. */
__global__ void k_rmsnorm(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int n,
                          float eps)
{
    __shared__ double part[256];
    const float *xr = x + (int64_t)blockIdx.x * ldx;
    float *yr = y + (int64_t)blockIdx.x * ldy;
    double ss = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        ss += (double)(xr[i] * xr[i]);
    part[threadIdx.x] = ss;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o)
            part[threadIdx.x] += part[threadIdx.x + o];
        __syncthreads();
    }
    float mean = (float)(part[0] / n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        yr[i] = w ? (xr[i] * scale) * w[i] : xr[i] * scale;
}

__global__ void k_add(float *y, const float *x, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] += x[i];
}

__global__ void k_glu(int gelu, float *g, const float *u, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        g[i] = (gelu ? kb_gelu(g[i]) : kb_silu(g[i])) * u[i];
}

__global__ void k_scale(float *x, int64_t n, float s)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] *= s;
}

__global__ void k_softcap(float *x, int64_t n, float cap)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = cap * tanhf(x[i] / cap);
}

/* One thread per (row, head, pair). */
__global__ void k_rope(float *x, int64_t ldx, int T, int n_heads, int head_dim, const float *cs,
                       int n_rot, int mode)
{
    int half = n_rot / 2;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)T * n_heads * half)
        return;
    int p = (int)(i % half);
    int h = (int)(i / half % n_heads);
    int64_t t = i / half / n_heads;
    float *v = x + t * ldx + (int64_t)h * head_dim;
    float c = cs[t * n_rot + 2 * p], s = cs[t * n_rot + 2 * p + 1];
    int a = mode == 0 ? 2 * p : p;
    int b = mode == 0 ? 2 * p + 1 : p + half;
    float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x0 * s + x1 * c;
}

/* One thread block walks the rows in order, so y may alias x: rows are ascending with
 * rows[i] >= i, so when row i is written no later row will read it. */
__global__ void k_get_rows(float *y, const float *x, int64_t n, const int32_t *rows, int n_rows)
{
    for (int i = 0; i < n_rows; i++) {
        const float *src = x + (int64_t)rows[i] * n;
        float *dst = y + (int64_t)i * n;
        float tmp[8];
        for (int64_t c0 = 0; c0 < n; c0 += (int64_t)blockDim.x * 8) {
            /* read the chunk fully before writing it (dst may overlap src when rows[i] == i) */
            for (int k = 0; k < 8; k++) {
                int64_t c = c0 + (int64_t)k * blockDim.x + threadIdx.x;
                tmp[k] = c < n ? src[c] : 0.0f;
            }
            __syncthreads();
            for (int k = 0; k < 8; k++) {
                int64_t c = c0 + (int64_t)k * blockDim.x + threadIdx.x;
                if (c < n)
                    dst[c] = tmp[k];
            }
            __syncthreads();
        }
    }
}

/* grid T, block 128: row t's K and V values into the cache as F16. */
__global__ void k_kv_store(uint8_t *base, const int64_t *row_off, size_t k_off, size_t v_off,
                           int kv_dim, const float *k, const float *v, int64_t ld)
{
    int64_t off = row_off[blockIdx.x];
    if (off < 0)
        return;
    uint16_t *kd = (uint16_t *)(base + k_off + off), *vd = (uint16_t *)(base + v_off + off);
    const float *ks = k + (int64_t)blockIdx.x * ld, *vs = v + (int64_t)blockIdx.x * ld;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        kd[i] = kb_f32_to_f16(ks[i]);
        vd[i] = kb_f32_to_f16(vs[i]);
    }
}

extern "C" int kc_rmsnorm(void *stream, float *y, int64_t ldy, const float *x, int64_t ldx,
                          const float *w, int T, int n, float eps)
{
    if (T <= 0)
        return 0;
    k_rmsnorm<<<T, 256, 0, (cudaStream_t)stream>>>(y, ldy, x, ldx, w, n, eps);
    return launched();
}

extern "C" int kc_add(void *stream, float *y, const float *x, int64_t n)
{
    if (n <= 0)
        return 0;
    k_add<<<blocks_for(n, 256), 256, 0, (cudaStream_t)stream>>>(y, x, n);
    return launched();
}

extern "C" int kc_glu(void *stream, int gelu, float *g, const float *u, int64_t n)
{
    if (n <= 0)
        return 0;
    k_glu<<<blocks_for(n, 256), 256, 0, (cudaStream_t)stream>>>(gelu, g, u, n);
    return launched();
}

extern "C" int kc_scale(void *stream, float *x, int64_t n, float s)
{
    if (n <= 0)
        return 0;
    k_scale<<<blocks_for(n, 256), 256, 0, (cudaStream_t)stream>>>(x, n, s);
    return launched();
}

extern "C" int kc_softcap(void *stream, float *x, int64_t n, float cap)
{
    if (n <= 0)
        return 0;
    k_softcap<<<blocks_for(n, 256), 256, 0, (cudaStream_t)stream>>>(x, n, cap);
    return launched();
}

extern "C" int kc_rope(void *stream, float *x, int64_t ldx, int T, int n_heads, int head_dim,
                       const float *cs, int n_rot, int mode)
{
    int64_t n = (int64_t)T * n_heads * (n_rot / 2);
    if (n <= 0)
        return 0;
    k_rope<<<blocks_for(n, 256), 256, 0, (cudaStream_t)stream>>>(x, ldx, T, n_heads, head_dim, cs,
                                                                 n_rot, mode);
    return launched();
}

extern "C" int kc_get_rows(void *stream, float *y, const float *x, int64_t n, const int32_t *rows,
                           int n_rows)
{
    if (n_rows <= 0)
        return 0;
    k_get_rows<<<1, 256, 0, (cudaStream_t)stream>>>(y, x, n, rows, n_rows);
    return launched();
}

extern "C" int kc_kv_store(void *stream, uint8_t *base, const int64_t *row_off, size_t k_off,
                           size_t v_off, int kv_dim, const float *k, const float *v, int64_t ld,
                           int T)
{
    if (T <= 0)
        return 0;
    k_kv_store<<<T, 128, 0, (cudaStream_t)stream>>>(base, row_off, k_off, v_off, kv_dim, k, v, ld);
    return launched();
}
