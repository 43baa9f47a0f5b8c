/* backend_cpu.c — the CPU implementation of backend.h: matrix products through quant.h's kernels,
 * element-wise ops, RoPE, the F16 paged KV store and causal attention, spread over a thread pool.
 *
 * Threading: each op runs on the calling thread plus the pool (tpool_run) and returns when done.
 * Matrix products hand out chunks of weight rows to the threads (each weight row is read once
 * per step whatever the batch size); attention hands out units of (sequence, kv-head group or
 * single head, up to 16 queries) through an atomic counter, largest first; element-wise ops go
 * parallel only above a size where the fan-out pays (a decode step's 576-wide rows stay on the
 * caller's thread). Every result is a function of its own row only, so a sequence's logits are
 * bit-identical whatever it is batched with, however its prompt is chunked and on any number of
 * threads.
 *
 * Arithmetic: where a choice is free, it follows llama.cpp's CPU path (RMS-norm sums of squares
 * in double, rope angles by repeated float multiplication, F16 rounding of the query and of the
 * attention probabilities): on SmolLM2 the 8-bit activation quantisation turns one-ulp
 * differences into visible logit noise, so agreeing on the cheap roundings keeps us closer to
 * the reference (see tests/unit/engine/test_engine.c for the measured noise).
 *
 * Memory: all scratch (quantised activations, attention scores and K/V tiles) is allocated at
 * creation from the maximum sizes and mapped lazily; ops never allocate. Every SIMD kernel has a
 * scalar reference twin (…_ref) that the tests compare against. Not here: anything
 * model-specific (forward.c). */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "backend.h"
#include "quant.h"
#include "tpool.h"

#define PAR_MIN_ELEMS        32768 /* below this an element-wise op stays on the calling thread */
#define MM_ROW_ALIGN         16    /* matmul row chunks are multiples of this */
#define MM_CHUNKS_PER_THREAD 4
#define ATT_QCHUNK           16  /* at most this many queries per attention work unit */
#define ATT_MAX_ROWS         64  /* (query, head) rows per attention work unit */
#define ATT_TILE             64  /* K/V positions converted to F32 at a time */
#define ATT_MAX_HD           256 /* head sizes above this take the scalar path */
#define XQ_SLOTS             3   /* distinct activation types one matmul call may need */

typedef struct cpu_be {
    be_backend base;
    tpool *tp;
    int nth;
    int max_tokens;
    int64_t max_cols;
    int max_ctx;
    size_t xq_cap;             /* bytes per slot */
    uint8_t *xq[XQ_SLOTS];     /* quantised activations, [max_tokens][row bytes] per slot */
    size_t att_scratch_floats; /* per thread: scores [ATT_MAX_ROWS][max_ctx + 16] + one tile */
    float *att_scratch;        /* [nth][att_scratch_floats] */
    int32_t *unit_prefix;      /* [max_tokens + 1] attention units before each sequence */
} cpu_be;

/* --- memory ------------------------------------------------------------------------------------
 */

static void *cpu_alloc(be_backend *b, size_t bytes)
{
    (void)b;
    if (bytes == 0)
        bytes = 1;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void cpu_free(be_backend *b, void *p, size_t bytes)
{
    (void)b;
    if (p)
        munmap(p, bytes ? bytes : 1);
}

static void cpu_to_host(be_backend *b, void *dst, const void *src, size_t bytes)
{
    (void)b;
    if (dst != src)
        memcpy(dst, src, bytes);
}

static size_t cpu_scratch_bytes(const be_backend *b)
{
    const cpu_be *c = (const cpu_be *)b;
    return XQ_SLOTS * c->xq_cap + (size_t)c->nth * c->att_scratch_floats * sizeof(float) +
           ((size_t)c->max_tokens + 1) * sizeof(int32_t);
}

/* --- helpers -----------------------------------------------------------------------------------
 */

static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* exp(x) for 8 lanes: x = n ln2 + r with |r| ≤ ln2/2, exp(r) by its Taylor series to r^7
 * (relative error < 1e-8 before float rounding), 2^n through the exponent bits. Inputs are
 * clamped to [-87.3, 88.3] (so exp(-inf) gives ~1e-38, never NaN). */
static inline __m256 exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* Runs fn over [0, n) rows: on the caller's thread when the work is small, else on the pool.
 * The job receives (arg, ith, nth) and splits rows with tpool_split. */
static void run_rows(cpu_be *c, tpool_fn fn, void *arg, long long elems)
{
    if (c->nth == 1 || elems < PAR_MIN_ELEMS)
        fn(arg, 0, 1);
    else
        tpool_run(c->tp, fn, arg);
}

/* --- rmsnorm ------------------------------------------------------------------------------------
 */

void be_cpu_rmsnorm_row_ref(float *y, const float *x, const float *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)(x[i] * x[i]);
    float mean = (float)(ss / n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++)
        y[i] = w ? (x[i] * scale) * w[i] : x[i] * scale;
}

void be_cpu_rmsnorm_row(float *y, const float *x, const float *w, int n, float eps)
{
    int i = 0;
    /* Squares rounded to float, summed in double: what llama.cpp does, so the scale matches. */
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 sq = _mm256_mul_ps(v, v);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(a0, a1));
    double ss = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; i < n; i++)
        ss += (double)(x[i] * x[i]);
    float mean = (float)(ss / n);
    float scale = 1.0f / sqrtf(mean + eps);
    __m256 vs = _mm256_set1_ps(scale);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vs);
        if (w)
            v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; i++)
        y[i] = w ? (x[i] * scale) * w[i] : x[i] * scale;
}

typedef struct norm_job {
    float *y;
    int64_t ldy;
    const float *x;
    int64_t ldx;
    const float *w;
    int T, n;
    float eps;
} norm_job;

static void norm_run(void *arg, int ith, int nth)
{
    norm_job *j = arg;
    long long lo, hi;
    tpool_split(j->T, ith, nth, &lo, &hi);
    for (long long t = lo; t < hi; t++)
        be_cpu_rmsnorm_row(j->y + t * j->ldy, j->x + t * j->ldx, j->w, j->n, j->eps);
}

static void cpu_rmsnorm(be_backend *b, float *y, int64_t ldy, const float *x, int64_t ldx,
                        const float *w, int T, int n, float eps)
{
    norm_job j = {y, ldy, x, ldx, w, T, n, eps};
    run_rows((cpu_be *)b, norm_run, &j, (long long)T * n);
}

/* --- add, silu_mul ------------------------------------------------------------------------------
 */

typedef struct ew_job {
    float *y;
    const float *x;
    int64_t n;
} ew_job;

static void add_run(void *arg, int ith, int nth)
{
    ew_job *j = arg;
    long long lo, hi;
    tpool_split(j->n / 8, ith, nth, &lo, &hi);
    lo *= 8;
    hi = ith == nth - 1 ? j->n : hi * 8;
    long long i = lo;
    for (; i + 8 <= hi; i += 8)
        _mm256_storeu_ps(j->y + i,
                         _mm256_add_ps(_mm256_loadu_ps(j->y + i), _mm256_loadu_ps(j->x + i)));
    for (; i < hi; i++)
        j->y[i] += j->x[i];
}

static void cpu_add(be_backend *b, float *y, const float *x, int64_t n)
{
    ew_job j = {y, x, n};
    run_rows((cpu_be *)b, add_run, &j, n);
}

void be_cpu_silu_mul_ref(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void be_cpu_silu_mul_fast(float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), x));
        __m256 s = _mm256_div_ps(x, _mm256_add_ps(one, e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    be_cpu_silu_mul_ref(g + i, u + i, n - i);
}

static void silu_run(void *arg, int ith, int nth)
{
    ew_job *j = arg;
    long long lo, hi;
    tpool_split(j->n / 8, ith, nth, &lo, &hi);
    lo *= 8;
    hi = ith == nth - 1 ? j->n : hi * 8;
    be_cpu_silu_mul_fast(j->y + lo, j->x + lo, hi - lo);
}

static void cpu_silu_mul(be_backend *b, float *g, const float *u, int64_t n)
{
    ew_job j = {g, u, n};
    run_rows((cpu_be *)b, silu_run, &j, n);
}

/* --- gelu_mul, scale, softcap (Gemma) ------------------------------------------------------------
 */

#define GELU_C0 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C1 0.044715f

/* gelu as llama.cpp's CPU path computes it (so Gemma matches the reference): for |x| < 10 the
 * input is rounded to F16 and the result, 0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))) in
 * float, is rounded to F16 too; x <= -10 gives 0 and x >= 10 gives x. */
/* gelu of a value already rounded to F16, rounded to F16 (one entry of llama.cpp's table). */
static float gelu_of_f16(float xr)
{
    float y = 0.5f * xr * (1.0f + tanhf(GELU_C0 * xr * (1.0f + GELU_C1 * xr * xr)));
    return qt_f16_to_f32(qt_f32_to_f16(y));
}

static float gelu_f16_def(float x)
{
    if (x <= -10.0f)
        return 0.0f;
    if (x >= 10.0f)
        return x;
    return gelu_of_f16(qt_f16_to_f32(qt_f32_to_f16(x)));
}

void be_cpu_gelu_mul_ref(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        g[i] = gelu_f16_def(g[i]) * u[i];
}

/* The fast path looks the F16-rounded input up in a table of gelu_f16_def over all 65536 F16
 * values (256 KiB, built once), 8 lanes per gather. */
static float *gelu_table;
static pthread_once_t gelu_once = PTHREAD_ONCE_INIT;

static void gelu_table_init(void)
{
    float *t = malloc(sizeof(float) << 16);
    if (!t)
        return; /* the fast path then falls back to the definition */
    for (uint32_t h = 0; h < 65536; h++) {
        float x = qt_f16_to_f32((qt_f16)h);
        t[h] = isfinite(x) ? gelu_of_f16(x) : 0.0f;
    }
    gelu_table = t;
}

void be_cpu_gelu_mul_fast(float *g, const float *u, int64_t n)
{
    pthread_once(&gelu_once, gelu_table_init);
    int64_t i = 0;
    if (gelu_table) {
        const __m256 lo = _mm256_set1_ps(-10.0f), hi = _mm256_set1_ps(10.0f);
        for (; i + 8 <= n; i += 8) {
            __m256 x = _mm256_loadu_ps(g + i);
            __m256i h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
            __m256 y = _mm256_i32gather_ps(gelu_table, h, 4);
            y = _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, hi, _CMP_GE_OQ));
            y = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LE_OQ), y);
            _mm256_storeu_ps(g + i, _mm256_mul_ps(y, _mm256_loadu_ps(u + i)));
        }
    }
    be_cpu_gelu_mul_ref(g + i, u + i, n - i);
}

static void gelu_run(void *arg, int ith, int nth)
{
    ew_job *j = arg;
    long long lo, hi;
    tpool_split(j->n / 8, ith, nth, &lo, &hi);
    lo *= 8;
    hi = ith == nth - 1 ? j->n : hi * 8;
    be_cpu_gelu_mul_fast(j->y + lo, j->x + lo, hi - lo);
}

static void cpu_gelu_mul(be_backend *b, float *g, const float *u, int64_t n)
{
    ew_job j = {g, u, n};
    run_rows((cpu_be *)b, gelu_run, &j, n);
}

static void cpu_scale(be_backend *b, float *x, int64_t n, float s)
{
    (void)b;
    for (int64_t i = 0; i < n; i++)
        x[i] *= s;
}

static void cpu_softcap(be_backend *b, float *x, int64_t n, float cap)
{
    (void)b;
    for (int64_t i = 0; i < n; i++)
        x[i] = cap * tanhf(x[i] / cap);
}

/* --- rope ---------------------------------------------------------------------------------------
 */

void be_cpu_rope_angles(const be_rope *r, int32_t pos, float *cs)
{
    const float theta_scale = powf(r->base, -2.0f / (float)r->n_rot);
    float theta = (float)pos;
    for (int i = 0; i < r->n_rot / 2; i++) {
        float ff = r->freq_factors ? r->freq_factors[i] : 1.0f;
        float th = r->freq_scale * (theta / ff);
        cs[2 * i] = cosf(th);
        cs[2 * i + 1] = sinf(th);
        theta *= theta_scale;
    }
}

void be_cpu_rope_row_ref(float *x, int n_heads, int head_dim, int32_t pos, const be_rope *r)
{
    int half = r->n_rot / 2;
    float cs[2 * 256];
    PL_ASSERT(r->n_rot <= 512);
    be_cpu_rope_angles(r, pos, cs);
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1];
            int a = r->mode == BE_ROPE_ADJACENT ? 2 * i : i;
            int bb = r->mode == BE_ROPE_ADJACENT ? 2 * i + 1 : i + half;
            float x0 = v[a], x1 = v[bb];
            v[a] = x0 * c - x1 * s;
            v[bb] = x0 * s + x1 * c;
        }
    }
}

void be_cpu_rope_row(float *x, int n_heads, int head_dim, const float *cs, const be_rope *r)
{
    int half = r->n_rot / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * head_dim;
        if (r->mode == BE_ROPE_ADJACENT) {
            int i = 0;
            /* Four pairs per vector: v = [x0 x1 x0' x1' ...], cs = [c s c' s' ...]. */
            for (; i + 4 <= half; i += 4) {
                __m256 xv = _mm256_loadu_ps(v + 2 * i);
                __m256 t = _mm256_loadu_ps(cs + 2 * i);
                __m256 c = _mm256_moveldup_ps(t);        /* c c c' c' */
                __m256 s = _mm256_movehdup_ps(t);        /* s s s' s' */
                __m256 xs = _mm256_permute_ps(xv, 0xB1); /* x1 x0 ... */
                /* even lanes: x0 c - x1 s; odd lanes: x1 c + x0 s */
                __m256 res = _mm256_fmaddsub_ps(xv, c, _mm256_mul_ps(xs, s));
                _mm256_storeu_ps(v + 2 * i, res);
            }
            for (; i < half; i++) {
                float c = cs[2 * i], s = cs[2 * i + 1];
                float x0 = v[2 * i], x1 = v[2 * i + 1];
                v[2 * i] = x0 * c - x1 * s;
                v[2 * i + 1] = x0 * s + x1 * c;
            }
        } else {
            for (int i = 0; i < half; i++) {
                float c = cs[2 * i], s = cs[2 * i + 1];
                float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * c - x1 * s;
                v[i + half] = x0 * s + x1 * c;
            }
        }
    }
}

typedef struct rope_job {
    float *x;
    int64_t ldx;
    int T, n_heads, head_dim;
    const float *cs;
    const int32_t *pos;
    const be_rope *r;
} rope_job;

static void rope_run(void *arg, int ith, int nth)
{
    rope_job *j = arg;
    long long lo, hi;
    tpool_split(j->T, ith, nth, &lo, &hi);
    for (long long t = lo; t < hi; t++)
        be_cpu_rope_row(j->x + t * j->ldx, j->n_heads, j->head_dim, j->cs + t * j->r->n_rot, j->r);
}

static void cpu_rope(be_backend *b, float *x, int64_t ldx, int T, int n_heads, int head_dim,
                     const float *cs, const be_rope *r)
{
    rope_job j = {x, ldx, T, n_heads, head_dim, cs, NULL, r};
    run_rows((cpu_be *)b, rope_run, &j, (long long)T * n_heads * head_dim);
}

static void rope_table_run(void *arg, int ith, int nth)
{
    rope_job *j = arg;
    long long lo, hi;
    tpool_split(j->T, ith, nth, &lo, &hi);
    for (long long t = lo; t < hi; t++)
        be_cpu_rope_angles(j->r, j->pos[t], (float *)j->cs + t * j->r->n_rot);
}

static void cpu_rope_table(be_backend *b, float *cs, const int32_t *pos, int T, const be_rope *r)
{
    rope_job j = {NULL, 0, T, 0, 0, cs, pos, r};
    /* sin/cos cost ~50 flops each: weigh the work accordingly. */
    run_rows((cpu_be *)b, rope_table_run, &j, (long long)T * r->n_rot * 16);
}

/* --- embedding, get_rows ------------------------------------------------------------------------
 */

typedef struct embed_job {
    float *x;
    const be_weight *E;
    const int32_t *tokens;
    int T;
} embed_job;

static void embed_run(void *arg, int ith, int nth)
{
    embed_job *j = arg;
    const qt_traits *tr = qt_get(j->E->type);
    size_t rs = qt_row_size(j->E->type, j->E->cols);
    long long lo, hi;
    tpool_split(j->T, ith, nth, &lo, &hi);
    for (long long t = lo; t < hi; t++)
        tr->dequant((const uint8_t *)j->E->data + (size_t)j->tokens[t] * rs, j->x + t * j->E->cols,
                    j->E->cols);
}

static void cpu_embed(be_backend *b, float *x, const be_weight *E, const int32_t *tokens, int T)
{
    embed_job j = {x, E, tokens, T};
    run_rows((cpu_be *)b, embed_run, &j, (long long)T * E->cols);
}

static void cpu_get_rows(be_backend *b, float *y, const float *x, int64_t n, const int32_t *rows,
                         int n_rows)
{
    (void)b;
    for (int i = 0; i < n_rows; i++)
        if (y + i * n != x + rows[i] * n)
            memmove(y + i * n, x + rows[i] * n, (size_t)n * sizeof *y);
}

/* --- matmul -------------------------------------------------------------------------------------
 */

typedef struct mm_seg {
    const be_weight *W;
    const uint8_t *xq;
    size_t xs; /* bytes per quantised activation row */
    float *Y;
    int64_t ldy;
    int64_t row0; /* first row of this weight in the concatenated row space */
} mm_seg;

typedef struct mm_job {
    mm_seg seg[4];
    int n;
    int T;
    int64_t total_rows;
    /* quantisation stage */
    const float *X;
    int64_t ldx;
    int n_types;
    gguf_ttype types[XQ_SLOTS];
    uint8_t *xq[XQ_SLOTS];
    size_t xs[XQ_SLOTS];
    int64_t cols;
    /* row hand-out */
    int64_t chunk_rows;
    atomic_llong next;
} mm_job;

static void mm_quant_run(void *arg, int ith, int nth)
{
    mm_job *j = arg;
    long long lo, hi;
    tpool_split(j->T, ith, nth, &lo, &hi);
    for (int k = 0; k < j->n_types; k++) {
        qt_quantize_fn q = qt_get(j->types[k])->quantize;
        for (long long t = lo; t < hi; t++)
            q(j->X + t * j->ldx, j->xq[k] + (size_t)t * j->xs[k], j->cols);
    }
}

/* Rows are handed out in chunks through an atomic counter rather than split statically, so a
 * thread that loses its core for a while (other daemons share the machine) does not hold the
 * whole step back. */
static void mm_run(void *arg, int ith, int nth)
{
    (void)ith;
    (void)nth;
    mm_job *j = arg;
    for (;;) {
        int64_t k = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        int64_t lo = k * j->chunk_rows, hi = lo + j->chunk_rows;
        if (lo >= j->total_rows)
            break;
        if (hi > j->total_rows)
            hi = j->total_rows;
        for (int s = 0; s < j->n; s++) {
            const mm_seg *g = &j->seg[s];
            int64_t r0 = lo - g->row0, r1 = hi - g->row0;
            if (r0 < 0)
                r0 = 0;
            if (r1 > g->W->rows)
                r1 = g->W->rows;
            if (r0 >= r1)
                continue;
            /* quant.h's driver keeps chunks of activation rows in L2 while the rows stream. */
            qt_matmul_rows(g->W->type, g->W->data, g->W->cols, g->xq, g->xs, j->T, g->Y, g->ldy, r0,
                           r1);
        }
    }
}

static void cpu_matmul(be_backend *b, int n, const be_weight *const *W, const float *X, int64_t ldx,
                       int T, float *const *Y, const int64_t *ldy)
{
    cpu_be *c = (cpu_be *)b;
    PL_ASSERT(n >= 1 && n <= 4 && T >= 1 && T <= c->max_tokens && W[0]->cols <= c->max_cols);
    mm_job j;
    memset(&j, 0, sizeof j);
    j.n = n;
    j.T = T;
    j.X = X;
    j.ldx = ldx;
    j.cols = W[0]->cols;
    for (int i = 0; i < n; i++) {
        PL_ASSERT(W[i]->cols == j.cols);
        gguf_ttype vt = qt_get(W[i]->type)->vec_dot_type;
        int k = 0;
        while (k < j.n_types && j.types[k] != vt)
            k++;
        if (k == j.n_types) {
            PL_ASSERT(k < XQ_SLOTS);
            j.types[k] = vt;
            j.xq[k] = c->xq[k];
            j.xs[k] = qt_row_size(vt, j.cols);
            PL_ASSERT(j.xs[k] * (size_t)T <= c->xq_cap);
            j.n_types++;
        }
        j.seg[i] = (mm_seg){W[i], j.xq[k], j.xs[k], Y[i], ldy[i], j.total_rows};
        j.total_rows += W[i]->rows;
    }
    run_rows(c, mm_quant_run, &j, (long long)T * j.cols * j.n_types / 4);
    /* About MM_CHUNKS_PER_THREAD chunks per thread, each a multiple of MM_ROW_ALIGN rows. */
    int64_t per = j.total_rows / ((int64_t)c->nth * MM_CHUNKS_PER_THREAD);
    j.chunk_rows = (per + MM_ROW_ALIGN - 1) / MM_ROW_ALIGN * MM_ROW_ALIGN;
    if (j.chunk_rows < MM_ROW_ALIGN)
        j.chunk_rows = MM_ROW_ALIGN;
    atomic_init(&j.next, 0);
    if (c->nth == 1)
        mm_run(&j, 0, 1);
    else
        tpool_run(c->tp, mm_run, &j);
}

/* --- KV store -----------------------------------------------------------------------------------
 */

static inline uint8_t *kv_row(const be_kv_view *kv, const int32_t *blocks, int p, size_t off)
{
    return kv->base + (size_t)blocks[p / BE_KV_BLOCK] * kv->block_stride + off +
           (size_t)(p % BE_KV_BLOCK) * (size_t)kv->kv_dim * 2;
}

static void f32_to_f16_row(uint16_t *dst, const float *src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = qt_f32_to_f16(src[i]);
}

static void cpu_kv_store(be_backend *b, const be_kv_view *kv, const float *k, const float *v,
                         int64_t ld, const be_attn_seq *seqs, int n_seqs)
{
    (void)b;
    for (int s = 0; s < n_seqs; s++) {
        const be_attn_seq *q = &seqs[s];
        for (int t = 0; t < q->n_q; t++) {
            int p = q->pos0 + t;
            int64_t row = q->q_row0 + t;
            f32_to_f16_row((uint16_t *)kv_row(kv, q->blocks, p, kv->k_off), k + row * ld,
                           kv->kv_dim);
            f32_to_f16_row((uint16_t *)kv_row(kv, q->blocks, p, kv->v_off), v + row * ld,
                           kv->kv_dim);
        }
    }
}

/* --- attention ----------------------------------------------------------------------------------
 */

static inline float f16_round(float x)
{
    return qt_f16_to_f32(qt_f32_to_f16(x));
}

/* The arithmetic follows llama.cpp's CPU attention without flash attention (the reference our
 * goldens come from): the query is rounded to F16 for the K·q products, scores are scaled after
 * the dot product, the softmax is taken in float with its sum in double, and the probabilities
 * are rounded to F16 before they weight the V rows. Each rounding is far below the model's own
 * noise, but matching them keeps the 8-bit activation quantisation of the next layer from
 * flipping differently, which is what decides whether two implementations agree to 1e-4. */
void be_cpu_attn_head_ref(float *out, const float *q, const be_kv_view *kv, const int32_t *blocks,
                          int p_lo, int p_hi, int koff, int head_dim, float scale, float softcap,
                          float *scores)
{
    float mx = -INFINITY;
    for (int p = p_lo; p < p_hi; p++) {
        const uint16_t *kr = (const uint16_t *)kv_row(kv, blocks, p, kv->k_off) + koff;
        float s = 0;
        for (int d = 0; d < head_dim; d++)
            s += f16_round(q[d]) * qt_f16_to_f32(kr[d]);
        s *= scale;
        if (softcap > 0)
            s = softcap * tanhf(s / softcap);
        scores[p - p_lo] = s;
        if (s > mx)
            mx = s;
    }
    double sum = 0;
    for (int p = p_lo; p < p_hi; p++) {
        float e = expf(scores[p - p_lo] - mx);
        scores[p - p_lo] = e;
        sum += e;
    }
    float inv = (float)(1.0 / sum);
    for (int d = 0; d < head_dim; d++)
        out[d] = 0;
    for (int p = p_lo; p < p_hi; p++) {
        const uint16_t *vr = (const uint16_t *)kv_row(kv, blocks, p, kv->v_off) + koff;
        float w = f16_round(scores[p - p_lo] * inv);
        for (int d = 0; d < head_dim; d++)
            out[d] += w * qt_f16_to_f32(vr[d]);
    }
}

/* Sums of eight vectors: lane k of the result is the horizontal sum of a[k]. */
static inline __m256 reduce8(const __m256 a[8])
{
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                         _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Converts rows [p0, p1) of one kv head (F16, dimension offset koff, `off` = k_off or v_off)
 * into tile[(p - p0) * hd + d] as F32, and zeroes rows up to the next multiple of 8. */
static void load_tile(float *tile, const be_kv_view *kv, const int32_t *blocks, size_t off,
                      int koff, int hd, int p0, int p1)
{
    for (int p = p0; p < p1; p++) {
        const uint16_t *src = (const uint16_t *)kv_row(kv, blocks, p, off) + koff;
        float *dst = tile + (size_t)(p - p0) * hd;
        for (int d = 0; d < hd; d += 8)
            _mm256_storeu_ps(dst + d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + d))));
    }
    int n = p1 - p0, n8 = (n + 7) & ~7;
    memset(tile + (size_t)n * hd, 0, (size_t)(n8 - n) * hd * sizeof(float));
}

size_t be_cpu_attn_scratch_floats(int max_ctx)
{
    return (size_t)ATT_MAX_ROWS * ((size_t)max_ctx + 16) + (size_t)ATT_TILE * ATT_MAX_HD;
}

void be_cpu_attn_rows_fast(float *out, int64_t ldo, const float *q, int64_t ldq,
                           const be_kv_view *kv, const int32_t *blocks, int n_q, int pos0, int g,
                           int koff, int hd, float scale, float softcap, int window, float *scratch)
{
    const int R = n_q * g;
    PL_ASSERT(R >= 1 && R <= ATT_MAX_ROWS);
    const int hi_max = pos0 + n_q;
    const int lo_min = window > 0 && pos0 + 1 > window ? pos0 + 1 - window : 0;
    if (hd % 8 != 0 || hd > ATT_MAX_HD) {
        for (int r = 0; r < R; r++) {
            int t = r / g, h = r % g, pos = pos0 + t;
            int lo = window > 0 && pos + 1 > window ? pos + 1 - window : 0;
            be_cpu_attn_head_ref(out + t * ldo + h * hd, q + t * ldq + h * hd, kv, blocks, lo,
                                 pos + 1, koff, hd, scale, softcap, scratch);
        }
        return;
    }
    const int nv = hd / 8;
    const size_t ss = (size_t)(hi_max - lo_min + 16) & ~(size_t)7; /* score row stride */
    float *S = scratch, *tile = scratch + (size_t)R * ss;

    /* Scores: S[r][p - lo_min] = scale * q_r · k_p, one tile of positions at a time. */
    for (int ts = lo_min; ts < hi_max; ts += ATT_TILE) {
        int te = ts + ATT_TILE < hi_max ? ts + ATT_TILE : hi_max;
        load_tile(tile, kv, blocks, kv->k_off, koff, hd, ts, te);
        for (int r = 0; r < R; r++) {
            int t = r / g, h = r % g, row_hi = pos0 + t + 1;
            if (ts >= row_hi)
                continue;
            int e = te < row_hi ? te : row_hi;
            const float *qr = q + t * ldq + h * hd;
            __m256 qv[ATT_MAX_HD / 8];
            __m256 vs = _mm256_set1_ps(scale);
            for (int i = 0; i < nv; i++) /* q rounded to F16, as the reference does */
                qv[i] = _mm256_cvtph_ps(
                    _mm256_cvtps_ph(_mm256_loadu_ps(qr + 8 * i), _MM_FROUND_TO_NEAREST_INT));
            float *sr = S + (size_t)r * ss + (ts - lo_min);
            for (int j0 = 0; j0 < e - ts; j0 += 8) {
                __m256 a[8];
                for (int k = 0; k < 8; k++) {
                    const float *kr = tile + (size_t)(j0 + k) * hd;
                    __m256 acc = _mm256_mul_ps(qv[0], _mm256_loadu_ps(kr));
                    for (int i = 1; i < nv; i++)
                        acc = _mm256_fmadd_ps(qv[i], _mm256_loadu_ps(kr + 8 * i), acc);
                    a[k] = acc;
                }
                _mm256_storeu_ps(sr + j0, _mm256_mul_ps(reduce8(a), vs));
            }
        }
    }
    /* Softmax of each row over its own range, normalised. */
    for (int r = 0; r < R; r++) {
        int t = r / g, pos = pos0 + t;
        int lo = window > 0 && pos + 1 > window ? pos + 1 - window : 0;
        float *sr = S + (size_t)r * ss + (lo - lo_min);
        int n = pos + 1 - lo, i = 0;
        if (softcap > 0)
            for (int k = 0; k < n; k++)
                sr[k] = softcap * tanhf(sr[k] / softcap);
        float mx = -INFINITY;
        for (int k = 0; k < n; k++)
            mx = sr[k] > mx ? sr[k] : mx;
        __m256 vmx = _mm256_set1_ps(mx);
        __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
        for (; i + 8 <= n; i += 8) {
            __m256 ev = exp256(_mm256_sub_ps(_mm256_loadu_ps(sr + i), vmx));
            _mm256_storeu_ps(sr + i, ev);
            s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(ev)));
            s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(ev, 1)));
        }
        double lanes[4];
        _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
        double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
        for (; i < n; i++) {
            sr[i] = expf(sr[i] - mx);
            sum += sr[i];
        }
        /* Normalised probabilities, rounded to F16 as the reference does. */
        __m256 vinv = _mm256_set1_ps((float)(1.0 / sum));
        i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(sr + i, _mm256_cvtph_ps(_mm256_cvtps_ph(
                                         _mm256_mul_ps(_mm256_loadu_ps(sr + i), vinv),
                                         _MM_FROUND_TO_NEAREST_INT)));
        for (; i < n; i++)
            sr[i] = f16_round(sr[i] * _mm256_cvtss_f32(vinv));
        float *o = out + t * ldo + (r % g) * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
    }
    /* out_r = sum_p prob_r[p] * v_p, one tile of V rows at a time. */
    for (int ts = lo_min; ts < hi_max; ts += ATT_TILE) {
        int te = ts + ATT_TILE < hi_max ? ts + ATT_TILE : hi_max;
        load_tile(tile, kv, blocks, kv->v_off, koff, hd, ts, te);
        for (int r = 0; r < R; r++) {
            int t = r / g, pos = pos0 + t;
            int lo = window > 0 && pos + 1 > window ? pos + 1 - window : 0;
            int p0 = lo > ts ? lo : ts, p1 = pos + 1 < te ? pos + 1 : te;
            if (p0 >= p1)
                continue;
            float *o = out + t * ldo + (r % g) * hd;
            const float *sr = S + (size_t)r * ss - lo_min;
            __m256 acc[ATT_MAX_HD / 8];
            for (int i = 0; i < nv; i++)
                acc[i] = _mm256_loadu_ps(o + 8 * i);
            for (int p = p0; p < p1; p++) {
                __m256 w = _mm256_set1_ps(sr[p]);
                const float *vr = tile + (size_t)(p - ts) * hd;
                for (int i = 0; i < nv; i++)
                    acc[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 8 * i), acc[i]);
            }
            for (int i = 0; i < nv; i++)
                _mm256_storeu_ps(o + 8 * i, acc[i]);
        }
    }
}

typedef struct attn_job {
    cpu_be *c;
    float *out;
    int64_t ldo;
    const float *q;
    int64_t ldq;
    const be_kv_view *kv;
    const be_attn_seq *seqs;
    int n_seqs;
    const be_attn_params *p;
    int gsz;      /* query heads per unit (all heads of a kv head, or 1) */
    int nq_chunk; /* queries per unit */
    int32_t n_units;
    atomic_int next;
} attn_job;

static void attn_unit(attn_job *j, int32_t u, float *scratch)
{
    const be_attn_params *p = j->p;
    /* Find the sequence: the last s with unit_prefix[s] <= u. */
    int lo = 0, hi = j->n_seqs - 1;
    const int32_t *pre = j->c->unit_prefix;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (pre[mid] <= u)
            lo = mid;
        else
            hi = mid - 1;
    }
    const be_attn_seq *s = &j->seqs[lo];
    int32_t k = u - pre[lo];
    int n_chunks = (s->n_q + j->nq_chunk - 1) / j->nq_chunk;
    int hg = k / n_chunks;
    int chunk = n_chunks - 1 - k % n_chunks; /* later chunks (more keys) first */
    int head0 = hg * j->gsz;
    int kvh = head0 / (p->n_head / p->n_head_kv);
    int t0 = chunk * j->nq_chunk;
    int nq = s->n_q - t0 < j->nq_chunk ? s->n_q - t0 : j->nq_chunk;
    int64_t row = s->q_row0 + t0;
    be_cpu_attn_rows_fast(j->out + row * j->ldo + (int64_t)head0 * p->head_dim, j->ldo,
                          j->q + row * j->ldq + (int64_t)head0 * p->head_dim, j->ldq, j->kv,
                          s->blocks, nq, s->pos0 + t0, j->gsz, kvh * p->head_dim, p->head_dim,
                          p->scale, p->softcap, p->window, scratch);
}

static void attn_run(void *arg, int ith, int nth)
{
    (void)nth;
    attn_job *j = arg;
    float *scratch = j->c->att_scratch + (size_t)ith * j->c->att_scratch_floats;
    for (;;) {
        int u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (u >= j->n_units)
            break;
        attn_unit(j, u, scratch);
    }
}

static void cpu_attention(be_backend *b, float *out, int64_t ldo, const float *q, int64_t ldq,
                          const be_kv_view *kv, const be_attn_seq *seqs, int n_seqs,
                          const be_attn_params *p)
{
    cpu_be *c = (cpu_be *)b;
    const int G = p->n_head / p->n_head_kv;
    PL_ASSERT(n_seqs >= 1 && n_seqs <= c->max_tokens && G >= 1 && p->n_head % p->n_head_kv == 0);
    attn_job j = {.c = c,
                  .out = out,
                  .ldo = ldo,
                  .q = q,
                  .ldq = ldq,
                  .kv = kv,
                  .seqs = seqs,
                  .n_seqs = n_seqs,
                  .p = p};
    /* Whole GQA groups share each K/V tile; when that leaves too few units to keep the threads
     * busy (decoding one sequence), split groups into single heads. */
    j.gsz = G <= ATT_MAX_ROWS ? G : 1;
    for (int pass = 0; pass < 2; pass++) {
        j.nq_chunk = ATT_MAX_ROWS / j.gsz;
        if (j.nq_chunk > ATT_QCHUNK)
            j.nq_chunk = ATT_QCHUNK;
        int32_t units = 0;
        for (int s = 0; s < n_seqs; s++) {
            PL_ASSERT(seqs[s].pos0 + seqs[s].n_q <= c->max_ctx);
            c->unit_prefix[s] = units;
            units += (p->n_head / j.gsz) * ((seqs[s].n_q + j.nq_chunk - 1) / j.nq_chunk);
        }
        c->unit_prefix[n_seqs] = units;
        j.n_units = units;
        if (j.gsz == 1 || units >= 2 * c->nth)
            break;
        j.gsz = 1;
    }
    atomic_init(&j.next, 0);
    if (c->nth == 1)
        attn_run(&j, 0, 1);
    else
        tpool_run(c->tp, attn_run, &j);
}

/* --- lifecycle ----------------------------------------------------------------------------------
 */

static void cpu_destroy(be_backend *b)
{
    cpu_be *c = (cpu_be *)b;
    if (!c)
        return;
    for (int k = 0; k < XQ_SLOTS; k++)
        cpu_free(b, c->xq[k], c->xq_cap);
    cpu_free(b, c->att_scratch, (size_t)c->nth * c->att_scratch_floats * sizeof(float));
    free(c->unit_prefix);
    tpool_destroy(c->tp);
    free(c);
}

static const be_ops CPU_OPS = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_host = cpu_to_host,
    .scratch_bytes = cpu_scratch_bytes,
    .matmul = cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .add = cpu_add,
    .silu_mul = cpu_silu_mul,
    .rope_table = cpu_rope_table,
    .rope = cpu_rope,
    .embed = cpu_embed,
    .get_rows = cpu_get_rows,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .gelu_mul = cpu_gelu_mul,
    .scale = cpu_scale,
    .softcap = cpu_softcap,
};

pl_status be_cpu_create(int n_threads, int max_tokens, int64_t max_cols, int max_ctx,
                        be_backend **out)
{
    *out = NULL;
    if (n_threads < 1 || max_tokens < 1 || max_cols < 1 || max_ctx < 1)
        return PL_ERRF(PL_INVALID, "cpu backend: invalid sizes");
    qt_init();
    cpu_be *c = calloc(1, sizeof *c);
    if (!c)
        return PL_ERRF(PL_NOMEM, "cpu backend: out of memory");
    c->base.ops = &CPU_OPS;
    c->nth = n_threads;
    c->max_tokens = max_tokens;
    c->max_cols = max_cols;
    c->max_ctx = max_ctx;
    pl_status st = tpool_create(n_threads, &c->tp);
    if (st != PL_OK) {
        free(c);
        return st;
    }
    /* Worst case 4 bytes per value (F32 activations for F32/F16 weights). */
    c->xq_cap = (size_t)max_tokens * (size_t)max_cols * 4;
    for (int k = 0; k < XQ_SLOTS; k++)
        c->xq[k] = cpu_alloc(&c->base, c->xq_cap);
    c->att_scratch_floats = be_cpu_attn_scratch_floats(max_ctx);
    c->att_scratch = cpu_alloc(&c->base, (size_t)n_threads * c->att_scratch_floats * sizeof(float));
    c->unit_prefix = malloc(((size_t)max_tokens + 1) * sizeof(int32_t));
    if (!c->xq[0] || !c->xq[1] || !c->xq[2] || !c->att_scratch || !c->unit_prefix) {
        cpu_destroy(&c->base);
        return PL_ERRF(PL_NOMEM, "cpu backend: out of memory for scratch");
    }
    *out = &c->base;
    return PL_OK;
}
