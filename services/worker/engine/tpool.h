/* tpool.h — a fixed pool of worker threads for data-parallel loops in the forward pass.
 *
 * tpool_run(p, fn, arg) calls fn(arg, i, n) on each of the n = tpool_size(p) threads (the
 * caller's thread is thread 0) and returns when all have finished. Workers spin briefly, then
 * sleep on a condition variable between jobs, so a decode step of ~1 ms does not pay a futex
 * wake per op in the common case. One job at a time: tpool_run is not reentrant and must be
 * called from one thread. */
#ifndef PARLEY_TPOOL_H
#define PARLEY_TPOOL_H

#include "status.h"

typedef struct tpool tpool;
typedef void (*tpool_fn)(void *arg, int ith, int nth);

/* n_threads ≥ 1 (1 = everything on the caller's thread). *out owned by the caller. */
pl_status tpool_create(int n_threads, tpool **out);
void tpool_destroy(tpool *p); /* accepts NULL */
int tpool_size(const tpool *p);
void tpool_run(tpool *p, tpool_fn fn, void *arg);

/* Splits [0, n) into nth nearly equal parts; part ith is [*lo, *hi). */
void tpool_split(long long n, int ith, int nth, long long *lo, long long *hi);

#endif
