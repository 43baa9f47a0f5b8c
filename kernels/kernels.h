/* kernels.h — the C interface of the CUDA kernels in the kernels/ .cu files: one launcher per
 * operation, enqueuing work on a CUDA stream (passed as void *, a cudaStream_t) and returning at
 * once.
 *
 * Every pointer argument is device memory unless its comment says otherwise; shapes follow
 * services/worker/engine/backend.h (F32 activation matrices of T rows with an explicit leading
 * dimension; weights (rows, cols) in a GGUF tensor type, row-major as the file stores them).
 * Launchers return 0 when the launch was accepted, otherwise the cudaError_t value (the caller,
 * kernels/backend_cuda.c, turns it into a message). They never allocate and never synchronise, so
 * they can be captured into a CUDA graph.
 *
 * Compiled as C by the engine's C code and as C++ by nvcc (extern "C" linkage). */
#ifndef PARLEY_KERNELS_H
#define PARLEY_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ggml type ids used here (same values as gguf.h's gguf_ttype). */
enum {
    KC_F32 = 0,
    KC_F16 = 1,
    KC_Q4_0 = 2,
    KC_Q4_1 = 3,
    KC_Q5_0 = 6,
    KC_Q5_1 = 7,
    KC_Q8_0 = 8,
    KC_Q8_1 = 9, /* our activation block: float d, float s, 32 int8 (40 bytes) */
    KC_Q4_K = 12,
    KC_Q5_K = 13,
    KC_Q6_K = 14,
    KC_Q8_K = 15,
    KC_BF16 = 30,
};

/* Whether the kernels support weights of this type. */
int kc_weight_supported(int wtype);
/* The activation format the quantised products use for a weight type (the CPU's vec_dot_type):
 * KC_Q8_0, KC_Q8_1 or KC_Q8_K, or KC_F32 for F32 / F16 / BF16 weights (no quantisation). */
int kc_act_type(int wtype);
/* Bytes of one row of `cols` values in type t (cols a multiple of the block), 0 if unknown. */
size_t kc_row_bytes(int t, int64_t cols);

/* xq row t (stride xq_stride bytes) = quantise(x row t) in format act (KC_Q8_0/Q8_1/Q8_K). */
int kc_quantize_rows(void *stream, int act, const float *x, int64_t ldx, int T, int64_t cols,
                     void *xq, size_t xq_stride);
/* Y[t][r] = W row r · activation row t, for t < T, r < rows. For a quantised weight type `xq`
 * holds the activations in kc_act_type(wtype) format (row stride xq_stride bytes); for F32 /
 * F16 / BF16 weights it is the F32 activation matrix itself (xq_stride = ldx * 4). */
int kc_matmul(void *stream, int wtype, const void *W, int64_t rows, int64_t cols, const void *xq,
              size_t xq_stride, int T, float *Y, int64_t ldy);
/* Up to KC_MM_MAX weights of one quantised type sharing an input, for kc_matmul_fused. */
#define KC_MM_MAX        3
#define KC_MM_FUSED_SMEM (48 * 1024) /* the quantised tile must fit in this much shared memory */
typedef struct kc_mm_set {
    const void *W[KC_MM_MAX];
    int64_t rows[KC_MM_MAX];
    float *Y[KC_MM_MAX];
    int64_t ldy[KC_MM_MAX];
    int blocks[KC_MM_MAX]; /* filled by kc_matmul_fused */
    int n;
} kc_mm_set;
/* Shared memory kc_matmul_fused needs for weights of this type with `cols` columns (0: not a
 * quantised type or cols not a whole number of blocks); it runs only up to KC_MM_FUSED_SMEM. */
size_t kc_matmul_fused_smem(int wtype, int64_t cols);
/* Y_i[t][r] = W_i row r · X row t for each weight i of the set (all of type wtype, cols
 * columns), X in F32 (row stride ldx): the activations are quantised inside, exactly as
 * kc_quantize_rows does, and all products run in one launch. */
int kc_matmul_fused(void *stream, int wtype, const kc_mm_set *set, int64_t cols, const float *X,
                    int64_t ldx, int T);
/* out (rows x cols halves, row-major) = W rows [r0, r0 + rows) dequantised and rounded to F16. */
int kc_dequant_f16(void *stream, int wtype, const void *W, int64_t r0, int64_t rows, int64_t cols,
                   uint16_t *out);
/* out (T x cols halves, row-major) = x rounded to F16; for act KC_Q8_0 / Q8_1 / Q8_K each block
 * is first quantised to that format (as kc_quantize_rows does) and d * q is written, so a cuBLAS
 * product sees the activations the block kernels (and the CPU) see. KC_F32: plain rounding. */
int kc_f32_to_f16(void *stream, int act, const float *x, int64_t ldx, int T, int64_t cols,
                  uint16_t *out);
/* x row t = row tokens[t] of E (n_vocab x cols, type wtype) dequantised. */
int kc_embed(void *stream, int wtype, const void *E, int64_t cols, const int32_t *tokens, int T,
             float *x);

/* Element-wise and row operations (see backend.h for the definitions). */
int kc_rmsnorm(void *stream, float *y, int64_t ldy, const float *x, int64_t ldx, const float *w,
               int T, int n, float eps);
int kc_add(void *stream, float *y, const float *x, int64_t n);
/* g = act(g) * u with act = silu (gelu == 0) or gelu, tanh approximation (gelu == 1). */
int kc_glu(void *stream, int gelu, float *g, const float *u, int64_t n);
int kc_scale(void *stream, float *x, int64_t n, float s);
int kc_softcap(void *stream, float *x, int64_t n, float cap);
/* Rotates n_heads heads of each of T rows; cs is the step's table (T x n_rot: cos, sin pairs);
 * mode 0 = adjacent pairs (GGUF llama), 1 = halves (NeoX). */
int kc_rope(void *stream, float *x, int64_t ldx, int T, int n_heads, int head_dim, const float *cs,
            int n_rot, int mode);
/* y[i] = x[rows[i]] for i < n_rows (rows ascending; y may equal x). */
int kc_get_rows(void *stream, float *y, const float *x, int64_t n, const int32_t *rows, int n_rows);

/* KV cache. row_off[t] (T entries, -1 = skip the row) is the byte offset of row t's K/V slot in
 * the cache relative to base (block * block_stride + slot * kv_dim * 2); K goes to
 * base + k_off + row_off[t], V to base + v_off + row_off[t], as F16. */
int kc_kv_store(void *stream, uint8_t *base, const int64_t *row_off, size_t k_off, size_t v_off,
                int kv_dim, const float *k, const float *v, int64_t ld, int T);

/* One sequence's share of an attention call; its block table is bt[bt_off ..]. */
typedef struct kc_seq {
    int32_t q_row0, n_q, pos0, bt_off;
} kc_seq;
/* One unit of attention work: sequence `seq`, kv head `kvh`, its query-head rows r0 ..
 * r0 + rows_per_item - 1, where row r of a sequence is (query t = r / g, head kvh * g + r % g)
 * and g = n_head / n_head_kv. */
typedef struct kc_attn_item {
    int32_t seq, kvh, r0, pad;
} kc_attn_item;
#define KC_ATTN_MAX_ROWS  8   /* warps (query rows) per work item */
#define KC_ATTN_MAX_HD    256 /* largest head_dim the attention kernel takes */
#define KC_ATTN_MAX_SPLIT 16  /* key-range splits of a decode attention (n_split) */
#define KC_ATTN_TILE      32  /* key positions per tile */
/* Attention of every item (see k_attn.cu). n_split > 1 (decode steps with few items: otherwise
 * a handful of thread blocks walk the whole context alone) cuts each item's keys into n_split
 * ranges of whole tiles, one thread block each, writing unnormalised partial results to `part`
 * (n_items * n_split * rows_per_item * (head_dim + 2) floats), which a second kernel merges. */

int kc_attention(void *stream, float *out, int64_t ldo, const float *q, int64_t ldq,
                 const uint8_t *base, size_t block_stride, size_t k_off, size_t v_off, int kv_dim,
                 const kc_seq *seqs, const int32_t *bt, const kc_attn_item *items, int n_items,
                 int rows_per_item, int n_head, int n_head_kv, int head_dim, float scale,
                 int window, float softcap, int n_split, float *part);

#ifdef __cplusplus
}
#endif

#endif
