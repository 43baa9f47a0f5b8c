/* k_attn.cu — causal attention over the paged F16 KV cache, one kernel for decode and prefill.
 *
 * Work is cut into items (kernels.h: kc_attn_item): one sequence, one KV head, and up to
 * KC_ATTN_MAX_ROWS query rows that read that KV head (row r = query r / g, head kvh * g + r % g,
 * g = n_head / n_head_kv). One thread block per item, one warp per row. The block walks the keys
 * its rows can see in tiles of 32 positions: the tile's K and V rows (F16, found through the
 * block table: position p lives in cache block bt[p / 16], slot p % 16) are loaded once into
 * shared memory for all of the block's rows, then each warp scores the 32 keys (lane j takes key
 * j: dot over head_dim, scale, optional soft-cap, mask outside (p - window, p]) and folds them
 * into its running softmax (max m, sum l, and head_dim accumulators spread over the lanes) — the
 * usual online-softmax recurrence, so any context length runs in fixed shared memory.
 *
 * Decode items carry the g rows of one KV head (each K/V byte is read once per sequence and KV
 * head); prefill items carry 8 rows, so a tile is reused by 8 query rows (the "tiled" prefill
 * attention). Queries are rounded to F16 before the dot, as the CPU reference does (it mirrors
 * llama.cpp's F16 K·Q). Threading: the launcher only enqueues. */
#include <cuda_runtime.h>
#include <math.h>

#include "blocks.cuh"
#include "kernels.h"

#define AT_TILE   KC_ATTN_TILE
#define AT_WARPS  4 /* at least this many warps per block, all of them loading tiles */
#define AT_UNROLL 8 /* 16-byte chunks of K (and of V) per thread per tile: 32 keys x 256 dims / 128 */

static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Loads positions [k0, k0 + AT_TILE) of the item's KV head into Ks / Vs (row stride kstr halves;
 * rows past kend are zeros). VEC: 16-byte loads, all issued before any store, so the latency of
 * the block-table and cache reads is paid once per tile rather than once per element (needs
 * head_dim % 8 == 0 and 16-byte aligned rows); otherwise one half at a time. */
template <bool VEC>
static __device__ __forceinline__ void load_tile(uint16_t *Ks, uint16_t *Vs, int kstr, int k0,
                                                 int kend, const uint8_t *base,
                                                 size_t block_stride, size_t k_off, size_t v_off,
                                                 int kv_dim, int kvh, int head_dim,
                                                 const int32_t *bt)
{
    if (VEC) {
        const int cpr = head_dim / 8, n = AT_TILE * cpr;
        uint4 kr[AT_UNROLL], vr[AT_UNROLL];
#pragma unroll
        for (int u = 0; u < AT_UNROLL; u++) {
            int e = threadIdx.x + u * blockDim.x, j = e / cpr, cc = e % cpr, p = k0 + j;
            kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
            if (e < n && p < kend) {
                const uint8_t *row = base + (size_t)bt[p / 16] * block_stride +
                                     (size_t)(p % 16) * (size_t)kv_dim * 2 +
                                     (size_t)kvh * (size_t)head_dim * 2 + (size_t)cc * 16;
                kr[u] = *(const uint4 *)(row + k_off);
                vr[u] = *(const uint4 *)(row + v_off);
            }
        }
#pragma unroll
        for (int u = 0; u < AT_UNROLL; u++) {
            int e = threadIdx.x + u * blockDim.x, j = e / cpr, cc = e % cpr;
            if (e < n) { /* 4-byte stores: kstr is even, so rows stay word-aligned */
                uint32_t *kd = (uint32_t *)(Ks + j * kstr + cc * 8);
                uint32_t *vd = (uint32_t *)(Vs + j * kstr + cc * 8);
                kd[0] = kr[u].x, kd[1] = kr[u].y, kd[2] = kr[u].z, kd[3] = kr[u].w;
                vd[0] = vr[u].x, vd[1] = vr[u].y, vd[2] = vr[u].z, vd[3] = vr[u].w;
            }
        }
    } else {
        for (int e = threadIdx.x; e < AT_TILE * head_dim; e += blockDim.x) {
            int j = e / head_dim, d = e % head_dim, p = k0 + j;
            uint16_t kv = 0, vv = 0;
            if (p < kend) {
                const uint8_t *row = base + (size_t)bt[p / 16] * block_stride +
                                     (size_t)(p % 16) * (size_t)kv_dim * 2 +
                                     (size_t)kvh * (size_t)head_dim * 2;
                kv = ((const uint16_t *)(row + k_off))[d];
                vv = ((const uint16_t *)(row + v_off))[d];
            }
            Ks[j * kstr + d] = kv;
            Vs[j * kstr + d] = vv;
        }
    }
}

/* grid n_items, block max(rows_per_item, AT_WARPS) * 32, dynamic shared memory: see
 * kc_attention. */
template <bool VEC>
__global__ void k_attn(float *out, int64_t ldo, const float *q, int64_t ldq, const uint8_t *base,
                       size_t block_stride, size_t k_off, size_t v_off, int kv_dim,
                       const kc_seq *seqs, const int32_t *bt, const kc_attn_item *items,
                       int rows_per_item, int g, int head_dim, float scale, int window,
                       float softcap, float *part)
{
    extern __shared__ unsigned char smem[];
    const int kstr = head_dim + 2; /* padded row: lanes reading different keys hit other banks */
    uint16_t *Ks = (uint16_t *)smem;
    uint16_t *Vs = Ks + AT_TILE * kstr;
    float *Qs = (float *)(Vs + AT_TILE * kstr);

    const kc_attn_item it = items[blockIdx.x];
    const kc_seq sq = seqs[it.seq];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int nrows = sq.n_q * g;
    const int r = it.r0 + warp;
    const bool active = r < nrows && warp < rows_per_item;
    const int t = r / g, h = it.kvh * g + r % g;
    const int pos = sq.pos0 + t;
    const int lo = window > 0 ? max(0, pos - window + 1) : 0, hi = pos + 1;

    int r_last = min(nrows, it.r0 + rows_per_item) - 1;
    int t_first = it.r0 / g, t_last = r_last / g;
    int kstart = window > 0 ? max(0, sq.pos0 + t_first - window + 1) : 0;
    int kend = sq.pos0 + t_last + 1;
    if (gridDim.y > 1) { /* split: this block takes its share of whole tiles of the key range */
        int tiles = (kend - kstart + AT_TILE - 1) / AT_TILE;
        int per = (tiles + (int)gridDim.y - 1) / (int)gridDim.y;
        int k0 = kstart + (int)blockIdx.y * per * AT_TILE;
        kend = min(kend, k0 + per * AT_TILE);
        kstart = k0;
    }

    float *qw = Qs + warp * head_dim;
    if (active)
        for (int d = lane; d < head_dim; d += 32)
            qw[d] = kb_f16_to_f32(
                kb_f32_to_f16(q[(int64_t)(sq.q_row0 + t) * ldq + (int64_t)h * head_dim + d]));
    __syncwarp();

    float m = -INFINITY, l = 0;
    float acc[KC_ATTN_MAX_HD / 32];
#pragma unroll
    for (int i = 0; i < KC_ATTN_MAX_HD / 32; i++)
        acc[i] = 0;

    for (int k0 = kstart; k0 < kend; k0 += AT_TILE) {
        __syncthreads(); /* the previous tile is consumed */
        load_tile<VEC>(Ks, Vs, kstr, k0, kend, base, block_stride, k_off, v_off, kv_dim, it.kvh,
                       head_dim, bt + sq.bt_off);
        __syncthreads();
        if (!active)
            continue;
        int p = k0 + lane;
        float s = -INFINITY;
        if (p >= lo && p < hi) {
            float a = 0;
            for (int d = 0; d < head_dim; d++)
                a += qw[d] * kb_f16_to_f32(Ks[lane * kstr + d]);
            a *= scale;
            if (softcap > 0)
                a = softcap * tanhf(a / softcap);
            s = a;
        }
        float mt = warp_max(s);
        if (mt == -INFINITY)
            continue; /* no visible key in this tile for this row */
        float mn = fmaxf(m, mt);
        float corr = expf(m - mn); /* 0 on the first visible tile (m = -inf) */
        float pj = expf(s - mn);   /* 0 for masked keys */
        l = l * corr + warp_sum(pj);
#pragma unroll
        for (int i = 0; i < KC_ATTN_MAX_HD / 32; i++)
            acc[i] *= corr;
        for (int j = 0; j < AT_TILE; j++) {
            float pb = __shfl_sync(0xffffffffu, pj, j);
#pragma unroll
            for (int i = 0; i < KC_ATTN_MAX_HD / 32; i++) {
                int d = lane + 32 * i;
                if (d < head_dim)
                    acc[i] += pb * kb_f16_to_f32(Vs[j * kstr + d]);
            }
        }
        m = mn;
    }
    if (!active)
        return;
    if (gridDim.y > 1) { /* unnormalised partial result: m, l, acc (k_attn_combine merges) */
        float *pr = part + (((size_t)blockIdx.x * gridDim.y + blockIdx.y) * rows_per_item + warp) *
                               (size_t)(head_dim + 2);
        if (lane == 0)
            pr[0] = m, pr[1] = l;
#pragma unroll
        for (int i = 0; i < KC_ATTN_MAX_HD / 32; i++) {
            int d = lane + 32 * i;
            if (d < head_dim)
                pr[2 + d] = acc[i];
        }
        return;
    }
    float inv = 1.0f / l; /* l ≥ exp(0) from the row's own position */
#pragma unroll
    for (int i = 0; i < KC_ATTN_MAX_HD / 32; i++) {
        int d = lane + 32 * i;
        if (d < head_dim)
            out[(int64_t)(sq.q_row0 + t) * ldo + (int64_t)h * head_dim + d] = acc[i] * inv;
    }
}

/* Merges the n_split partial results of each row of a split decode attention: with M the
 * largest partial max, out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M). grid n_items,
 * block rows_per_item * 32. */
__global__ void k_attn_combine(float *out, int64_t ldo, const kc_seq *seqs,
                               const kc_attn_item *items, int rows_per_item, int g, int head_dim,
                               int n_split, const float *part)
{
    const kc_attn_item it = items[blockIdx.x];
    const kc_seq sq = seqs[it.seq];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int r = it.r0 + warp;
    if (r >= sq.n_q * g)
        return;
    const int t = r / g, h = it.kvh * g + r % g;
    const size_t stride = (size_t)rows_per_item * (size_t)(head_dim + 2);
    const float *p0 = part + (size_t)blockIdx.x * n_split * stride + (size_t)warp * (head_dim + 2);
    float M = -INFINITY;
    for (int s = 0; s < n_split; s++)
        M = fmaxf(M, p0[s * stride]);
    float L = 0;
    for (int s = 0; s < n_split; s++)
        if (p0[s * stride] != -INFINITY)
            L += p0[s * stride + 1] * expf(p0[s * stride] - M);
    for (int d = lane; d < head_dim; d += 32) {
        float a = 0;
        for (int s = 0; s < n_split; s++)
            if (p0[s * stride] != -INFINITY)
                a += p0[s * stride + 2 + d] * expf(p0[s * stride] - M);
        out[(int64_t)(sq.q_row0 + t) * ldo + (int64_t)h * head_dim + d] = a / L;
    }
}

extern "C" int kc_attention(void *stream, float *out, int64_t ldo, const float *q, int64_t ldq,
                            const uint8_t *base, size_t block_stride, size_t k_off, size_t v_off,
                            int kv_dim, const kc_seq *seqs, const int32_t *bt,
                            const kc_attn_item *items, int n_items, int rows_per_item, int n_head,
                            int n_head_kv, int head_dim, float scale, int window, float softcap,
                            int n_split, float *part)
{
    if (n_items <= 0)
        return 0;
    if (head_dim > KC_ATTN_MAX_HD || rows_per_item < 1 || rows_per_item > KC_ATTN_MAX_ROWS ||
        n_head_kv < 1 || n_head % n_head_kv || n_split < 1 || n_split > KC_ATTN_MAX_SPLIT ||
        (n_split > 1 && !part))
        return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)n_items, (unsigned)n_split);
    size_t smem = (size_t)2 * AT_TILE * (size_t)(head_dim + 2) * 2 +
                  (size_t)rows_per_item * (size_t)head_dim * 4;
    int warps = rows_per_item > AT_WARPS ? rows_per_item : AT_WARPS;
    bool vec = head_dim % 8 == 0 && ((uintptr_t)base | block_stride | k_off | v_off) % 16 == 0;
    if (vec)
        k_attn<true><<<grid, warps * 32, smem, (cudaStream_t)stream>>>(
            out, ldo, q, ldq, base, block_stride, k_off, v_off, kv_dim, seqs, bt, items,
            rows_per_item, n_head / n_head_kv, head_dim, scale, window, softcap, part);
    else
        k_attn<false><<<grid, warps * 32, smem, (cudaStream_t)stream>>>(
            out, ldo, q, ldq, base, block_stride, k_off, v_off, kv_dim, seqs, bt, items,
            rows_per_item, n_head / n_head_kv, head_dim, scale, window, softcap, part);
    if (n_split > 1) {
        int e = (int)cudaGetLastError();
        if (e)
            return e;
        k_attn_combine<<<n_items, rows_per_item * 32, 0, (cudaStream_t)stream>>>(
            out, ldo, seqs, items, rows_per_item, n_head / n_head_kv, head_dim, n_split, part);
    }
    return (int)cudaGetLastError();
}
