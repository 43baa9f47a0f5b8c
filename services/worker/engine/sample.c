/* sample.c — logits → next token (penalties, temperature, top-k/top-p/min-p, seeded draw), and
 * the stop-string matcher over decoded text.
 *
 * Threading: none inside. A sampler or a stop_matcher belongs to one sequence and is used by one
 * thread at a time.
 *
 * Ownership: a sampler owns its scratch buffers (a candidate array of n_vocab entries, a per-token
 * count array for the penalties, the ring of recent tokens) so sampler_sample never allocates.
 * The logits passed to sampler_sample are the caller's; they are modified in place (penalties).
 * A stop_matcher owns copies of its stop strings and one growable byte buffer; the text it hands
 * back through stop_feed/stop_flush points into that buffer.
 *
 * Sampling pipeline (see sample.h): penalties → (greedy if temperature ≤ 0) → divide by the
 * temperature → top-k → softmax → top-p → min-p → draw. Nothing sorts the vocabulary: top-k is
 * one scan with a k-entry heap (a quickselect for large k); top-p is a quickselect on probability
 * mass that finds the smallest best set reaching p (expected O(n) even when that set is half the
 * vocabulary); min-p compares each probability with the maximum and needs no order at all.
 * Candidates are totally ordered by (logit desc, id asc), so ties always favour the lowest id and
 * a given seed reproduces the same tokens.
 *
 * RNG: xoshiro256** seeded through splitmix64; without a seed, the seed comes from getrandom(2).
 *
 * What it does not do: grammar/logit-bias constraints, mirostat, typical-p, DRY, beam search. The
 * stop matcher works on bytes; it never emits a partial UTF-8 sequence at the end of what it
 * hands back (an incomplete trailing sequence is held until it completes or until flush). */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* ---------------------------------------------------------------------------------------------
 * Parameters */

void sample_params_default(sample_params *p)
{
    memset(p, 0, sizeof *p);
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repetition_penalty = 1.0f;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->penalty_last_n = 64;
    p->seed = 0;
    p->has_seed = false;
}

pl_status sample_params_check(const sample_params *p)
{
    if (!p)
        return PL_ERRF(PL_INVALID, "sample params: NULL");
    /* The negated comparisons also reject NaN. */
    if (!(p->temperature >= 0.0f && p->temperature <= 2.0f))
        return PL_ERRF(PL_INVALID, "temperature %g outside [0, 2]", (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return PL_ERRF(PL_INVALID, "top_p %g outside (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return PL_ERRF(PL_INVALID, "min_p %g outside [0, 1]", (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 2.0f))
        return PL_ERRF(PL_INVALID, "repetition_penalty %g outside (0, 2]",
                       (double)p->repetition_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return PL_ERRF(PL_INVALID, "presence_penalty %g outside [-2, 2]",
                       (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return PL_ERRF(PL_INVALID, "frequency_penalty %g outside [-2, 2]",
                       (double)p->frequency_penalty);
    if (p->penalty_last_n < 0)
        return PL_ERRF(PL_INVALID, "penalty_last_n %d is negative", (int)p->penalty_last_n);
    return PL_OK;
}

/* ---------------------------------------------------------------------------------------------
 * RNG: splitmix64 expands one 64-bit seed into xoshiro256** state. */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t v, int k)
{
    return (v << k) | (v >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t st[4])
{
    uint64_t out = rotl64(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl64(st[3], 45);
    return out;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t st[4])
{
    return (double)(xoshiro_next(st) >> 11) * (1.0 / 9007199254740992.0);
}

/* A seed from the kernel; when getrandom fails (very old kernel, seccomp), a mix of the clock and
 * an address, which is still different from run to run. */
static uint64_t entropy_seed(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) == (ssize_t)sizeof v)
        return v;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)&v;
}

/* ---------------------------------------------------------------------------------------------
 * Sampler */

/* Up to this k, top-k keeps a heap while scanning the logits; above it, a quickselect. */
#define TOPK_HEAP_MAX 256

typedef struct cand {
    float logit; /* after penalties and temperature; then the unnormalised probability */
    int32_t id;
} cand;

struct sampler {
    sample_params p;
    int32_t n_vocab;
    uint64_t rng[4];
    cand *cands;     /* (n_vocab) scratch */
    int32_t *counts; /* (n_vocab) occurrences in the window; all zero between calls */
    int32_t *ring;   /* (window) last accepted tokens, oldest overwritten first */
    int32_t window, ring_len, ring_pos;
};

pl_status sampler_create(const sample_params *p, int32_t n_vocab, sampler **out)
{
    *out = NULL;
    pl_status st = sample_params_check(p);
    if (st != PL_OK)
        return st;
    if (n_vocab <= 0)
        return PL_ERRF(PL_INVALID, "sampler: n_vocab %d", (int)n_vocab);
    sampler *s = calloc(1, sizeof *s);
    if (!s)
        return PL_ERRF(PL_NOMEM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->window = p->penalty_last_n > 0 ? p->penalty_last_n : 64;
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    s->ring = malloc((size_t)s->window * sizeof *s->ring);
    if (!s->cands || !s->counts || !s->ring) {
        sampler_destroy(s);
        return PL_ERRF(PL_NOMEM, "sampler: out of memory (n_vocab %d)", (int)n_vocab);
    }
    uint64_t x = p->has_seed ? p->seed : entropy_seed();
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return PL_OK;
}

void sampler_destroy(sampler *s)
{
    if (!s)
        return;
    free(s->cands);
    free(s->counts);
    free(s->ring);
    free(s);
}

void sampler_accept(sampler *s, int32_t tok)
{
    if (tok < 0 || tok >= s->n_vocab)
        return; /* not a vocabulary token: nothing to penalise */
    s->ring[s->ring_pos] = tok;
    s->ring_pos = (s->ring_pos + 1) % s->window;
    if (s->ring_len < s->window)
        s->ring_len++;
}

static bool penalties_on(const sample_params *p)
{
    return p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f ||
           p->frequency_penalty != 0.0f;
}

/* Applies the repetition penalty (llama.cpp convention: a positive logit is divided by it, a
 * negative one multiplied) and the OpenAI presence/frequency penalties once per distinct token
 * of the window. O(window): counts[] is filled, used, and zeroed again. */
static void apply_penalties(sampler *s, float *logits)
{
    const sample_params *p = &s->p;
    for (int32_t i = 0; i < s->ring_len; i++)
        s->counts[s->ring[i]]++;
    for (int32_t i = 0; i < s->ring_len; i++) {
        int32_t t = s->ring[i];
        int32_t c = s->counts[t];
        if (c == 0)
            continue; /* this token was already handled */
        float l = logits[t];
        if (p->repetition_penalty != 1.0f)
            l = l > 0.0f ? l / p->repetition_penalty : l * p->repetition_penalty;
        l -= (float)c * p->frequency_penalty + p->presence_penalty;
        logits[t] = l;
        s->counts[t] = 0;
    }
}

/* Index of the largest logit, lowest id on ties; NaN never wins. */
static int32_t argmax(const float *logits, int32_t n)
{
    int32_t best = 0;
    float bv = -INFINITY;
    for (int32_t i = 0; i < n; i++) {
        if (logits[i] > bv) {
            bv = logits[i];
            best = i;
        }
    }
    return best;
}

/* Strict total order: higher logit first, then lower id. */
static bool cand_before(const cand *a, const cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static void cand_swap(cand *a, cand *b)
{
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Median-of-three: moves the middle-ranked of c[lo], c[mid], c[hi] to c[hi] as the pivot. */
static void pivot_to_end(cand *c, int32_t lo, int32_t hi)
{
    int32_t mid = lo + (hi - lo) / 2;
    if (cand_before(&c[mid], &c[lo]))
        cand_swap(&c[mid], &c[lo]);
    if (cand_before(&c[hi], &c[lo]))
        cand_swap(&c[hi], &c[lo]);
    if (cand_before(&c[hi], &c[mid]))
        cand_swap(&c[hi], &c[mid]);
    cand_swap(&c[mid], &c[hi]);
}

/* Quickselect: rearranges c[0..n) so that the k best candidates (cand_before order) are in
 * c[0..k), in no particular order. Expected O(n). Median-of-three pivots keep sorted or reversed
 * input from going quadratic; logits are not adversarial. */
static void select_top(cand *c, int32_t n, int32_t k)
{
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        pivot_to_end(c, lo, hi); /* Lomuto partition around the median of three */
        cand pivot = c[hi];
        int32_t store = lo;
        for (int32_t i = lo; i < hi; i++) {
            if (cand_before(&c[i], &pivot))
                cand_swap(&c[i], &c[store++]);
        }
        cand_swap(&c[store], &c[hi]);
        /* c[lo..store) before pivot, c[store] = pivot, c(store..hi] after it */
        if (store == k - 1 || store == k)
            return;
        if (store > k)
            hi = store - 1;
        else
            lo = store + 1;
    }
}

/* Top-p without sorting: c[i].logit holds unnormalised probabilities. Rearranges c[0..n) and
 * returns m ≥ 1 such that c[0..m) are the m best candidates and m is the smallest count whose
 * mass reaches `target` (all n when rounding keeps the total just under it). A quickselect on
 * mass: after each partition, either the better side alone reaches the target (look inside
 * it) or it is kept whole and the search goes on in the worse side. Expected O(n). */
static int32_t nucleus_select(cand *c, int32_t n, double target)
{
    int32_t lo = 0, hi = n; /* the cut lies in (lo, hi]; everything before lo is kept */
    double acc = 0.0;       /* mass of c[0..lo), always < target */
    while (hi - lo > 1) {
        pivot_to_end(c, lo, hi - 1);
        cand pivot = c[hi - 1];
        int32_t store = lo;
        double better = 0.0;
        for (int32_t i = lo; i < hi - 1; i++) {
            if (cand_before(&c[i], &pivot)) {
                better += c[i].logit;
                cand_swap(&c[i], &c[store++]);
            }
        }
        cand_swap(&c[store], &c[hi - 1]);
        /* c[lo..store) better than the pivot, c[store] = pivot, c(store..hi) worse */
        if (acc + better >= target && store > lo) {
            hi = store;
        } else if (acc + better + pivot.logit >= target) {
            return store + 1;
        } else {
            acc += better + pivot.logit;
            lo = store + 1;
        }
    }
    if (lo < hi)
        return lo + 1;
    return hi > 0 ? hi : 1;
}

/* Moves c[i] down a min-heap (worst-ranked candidate at the root) of n entries. */
static void heap_sift_down(cand *c, int32_t n, int32_t i)
{
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_before(&c[w], &c[l]))
            w = l;
        if (r < n && cand_before(&c[w], &c[r]))
            w = r;
        if (w == i)
            return;
        cand_swap(&c[i], &c[w]);
        i = w;
    }
}

/* Top-k for small k straight from the logits: one pass keeping the k best in a heap, so the
 * cost is one comparison per token plus O(log k) for the rare insertions. Writes c[0..k). */
static void topk_heap(const float *logits, int32_t nv, int32_t k, cand *c)
{
    int32_t n = 0;
    for (int32_t i = 0; i < nv; i++) {
        cand x = {isnan(logits[i]) ? -INFINITY : logits[i], i};
        if (n < k) {
            /* sift up */
            int32_t j = n++;
            c[j] = x;
            while (j > 0 && cand_before(&c[(j - 1) / 2], &c[j])) {
                cand_swap(&c[(j - 1) / 2], &c[j]);
                j = (j - 1) / 2;
            }
        } else if (cand_before(&x, &c[0])) {
            c[0] = x;
            heap_sift_down(c, n, 0);
        }
    }
}

int32_t sampler_sample(sampler *s, float *logits)
{
    const sample_params *p = &s->p;
    const int32_t nv = s->n_vocab;

    if (penalties_on(p) && s->ring_len > 0)
        apply_penalties(s, logits);
    if (p->temperature <= 0.0f)
        return argmax(logits, nv);

    /* Candidates, temperature-scaled (monotone, so selecting before scaling is the same); NaN
     * becomes -inf so the order stays total. Then top-k: the k best to the front, unordered. */
    const float inv_t = 1.0f / p->temperature;
    cand *c = s->cands;
    int32_t n = nv;
    if (p->top_k > 0 && p->top_k <= TOPK_HEAP_MAX && p->top_k < nv) {
        topk_heap(logits, nv, p->top_k, c);
        n = p->top_k;
        for (int32_t i = 0; i < n; i++)
            c[i].logit *= inv_t;
    } else {
        for (int32_t i = 0; i < nv; i++) {
            float l = logits[i];
            c[i].logit = isnan(l) ? -INFINITY : l * inv_t;
            c[i].id = i;
        }
        if (p->top_k > 0 && p->top_k < n) {
            select_top(c, n, p->top_k);
            n = p->top_k;
        }
    }

    /* softmax numerators over what is left; the sum is kept instead of normalising */
    float maxl = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        maxl = c[i].logit > maxl ? c[i].logit : maxl;
    if (maxl == -INFINITY) /* nothing is possible: fall back to the lowest id */
        return argmax(logits, nv);
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        float e = expf(c[i].logit - maxl); /* monotone in the logit, so the order is kept */
        c[i].logit = e;
        sum += e;
    }

    /* top-p: the smallest set of best tokens whose mass reaches p of the total */
    if (p->top_p < 1.0f) {
        n = nucleus_select(c, n, (double)p->top_p * sum);
        sum = 0.0;
        for (int32_t i = 0; i < n; i++)
            sum += c[i].logit;
    }

    /* min-p: keep p_i ≥ min_p · p_max; the maximum has numerator exp(0) = 1 */
    if (p->min_p > 0.0f) {
        const float thr = p->min_p;
        int32_t m = 0;
        sum = 0.0;
        for (int32_t i = 0; i < n; i++) {
            if (c[i].logit >= thr) {
                c[m++] = c[i];
                sum += c[i].logit;
            }
        }
        n = m > 0 ? m : 1; /* m ≥ 1 always (the max passes), kept defensive */
    }

    /* draw */
    double u = rng_uniform(s->rng) * sum;
    double acc = 0.0;
    for (int32_t i = 0; i < n; i++) {
        acc += c[i].logit;
        if (u < acc)
            return c[i].id;
    }
    return c[n - 1].id; /* rounding left u just past the last bucket */
}

/* ---------------------------------------------------------------------------------------------
 * Stop matcher */

#define STOP_MAX 4

struct stop_matcher {
    char *stops[STOP_MAX];
    size_t stop_len[STOP_MAX];
    size_t n_stops;
    char *buf; /* held bytes at buf[0..held); stop_feed appends the new text after them */
    size_t held, cap;
    size_t emitted; /* bytes at the front of buf handed out by the last call, dropped next call */
    bool stopped;
};

pl_status stop_create(const char *const *stops, size_t n, stop_matcher **out)
{
    *out = NULL;
    if (n > STOP_MAX)
        return PL_ERRF(PL_INVALID, "at most %d stop strings (got %zu)", STOP_MAX, n);
    if (n > 0 && !stops)
        return PL_ERRF(PL_INVALID, "stop strings: NULL array");
    stop_matcher *m = calloc(1, sizeof *m);
    if (!m)
        return PL_ERRF(PL_NOMEM, "stop matcher: out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!stops[i] || !stops[i][0])
            continue;
        size_t len = strlen(stops[i]);
        char *copy = malloc(len + 1);
        if (!copy) {
            stop_destroy(m);
            return PL_ERRF(PL_NOMEM, "stop matcher: out of memory");
        }
        memcpy(copy, stops[i], len + 1);
        m->stops[m->n_stops] = copy;
        m->stop_len[m->n_stops] = len;
        m->n_stops++;
    }
    *out = m;
    return PL_OK;
}

void stop_destroy(stop_matcher *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_stops; i++)
        free(m->stops[i]);
    free(m->buf);
    free(m);
}

/* Length of the longest suffix of b[0..n) that is a proper prefix of some stop string. */
static size_t stop_prefix_suffix(const stop_matcher *m, const char *b, size_t n)
{
    size_t best = 0;
    for (size_t s = 0; s < m->n_stops; s++) {
        size_t L = m->stop_len[s] - 1;
        if (L > n)
            L = n;
        for (; L > best; L--) {
            if (memcmp(b + n - L, m->stops[s], L) == 0) {
                best = L;
                break;
            }
        }
    }
    return best;
}

static bool utf8_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

/* Moves a cut point in b[0..n) back so that b[0..cut) does not end inside a UTF-8 sequence:
 * never before a continuation byte, and not after a lead byte whose sequence is incomplete. */
static size_t utf8_safe_cut(const unsigned char *b, size_t n, size_t cut)
{
    if (cut < n) {
        for (int k = 0; k < 3 && cut > 0 && utf8_cont(b[cut]); k++)
            cut--;
        return cut;
    }
    /* cut == n: look for the last lead byte among the final 4 bytes */
    size_t i = n;
    for (int k = 0; k < 4 && i > 0; k++) {
        i--;
        if (utf8_cont(b[i]))
            continue;
        unsigned char c = b[i];
        size_t need = c >= 0xF0 && c <= 0xF7 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (c >= 0xF8)
            need = 1; /* not a lead byte: invalid, pass it through */
        return n - i < need ? i : n;
    }
    return n; /* only continuation bytes: invalid input, emit it */
}

/* Drops the bytes handed out by the previous call. */
static void stop_compact(stop_matcher *m)
{
    if (m->emitted > 0) {
        memmove(m->buf, m->buf + m->emitted, m->held);
        m->emitted = 0;
    }
}

/* Grows buf to hold `need` bytes. Out of memory aborts: the matcher has no error channel and the
 * request is a few bytes beyond one token's text. */
static void stop_reserve(stop_matcher *m, size_t need)
{
    if (need <= m->cap)
        return;
    size_t cap = m->cap ? m->cap : 256;
    while (cap < need)
        cap *= 2;
    char *nb = realloc(m->buf, cap);
    PL_ASSERT(nb != NULL);
    m->buf = nb;
    m->cap = cap;
}

bool stop_feed(stop_matcher *m, const char *text, size_t len, const char **emit, size_t *emit_len)
{
    *emit = "";
    *emit_len = 0;
    if (m->stopped)
        return true;
    stop_compact(m);
    stop_reserve(m, m->held + len + 1);
    if (len > 0)
        memcpy(m->buf + m->held, text, len);
    const size_t n = m->held + len;
    const char *b = m->buf;

    /* The earliest occurrence of any stop string. A match spanning calls starts inside the held
     * bytes, which are searched again here. */
    size_t first = n;
    for (size_t s = 0; s < m->n_stops; s++) {
        const char *hit = memmem(b, n, m->stops[s], m->stop_len[s]);
        if (hit && (size_t)(hit - b) < first)
            first = (size_t)(hit - b);
    }
    if (first < n) {
        m->stopped = true;
        m->held = 0;
        *emit = b;
        *emit_len = first;
        return true;
    }

    size_t cut = n - stop_prefix_suffix(m, b, n);
    cut = utf8_safe_cut((const unsigned char *)b, n, cut);
    m->emitted = cut;
    m->held = n - cut;
    *emit = b;
    *emit_len = cut;
    return false;
}

void stop_flush(stop_matcher *m, const char **emit, size_t *emit_len)
{
    *emit = "";
    *emit_len = 0;
    if (m->stopped)
        return;
    stop_compact(m);
    if (m->held == 0)
        return;
    *emit = m->buf;
    *emit_len = m->held;
    m->emitted = m->held;
    m->held = 0;
}
