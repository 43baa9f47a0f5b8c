/* sync.h — small helpers for condition variables on the monotonic clock.
 *
 * Timed waits in parley are on CLOCK_MONOTONIC so that a wall-clock jump never stretches or
 * cuts a timeout; these two helpers keep that detail in one place. */
#ifndef PARLEY_SYNC_H
#define PARLEY_SYNC_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Initialises `cv` to time its waits on CLOCK_MONOTONIC. */
void sync_cond_init(pthread_cond_t *cv);
/* The absolute CLOCK_MONOTONIC time `ms` milliseconds from now, for pthread_cond_timedwait. */
struct timespec sync_deadline(int64_t ms);

#endif
