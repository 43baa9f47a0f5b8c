/* quant_impl.h — private glue between quant.c (tables, dispatch, drivers), quant_ref.c (scalar
 * references) and quant_avx2.c (AVX2+FMA+F16C fast paths). Not part of the engine's interface:
 * only those three files include it.
 *
 * The dispatch table has one qt_traits per gguf_ttype id plus one batched matmul kernel per
 * weight type. quant.c fills it with the references, then lets each fast-path file overwrite
 * the entries it implements, after a runtime CPU check. */
#ifndef PARLEY_QUANT_IMPL_H
#define PARLEY_QUANT_IMPL_H

#include "quant.h"

/* Table size: every gguf_ttype id is below this. */
#define QT_NTYPES 31

/* Batched kernel behind qt_matmul_rows for one weight type (same contract: Y[b*ldy + r] for
 * b < B, r in [r0, r1)). For each (r, b) the result must be bit-identical to the same table's
 * dot(W row r, activation b), so that a sequence decodes the same whether or not it is batched
 * with others. */
typedef void (*qt_mm_fn)(const void *W, int64_t cols, const void *xq, size_t xq_stride, int B,
                         float *Y, int64_t ldy, int64_t r0, int64_t r1);

/* --- scalar references (quant_ref.c) -------------------------------------------------------- */
void qt_ref_dequant_f32(const void *row, float *out, int64_t n);
void qt_ref_dequant_f16(const void *row, float *out, int64_t n);
void qt_ref_dequant_bf16(const void *row, float *out, int64_t n);
void qt_ref_dequant_q4_0(const void *row, float *out, int64_t n);
void qt_ref_dequant_q4_1(const void *row, float *out, int64_t n);
void qt_ref_dequant_q8_0(const void *row, float *out, int64_t n);
void qt_ref_dequant_q8_1(const void *row, float *out, int64_t n);
void qt_ref_dequant_q5_0(const void *row, float *out, int64_t n);
void qt_ref_dequant_q5_1(const void *row, float *out, int64_t n);
void qt_ref_dequant_q4_k(const void *row, float *out, int64_t n);
void qt_ref_dequant_q5_k(const void *row, float *out, int64_t n);
void qt_ref_dequant_q6_k(const void *row, float *out, int64_t n);
void qt_ref_dequant_q8_k(const void *row, float *out, int64_t n);

/* Weight row · activation row: F32·F32, F16·F32, BF16·F32, Q4_0·Q8_0, Q4_1·Q8_1, Q8_0·Q8_0,
 * Q5_0·Q8_0, Q5_1·Q8_1, Q4_K·Q8_K, Q5_K·Q8_K, Q6_K·Q8_K. Per-block (per-sub-block) integer sums
 * are exact; the sum over blocks or elements is taken in double. */
float qt_ref_dot_f32(const void *w, const void *x, int64_t n);
float qt_ref_dot_f16(const void *w, const void *x, int64_t n);
float qt_ref_dot_bf16(const void *w, const void *x, int64_t n);
float qt_ref_dot_q4_0(const void *w, const void *x, int64_t n);
float qt_ref_dot_q4_1(const void *w, const void *x, int64_t n);
float qt_ref_dot_q8_0(const void *w, const void *x, int64_t n);
float qt_ref_dot_q5_0(const void *w, const void *x, int64_t n);
float qt_ref_dot_q5_1(const void *w, const void *x, int64_t n);
float qt_ref_dot_q4_k(const void *w, const void *x, int64_t n);
float qt_ref_dot_q5_k(const void *w, const void *x, int64_t n);
float qt_ref_dot_q6_k(const void *w, const void *x, int64_t n);

void qt_ref_quantize_f32(const float *x, void *out, int64_t n);
void qt_ref_quantize_f16(const float *x, void *out, int64_t n);
void qt_ref_quantize_bf16(const float *x, void *out, int64_t n);
void qt_ref_quantize_q4_0(const float *x, void *out, int64_t n);
void qt_ref_quantize_q4_1(const float *x, void *out, int64_t n);
void qt_ref_quantize_q8_0(const float *x, void *out, int64_t n);
void qt_ref_quantize_q8_1(const float *x, void *out, int64_t n);
void qt_ref_quantize_q5_0(const float *x, void *out, int64_t n);
void qt_ref_quantize_q5_1(const float *x, void *out, int64_t n);
void qt_ref_quantize_q4_k(const float *x, void *out, int64_t n);
void qt_ref_quantize_q5_k(const float *x, void *out, int64_t n);
void qt_ref_quantize_q6_k(const float *x, void *out, int64_t n);
void qt_ref_quantize_q8_k(const float *x, void *out, int64_t n);

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block. */
void qt_k_scale_min(const uint8_t scales[K_SCALE_SIZE], int j, uint8_t *sc, uint8_t *m);

/* --- fast paths ----------------------------------------------------------------------------- */
/* True when this CPU (and OS) can run quant_avx2.c: AVX2, FMA and F16C. */
bool qt_avx2_usable(void);
/* Overwrites the fast fields (dequant, dot, quantize) of `tab` and the entries of `mm` that
 * quant_avx2.c implements. Call only when qt_avx2_usable(). */
void qt_avx2_install(qt_traits tab[QT_NTYPES], qt_mm_fn mm[QT_NTYPES]);

/* AVX-512 VNNI (with VL) on top of AVX2 (quant_vnni.c): the 32-value block types' dot and
 * matmul, bit-identical to the AVX2 ones. Install over qt_avx2_install's, only when
 * qt_vnni_usable(). */
bool qt_vnni_usable(void);
void qt_vnni_install(qt_traits tab[QT_NTYPES], qt_mm_fn mm[QT_NTYPES]);

#endif
