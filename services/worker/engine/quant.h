/* quant.h — tensor element types: block layouts, dequantisation and dot products.
 *
 * Each weight type has a scalar reference (the definition, readable, slow) and a fast path
 * (AVX2+FMA+F16C; no AVX-512 path yet), selected once at start by qt_init() from the CPU's
 * features; tests compare the two on random and real blocks. Matrix products quantise the
 * activations once per row to the type's "vec_dot_type" (Q8_0 for Q4_0, Q5_0 and Q8_0;
 * GGML_Q8_1, meaning the blk_q8_1f block below, for Q4_1 and Q5_1; Q8_K for the K-quants Q4_K,
 * Q5_K and Q6_K; F32 for F32, F16 and BF16 — see qt_traits) and then take dot products between
 * a weight row and the quantised activation row.
 *
 * Block layouts are GGUF's (ggml's), byte for byte: all fields little-endian, no padding. The
 * K-quants pack 256 values into a "super-block" of 8 sub-blocks of 32 (Q4_K, Q5_K: a 6-bit
 * scale and 6-bit min per sub-block, themselves scaled by the f16 d and dmin) or 16 sub-blocks
 * of 16 (Q6_K: an int8 scale each, scaled by d); see quant_ref.c for the exact bit positions.
 *
 * Shapes: a weight matrix W is (rows = out features, cols = in features) stored row-major as
 * GGUF stores it (ne[0] = cols contiguous). `cols` must be a multiple of the type's block size.
 * Nothing here allocates or is stateful beyond the dispatch table filled by qt_init(). */
#ifndef PARLEY_QUANT_H
#define PARLEY_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

#define QK4_0        32
#define QK4_1        32
#define QK5_0        32
#define QK5_1        32
#define QK8_0        32
#define QK_K         256
#define K_SCALE_SIZE 12 /* bytes of packed 6-bit scales and mins in Q4_K and Q5_K */

typedef uint16_t qt_f16; /* IEEE half, bit pattern */
typedef uint16_t qt_bf16;

typedef struct {
    qt_f16 d;
    uint8_t qs[QK4_0 / 2];
} blk_q4_0; /* 18 bytes */
typedef struct {
    qt_f16 d, m;
    uint8_t qs[QK4_1 / 2];
} blk_q4_1; /* 20 bytes */
typedef struct {
    qt_f16 d;
    int8_t qs[QK8_0];
} blk_q8_0; /* 34 bytes */
typedef struct {
    qt_f16 d;
    uint8_t qh[4]; /* bit j (little-endian uint32) is the 5th bit of element j */
    uint8_t qs[QK5_0 / 2];
} blk_q5_0; /* 22 bytes */
typedef struct {
    qt_f16 d, m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} blk_q5_1; /* 24 bytes */
typedef struct {
    qt_f16 d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} blk_q4_k; /* 144 bytes */
typedef struct {
    qt_f16 d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} blk_q5_k; /* 176 bytes */
typedef struct {
    uint8_t ql[QK_K / 2]; /* low 4 bits */
    uint8_t qh[QK_K / 4]; /* high 2 bits */
    int8_t scales[QK_K / 16];
    qt_f16 d;
} blk_q6_k; /* 210 bytes */
/* Activation block for K-quant dots (ggml's Q8_K, 292 bytes): float d, 256 quants, and the
 * sums of each 16 quants (used for the K-quants' min and offset terms). */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} blk_q8_k;
/* Activation block for Q4_1-style dots: d, and s = d * sum(qs) (kept as float). Its traits are
 * those of GGML_Q8_1 here (40 bytes), which is NOT ggml's 36-byte file Q8_1 block. */
typedef struct {
    float d, s;
    int8_t qs[QK8_0];
} blk_q8_1f;

/* Scalar half/bfloat conversions (the reference); fast paths may use F16C. */
float qt_f16_to_f32(qt_f16 h);
qt_f16 qt_f32_to_f16(float f);
float qt_bf16_to_f32(qt_bf16 h);
qt_bf16 qt_f32_to_bf16(float f);

/* Quantises n floats (n % block == 0) into the activation format of `dot_type`.
 * `out` must hold qt_row_size(dot_type, n) bytes. */
typedef void (*qt_quantize_fn)(const float *x, void *out, int64_t n);
/* Dequantises n values (n % block == 0) of a row of this type into floats. */
typedef void (*qt_dequant_fn)(const void *row, float *out, int64_t n);
/* Dot product of a weight row (this type) with an activation row (vec_dot_type), n values. */
typedef float (*qt_dot_fn)(const void *w, const void *x, int64_t n);

typedef struct qt_traits {
    const char *name;
    int64_t block;             /* values per block */
    size_t block_bytes;        /* bytes per block */
    gguf_ttype vec_dot_type;   /* what activations are quantised to for dot products */
    qt_dequant_fn dequant;     /* fast path */
    qt_dot_fn dot;             /* fast path */
    qt_quantize_fn quantize;   /* quantise a float row into THIS type (used for activations when
                                  this type is some type's vec_dot_type; NULL if unsupported) */
    qt_dequant_fn dequant_ref; /* scalar reference */
    qt_dot_fn dot_ref;         /* scalar reference */
    qt_quantize_fn quantize_ref;
} qt_traits;

/* Selects fast paths for this CPU. Idempotent and thread-safe (call once at start anyway). */
void qt_init(void);
/* Traits of `t`, or NULL when the type is not supported (yet). */
const qt_traits *qt_get(gguf_ttype t);
/* Bytes of a row of n values of type t (n % block == 0), 0 when unsupported. */
size_t qt_row_size(gguf_ttype t, int64_t n);
/* Which path is in use: "avx2" or "scalar" (also while qt_force_scalar is on). */
const char *qt_cpu_path(void);
/* Forces the scalar references (tests and debugging). */
void qt_force_scalar(bool on);

/* y[r] = dot(W row r, x) for r in [r0, r1): W has `cols` columns of type `wt`; xq is the
 * activation row already quantised to wt's vec_dot_type. Single-threaded; the forward pass
 * splits rows across the thread pool. */
void qt_matvec_rows(gguf_ttype wt, const void *W, int64_t cols, const void *xq, float *y,
                    int64_t r0, int64_t r1);

/* Batched form: for B activation rows (each quantised, stride xq_stride bytes), computes
 * Y[b][r] (row stride ldy floats) for r in [r0, r1). Each weight row is read once and dotted
 * with all B activations while it is in cache: this is what makes batched decode pay. */
void qt_matmul_rows(gguf_ttype wt, const void *W, int64_t cols, const void *xq, size_t xq_stride,
                    int B, float *Y, int64_t ldy, int64_t r0, int64_t r1);

#endif
