/* model.c — loading a model: the architecture table, hyper-parameters from GGUF metadata, tensor
 * lookup with shape checks, the tokenizer and the chat-template family.
 *
 * Ownership: an eng_model owns its gguf_file (the mapping every weight points into), the
 * tokenizer, the layer table and the small F32 copies of norm vectors. Immutable after load, so
 * any number of contexts and threads may read it. It does not run anything (forward.c does) and
 * does not copy weights: they stay in the page cache behind the mapping.
 *
 * Adding an architecture: write its load function next to load_llama (reading "<arch>.*" keys and
 * its tensors through model_weight / model_vector, filling the optional layer slots it has) and a
 * forward function in its own file (fwd.h gives it the step's buffers; fwd_gemma3.c), then add a
 * line to ARCHS. Architectures: llama, gemma3, qwen2. */
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

pl_status fwd_llama(fwd_state *st);  /* forward.c */
pl_status fwd_gemma3(fwd_state *st); /* fwd_gemma3.c */
pl_status fwd_qwen2(fwd_state *st);  /* fwd_qwen2.c */

static pl_status load_llama(eng_model *m);
static pl_status load_gemma3(eng_model *m);
static pl_status load_qwen2(eng_model *m);

static const model_arch ARCHS[] = {
    {"llama", load_llama, fwd_llama},
    {"gemma3", load_gemma3, fwd_gemma3},
    {"qwen2", load_qwen2, fwd_qwen2},
};

const model_arch *model_find_arch(const char *name)
{
    for (size_t i = 0; i < sizeof ARCHS / sizeof ARCHS[0]; i++)
        if (strcmp(ARCHS[i].name, name) == 0)
            return &ARCHS[i];
    return NULL;
}

/* --- metadata helpers ------------------------------------------------------------------------ */

static void hp_key(const eng_model *m, const char *suffix, char *key, size_t cap)
{
    snprintf(key, cap, "%s.%s", m->arch->name, suffix);
}

pl_status model_hp_int(eng_model *m, const char *suffix, int32_t *v)
{
    char key[160];
    uint32_t u;
    hp_key(m, suffix, key, sizeof key);
    pl_status st = gguf_get_u32(m->gf, key, &u);
    if (st == PL_NOT_FOUND)
        return PL_ERRF(PL_CORRUPT, "model: metadata key '%s' is missing", key);
    if (st != PL_OK || u == 0 || u > INT32_MAX)
        return PL_ERRF(PL_CORRUPT, "model: metadata key '%s' is not a positive integer", key);
    *v = (int32_t)u;
    return PL_OK;
}

pl_status model_hp_int_or(eng_model *m, const char *suffix, int32_t def, int32_t *v)
{
    char key[160];
    hp_key(m, suffix, key, sizeof key);
    if (gguf_find_key(m->gf, key) < 0) {
        *v = def;
        return PL_OK;
    }
    return model_hp_int(m, suffix, v);
}

pl_status model_hp_float_or(eng_model *m, const char *suffix, float def, float *v)
{
    char key[160];
    double d;
    hp_key(m, suffix, key, sizeof key);
    pl_status st = gguf_get_f64_or(m->gf, key, def, &d);
    if (st != PL_OK || !isfinite(d))
        return PL_ERRF(PL_CORRUPT, "model: metadata key '%s' is not a number", key);
    *v = (float)d;
    return PL_OK;
}

/* --- tensors -----------------------------------------------------------------------------------
 */

static bool extra_dims_are_one(const gguf_tensor *t, uint32_t from)
{
    for (uint32_t d = from; d < 4; d++)
        if (t->ne[d] != 1)
            return false;
    return true;
}

pl_status model_weight(eng_model *m, const char *name, int64_t rows, int64_t cols, bool required,
                       be_weight *w)
{
    memset(w, 0, sizeof *w);
    const gguf_tensor *t = gguf_find_tensor(m->gf, name);
    if (!t) {
        if (!required)
            return PL_OK;
        return PL_ERRF(PL_CORRUPT, "model: tensor '%s' is missing", name);
    }
    if ((int64_t)t->ne[0] != cols || (int64_t)t->ne[1] != rows || !extra_dims_are_one(t, 2))
        return PL_ERRF(PL_CORRUPT,
                       "model: tensor '%s' has shape [%llu, %llu, %llu, %llu], expected [%lld, "
                       "%lld]",
                       name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                       (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], (long long)cols,
                       (long long)rows);
    const qt_traits *tr = qt_get(t->type);
    const qt_traits *act = tr ? qt_get(tr->vec_dot_type) : NULL;
    if (!tr || !tr->dot || !act || !act->quantize)
        return PL_ERRF(PL_UNSUPPORTED, "model: tensor '%s' has type %s, which is not supported",
                       name, gguf_ttype_name(t->type));
    if (cols % tr->block != 0)
        return PL_ERRF(PL_CORRUPT,
                       "model: tensor '%s': %lld columns is not a multiple of %s's "
                       "block of %lld",
                       name, (long long)cols, tr->name, (long long)tr->block);
    w->type = t->type;
    w->rows = rows;
    w->cols = cols;
    w->data = t->data;
    w->name = NULL; /* GGUF names are not NUL-terminated; messages use the caller's name */
    return PL_OK;
}

pl_status model_vector(eng_model *m, const char *name, int64_t n, bool required, float **out)
{
    *out = NULL;
    const gguf_tensor *t = gguf_find_tensor(m->gf, name);
    if (!t) {
        if (!required)
            return PL_OK;
        return PL_ERRF(PL_CORRUPT, "model: tensor '%s' is missing", name);
    }
    if ((int64_t)t->ne[0] != n || !extra_dims_are_one(t, 1))
        return PL_ERRF(PL_CORRUPT, "model: tensor '%s' has shape [%llu, %llu], expected [%lld]",
                       name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                       (long long)n);
    if (t->type != GGML_F32 && t->type != GGML_F16 && t->type != GGML_BF16)
        return PL_ERRF(PL_UNSUPPORTED, "model: vector '%s' has type %s (want f32, f16 or bf16)",
                       name, gguf_ttype_name(t->type));
    float *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return PL_ERRF(PL_NOMEM, "model: out of memory for '%s'", name);
    for (int64_t i = 0; i < n; i++) {
        if (t->type == GGML_F32) {
            memcpy(&v[i], (const uint8_t *)t->data + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, (const uint8_t *)t->data + 2 * i, 2);
            v[i] = t->type == GGML_F16 ? qt_f16_to_f32(h) : qt_bf16_to_f32(h);
        }
        if (!isfinite(v[i])) {
            free(v);
            return PL_ERRF(PL_CORRUPT, "model: tensor '%s' holds a non-finite value at %lld", name,
                           (long long)i);
        }
    }
    *out = v;
    return PL_OK;
}

pl_status model_rope_init(eng_model *m)
{
    model_hparams *hp = &m->hp;
    char key[160];
    gguf_str type = {NULL, 0};

    hp->rope_freq_scale = 1.0f;
    hp_key(m, "rope.scaling.type", key, sizeof key);
    if (gguf_get_str(m->gf, key, &type) == PL_OK && type.len > 0 && !gguf_str_eq(type, "none")) {
        if (!gguf_str_eq(type, "linear"))
            return PL_ERRF(PL_UNSUPPORTED,
                           "model: rope scaling '%.*s' is not supported (only linear)",
                           (int)type.len, type.ptr);
        float factor = 1.0f;
        pl_status st = model_hp_float_or(m, "rope.scaling.factor", 1.0f, &factor);
        if (st != PL_OK)
            return st;
        if (!(factor > 0))
            return PL_ERRF(PL_CORRUPT, "model: rope scaling factor %g is not positive",
                           (double)factor);
        hp->rope_freq_scale = 1.0f / factor;
    } else {
        /* Older files carry only "rope.scale_linear". */
        float lin = 1.0f;
        pl_status st = model_hp_float_or(m, "rope.scale_linear", 1.0f, &lin);
        if (st != PL_OK)
            return st;
        if (lin > 0 && lin != 1.0f)
            hp->rope_freq_scale = 1.0f / lin;
    }

    pl_status st =
        model_vector(m, "rope_freqs.weight", hp->n_rot / 2, false, &m->rope_freq_factors);
    for (int i = 0; st == PL_OK && m->rope_freq_factors && i < hp->n_rot / 2; i++)
        if (!(m->rope_freq_factors[i] > 0))
            st = PL_ERRF(PL_CORRUPT,
                         "model: tensor 'rope_freqs.weight' holds %g at %d (must be "
                         "positive)",
                         (double)m->rope_freq_factors[i], i);
    return st;
}

/* --- llama ---------------------------------------------------------------------------------------
 */

/* The hyper-parameters llama and gemma3 share, under "<arch>.". */
static pl_status read_base_hparams(eng_model *m)
{
    model_hparams *hp = &m->hp;
    pl_status st;
    if ((st = model_hp_int(m, "context_length", &hp->n_ctx_train)) != PL_OK ||
        (st = model_hp_int(m, "embedding_length", &hp->n_embd)) != PL_OK ||
        (st = model_hp_int(m, "block_count", &hp->n_layer)) != PL_OK ||
        (st = model_hp_int(m, "feed_forward_length", &hp->n_ff)) != PL_OK ||
        (st = model_hp_int(m, "attention.head_count", &hp->n_head)) != PL_OK)
        return st;
    if ((st = model_hp_int_or(m, "attention.head_count_kv", hp->n_head, &hp->n_head_kv)) != PL_OK ||
        (st = model_hp_int_or(m, "attention.key_length", hp->n_embd / hp->n_head, &hp->head_dim)) !=
            PL_OK ||
        (st = model_hp_int_or(m, "rope.dimension_count", hp->head_dim, &hp->n_rot)) != PL_OK ||
        (st = model_hp_float_or(m, "rope.freq_base", 10000.0f, &hp->rope_base)) != PL_OK ||
        (st = model_hp_float_or(m, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->norm_eps)) !=
            PL_OK)
        return st;
    if (hp->n_layer > MODEL_MAX_LAYERS)
        return PL_ERRF(PL_UNSUPPORTED, "model: %d layers (at most %d)", hp->n_layer,
                       MODEL_MAX_LAYERS);
    if (hp->n_head % hp->n_head_kv != 0)
        return PL_ERRF(PL_CORRUPT, "model: %d heads is not a multiple of %d KV heads", hp->n_head,
                       hp->n_head_kv);
    if (hp->n_rot % 2 != 0 || hp->n_rot > hp->head_dim || hp->head_dim % 2 != 0)
        return PL_ERRF(PL_CORRUPT, "model: rope dimension %d does not fit head size %d", hp->n_rot,
                       hp->head_dim);
    if (!(hp->rope_base > 0) || !(hp->norm_eps > 0))
        return PL_ERRF(PL_CORRUPT, "model: rope base %g or norm epsilon %g is not positive",
                       (double)hp->rope_base, (double)hp->norm_eps);
    if ((st = model_rope_init(m)) != PL_OK)
        return st;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embd_scale = 1.0f;
    return PL_OK;
}

/* token_embd, output_norm, output (tied when absent) and the blocks' common tensors; `gemma`
 * adds the QK-norm and post-attention / post-FFN norms. */
static pl_status load_tensors(eng_model *m, bool gemma)
{
    model_hparams *hp = &m->hp;
    pl_status st;
    const int64_t E = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
    const int64_t QD = (int64_t)hp->n_head * hp->head_dim;
    const int64_t KD = (int64_t)hp->n_head_kv * hp->head_dim;
    if ((st = model_weight(m, "token_embd.weight", V, E, true, &m->tok_embd)) != PL_OK ||
        (st = model_vector(m, "output_norm.weight", E, true, &m->output_norm)) != PL_OK ||
        (st = model_weight(m, "output.weight", V, E, false, &m->output)) != PL_OK)
        return st;
    if (!m->output.data) {
        m->output = m->tok_embd;
        m->tied_output = true;
    }
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers)
        return PL_ERRF(PL_NOMEM, "model: out of memory");
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        char n[9][64];
        static const char *const parts[9] = {"attn_norm", "attn_q",      "attn_k",
                                             "attn_v",    "attn_output", "ffn_norm",
                                             "ffn_gate",  "ffn_up",      "ffn_down"};
        for (int i = 0; i < 9; i++)
            snprintf(n[i], sizeof n[i], "blk.%d.%s.weight", l, parts[i]);
        if ((st = model_vector(m, n[0], E, true, &L->attn_norm)) != PL_OK ||
            (st = model_weight(m, n[1], QD, E, true, &L->wq)) != PL_OK ||
            (st = model_weight(m, n[2], KD, E, true, &L->wk)) != PL_OK ||
            (st = model_weight(m, n[3], KD, E, true, &L->wv)) != PL_OK ||
            (st = model_weight(m, n[4], E, QD, true, &L->wo)) != PL_OK ||
            (st = model_vector(m, n[5], E, true, &L->ffn_norm)) != PL_OK ||
            (st = model_weight(m, n[6], F, E, true, &L->w_gate)) != PL_OK ||
            (st = model_weight(m, n[7], F, E, true, &L->w_up)) != PL_OK ||
            (st = model_weight(m, n[8], E, F, true, &L->w_down)) != PL_OK)
            return st;
        if (!gemma)
            continue;
        char g[4][64];
        static const char *const gparts[4] = {"attn_q_norm", "attn_k_norm", "post_attention_norm",
                                              "post_ffw_norm"};
        for (int i = 0; i < 4; i++)
            snprintf(g[i], sizeof g[i], "blk.%d.%s.weight", l, gparts[i]);
        if ((st = model_vector(m, g[0], hp->head_dim, true, &L->attn_q_norm)) != PL_OK ||
            (st = model_vector(m, g[1], hp->head_dim, true, &L->attn_k_norm)) != PL_OK ||
            (st = model_vector(m, g[2], E, true, &L->post_attn_norm)) != PL_OK ||
            (st = model_vector(m, g[3], E, true, &L->post_ffn_norm)) != PL_OK)
            return st;
    }
    return PL_OK;
}

static pl_status load_llama(eng_model *m)
{
    pl_status st = read_base_hparams(m);
    return st != PL_OK ? st : load_tensors(m, false);
}

/* --- qwen2 -------------------------------------------------------------------------------------
 *
 * Qwen2 is llama with biases on the Q, K and V projections and NeoX-style rope (fwd_qwen2.c). */
static pl_status load_qwen2(eng_model *m)
{
    pl_status st = read_base_hparams(m);
    if (st != PL_OK || (st = load_tensors(m, false)) != PL_OK)
        return st;
    const model_hparams *hp = &m->hp;
    const int64_t QD = (int64_t)hp->n_head * hp->head_dim;
    const int64_t KD = (int64_t)hp->n_head_kv * hp->head_dim;
    for (int l = 0; l < hp->n_layer; l++) {
        model_layer *L = &m->layers[l];
        char n[3][64];
        static const char *const parts[3] = {"attn_q", "attn_k", "attn_v"};
        for (int i = 0; i < 3; i++)
            snprintf(n[i], sizeof n[i], "blk.%d.%s.bias", l, parts[i]);
        if ((st = model_vector(m, n[0], QD, true, &L->bq)) != PL_OK ||
            (st = model_vector(m, n[1], KD, true, &L->bk)) != PL_OK ||
            (st = model_vector(m, n[2], KD, true, &L->bv)) != PL_OK)
            return st;
    }
    return PL_OK;
}

/* --- gemma3 ------------------------------------------------------------------------------------
 *
 * Gemma 3 blocks: pre-norm attention with RMS-normed queries and keys (per head), NeoX-style
 * rope, a post-attention norm before the residual add, a GeGLU feed-forward (gelu, tanh
 * approximation) with a post-FFN norm, token embeddings scaled by sqrt(n_embd) and a tied
 * output. Layers alternate sliding-window (local) and global attention: layer l is global when
 * (l + 1) % pattern == 0, local layers use their own rope base. Norm weights are used as stored:
 * the GGUF converter already folded Gemma's (1 + w) into them (llama.cpp's graph multiplies by
 * the stored weight). Keys the 270M file does not carry fall back to what llama.cpp assumes for
 * gemma3: pattern 6, local rope base 10000, query scale 1/sqrt(key_length) (1/sqrt(n_embd /
 * n_head) for the 62-layer 27B model), no soft-capping. */
static pl_status load_gemma3(eng_model *m)
{
    model_hparams *hp = &m->hp;
    pl_status st = read_base_hparams(m);
    if (st != PL_OK)
        return st;
    hp->embd_scale = sqrtf((float)hp->n_embd);
    float qscalar = 0;
    if ((st = model_hp_int_or(m, "attention.sliding_window", 0, &hp->sliding_window)) != PL_OK ||
        (st = model_hp_int_or(m, "attention.sliding_window_pattern", 6, &hp->swa_pattern)) !=
            PL_OK ||
        (st = model_hp_float_or(m, "rope.freq_base_swa", 10000.0f, &hp->rope_base_swa)) != PL_OK ||
        (st = model_hp_float_or(m, "attention.scale", 0.0f, &hp->attn_scale)) != PL_OK ||
        (st = model_hp_float_or(m, "attention.query_pre_attn_scalar", 0.0f, &qscalar)) != PL_OK ||
        (st = model_hp_float_or(m, "attn_logit_softcapping", 0.0f, &hp->attn_softcap)) != PL_OK ||
        (st = model_hp_float_or(m, "final_logit_softcapping", 0.0f, &hp->final_softcap)) != PL_OK)
        return st;
    if (!(hp->attn_scale > 0)) {
        if (!(qscalar > 0))
            qscalar = hp->n_layer == 62 ? (float)(hp->n_embd / hp->n_head) : (float)hp->head_dim;
        hp->attn_scale = 1.0f / sqrtf(qscalar);
    }
    if (!(hp->rope_base_swa > 0) || hp->attn_softcap < 0 || hp->final_softcap < 0)
        return PL_ERRF(
            PL_CORRUPT, "model: gemma3 local rope base %g or soft-cap %g / %g is invalid",
            (double)hp->rope_base_swa, (double)hp->attn_softcap, (double)hp->final_softcap);
    if ((st = load_tensors(m, true)) != PL_OK)
        return st;
    for (int l = 0; l < hp->n_layer; l++)
        m->layers[l].sliding =
            hp->sliding_window > 0 && hp->swa_pattern > 0 && (l + 1) % hp->swa_pattern != 0;
    return PL_OK;
}

/* --- public API ------------------------------------------------------------------------------- */

/* The vocabulary size: the tokenizer's token list, else "<arch>.vocab_size", else token_embd. */
static pl_status read_vocab(eng_model *m)
{
    gguf_array a;
    if (gguf_get_array(m->gf, "tokenizer.ggml.tokens", &a) == PL_OK && a.type == GGUF_STRING &&
        a.n > 0 && a.n <= INT32_MAX) {
        m->hp.n_vocab = (int32_t)a.n;
        return PL_OK;
    }
    if (model_hp_int_or(m, "vocab_size", 0, &m->hp.n_vocab) == PL_OK && m->hp.n_vocab > 0)
        return PL_OK;
    const gguf_tensor *t = gguf_find_tensor(m->gf, "token_embd.weight");
    if (t && t->ne[1] > 0 && t->ne[1] <= INT32_MAX) {
        m->hp.n_vocab = (int32_t)t->ne[1];
        return PL_OK;
    }
    return PL_ERRF(PL_CORRUPT, "model: cannot tell the vocabulary size (no tokenizer.ggml.tokens)");
}

pl_status eng_model_load(const char *path, const eng_model_opts *opts, eng_model **out)
{
    *out = NULL;
    qt_init();
    eng_model *m = calloc(1, sizeof *m);
    if (!m)
        return PL_ERRF(PL_NOMEM, "model: out of memory");
    pl_status st = gguf_open(path, &m->gf);
    if (st != PL_OK)
        goto fail;

    gguf_str arch;
    if (gguf_get_str(m->gf, "general.architecture", &arch) != PL_OK) {
        st = PL_ERRF(PL_CORRUPT, "model: '%s' has no general.architecture", path);
        goto fail;
    }
    char archname[64];
    snprintf(archname, sizeof archname, "%.*s", (int)(arch.len < 63 ? arch.len : 63), arch.ptr);
    m->arch = model_find_arch(archname);
    if (!m->arch) {
        st = PL_ERRF(PL_UNSUPPORTED,
                     "model: architecture '%s' is not supported (supported: llama, gemma3, qwen2)",
                     archname);
        goto fail;
    }
    gguf_str name;
    if (gguf_get_str(m->gf, "general.name", &name) == PL_OK && name.len > 0) {
        snprintf(m->name, sizeof m->name, "%.*s", (int)(name.len < 127 ? name.len : 127), name.ptr);
    } else {
        const char *base = strrchr(path, '/');
        snprintf(m->name, sizeof m->name, "%s", base ? base + 1 : path);
    }

    if ((st = read_vocab(m)) != PL_OK || (st = m->arch->load(m)) != PL_OK)
        goto fail;
    for (uint64_t i = 0; i < gguf_n_tensors(m->gf); i++) {
        const gguf_tensor *t = gguf_tensor_at(m->gf, i);
        m->n_params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    }

    if ((st = tok_create(m->gf, &m->tk)) != PL_OK)
        goto fail;
    if (tok_n_vocab(m->tk) != m->hp.n_vocab) {
        st = PL_ERRF(PL_CORRUPT, "model: tokenizer has %d tokens but the model %d",
                     tok_n_vocab(m->tk), m->hp.n_vocab);
        goto fail;
    }

    const char *override = opts ? opts->chat_template : NULL;
    m->tmpl_status = tmpl_detect(m->gf, override, &m->tmpl, &m->default_system);
    if (m->tmpl_status != PL_OK && !(override && *override) &&
        gguf_find_key(m->gf, "tokenizer.chat_template") < 0 &&
        tok_find(m->tk, "<start_of_turn>") >= 0 && tok_find(m->tk, "<end_of_turn>") >= 0) {
        /* No template in the file (the Gemma 3 270M GGUF has none) but Gemma's turn markers in
         * the vocabulary: that is the Gemma format. */
        pl_err_clear();
        m->tmpl = TMPL_GEMMA;
        m->default_system = NULL;
        m->tmpl_status = PL_OK;
    }
    if (m->tmpl_status != PL_OK) {
        if (override && *override) { /* an explicit bad override is the caller's error */
            st = m->tmpl_status;
            goto fail;
        }
        snprintf(m->tmpl_err, sizeof m->tmpl_err, "%s", pl_err_last());
        pl_err_clear();
    }
    *out = m;
    return PL_OK;
fail:
    eng_model_free(m);
    return st;
}

void eng_model_free(eng_model *m)
{
    if (!m)
        return;
    if (m->layers) {
        for (int l = 0; l < m->hp.n_layer; l++) {
            model_layer *L = &m->layers[l];
            free(L->attn_norm);
            free(L->ffn_norm);
            free(L->attn_q_norm);
            free(L->attn_k_norm);
            free(L->post_attn_norm);
            free(L->post_ffn_norm);
            free(L->bq);
            free(L->bk);
            free(L->bv);
        }
        free(m->layers);
    }
    free(m->output_norm);
    free(m->rope_freq_factors);
    tok_destroy(m->tk);
    gguf_close(m->gf);
    free(m);
}

void eng_model_get_info(const eng_model *m, eng_model_info *info)
{
    const model_hparams *hp = &m->hp;
    memset(info, 0, sizeof *info);
    info->arch = m->arch->name;
    info->name = m->name;
    info->n_vocab = hp->n_vocab;
    info->n_ctx_train = hp->n_ctx_train;
    info->n_embd = hp->n_embd;
    info->n_layer = hp->n_layer;
    info->n_head = hp->n_head;
    info->n_head_kv = hp->n_head_kv;
    info->head_dim = hp->head_dim;
    info->n_ff = hp->n_ff;
    for (int l = 0; l < hp->n_layer; l++)
        if (m->layers[l].sliding)
            info->sliding_window = hp->sliding_window;
    info->kv_bytes_per_token = (size_t)hp->n_layer * 2 * (size_t)hp->n_head_kv * hp->head_dim * 2;
    info->file_bytes = gguf_file_size(m->gf);
    info->n_params = m->n_params;
}

const tok *eng_model_tok(const eng_model *m)
{
    return m->tk;
}

pl_status eng_model_tmpl(const eng_model *m, tmpl_kind *kind, const char **default_system)
{
    if (m->tmpl_status != PL_OK)
        return PL_ERRF(m->tmpl_status, "%s", m->tmpl_err);
    *kind = m->tmpl;
    *default_system = m->default_system;
    return PL_OK;
}
