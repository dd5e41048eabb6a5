/* kiln_pool.h: a small pthread pool that runs kiln libraries on several threads.
 *
 * kiln libraries never create threads: NAME_run_parallel hands each heavy kernel to a
 * parallel_for callback the application provides. This file is one such callback, for programs
 * that have no thread pool of their own. Include a kiln-generated header first (it declares
 * kiln_parallel), then this file, and build with -pthread:
 *
 *   #include "cnn.h"
 *   #include "kiln_pool.h"
 *
 *   kiln_pool *pool = kiln_pool_new(4);           the caller plus 3 worker threads
 *   kiln_parallel par = kiln_pool_parallel(pool); tasks = 4: each heavy kernel in 4 parts
 *   int rc = cnn_run_parallel(&in, &out, arena, &par);
 *   ...
 *   kiln_pool_free(pool);
 *
 * One run at a time per pool (the parallel_for is not reentrant); use one pool per concurrent run.
 * The calling thread works too, so a pool of N threads keeps N cores busy. Idle workers poll for
 * a short while before they sleep, because a model calls parallel_for once per heavy kernel, in
 * quick succession.
 *
 * Used as is by `kiln run --threads N` and `kiln bench --threads N`. C11 (stdatomic.h).
 */
#ifndef KILN_POOL_H
#define KILN_POOL_H

#ifndef KILN_PARALLEL_API_V1
#error "include a kiln-generated header (it declares kiln_parallel) before kiln_pool.h"
#endif

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define KILN_POOL_MAX_THREADS 256
/* Polls (x86 `pause`, arm `yield`: tens of nanoseconds each) before an idle worker sleeps, or a
 * caller waiting for the last parts starts yielding its core: about 0.1 ms. Define it before the
 * #include to change it: lower on a machine shared with other busy processes, higher when the
 * cores are yours. */
#ifndef KILN_POOL_SPIN
#define KILN_POOL_SPIN 2000
#endif

typedef struct kiln_pool {
    /* The current job. Publishing one bumps `gen`; its parts are claimed from `claim`, whose high
     * 32 bits are the job's generation, so a worker still leaving an old job can never claim a
     * part of a newer one. `claim` is reset before the job fields are written, for the same
     * reason. */
    _Atomic(kiln_task_fn) task;
    _Atomic(void *) ctx;
    atomic_uint count;
    atomic_uint gen;
    atomic_ullong claim;
    atomic_uint done; /* parts finished */
    atomic_int sleepers;
    atomic_int quit;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    unsigned threads; /* including the caller */
    pthread_t workers[KILN_POOL_MAX_THREADS];
} kiln_pool;

static void kiln_pool_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Claims and runs parts of job `gen` until none is left. */
static void kiln_pool_work(kiln_pool *p, unsigned gen) {
    kiln_task_fn task = atomic_load(&p->task);
    void *ctx = atomic_load(&p->ctx);
    unsigned count = atomic_load(&p->count);
    unsigned long long c = atomic_load(&p->claim);
    for (;;) {
        if ((unsigned)(c >> 32) != gen || (uint32_t)c >= count) return;
        if (atomic_compare_exchange_weak(&p->claim, &c, c + 1)) {
            task(ctx, (uint32_t)c);
            atomic_fetch_add(&p->done, 1);
            c = atomic_load(&p->claim);
        }
    }
}

static void *kiln_pool_worker(void *arg) {
    kiln_pool *p = (kiln_pool *)arg;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->quit)) {
            if (++spins < KILN_POOL_SPIN) {
                kiln_pool_pause();
                continue;
            }
            /* Sleep. `sleepers` is raised before `gen` is checked again and the publisher reads
             * it after bumping `gen`, so one of the two always sees the other. */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit))
                pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = g;
        kiln_pool_work(p, g);
    }
}

/* The parallel_for: `user` is the pool. */
static void kiln_pool_parallel_for(void *user, uint32_t count, kiln_task_fn task, void *ctx) {
    kiln_pool *p = (kiln_pool *)user;
    uint32_t i;
    if (p->threads <= 1 || count <= 1) {
        for (i = 0; i < count; i++) task(ctx, i);
        return;
    }
    unsigned g = atomic_load(&p->gen) + 1;
    atomic_store(&p->claim, (unsigned long long)g << 32);
    atomic_store(&p->done, 0);
    atomic_store(&p->task, task);
    atomic_store(&p->ctx, ctx);
    atomic_store(&p->count, count);
    atomic_store(&p->gen, g);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    kiln_pool_work(p, g);
    /* The other parts are running on workers; wait for them. */
    for (int spins = 0; atomic_load(&p->done) < count; spins++) {
        if (spins < KILN_POOL_SPIN) kiln_pool_pause();
        else sched_yield();
    }
}

/* A pool of `threads` threads: the caller plus threads - 1 workers (0 is taken as 1). NULL if
 * out of memory; fewer threads if the system refuses some. */
static kiln_pool *kiln_pool_new(unsigned threads) {
    kiln_pool *p = (kiln_pool *)calloc(1, sizeof *p);
    unsigned i;
    if (!p) return NULL;
    if (threads < 1) threads = 1;
    if (threads > KILN_POOL_MAX_THREADS) threads = KILN_POOL_MAX_THREADS;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->threads = 1;
    for (i = 1; i < threads; i++) {
        if (pthread_create(&p->workers[i - 1], NULL, kiln_pool_worker, p) != 0) break;
        p->threads++;
    }
    return p;
}

/* Splits each heavy kernel into as many parts as the pool has threads. */
static kiln_parallel kiln_pool_parallel(kiln_pool *p) {
    kiln_parallel par;
    par.parallel_for = kiln_pool_parallel_for;
    par.user = p;
    par.tasks = p ? p->threads : 1;
    return par;
}

static void kiln_pool_free(kiln_pool *p) {
    unsigned i;
    if (!p) return;
    atomic_store(&p->quit, 1);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (i = 1; i < p->threads; i++) pthread_join(p->workers[i - 1], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    free(p);
}

#endif /* KILN_POOL_H */
