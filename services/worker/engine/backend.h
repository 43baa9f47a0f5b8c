/* backend.h — the small set of tensor operations the forward pass is written in, as a vtable,
 * so a second implementation (CUDA, in kernels/) can plug in without touching forward.c.
 *
 * Conventions: activations are F32 matrices of T rows (one per token of the step), row-major,
 * with an explicit leading dimension (ld, in floats) where an op may work on a slice. Weights are
 * be_weight: (rows = out features, cols = in features) in a GGUF tensor type. Buffers passed to
 * an op are the backend's own memory (be_ops.alloc); on the CPU that is host memory. The KV cache
 * is paged: a layer's K and V rows (F16, kv_dim = n_head_kv * head_dim halves per token) live in
 * fixed-size blocks of BE_KV_BLOCK tokens found through a per-sequence block table.
 *
 * Every op is synchronous: when it returns, its output is ready (the CPU backend fans work out to
 * its thread pool inside the call). A backend instance is used by one thread at a time. */
#ifndef PARLEY_BACKEND_H
#define PARLEY_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"

#define BE_KV_BLOCK 16 /* tokens per KV block */

/* A weight matrix. `data` is borrowed from the GGUF mapping; `dev` is a backend-private copy
 * (NULL on the CPU). */
typedef struct be_weight {
    gguf_ttype type;
    int64_t rows, cols;
    const void *data;
    void *dev;
    const char *name; /* borrowed, for messages; may be NULL */
} be_weight;

typedef enum be_rope_mode {
    BE_ROPE_ADJACENT = 0, /* rotate (x[2i], x[2i+1]): GGUF llama */
    BE_ROPE_HALVES = 1,   /* rotate (x[i], x[i + n_rot/2]): NeoX-style (gemma) */
} be_rope_mode;

/* Angles: theta_i = freq_scale * pos * base^(-2i/n_rot) / freq_factors[i], computed the way
 * llama.cpp does (base^(-2/n_rot) in float, raised by repeated multiplication, cosf/sinf) so
 * that positions far into a context rotate identically to the reference implementation. */
typedef struct be_rope {
    int n_rot;                 /* rotated dims per head, even, ≤ head_dim */
    float base;                /* rope.freq_base */
    float freq_scale;          /* 1 / linear scaling factor */
    const float *freq_factors; /* [n_rot/2] or NULL */
    be_rope_mode mode;
} be_rope;

/* Where one layer's K/V rows live: token p of a sequence with block table bt is at
 * base + bt[p / BE_KV_BLOCK] * block_stride + {k_off | v_off} + (p % BE_KV_BLOCK) * kv_dim * 2. */
typedef struct be_kv_view {
    uint8_t *base;
    size_t block_stride;
    size_t k_off, v_off;
    int kv_dim;
} be_kv_view;

/* One sequence's share of a step for attention: its queries are rows [q_row0, q_row0 + n_q) of
 * the step's matrices, at positions pos0 .. pos0 + n_q - 1; the cache holds (after kv_store)
 * positions 0 .. pos0 + n_q - 1. */
typedef struct be_attn_seq {
    int32_t q_row0, n_q, pos0;
    const int32_t *blocks; /* block table, borrowed */
} be_attn_seq;

typedef struct be_attn_params {
    int n_head, n_head_kv, head_dim;
    float scale;   /* usually 1/sqrt(head_dim) */
    int window;    /* > 0: a query at p sees keys in (p - window, p]; 0 = full causal */
    float softcap; /* > 0: scores = softcap * tanh(scores / softcap); 0 = off */
} be_attn_params;

typedef struct be_backend be_backend;

typedef struct be_ops {
    const char *name;
    void (*destroy)(be_backend *b);

    /* Memory for activations and the KV cache; alloc returns NULL on failure (zeroed memory,
     * possibly lazily committed). */
    void *(*alloc)(be_backend *b, size_t bytes);
    void (*free)(be_backend *b, void *p, size_t bytes);
    /* Copies bytes from backend memory to host memory. */
    void (*to_host)(be_backend *b, void *dst, const void *src, size_t bytes);
    /* Bytes of scratch the backend itself holds (mapped; touched as used). */
    size_t (*scratch_bytes)(const be_backend *b);

    /* For i < n: Y_i[t][r] = sum_c X[t][c] * W_i[r][c] for t < T, r < W_i->rows, with row strides
     * ldx and ldy[i]. All W_i share cols. X is quantised once per distinct activation type.
     * Several weights sharing one input (Q/K/V, gate/up) run as one parallel job. */
    void (*matmul)(be_backend *b, int n, const be_weight *const *W, const float *X, int64_t ldx,
                   int T, float *const *Y, const int64_t *ldy);
    /* y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w, for T rows of n (w may be NULL: no scale).
     * y may equal x. */
    void (*rmsnorm)(be_backend *b, float *y, int64_t ldy, const float *x, int64_t ldx,
                    const float *w, int T, int n, float eps);
    /* y[i] += x[i] for i < n. */
    void (*add)(be_backend *b, float *y, const float *x, int64_t n);
    /* g[i] = silu(g[i]) * u[i] for i < n. */
    void (*silu_mul)(be_backend *b, float *g, const float *u, int64_t n);
    /* Fills the table the rope op reads: cs[t * n_rot + 2i] = cos(theta_i(pos[t])) and
     * cs[t * n_rot + 2i + 1] = sin(...), for t < T (T * n_rot floats). Once per step. */
    void (*rope_table)(be_backend *b, float *cs, const int32_t *pos, int T, const be_rope *r);
    /* Rotates n_heads heads of head_dim in each of T rows (stride ldx) with table cs. */
    void (*rope)(be_backend *b, float *x, int64_t ldx, int T, int n_heads, int head_dim,
                 const float *cs, const be_rope *r);
    /* x[t] = row tokens[t] of E (dequantised), T rows of E->cols. Token ids are valid. */
    void (*embed)(be_backend *b, float *x, const be_weight *E, const int32_t *tokens, int T);
    /* y[i] = x[rows[i]] for i < n_rows, rows of n floats (ld n). */
    void (*get_rows)(be_backend *b, float *y, const float *x, int64_t n, const int32_t *rows,
                     int n_rows);
    /* Writes each sequence's new K and V rows (rows q_row0.. of k and v, stride ld) into the
     * cache as F16 at positions pos0 .. pos0 + n_q - 1. */
    void (*kv_store)(be_backend *b, const be_kv_view *kv, const float *k, const float *v,
                     int64_t ld, const be_attn_seq *seqs, int n_seqs);
    /* Causal attention of each sequence's queries over its cached keys/values: out rows (stride
     * ldo) get n_head * head_dim values; head h reads kv head h / (n_head / n_head_kv). */
    void (*attention)(be_backend *b, float *out, int64_t ldo, const float *q, int64_t ldq,
                      const be_kv_view *kv, const be_attn_seq *seqs, int n_seqs,
                      const be_attn_params *p);

    /* Ops added for Gemma-style blocks (the per-head RMS norm of QK-norm is rmsnorm over
     * T * n_head rows of head_dim; sliding windows are be_attn_params.window). */
    /* g[i] = gelu(g[i]) * u[i] for i < n, gelu in its tanh approximation:
     * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
    void (*gelu_mul)(be_backend *b, float *g, const float *u, int64_t n);
    /* x[i] *= s for i < n. */
    void (*scale)(be_backend *b, float *x, int64_t n, float s);
    /* x[i] = cap * tanh(x[i] / cap) for i < n (logit soft-capping; cap > 0). */
    void (*softcap)(be_backend *b, float *x, int64_t n, float cap);

    /* Optional for host-memory backends: dst = src, bytes of backend memory (queued in order
     * with the other ops). The KV cache's copy-on-write of a shared block uses it. */
    void (*copy)(be_backend *b, void *dst, const void *src, size_t bytes);

    /* Optional: host memory that to_host copies into fastest (page-locked on a GPU). NULL means
     * malloc / free. host_alloc returns NULL on failure. */
    void *(*host_alloc)(be_backend *b, size_t bytes);
    void (*host_free)(be_backend *b, void *p);
} be_ops;

struct be_backend {
    const be_ops *ops;
};

/* The CPU backend: a thread pool of n_threads and scratch for up to max_tokens activation rows
 * of up to max_cols columns, and attention over up to max_ctx positions. On PL_OK *out is owned
 * by the caller (ops->destroy). */
pl_status be_cpu_create(int n_threads, int max_tokens, int64_t max_cols, int max_ctx,
                        be_backend **out);

/* Scalar references and fast paths of the CPU kernels, exposed for the tests. */
void be_cpu_rmsnorm_row_ref(float *y, const float *x, const float *w, int n, float eps);
void be_cpu_rmsnorm_row(float *y, const float *x, const float *w, int n, float eps);
void be_cpu_silu_mul_ref(float *g, const float *u, int64_t n);
void be_cpu_silu_mul_fast(float *g, const float *u, int64_t n);
void be_cpu_gelu_mul_ref(float *g, const float *u, int64_t n);
void be_cpu_gelu_mul_fast(float *g, const float *u, int64_t n);
void be_cpu_rope_angles(const be_rope *r, int32_t pos, float *cs); /* n_rot floats: cos, sin */
void be_cpu_rope_row_ref(float *x, int n_heads, int head_dim, int32_t pos, const be_rope *r);
/* The fast path of one row, with that row's part of the rope table (n_rot floats). */
void be_cpu_rope_row(float *x, int n_heads, int head_dim, const float *cs, const be_rope *r);
/* Attention for one query row and one head over positions [p_lo, p_hi) of a paged cache (K/V
 * F16 rows at kv dimension offset `koff`), writing head_dim outputs; `scores` holds p_hi - p_lo
 * floats of scratch. The reference for be_cpu_attn_rows_fast. */
void be_cpu_attn_head_ref(float *out, const float *q, const be_kv_view *kv, const int32_t *blocks,
                          int p_lo, int p_hi, int koff, int head_dim, float scale, float softcap,
                          float *scores);
/* The fast path: causal attention for n_q consecutive queries (positions pos0 ..) times g heads
 * that share one kv head (dimension offset koff): row (t, h) reads q + t*ldq + h*head_dim and
 * writes out + t*ldo + h*head_dim. n_q * g ≤ 64. `scratch` holds be_cpu_attn_scratch_floats()
 * floats for a context of up to max_ctx positions. */
size_t be_cpu_attn_scratch_floats(int max_ctx);
void be_cpu_attn_rows_fast(float *out, int64_t ldo, const float *q, int64_t ldq,
                           const be_kv_view *kv, const int32_t *blocks, int n_q, int pos0, int g,
                           int koff, int head_dim, float scale, float softcap, int window,
                           float *scratch);

#endif
