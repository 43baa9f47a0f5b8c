/* quant_bench.c — single-thread speed of each tensor type's dot product (a measurement, not a
 * test): ns per weight block and weight bytes per second for a matrix-vector product through
 * qt_matvec_rows, with the fast path and with the scalar reference, in cache (a 256 KiB
 * matrix, repeated) and streaming from memory (a 64 MiB matrix). Also the activation quantiser,
 * and batched products of the 32-value block types at 1, 4, 16 and 64 activation rows through
 * the AVX2 path and, where the CPU has it, the AVX-512 VNNI one (--batched: that part alone).
 *
 *   make BUILD=build bench-quant        (or: build/bin/parley-quant-bench [type ... | --batched])
 *
 * Output: one line per type and regime. Run with nothing else busy (nice -n 0, not under
 * parallel builds); numbers vary a few percent between runs.
 *
 * With PARLEY_GGML_CPU=/path/to/libggml-cpu.so (llama-cpp-python ships one in llama_cpp/lib/),
 * the same matrices also go through llama.cpp's own vec_dot kernels in the same run, for the
 * types whose activation block is laid out as ggml's (Q8_0, Q8_K): their time, and the largest
 * difference between their results and ours relative to the row's Σ|w·x| scale. Q8_K
 * quantisation is compared byte for byte too. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant.h"
#include "quant_impl.h" /* both fast tables side by side, for the batched section */

/* This thread's CPU time: on a machine shared with other work, time spent descheduled does not
 * count (cache interference still does). */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 88172645463325252ULL;

static float rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Seconds per matvec of `rows` rows over `cols` columns of type t (one timing of ≥ min_s). */
static double time_matvec(gguf_ttype t, const void *W, int64_t cols, int64_t rows, const void *xq,
                          float *y, double min_s)
{
    double best = 1e30;
    for (int rep = 0; rep < 1; rep++) {
        int iters = 0;
        double t0 = now_s(), t1;
        do {
            qt_matvec_rows(t, W, cols, xq, y, 0, rows);
            iters++;
            t1 = now_s();
        } while (t1 - t0 < min_s);
        double per = (t1 - t0) / iters;
        best = per < best ? per : best;
    }
    return best;
}

/* llama.cpp's CPU kernels, when PARLEY_GGML_CPU names a libggml-cpu.so. */
typedef void (*ggml_dot_fn)(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy,
                            size_t by, int nrc);
static void *ggml_lib;

static ggml_dot_fn ggml_dot_for(gguf_ttype t)
{
    const char *sym = t == GGML_Q4_0   ? "ggml_vec_dot_q4_0_q8_0"
                      : t == GGML_Q5_0 ? "ggml_vec_dot_q5_0_q8_0"
                      : t == GGML_Q8_0 ? "ggml_vec_dot_q8_0_q8_0"
                      : t == GGML_Q4_K ? "ggml_vec_dot_q4_K_q8_K"
                      : t == GGML_Q5_K ? "ggml_vec_dot_q5_K_q8_K"
                      : t == GGML_Q6_K ? "ggml_vec_dot_q6_K_q8_K"
                                       : NULL;
    return ggml_lib && sym ? (ggml_dot_fn)(uintptr_t)dlsym(ggml_lib, sym) : NULL;
}

static double time_ggml(ggml_dot_fn f, const uint8_t *W, size_t row_bytes, int64_t cols,
                        int64_t rows, const void *xq, float *y, double min_s)
{
    double best = 1e30;
    for (int rep = 0; rep < 1; rep++) {
        int iters = 0;
        double t0 = now_s(), t1;
        do {
            for (int64_t r = 0; r < rows; r++)
                f((int)cols, &y[r], 0, W + (size_t)r * row_bytes, 0, xq, 0, 1);
            iters++;
            t1 = now_s();
        } while (t1 - t0 < min_s);
        double per = (t1 - t0) / iters;
        best = per < best ? per : best;
    }
    return best;
}

static void bench_type(gguf_ttype t)
{
    const qt_traits *tr = qt_get(t);
    if (!tr || !tr->dot) {
        fprintf(stderr, "skipped: %s has no dot product\n", gguf_ttype_name(t));
        return;
    }
    const int64_t cols = 2048;
    size_t row_bytes = qt_row_size(t, cols);
    static const size_t sizes[2] = {256u << 10, 64u << 20};
    static const char *names[2] = {"in cache", "streaming"};
    float *x = malloc(cols * sizeof *x), *row = malloc(cols * sizeof *row);
    uint8_t *xq = malloc(qt_row_size(tr->vec_dot_type, cols));
    for (int64_t i = 0; i < cols; i++)
        x[i] = rnd();
    qt_get(tr->vec_dot_type)->quantize(x, xq, cols);
    for (int s = 0; s < 2; s++) {
        int64_t rows = (int64_t)(sizes[s] / row_bytes);
        uint8_t *W = malloc(row_bytes * (size_t)rows);
        float *y = malloc((size_t)rows * sizeof *y);
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t i = 0; i < cols; i++)
                row[i] = rnd();
            tr->quantize_ref(row, W + (size_t)r * row_bytes, cols);
        }
        double blocks = (double)rows * (double)(cols / tr->block);
        double bytes = (double)rows * (double)row_bytes;
        /* best of 5, ours and llama.cpp's alternating so both see the same machine load */
        ggml_dot_fn gf = ggml_dot_for(t);
        float *yg = malloc((size_t)rows * sizeof *yg);
        double fast = 1e30, g = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            fast = fmin(fast, time_matvec(t, W, cols, rows, xq, y, 0.1));
            if (gf)
                g = fmin(g, time_ggml(gf, W, row_bytes, cols, rows, xq, yg, 0.1));
        }
        qt_force_scalar(true);
        double ref = s == 0 ? time_matvec(t, W, cols, rows, xq, y, 0.2) : 0;
        qt_force_scalar(false);
        printf("%-5s %-9s fast: %7.2f ns/block (per 256 values: %7.2f ns) %6.2f GB/s", tr->name,
               names[s], fast / blocks * 1e9, fast / ((double)rows * cols / 256) * 1e9,
               bytes / fast / 1e9);
        if (s == 0)
            printf("   scalar ref: %8.2f ns/block (fast is %.1fx)", ref / blocks * 1e9, ref / fast);
        if (gf) {
            /* agreement on the first rows, relative to Σ|w·x| of each row */
            double worst = 0;
            float *wf = malloc(cols * sizeof *wf), *xf = malloc(cols * sizeof *xf);
            qt_get(tr->vec_dot_type)->dequant_ref(xq, xf, cols);
            for (int64_t r = 0; r < rows && r < 64; r++) {
                tr->dequant_ref(W + (size_t)r * row_bytes, wf, cols);
                double norm = 0;
                for (int64_t i = 0; i < cols; i++)
                    norm += fabs((double)wf[i] * xf[i]);
                worst = fmax(worst, fabs((double)y[r] - yg[r]) / norm);
            }
            printf("   llama.cpp: %7.2f ns/block (ours %.2fx its speed; worst diff %.1e)",
                   g / blocks * 1e9, g / fast, worst);
            free(wf);
            free(xf);
        }
        printf("\n");
        free(yg);
        free(W);
        free(y);
    }
    free(x);
    free(row);
    free(xq);
}

/* Batched products (activation rows B = 1, 4, 16, 64) of the 32-value block types, one thread,
 * a 1024 x 2048 matrix: GMAC/s through the AVX2 tables and, where the CPU has AVX-512 VNNI, the
 * VNNI ones side by side (both installed here, whatever qt_init chose). */
static void bench_batched(void)
{
    static const gguf_ttype types[] = {GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1, GGML_Q8_0};
    static const int batches[] = {1, 4, 16, 64};
    enum { ROWS = 1024, COLS = 2048, BMAX = 64 };
    static qt_traits ta[QT_NTYPES], tv[QT_NTYPES];
    static qt_mm_fn ma[QT_NTYPES], mv[QT_NTYPES];
    if (!qt_avx2_usable()) {
        printf("batched products skipped: no AVX2\n");
        return;
    }
    qt_avx2_install(ta, ma);
    bool vnni = qt_vnni_usable();
    if (vnni) {
        memcpy(tv, ta, sizeof tv);
        memcpy(mv, ma, sizeof mv);
        qt_vnni_install(tv, mv);
    }
    printf("batched products, %d x %d, 1 thread, GMAC/s: avx2%s\n", ROWS, COLS,
           vnni ? " | avx512vnni" : " (no AVX-512 VNNI on this CPU)");
    float *tmp = malloc(COLS * sizeof *tmp), *Y = malloc((size_t)ROWS * BMAX * sizeof *Y);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        gguf_ttype t = types[k];
        const qt_traits *tr = qt_get(t), *vt = qt_get(tr->vec_dot_type);
        size_t wrow = qt_row_size(t, COLS), xrow = qt_row_size(tr->vec_dot_type, COLS);
        uint8_t *W = malloc(wrow * ROWS), *X = malloc(xrow * BMAX);
        for (int r = 0; r < ROWS; r++) {
            for (int c = 0; c < COLS; c++)
                tmp[c] = rnd();
            tr->quantize_ref(tmp, W + (size_t)r * wrow, COLS);
        }
        for (int b = 0; b < BMAX; b++) {
            for (int c = 0; c < COLS; c++)
                tmp[c] = rnd();
            vt->quantize(tmp, X + (size_t)b * xrow, COLS);
        }
        printf("  %-5s", tr->name);
        for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
            int B = batches[bi];
            double g[2] = {0, 0};
            for (int v = 0; v < (vnni ? 2 : 1); v++) {
                qt_mm_fn f = v ? mv[t] : ma[t];
                double best = 1e30;
                for (int rep = 0; rep < 3; rep++) {
                    int it = 0;
                    double t0 = now_s(), t1;
                    do {
                        f(W, COLS, X, xrow, B, Y, ROWS, 0, ROWS);
                        it++;
                        t1 = now_s();
                    } while (t1 - t0 < 0.05);
                    best = (t1 - t0) / it < best ? (t1 - t0) / it : best;
                }
                g[v] = (double)ROWS * COLS * B / best * 1e-9;
            }
            if (vnni)
                printf("  B=%-2d %5.1f | %5.1f", B, g[0], g[1]);
            else
                printf("  B=%-2d %5.1f", B, g[0]);
        }
        printf("\n");
        free(W);
        free(X);
    }
    free(tmp);
    free(Y);
}

int main(int argc, char **argv)
{
    static const gguf_ttype all[] = {GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1, GGML_Q8_0,
                                     GGML_Q4_K, GGML_Q5_K, GGML_Q6_K, GGML_F16};
    qt_init();
    printf("path: %s, 1 thread, 2048 columns\n", qt_cpu_path());
    const char *lib = getenv("PARLEY_GGML_CPU");
    if (lib && *lib) {
        ggml_lib = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
        void (*init)(void) =
            ggml_lib ? (void (*)(void))(uintptr_t)dlsym(ggml_lib, "ggml_cpu_init") : NULL;
        if (!init) {
            printf("llama.cpp comparison skipped: cannot use %s: %s\n", lib, dlerror());
            ggml_lib = NULL;
        } else {
            init();
        }
    }
    if (argc == 2 && strcmp(argv[1], "--batched") == 0) {
        bench_batched();
        return 0;
    }
    if (argc > 1) {
        for (int a = 1; a < argc; a++) {
            size_t k = 0;
            while (k < sizeof all / sizeof all[0] && strcmp(qt_get(all[k])->name, argv[a]) != 0)
                k++;
            if (k == sizeof all / sizeof all[0]) {
                fprintf(stderr, "parley-quant-bench: unknown type '%s'\n", argv[a]);
                return 2;
            }
            bench_type(all[k]);
        }
        return 0;
    }
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
        bench_type(all[k]);
    bench_batched();
    /* activation quantisation, per 256 values */
    static const gguf_ttype acts[] = {GGML_Q8_0, GGML_Q8_1, GGML_Q8_K};
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x);
    uint8_t *q = malloc(N * 2);
    for (int i = 0; i < N; i++)
        x[i] = rnd();
    for (size_t k = 0; k < sizeof acts / sizeof acts[0]; k++) {
        const qt_traits *tr = qt_get(acts[k]);
        double t0 = now_s();
        int it = 0;
        while (now_s() - t0 < 0.2) {
            tr->quantize(x, q, N);
            it++;
        }
        printf("quantise to %-5s: %6.2f ns per 256 values\n", tr->name,
               (now_s() - t0) / it / (N / 256) * 1e9);
    }
    void (*gq)(const float *, void *, int64_t) =
        ggml_lib ? (void (*)(const float *, void *, int64_t))(uintptr_t)dlsym(ggml_lib,
                                                                              "quantize_row_q8_K")
                 : NULL;
    void (*gq0)(const float *, void *, int64_t) =
        ggml_lib ? (void (*)(const float *, void *, int64_t))(uintptr_t)dlsym(ggml_lib,
                                                                              "quantize_row_q8_0")
                 : NULL;
    static const char *act_names[2] = {"q8_K", "q8_0"};
    void (*gfn[2])(const float *, void *, int64_t) = {gq, gq0};
    static const gguf_ttype act_types[2] = {GGML_Q8_K, GGML_Q8_0};
    for (int k = 0; k < 2; k++) {
        if (!gfn[k])
            continue;
        uint8_t *q2 = malloc(N * 2);
        memset(q, 0, N * 2);
        memset(q2, 0, N * 2);
        qt_get(act_types[k])->quantize(x, q, N);
        gfn[k](x, q2, N);
        size_t bytes = qt_row_size(act_types[k], N), differ = 0;
        for (size_t i = 0; i < bytes; i++)
            differ += q[i] != q2[i];
        printf("%s quantisation vs llama.cpp's: %zu of %zu bytes differ\n", act_names[k], differ,
               bytes);
        free(q2);
    }
    free(x);
    free(q);
    return 0;
}
