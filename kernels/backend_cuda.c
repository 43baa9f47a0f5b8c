/* backend_cuda.c — the engine's backend vtable (backend.h) on an NVIDIA GPU: device memory, the
 * model's weights copied once, a per-step command list replayed as a CUDA graph for decode
 * steps, and the dispatch to the kernels of kernels.h and to cuBLAS. Built only by `make CUDA=1`.
 *
 * Deferred execution. Ops do not launch anything: each appends a command (a flat POD struct) to
 * the step's list and copies the host data it needs (token ids, positions, rope table, KV slot
 * offsets, block tables, attention work items, row lists) into a pinned staging buffer. A flush
 * (to_host, free, destroy, or the start of the next step) copies the staging bytes to their
 * device mirror and launches the commands in order on one stream. Ops are therefore
 * "synchronous" in the sense backend.h asks for: device memory can only be observed through
 * to_host, which flushes and waits. When every attention of the step is single-token (a decode
 * step) and no product dequantises weight chunks, the flush is done through a CUDA graph (cuBLAS
 * has a workspace of ours, so its products are captured too): the list is
 * captured once per shape (the command bytes, which include every pointer, size and launch
 * dimension, and the staging size) and later steps with an identical list only rewrite the
 * pinned staging bytes and launch the graph (its first node copies them). PARLEY_CUDA_GRAPH=0 in
 * the environment turns graphs off.
 *
 * Weights. be_cuda_preload copies a host range to the device and records host → device in an
 * open-addressing table; ops resolve be_weight.data and norm-vector pointers through it (a
 * pointer never preloaded is copied on first use). be_weight.dev is not used: the model is
 * shared and immutable, the table belongs to this backend.
 *
 * Products. matmul quantises X once per activation format (Q8_0 / Q8_1 / Q8_K, as the CPU does)
 * and runs the block kernels; for steps of at least CU_GEMM_MIN_T rows (PARLEY_CUDA_GEMM_MIN_T)
 * and non-F32 weights it instead rounds X to F16 through the same activation format, and calls
 * cublasGemmEx (F16 inputs, F32 accumulation and output) on an F16 copy of the weight, made on
 * first use and kept while the copies fit under CU_F16_CACHE (PARLEY_CUDA_F16_CACHE_MB) and
 * leave CU_F16_SPARE free; past that, the weight is dequantised in chunks of at most 64 MiB
 * for each product. Steps of up to CU_FUSE_MAX_T rows with quantised weights whose quantised
 * activation tile fits in shared memory run kc_matmul_fused instead (past a few rows, every
 * block quantising its rows again costs more than the launch it saves): the quantisation inside,
 * and up to three weights of one type (Q/K/V, gate/up) in one launch (PARLEY_CUDA_FUSE=0: the
 * separate quantise and per-weight products). PARLEY_CUDA_PROFILE=1 times every command (no graphs)
 * and prints the GPU time per op when the backend is destroyed.
 *
 * Errors. Allocation failures are returned (alloc → NULL, preload → PL_TOO_LARGE). A failed
 * launch or copy inside an op cannot be returned through the void ops and leaves the CUDA
 * context unusable, so it aborts the process with the CUDA error text and the operation named.
 * Threading: one thread at a time per backend (backend.h); the stream and cuBLAS handle are
 * per backend. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "kernels.h"
#include "quant.h"

#define CU_GEMM_MIN_T                                                                              \
    8 /* default step rows from which products go to cuBLAS (measured on an H100) */
#define CU_FUSE_MAX_T 4 /* fused products up to this many rows (each block quantises its rows) */
#define CU_WH_BYTES   ((size_t)64 << 20) /* F16 weight chunk for cuBLAS */
#define CU_STAGE_INIT ((size_t)1 << 20)
#define CU_MAX_DEDUPE 8
#define CU_F16_CACHE  ((size_t)4 << 30)  /* default cap on F16 weight copies for cuBLAS */
#define CU_F16_SPARE  ((size_t)1 << 30)  /* device memory the F16 cache always leaves free */
#define CU_BLAS_WS    ((size_t)32 << 20) /* cuBLAS workspace (ours, so products can be graphed) */

enum {
    CMD_D2D,
    CMD_EMBED,
    CMD_QUANT,
    CMD_MATMUL,
    CMD_F2H,
    CMD_DEQ_F16,
    CMD_GEMM,
    CMD_RMSNORM,
    CMD_ADD,
    CMD_GLU,
    CMD_SCALE,
    CMD_SOFTCAP,
    CMD_ROPE,
    CMD_GET_ROWS,
    CMD_KV_STORE,
    CMD_ATTN,
    CMD_MMF,
    CMD_N_KINDS,
};

static const char *const cmd_names[CMD_N_KINDS] = {
    "copy", "embedding", "quantise", "matmul",    "to-f16",      "dequant",
    "gemm", "rmsnorm",   "add",      "glu",       "scale",       "softcap",
    "rope", "get_rows",  "kv_store", "attention", "matmul-fused"};

/* One deferred operation. Zeroed before filling, so two lists compare with memcmp. */
typedef struct cu_cmd {
    int32_t kind;
    int32_t i[11];
    int64_t l[8];
    float f[4];
    void *p[8];
} cu_cmd;

typedef struct cu_wmap {
    const void *host;
    void *dev;
    size_t bytes;
    uint16_t *f16; /* the weight dequantised to F16 for cuBLAS, when cached (see cu_matmul) */
} cu_wmap;

/* Staged host data reused by several ops of one step (KV offsets, attention tables). */
typedef struct cu_dedupe {
    const void *seqs;
    int32_t n_seqs, kind, a, b;
    size_t off;
} cu_dedupe;

typedef struct cu_backend {
    be_backend base;
    int ordinal;
    cudaStream_t stream;
    cublasHandle_t blas;
    int max_tokens;
    int64_t max_cols;

    /* weights */
    cu_wmap *wmap;
    size_t wcap, wcount, weight_bytes;

    /* scratch */
    void *xq[3]; /* quantised activations per format: Q8_0, Q8_1, Q8_K */
    size_t xq_bytes;
    uint16_t *xh, *wh; /* F16 activations and weight chunk for cuBLAS (lazy) */
    size_t xh_bytes;

    /* the step's command list and staging */
    cu_cmd *cmds;
    int n_cmds, cap_cmds;
    uint8_t *stage_h, *stage_d;
    size_t stage_used, stage_cap;
    cu_dedupe dd[CU_MAX_DEDUPE];
    int n_dd;
    bool step_graphable;

    int gemm_min_t;           /* PARLEY_CUDA_GEMM_MIN_T, else CU_GEMM_MIN_T */
    bool fuse;                /* fused quantise + multi-weight products (PARLEY_CUDA_FUSE=0: off) */
    size_t f16_cap, f16_used; /* F16 weight cache: PARLEY_CUDA_F16_CACHE_MB, else CU_F16_CACHE */
    void *blas_ws;
    int n_sm;         /* multiprocessors, for the decode attention split */
    float *attn_part; /* partial results of split decode attention */
    size_t attn_part_bytes;

    /* PARLEY_CUDA_PROFILE=1: no graphs; an event after each command, GPU time summed per kind
     * and printed to stderr when the backend is destroyed */
    bool prof;
    cudaEvent_t *pev;
    int pev_cap;
    double prof_ms[CMD_N_KINDS + 1]; /* the last: device-to-host copies */
    long prof_n[CMD_N_KINDS + 1];
    long prof_flushes;

    /* graph */
    bool graphs_on;
    cudaGraphExec_t gexec;
    cu_cmd *sig;
    int sig_n, sig_cap;
    size_t sig_stage;

    be_cuda_stats st;
} cu_backend;

static cu_backend *cu(be_backend *b)
{
    return (cu_backend *)b;
}

/* --- errors ----------------------------------------------------------------------------------- */

static void cu_fatal(const char *what, int err)
{
    fprintf(stderr, "parley cuda backend: %s failed: %s (%s)\n", what,
            cudaGetErrorString((cudaError_t)err), cudaGetErrorName((cudaError_t)err));
    abort();
}

static void cu_check(int err, const char *what)
{
    if (err != 0)
        cu_fatal(what, err);
}

static void blas_check(cublasStatus_t s, const char *what)
{
    if (s != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "parley cuda backend: %s failed: cuBLAS status %d\n", what, (int)s);
        abort();
    }
}

/* The CUDA runtime's current device is per thread, and the engine may create a context on one
 * thread (the worker's loader) and step it on another: every entry point that talks to the
 * device selects ours first (cheap). */
static void on_device(const cu_backend *c)
{
    cu_check(cudaSetDevice(c->ordinal), "selecting the device");
}

/* --- weights ---------------------------------------------------------------------------------- */

static size_t wmap_slot(const cu_backend *c, const void *host)
{
    uintptr_t h = (uintptr_t)host;
    h ^= h >> 17;
    h *= 0x9e3779b97f4a7c15ULL;
    return (size_t)(h >> 7) & (c->wcap - 1);
}

static cu_wmap *wmap_find(cu_backend *c, const void *host)
{
    for (size_t i = wmap_slot(c, host);; i = (i + 1) & (c->wcap - 1)) {
        if (c->wmap[i].host == host)
            return &c->wmap[i];
        if (!c->wmap[i].host)
            return NULL;
    }
}

static pl_status wmap_grow(cu_backend *c)
{
    size_t ncap = c->wcap ? c->wcap * 2 : 256;
    cu_wmap *old = c->wmap;
    size_t ocap = c->wcap;
    c->wmap = calloc(ncap, sizeof *c->wmap);
    if (!c->wmap) {
        c->wmap = old;
        return PL_ERRF(PL_NOMEM, "cuda backend: out of memory for the weight table");
    }
    c->wcap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].host) {
            size_t j = wmap_slot(c, old[i].host);
            while (c->wmap[j].host)
                j = (j + 1) & (ncap - 1);
            c->wmap[j] = old[i];
        }
    free(old);
    return PL_OK;
}

void be_cuda_mem_info(be_backend *b, size_t *free_bytes, size_t *total_bytes)
{
    (void)b;
    size_t f = 0, t = 0;
    if (cudaMemGetInfo(&f, &t) != cudaSuccess) {
        cudaGetLastError();
        f = t = 0;
    }
    *free_bytes = f;
    *total_bytes = t;
}

pl_status be_cuda_preload(be_backend *b, const void *host, size_t bytes)
{
    cu_backend *c = cu(b);
    if (!host || bytes == 0)
        return PL_OK;
    on_device(c);
    if (c->wcap && wmap_find(c, host))
        return PL_OK;
    if ((c->wcount + 1) * 2 > c->wcap) {
        pl_status s = wmap_grow(c);
        if (s != PL_OK)
            return s;
    }
    void *dev = NULL;
    cudaError_t e = cudaMalloc(&dev, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t f, t;
        be_cuda_mem_info(b, &f, &t);
        return PL_ERRF(PL_TOO_LARGE,
                       "cuda:%d: cannot allocate %.1f MiB for the model's weights (%.1f MiB "
                       "already copied, %.1f MiB free of %.1f MiB): the model does not fit",
                       c->ordinal, bytes / 1048576.0, c->weight_bytes / 1048576.0, f / 1048576.0,
                       t / 1048576.0);
    }
    /* cudaMemcpy from pageable memory may return before the data lands; the kernels run on a
     * non-blocking stream, so wait for it (once per weight, at load). */
    e = cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        cudaFree(dev);
        return PL_ERRF(PL_ERR, "cuda:%d: copying weights to the device: %s", c->ordinal,
                       cudaGetErrorString(e));
    }
    size_t j = wmap_slot(c, host);
    while (c->wmap[j].host)
        j = (j + 1) & (c->wcap - 1);
    c->wmap[j] = (cu_wmap){.host = host, .dev = dev, .bytes = bytes};
    c->wcount++;
    c->weight_bytes += bytes;
    c->st.weight_bytes = c->weight_bytes;
    return PL_OK;
}

/* The device copy of a host range (copied now when never preloaded). */
static void *dev_of(cu_backend *c, const void *host, size_t bytes)
{
    if (!host)
        return NULL;
    cu_wmap *w = c->wcap ? wmap_find(c, host) : NULL;
    if (w)
        return w->dev;
    pl_status s = be_cuda_preload(&c->base, host, bytes);
    if (s != PL_OK) {
        fprintf(stderr, "parley cuda backend: %s\n", pl_err_last());
        abort();
    }
    return wmap_find(c, host)->dev;
}

static void *weight_dev(cu_backend *c, const be_weight *w)
{
    return dev_of(c, w->data, (size_t)w->rows * qt_row_size(w->type, w->cols));
}

/* --- command list and staging ----------------------------------------------------------------- */

static cu_cmd *cmd_new(cu_backend *c, int kind)
{
    if (c->n_cmds == c->cap_cmds) {
        int ncap = c->cap_cmds ? c->cap_cmds * 2 : 1024;
        cu_cmd *n = realloc(c->cmds, (size_t)ncap * sizeof *n);
        if (!n) {
            fprintf(stderr, "parley cuda backend: out of host memory for the command list\n");
            abort();
        }
        c->cmds = n;
        c->cap_cmds = ncap;
    }
    cu_cmd *k = &c->cmds[c->n_cmds++];
    memset(k, 0, sizeof *k);
    k->kind = kind;
    return k;
}

static void flush(cu_backend *c);

/* Forgets the step's staged data; the stream must be idle (nothing reads the staging). */
static void stage_reset(cu_backend *c)
{
    c->stage_used = 0;
    c->n_dd = 0;
    c->step_graphable = c->graphs_on;
}

static void drop_graph(cu_backend *c)
{
    if (c->gexec)
        cudaGraphExecDestroy(c->gexec);
    c->gexec = NULL;
    c->sig_n = 0;
}

/* Room for `bytes` of host data; returns the host pointer and sets *dev to its device mirror.
 * When the buffer is full, what is recorded so far runs first (and this step is not graphed). */
static void *stage(cu_backend *c, size_t bytes, void **dev)
{
    bytes = (bytes + 15) & ~(size_t)15;
    if (c->stage_used + bytes > c->stage_cap) {
        c->step_graphable = false;
        flush(c);
        cu_check(cudaStreamSynchronize(c->stream), "synchronising the stream");
        stage_reset(c);
        c->step_graphable = false;
        if (bytes > c->stage_cap) {
            size_t ncap = c->stage_cap;
            while (ncap < bytes)
                ncap *= 2;
            cudaFreeHost(c->stage_h);
            cudaFree(c->stage_d);
            c->stage_h = NULL;
            c->stage_d = NULL;
            cu_check(cudaHostAlloc((void **)&c->stage_h, ncap, cudaHostAllocDefault),
                     "allocating pinned staging memory");
            cu_check(cudaMalloc((void **)&c->stage_d, ncap), "allocating device staging memory");
            c->stage_cap = ncap;
            drop_graph(c); /* its copy node points at the old buffers */
        }
    }
    void *h = c->stage_h + c->stage_used;
    *dev = c->stage_d + c->stage_used;
    c->stage_used += bytes;
    return h;
}

static cu_dedupe *dd_find(cu_backend *c, const void *seqs, int n_seqs, int kind, int a, int b)
{
    for (int i = 0; i < c->n_dd; i++)
        if (c->dd[i].seqs == seqs && c->dd[i].n_seqs == n_seqs && c->dd[i].kind == kind &&
            c->dd[i].a == a && c->dd[i].b == b)
            return &c->dd[i];
    return NULL;
}

static void dd_add(cu_backend *c, const void *seqs, int n_seqs, int kind, int a, int b, size_t off)
{
    if (c->n_dd == CU_MAX_DEDUPE)
        return;
    c->dd[c->n_dd++] = (cu_dedupe){seqs, n_seqs, kind, a, b, off};
}

/* --- execution -------------------------------------------------------------------------------- */

static void run_cmd(cu_backend *c, const cu_cmd *k)
{
    void *s = c->stream;
    int e = 0;
    switch (k->kind) {
    case CMD_D2D:
        e = cudaMemcpyAsync(k->p[0], k->p[1], (size_t)k->l[0], cudaMemcpyDeviceToDevice, c->stream);
        break;
    case CMD_EMBED:
        e = kc_embed(s, k->i[0], k->p[0], k->l[0], k->p[1], k->i[1], k->p[2]);
        break;
    case CMD_QUANT:
        e = kc_quantize_rows(s, k->i[0], k->p[0], k->l[0], k->i[1], k->l[1], k->p[1],
                             (size_t)k->l[2]);
        break;
    case CMD_MATMUL:
        e = kc_matmul(s, k->i[0], k->p[0], k->l[0], k->l[1], k->p[1], (size_t)k->l[2], k->i[1],
                      k->p[2], k->l[3]);
        break;
    case CMD_F2H:
        e = kc_f32_to_f16(s, k->i[1], k->p[0], k->l[0], k->i[0], k->l[1], k->p[1]);
        break;
    case CMD_DEQ_F16:
        e = kc_dequant_f16(s, k->i[0], k->p[0], k->l[0], k->l[1], k->l[2], k->p[1]);
        break;
    case CMD_GEMM: {
        /* C (rows x T, col-major, ldc = ldy) = A^T B: A = F16 weight chunk (cols x rows
         * col-major), B = F16 activations (cols x T col-major). */
        const float one = 1.0f, zero = 0.0f;
        blas_check(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)k->l[0], k->i[0],
                                (int)k->l[1], &one, k->p[0], CUDA_R_16F, (int)k->l[1], k->p[1],
                                CUDA_R_16F, (int)k->l[1], &zero, k->p[2], CUDA_R_32F, (int)k->l[2],
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   "cublasGemmEx");
        break;
    }
    case CMD_RMSNORM:
        e = kc_rmsnorm(s, k->p[0], k->l[0], k->p[1], k->l[1], k->p[2], k->i[0], k->i[1], k->f[0]);
        break;
    case CMD_ADD:
        e = kc_add(s, k->p[0], k->p[1], k->l[0]);
        break;
    case CMD_GLU:
        e = kc_glu(s, k->i[0], k->p[0], k->p[1], k->l[0]);
        break;
    case CMD_SCALE:
        e = kc_scale(s, k->p[0], k->l[0], k->f[0]);
        break;
    case CMD_SOFTCAP:
        e = kc_softcap(s, k->p[0], k->l[0], k->f[0]);
        break;
    case CMD_ROPE:
        e = kc_rope(s, k->p[0], k->l[0], k->i[0], k->i[1], k->i[2], k->p[1], k->i[3], k->i[4]);
        break;
    case CMD_GET_ROWS:
        e = kc_get_rows(s, k->p[0], k->p[1], k->l[0], k->p[2], k->i[0]);
        break;
    case CMD_KV_STORE:
        e = kc_kv_store(s, k->p[0], k->p[1], (size_t)k->l[0], (size_t)k->l[1], k->i[0], k->p[2],
                        k->p[3], k->l[2], k->i[1]);
        break;
    case CMD_ATTN:
        e = kc_attention(s, k->p[0], k->l[0], k->p[1], k->l[1], k->p[2], (size_t)k->l[2],
                         (size_t)k->l[3], (size_t)k->l[4], k->i[0], k->p[3], k->p[4], k->p[5],
                         k->i[1], k->i[2], k->i[3], k->i[4], k->i[5], k->f[0], k->i[6], k->f[1],
                         k->i[7], k->p[6]);
        break;
    case CMD_MMF: {
        kc_mm_set set = {.n = k->i[1]};
        for (int j = 0; j < set.n; j++) {
            set.W[j] = k->p[j], set.Y[j] = k->p[3 + j];
            set.rows[j] = k->l[j], set.ldy[j] = k->l[3 + j];
        }
        e = kc_matmul_fused(s, k->i[0], &set, k->l[6], k->p[6], k->l[7], k->i[2]);
        break;
    }
    default:
        e = (int)cudaErrorInvalidValue;
    }
    if (e != 0)
        cu_fatal(k->kind >= 0 && k->kind < CMD_N_KINDS ? cmd_names[k->kind] : "command", e);
}

/* The profiled flush: every command between two events, then a wait and the sums. */
static void enqueue_profiled(cu_backend *c)
{
    if (c->pev_cap < c->n_cmds + 1) {
        for (int i = 0; i < c->pev_cap; i++)
            cudaEventDestroy(c->pev[i]);
        free(c->pev);
        c->pev_cap = 0;
        c->pev = calloc((size_t)c->n_cmds + 1, sizeof *c->pev);
        if (!c->pev) {
            fprintf(stderr, "parley cuda backend: out of host memory for profiling events\n");
            abort();
        }
        for (int i = 0; i <= c->n_cmds; i++)
            cu_check(cudaEventCreate(&c->pev[i]), "creating a profiling event");
        c->pev_cap = c->n_cmds + 1;
    }
    if (c->stage_used)
        cu_check(cudaMemcpyAsync(c->stage_d, c->stage_h, c->stage_used, cudaMemcpyHostToDevice,
                                 c->stream),
                 "copying staged step data");
    cu_check(cudaEventRecord(c->pev[0], c->stream), "recording an event");
    for (int i = 0; i < c->n_cmds; i++) {
        run_cmd(c, &c->cmds[i]);
        cu_check(cudaEventRecord(c->pev[i + 1], c->stream), "recording an event");
    }
    cu_check(cudaStreamSynchronize(c->stream), "waiting for the GPU");
    for (int i = 0; i < c->n_cmds; i++) {
        float ms = 0;
        cu_check(cudaEventElapsedTime(&ms, c->pev[i], c->pev[i + 1]), "reading an event");
        c->prof_ms[c->cmds[i].kind] += ms;
        c->prof_n[c->cmds[i].kind]++;
    }
    c->prof_flushes++;
}

static void print_profile(const cu_backend *c)
{
    double total = 0;
    for (int i = 0; i <= CMD_N_KINDS; i++)
        total += c->prof_ms[i];
    fprintf(stderr, "parley cuda profile: %ld flushes, %.3f ms of GPU time\n", c->prof_flushes,
            total);
    fprintf(stderr, "  %-10s %8s %10s %9s %6s\n", "op", "calls", "total ms", "mean us", "share");
    for (int i = 0; i <= CMD_N_KINDS; i++)
        if (c->prof_n[i])
            fprintf(stderr, "  %-10s %8ld %10.3f %9.2f %5.1f%%\n",
                    i < CMD_N_KINDS ? cmd_names[i] : "to-host", c->prof_n[i], c->prof_ms[i],
                    1000.0 * c->prof_ms[i] / (double)c->prof_n[i],
                    total > 0 ? 100.0 * c->prof_ms[i] / total : 0.0);
}

static void enqueue_all(cu_backend *c)
{
    if (c->stage_used)
        cu_check(cudaMemcpyAsync(c->stage_d, c->stage_h, c->stage_used, cudaMemcpyHostToDevice,
                                 c->stream),
                 "copying staged step data");
    for (int i = 0; i < c->n_cmds; i++)
        run_cmd(c, &c->cmds[i]);
}

static bool same_as_graph(const cu_backend *c)
{
    return c->gexec && c->sig_n == c->n_cmds && c->sig_stage == c->stage_used &&
           memcmp(c->sig, c->cmds, (size_t)c->n_cmds * sizeof *c->cmds) == 0;
}

/* Runs the recorded commands (see the top of the file) and empties the list. */
static void flush(cu_backend *c)
{
    if (c->n_cmds == 0)
        return;
    on_device(c);
    c->st.flushes++;
    if (c->prof) {
        enqueue_profiled(c);
    } else if (!c->step_graphable) {
        enqueue_all(c);
    } else if (same_as_graph(c)) {
        cu_check(cudaGraphLaunch(c->gexec, c->stream), "launching the decode graph");
        c->st.graph_launches++;
    } else {
        cudaGraph_t g = NULL;
        cu_check(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal),
                 "starting graph capture");
        enqueue_all(c);
        cu_check(cudaStreamEndCapture(c->stream, &g), "ending graph capture");
        if (c->gexec) {
            cudaGraphExecUpdateResultInfo info;
            if (cudaGraphExecUpdate(c->gexec, g, &info) != cudaSuccess) {
                cudaGetLastError();
                drop_graph(c);
            }
        }
        if (!c->gexec)
            cu_check(cudaGraphInstantiate(&c->gexec, g, 0), "instantiating the decode graph");
        cudaGraphDestroy(g);
        cu_check(cudaGraphLaunch(c->gexec, c->stream), "launching the decode graph");
        /* Remember the list the graph was made from; without room for it the next step simply
         * captures again. */
        c->sig_n = 0;
        if (c->sig_cap < c->n_cmds) {
            cu_cmd *n = realloc(c->sig, (size_t)c->n_cmds * sizeof *n);
            if (n) {
                c->sig = n;
                c->sig_cap = c->n_cmds;
            }
        }
        if (c->sig_cap >= c->n_cmds) {
            memcpy(c->sig, c->cmds, (size_t)c->n_cmds * sizeof *c->cmds);
            c->sig_n = c->n_cmds;
            c->sig_stage = c->stage_used;
        }
        c->st.graph_captures++;
        c->st.graph_launches++;
    }
    c->n_cmds = 0;
}

/* Flushes and waits; the staging can be reused afterwards. */
static void finish(cu_backend *c)
{
    flush(c);
    cu_check(cudaStreamSynchronize(c->stream), "waiting for the GPU");
    stage_reset(c);
}

/* --- ops: memory --------------------------------------------------------------------------------
 */

static void *cu_alloc(be_backend *b, size_t bytes)
{
    on_device(cu(b));
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    /* on the backend's stream, so every later command sees the zeros */
    if (cudaMemsetAsync(p, 0, bytes ? bytes : 1, cu(b)->stream) != cudaSuccess) {
        cudaGetLastError();
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cu_free(be_backend *b, void *p, size_t bytes)
{
    (void)bytes;
    if (!p)
        return;
    on_device(cu(b));
    finish(cu(b));
    drop_graph(cu(b)); /* a freed buffer may be reallocated at the same address */
    cudaFree(p);
}

static void cu_to_host(be_backend *b, void *dst, const void *src, size_t bytes)
{
    cu_backend *c = cu(b);
    on_device(c);
    flush(c);
    if (c->prof && c->pev_cap >= 2)
        cu_check(cudaEventRecord(c->pev[0], c->stream), "recording an event");
    cu_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream),
             "copying results to the host");
    if (c->prof && c->pev_cap >= 2) {
        float ms = 0;
        cu_check(cudaEventRecord(c->pev[1], c->stream), "recording an event");
        cu_check(cudaEventSynchronize(c->pev[1]), "waiting for an event");
        cu_check(cudaEventElapsedTime(&ms, c->pev[0], c->pev[1]), "reading an event");
        c->prof_ms[CMD_N_KINDS] += ms;
        c->prof_n[CMD_N_KINDS]++;
    }
    cu_check(cudaStreamSynchronize(c->stream), "waiting for the GPU");
    stage_reset(c);
}

static size_t cu_scratch_bytes(const be_backend *b)
{
    const cu_backend *c = (const cu_backend *)b;
    return 3 * c->xq_bytes + (c->xh ? c->xh_bytes : 0) + (c->wh ? CU_WH_BYTES : 0) + c->f16_used +
           (c->blas_ws ? CU_BLAS_WS : 0) + 2 * c->stage_cap;
}

static void cu_destroy(be_backend *b)
{
    cu_backend *c = cu(b);
    if (!c)
        return;
    if (cudaSetDevice(c->ordinal) != cudaSuccess)
        cudaGetLastError();
    if (c->stream) {
        flush(c);
        cudaStreamSynchronize(c->stream);
    }
    drop_graph(c);
    if (c->prof && c->prof_flushes)
        print_profile(c);
    for (int i = 0; i < c->pev_cap; i++)
        cudaEventDestroy(c->pev[i]);
    free(c->pev);
    for (size_t i = 0; i < c->wcap; i++)
        if (c->wmap[i].host) {
            cudaFree(c->wmap[i].dev);
            cudaFree(c->wmap[i].f16);
        }
    cudaFree(c->blas_ws);
    cudaFree(c->attn_part);
    free(c->wmap);
    for (int i = 0; i < 3; i++)
        cudaFree(c->xq[i]);
    cudaFree(c->xh);
    cudaFree(c->wh);
    cudaFreeHost(c->stage_h);
    cudaFree(c->stage_d);
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c->cmds);
    free(c->sig);
    free(c);
}

/* --- ops: compute ----------------------------------------------------------------------------- */

static int act_slot(int act)
{
    return act == KC_Q8_0 ? 0 : act == KC_Q8_1 ? 1 : 2;
}

/* The F16 copy of a weight for cuBLAS: made once (its dequantisation is queued in the current
 * step, before the product that needs it) while the copies stay under f16_cap and leave
 * CU_F16_SPARE of device memory free; NULL when it does not fit (the caller dequantises chunks
 * each time instead). Large batches then read F16 weights directly, and their steps can be
 * graphed. */
static uint16_t *f16_copy(cu_backend *c, const be_weight *w, void *wd)
{
    cu_wmap *e = wmap_find(c, w->data);
    if (!e)
        return NULL;
    if (e->f16)
        return e->f16;
    size_t bytes = (size_t)w->rows * (size_t)w->cols * 2;
    size_t f = 0, t = 0;
    if (c->f16_used + bytes > c->f16_cap || cudaMemGetInfo(&f, &t) != cudaSuccess ||
        f < bytes + CU_F16_SPARE) {
        cudaGetLastError();
        return NULL;
    }
    uint16_t *p = NULL;
    if (cudaMalloc((void **)&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        c->f16_cap = c->f16_used; /* stop trying */
        return NULL;
    }
    cu_cmd *k = cmd_new(c, CMD_DEQ_F16);
    k->i[0] = w->type, k->p[0] = wd, k->l[0] = 0, k->l[1] = w->rows, k->l[2] = w->cols;
    k->p[1] = p;
    e->f16 = p;
    c->f16_used += bytes;
    return p;
}

static void cu_matmul(be_backend *b, int n, const be_weight *const *W, const float *X, int64_t ldx,
                      int T, float *const *Y, const int64_t *ldy)
{
    cu_backend *c = cu(b);
    if (T <= 0 || n <= 0)
        return;
    const int64_t cols = W[0]->cols;
    bool quantised[3] = {false, false, false};
    int xh_act = -1; /* the activation format xh holds for this call, -1 none */
    for (int i = 0; i < n; i++) {
        const be_weight *w = W[i];
        void *wd = weight_dev(c, w);
        if (T >= c->gemm_min_t && w->type != GGML_F32) {
            /* large batch: F16 cuBLAS product on the cached F16 copy of the weight, else on
             * row chunks dequantised into one buffer each time */
            if (!c->xh) {
                c->xh_bytes = (size_t)c->max_tokens * (size_t)c->max_cols * 2;
                cu_check(cudaMalloc((void **)&c->xh, c->xh_bytes), "allocating F16 activations");
            }
            int act = kc_act_type(w->type);
            if (xh_act != act) { /* the GEMMs before run first: xh can be rewritten */
                cu_cmd *k = cmd_new(c, CMD_F2H);
                k->p[0] = (void *)X, k->l[0] = ldx, k->i[0] = T, k->l[1] = cols, k->p[1] = c->xh;
                k->i[1] = act;
                xh_act = act;
            }
            uint16_t *wf = f16_copy(c, w, wd);
            if (wf) {
                cu_cmd *k = cmd_new(c, CMD_GEMM);
                k->l[0] = w->rows, k->i[0] = T, k->l[1] = cols, k->p[0] = wf, k->p[1] = c->xh;
                k->p[2] = Y[i], k->l[2] = ldy[i];
                c->st.cublas_gemms++;
                continue;
            }
            if (!c->wh)
                cu_check(cudaMalloc((void **)&c->wh, CU_WH_BYTES), "allocating F16 weights");
            c->step_graphable = false; /* a step this heavy gains nothing from a graph */
            int64_t chunk = (int64_t)(CU_WH_BYTES / ((size_t)cols * 2));
            for (int64_t r0 = 0; r0 < w->rows; r0 += chunk) {
                int64_t nr = w->rows - r0 < chunk ? w->rows - r0 : chunk;
                cu_cmd *k = cmd_new(c, CMD_DEQ_F16);
                k->i[0] = w->type, k->p[0] = wd, k->l[0] = r0, k->l[1] = nr, k->l[2] = cols;
                k->p[1] = c->wh;
                k = cmd_new(c, CMD_GEMM);
                k->l[0] = nr, k->i[0] = T, k->l[1] = cols, k->p[0] = c->wh, k->p[1] = c->xh;
                k->p[2] = Y[i] + r0, k->l[2] = ldy[i];
                c->st.cublas_gemms++;
            }
            continue;
        }
        size_t fs = c->fuse && T <= CU_FUSE_MAX_T ? kc_matmul_fused_smem(w->type, cols) : 0;
        if (fs && fs <= KC_MM_FUSED_SMEM) { /* this weight and the next ones of its type */
            cu_cmd *k = cmd_new(c, CMD_MMF);
            int j = 0;
            for (; j < KC_MM_MAX && i + j < n && W[i + j]->type == w->type; j++) {
                k->p[j] = weight_dev(c, W[i + j]), k->p[3 + j] = Y[i + j];
                k->l[j] = W[i + j]->rows, k->l[3 + j] = ldy[i + j];
            }
            k->i[0] = w->type, k->i[1] = j, k->i[2] = T;
            k->p[6] = (void *)X, k->l[6] = cols, k->l[7] = ldx;
            i += j - 1;
            continue;
        }
        int act = kc_act_type(w->type);
        const void *xq = X;
        size_t stride = (size_t)ldx * 4;
        if (act != KC_F32) {
            int slot = act_slot(act);
            stride = kc_row_bytes(act, cols);
            xq = c->xq[slot];
            if (!quantised[slot]) {
                cu_cmd *k = cmd_new(c, CMD_QUANT);
                k->i[0] = act, k->p[0] = (void *)X, k->l[0] = ldx, k->i[1] = T, k->l[1] = cols;
                k->p[1] = c->xq[slot], k->l[2] = (int64_t)stride;
                quantised[slot] = true;
            }
        }
        cu_cmd *k = cmd_new(c, CMD_MATMUL);
        k->i[0] = w->type, k->p[0] = wd, k->l[0] = w->rows, k->l[1] = cols, k->p[1] = (void *)xq;
        k->l[2] = (int64_t)stride, k->i[1] = T, k->p[2] = Y[i], k->l[3] = ldy[i];
    }
}

static void cu_rmsnorm(be_backend *b, float *y, int64_t ldy, const float *x, int64_t ldx,
                       const float *w, int T, int n, float eps)
{
    cu_backend *c = cu(b);
    cu_cmd *k = cmd_new(c, CMD_RMSNORM);
    k->p[0] = y, k->l[0] = ldy, k->p[1] = (void *)x, k->l[1] = ldx;
    k->p[2] = dev_of(c, w, (size_t)n * sizeof(float));
    k->i[0] = T, k->i[1] = n, k->f[0] = eps;
}

static void cu_add(be_backend *b, float *y, const float *x, int64_t n)
{
    cu_cmd *k = cmd_new(cu(b), CMD_ADD);
    k->p[0] = y, k->p[1] = (void *)x, k->l[0] = n;
}

static void cu_silu_mul(be_backend *b, float *g, const float *u, int64_t n)
{
    cu_cmd *k = cmd_new(cu(b), CMD_GLU);
    k->i[0] = 0, k->p[0] = g, k->p[1] = (void *)u, k->l[0] = n;
}

static void cu_gelu_mul(be_backend *b, float *g, const float *u, int64_t n)
{
    cu_cmd *k = cmd_new(cu(b), CMD_GLU);
    k->i[0] = 1, k->p[0] = g, k->p[1] = (void *)u, k->l[0] = n;
}

static void cu_scale(be_backend *b, float *x, int64_t n, float s)
{
    cu_cmd *k = cmd_new(cu(b), CMD_SCALE);
    k->p[0] = x, k->l[0] = n, k->f[0] = s;
}

static void cu_softcap(be_backend *b, float *x, int64_t n, float cap)
{
    cu_cmd *k = cmd_new(cu(b), CMD_SOFTCAP);
    k->p[0] = x, k->l[0] = n, k->f[0] = cap;
}

/* The table is computed on the host by the CPU backend's own function (so angles are
 * bit-identical to the CPU path) and copied with the step's staging. */
static void cu_rope_table(be_backend *b, float *cs, const int32_t *pos, int T, const be_rope *r)
{
    cu_backend *c = cu(b);
    size_t bytes = (size_t)T * (size_t)r->n_rot * sizeof(float);
    if (bytes == 0)
        return;
    void *dev;
    float *tab = stage(c, bytes, &dev);
    for (int t = 0; t < T; t++)
        be_cpu_rope_angles(r, pos[t], tab + (size_t)t * (size_t)r->n_rot);
    cu_cmd *k = cmd_new(c, CMD_D2D);
    k->p[0] = cs, k->p[1] = dev, k->l[0] = (int64_t)bytes;
}

static void cu_rope(be_backend *b, float *x, int64_t ldx, int T, int n_heads, int head_dim,
                    const float *cs, const be_rope *r)
{
    cu_cmd *k = cmd_new(cu(b), CMD_ROPE);
    k->p[0] = x, k->l[0] = ldx, k->i[0] = T, k->i[1] = n_heads, k->i[2] = head_dim;
    k->p[1] = (void *)cs, k->i[3] = r->n_rot, k->i[4] = r->mode == BE_ROPE_HALVES;
}

/* The first op of every step: what the previous step left is run, then the staging restarts. */
static void cu_embed(be_backend *b, float *x, const be_weight *E, const int32_t *tokens, int T)
{
    cu_backend *c = cu(b);
    if (c->n_cmds || c->stage_used)
        finish(c);
    void *dev;
    int32_t *tok = stage(c, (size_t)T * sizeof(int32_t), &dev);
    memcpy(tok, tokens, (size_t)T * sizeof(int32_t));
    cu_cmd *k = cmd_new(c, CMD_EMBED);
    k->i[0] = E->type, k->p[0] = weight_dev(c, E), k->l[0] = E->cols, k->p[1] = dev;
    k->i[1] = T, k->p[2] = x;
}

static void cu_get_rows(be_backend *b, float *y, const float *x, int64_t n, const int32_t *rows,
                        int n_rows)
{
    cu_backend *c = cu(b);
    if (n_rows <= 0)
        return;
    void *dev;
    int32_t *r = stage(c, (size_t)n_rows * sizeof(int32_t), &dev);
    memcpy(r, rows, (size_t)n_rows * sizeof(int32_t));
    cu_cmd *k = cmd_new(c, CMD_GET_ROWS);
    k->p[0] = y, k->p[1] = (void *)x, k->l[0] = n, k->p[2] = dev, k->i[0] = n_rows;
}

static int rows_of(const be_attn_seq *seqs, int n_seqs)
{
    int T = 0;
    for (int i = 0; i < n_seqs; i++)
        if (seqs[i].q_row0 + seqs[i].n_q > T)
            T = seqs[i].q_row0 + seqs[i].n_q;
    return T;
}

static void cu_kv_store(be_backend *b, const be_kv_view *kv, const float *k, const float *v,
                        int64_t ld, const be_attn_seq *seqs, int n_seqs)
{
    cu_backend *c = cu(b);
    int T = rows_of(seqs, n_seqs);
    if (T == 0)
        return;
    size_t row_bytes = (size_t)kv->kv_dim * 2;
    cu_dedupe *d = dd_find(c, seqs, n_seqs, 'K', (int)kv->block_stride, kv->kv_dim);
    void *dev;
    if (d) {
        dev = c->stage_d + d->off;
    } else {
        int64_t *off = stage(c, (size_t)T * sizeof(int64_t), &dev);
        for (int t = 0; t < T; t++)
            off[t] = -1;
        for (int i = 0; i < n_seqs; i++)
            for (int t = 0; t < seqs[i].n_q; t++) {
                int p = seqs[i].pos0 + t;
                off[seqs[i].q_row0 + t] =
                    (int64_t)seqs[i].blocks[p / BE_KV_BLOCK] * (int64_t)kv->block_stride +
                    (int64_t)(p % BE_KV_BLOCK) * (int64_t)row_bytes;
            }
        dd_add(c, seqs, n_seqs, 'K', (int)kv->block_stride, kv->kv_dim,
               (size_t)((uint8_t *)dev - c->stage_d));
    }
    cu_cmd *m = cmd_new(c, CMD_KV_STORE);
    m->p[0] = kv->base, m->p[1] = dev, m->l[0] = (int64_t)kv->k_off, m->l[1] = (int64_t)kv->v_off;
    m->i[0] = kv->kv_dim, m->p[2] = (void *)k, m->p[3] = (void *)v, m->l[2] = ld, m->i[1] = T;
}

static void cu_attention(be_backend *b, float *out, int64_t ldo, const float *q, int64_t ldq,
                         const be_kv_view *kv, const be_attn_seq *seqs, int n_seqs,
                         const be_attn_params *p)
{
    cu_backend *c = cu(b);
    if (n_seqs <= 0)
        return;
    const int g = p->n_head / p->n_head_kv;
    bool decode = true;
    for (int i = 0; i < n_seqs; i++)
        decode = decode && seqs[i].n_q == 1;
    int rpi = decode ? (g < KC_ATTN_MAX_ROWS ? g : KC_ATTN_MAX_ROWS) : KC_ATTN_MAX_ROWS;
    if (!decode)
        c->step_graphable = false;

    /* tables: kc_seq[n_seqs], block tables (cap blocks per sequence), work items */
    int max_blocks = 1;
    int64_t n_items = 0;
    for (int i = 0; i < n_seqs; i++) {
        int nb = (seqs[i].pos0 + seqs[i].n_q + BE_KV_BLOCK - 1) / BE_KV_BLOCK;
        max_blocks = nb > max_blocks ? nb : max_blocks;
        n_items += (int64_t)((seqs[i].n_q * g + rpi - 1) / rpi) * p->n_head_kv;
    }
    int cap = 16; /* a power of two, so the layout (and a captured graph) changes rarely */
    while (cap < max_blocks)
        cap *= 2;
    size_t o_seq = 0, o_bt = (size_t)n_seqs * sizeof(kc_seq);
    size_t o_it = o_bt + (size_t)n_seqs * (size_t)cap * sizeof(int32_t);
    size_t bytes = o_it + (size_t)n_items * sizeof(kc_attn_item);

    /* A decode step with fewer items than twice the multiprocessors splits each item's keys
     * into ranges of whole tiles (at most KC_ATTN_MAX_SPLIT), one block each. */
    int n_split = 1;
    if (decode && n_items < 2 * (int64_t)c->n_sm) {
        int max_ctx = 0;
        for (int i = 0; i < n_seqs; i++)
            max_ctx = seqs[i].pos0 + 1 > max_ctx ? seqs[i].pos0 + 1 : max_ctx;
        int by_ctx = (max_ctx + KC_ATTN_TILE - 1) / KC_ATTN_TILE;
        int by_sm = (int)((2 * (int64_t)c->n_sm + n_items - 1) / n_items);
        n_split = by_ctx < by_sm ? by_ctx : by_sm;
        n_split = n_split > KC_ATTN_MAX_SPLIT ? KC_ATTN_MAX_SPLIT : n_split < 1 ? 1 : n_split;
    }
    if (n_split > 1) {
        size_t need = (size_t)n_items * (size_t)n_split * (size_t)rpi * (size_t)(p->head_dim + 2) *
                      sizeof(float);
        if (need > c->attn_part_bytes) { /* grow: what is queued (and may use it) runs first,
                                          * before this op stages anything */
            finish(c);
            drop_graph(c);
            c->step_graphable = false;
            cudaFree(c->attn_part);
            c->attn_part_bytes = 0;
            size_t grow = need > ((size_t)1 << 20) ? need * 2 : (size_t)2 << 20;
            cu_check(cudaMalloc((void **)&c->attn_part, grow), "allocating attention scratch");
            c->attn_part_bytes = grow;
        }
    }
    cu_dedupe *d = dd_find(c, seqs, n_seqs, 'A', rpi | g << 8, p->n_head_kv * 65536 + cap);
    void *dev;
    if (d) {
        dev = c->stage_d + d->off;
    } else {
        uint8_t *h = stage(c, bytes, &dev);
        kc_seq *ks = (kc_seq *)(h + o_seq);
        int32_t *bt = (int32_t *)(h + o_bt);
        kc_attn_item *it = (kc_attn_item *)(h + o_it);
        int64_t j = 0;
        for (int i = 0; i < n_seqs; i++) {
            int nb = (seqs[i].pos0 + seqs[i].n_q + BE_KV_BLOCK - 1) / BE_KV_BLOCK;
            ks[i] = (kc_seq){seqs[i].q_row0, seqs[i].n_q, seqs[i].pos0, i * cap};
            memcpy(bt + (size_t)i * (size_t)cap, seqs[i].blocks, (size_t)nb * sizeof(int32_t));
            memset(bt + (size_t)i * (size_t)cap + nb, 0, (size_t)(cap - nb) * sizeof(int32_t));
            for (int r0 = 0; r0 < seqs[i].n_q * g; r0 += rpi)
                for (int kvh = 0; kvh < p->n_head_kv; kvh++)
                    it[j++] = (kc_attn_item){i, kvh, r0, 0};
        }
        dd_add(c, seqs, n_seqs, 'A', rpi | g << 8, p->n_head_kv * 65536 + cap,
               (size_t)((uint8_t *)dev - c->stage_d));
    }
    uint8_t *dv = dev;
    cu_cmd *k = cmd_new(c, CMD_ATTN);
    k->p[0] = out, k->l[0] = ldo, k->p[1] = (void *)q, k->l[1] = ldq, k->p[2] = kv->base;
    k->l[2] = (int64_t)kv->block_stride, k->l[3] = (int64_t)kv->k_off;
    k->l[4] = (int64_t)kv->v_off, k->i[0] = kv->kv_dim;
    k->p[3] = dv + o_seq, k->p[4] = dv + o_bt, k->p[5] = dv + o_it;
    k->i[1] = (int)n_items, k->i[2] = rpi, k->i[3] = p->n_head, k->i[4] = p->n_head_kv;
    k->i[5] = p->head_dim, k->f[0] = p->scale, k->i[6] = p->window, k->f[1] = p->softcap;
    k->i[7] = n_split, k->p[6] = c->attn_part;
}

/* The KV cache's copy-on-write of a shared block: a device-to-device copy in the step's order. */
static void cu_copy(be_backend *b, void *dst, const void *src, size_t bytes)
{
    cu_cmd *k = cmd_new(cu(b), CMD_D2D);
    k->p[0] = dst, k->p[1] = (void *)src, k->l[0] = (int64_t)bytes;
    cu(b)->step_graphable = false; /* it runs alone before the next step: no graph for that */
}

/* Page-locked, so the per-step logits copy runs at full link speed and needs no staging. */
static void *cu_host_alloc(be_backend *b, size_t bytes)
{
    on_device(cu(b));
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cu_host_free(be_backend *b, void *p)
{
    on_device(cu(b));
    finish(cu(b));
    cudaFreeHost(p);
}

static const be_ops cu_ops = {
    .name = "cuda",
    .destroy = cu_destroy,
    .alloc = cu_alloc,
    .free = cu_free,
    .to_host = cu_to_host,
    .scratch_bytes = cu_scratch_bytes,
    .matmul = cu_matmul,
    .rmsnorm = cu_rmsnorm,
    .add = cu_add,
    .silu_mul = cu_silu_mul,
    .rope_table = cu_rope_table,
    .rope = cu_rope,
    .embed = cu_embed,
    .get_rows = cu_get_rows,
    .kv_store = cu_kv_store,
    .attention = cu_attention,
    .gelu_mul = cu_gelu_mul,
    .scale = cu_scale,
    .softcap = cu_softcap,
    .copy = cu_copy,
    .host_alloc = cu_host_alloc,
    .host_free = cu_host_free,
};

/* --- creation --------------------------------------------------------------------------------- */

bool be_cuda_built(void)
{
    return true;
}

bool be_cuda_supports(gguf_ttype t)
{
    return kc_weight_supported((int)t) != 0;
}

pl_status be_cuda_probe(int ordinal, char *desc, size_t desc_len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        return PL_ERRF(PL_UNSUPPORTED, "cuda:%d: no CUDA device is visible (%s)", ordinal,
                       e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (ordinal < 0 || ordinal >= n)
        return PL_ERRF(PL_INVALID, "cuda:%d: no such device (%d visible: cuda:0..cuda:%d)", ordinal,
                       n, n - 1);
    struct cudaDeviceProp pr;
    if ((e = cudaGetDeviceProperties(&pr, ordinal)) != cudaSuccess)
        return PL_ERRF(PL_UNSUPPORTED, "cuda:%d: %s", ordinal, cudaGetErrorString(e));
    if (pr.major < 7)
        return PL_ERRF(PL_UNSUPPORTED, "cuda:%d (%s) has compute capability %d.%d; need 7.0+",
                       ordinal, pr.name, pr.major, pr.minor);
    size_t f = 0, t = 0;
    if (cudaSetDevice(ordinal) == cudaSuccess && cudaMemGetInfo(&f, &t) != cudaSuccess)
        cudaGetLastError();
    if (desc && desc_len)
        snprintf(desc, desc_len, "%s, sm_%d%d, %.1f GiB free of %.1f GiB", pr.name, pr.major,
                 pr.minor, f / 1073741824.0, t / 1073741824.0);
    return PL_OK;
}

pl_status be_cuda_create(int ordinal, int max_tokens, int64_t max_cols, int max_ctx,
                         be_backend **out)
{
    (void)max_ctx;
    *out = NULL;
    pl_status s = be_cuda_probe(ordinal, NULL, 0);
    if (s != PL_OK)
        return s;
    cudaError_t e = cudaSetDevice(ordinal);
    if (e != cudaSuccess)
        return PL_ERRF(PL_UNSUPPORTED, "cuda:%d: %s", ordinal, cudaGetErrorString(e));
    cu_backend *c = calloc(1, sizeof *c);
    if (!c)
        return PL_ERRF(PL_NOMEM, "cuda backend: out of memory");
    c->base.ops = &cu_ops;
    c->ordinal = ordinal;
    c->max_tokens = max_tokens;
    c->max_cols = (max_cols + 255) / 256 * 256;
    const char *g = getenv("PARLEY_CUDA_GRAPH");
    c->graphs_on = !(g && strcmp(g, "0") == 0);
    const char *fu = getenv("PARLEY_CUDA_FUSE");
    c->fuse = !(fu && strcmp(fu, "0") == 0);
    const char *pr = getenv("PARLEY_CUDA_PROFILE");
    c->prof = pr && *pr && strcmp(pr, "0") != 0;
    const char *gm = getenv("PARLEY_CUDA_GEMM_MIN_T");
    c->gemm_min_t = gm && atoi(gm) > 0 ? atoi(gm) : CU_GEMM_MIN_T;
    const char *fc = getenv("PARLEY_CUDA_F16_CACHE_MB");
    c->f16_cap = fc && *fc ? (size_t)strtoull(fc, NULL, 10) << 20 : CU_F16_CACHE;
    if (cudaDeviceGetAttribute(&c->n_sm, cudaDevAttrMultiProcessorCount, ordinal) != cudaSuccess)
        c->n_sm = 1, cudaGetLastError();
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        c->stream = NULL;
        s = PL_ERRF(PL_ERR, "cuda:%d: cannot create a stream: %s", ordinal, cudaGetErrorString(e));
        goto fail;
    }
    if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        s = PL_ERRF(PL_ERR, "cuda:%d: cannot initialise cuBLAS", ordinal);
        goto fail;
    }
    cublasSetStream(c->blas, c->stream);
    /* A workspace of our own: cuBLAS then allocates nothing inside a stream capture, so steps
     * with cuBLAS products can be graphed. */
    if (cudaMalloc(&c->blas_ws, CU_BLAS_WS) != cudaSuccess ||
        cublasSetWorkspace(c->blas, c->blas_ws, CU_BLAS_WS) != CUBLAS_STATUS_SUCCESS) {
        cudaGetLastError();
        s = PL_ERRF(PL_NOMEM, "cuda:%d: cannot allocate the cuBLAS workspace", ordinal);
        goto fail;
    }
    /* Enough for the Q8_1 format (the largest: 40 bytes per 32 values) of any step. */
    c->xq_bytes = (size_t)max_tokens * (size_t)(c->max_cols / 32) * 40;
    for (int i = 0; i < 3; i++)
        if ((e = cudaMalloc(&c->xq[i], c->xq_bytes)) != cudaSuccess) {
            c->xq[i] = NULL;
            s = PL_ERRF(PL_TOO_LARGE, "cuda:%d: cannot allocate %zu bytes of activation scratch",
                        ordinal, c->xq_bytes);
            goto fail;
        }
    c->stage_cap = CU_STAGE_INIT;
    if (cudaHostAlloc((void **)&c->stage_h, c->stage_cap, cudaHostAllocDefault) != cudaSuccess ||
        cudaMalloc((void **)&c->stage_d, c->stage_cap) != cudaSuccess) {
        cudaGetLastError();
        s = PL_ERRF(PL_NOMEM, "cuda:%d: cannot allocate staging memory", ordinal);
        goto fail;
    }
    stage_reset(c);
    *out = &c->base;
    return PL_OK;
fail:
    cu_destroy(&c->base);
    return s;
}

void be_cuda_get_stats(const be_backend *b, be_cuda_stats *st)
{
    *st = ((const cu_backend *)b)->st;
}
