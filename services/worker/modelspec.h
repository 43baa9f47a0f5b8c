/* modelspec.h — the worker's list of models to serve, from "--models name=path[,name=path]".
 *
 * Parsing only; loading is the engine's job. Names become part of NATS subjects and API ids,
 * so they are limited to [A-Za-z0-9._-] and 1..64 characters. */
#ifndef PARLEY_WORKER_MODELSPEC_H
#define PARLEY_WORKER_MODELSPEC_H

#include <stddef.h>

#include "status.h"

#define MS_MAX_MODELS 8

typedef struct ms_model {
    char name[65];
    char path[4096];
} ms_model;

/* Parses `spec` into out[0..*n). An empty spec gives *n = 0. PL_INVALID with a message naming
 * the offending entry for a missing '=', a bad name, a duplicate name, an empty path or more
 * than MS_MAX_MODELS entries. */
pl_status ms_parse(const char *spec, ms_model *out, size_t *n);

#endif
