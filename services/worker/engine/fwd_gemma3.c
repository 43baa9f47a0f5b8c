/* fwd_gemma3.c — the forward pass of the gemma3 architecture (Gemma 3), over one batched step.
 *
 * Per layer (x is the residual stream, T rows of n_embd):
 *   xb = rmsnorm(x) * attn_norm
 *   q, k, v = xb Wq, xb Wk, xb Wv;  q, k = rmsnorm per head * attn_{q,k}_norm  (QK-norm)
 *   rope (NeoX halves) with the local base on sliding layers, the global base (and linear
 *   scaling) on global ones;  att = softmax(q k^T * attn_scale [window]) v
 *   x += rmsnorm(att Wo) * post_attention_norm
 *   x += rmsnorm(down(gelu(xb Wgate) * xb Wup)) * post_ffw_norm,  xb = rmsnorm(x) * ffn_norm
 * then logits = rmsnorm(x) * output_norm · token_embd (tied), soft-capped when the model says so.
 * The input is token_embd[tokens] * sqrt(n_embd). Hyper-parameters come from model.c's
 * load_gemma3 (all from gemma3.* metadata, defaults documented there).
 *
 * Buffers and step layout are forward.c's (fwd.h); the rope cos/sin table is recomputed only
 * when the base changes between consecutive layers (local runs of 5 layers, then 1 global).
 * In the last layer only the rows whose logits are wanted go past attention. */
#include <stdbool.h>

#include "backend.h"
#include "fwd.h"
#include "kv.h"
#include "model.h"

pl_status fwd_gemma3(fwd_state *st)
{
    fwd_bufs f;
    fwd_get(st, &f);
    const eng_model *m = f.m;
    const model_hparams *hp = &m->hp;
    be_backend *b = f.b;
    const be_ops *o = b->ops;
    const int E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
    const int64_t QD = (int64_t)hp->n_head * hd, KD = (int64_t)hp->n_head_kv * hd;
    const float eps = hp->norm_eps;
    int T = f.T;
    if (!o->gelu_mul || !o->scale || (hp->final_softcap > 0 && !o->softcap))
        return PL_ERRF(PL_UNSUPPORTED,
                       "engine: the %s backend lacks an op gemma3 needs (gelu_mul, scale, softcap)",
                       o->name);

    const be_rope rope_local = {.n_rot = hp->n_rot,
                                .base = hp->rope_base_swa,
                                .freq_scale = 1.0f,
                                .freq_factors = NULL,
                                .mode = BE_ROPE_HALVES};
    const be_rope rope_global = {.n_rot = hp->n_rot,
                                 .base = hp->rope_base,
                                 .freq_scale = hp->rope_freq_scale,
                                 .freq_factors = m->rope_freq_factors,
                                 .mode = BE_ROPE_HALVES};
    be_attn_params ap = {.n_head = hp->n_head,
                         .n_head_kv = hp->n_head_kv,
                         .head_dim = hd,
                         .scale = hp->attn_scale,
                         .window = 0,
                         .softcap = hp->attn_softcap};

    o->embed(b, f.x, &m->tok_embd, f.tokens, T);
    if (hp->embd_scale != 1.0f)
        o->scale(b, f.x, (int64_t)T * E, hp->embd_scale);

    int table = -1; /* which rope the cs table holds: 1 local, 0 global */
    for (int l = 0; l < hp->n_layer; l++) {
        const model_layer *L = &m->layers[l];
        const bool last = l == hp->n_layer - 1;
        const be_rope *rope = L->sliding ? &rope_local : &rope_global;

        /* attention */
        o->rmsnorm(b, f.xb, E, f.x, E, L->attn_norm, T, E, eps);
        const be_weight *wqkv[3] = {&L->wq, &L->wk, &L->wv};
        float *yqkv[3] = {f.q, f.k, f.v};
        int64_t ldqkv[3] = {QD, KD, KD};
        o->matmul(b, 3, wqkv, f.xb, E, T, yqkv, ldqkv);
        o->rmsnorm(b, f.q, hd, f.q, hd, L->attn_q_norm, T * hp->n_head, hd, eps);
        o->rmsnorm(b, f.k, hd, f.k, hd, L->attn_k_norm, T * hp->n_head_kv, hd, eps);
        if (table != (int)L->sliding) {
            o->rope_table(b, f.cs, f.pos, T, rope);
            table = (int)L->sliding;
        }
        o->rope(b, f.q, QD, T, hp->n_head, hd, f.cs, rope);
        o->rope(b, f.k, KD, T, hp->n_head_kv, hd, f.cs, rope);
        be_kv_view kvv = kv_layer_view(f.kv, l);
        o->kv_store(b, &kvv, f.k, f.v, KD, f.seqs, f.n_seqs);
        ap.window = L->sliding ? hp->sliding_window : 0;
        o->attention(b, f.att, QD, f.q, QD, &kvv, f.seqs, f.n_seqs, &ap);

        if (last) {
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
        o->rmsnorm(b, f.xb, E, f.xb, E, L->post_attn_norm, T, E, eps);
        o->add(b, f.x, f.xb, (int64_t)T * E);

        /* feed-forward: down(gelu(gate(x)) * up(x)), post-normed */
        o->rmsnorm(b, f.xb, E, f.x, E, L->ffn_norm, T, E, eps);
        const be_weight *wgu[2] = {&L->w_gate, &L->w_up};
        float *ygu[2] = {f.hb, f.hb2};
        int64_t ldgu[2] = {F, F};
        o->matmul(b, 2, wgu, f.xb, E, T, ygu, ldgu);
        o->gelu_mul(b, f.hb, f.hb2, (int64_t)T * F);
        const be_weight *wd[1] = {&L->w_down};
        float *yd[1] = {f.xb};
        int64_t ldd[1] = {E};
        o->matmul(b, 1, wd, f.hb, F, T, yd, ldd);
        o->rmsnorm(b, f.xb, E, f.xb, E, L->post_ffn_norm, T, E, eps);
        o->add(b, f.x, f.xb, (int64_t)T * E);
    }
    if (f.n_out == 0)
        return PL_OK;

    o->rmsnorm(b, f.xb, E, f.x, E, m->output_norm, f.n_out, E, eps);
    const be_weight *wout[1] = {&m->output};
    float *ylog[1] = {f.logits};
    int64_t ldl[1] = {hp->n_vocab};
    o->matmul(b, 1, wout, f.xb, E, f.n_out, ylog, ldl);
    if (hp->final_softcap > 0)
        o->softcap(b, f.logits, (int64_t)f.n_out * hp->n_vocab, hp->final_softcap);
    return PL_OK;
}
