/* cuda_stub.c — the CUDA entry points of backend_cuda.h in a build without CUDA (the default
 * `make`): every function that would need the GPU fails with PL_UNSUPPORTED and says that CUDA
 * support was not built, so `--device cuda:0` gets a clear answer instead of a link error.
 * `make CUDA=1` links kernels/backend_cuda.c and the kernels instead of this file. */
#include <string.h>

#include "backend_cuda.h"

bool be_cuda_built(void)
{
    return false;
}

bool be_cuda_supports(gguf_ttype t)
{
    (void)t;
    return false;
}

pl_status be_cuda_probe(int ordinal, char *desc, size_t desc_len)
{
    if (desc && desc_len)
        desc[0] = '\0';
    return PL_ERRF(PL_UNSUPPORTED,
                   "device cuda:%d: CUDA support was not built into this binary (rebuild with "
                   "`make CUDA=1`)",
                   ordinal);
}

pl_status be_cuda_create(int ordinal, int max_tokens, int64_t max_cols, int max_ctx,
                         be_backend **out)
{
    (void)max_tokens, (void)max_cols, (void)max_ctx;
    *out = NULL;
    return be_cuda_probe(ordinal, NULL, 0);
}

pl_status be_cuda_preload(be_backend *b, const void *host, size_t bytes)
{
    (void)b, (void)host, (void)bytes;
    return PL_ERRF(PL_UNSUPPORTED, "CUDA support was not built into this binary");
}

void be_cuda_mem_info(be_backend *b, size_t *free_bytes, size_t *total_bytes)
{
    (void)b;
    *free_bytes = *total_bytes = 0;
}

void be_cuda_get_stats(const be_backend *b, be_cuda_stats *st)
{
    (void)b;
    memset(st, 0, sizeof *st);
}
