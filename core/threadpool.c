/*  threadpool.c: fork-join pool with spinning workers and a futex fallback.

    Why not a mutex + condvar per job: a decode step dispatches ~200 jobs of
    10-50 us each, and a condvar wake costs a syscall plus a scheduler round
    trip (5-20 us) per worker per job. Here a job is published by bumping a
    generation counter that hot workers spin on; the caller spins on a
    pending counter until every worker has finished. Only after SPIN_US
    microseconds without work does a thread park in futex(2), and a sleeper
    count tells the publisher whether a wake syscall is needed at all.

    Memory ordering: fn/arg are plain fields written before the release (in
    fact seq_cst) increment of gen and read after the acquire load that sees
    it; workers' writes are published by their acq_rel decrement of pending,
    which the caller acquires. The sleeper/waiter flags pair with the futex
    value check in the kernel (Dekker style, all seq_cst), so a wake is never
    lost.
*/
#include "threadpool.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define s_cpu_relax() _mm_pause ()
#elif defined(__aarch64__)
#define s_cpu_relax() __asm__ __volatile__ ("yield" ::: "memory")
#else
#define s_cpu_relax() ((void) 0)
#endif

//  How long a thread spins before parking; SPLITMESH_SPIN_US overrides it.
#define THREADPOOL_SPIN_US_DEFAULT 300

typedef struct {
    threadpool_t *pool;         //  back pointer
    int ith;                    //  this worker's index (1..n-1)
} s_worker_t;

struct _threadpool_t {
    int n_threads;              //  caller included
    long spin_ns;               //  spin budget before futex wait
    pthread_t *threads;         //  n_threads - 1 workers
    s_worker_t *workers;        //  their start arguments
    int n_started;              //  workers actually started (for cleanup)
    threadpool_fn *fn;          //  current job, valid once gen is seen
    void *arg;                  //  its argument
    int stop;                   //  set with the final gen bump
    alignas (64) atomic_uint gen;       //  job generation, bumped per job
    atomic_int sleepers;                //  workers parked on gen
    alignas (64) atomic_uint pending;   //  workers still running this job
    atomic_int caller_waiting;          //  caller parked on pending
    alignas (64) char pad_;             //  keeps the counters off others' lines
};

static long
s_futex (atomic_uint *addr, int op, unsigned val)
{
    return syscall (SYS_futex, (unsigned *) addr, op, val, NULL, NULL, 0);
}

static long
s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (long) ts.tv_sec * 1000000000L + ts.tv_nsec;
}

//  Waits until *addr != val: spins for spin_ns, then parks on the futex with
//  *flag raised so the writer knows to wake us. Returns the new value.
static unsigned
s_wait_change (atomic_uint *addr, unsigned val, atomic_int *flag, long spin_ns)
{
    long start = 0;
    unsigned spins = 0;
    for (;;) {
        unsigned now = atomic_load_explicit (addr, memory_order_acquire);
        if (now != val)
            return now;
        if ((++spins & 63) == 0) {
            long t = s_now_ns ();
            if (start == 0)
                start = t;
            else
            if (t - start > spin_ns) {
                atomic_fetch_add (flag, 1);
                if (atomic_load (addr) == val)
                    s_futex (addr, FUTEX_WAIT_PRIVATE, val);
                atomic_fetch_sub (flag, 1);
                start = 0;
                continue;
            }
        }
        s_cpu_relax ();
    }
}

static void *
s_worker_main (void *args)
{
    s_worker_t *worker = (s_worker_t *) args;
    threadpool_t *self = worker->pool;
    unsigned seen = 0;
    for (;;) {
        seen = s_wait_change (&self->gen, seen, &self->sleepers, self->spin_ns);
        if (self->stop)
            break;
        self->fn (self->arg, worker->ith, self->n_threads);
        if (atomic_fetch_sub (&self->pending, 1) == 1       //  seq_cst: pairs with caller_waiting
        &&  atomic_load (&self->caller_waiting) > 0)
            s_futex (&self->pending, FUTEX_WAKE_PRIVATE, 1);
    }
    return NULL;
}

threadpool_t *
threadpool_new (int n_threads)
{
    if (n_threads < 1 || n_threads > THREADPOOL_MAX_THREADS)
        return NULL;
    threadpool_t *self = (threadpool_t *) aligned_alloc (64, sizeof (threadpool_t));
    if (!self)
        return NULL;
    *self = (threadpool_t) { .n_threads = n_threads };
    atomic_init (&self->gen, 0);
    atomic_init (&self->sleepers, 0);
    atomic_init (&self->pending, 0);
    atomic_init (&self->caller_waiting, 0);
    long spin_us = THREADPOOL_SPIN_US_DEFAULT;
    const char *env = getenv ("SPLITMESH_SPIN_US");
    if (env && *env) {
        char *end;
        long v = strtol (env, &end, 10);
        if (*end == '\0' && v >= 0 && v <= 1000000)
            spin_us = v;
    }
    //  More threads than CPUs: a spinning thread would hold the CPU that the
    //  thread it waits for needs, so park at once instead.
    long n_cpus = sysconf (_SC_NPROCESSORS_ONLN);
    if (n_cpus > 0 && n_threads > n_cpus)
        spin_us = 0;
    self->spin_ns = spin_us * 1000;
    if (n_threads > 1) {
        self->threads = (pthread_t *) calloc ((size_t) n_threads - 1, sizeof (pthread_t));
        self->workers = (s_worker_t *) calloc ((size_t) n_threads - 1, sizeof (s_worker_t));
        if (!self->threads || !self->workers)
            goto fail;
        for (int i = 0; i < n_threads - 1; i++) {
            self->workers[i] = (s_worker_t) { .pool = self, .ith = i + 1 };
            if (pthread_create (&self->threads[i], NULL, s_worker_main, &self->workers[i]) != 0)
                goto fail;
            self->n_started++;
        }
    }
    return self;

fail:
    threadpool_destroy (&self);
    return NULL;
}

void
threadpool_destroy (threadpool_t **self_p)
{
    assert (self_p);
    threadpool_t *self = *self_p;
    if (!self)
        return;
    if (self->n_started > 0) {
        self->stop = 1;
        atomic_fetch_add (&self->gen, 1);
        s_futex (&self->gen, FUTEX_WAKE_PRIVATE, INT_MAX);
        for (int i = 0; i < self->n_started; i++)
            pthread_join (self->threads[i], NULL);
    }
    free (self->threads);
    free (self->workers);
    free (self);
    *self_p = NULL;
}

int
threadpool_size (const threadpool_t *self)
{
    return self ? self->n_threads : 1;
}

void
threadpool_run (threadpool_t *self, threadpool_fn *fn, void *arg)
{
    assert (fn);
    if (!self || self->n_threads == 1) {
        fn (arg, 0, 1);
        return;
    }
    self->fn = fn;
    self->arg = arg;
    atomic_store_explicit (&self->pending, (unsigned) self->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add (&self->gen, 1);           //  seq_cst: publishes fn, arg, pending
    if (atomic_load (&self->sleepers) > 0)
        s_futex (&self->gen, FUTEX_WAKE_PRIVATE, INT_MAX);

    fn (arg, 0, self->n_threads);

    //  Wait for pending to reach zero: spin, then park on it.
    unsigned p = atomic_load_explicit (&self->pending, memory_order_acquire);
    while (p != 0)
        p = s_wait_change (&self->pending, p, &self->caller_waiting, self->spin_ns);
}
