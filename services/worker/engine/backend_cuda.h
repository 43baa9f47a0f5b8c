/* backend_cuda.h — choosing the compute device of an engine context, and the CUDA backend's
 * entry points.
 *
 * Device names: "cpu" (or NULL / ""), "cuda" (= "cuda:0") and "cuda:N". The CUDA backend lives
 * in kernels/ and is only linked by `make CUDA=1`; the default build links kernels/cuda_stub.c
 * instead, whose functions fail with PL_UNSUPPORTED and a message saying that CUDA support was
 * not built. Nothing here needs a GPU to compile. */
#ifndef PARLEY_BACKEND_CUDA_H
#define PARLEY_BACKEND_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "status.h"

typedef struct eng_model eng_model;

/* Parses a device name: *ordinal = -1 for the CPU, else the CUDA device number. PL_INVALID
 * (message names the accepted forms) for anything else. */
pl_status be_parse_device(const char *device, int *ordinal);

/* Creates the backend for `device` for a context over model m (CPU: be_cpu_create with the
 * other arguments; CUDA: be_cuda_create, then every weight and norm vector of m copied to the
 * device once, PL_TOO_LARGE with the sizes when they do not fit). On PL_OK *out is owned by the
 * caller (ops->destroy). */
pl_status be_open(const char *device, const eng_model *m, int n_threads, int max_tokens,
                  int64_t max_cols, int max_ctx, be_backend **out);

/* True when the backend's memory (activations, logits) is directly readable by the host. */
bool be_host_memory(const be_backend *b);

/* --- CUDA (kernels/backend_cuda.c, or kernels/cuda_stub.c in a CPU-only build) --------------- */

/* Whether this binary was built with the CUDA backend. */
bool be_cuda_built(void);
/* Whether the CUDA kernels take weights of type t. */
bool be_cuda_supports(gguf_ttype t);
/* Checks that CUDA device `ordinal` is usable and writes a description ("NVIDIA H100 80GB HBM3,
 * sm_90, 79.2 GiB free of 79.6 GiB") to desc. PL_UNSUPPORTED when CUDA is not built in or no
 * device is visible; PL_INVALID for an ordinal past the last device. */
pl_status be_cuda_probe(int ordinal, char *desc, size_t desc_len);
/* Creates a CUDA backend on device `ordinal` with scratch for steps of up to max_tokens rows of
 * up to max_cols columns. On PL_OK *out is owned by the caller (ops->destroy). */
pl_status be_cuda_create(int ordinal, int max_tokens, int64_t max_cols, int max_ctx,
                         be_backend **out);
/* Copies `bytes` of host memory at `host` (a weight or vector of the model, which must outlive
 * the backend) to the device once; later ops given that host pointer use the copy. PL_TOO_LARGE
 * when the device memory is exhausted (message gives the sizes). Idempotent per pointer. */
pl_status be_cuda_preload(be_backend *b, const void *host, size_t bytes);
/* Free and total device memory in bytes. */
void be_cuda_mem_info(be_backend *b, size_t *free_bytes, size_t *total_bytes);

typedef struct be_cuda_stats {
    uint64_t flushes;        /* command lists executed */
    uint64_t graph_launches; /* of those, replayed as a captured CUDA graph */
    uint64_t graph_captures; /* graphs captured (a new decode batch shape) */
    uint64_t cublas_gemms;   /* half-precision cuBLAS products issued */
    size_t weight_bytes;     /* device memory holding the model */
} be_cuda_stats;
void be_cuda_get_stats(const be_backend *b, be_cuda_stats *st);

#endif
