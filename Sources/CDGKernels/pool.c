// The thread pool behind every parallel loop; see dg_parallel_for in include/dg_kernels.h.
//
// Why not libdispatch's concurrentPerform: its idle workers sleep in the kernel, and waking one
// costs 50-100 microseconds on the 2-core machines this runs on, while many of the kernels it
// splits (an attention head block, a norm, an element-wise op on a small tensor) take a few
// hundred. Here a worker spins for DGINSTYLE_SPIN_US microseconds (default 200) after its last job
// before it sleeps, as OpenMP runtimes and OpenBLAS do, so back-to-back kernels find it awake.
//
// Which thread runs which iteration does not matter: callers give each iteration a fixed piece of
// work (chunks that depend on the sizes only), so results are the same bits whoever runs them.
#include "dg_kernels.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define MAX_WORKERS 255

// The one job slot. `seq` is even while a job is published and stable, odd while the submitting
// thread rewrites it; `active` counts workers reading the slot, and the submitter waits for it to
// drain before a rewrite (each side writes its own counter, then reads the other's: sequentially
// consistent, so one of them always sees the other).
static struct {
    _Atomic long seq;
    _Atomic long active;
    _Atomic long next;
    _Atomic long done;
    long n;
    long helpers;   // workers with an index below this join the job (the caller's thread count - 1)
    dg_task_fn fn;
    void *ctx;
} job;

static pthread_mutex_t submit_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static _Atomic long sleepers;
static long workers;          // started so far (guarded by submit_lock)
static _Atomic long spin_ns = -1;
static _Thread_local int inside_job;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static long spin_budget(void) {
    long s = atomic_load_explicit(&spin_ns, memory_order_relaxed);
    if (s >= 0) return s;
    const char *e = getenv("DGINSTYLE_SPIN_US");
    long us = e ? strtol(e, NULL, 10) : 200;
    s = (us < 0 ? 0 : us) * 1000;
    atomic_store(&spin_ns, s);
    return s;
}

static void run_iterations(void) {
    long n = job.n;
    for (long i = atomic_fetch_add(&job.next, 1); i < n; i = atomic_fetch_add(&job.next, 1)) {
        job.fn(job.ctx, i);
        atomic_fetch_add(&job.done, 1);
    }
}

// Waits for the other threads of a job; yields the core after a while, in case the thread
// waited for is preempted (another process on the machine).
static void wait_until_zero(_Atomic long *v, long target_minus) {
    for (long k = 0; atomic_load(v) - target_minus != 0; k++) {
        if (k < 20000) CPU_RELAX(); else sched_yield();
    }
}

static int has_new_job(long last) {
    long s = atomic_load(&job.seq);
    return s != last && (s & 1) == 0;
}

static void *worker_main(void *arg) {
    long index = (long)arg;
    long last = 0;
    inside_job = 1;   // a parallel loop inside a job runs on its own thread
    for (;;) {
        if (!has_new_job(last)) {
            long budget = spin_budget(), start = now_ns();
            for (int k = 0; !has_new_job(last); k++) {
                CPU_RELAX();
                if ((k & 63) == 63 && now_ns() - start > budget) break;
            }
            if (!has_new_job(last)) {
                pthread_mutex_lock(&sleep_lock);
                atomic_fetch_add(&sleepers, 1);
                while (!has_new_job(last)) pthread_cond_wait(&wake, &sleep_lock);
                atomic_fetch_sub(&sleepers, 1);
                pthread_mutex_unlock(&sleep_lock);
            }
        }
        atomic_fetch_add(&job.active, 1);
        long s = atomic_load(&job.seq);
        if ((s & 1) == 0 && s != last) {
            last = s;
            if (index < job.helpers) run_iterations();
        }
        atomic_fetch_sub(&job.active, 1);
    }
    return NULL;
}

static int start_workers(long wanted) {
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    while (workers < wanted) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&t, &attr, worker_main, (void *)workers);
        pthread_attr_destroy(&attr);
        if (failed) break;
        workers++;
    }
    return workers;
}

void dg_parallel_for(long iterations, long threads, dg_task_fn fn, void *ctx) {
    // Serial: one thread or one iteration, a loop nested in a job, or another thread's loop
    // holding the pool (rare: a data loader beside the model); the results are the same.
    if (iterations <= 0) return;
    if (threads <= 1 || iterations == 1 || inside_job || pthread_mutex_trylock(&submit_lock) != 0) {
        for (long i = 0; i < iterations; i++) fn(ctx, i);
        return;
    }
    long helpers = start_workers(threads - 1);
    if (helpers > threads - 1) helpers = threads - 1;
    atomic_fetch_add(&job.seq, 1);                       // odd: the slot is being rewritten
    wait_until_zero(&job.active, 0);                     // latecomers of the last job leave
    job.fn = fn;
    job.ctx = ctx;
    job.n = iterations;
    job.helpers = helpers;
    atomic_store(&job.next, 0);
    atomic_store(&job.done, 0);
    atomic_fetch_add(&job.seq, 1);                       // even: published
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&sleep_lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&sleep_lock);
    }
    inside_job = 1;
    run_iterations();
    inside_job = 0;
    wait_until_zero(&job.done, iterations);
    pthread_mutex_unlock(&submit_lock);
}

void dg_set_spin_microseconds(long us) { atomic_store(&spin_ns, (us < 0 ? 0 : us) * 1000); }

long dg_spin_microseconds(void) { return spin_budget() / 1000; }
