/* device.c — which backend an engine context runs on: parses "cpu" / "cuda:N", creates the CPU
 * or the CUDA backend, and for CUDA copies the model's weights and norm vectors to the device
 * once (checking first that they fit, so a model too large for the card is one clear error).
 *
 * The CUDA functions come from kernels/backend_cuda.c in a `make CUDA=1` build and from
 * kernels/cuda_stub.c otherwise (which fail with "CUDA support was not built"). Stateless. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cuda.h"
#include "engine.h"
#include "model.h"
#include "quant.h"

pl_status be_parse_device(const char *device, int *ordinal)
{
    *ordinal = -1;
    if (!device || !device[0] || strcmp(device, "cpu") == 0)
        return PL_OK;
    if (strcmp(device, "cuda") == 0) {
        *ordinal = 0;
        return PL_OK;
    }
    if (strncmp(device, "cuda:", 5) == 0 && device[5] >= '0' && device[5] <= '9') {
        char *end = NULL;
        long n = strtol(device + 5, &end, 10);
        if (*end == '\0' && n >= 0 && n < 1024) {
            *ordinal = (int)n;
            return PL_OK;
        }
    }
    return PL_ERRF(PL_INVALID, "unknown device '%s' (expected cpu, cuda or cuda:N)", device);
}

pl_status eng_device_check(const char *device, char *desc, size_t desc_len)
{
    int ord;
    pl_status s = be_parse_device(device, &ord);
    if (s != PL_OK)
        return s;
    if (ord < 0) {
        if (desc && desc_len)
            snprintf(desc, desc_len, "cpu");
        return PL_OK;
    }
    return be_cuda_probe(ord, desc, desc_len);
}

bool be_host_memory(const be_backend *b)
{
    return strcmp(b->ops->name, "cuda") != 0;
}

static size_t weight_bytes(const be_weight *w)
{
    return w->data ? (size_t)w->rows * qt_row_size(w->type, w->cols) : 0;
}

typedef pl_status (*tensor_fn)(void *arg, const void *host, size_t bytes, int type,
                               const char *name);

/* Calls fn for every weight (its type; a NULL data pointer is skipped by the callbacks) and
 * vector (type -1) of the model, the tied output once. */
static pl_status each_tensor(const eng_model *m, tensor_fn fn, void *arg)
{
    const model_hparams *hp = &m->hp;
    const size_t E = (size_t)hp->n_embd * sizeof(float), H = (size_t)hp->head_dim * sizeof(float);
    pl_status s;
#define W(w)                                                                                       \
    if ((s = fn(arg, (w).data, weight_bytes(&(w)), (int)(w).type, (w).name)) != PL_OK)             \
    return s
#define V(v, n)                                                                                    \
    if ((s = fn(arg, (v), (v) ? (n) : 0, -1, NULL)) != PL_OK)                                      \
    return s
    W(m->tok_embd);
    if (m->output.data != m->tok_embd.data)
        W(m->output);
    V(m->output_norm, E);
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        W(L->wq);
        W(L->wk);
        W(L->wv);
        W(L->wo);
        W(L->w_gate);
        W(L->w_up);
        W(L->w_down);
        V(L->attn_norm, E);
        V(L->ffn_norm, E);
        V(L->attn_q_norm, H);
        V(L->attn_k_norm, H);
        V(L->post_attn_norm, E);
        V(L->post_ffn_norm, E);
    }
#undef W
#undef V
    return PL_OK;
}

static pl_status add_bytes(void *arg, const void *host, size_t bytes, int type, const char *name)
{
    (void)host, (void)type, (void)name;
    *(size_t *)arg += bytes;
    return PL_OK;
}

static pl_status check_type(void *arg, const void *host, size_t bytes, int type, const char *name)
{
    (void)arg;
    if (host && type >= 0 && (bytes == 0 || !be_cuda_supports((gguf_ttype)type))) {
        const qt_traits *tr = qt_get((gguf_ttype)type);
        return PL_ERRF(PL_UNSUPPORTED,
                       "tensor '%s' has type %s, which the CUDA backend cannot take",
                       name ? name : "?", tr ? tr->name : "unknown");
    }
    return PL_OK;
}

static pl_status preload(void *arg, const void *host, size_t bytes, int type, const char *name)
{
    (void)type, (void)name;
    return be_cuda_preload(arg, host, bytes);
}

pl_status be_open(const char *device, const eng_model *m, int n_threads, int max_tokens,
                  int64_t max_cols, int max_ctx, be_backend **out)
{
    *out = NULL;
    int ord;
    pl_status s = be_parse_device(device, &ord);
    if (s != PL_OK)
        return s;
    if (ord < 0)
        return be_cpu_create(n_threads, max_tokens, max_cols, max_ctx, out);

    if (m->hp.head_dim > 256)
        return PL_ERRF(PL_UNSUPPORTED,
                       "cuda:%d: head_dim %d is above the attention kernel's "
                       "limit of 256",
                       ord, m->hp.head_dim);
    be_backend *b = NULL;
    if ((s = be_cuda_create(ord, max_tokens, max_cols, max_ctx, &b)) != PL_OK)
        return s;
    if ((s = each_tensor(m, check_type, NULL)) != PL_OK) {
        b->ops->destroy(b);
        return s;
    }
    size_t need = 0, free_b = 0, total = 0;
    each_tensor(m, add_bytes, &need);
    be_cuda_mem_info(b, &free_b, &total);
    if (need > free_b) {
        b->ops->destroy(b);
        return PL_ERRF(PL_TOO_LARGE,
                       "cuda:%d: the model's weights need %.1f MiB but only %.1f MiB of %.1f MiB "
                       "are free: the model does not fit",
                       ord, need / 1048576.0, free_b / 1048576.0, total / 1048576.0);
    }
    if ((s = each_tensor(m, preload, b)) != PL_OK) {
        b->ops->destroy(b);
        return s;
    }
    *out = b;
    return PL_OK;
}
