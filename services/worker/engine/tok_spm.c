/* tok_spm.c — SentencePiece-style segmentation by scores (the "llama" tokenizer model of GGUF,
 * as Gemma and Llama 2 use), written to agree with llama.cpp's.
 *
 * Algorithm: the text starts as one symbol per UTF-8 character (the length is taken from the
 * lead byte; a stray continuation byte is a symbol of its own). Every adjacent pair whose
 * concatenation is a vocabulary token is queued with that token's score; the best-scoring pair
 * (leftmost on ties) is merged, the pairs around the merged symbol are queued again, and entries
 * that no longer match their symbols are skipped when popped. When no pair is left, each symbol
 * is its token — or, when it is a single character the vocabulary lacks, its bytes' <0xNN>
 * tokens (byte fallback). Only vocabulary tokens are ever formed by merging, so a symbol longer
 * than one character always has a token. O(n log n) in the fragment's characters.
 *
 * Ownership: nothing outlives a call; scratch is malloc'd per call. Thread-safe for a shared,
 * immutable vocabulary. Not here: special tokens, whitespace escaping, BOS (tok.c). */
#include "tok_spm.h"

#include <stdlib.h>

typedef struct spm_sym {
    uint32_t off, n;    /* bytes of the symbol in the text; n == 0 once merged away */
    int32_t prev, next; /* -1 at the ends */
} spm_sym;

typedef struct spm_pair {
    float score;
    int32_t left, right;
    uint32_t size; /* bytes of the pair when queued: a mismatch later means stale */
    int32_t id;
} spm_pair;

/* Heap order: higher score first, then the leftmost pair. */
static bool better(const spm_pair *a, const spm_pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void push(spm_pair *h, size_t *n, spm_pair p)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!better(&p, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = p;
}

static spm_pair pop(spm_pair *h, size_t *n)
{
    spm_pair top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && better(&h[c + 1], &h[c]))
            c++;
        if (!better(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static void try_pair(const tok_spm_vocab *v, const char *text, const spm_sym *s, spm_pair *h,
                     size_t *nh, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return;
    uint32_t size = s[l].n + s[r].n;
    int32_t id = v->lookup(v->ctx, text + s[l].off, size);
    if (id < 0)
        return;
    push(h, nh, (spm_pair){v->scores[id], l, r, size, id});
}

static size_t char_len(unsigned char c)
{
    static const unsigned char by_hi_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return by_hi_nibble[c >> 4];
}

bool tok_spm_encode(const tok_spm_vocab *v, const char *text, size_t len,
                    void (*put)(void *put_ctx, int32_t id), void *put_ctx)
{
    if (len == 0)
        return true;
    if (len > (size_t)INT32_MAX / 2)
        return false;
    spm_sym *s = malloc(len * sizeof *s);
    /* initial pairs ≤ n - 1, plus at most 2 per merge (≤ n - 1 merges) */
    spm_pair *h = malloc(3 * len * sizeof *h);
    if (!s || !h) {
        free(s);
        free(h);
        return false;
    }
    int32_t n = 0;
    for (size_t off = 0; off < len; n++) {
        size_t k = char_len((unsigned char)text[off]);
        if (k > len - off)
            k = len - off;
        s[n] = (spm_sym){(uint32_t)off, (uint32_t)k, n - 1, -1};
        if (n > 0)
            s[n - 1].next = n;
        off += k;
    }
    size_t nh = 0;
    for (int32_t i = 1; i < n; i++)
        try_pair(v, text, s, h, &nh, i - 1, i);
    while (nh) {
        spm_pair p = pop(h, &nh);
        spm_sym *l = &s[p.left], *r = &s[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size || l->next != p.right)
            continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = p.left;
        try_pair(v, text, s, h, &nh, l->prev, p.left);
        try_pair(v, text, s, h, &nh, p.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next) {
        int32_t id = v->lookup(v->ctx, text + s[i].off, s[i].n);
        if (id >= 0) {
            put(put_ctx, id);
            continue;
        }
        for (uint32_t j = 0; j < s[i].n; j++) { /* byte fallback */
            int32_t b = v->byte_tok[(unsigned char)text[s[i].off + j]];
            if (b < 0)
                b = v->unk;
            if (b >= 0)
                put(put_ctx, b);
        }
    }
    free(s);
    free(h);
    return true;
}
