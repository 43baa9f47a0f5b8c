/* model.h — a loaded model: hyper-parameters, weights (borrowed from the GGUF mapping), the
 * tokenizer and the chat-template family, plus the architecture descriptor that says how to
 * load and run it. Internal to the engine (the public face is engine.h).
 *
 * Adding an architecture = one descriptor (model_arch) with its own load function (which
 * hyper-parameters and tensors it needs) and forward function (forward.c for llama, its own file
 * through fwd.h otherwise: fwd_gemma3.c); the shared parts —
 * tensor lookup with shape checks, norm vectors converted to F32, rope tables — are here. The
 * layer struct carries optional slots (NULL when an architecture does not have them) for the
 * extra norms of Gemma-style blocks. */
#ifndef PARLEY_MODEL_H
#define PARLEY_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "engine.h"
#include "gguf.h"
#include "status.h"
#include "tmpl.h"
#include "tok.h"

#define MODEL_MAX_LAYERS 256

typedef struct model_hparams {
    int32_t n_vocab;
    int32_t n_ctx_train;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_ff;
    int32_t n_head, n_head_kv, head_dim;
    int32_t n_rot; /* rotated dims per head (≤ head_dim) */
    float rope_base;
    float rope_freq_scale; /* 1 / linear scaling factor; 1 = none */
    float norm_eps;
    int32_t sliding_window; /* 0 = none (llama) */
    /* Gemma 3 (gemma3.*; defaults where the file has no key, as llama.cpp assumes): */
    int32_t swa_pattern; /* every swa_pattern-th layer is global, the rest sliding; 0 = all */
    float rope_base_swa; /* rope base of the sliding (local) layers */
    float attn_scale;    /* query scale before softmax; 1/sqrt(head_dim) for llama */
    float embd_scale;    /* token embeddings are multiplied by this (sqrt(n_embd)); 1 = none */
    float attn_softcap;  /* > 0: attention scores soft-capped */
    float final_softcap; /* > 0: logits soft-capped */
} model_hparams;

typedef struct model_layer {
    float *attn_norm; /* [n_embd] owned F32 */
    be_weight wq, wk, wv,
        wo; /* wq (n_head*hd, n_embd), wk/wv (n_head_kv*hd, n_embd), wo (n_embd, n_head*hd) */
    float *ffn_norm;        /* [n_embd] */
    be_weight w_gate, w_up; /* (n_ff, n_embd) */
    be_weight w_down;       /* (n_embd, n_ff) */
    /* Optional (gemma-style); NULL when absent. */
    float *attn_q_norm, *attn_k_norm; /* [head_dim] */
    float *post_attn_norm, *post_ffn_norm;
    float *bq, *bk, *bv; /* qwen2: biases of the Q/K/V projections [n_head*hd], [n_head_kv*hd] */
    bool sliding;        /* this layer uses the sliding window */
} model_layer;

typedef struct eng_model eng_model;
typedef struct fwd_state fwd_state;

/* How one architecture is loaded and run. */
typedef struct model_arch {
    const char *name; /* general.architecture */
    /* Reads hyper-parameters (under "<name>.") and tensors into m; errors set the message. */
    pl_status (*load)(eng_model *m);
    /* Runs the layers of one step (see forward.c). */
    pl_status (*forward)(fwd_state *st);
} model_arch;

struct eng_model {
    gguf_file *gf;
    const model_arch *arch;
    model_hparams hp;
    char name[128];

    be_weight tok_embd; /* (n_vocab, n_embd) */
    be_weight output;   /* (n_vocab, n_embd); equal to tok_embd when tied */
    bool tied_output;
    float *output_norm;       /* [n_embd] */
    float *rope_freq_factors; /* [n_rot/2] owned, from rope_freqs.weight; NULL when absent */
    model_layer *layers;      /* [n_layer] owned */

    tok *tk;
    tmpl_kind tmpl;
    const char *default_system;
    pl_status tmpl_status;
    char tmpl_err[256];
    uint64_t n_params;
};

/* The descriptor for `name`, or NULL. */
const model_arch *model_find_arch(const char *name);

/* Shared helpers for architecture loaders. All set a message naming the key or tensor. */
/* Reads "<arch>.<suffix>" as an int; PL_CORRUPT when absent (or not convertible / ≤ 0). */
pl_status model_hp_int(eng_model *m, const char *suffix, int32_t *v);
pl_status model_hp_int_or(eng_model *m, const char *suffix, int32_t def, int32_t *v);
pl_status model_hp_float_or(eng_model *m, const char *suffix, float def, float *v);
/* Finds a 2-D weight with ne[0] = cols, ne[1] = rows of a supported type. `required` false:
 * absent → PL_OK with w->data == NULL. */
pl_status model_weight(eng_model *m, const char *name, int64_t rows, int64_t cols, bool required,
                       be_weight *w);
/* Finds a 1-D vector of n values (F32, F16 or BF16) and converts it to a malloc'd F32 array in
 * *out (owned by the model). `required` false: absent → *out = NULL. */
pl_status model_vector(eng_model *m, const char *name, int64_t n, bool required, float **out);
/* Reads rope scaling (hp.rope_freq_scale) and rope_freqs.weight when present. */
pl_status model_rope_init(eng_model *m);

#endif
