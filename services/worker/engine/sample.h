/* sample.h — turning logits into the next token, and deciding when a sequence ends.
 *
 * A sampler holds one sequence's sampling parameters, its RNG state (seeded → reproducible)
 * and the token history needed for penalties. Order of operations: penalties (repetition,
 * presence, frequency over the generated and prompt tokens) → temperature; greedy when
 * temperature ≤ 0; else top-k → top-p → min-p → softmax → draw. Not thread-safe per sampler;
 * one sampler per sequence.
 *
 * Stop strings (stop_matcher) are matched on the generated text across token boundaries: text
 * that could be the start of a stop string is held back until it is known not to be, and the
 * stop string itself is never emitted. */
#ifndef PARLEY_SAMPLE_H
#define PARLEY_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct sample_params {
    float temperature;        /* ≤ 0 → greedy */
    int32_t top_k;            /* ≤ 0 → off */
    float top_p;              /* ≥ 1 → off */
    float min_p;              /* ≤ 0 → off */
    float repetition_penalty; /* 1 → off */
    float presence_penalty;   /* 0 → off */
    float frequency_penalty;  /* 0 → off */
    int32_t penalty_last_n;   /* window of recent tokens for penalties; 0 = 64 */
    uint64_t seed;
    bool has_seed; /* false → seeded from getrandom */
} sample_params;

void sample_params_default(sample_params *p);
/* PL_INVALID with a message naming the parameter when out of range (temperature < 0 or > 2,
 * top_p outside (0,1], min_p outside [0,1], penalties outside [-2,2] / (0,2]). */
pl_status sample_params_check(const sample_params *p);

typedef struct sampler sampler;
pl_status sampler_create(const sample_params *p, int32_t n_vocab, sampler **out);
void sampler_destroy(sampler *s); /* accepts NULL */
/* Records a token (prompt or generated) for the penalties. */
void sampler_accept(sampler *s, int32_t tok);
/* Picks the next token from logits[n_vocab]; may modify logits in place. */
int32_t sampler_sample(sampler *s, float *logits);

/* Stop-string matcher over the decoded output. */
typedef struct stop_matcher stop_matcher;
/* Up to 4 stop strings, copied; empty strings ignored. */
pl_status stop_create(const char *const *stops, size_t n, stop_matcher **out);
void stop_destroy(stop_matcher *m);
/* Feeds newly decoded text. Writes what is safe to emit to *emit (borrowed, valid until the next
 * call) with length *emit_len; returns true when a stop string was matched (the text before it
 * has been emitted; nothing after it is). */
bool stop_feed(stop_matcher *m, const char *text, size_t len, const char **emit, size_t *emit_len);
/* At the end without a stop: whatever was held back. */
void stop_flush(stop_matcher *m, const char **emit, size_t *emit_len);

#endif
