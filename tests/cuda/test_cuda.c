/* test_cuda.c — GPU tests of the CUDA backend (`make CUDA=1 test-cuda`): every op of the CUDA
 * backend against the CPU backend on the same inputs, and whole models on both backends.
 *
 *   cuda_matmul_matches_cpu      every weight type, three weights sharing the input in one call,
 *                                step sizes 1, 5, 16 (block kernels, fused and not) and 80 (the
 *                                F16 cuBLAS path): normalised MSE Σ(gpu−cpu)²/Σcpu² < 1e-4
 *   cuda_ops_match_cpu           rmsnorm, add, silu/gelu, scale, softcap, rope (both pair
 *                                conventions), embedding (Q4_0, F16), get_rows in place: < 1e-4
 *   cuda_attention_matches_cpu   paged KV store + attention: decode, prefill and mixed sequences,
 *                                GQA, with and without a sliding window and soft-capping: < 1e-4
 *   cuda_smollm2_greedy_matches_cpu  20 prompts x 32 greedy tokens, all 20 decoded as one batch
 *                                on the GPU (CUDA graphs on), against the CPU backend: at least
 *                                as close as the CPU's own scalar path is to its AVX2 path, with
 *                                near-ties judged by the measured logit noise (see the test for
 *                                why the fixed 0.1 near-tie rule cannot hold)
 *   cuda_decode_graph_replays_new_inputs  four single-token "steps" (embed, rmsnorm, matmul)
 *                                with new token ids each: one graph captured, replayed with the
 *                                new ids (results equal the CPU backend's each time)
 *   cuda_graph_replay_is_exact   the batch decode with PARLEY_CUDA_GRAPH=0: identical tokens
 *   cuda_prefix_cache_is_exact   prefix-cache hits and a copy-on-write on the device: logits
 *                                bit-identical to a context without the cache
 *   cuda_smollm2_logits_match_cpu  an 83-token prompt and 8 teacher-forced steps: the GPU's
 *                                logits no further (mean NMSE) from the CPU's than 4x the CPU
 *                                scalar path's distance from its AVX2 path
 *   cuda_gemma3_logits_match_cpu the same on Gemma 3 (PARLEY_GEMMA3: the real file or one of its
 *                                shapes from parley-mktiny), a 160-token prompt
 *   cuda_gemma3_greedy_matches_cpu  the greedy test on the real Gemma 3 file (skipped on a
 *                                random-weight one)
 *
 * Each test calls SKIP ("skipped: no GPU: <why>") when be_cuda_probe finds no device, so a
 * machine without a GPU never reports a silent pass. The model tests also skip when the model
 * file is absent (scripts/parleyctl model fetches it; PARLEY_SMOLLM2 and PARLEY_GEMMA3 override
 * the paths). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../unit/harness.h"
#include "backend.h"
#include "backend_cuda.h"
#include "engine.h"
#include "quant.h"

static bool have_gpu(void)
{
    static char why[256];
    char desc[160];
    if (be_cuda_probe(0, desc, sizeof desc) != PL_OK) {
        snprintf(why, sizeof why, "no GPU: %s", pl_err_last());
        th_skip(why);
        return false;
    }
    static bool said;
    if (!said)
        printf("  device cuda:0: %s\n", desc);
    said = true;
    return true;
}

static uint64_t rs = 0x853c49e6748fea9bULL;
static float urand(void) /* [-1, 1) */
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((double)(rs >> 40) / 8388608.0 - 1.0);
}

static double nmse(const float *a, const float *ref, size_t n)
{
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        e += d * d;
        s += (double)ref[i] * ref[i];
    }
    return s > 0 ? e / s : e;
}

/* A device copy of n floats from the host (freed with b->ops->free). */
static float *up(be_backend *b, const float *h, size_t n)
{
    float *d = b->ops->alloc(b, n * sizeof(float));
    if (d && h)
        cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice);
    cudaDeviceSynchronize(); /* the backend's stream does not wait for the default stream */
    return d;
}

static void down(be_backend *b, float *h, const float *d, size_t n)
{
    b->ops->to_host(b, h, d, n * sizeof(float));
}

/* Random weight bytes: floats for float types; blocks with sane f16 scales otherwise (the
 * scale fields of every block type sit at the offsets listed). */
static void rand_weight(gguf_ttype t, void *data, int64_t rows, int64_t cols)
{
    size_t rb = qt_row_size(t, cols);
    uint8_t *p = data;
    if (t == GGML_F32 || t == GGML_F16 || t == GGML_BF16) {
        for (int64_t i = 0; i < rows * cols; i++) {
            float v = urand() * 0.5f;
            if (t == GGML_F32)
                memcpy(p + 4 * i, &v, 4);
            else {
                uint16_t h = t == GGML_F16 ? qt_f32_to_f16(v) : qt_f32_to_bf16(v);
                memcpy(p + 2 * i, &h, 2);
            }
        }
        return;
    }
    const qt_traits *tr = qt_get(t);
    for (size_t i = 0; i < rb * (size_t)rows; i++)
        p[i] = (uint8_t)(urand() * 128 + 128);
    int off[2] = {0, -1};
    if (t == GGML_Q4_1 || t == GGML_Q5_1 || t == GGML_Q4_K || t == GGML_Q5_K)
        off[1] = 2;
    if (t == GGML_Q6_K)
        off[0] = 208;
    for (size_t b = 0; b < rb * (size_t)rows / tr->block_bytes; b++)
        for (int k = 0; k < 2; k++)
            if (off[k] >= 0) {
                uint16_t d = qt_f32_to_f16((0.5f + 0.5f * urand()) * 0.01f);
                memcpy(p + b * tr->block_bytes + off[k], &d, 2);
            }
}

/* Three weights of one type sharing the input in one call (as Q/K/V are), each writing its
 * own columns of one output matrix; fused (quantise inside, one launch) or not. */
static void matmul_case(bool fuse)
{
    static const gguf_ttype types[] = {GGML_F32,  GGML_F16,  GGML_BF16, GGML_Q4_0,
                                       GGML_Q4_1, GGML_Q5_0, GGML_Q5_1, GGML_Q8_0,
                                       GGML_Q4_K, GGML_Q5_K, GGML_Q6_K};
    const int64_t rows[3] = {96, 40, 8}, all = 144, cols = 512;
    const int Ts[] = {1, 3, 5, 16, 80};
    if (!fuse)
        setenv("PARLEY_CUDA_FUSE", "0", 1);
    be_backend *cpu = NULL, *gpu = NULL;
    CHECK(be_cpu_create(2, 128, cols, 64, &cpu) == PL_OK);
    CHECK(be_cuda_create(0, 128, cols, 64, &gpu) == PL_OK);
    if (!cpu || !gpu) {
        unsetenv("PARLEY_CUDA_FUSE");
        return;
    }
    float *X = malloc(128 * cols * sizeof(float)), *Yc = malloc(128 * all * sizeof(float));
    float *Yg = malloc(128 * all * sizeof(float));
    for (int64_t i = 0; i < 128 * cols; i++)
        X[i] = urand();
    float *dX = up(gpu, X, 128 * cols), *dY = up(gpu, NULL, 128 * all);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const qt_traits *tr = qt_get(types[ti]);
        if (!tr) {
            printf("  %d: skipped: the CPU engine does not know this type\n", (int)types[ti]);
            continue;
        }
        void *wd[3];
        be_weight w[3];
        const be_weight *W[3];
        for (int j = 0; j < 3; j++) {
            wd[j] = malloc(qt_row_size(types[ti], cols) * rows[j]);
            rand_weight(types[ti], wd[j], rows[j], cols);
            w[j] = (be_weight){
                .type = types[ti], .rows = rows[j], .cols = cols, .data = wd[j], .name = "w"};
            W[j] = &w[j];
        }
        for (size_t k = 0; k < sizeof Ts / sizeof Ts[0]; k++) {
            int T = Ts[k];
            int64_t ld[3] = {all, all, all};
            float *yc[3] = {Yc, Yc + rows[0], Yc + rows[0] + rows[1]};
            float *yg[3] = {dY, dY + rows[0], dY + rows[0] + rows[1]};
            cpu->ops->matmul(cpu, 3, W, X, cols, T, yc, ld);
            gpu->ops->matmul(gpu, 3, W, dX, cols, T, yg, ld);
            down(gpu, Yg, dY, (size_t)T * all);
            double e = nmse(Yg, Yc, (size_t)T * all);
            if (!(e < 1e-4))
                th_fail(__FILE__, __LINE__, "%s T=%d%s: nmse %g", tr->name, T,
                        fuse ? "" : " (not fused)", e);
            th_checked();
        }
        /* The backend maps wd's address to its device copy; the next type's buffers may get
         * the same addresses, so it starts from a fresh backend. */
        for (int j = 0; j < 3; j++)
            free(wd[j]);
        gpu->ops->free(gpu, dX, 0);
        gpu->ops->free(gpu, dY, 0);
        gpu->ops->destroy(gpu);
        CHECK(be_cuda_create(0, 128, cols, 64, &gpu) == PL_OK);
        dX = up(gpu, X, 128 * cols);
        dY = up(gpu, NULL, 128 * all);
    }
    unsetenv("PARLEY_CUDA_FUSE");
    gpu->ops->free(gpu, dX, 0);
    gpu->ops->free(gpu, dY, 0);
    gpu->ops->destroy(gpu);
    cpu->ops->destroy(cpu);
    free(X);
    free(Yc);
    free(Yg);
}

TEST(cuda_matmul_matches_cpu)
{
    if (!have_gpu())
        return;
    qt_init();
    matmul_case(true);
    matmul_case(false);
}

static void check_close(const char *what, const float *g, const float *c, size_t n)
{
    double e = nmse(g, c, n);
    if (!(e < 1e-4))
        th_fail(__FILE__, __LINE__, "%s: nmse %g", what, e);
    th_checked();
}

TEST(cuda_ops_match_cpu)
{
    if (!have_gpu())
        return;
    qt_init();
    const int T = 7, n = 576, hd = 64, nh = 9;
    be_backend *cpu = NULL, *gpu = NULL;
    CHECK(be_cpu_create(2, 64, 1024, 64, &cpu) == PL_OK);
    CHECK(be_cuda_create(0, 64, 1024, 64, &gpu) == PL_OK);
    if (!cpu || !gpu)
        return;
    size_t N = (size_t)T * n;
    float *a = malloc(N * 4), *bb = malloc(N * 4), *w = malloc(n * 4), *hc = malloc(N * 4),
          *hg = malloc(N * 4);
    for (size_t i = 0; i < N; i++)
        a[i] = urand() * 3, bb[i] = urand();
    for (int i = 0; i < n; i++)
        w[i] = 1 + urand() * 0.1f;
    float *da = up(gpu, a, N), *db = up(gpu, bb, N);

    /* rmsnorm (row stride n, scaled and unscaled) */
    cpu->ops->rmsnorm(cpu, hc, n, a, n, w, T, n, 1e-5f);
    gpu->ops->rmsnorm(gpu, db, n, da, n, w, T, n, 1e-5f);
    down(gpu, hg, db, N);
    check_close("rmsnorm", hg, hc, N);
    cpu->ops->rmsnorm(cpu, hc, n, a, n, NULL, T, n, 1e-6f);
    gpu->ops->rmsnorm(gpu, db, n, da, n, NULL, T, n, 1e-6f);
    down(gpu, hg, db, N);
    check_close("rmsnorm (no weight)", hg, hc, N);

    /* element-wise */
    void (*const glu[2])(be_backend *, float *, const float *, int64_t) = {cpu->ops->silu_mul,
                                                                           cpu->ops->gelu_mul};
    void (*const gglu[2])(be_backend *, float *, const float *, int64_t) = {gpu->ops->silu_mul,
                                                                            gpu->ops->gelu_mul};
    for (int k = 0; k < 2; k++) {
        memcpy(hc, a, N * 4);
        cudaMemcpy(db, a, N * 4, cudaMemcpyHostToDevice);
        cudaDeviceSynchronize();
        float *du = up(gpu, bb, N);
        glu[k](cpu, hc, bb, (int64_t)N);
        gglu[k](gpu, db, du, (int64_t)N);
        down(gpu, hg, db, N);
        check_close(k ? "gelu_mul" : "silu_mul", hg, hc, N);
        gpu->ops->free(gpu, du, N * 4);
    }
    memcpy(hc, a, N * 4);
    cudaMemcpy(db, a, N * 4, cudaMemcpyHostToDevice);
    cudaDeviceSynchronize();
    float *dbb = up(gpu, bb, N);
    cpu->ops->add(cpu, hc, bb, (int64_t)N);
    gpu->ops->add(gpu, db, dbb, (int64_t)N);
    cpu->ops->scale(cpu, hc, (int64_t)N, 0.37f);
    gpu->ops->scale(gpu, db, (int64_t)N, 0.37f);
    cpu->ops->softcap(cpu, hc, (int64_t)N, 1.5f);
    gpu->ops->softcap(gpu, db, (int64_t)N, 1.5f);
    down(gpu, hg, db, N);
    check_close("add+scale+softcap", hg, hc, N);

    /* rope: table from positions, both pair conventions, queries of nh heads */
    int32_t pos[7] = {0, 1, 5, 17, 100, 1000, 4095};
    float ff[32];
    for (int i = 0; i < 32; i++)
        ff[i] = 1 + (float)i / 8;
    for (int mode = 0; mode < 2; mode++) {
        be_rope r = {.n_rot = hd,
                     .base = 10000,
                     .freq_scale = mode ? 0.5f : 1.0f,
                     .freq_factors = mode ? ff : NULL,
                     .mode = (be_rope_mode)mode};
        size_t QN = (size_t)T * nh * hd;
        float *csc = malloc((size_t)T * hd * 4), *dcs = up(gpu, NULL, (size_t)T * hd);
        memcpy(hc, a, QN * 4);
        cudaMemcpy(db, a, QN * 4, cudaMemcpyHostToDevice);
        cudaDeviceSynchronize();
        cpu->ops->rope_table(cpu, csc, pos, T, &r);
        gpu->ops->rope_table(gpu, dcs, pos, T, &r);
        cpu->ops->rope(cpu, hc, nh * hd, T, nh, hd, csc, &r);
        gpu->ops->rope(gpu, db, nh * hd, T, nh, hd, dcs, &r);
        down(gpu, hg, db, QN);
        check_close(mode ? "rope (halves)" : "rope (adjacent)", hg, hc, QN);
        gpu->ops->free(gpu, dcs, 0);
        free(csc);
    }

    /* embedding lookup of a Q4_0 and an F16 table, then get_rows in place */
    int32_t tokens[7] = {3, 0, 63, 5, 5, 17, 40};
    gguf_ttype et[2] = {GGML_Q4_0, GGML_F16};
    for (int k = 0; k < 2; k++) {
        void *E = malloc(qt_row_size(et[k], n) * 64);
        rand_weight(et[k], E, 64, n);
        be_weight ew = {.type = et[k], .rows = 64, .cols = n, .data = E};
        cpu->ops->embed(cpu, hc, &ew, tokens, T);
        gpu->ops->embed(gpu, db, &ew, tokens, T);
        down(gpu, hg, db, N);
        check_close(k ? "embed f16" : "embed q4_0", hg, hc, N);
        int32_t rows[3] = {1, 4, 6};
        cpu->ops->get_rows(cpu, hc, hc, n, rows, 3);
        gpu->ops->get_rows(gpu, db, db, n, rows, 3);
        down(gpu, hg, db, 3 * (size_t)n);
        check_close("get_rows", hg, hc, 3 * (size_t)n);
        free(E);
    }
    gpu->ops->free(gpu, da, 0);
    gpu->ops->free(gpu, db, 0);
    gpu->ops->free(gpu, dbb, 0);
    gpu->ops->destroy(gpu);
    cpu->ops->destroy(cpu);
    free(a), free(bb), free(w), free(hc), free(hg);
}

/* head_dim 64 and 256 take the kernel's 16-byte tile loads, 36 its one-half-at-a-time path. */
static void attention_case(int hd)
{
    const int nh = 6, nkv = 2, kvd = nkv * hd, nblocks = 24;
    const size_t bs = (size_t)2 * BE_KV_BLOCK * kvd * 2; /* one layer: K then V */
    be_backend *cpu = NULL, *gpu = NULL;
    CHECK(be_cpu_create(2, 256, 2048, 128, &cpu) == PL_OK);
    CHECK(be_cuda_create(0, 256, 2048, 128, &gpu) == PL_OK);
    if (!cpu || !gpu)
        return;
    uint8_t *kc = cpu->ops->alloc(cpu, bs * nblocks), *kg = gpu->ops->alloc(gpu, bs * nblocks);
    be_kv_view vc = {kc, bs, 0, (size_t)BE_KV_BLOCK * kvd * 2, kvd}, vg = vc;
    vg.base = kg;
    /* three sequences over a shuffled block pool: lengths 38, 20, 55 */
    int32_t bt[3][8] = {{5, 2, 9}, {0, 17}, {11, 3, 22, 7}};
    int len[3] = {38, 20, 55};
    int total = 38 + 20 + 55;
    float *k = malloc((size_t)total * kvd * 4), *v = malloc((size_t)total * kvd * 4);
    for (int i = 0; i < total * kvd; i++)
        k[i] = urand() * 2, v[i] = urand();
    float *dk = up(gpu, k, (size_t)total * kvd), *dv = up(gpu, v, (size_t)total * kvd);
    be_attn_seq all[3];
    int row = 0;
    for (int s = 0; s < 3; s++) {
        all[s] = (be_attn_seq){row, len[s], 0, bt[s]};
        row += len[s];
    }
    cpu->ops->kv_store(cpu, &vc, k, v, kvd, all, 3);
    gpu->ops->kv_store(gpu, &vg, dk, dv, kvd, all, 3);
    /* queries: decode (seq 0: its last position), prefill (seq 1: all 20), mixed (seq 2: 6) */
    be_attn_seq qs[3] = {{0, 1, 37, bt[0]}, {1, 20, 0, bt[1]}, {21, 6, 49, bt[2]}};
    int Tq = 27;
    float *q = malloc((size_t)Tq * nh * hd * 4), *oc = malloc((size_t)Tq * nh * hd * 4),
          *og = malloc((size_t)Tq * nh * hd * 4);
    for (int i = 0; i < Tq * nh * hd; i++)
        q[i] = urand();
    float *dq = up(gpu, q, (size_t)Tq * nh * hd), *dout = up(gpu, NULL, (size_t)Tq * nh * hd);
    be_attn_params ps[2] = {{nh, nkv, hd, 0.125f, 0, 0}, {nh, nkv, hd, 0.125f, 8, 30.0f}};
    for (int pi = 0; pi < 2; pi++)
        for (int only_decode = 0; only_decode < 2; only_decode++) {
            int ns = only_decode ? 1 : 3;
            cpu->ops->attention(cpu, oc, nh * hd, q, nh * hd, &vc, qs, ns, &ps[pi]);
            gpu->ops->attention(gpu, dout, nh * hd, dq, nh * hd, &vg, qs, ns, &ps[pi]);
            int rows = only_decode ? 1 : Tq;
            down(gpu, og, dout, (size_t)rows * nh * hd);
            char what[64];
            snprintf(what, sizeof what, "attention hd %d window %d softcap %g%s", hd, ps[pi].window,
                     ps[pi].softcap, only_decode ? " (decode)" : "");
            check_close(what, og, oc, (size_t)rows * nh * hd);
        }
    gpu->ops->free(gpu, dk, 0), gpu->ops->free(gpu, dv, 0), gpu->ops->free(gpu, dq, 0);
    gpu->ops->free(gpu, dout, 0), gpu->ops->free(gpu, kg, 0);
    cpu->ops->free(cpu, kc, bs * nblocks);
    gpu->ops->destroy(gpu);
    cpu->ops->destroy(cpu);
    free(k), free(v), free(q), free(oc), free(og);
}

TEST(cuda_attention_matches_cpu)
{
    if (!have_gpu())
        return;
    attention_case(64);
    attention_case(256);
    attention_case(36);
}

TEST(cuda_decode_graph_replays_new_inputs)
{
    if (!have_gpu())
        return;
    qt_init();
    const int n = 256, rows = 32, T = 4;
    be_backend *cpu = NULL, *gpu = NULL;
    CHECK(be_cpu_create(2, 16, n, 64, &cpu) == PL_OK);
    CHECK(be_cuda_create(0, 16, n, 64, &gpu) == PL_OK);
    if (!cpu || !gpu)
        return;
    void *E = malloc(qt_row_size(GGML_Q8_0, n) * 64),
         *Wd = malloc(qt_row_size(GGML_Q4_0, n) * rows);
    rand_weight(GGML_Q8_0, E, 64, n);
    rand_weight(GGML_Q4_0, Wd, rows, n);
    be_weight ew = {.type = GGML_Q8_0, .rows = 64, .cols = n, .data = E};
    be_weight ww = {.type = GGML_Q4_0, .rows = rows, .cols = n, .data = Wd};
    const be_weight *W[1] = {&ww};
    float *xc = malloc((size_t)T * n * 4), *yc = malloc((size_t)T * rows * 4);
    float *yg = malloc((size_t)T * rows * 4);
    float *dx = up(gpu, NULL, (size_t)T * n), *dy = up(gpu, NULL, (size_t)T * rows);
    int64_t ld = rows;
    for (int s = 0; s < 4; s++) {
        int32_t tokens[4] = {s, s + 1, 7, 9 + 3 * s};
        float *Yc[1] = {yc}, *Yg[1] = {dy};
        cpu->ops->embed(cpu, xc, &ew, tokens, T);
        cpu->ops->rmsnorm(cpu, xc, n, xc, n, NULL, T, n, 1e-5f);
        cpu->ops->matmul(cpu, 1, W, xc, n, T, Yc, &ld);
        gpu->ops->embed(gpu, dx, &ew, tokens, T);
        gpu->ops->rmsnorm(gpu, dx, n, dx, n, NULL, T, n, 1e-5f);
        gpu->ops->matmul(gpu, 1, W, dx, n, T, Yg, &ld);
        down(gpu, yg, dy, (size_t)T * rows);
        check_close("graph step", yg, yc, (size_t)T * rows);
    }
    be_cuda_stats st;
    be_cuda_get_stats(gpu, &st);
    const char *g = getenv("PARLEY_CUDA_GRAPH");
    if (!(g && strcmp(g, "0") == 0)) {
        CHECK_EQ_INT(st.graph_captures, 1);
        CHECK_EQ_INT(st.graph_launches, 4);
    }
    gpu->ops->free(gpu, dx, 0), gpu->ops->free(gpu, dy, 0);
    gpu->ops->destroy(gpu);
    cpu->ops->destroy(cpu);
    free(E), free(Wd), free(xc), free(yc), free(yg);
}

/* --- whole model ------------------------------------------------------------------------------ */

static const char *smol_path(void)
{
    const char *e = getenv("PARLEY_SMOLLM2");
    return e && *e ? e : "models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

/* Gemma 3 270M, or a file of its shape from parley-mktiny --arch gemma3 --mixed. */
static const char *gemma_path(void)
{
    const char *e = getenv("PARLEY_GEMMA3");
    return e && *e ? e : "models/gemma-3-270m-q4_k_m.gguf";
}

/* The model at `path` for the whole-model tests; NULL (the test skipped or failed, saying why)
 * without a GPU, without the file (`absent` says how to get it), or when it does not load. */
static eng_model *load_model(const char *path, const char *absent)
{
    if (!have_gpu())
        return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        th_skip(absent);
        return NULL;
    }
    fclose(f);
    qt_init();
    eng_model *m = NULL;
    if (eng_model_load(path, NULL, &m) != PL_OK) {
        th_fail(__FILE__, __LINE__, "%s: %s", path, pl_err_last());
        return NULL;
    }
    return m;
}

static eng_model *load_smollm2(void)
{
    return load_model(smol_path(), "SmolLM2 model file absent (scripts/parleyctl model)");
}

static const char *const prompts[20] = {
    "The capital of France is",
    "Write a haiku about the sea.",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colours are",
    "Explain photosynthesis in one sentence.",
    "1, 2, 3, 4, 5,",
    "Translate to French: good morning",
    "The quick brown fox",
    "What is the boiling point of water?",
    "List three fruits:",
    "In 1969, humans",
    "The best way to learn programming is",
    "SELECT * FROM users WHERE",
    "My favourite book is",
    "Water is made of",
    "The sun rises in the",
    "A short poem about autumn:",
    "import numpy as np\n",
    "Dear Sir or Madam,",
};
#define N_GEN 32

/* A context on `device` for the whole-model tests (512-token steps); NULL after failing the
 * test, saying why. */
static eng_ctx *test_ctx(eng_model *m, const char *device, int max_seqs, int threads,
                         bool prefix_cache)
{
    eng_ctx_params p = {.kv_budget_bytes = 64 << 20,
                        .max_seqs = max_seqs,
                        .n_threads = threads,
                        .max_batch_tokens = 512,
                        .no_prefix_cache = !prefix_cache,
                        .device = device};
    eng_ctx *c = NULL;
    if (eng_ctx_create(m, &p, &c) != PL_OK) {
        th_fail(__FILE__, __LINE__, "context on %s: %s", device, pl_err_last());
        return NULL;
    }
    return c;
}

/* Greedy-decodes all prompts as one batch on `device`; tokens[p][i] and, for the CPU, the gap
 * between the top two logits at each step (gap may be NULL). first (NULL or 20 x n_vocab floats)
 * gets every prompt's logits at the first step. */
static bool run_greedy(eng_model *m, const char *device, int32_t tokens[20][N_GEN],
                       float gap[20][N_GEN], float *first)
{
    eng_ctx *c = test_ctx(m, device, 20, 2, false);
    if (!c)
        return false;
    const tok *tk = eng_model_tok(m);
    eng_model_info info;
    eng_model_get_info(m, &info);
    int32_t ids[20][128], nid[20], seq[20], last[20];
    eng_item items[20];
    for (int i = 0; i < 20; i++) {
        nid[i] = (int32_t)tok_encode(tk, prompts[i], strlen(prompts[i]), true, false, ids[i], 128);
        eng_seq_add(c, &seq[i]);
        items[i] = (eng_item){seq[i], ids[i], nid[i], true};
    }
    bool ok = true;
    for (int step = 0; step < N_GEN && ok; step++) {
        if (eng_step(c, items, 20) != PL_OK) {
            th_fail(__FILE__, __LINE__, "step %d on %s: %s", step, device, pl_err_last());
            ok = false;
            break;
        }
        for (int i = 0; i < 20; i++) {
            const float *lg = eng_logits(c, i);
            int best = 0;
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int v = 0; v < info.n_vocab; v++) {
                if (lg[v] > b1) {
                    b2 = b1;
                    b1 = lg[v];
                    best = v;
                } else if (lg[v] > b2) {
                    b2 = lg[v];
                }
            }
            tokens[i][step] = best;
            if (first && step == 0)
                memcpy(first + (size_t)i * (size_t)info.n_vocab, lg,
                       (size_t)info.n_vocab * sizeof(float));
            if (gap)
                gap[i][step] = b1 - b2;
            last[i] = best;
            items[i] = (eng_item){seq[i], &last[i], 1, true};
        }
    }
    eng_ctx_free(c);
    return ok;
}

/* Where `t` first leaves the reference `ref` for each prompt: counts the prompts identical over
 * N_GEN tokens, the divergences at a reference top-2 gap of at least 0.1 (issue 3's near-tie
 * rule) and those at a gap of at least `wide_gap`, printing each divergence. */
static void divergences(const char *what, int32_t ref[20][N_GEN], float gap[20][N_GEN],
                        int32_t t[20][N_GEN], float wide_gap, int *same, int *at01, int *wide)
{
    *same = *at01 = *wide = 0;
    for (int i = 0; i < 20; i++) {
        int s = 0;
        while (s < N_GEN && ref[i][s] == t[i][s])
            s++;
        if (s == N_GEN) {
            (*same)++;
            continue;
        }
        *at01 += gap[i][s] >= 0.1f;
        *wide += gap[i][s] >= wide_gap;
        printf("  %s: prompt %d diverges at token %d (cpu %d, here %d, cpu top-2 gap %.3f)\n", what,
               i, s, ref[i][s], t[i][s], gap[i][s]);
    }
    printf("  %s: %d/20 prompts identical for %d tokens; divergences at a top-2 gap >= 0.1: %d, "
           ">= %.2f: %d\n",
           what, *same, N_GEN, *at01, wide_gap, *wide);
}

/* The spread of the scalar path's first-step logits around the AVX2 path's, over each prompt's
 * 20 largest (where greedy decisions are made): the per-logit noise of a correct implementation. */
static double top_logit_sd(const float *avx2, const float *scalar, int n_vocab)
{
    double ss = 0;
    int n = 0;
    for (int i = 0; i < 20; i++) {
        const float *a = avx2 + (size_t)i * (size_t)n_vocab,
                    *b = scalar + (size_t)i * (size_t)n_vocab;
        float prev = INFINITY;
        for (int k = 0; k < 20; k++) { /* the k-th largest: the largest below the previous one */
            int best = -1;
            for (int v = 0; v < n_vocab; v++)
                if (a[v] < prev && (best < 0 || a[v] > a[best]))
                    best = v;
            if (best < 0)
                break;
            prev = a[best];
            ss += ((double)b[best] - a[best]) * ((double)b[best] - a[best]);
            n++;
        }
    }
    return n ? sqrt(ss / n) : 0;
}

/* The GPU must agree with the CPU's AVX2 path at least as well as the CPU's own scalar path does.
 * Activations are quantised to 8 bits before every product, so a different order of float
 * additions flips a few quantisation steps and the logits of two correct implementations differ
 * per logit by a spread sd (measured here from the scalar path: 0.22 on SmolLM2 and 0.20 on
 * Gemma 3 270M, logits of rms ~7). A top-2 gap then carries noise of sd·√2, so greedy decoding
 * parts at gaps well above issue 3's fixed 0.1: the scalar path did at up to 0.22, and on Gemma 3
 * the GPU at five gaps of 0.14..0.37 where the scalar path had two (H200). Counts at 0.1 are
 * printed; the rule is: at most 2 fewer prompts identical than the scalar path, and at most one
 * more divergence than it at a gap of 3·√2·sd or more (which noise explains about once in a
 * thousand near-ties), where a real error in the GPU's arithmetic would show. */
static void greedy_matches_cpu(eng_model *m)
{
    static int32_t tc[20][N_GEN], ts[20][N_GEN], tg[20][N_GEN];
    static float gap[20][N_GEN];
    eng_model_info info;
    eng_model_get_info(m, &info);
    size_t sz = (size_t)20 * (size_t)info.n_vocab;
    float *first_c = malloc(sz * sizeof(float)), *first_s = malloc(sz * sizeof(float));
    bool ok = first_c && first_s && run_greedy(m, "cpu", tc, gap, first_c);
    qt_force_scalar(true);
    ok = ok && run_greedy(m, "cpu", ts, NULL, first_s);
    qt_force_scalar(false);
    if (ok && run_greedy(m, "cuda:0", tg, NULL, NULL)) {
        double sd = top_logit_sd(first_c, first_s, info.n_vocab);
        float wide_gap = (float)fmax(0.1, 3 * sqrt(2.0) * sd);
        printf("  first-step top-20 logits, scalar against AVX2: sd %.3f -> wide gap %.2f\n", sd,
               (double)wide_gap);
        int same_s, at01_s, wide_s, same_g, at01_g, wide_g;
        divergences("cpu scalar", tc, gap, ts, wide_gap, &same_s, &at01_s, &wide_s);
        divergences("gpu", tc, gap, tg, wide_gap, &same_g, &at01_g, &wide_g);
        if (same_g < same_s - 2)
            th_fail(__FILE__, __LINE__, "gpu: %d prompts identical, the scalar CPU path %d", same_g,
                    same_s);
        if (wide_g > wide_s + 1)
            th_fail(__FILE__, __LINE__,
                    "gpu: %d divergences at a gap >= %.2f, the scalar CPU path %d", wide_g,
                    (double)wide_gap, wide_s);
        th_checked();
    }
    free(first_c), free(first_s);
}

TEST(cuda_smollm2_greedy_matches_cpu)
{
    eng_model *m = load_smollm2();
    if (!m)
        return;
    greedy_matches_cpu(m);
    eng_model_free(m);
}

/* Runs n tokens on sequence s in one step and copies its logits to out. */
static bool pc_step(eng_ctx *c, eng_seq_id s, const int32_t *toks, int n, float *out, int V)
{
    eng_item it = {s, toks, n, true};
    if (eng_step(c, &it, 1) != PL_OK) {
        th_fail(__FILE__, __LINE__, "step: %s", pl_err_last());
        return false;
    }
    memcpy(out, eng_logits(c, 0), (size_t)V * sizeof(float));
    return true;
}

/* The logits of one prompt (its last position) and of N_FORCED teacher-forced single-token steps
 * after it, on `device` with `threads` CPU threads, the prompt fed `chunk` tokens per step. */
#define N_FORCED 8
static bool run_logits(eng_model *m, const char *device, int threads, int chunk, const int32_t *ids,
                       int n, const int32_t *forced, float *out, int n_vocab, bool scalar)
{
    qt_force_scalar(scalar);
    eng_ctx *c = test_ctx(m, device, 1, threads, false);
    if (!c) {
        qt_force_scalar(false);
        return false;
    }
    int32_t seq;
    eng_seq_add(c, &seq);
    bool ok = true;
    for (int off = 0; off < n && ok; off += chunk) {
        int k = n - off < chunk ? n - off : chunk;
        ok = pc_step(c, seq, ids + off, k, out, n_vocab); /* the last chunk's logits stay */
    }
    for (int s = 0; s < N_FORCED && ok; s++)
        ok = pc_step(c, seq, &forced[s], 1, out + (size_t)(s + 1) * (size_t)n_vocab, n_vocab);
    eng_ctx_free(c);
    qt_force_scalar(false);
    return ok;
}

static void logit_diff(const char *what, const float *a, const float *ref, int n_vocab,
                       double *mean)
{
    double e_max = 0, d_max = 0, e_sum = 0;
    for (int r = 0; r <= N_FORCED; r++) {
        const float *x = a + (size_t)r * (size_t)n_vocab, *y = ref + (size_t)r * (size_t)n_vocab;
        double e = nmse(x, y, (size_t)n_vocab);
        e_sum += e;
        e_max = e > e_max ? e : e_max;
        for (int v = 0; v < n_vocab; v++)
            d_max = fabs((double)x[v] - y[v]) > d_max ? fabs((double)x[v] - y[v]) : d_max;
    }
    printf("  %-38s NMSE mean %.3g max %.3g, max |diff| %.4f\n", what, e_sum / (N_FORCED + 1),
           e_max, d_max);
    *mean = e_sum / (N_FORCED + 1);
}

/* Runs `ids` (n tokens, then N_FORCED forced ones) on the CPU (AVX2: the prompt in chunks of
 * `chunk`, and token by token on one thread), the CPU's scalar path and the GPU (in chunks, and
 * token by token), and fails when the GPU's mean logits NMSE against the CPU exceeds 4x the
 * scalar path's (floor 1e-5), or when the CPU token by token is not bit-identical to chunks. */
static void logits_match_cpu(eng_model *m, const int32_t *ids, int n, int chunk,
                             const int32_t *forced)
{
    eng_model_info info;
    eng_model_get_info(m, &info);
    size_t sz = (size_t)(N_FORCED + 1) * (size_t)info.n_vocab;
    float *cpu = malloc(sz * 4), *cpu_tok = malloc(sz * 4), *scal = malloc(sz * 4),
          *gpu = malloc(sz * 4), *gpu_tok = malloc(sz * 4);
    if (run_logits(m, "cpu", 2, chunk, ids, n, forced, cpu, info.n_vocab, false) &&
        run_logits(m, "cpu", 1, 1, ids, n, forced, cpu_tok, info.n_vocab, false) &&
        run_logits(m, "cpu", 2, chunk, ids, n, forced, scal, info.n_vocab, true) &&
        run_logits(m, "cuda:0", 2, chunk, ids, n, forced, gpu, info.n_vocab, false) &&
        run_logits(m, "cuda:0", 2, 1, ids, n, forced, gpu_tok, info.n_vocab, false)) {
        double e_tok, e_scal, e_gpu, e_gpu_tok;
        printf("  %s: prompt of %d tokens (steps of %d), then %d forced steps; against the CPU "
               "(AVX2):\n",
               info.arch, n, chunk, N_FORCED);
        logit_diff("cpu, prompt token by token, 1 thread", cpu_tok, cpu, info.n_vocab, &e_tok);
        logit_diff("cpu scalar path", scal, cpu, info.n_vocab, &e_scal);
        logit_diff("gpu, prompt in steps", gpu, cpu, info.n_vocab, &e_gpu);
        logit_diff("gpu, prompt token by token", gpu_tok, cpu, info.n_vocab, &e_gpu_tok);
        CHECK(e_tok == 0); /* the CPU does not depend on how the prompt is batched */
        double bound = 4 * e_scal > 1e-5 ? 4 * e_scal : 1e-5;
        if (e_gpu > bound || e_gpu_tok > bound)
            th_fail(__FILE__, __LINE__,
                    "GPU logits mean NMSE %.3g / %.3g exceed %.3g (4x the scalar CPU path's %.3g)",
                    e_gpu, e_gpu_tok, bound, e_scal);
        th_checked();
    }
    free(cpu), free(cpu_tok), free(scal), free(gpu), free(gpu_tok);
}

/* How far the GPU's logits are from the CPU's (AVX2) on a real model, next to how far the CPU's
 * own scalar path is from them: the GPU may be at most 4x further (mean NMSE over the prompt's
 * last position and 8 teacher-forced steps). The CPU fed token by token is also compared: it is
 * bit-identical to one step, which shows the distance comes from arithmetic order, not batching. */
TEST(cuda_smollm2_logits_match_cpu)
{
    eng_model *m = load_smollm2();
    if (!m)
        return;
    const char *text =
        "The history of the bicycle begins in the early nineteenth century, when inventors in "
        "Europe built wooden machines pushed along by the rider's feet. Pedals came later, and "
        "with them chains, gears and air-filled tyres, which made cycling comfortable enough for "
        "ordinary people. Today bicycles are used for commuting, racing and touring all over "
        "the world, and many cities build separate lanes to keep riders safe from traffic.";
    const char *cont = " In the Netherlands there are more bicycles than people, and";
    const tok *tk = eng_model_tok(m);
    int32_t ids[256], forced[64];
    int n = (int)tok_encode(tk, text, strlen(text), true, false, ids, 256);
    int nf = (int)tok_encode(tk, cont, strlen(cont), false, false, forced, 64);
    CHECK(n > 64 && nf >= N_FORCED);
    if (n > 64 && nf >= N_FORCED)
        logits_match_cpu(m, ids, n, n, forced);
    eng_model_free(m);
}

/* Gemma 3 on the GPU as SmolLM2 above: QK-norm, GeGLU, the post-norms, scaled embeddings and
 * sliding-window layers with their own rope base, over Q8_0, Q5_0, Q4_K and Q6_K weights. The
 * prompt is fixed token ids (any vocabulary), 160 of them, which pass the local layers' window
 * when it is shorter (the real 270M file's is 512: on it the window is not reached;
 * scripts/gpubox runs this on a parley-mktiny file of the 270M's shapes with a 64-token window). */
TEST(cuda_gemma3_logits_match_cpu)
{
    eng_model *m = load_model(gemma_path(), "Gemma 3 file absent (scripts/parleyctl model, "
                                            "or PARLEY_GEMMA3=a parley-mktiny --arch gemma3 file)");
    if (!m)
        return;
    eng_model_info info;
    eng_model_get_info(m, &info);
    enum { NP = 160 };
    int32_t ids[NP], forced[N_FORCED];
    for (int i = 0; i < NP; i++)
        ids[i] = (int32_t)((i * 7919 + 3) % info.n_vocab);
    for (int i = 0; i < N_FORCED; i++)
        forced[i] = (int32_t)((i * 104729 + 17) % info.n_vocab);
    CHECK(strcmp(info.arch, "gemma3") == 0);
    printf("  %s: sliding window %d (%s by the %d-token prompt)\n", gemma_path(),
           info.sliding_window, info.sliding_window < NP ? "passed" : "not reached", NP);
    logits_match_cpu(m, ids, NP, NP / 2, forced);
    eng_model_free(m);
}

/* Greedy decoding of Gemma 3 on the GPU against the CPU, by the rule of the SmolLM2 test. A
 * random-weight file (parley-mktiny) is skipped: its greedy text repeats one token whatever the
 * arithmetic, so agreement there would show nothing. */
TEST(cuda_gemma3_greedy_matches_cpu)
{
    eng_model *m = load_model(gemma_path(), "Gemma 3 file absent (scripts/parleyctl model)");
    if (!m)
        return;
    eng_model_info info;
    eng_model_get_info(m, &info);
    if (strcmp(info.name, "parley-tiny") == 0)
        th_skip("random weights (parley-mktiny): greedy agreement would show nothing");
    else
        greedy_matches_cpu(m);
    eng_model_free(m);
}

TEST(cuda_graph_replay_is_exact)
{
    eng_model *m = load_smollm2();
    if (!m)
        return;
    static int32_t ta[20][N_GEN], tb[20][N_GEN];
    setenv("PARLEY_CUDA_GRAPH", "0", 1);
    bool ok = run_greedy(m, "cuda:0", ta, NULL, NULL);
    unsetenv("PARLEY_CUDA_GRAPH");
    ok = ok && run_greedy(m, "cuda:0", tb, NULL, NULL);
    if (ok)
        CHECK(memcmp(ta, tb, sizeof ta) == 0);
    /* the same with every product on cuBLAS (F16 weight copies), graphed and not */
    setenv("PARLEY_CUDA_GEMM_MIN_T", "1", 1);
    setenv("PARLEY_CUDA_GRAPH", "0", 1);
    ok = run_greedy(m, "cuda:0", ta, NULL, NULL);
    unsetenv("PARLEY_CUDA_GRAPH");
    ok = ok && run_greedy(m, "cuda:0", tb, NULL, NULL);
    unsetenv("PARLEY_CUDA_GEMM_MIN_T");
    if (ok)
        CHECK(memcmp(ta, tb, sizeof ta) == 0);
    eng_model_free(m);
}

/* The prefix cache on the GPU (the copy-on-write of a shared block is a device copy): sequence
 * a runs a 48-token prompt, b starts on the same prompt plus 8 tokens (the 3 blocks found in
 * the cache), then a rolls back into its third block, which b shares, and runs 8 other tokens.
 * A context without the cache runs the same steps with the same shapes, so the logits must be
 * bit-identical: the cached blocks hold what a recomputation would write. */
TEST(cuda_prefix_cache_is_exact)
{
    eng_model *m = load_smollm2();
    if (!m)
        return;
    eng_model_info info;
    eng_model_get_info(m, &info);
    const int V = info.n_vocab;
    enum { NP = 48, NR = 8 };
    int32_t p[NP + NR], q[NR];
    for (int i = 0; i < NP + NR; i++)
        p[i] = (int32_t)((i * 104729 + 11) % V);
    for (int i = 0; i < NR; i++)
        q[i] = (int32_t)((i * 7727 + 5) % V);
    float *on[3], *off[3];
    for (int i = 0; i < 3; i++)
        on[i] = malloc((size_t)V * 4), off[i] = malloc((size_t)V * 4);
    for (int pass = 0; pass < 2; pass++) {
        bool cache = pass == 0;
        float **out = cache ? on : off;
        eng_ctx *c = test_ctx(m, "cuda:0", 2, 2, cache);
        if (!c)
            break;
        eng_seq_id a, b;
        int32_t ka = -1, kb = -1;
        bool ok = eng_seq_add_prompt(c, p, NP, &a, &ka) == PL_OK && ka == 0 &&
                  pc_step(c, a, p, NP, out[0], V) &&
                  eng_seq_add_prompt(c, p, NP + NR, &b, &kb) == PL_OK;
        CHECK(ok);
        CHECK_EQ_INT(kb, cache ? NP : 0);
        if (ok && kb == 0)
            ok = pc_step(c, b, p, NP, out[1], V); /* no cache: b computes the prompt itself */
        ok = ok && pc_step(c, b, p + NP, NR, out[1], V);
        ok = ok && eng_seq_truncate(c, a, 40) == PL_OK && pc_step(c, a, q, NR, out[2], V);
        CHECK(ok);
        if (cache) {
            eng_kv_stats ks;
            eng_kv_get_stats(c, &ks);
            CHECK(ks.prefix_hits == NP);
        }
        eng_ctx_free(c);
    }
    static const char *what[3] = {"first prompt", "the sharer",
                                  "after a rollback into a shared block"};
    for (int i = 0; i < 3; i++)
        if (memcmp(on[i], off[i], (size_t)V * 4) != 0)
            th_fail(__FILE__, __LINE__, "%s: logits differ with the prefix cache (nmse %g)",
                    what[i], nmse(on[i], off[i], (size_t)V));
    th_checked();
    for (int i = 0; i < 3; i++)
        free(on[i]), free(off[i]);
    eng_model_free(m);
}
