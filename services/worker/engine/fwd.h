/* fwd.h — what an architecture's forward function (outside forward.c) sees of one step: the
 * context's activation buffers, the step's tokens / positions / per-sequence attention table and
 * the rows whose logits are wanted. Internal to the engine.
 *
 * forward.c gathers a step and calls model_arch.forward(st); a forward function in its own file
 * (fwd_gemma3.c) asks fwd_get for the buffers. Shapes are those documented in forward.c; every
 * pointer is borrowed for the duration of the call. */
#ifndef PARLEY_FWD_H
#define PARLEY_FWD_H

#include <stdint.h>

#include "backend.h"
#include "kv.h"
#include "model.h"

typedef struct fwd_bufs {
    const eng_model *m;
    be_backend *b;
    kv_cache *kv;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *cs, *logits;
    const int32_t *tokens, *pos; /* [T] */
    const be_attn_seq *seqs;     /* [n_seqs] */
    const int32_t *out_rows;     /* [n_out] rows whose logits are wanted, ascending */
    int T, n_seqs, n_out;
} fwd_bufs;

/* Fills *out for the step behind st (forward.c). */
void fwd_get(const fwd_state *st, fwd_bufs *out);

#endif
