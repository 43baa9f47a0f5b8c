/* tok_pre.c — hand-written pre-tokenizers (no regex engine) for byte-level BPE vocabularies.
 *
 * Each splitter is a left-to-right scan that tries the alternatives of its pattern in order at
 * the current position, as a backtracking regex engine would, and emits the first that matches.
 * Lookahead never reaches past the end of the run it was given: text is first cut at special
 * tokens (and, for "smollm", at every \p{N}), and each piece is split on its own, which is what
 * llama.cpp does, so these must agree with it word for word.
 *
 * Character classes come from uni.h. One detail matters for agreement: "[^\s\p{L}\p{N}]" is any
 * code point in the run that is not whitespace, letter or number (so unassigned code points and
 * controls count), while past the end of the run nothing matches.
 *
 * Thread-safety: pure functions over caller memory. Not here: BPE itself (tok.c). */
#include "tok_pre.h"

#include <stdbool.h>

#include "uni.h"

#define OOR 0x80u /* "past the end of the run": matches no class, not even [^\s\p{L}\p{N}] */

typedef struct run {
    const uint32_t *cps;
    size_t end;
    tok_pre_emit_fn emit;
    void *ctx;
} run;

static unsigned cls(const run *r, size_t pos)
{
    return pos < r->end ? uni_flags(r->cps[pos]) : OOR;
}

static uint32_t cp_at(const run *r, size_t pos)
{
    return pos < r->end ? r->cps[pos] : 0xFFFFFFFFu;
}

/* Not whitespace, letter or number, and inside the run. */
static bool is_other(unsigned f)
{
    return (f & (UNI_SPACE | UNI_LETTER | UNI_NUMBER | OOR)) == 0;
}

static uint32_t ascii_lower(uint32_t c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* Length of a contraction ('s 't 're 've 'm 'll 'd) at pos, 0 when none. */
static size_t contraction(const run *r, size_t pos, bool fold)
{
    if (cp_at(r, pos) != '\'' || pos + 1 >= r->end)
        return 0;
    uint32_t a = cp_at(r, pos + 1);
    if (fold)
        a = ascii_lower(a);
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (pos + 2 >= r->end)
        return 0;
    uint32_t b = cp_at(r, pos + 2);
    if (fold)
        b = ascii_lower(b);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static void split_gpt2(const uint32_t *cps, size_t start, size_t end, tok_pre_emit_fn emit,
                       void *ctx)
{
    run r = {cps, end, emit, ctx};
    size_t pos = start;
    while (pos < end) {
        size_t w = pos;
        size_t k = contraction(&r, pos, false);
        if (k) {
            emit(ctx, w, pos + k);
            pos += k;
            continue;
        }
        bool sp = cps[pos] == ' ';
        unsigned f = sp ? cls(&r, pos + 1) : cls(&r, pos);
        unsigned want = (f & UNI_LETTER) ? UNI_LETTER : (f & UNI_NUMBER) ? UNI_NUMBER : 0;
        if (want) { /* ' ?\p{L}+' or ' ?\p{N}+' */
            pos += sp;
            while (cls(&r, pos) & want)
                pos++;
            emit(ctx, w, pos);
            continue;
        }
        if (is_other(f)) { /* ' ?[^\s\p{L}\p{N}]+' */
            pos += sp;
            while (is_other(cls(&r, pos)))
                pos++;
            emit(ctx, w, pos);
            continue;
        }
        size_t nws = 0;
        while (cls(&r, pos + nws) & UNI_SPACE)
            nws++;
        if (nws > 1 && pos + nws < end) { /* '\s+(?!\S)': leave the last space to the word */
            emit(ctx, w, pos + nws - 1);
            pos += nws - 1;
        } else if (nws > 0) { /* '\s+' */
            emit(ctx, w, pos + nws);
            pos += nws;
        } else {
            emit(ctx, w, pos + 1);
            pos++;
        }
    }
}

/* Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max}|
 *          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static void split_llama3(const uint32_t *cps, size_t start, size_t end, size_t max_digits,
                         tok_pre_emit_fn emit, void *ctx)
{
    run r = {cps, end, emit, ctx};
    size_t pos = start;
    while (pos < end) {
        size_t w = pos;
        uint32_t c = cps[pos];
        unsigned f = cls(&r, pos);
        size_t k = contraction(&r, pos, true);
        if (k) {
            emit(ctx, w, pos + k);
            pos += k;
            continue;
        }
        if (c != '\r' && c != '\n' && !(f & UNI_NUMBER) &&
            ((f & UNI_LETTER) || (cls(&r, pos + 1) & UNI_LETTER))) {
            pos++; /* the optional prefix, or the first letter */
            while (cls(&r, pos) & UNI_LETTER)
                pos++;
            emit(ctx, w, pos);
            continue;
        }
        if (f & UNI_NUMBER) { /* groups of up to max_digits, from the left */
            size_t g = pos;
            while (cls(&r, pos) & UNI_NUMBER) {
                pos++;
                if (pos - g >= max_digits) {
                    emit(ctx, g, pos);
                    g = pos;
                }
            }
            if (pos > g)
                emit(ctx, g, pos);
            continue;
        }
        bool sp = c == ' ';
        unsigned f2 = sp ? cls(&r, pos + 1) : f;
        if ((f2 & (UNI_SPACE | UNI_LETTER | UNI_NUMBER)) == 0) {
            /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' (a lone trailing space lands here too: same word) */
            pos += sp;
            while (is_other(cls(&r, pos)))
                pos++;
            while (cp_at(&r, pos) == '\r' || cp_at(&r, pos) == '\n')
                pos++;
            emit(ctx, w, pos);
            continue;
        }
        size_t nws = 0, last_nl = 0;
        while (cls(&r, pos + nws) & UNI_SPACE) {
            uint32_t c2 = cps[pos + nws];
            if (c2 == '\r' || c2 == '\n')
                last_nl = pos + nws + 1;
            nws++;
        }
        if (last_nl) { /* '\s*[\r\n]+' */
            emit(ctx, w, last_nl);
            pos = last_nl;
        } else if (nws > 1 && pos + nws < end) { /* '\s+(?!\S)' */
            emit(ctx, w, pos + nws - 1);
            pos += nws - 1;
        } else if (nws > 0) {
            emit(ctx, w, pos + nws);
            pos += nws;
        } else {
            emit(ctx, w, pos + 1);
            pos++;
        }
    }
}

void tok_pre_split(tok_pre_kind kind, const uint32_t *cps, size_t n, tok_pre_emit_fn emit,
                   void *ctx)
{
    switch (kind) {
    case TOK_PRE_GPT2:
        split_gpt2(cps, 0, n, emit, ctx);
        return;
    case TOK_PRE_SMOLLM: {
        /* every \p{N} is a run of its own; the GPT-2 pattern splits what lies between */
        size_t s = 0;
        for (size_t i = 0; i < n; i++) {
            if (uni_flags(cps[i]) & UNI_NUMBER) {
                if (i > s)
                    split_gpt2(cps, s, i, emit, ctx);
                emit(ctx, i, i + 1);
                s = i + 1;
            }
        }
        if (n > s)
            split_gpt2(cps, s, n, emit, ctx);
        return;
    }
    case TOK_PRE_LLAMA3:
        split_llama3(cps, 0, n, 3, emit, ctx);
        return;
    case TOK_PRE_QWEN2:
        split_llama3(cps, 0, n, 1, emit, ctx);
        return;
    }
}
