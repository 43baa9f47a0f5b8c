/* quant.c — the table of tensor element types, fast-path selection, and the row-range drivers
 * qt_matvec_rows / qt_matmul_rows.
 *
 * Two tables exist: `tab_ref`, whose fast fields point at the scalar references, and `tab_fast`,
 * a copy that qt_init() lets quant_avx2.c overwrite when the CPU has AVX2, FMA and F16C. qt_get()
 * hands out entries of one or the other depending on qt_force_scalar(). Batched products go to a
 * per-type kernel that reuses each unpacked weight block across the activation rows; types
 * without one (and the scalar mode) loop over dot().
 *
 * Vec-dot types (what activations are quantised to): Q4_0, Q5_0 and Q8_0 weights → Q8_0; Q4_1
 * and Q5_1 → GGML_Q8_1, which here means our internal blk_q8_1f (40 bytes: float d, float s,
 * int8[32]), NOT ggml's 36-byte file Q8_1 — never use this table to size a Q8_1 tensor read
 * from a file; Q4_K, Q5_K and Q6_K → Q8_K (ggml's own 292-byte block, with its 16-value sums);
 * F32, F16 and BF16 weights → F32 (with F16C, converting the weight and keeping the activation
 * in f32 is as fast as an f16×f16 product and loses nothing).
 *
 * Threading: the tables are written once, under pthread_once, and read-only afterwards; the
 * force-scalar switch is an atomic flag. The drivers are single-threaded and allocate nothing;
 * the forward pass splits row ranges across its thread pool. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "quant_impl.h"

#define TRAITS(nm, blk, bytes, vdt, dq, dt, qz)                                                    \
    {                                                                                              \
        .name = (nm), .block = (blk), .block_bytes = (bytes), .vec_dot_type = (vdt),               \
        .dequant = (dq), .dot = (dt), .quantize = (qz), .dequant_ref = (dq), .dot_ref = (dt),      \
        .quantize_ref = (qz)                                                                       \
    }

static const qt_traits tab_ref[QT_NTYPES] = {
    [GGML_F32] = TRAITS("f32", 1, sizeof(float), GGML_F32, qt_ref_dequant_f32, qt_ref_dot_f32,
                        qt_ref_quantize_f32),
    [GGML_F16] = TRAITS("f16", 1, sizeof(qt_f16), GGML_F32, qt_ref_dequant_f16, qt_ref_dot_f16,
                        qt_ref_quantize_f16),
    [GGML_BF16] = TRAITS("bf16", 1, sizeof(qt_bf16), GGML_F32, qt_ref_dequant_bf16, qt_ref_dot_bf16,
                         qt_ref_quantize_bf16),
    [GGML_Q4_0] = TRAITS("q4_0", QK4_0, sizeof(blk_q4_0), GGML_Q8_0, qt_ref_dequant_q4_0,
                         qt_ref_dot_q4_0, qt_ref_quantize_q4_0),
    [GGML_Q4_1] = TRAITS("q4_1", QK4_1, sizeof(blk_q4_1), GGML_Q8_1, qt_ref_dequant_q4_1,
                         qt_ref_dot_q4_1, qt_ref_quantize_q4_1),
    [GGML_Q8_0] = TRAITS("q8_0", QK8_0, sizeof(blk_q8_0), GGML_Q8_0, qt_ref_dequant_q8_0,
                         qt_ref_dot_q8_0, qt_ref_quantize_q8_0),
    [GGML_Q5_0] = TRAITS("q5_0", QK5_0, sizeof(blk_q5_0), GGML_Q8_0, qt_ref_dequant_q5_0,
                         qt_ref_dot_q5_0, qt_ref_quantize_q5_0),
    [GGML_Q5_1] = TRAITS("q5_1", QK5_1, sizeof(blk_q5_1), GGML_Q8_1, qt_ref_dequant_q5_1,
                         qt_ref_dot_q5_1, qt_ref_quantize_q5_1),
    [GGML_Q4_K] = TRAITS("q4_K", QK_K, sizeof(blk_q4_k), GGML_Q8_K, qt_ref_dequant_q4_k,
                         qt_ref_dot_q4_k, qt_ref_quantize_q4_k),
    [GGML_Q5_K] = TRAITS("q5_K", QK_K, sizeof(blk_q5_k), GGML_Q8_K, qt_ref_dequant_q5_k,
                         qt_ref_dot_q5_k, qt_ref_quantize_q5_k),
    [GGML_Q6_K] = TRAITS("q6_K", QK_K, sizeof(blk_q6_k), GGML_Q8_K, qt_ref_dequant_q6_k,
                         qt_ref_dot_q6_k, qt_ref_quantize_q6_k),
    /* activation-only: no dot product has Q8_1 or Q8_K weights */
    [GGML_Q8_1] = TRAITS("q8_1", QK8_0, sizeof(blk_q8_1f), GGML_Q8_1, qt_ref_dequant_q8_1, NULL,
                         qt_ref_quantize_q8_1),
    [GGML_Q8_K] = TRAITS("q8_K", QK_K, sizeof(blk_q8_k), GGML_Q8_K, qt_ref_dequant_q8_k, NULL,
                         qt_ref_quantize_q8_k),
};

_Static_assert(sizeof(blk_q4_0) == 18, "blk_q4_0 layout");
_Static_assert(sizeof(blk_q4_1) == 20, "blk_q4_1 layout");
_Static_assert(sizeof(blk_q8_0) == 34, "blk_q8_0 layout");
_Static_assert(sizeof(blk_q8_1f) == 40, "blk_q8_1f layout");
_Static_assert(sizeof(blk_q5_0) == 22, "blk_q5_0 layout");
_Static_assert(sizeof(blk_q5_1) == 24, "blk_q5_1 layout");
_Static_assert(sizeof(blk_q4_k) == 144, "blk_q4_k layout");
_Static_assert(sizeof(blk_q5_k) == 176, "blk_q5_k layout");
_Static_assert(sizeof(blk_q6_k) == 210, "blk_q6_k layout");
_Static_assert(sizeof(blk_q8_k) == 292, "blk_q8_k layout (ggml's Q8_K)");
_Static_assert(GGML_BF16 < QT_NTYPES, "QT_NTYPES too small");

static qt_traits tab_fast[QT_NTYPES];
static qt_mm_fn mm_fast[QT_NTYPES];
static const char *fast_path = "scalar";
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static atomic_bool force_scalar;

static void init_tables(void)
{
    memcpy(tab_fast, tab_ref, sizeof tab_fast);
    if (qt_avx2_usable()) {
        qt_avx2_install(tab_fast, mm_fast);
        fast_path = "avx2";
        if (qt_vnni_usable() && !getenv("PARLEY_NO_VNNI")) {
            qt_vnni_install(tab_fast, mm_fast);
            fast_path = "avx512vnni";
        }
    }
}

void qt_init(void)
{
    pthread_once(&init_once, init_tables);
}

static bool scalar_mode(void)
{
    return atomic_load_explicit(&force_scalar, memory_order_relaxed);
}

const qt_traits *qt_get(gguf_ttype t)
{
    if ((int)t < 0 || (int)t >= QT_NTYPES || !tab_ref[t].name)
        return NULL;
    qt_init();
    return scalar_mode() ? &tab_ref[t] : &tab_fast[t];
}

size_t qt_row_size(gguf_ttype t, int64_t n)
{
    if ((int)t < 0 || (int)t >= QT_NTYPES || !tab_ref[t].name || n < 0 || n % tab_ref[t].block != 0)
        return 0;
    return (size_t)(n / tab_ref[t].block) * tab_ref[t].block_bytes;
}

/* The path now in use: "scalar" while forced, otherwise what qt_init() chose. */
const char *qt_cpu_path(void)
{
    qt_init();
    return scalar_mode() ? "scalar" : fast_path;
}

void qt_force_scalar(bool on)
{
    qt_init();
    atomic_store_explicit(&force_scalar, on, memory_order_relaxed);
}

void qt_matvec_rows(gguf_ttype wt, const void *W, int64_t cols, const void *xq, float *y,
                    int64_t r0, int64_t r1)
{
    qt_matmul_rows(wt, W, cols, xq, 0, 1, y, 0, r0, r1);
}

void qt_matmul_rows(gguf_ttype wt, const void *W, int64_t cols, const void *xq, size_t xq_stride,
                    int B, float *Y, int64_t ldy, int64_t r0, int64_t r1)
{
    const qt_traits *tr = qt_get(wt);
    PL_ASSERT(tr && tr->dot && cols % tr->block == 0);
    if (r1 <= r0 || B <= 0)
        return;
    if (!scalar_mode() && mm_fast[wt]) {
        mm_fast[wt](W, cols, xq, xq_stride, B, Y, ldy, r0, r1);
        return;
    }
    size_t row_bytes = qt_row_size(wt, cols);
    const char *w = (const char *)W + (size_t)r0 * row_bytes;
    for (int64_t r = r0; r < r1; r++, w += row_bytes)
        for (int b = 0; b < B; b++)
            Y[b * ldy + r] = tr->dot(w, (const char *)xq + (size_t)b * xq_stride, cols);
}
