/* forward.c — engine contexts and the batched forward pass.
 *
 * A context (eng_ctx) holds the backend (thread pool + kernels), the paged KV cache and every
 * activation buffer a step can need, sized once from max_batch_tokens and max_seqs. eng_step
 * validates the items, reserves KV blocks for all of them (all-or-nothing), gathers every token
 * of the step into one activation matrix, runs the architecture's forward function over it, and
 * commits the new tokens (with their ids, for the prefix cache) to their sequences.
 *
 * Shapes (T = tokens in the step, E = n_embd, QD = n_head * head_dim, KD = n_head_kv * head_dim,
 * F = n_ff, V = n_vocab, O = items that want logits):
 *   x, xb   (T, E)   residual stream and normed / projected activations
 *   q, att  (T, QD)  queries (roped in place) and attention output
 *   k, v    (T, KD)  new keys / values, copied into the cache as F16
 *   hb, hb2 (T, F)   gate and up projections of the FFN
 *   cs      (T, n_rot) rope cos/sin table for the step's positions
 *   logits  (O, V)
 * In the last layer only the O rows whose logits are wanted go through the output projection
 * and FFN (the others only needed their K/V).
 *
 * Threading: a context is driven by one thread; parallelism lives inside the backend's ops.
 * Not here: sampling, tokenisation, scheduling (the worker decides what goes into a step). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "backend_cuda.h"
#include "engine.h"
#include "fwd.h"
#include "kv.h"
#include "model.h"

struct fwd_state {
    eng_ctx *c;
    int T;      /* tokens in the step */
    int n_seqs; /* items */
    int n_out;  /* rows that want logits */
};

struct eng_ctx {
    eng_model *m;
    eng_ctx_params p;
    be_backend *b;
    kv_cache *kv;
    void *kv_storage;
    size_t kv_storage_bytes;

    /* activations (backend memory) */
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *cs, *logits;
    float *logits_host; /* [max_out * n_vocab] host copy when the backend's memory is a device's */
    size_t act_bytes[10];

    /* per-step host tables */
    int32_t *tokens;     /* [max_batch_tokens] */
    int32_t *pos;        /* [max_batch_tokens] */
    be_attn_seq *seqs;   /* [max_batch_tokens] one per item */
    int32_t *out_rows;   /* [max_out] */
    int32_t *item_out;   /* [max_batch_tokens] item -> logits row or -1 */
    uint32_t *seq_stamp; /* [max_seqs] step stamp, to catch a sequence twice in a step */
    uint32_t stamp;
    int max_out;
    int last_items;
    be_rope rope;
};

/* --- architecture forward functions in other files (fwd.h) -------------------------------------
 */

void fwd_get(const fwd_state *st, fwd_bufs *out)
{
    eng_ctx *c = st->c;
    *out = (fwd_bufs){.m = c->m,
                      .b = c->b,
                      .kv = c->kv,
                      .x = c->x,
                      .xb = c->xb,
                      .q = c->q,
                      .k = c->k,
                      .v = c->v,
                      .att = c->att,
                      .hb = c->hb,
                      .hb2 = c->hb2,
                      .cs = c->cs,
                      .logits = c->logits,
                      .tokens = c->tokens,
                      .pos = c->pos,
                      .seqs = c->seqs,
                      .out_rows = c->out_rows,
                      .T = st->T,
                      .n_seqs = st->n_seqs,
                      .n_out = st->n_out};
}

/* --- llama -------------------------------------------------------------------------------------
 */

pl_status fwd_llama(fwd_state *st)
{
    eng_ctx *c = st->c;
    const eng_model *m = c->m;
    const model_hparams *hp = &m->hp;
    be_backend *b = c->b;
    const be_ops *o = b->ops;
    const int E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
    const int64_t QD = (int64_t)hp->n_head * hd, KD = (int64_t)hp->n_head_kv * hd;
    int T = st->T;

    be_attn_params ap = {.n_head = hp->n_head,
                         .n_head_kv = hp->n_head_kv,
                         .head_dim = hd,
                         .scale = 1.0f / sqrtf((float)hd),
                         .window = 0,
                         .softcap = 0};

    o->embed(b, c->x, &m->tok_embd, c->tokens, T);
    o->rope_table(b, c->cs, c->pos, T, &c->rope);

    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        bool last = l == hp->n_layer - 1;

        /* attention */
        o->rmsnorm(b, c->xb, E, c->x, E, L->attn_norm, T, E, hp->norm_eps);
        const be_weight *wqkv[3] = {&L->wq, &L->wk, &L->wv};
        float *yqkv[3] = {c->q, c->k, c->v};
        int64_t ldqkv[3] = {QD, KD, KD};
        o->matmul(b, 3, wqkv, c->xb, E, T, yqkv, ldqkv);
        o->rope(b, c->q, QD, T, hp->n_head, hd, c->cs, &c->rope);
        o->rope(b, c->k, KD, T, hp->n_head_kv, hd, c->cs, &c->rope);
        be_kv_view kvv = kv_layer_view(c->kv, l);
        o->kv_store(b, &kvv, c->k, c->v, KD, c->seqs, st->n_seqs);
        o->attention(b, c->att, QD, c->q, QD, &kvv, c->seqs, st->n_seqs, &ap);

        if (last) {
            /* Only the rows whose logits are wanted go on. */
            if (st->n_out == 0)
                break;
            if (st->n_out < T) {
                o->get_rows(b, c->att, c->att, QD, c->out_rows, st->n_out);
                o->get_rows(b, c->x, c->x, E, c->out_rows, st->n_out);
                T = st->n_out;
            }
        }
        const be_weight *wo[1] = {&L->wo};
        float *yo[1] = {c->xb};
        int64_t ldo[1] = {E};
        o->matmul(b, 1, wo, c->att, QD, T, yo, ldo);
        o->add(b, c->x, c->xb, (int64_t)T * E);

        /* feed-forward: down(silu(gate(x)) * up(x)) */
        o->rmsnorm(b, c->xb, E, c->x, E, L->ffn_norm, T, E, hp->norm_eps);
        const be_weight *wgu[2] = {&L->w_gate, &L->w_up};
        float *ygu[2] = {c->hb, c->hb2};
        int64_t ldgu[2] = {F, F};
        o->matmul(b, 2, wgu, c->xb, E, T, ygu, ldgu);
        o->silu_mul(b, c->hb, c->hb2, (int64_t)T * F);
        const be_weight *wd[1] = {&L->w_down};
        float *yd[1] = {c->xb};
        int64_t ldd[1] = {E};
        o->matmul(b, 1, wd, c->hb, F, T, yd, ldd);
        o->add(b, c->x, c->xb, (int64_t)T * E);
    }
    if (st->n_out == 0)
        return PL_OK;

    /* x now holds exactly the n_out wanted rows. */
    o->rmsnorm(b, c->xb, E, c->x, E, m->output_norm, st->n_out, E, hp->norm_eps);
    const be_weight *wout[1] = {&m->output};
    float *ylog[1] = {c->logits};
    int64_t ldl[1] = {hp->n_vocab};
    o->matmul(b, 1, wout, c->xb, E, st->n_out, ylog, ldl);
    return PL_OK;
}

/* --- context ------------------------------------------------------------------------------------
 */

static float **act_slot(eng_ctx *c, int i)
{
    float **slots[10] = {&c->x,   &c->xb, &c->q,   &c->k,  &c->v,
                         &c->att, &c->hb, &c->hb2, &c->cs, &c->logits};
    return slots[i];
}

static void kv_copy_on_backend(void *ctx, void *dst, const void *src, size_t n)
{
    be_backend *b = ctx;
    b->ops->copy(b, dst, src, n);
}

pl_status eng_ctx_create(eng_model *m, const eng_ctx_params *pin, eng_ctx **out)
{
    *out = NULL;
    const model_hparams *hp = &m->hp;
    eng_ctx_params p = pin ? *pin : (eng_ctx_params){0};
    if (p.max_seqs < 0 || p.n_threads < 0 || p.max_batch_tokens < 0 || p.max_seq_len < 0)
        return PL_ERRF(PL_INVALID, "engine: negative context parameter");
    if (p.kv_budget_bytes == 0)
        p.kv_budget_bytes = (size_t)64 << 20;
    if (p.max_seqs == 0)
        p.max_seqs = 64;
    if (p.n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p.n_threads = n > 0 ? (int32_t)n : 1;
    }
    if (p.max_batch_tokens == 0)
        p.max_batch_tokens = 512;
    if (p.max_seq_len == 0 || p.max_seq_len > hp->n_ctx_train)
        p.max_seq_len = hp->n_ctx_train;
    if (p.max_seqs > 65536 || p.n_threads > 1024 || p.max_batch_tokens > 65536)
        return PL_ERRF(PL_INVALID, "engine: context parameter out of range");

    eng_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return PL_ERRF(PL_NOMEM, "engine: out of memory");
    c->m = m;
    c->p = p;
    c->rope = (be_rope){.n_rot = hp->n_rot,
                        .base = hp->rope_base,
                        .freq_scale = hp->rope_freq_scale,
                        .freq_factors = m->rope_freq_factors,
                        .mode = BE_ROPE_ADJACENT};
    const int64_t T = p.max_batch_tokens, E = hp->n_embd, F = hp->n_ff;
    const int64_t QD = (int64_t)hp->n_head * hp->head_dim;
    const int64_t KD = (int64_t)hp->n_head_kv * hp->head_dim;
    int64_t max_cols = E > QD ? E : QD;
    if (F > max_cols)
        max_cols = F;
    c->max_out = p.max_seqs < p.max_batch_tokens ? p.max_seqs : p.max_batch_tokens;

    pl_status st = be_open(p.device, m, p.n_threads, (int)T, max_cols, p.max_seq_len, &c->b);
    if (st != PL_OK)
        goto fail;

    kv_params kp = {.n_layer = hp->n_layer,
                    .kv_dim = (int)KD,
                    .max_seqs = p.max_seqs,
                    .max_seq_len = p.max_seq_len,
                    .budget_bytes = p.kv_budget_bytes,
                    /* copy-on-write of a shared block: a memcpy in host memory, else the
                     * backend's copy op (without one, no prefix cache) */
                    .prefix_cache = !p.no_prefix_cache && (be_host_memory(c->b) || c->b->ops->copy),
                    .copy = be_host_memory(c->b) ? NULL : kv_copy_on_backend,
                    .copy_ctx = c->b};
    c->kv_storage_bytes = kv_storage_bytes(&kp);
    if (c->kv_storage_bytes == 0) {
        st = PL_ERRF(PL_INVALID,
                     "engine: KV budget of %zu bytes is below one block (%zu bytes = %d tokens)",
                     p.kv_budget_bytes, kv_block_bytes(hp->n_layer, (int)KD), BE_KV_BLOCK);
        goto fail;
    }
    c->kv_storage = c->b->ops->alloc(c->b, c->kv_storage_bytes);
    if (!c->kv_storage) {
        st =
            PL_ERRF(PL_NOMEM, "engine: cannot allocate %zu bytes of KV cache", c->kv_storage_bytes);
        goto fail;
    }
    if ((st = kv_create(&kp, c->kv_storage, &c->kv)) != PL_OK)
        goto fail;

    int64_t sizes[10] = {T * E,  T * E, T * QD, T * KD,        T * KD,
                         T * QD, T * F, T * F,  T * hp->n_rot, (int64_t)c->max_out * hp->n_vocab};
    for (int i = 0; i < 10; i++) {
        c->act_bytes[i] = (size_t)(sizes[i] > 0 ? sizes[i] : 1) * sizeof(float);
        *act_slot(c, i) = c->b->ops->alloc(c->b, c->act_bytes[i]);
        if (!*act_slot(c, i)) {
            st = PL_ERRF(PL_NOMEM, "engine: out of memory for activations");
            goto fail;
        }
    }
    c->tokens = malloc((size_t)T * sizeof *c->tokens);
    c->pos = malloc((size_t)T * sizeof *c->pos);
    c->seqs = malloc((size_t)T * sizeof *c->seqs);
    c->out_rows = malloc((size_t)c->max_out * sizeof *c->out_rows);
    c->item_out = malloc((size_t)T * sizeof *c->item_out);
    c->seq_stamp = calloc((size_t)p.max_seqs, sizeof *c->seq_stamp);
    if (!c->tokens || !c->pos || !c->seqs || !c->out_rows || !c->item_out || !c->seq_stamp) {
        st = PL_ERRF(PL_NOMEM, "engine: out of memory");
        goto fail;
    }
    if (!be_host_memory(c->b)) {
        const be_ops *o = c->b->ops;
        c->logits_host =
            o->host_alloc ? o->host_alloc(c->b, c->act_bytes[9]) : malloc(c->act_bytes[9]);
        if (!c->logits_host) {
            st = PL_ERRF(PL_NOMEM, "engine: out of memory for host logits");
            goto fail;
        }
    }
    *out = c;
    return PL_OK;
fail:
    eng_ctx_free(c);
    return st;
}

void eng_ctx_free(eng_ctx *c)
{
    if (!c)
        return;
    if (c->b) {
        if (c->logits_host && c->b->ops->host_alloc)
            c->b->ops->host_free(c->b, c->logits_host);
        else
            free(c->logits_host);
        c->logits_host = NULL;
        for (int i = 0; i < 10; i++)
            c->b->ops->free(c->b, *act_slot(c, i), c->act_bytes[i]);
        c->b->ops->free(c->b, c->kv_storage, c->kv_storage_bytes);
        c->b->ops->destroy(c->b);
    }
    kv_destroy(c->kv);
    free(c->tokens);
    free(c->pos);
    free(c->seqs);
    free(c->out_rows);
    free(c->item_out);
    free(c->seq_stamp);
    free(c);
}

void eng_ctx_get_params(const eng_ctx *c, eng_ctx_params *p)
{
    *p = c->p;
}

size_t eng_ctx_scratch_bytes(const eng_ctx *c)
{
    size_t n = c->b->ops->scratch_bytes(c->b);
    for (int i = 0; i < 10; i++)
        n += c->act_bytes[i];
    return n;
}

pl_status eng_seq_add(eng_ctx *c, eng_seq_id *out)
{
    return kv_seq_add(c->kv, out);
}

pl_status eng_seq_add_prompt(eng_ctx *c, const int32_t *tokens, int32_t n, eng_seq_id *out,
                             int32_t *n_cached)
{
    *n_cached = 0;
    if (n < 1 || !tokens)
        return PL_ERRF(PL_INVALID, "engine: a prompt needs at least one token");
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->m->hp.n_vocab)
            return PL_ERRF(PL_INVALID,
                           "engine: prompt token %d (id %d) outside the vocabulary of %d", i,
                           tokens[i], c->m->hp.n_vocab);
    return kv_seq_add_prefix(c->kv, tokens, n, out, n_cached);
}

pl_status eng_seq_remove(eng_ctx *c, eng_seq_id s)
{
    return kv_seq_remove(c->kv, s);
}

pl_status eng_seq_truncate(eng_ctx *c, eng_seq_id s, int32_t n)
{
    return kv_truncate(c->kv, s, n);
}

int32_t eng_seq_len(const eng_ctx *c, eng_seq_id s)
{
    return kv_seq_len(c->kv, s);
}

bool eng_seq_fits(const eng_ctx *c, eng_seq_id s, int32_t n_new)
{
    int32_t len = kv_seq_len(c->kv, s);
    if (len < 0 || n_new < 0 || (int64_t)len + n_new > c->p.max_seq_len)
        return false;
    kv_stats ks;
    kv_get_stats(c->kv, &ks);
    return kv_blocks_needed(c->kv, s, n_new) <= ks.free_blocks;
}

void eng_kv_get_stats(const eng_ctx *c, eng_kv_stats *st)
{
    kv_stats ks;
    kv_get_stats(c->kv, &ks);
    st->total_bytes = ks.total_bytes;
    st->free_bytes = ks.free_bytes;
    st->block_tokens = BE_KV_BLOCK;
    st->total_blocks = ks.total_blocks;
    st->free_blocks = ks.free_blocks;
    st->n_seqs = ks.n_seqs;
    st->bytes_per_block = ks.block_bytes;
    st->cached_blocks = ks.cached_blocks;
    st->prefix_queries = ks.prefix_queries;
    st->prefix_hits = ks.prefix_hits;
    st->prefix_evictions = ks.evictions;
}

/* --- step ---------------------------------------------------------------------------------------
 */

static pl_status check_items(eng_ctx *c, const eng_item *items, int n_items, int *T_out)
{
    if (n_items < 1 || !items)
        return PL_ERRF(PL_INVALID, "engine: a step needs at least one item");
    if (++c->stamp == 0) { /* wrapped: reset the stamps */
        memset(c->seq_stamp, 0, (size_t)c->p.max_seqs * sizeof *c->seq_stamp);
        c->stamp = 1;
    }
    int64_t T = 0;
    int n_out = 0;
    const int32_t V = c->m->hp.n_vocab;
    for (int i = 0; i < n_items; i++) {
        const eng_item *it = &items[i];
        if (!kv_seq_live(c->kv, it->seq))
            return PL_ERRF(PL_NOT_FOUND, "engine: item %d: no sequence %d", i, it->seq);
        if (c->seq_stamp[it->seq] == c->stamp)
            return PL_ERRF(PL_INVALID, "engine: sequence %d appears twice in one step", it->seq);
        c->seq_stamp[it->seq] = c->stamp;
        if (it->n_tokens < 1 || !it->tokens)
            return PL_ERRF(PL_INVALID, "engine: item %d (sequence %d) has no tokens", i, it->seq);
        for (int32_t t = 0; t < it->n_tokens; t++)
            if (it->tokens[t] < 0 || it->tokens[t] >= V)
                return PL_ERRF(PL_INVALID,
                               "engine: item %d (sequence %d): token id %d outside the "
                               "vocabulary of %d",
                               i, it->seq, it->tokens[t], V);
        T += it->n_tokens;
        n_out += it->want_logits;
    }
    if (T > c->p.max_batch_tokens)
        return PL_ERRF(PL_INVALID, "engine: a step of %lld tokens exceeds max_batch_tokens %d",
                       (long long)T, c->p.max_batch_tokens);
    PL_ASSERT(n_out <= c->max_out);
    *T_out = (int)T;
    return PL_OK;
}

pl_status eng_step(eng_ctx *c, const eng_item *items, int n_items)
{
    int T = 0;
    c->last_items = 0;
    if (n_items > c->p.max_batch_tokens)
        return PL_ERRF(PL_INVALID, "engine: %d items exceed max_batch_tokens %d", n_items,
                       c->p.max_batch_tokens);
    pl_status st = check_items(c, items, n_items, &T);
    if (st != PL_OK)
        return st;

    /* Reserve KV room for every item, or undo and fail. */
    for (int i = 0; i < n_items; i++) {
        st = kv_reserve(c->kv, items[i].seq, items[i].n_tokens);
        if (st != PL_OK) {
            for (int k = 0; k < i; k++)
                kv_truncate(c->kv, items[k].seq, kv_seq_len(c->kv, items[k].seq));
            return st;
        }
    }

    /* Gather the step. */
    fwd_state fs = {.c = c, .T = T, .n_seqs = n_items, .n_out = 0};
    int row = 0;
    for (int i = 0; i < n_items; i++) {
        const eng_item *it = &items[i];
        int32_t len = kv_seq_len(c->kv, it->seq);
        c->seqs[i] = (be_attn_seq){.q_row0 = row,
                                   .n_q = it->n_tokens,
                                   .pos0 = len,
                                   .blocks = kv_seq_blocks(c->kv, it->seq)};
        memcpy(c->tokens + row, it->tokens, (size_t)it->n_tokens * sizeof(int32_t));
        for (int32_t t = 0; t < it->n_tokens; t++)
            c->pos[row + t] = len + t;
        row += it->n_tokens;
        c->item_out[i] = -1;
        if (it->want_logits) {
            c->item_out[i] = fs.n_out;
            c->out_rows[fs.n_out++] = row - 1;
        }
    }

    st = c->m->arch->forward(&fs);
    if (st != PL_OK) {
        for (int i = 0; i < n_items; i++)
            kv_truncate(c->kv, items[i].seq, kv_seq_len(c->kv, items[i].seq));
        return st;
    }
    /* Committing with the ids enters every block the step filled in the prefix cache. */
    for (int i = 0; i < n_items; i++)
        kv_commit_tokens(c->kv, items[i].seq, items[i].tokens, items[i].n_tokens);
    if (c->logits_host && fs.n_out > 0)
        c->b->ops->to_host(c->b, c->logits_host, c->logits,
                           (size_t)fs.n_out * (size_t)c->m->hp.n_vocab * sizeof(float));
    c->last_items = n_items;
    return PL_OK;
}

const float *eng_logits(const eng_ctx *c, int item)
{
    if (item < 0 || item >= c->last_items || c->item_out[item] < 0)
        return NULL;
    const float *lg = c->logits_host ? c->logits_host : c->logits;
    return lg + (size_t)c->item_out[item] * (size_t)c->m->hp.n_vocab;
}
