/* tpool.c — fixed pool of worker threads for the forward pass's data-parallel loops.
 *
 * Protocol: tpool_run() stores the job (fn, arg), sets `pending` to the number of workers and
 * bumps the generation counter `gen` (release). Each worker waits for `gen` to move past the
 * last generation it ran — spinning with a pause for about SPIN_NS after its previous job, then
 * sleeping on the condition variable — runs fn(arg, ith, n), and decrements `pending` (release).
 * The caller runs share 0 itself and then waits (acquire) until `pending` is zero, so every
 * write a worker made inside fn is visible to the caller when tpool_run returns.
 *
 * A worker about to sleep registers in `sleepers` (under the mutex) and re-checks `gen`; the
 * caller bumps `gen` and only then looks at `sleepers`, taking the mutex to broadcast when it
 * is non-zero. Both sides use sequentially consistent operations, so either the worker sees the
 * new generation or the caller sees the sleeper: no wake-up is lost, and a pool whose workers
 * are all spinning never touches the mutex.
 *
 * Ownership: the pool owns its threads; tpool_destroy() stops and joins them. Threading:
 * tpool_run() is called from one thread at a time and is not reentrant (a job must not call
 * tpool_run on the same pool). It does not balance load: fn splits its own work (tpool_split). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* How long an idle worker spins before sleeping: long enough to cover the gap between two ops
 * of one decode step, short enough not to burn a core between requests. */
#define SPIN_NS 100000LL

typedef struct tp_worker {
    struct tpool *pool;
    int ith;
    pthread_t thread;
} tp_worker;

struct tpool {
    int n;              /* threads including the caller */
    tp_worker *workers; /* n - 1 of them */
    int started;        /* workers whose thread was created */

    tpool_fn fn; /* current job; written before gen is bumped */
    void *arg;
    atomic_uint gen;     /* job generation */
    atomic_int pending;  /* workers that have not finished the current job */
    atomic_int sleepers; /* workers blocked (or about to block) on cv */
    atomic_bool stop;

    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Waits until gen differs from `seen`; returns the new generation. */
static unsigned wait_for_job(tpool *p, unsigned seen)
{
    unsigned g;
    long long deadline = now_ns() + SPIN_NS;
    for (int k = 1;; k++) {
        g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen)
            return g;
        CPU_RELAX();
        if ((k & 255) == 0) {
            if (now_ns() > deadline)
                break;
            sched_yield(); /* lets a descheduled pool thread run when cores are oversubscribed */
        }
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    while ((g = atomic_load(&p->gen)) == seen)
        pthread_cond_wait(&p->cv, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *v)
{
    tp_worker *w = v;
    tpool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_job(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        p->fn(p->arg, w->ith, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

/* Publishes a new generation and wakes sleeping workers. */
static void publish(tpool *p)
{
    atomic_fetch_add(&p->gen, 1); /* seq_cst: ordered before the sleepers check below */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

pl_status tpool_create(int n_threads, tpool **out)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return PL_ERRF(PL_INVALID, "thread pool size %d out of range 1..1024", n_threads);
    tpool *p = calloc(1, sizeof *p);
    if (!p)
        return PL_ERRF(PL_NOMEM, "thread pool: out of memory");
    p->n = n_threads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stop, false);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            tpool_destroy(p);
            return PL_ERRF(PL_NOMEM, "thread pool: out of memory");
        }
    }
    for (int i = 1; i < n_threads; i++) {
        tp_worker *w = &p->workers[i - 1];
        w->pool = p;
        w->ith = i;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) {
            tpool_destroy(p);
            return PL_ERRF(PL_ERR, "thread pool: cannot start thread %d of %d (error %d)", i,
                           n_threads, rc);
        }
        p->started++;
        char name[32];
        snprintf(name, sizeof name, "parley-tp%d", i);
        name[15] = '\0'; /* the kernel's limit */
        pthread_setname_np(w->thread, name);
    }
    *out = p;
    return PL_OK;
}

void tpool_destroy(tpool *p)
{
    if (!p)
        return;
    if (p->started > 0) {
        atomic_store_explicit(&p->stop, true, memory_order_release);
        publish(p);
        for (int i = 0; i < p->started; i++)
            pthread_join(p->workers[i].thread, NULL);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

int tpool_size(const tpool *p)
{
    return p->n;
}

void tpool_run(tpool *p, tpool_fn fn, void *arg)
{
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    publish(p);
    fn(arg, 0, p->n);
    /* Workers usually finish within microseconds of us: spin, yielding now and then so that a
     * worker waiting for a core (more threads than free cores) gets it. */
    for (int k = 1; atomic_load_explicit(&p->pending, memory_order_acquire) != 0; k++) {
        CPU_RELAX();
        if ((k & 255) == 0)
            sched_yield();
    }
}

void tpool_split(long long n, int ith, int nth, long long *lo, long long *hi)
{
    long long base = n / nth, rem = n % nth;
    *lo = ith * base + (ith < rem ? ith : rem);
    *hi = *lo + base + (ith < rem ? 1 : 0);
}
