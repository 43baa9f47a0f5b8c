/* test_blocks_host.c — the CUDA backend's per-block arithmetic (kernels/blocks.cuh), compiled as
 * C and run on the host against the CPU references of services/worker/engine/quant_ref.c.
 *
 * What is checked, per type, on random blocks with sane scales:
 *   - layouts: sizeof each kb_* block equals the CPU's qt_traits block_bytes (when the CPU knows
 *     the type) and the ggml sizes;
 *   - dequantisation bit-identical to the reference dequantiser;
 *   - the quantised-activation dot (weight block · Q8_0 / Q8_1 / Q8_K block) against the
 *     reference dot with the activation quantised by the reference quantiser, within 1e-5 of the
 *     norm Σ|w_i x_i|, and against the exact dot of the dequantised operands;
 *   - activation quantisers bit-identical to the reference ones;
 *   - half and bfloat conversions bit-identical over every half and many float bit patterns.
 * A type the CPU engine does not know yet (the K-quants and Q5_x arrive in another change) is
 * still checked for internal consistency (quantised dot == float dot of the dequantised operands,
 * hand-made blocks pinning the layout); the comparison with the reference then prints
 * "skipped: no CPU reference for <type>" and turns on by itself once qt_get() knows the type. */
#include <stdint.h>
#include <stdlib.h>

#include "../../../kernels/blocks.cuh"
#include "../harness.h"
#include "gguf.h"
#include "quant.h"

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rnext(rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ULL;
}

static float runit(rng *r) /* [-1, 1) */
{
    return (float)((double)(rnext(r) >> 40) / 8388608.0 - 1.0);
}

/* A finite half scale, magnitude 2^-12 .. 2^1, random sign (zero rarely). */
static uint16_t rscale(rng *r)
{
    if (rnext(r) % 64 == 0)
        return 0;
    float mag = ldexpf(1.0f + fabsf(runit(r)), (int)(rnext(r) % 13) - 12);
    return kb_f32_to_f16(runit(r) < 0 ? -mag : mag);
}

/* --- the table of types under test ------------------------------------------------------------ */

typedef struct bt_type {
    gguf_ttype t;
    const char *name;
    int block;         /* values per block */
    size_t bytes;      /* ggml's block size */
    gguf_ttype act;    /* activation type of the quantised dot (GGML_F32: none) */
    size_t act_bytes;  /* bytes of one activation block */
    int scale_offs[2]; /* byte offsets of f16 scale fields to make sane (-1: none) */
    void (*dequant)(const void *b, float *out);
    float (*dot_q)(const void *b, const void *xq);
} bt_type;

#define WRAP(T)                                                                                    \
    static void dq_##T(const void *b, float *o)                                                    \
    {                                                                                              \
        kb_dequant_##T((const kb_##T *)b, o);                                                      \
    }
WRAP(q4_0)
WRAP(q4_1)
WRAP(q5_0)
WRAP(q5_1)
WRAP(q8_0)
WRAP(q4_k)
WRAP(q5_k)
WRAP(q6_k)

#define WRAPQ(T, A)                                                                                \
    static float dq_##T##_##A(const void *b, const void *x)                                        \
    {                                                                                              \
        return kb_dot_##T##_##A((const kb_##T *)b, (const kb_##A *)x);                             \
    }
WRAPQ(q4_0, q8_0)
WRAPQ(q5_0, q8_0)
WRAPQ(q8_0, q8_0)
WRAPQ(q4_1, q8_1)
WRAPQ(q5_1, q8_1)
WRAPQ(q4_k, q8_k)
WRAPQ(q5_k, q8_k)
WRAPQ(q6_k, q8_k)

/* Float types: a "block" of 32 values. */
static void dq_f32(const void *b, float *o)
{
    memcpy(o, b, 32 * sizeof(float));
}
static void dq_f16(const void *b, float *o)
{
    const uint16_t *h = b;
    for (int i = 0; i < 32; i++)
        o[i] = kb_f16_to_f32(h[i]);
}
static void dq_bf16(const void *b, float *o)
{
    const uint16_t *h = b;
    for (int i = 0; i < 32; i++)
        o[i] = kb_bf16_to_f32(h[i]);
}

static const bt_type types[] = {
    {GGML_F32, "f32", 32, 128, GGML_F32, 0, {-1, -1}, dq_f32, NULL},
    {GGML_F16, "f16", 32, 64, GGML_F32, 0, {-1, -1}, dq_f16, NULL},
    {GGML_BF16, "bf16", 32, 64, GGML_F32, 0, {-1, -1}, dq_bf16, NULL},
    {GGML_Q4_0, "q4_0", 32, 18, GGML_Q8_0, 34, {0, -1}, dq_q4_0, dq_q4_0_q8_0},
    {GGML_Q4_1, "q4_1", 32, 20, GGML_Q8_1, 40, {0, 2}, dq_q4_1, dq_q4_1_q8_1},
    {GGML_Q5_0, "q5_0", 32, 22, GGML_Q8_0, 34, {0, -1}, dq_q5_0, dq_q5_0_q8_0},
    {GGML_Q5_1, "q5_1", 32, 24, GGML_Q8_1, 40, {0, 2}, dq_q5_1, dq_q5_1_q8_1},
    {GGML_Q8_0, "q8_0", 32, 34, GGML_Q8_0, 34, {0, -1}, dq_q8_0, dq_q8_0_q8_0},
    {GGML_Q4_K, "q4_k", 256, 144, GGML_Q8_K, 292, {0, 2}, dq_q4_k, dq_q4_k_q8_k},
    {GGML_Q5_K, "q5_k", 256, 176, GGML_Q8_K, 292, {0, 2}, dq_q5_k, dq_q5_k_q8_k},
    {GGML_Q6_K, "q6_k", 256, 210, GGML_Q8_K, 292, {208, -1}, dq_q6_k, dq_q6_k_q8_k},
};
#define N_TYPES (sizeof types / sizeof types[0])

/* Random weight block bytes with sane f16 scales (float types: finite random values). */
static void rand_block(rng *r, const bt_type *ty, uint8_t *blk)
{
    if (ty->t == GGML_F32) {
        for (int i = 0; i < 32; i++) {
            float v = runit(r) * 4;
            memcpy(blk + 4 * i, &v, 4);
        }
        return;
    }
    if (ty->t == GGML_F16 || ty->t == GGML_BF16) {
        for (int i = 0; i < 32; i++) {
            float v = runit(r) * 4;
            uint16_t h = ty->t == GGML_F16 ? kb_f32_to_f16(v) : (uint16_t)(kb_f32_bits(v) >> 16);
            memcpy(blk + 2 * i, &h, 2);
        }
        return;
    }
    for (size_t i = 0; i < ty->bytes; i++)
        blk[i] = (uint8_t)rnext(r);
    for (int k = 0; k < 2; k++)
        if (ty->scale_offs[k] >= 0) {
            uint16_t d = rscale(r);
            memcpy(blk + ty->scale_offs[k], &d, 2);
        }
}

/* Our activation quantiser for one block of `act` (block values from x). */
static void kb_quant_act(gguf_ttype act, const float *x, void *out)
{
    if (act == GGML_Q8_0)
        kb_quantize_q8_0(x, out);
    else if (act == GGML_Q8_1)
        kb_quantize_q8_1(x, out);
    else
        kb_quantize_q8_k(x, out);
}

/* Dequantises one of our activation blocks. */
static void kb_dequant_act(gguf_ttype act, const void *xq, float *out)
{
    if (act == GGML_Q8_0) {
        kb_dequant_q8_0(xq, out);
    } else if (act == GGML_Q8_1) {
        const kb_q8_1 *b = xq;
        for (int i = 0; i < 32; i++)
            out[i] = (float)b->qs[i] * b->d;
    } else {
        const kb_q8_k *b = xq;
        for (int i = 0; i < 256; i++)
            out[i] = (float)b->qs[i] * b->d;
    }
}

static double dot_d(const float *a, const float *b, int n, double *norm)
{
    double s = 0, nm = 0;
    for (int i = 0; i < n; i++) {
        s += (double)a[i] * b[i];
        nm += fabs((double)a[i] * b[i]);
    }
    *norm = nm;
    return s;
}

/* --- tests ------------------------------------------------------------------------------------ */

TEST(kblocks_layout_sizes)
{
    qt_init();
    CHECK_EQ_INT(sizeof(kb_q4_0), 18);
    CHECK_EQ_INT(sizeof(kb_q4_1), 20);
    CHECK_EQ_INT(sizeof(kb_q5_0), 22);
    CHECK_EQ_INT(sizeof(kb_q5_1), 24);
    CHECK_EQ_INT(sizeof(kb_q8_0), 34);
    CHECK_EQ_INT(sizeof(kb_q8_1), 40);
    CHECK_EQ_INT(sizeof(kb_q4_k), 144);
    CHECK_EQ_INT(sizeof(kb_q5_k), 176);
    CHECK_EQ_INT(sizeof(kb_q6_k), 210);
    CHECK_EQ_INT(sizeof(kb_q8_k), 292);
    CHECK_EQ_INT(sizeof(kb_q8_1), sizeof(blk_q8_1f));
    for (size_t i = 0; i < N_TYPES; i++) {
        const qt_traits *tr = qt_get(types[i].t);
        if (!tr || types[i].t == GGML_F32 || types[i].t == GGML_F16 || types[i].t == GGML_BF16)
            continue;
        CHECK_EQ_INT(tr->block, types[i].block);
        CHECK_EQ_INT(tr->block_bytes, types[i].bytes);
    }
}

TEST(kblocks_half_conversions_match_reference)
{
    qt_init();
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t a = kb_f32_bits(kb_f16_to_f32((uint16_t)h));
        uint32_t b = kb_f32_bits(qt_f16_to_f32((qt_f16)h));
        bad += a != b;
        bad += kb_f32_bits(kb_bf16_to_f32((uint16_t)h)) != kb_f32_bits(qt_bf16_to_f32((qt_bf16)h));
    }
    CHECK_EQ_INT(bad, 0);
    rng r = {0x9e3779b97f4a7c15ULL};
    static const uint32_t special[] = {0,           0x80000000u, 0x7f800000u, 0xff800000u,
                                       0x7fc00001u, 0x477ff000u, 0x477fefffu, 0x38800000u,
                                       0x387fffffu, 0x33000000u, 0x33000001u, 0x32ffffffu};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        bad += kb_f32_to_f16(kb_bits_f32(special[i])) != qt_f32_to_f16(kb_bits_f32(special[i]));
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)rnext(&r);
        if (i % 2) /* concentrate on the half range */
            u = (u & 0x807fffffu) | ((uint32_t)(100 + rnext(&r) % 45) << 23);
        bad += kb_f32_to_f16(kb_bits_f32(u)) != qt_f32_to_f16(kb_bits_f32(u));
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(kblocks_activation_quantisers_match_reference)
{
    qt_init();
    rng r = {42};
    float x[256];
    int bad = 0;
    for (int it = 0; it < 2000; it++) {
        for (int i = 0; i < 256; i++)
            x[i] = it % 7 == 0 ? 0.0f : runit(&r) * (float)(1 + it % 13) * (it % 3 ? 1 : 1e-3f);
        kb_q8_0 a;
        blk_q8_0 ar;
        kb_quantize_q8_0(x, &a);
        qt_get(GGML_Q8_0)->quantize_ref(x, &ar, 32);
        bad += memcmp(&a, &ar, sizeof a) != 0;
        kb_q8_1 b;
        blk_q8_1f br;
        kb_quantize_q8_1(x, &b);
        qt_get(GGML_Q8_1)->quantize_ref(x, &br, 32);
        bad += memcmp(&b, &br, sizeof b) != 0;
        const qt_traits *tk = qt_get(GGML_Q8_K);
        if (tk && tk->quantize_ref && tk->block_bytes == sizeof(kb_q8_k)) {
            kb_q8_k c, cr;
            kb_quantize_q8_k(x, &c);
            tk->quantize_ref(x, &cr, 256);
            bad += memcmp(&c, &cr, sizeof c) != 0;
        }
        /* Q8_K self-consistency: every value within half a step, bsums add up. */
        kb_q8_k c;
        kb_quantize_q8_k(x, &c);
        int sum = 0;
        for (int g = 0; g < 16; g++)
            sum += c.bsums[g];
        int qsum = 0;
        for (int i = 0; i < 256; i++)
            qsum += c.qs[i];
        bad += sum != qsum;
        for (int i = 0; i < 256; i++)
            bad += fabsf((float)c.qs[i] * c.d - x[i]) > fabsf(c.d) * 0.5f + 1e-6f * fabsf(x[i]);
    }
    CHECK_EQ_INT(bad, 0);
    if (!qt_get(GGML_Q8_K))
        printf("  kblocks: skipped: no CPU reference quantiser for q8_k yet\n");
}

/* Runs every check of one type over `n_blocks` random blocks. */
static void check_type(const bt_type *ty, int n_blocks)
{
    rng r = {0x1234u + (uint64_t)ty->t * 7919u};
    const qt_traits *tr = qt_get(ty->t);
    const qt_traits *ta = ty->dot_q ? qt_get(ty->act) : NULL;
    bool ref_dot = tr && tr->dot_ref && tr->vec_dot_type == ty->act && ty->dot_q && ta &&
                   ta->quantize_ref && ta->block_bytes == ty->act_bytes;
    uint8_t blk[512], xq[512], xqr[512];
    float x[256], w[256], wr[256], xd[256];
    int bad_dq = 0, bad_q = 0, bad_self = 0;
    for (int it = 0; it < n_blocks; it++) {
        rand_block(&r, ty, blk);
        for (int i = 0; i < ty->block; i++)
            x[i] = runit(&r) * (float)(1 + it % 5);
        ty->dequant(blk, w);
        /* dequantisation against the reference */
        if (tr && tr->dequant_ref) {
            tr->dequant_ref(blk, wr, ty->block);
            bad_dq += memcmp(w, wr, (size_t)ty->block * sizeof(float)) != 0;
        }
        if (!ty->dot_q)
            continue;
        /* quantised dot: self-consistency with our own quantiser */
        kb_quant_act(ty->act, x, xq);
        kb_dequant_act(ty->act, xq, xd);
        double qnorm, qexact = dot_d(w, xd, ty->block, &qnorm);
        float q = ty->dot_q(blk, xq);
        bad_self += !(fabs(q - qexact) <= 1e-5 * qnorm + 1e-30);
        /* and against the reference dot with the reference's quantised activations */
        if (ref_dot) {
            ta->quantize_ref(x, xqr, ty->block);
            float rq = tr->dot_ref(blk, xqr, ty->block);
            float q2 = ty->dot_q(blk, xqr);
            bad_q += !(fabs(q2 - rq) <= 1e-5 * qnorm + 1e-6 * fabs(rq) + 1e-30);
        }
    }
    if (bad_dq || bad_q || bad_self)
        th_fail(__FILE__, __LINE__, "%s: %d dequant, %d ref-dot, %d self-dot mismatches", ty->name,
                bad_dq, bad_q, bad_self);
    th_checked();
    if (!tr)
        printf("  kblocks: %s: skipped: no CPU reference for %s yet (self-checks only)\n", ty->name,
               ty->name);
    else if (ty->dot_q && !ref_dot)
        printf("  kblocks: %s: skipped: CPU reference dot uses another activation format\n",
               ty->name);
}

TEST(kblocks_all_types_against_reference)
{
    qt_init();
    for (size_t i = 0; i < N_TYPES; i++)
        check_type(&types[i], types[i].block == 256 ? 600 : 3000);
}

/* Hand-made blocks pin the layouts independently of any reference. */
TEST(kblocks_hand_made_layouts)
{
    float out[256];
    kb_q5_0 a = {.d = 0x3c00}; /* 1.0 */
    for (int j = 0; j < 16; j++)
        a.qs[j] = (uint8_t)(j | (15 - j) << 4);
    a.qh[0] = 0x01; /* value 0 gets its high bit */
    a.qh[2] = 0x01; /* value 16 too */
    kb_dequant_q5_0(&a, out);
    CHECK(out[0] == 0.0f);   /* (0 | 16) - 16 */
    CHECK(out[1] == -15.0f); /* 1 - 16 */
    CHECK(out[16] == 15.0f); /* (15 | 16) - 16 */
    CHECK(out[17] == 14 - 16.0f);

    kb_q4_k k = {.d = 0x3c00, .dmin = 0x3800}; /* d 1.0, dmin 0.5 */
    /* sub-block 0: scale 2, min 4; sub-block 1: scale 3, min 6; sub-block 4: scale 1 + 16,
     * min 2 + 32 (the high bits of 4..7 live in the top of bytes 0..7) */
    k.scales[0] = 2 | 1 << 6;
    k.scales[1] = 3;
    k.scales[4] = 4 | 2 << 6;
    k.scales[5] = 6;
    k.scales[8] = 1 | 2 << 4;
    for (int l = 0; l < 128; l++)
        k.qs[l] = (uint8_t)(5 | 9 << 4);
    kb_dequant_q4_k(&k, out);
    CHECK(out[0] == 2 * 5 - 0.5f * 4);
    CHECK(out[32] == 3 * 9 - 0.5f * 6);
    CHECK(out[128] == 17 * 5 - 0.5f * 34);

    kb_q6_k s = {.d = 0x3c00};
    for (int g = 0; g < 16; g++)
        s.scales[g] = (int8_t)(g - 8);
    s.ql[0] = 0x21;  /* value 0 low 1, value 64 low 2 */
    s.ql[32] = 0x43; /* value 32 low 3, value 96 low 4 */
    s.qh[0] = 0xe4;  /* high bits: v0 0, v32 1, v64 2, v96 3 */
    s.ql[64] = 0x0f; /* value 128 low 15 */
    s.qh[32] = 0x03; /* value 128 high 3 */
    kb_dequant_q6_k(&s, out);
    CHECK(out[0] == -8.0f * (1 - 32));
    CHECK(out[32] == -6.0f * (3 + 16 - 32));
    CHECK(out[64] == -4.0f * (2 + 32 - 32));
    CHECK(out[96] == -2.0f * (4 + 48 - 32));
    CHECK(out[128] == 0.0f * (15 + 48 - 32));
    CHECK(out[1] == -8.0f * -32);
}
