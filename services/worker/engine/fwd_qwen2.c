/* fwd_qwen2.c — the forward pass of the qwen2 architecture (Qwen2 / Qwen2.5) over one batched
 * step: llama's block (pre-norm attention with GQA, SwiGLU feed-forward, residual adds) with a
 * bias added to each of the Q, K and V projections and rope in the NeoX convention (rotating
 * x[i] with x[i + n_rot/2]), as llama.cpp runs qwen2. Output tied or separate, as loaded.
 *
 * Buffers and step layout are forward.c's (fwd.h). In the last layer only the rows whose logits
 * are wanted go past attention. */
#include <math.h>

#include "backend.h"
#include "fwd.h"
#include "kv.h"
#include "model.h"

/* rows[t] += bias for T rows of n (stride n). */
static void add_bias(const be_ops *o, be_backend *b, float *rows, const float *bias, int T,
                     int64_t n)
{
    for (int t = 0; t < T; t++)
        o->add(b, rows + (int64_t)t * n, bias, n);
}

pl_status fwd_qwen2(fwd_state *st)
{
    fwd_bufs f;
    fwd_get(st, &f);
    const eng_model *m = f.m;
    const model_hparams *hp = &m->hp;
    be_backend *b = f.b;
    const be_ops *o = b->ops;
    const int E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
    const int64_t QD = (int64_t)hp->n_head * hd, KD = (int64_t)hp->n_head_kv * hd;
    int T = f.T;

    const be_rope rope = {.n_rot = hp->n_rot,
                          .base = hp->rope_base,
                          .freq_scale = hp->rope_freq_scale,
                          .freq_factors = m->rope_freq_factors,
                          .mode = BE_ROPE_HALVES};
    const be_attn_params ap = {.n_head = hp->n_head,
                               .n_head_kv = hp->n_head_kv,
                               .head_dim = hd,
                               .scale = 1.0f / sqrtf((float)hd),
                               .window = 0,
                               .softcap = 0};

    o->embed(b, f.x, &m->tok_embd, f.tokens, T);
    o->rope_table(b, f.cs, f.pos, T, &rope);
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        o->rmsnorm(b, f.xb, E, f.x, E, L->attn_norm, T, E, hp->norm_eps);
        const be_weight *wqkv[3] = {&L->wq, &L->wk, &L->wv};
        float *yqkv[3] = {f.q, f.k, f.v};
        int64_t ldqkv[3] = {QD, KD, KD};
        o->matmul(b, 3, wqkv, f.xb, E, T, yqkv, ldqkv);
        add_bias(o, b, f.q, L->bq, T, QD);
        add_bias(o, b, f.k, L->bk, T, KD);
        add_bias(o, b, f.v, L->bv, T, KD);
        o->rope(b, f.q, QD, T, hp->n_head, hd, f.cs, &rope);
        o->rope(b, f.k, KD, T, hp->n_head_kv, hd, f.cs, &rope);
        be_kv_view kvv = kv_layer_view(f.kv, l);
        o->kv_store(b, &kvv, f.k, f.v, KD, f.seqs, f.n_seqs);
        o->attention(b, f.att, QD, f.q, QD, &kvv, f.seqs, f.n_seqs, &ap);
        if (l == hp->n_layer - 1) {
            if (f.n_out == 0)
                break;
            if (f.n_out < T) {
                o->get_rows(b, f.att, f.att, QD, f.out_rows, f.n_out);
                o->get_rows(b, f.x, f.x, E, f.out_rows, f.n_out);
                T = f.n_out;
            }
        }
        const be_weight *wo[1] = {&L->wo};
        float *yo[1] = {f.xb};
        int64_t ldo[1] = {E};
        o->matmul(b, 1, wo, f.att, QD, T, yo, ldo);
        o->add(b, f.x, f.xb, (int64_t)T * E);

        o->rmsnorm(b, f.xb, E, f.x, E, L->ffn_norm, T, E, hp->norm_eps);
        const be_weight *wgu[2] = {&L->w_gate, &L->w_up};
        float *ygu[2] = {f.hb, f.hb2};
        int64_t ldgu[2] = {F, F};
        o->matmul(b, 2, wgu, f.xb, E, T, ygu, ldgu);
        o->silu_mul(b, f.hb, f.hb2, (int64_t)T * F);
        const be_weight *wd[1] = {&L->w_down};
        float *yd[1] = {f.xb};
        int64_t ldd[1] = {E};
        o->matmul(b, 1, wd, f.hb, F, T, yd, ldd);
        o->add(b, f.x, f.xb, (int64_t)T * E);
    }
    if (f.n_out == 0)
        return PL_OK;
    o->rmsnorm(b, f.xb, E, f.x, E, m->output_norm, f.n_out, E, hp->norm_eps);
    const be_weight *wout[1] = {&m->output};
    float *ylog[1] = {f.logits};
    int64_t ldl[1] = {hp->n_vocab};
    o->matmul(b, 1, wout, f.xb, E, f.n_out, ylog, ldl);
    return PL_OK;
}
