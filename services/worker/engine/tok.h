/* tok.h — tokenizer built from a GGUF file's tokenizer.ggml.* metadata.
 *
 * Models: "gpt2" (byte-level BPE with merges; pre-tokenizer chosen by tokenizer.ggml.pre:
 * "smollm", "llama-bpe" (Llama 3), "qwen2", "gpt2", "default") and "llama" (SentencePiece-style
 * with scores, byte fallback <0xNN>, "▁" as the space marker and add_space_prefix; Gemma).
 * Special/control tokens (token_type 3 = control, 4 = user-defined) are matched as whole strings in
 * the input before pre-tokenising when parse_special is true. BOS/EOS come from
 * tokenizer.ggml.{bos,eos}_token_id and add_bos_token.
 *
 * A tokenizer is immutable after tok_create and may be used from many threads; it copies
 * what it needs from the gguf_file (which may be closed afterwards). Incremental detokenising
 * state (tok_stream) is per sequence and never emits a broken UTF-8 sequence: bytes of an
 * incomplete code point are held until it completes (or flushed as U+FFFD at the end if the
 * model produced invalid UTF-8). */
#ifndef PARLEY_TOK_H
#define PARLEY_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"

typedef struct tok tok;

/* PL_UNSUPPORTED naming the model/pre-tokenizer when unknown; PL_CORRUPT for inconsistent
 * metadata (merge naming an unknown token, ids out of range). *out owned by caller. */
pl_status tok_create(const gguf_file *f, tok **out);
void tok_destroy(tok *t); /* accepts NULL */

int32_t tok_n_vocab(const tok *t);
int32_t tok_bos(const tok *t); /* -1 when none */
int32_t tok_eos(const tok *t); /* -1 when none */
/* Extra end-of-generation tokens (e.g. <|im_end|>, <|eot_id|>, <end_of_turn>): true when `id`
 * should end generation (EOS or an EOG token found by name or token type). */
bool tok_is_eog(const tok *t, int32_t id);
bool tok_add_bos(const tok *t);
/* Id of the token whose text is exactly `text` (e.g. "<|im_start|>"), or -1. */
int32_t tok_find(const tok *t, const char *text);
/* The token's raw text as stored in the vocabulary (byte-level encoded for gpt2). Borrowed. */
const char *tok_text(const tok *t, int32_t id);

/* Tokenises `len` bytes of UTF-8 text. Writes at most `cap` ids to `out` and returns the total
 * number the text needs (call again with a larger buffer when it exceeds cap), or -1 on error
 * (invalid arguments). `add_bos` prepends BOS when the model has one; `parse_special` matches
 * special tokens' text in the input. */
int64_t tok_encode(const tok *t, const char *text, size_t len, bool add_bos, bool parse_special,
                   int32_t *out, int64_t cap);

/* Bytes of one token as it decodes (byte-level decoded for gpt2; control tokens decode to ""
 * unless `special` is true). Returns the byte count written (≤ cap) or the needed size when
 * larger than cap. */
int tok_piece(const tok *t, int32_t id, bool special, char *out, int cap);

/* Incremental, UTF-8-safe detokeniser for one sequence. */
typedef struct tok_stream {
    char pending[8];
    int n_pending;
} tok_stream;
void tok_stream_init(tok_stream *s);
/* Appends the text of `id` to out (cap bytes), holding back an incomplete trailing code point;
 * returns bytes written (only whole code points; invalid bytes come out as U+FFFD). When the
 * text does not fit, returns the size needed (> cap) and consumes nothing, as tok_piece does. */
int tok_stream_push(const tok *t, tok_stream *s, int32_t id, char *out, int cap);
/* Flushes held bytes at the end of generation (invalid leftovers become U+FFFD). */
int tok_stream_flush(tok_stream *s, char *out, int cap);

#endif
