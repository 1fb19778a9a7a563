/*  threadpool.c: fork-join pool with spinning workers and a futex fallback.

    Why not a mutex + condvar per job: a decode step dispatches ~200 jobs of
    10-50 us each, and a condvar wake costs a syscall plus a scheduler round
    trip (5-20 us) per worker per job. Here a job is published by changing
    one 32-bit state word that hot workers spin on; the caller then spins
    until the workers are done. Only after SPIN_US microseconds without work
    does a thread park in futex(2) on the same word, and a sleeper count
    tells the publisher whether a wake syscall is needed at all.

    The state word: bits 11-31 job sequence number, bit 10 "closed", bits
    0-9 workers that joined the current job and have not left (at most 255).
    The sequence wraps after 2M jobs; a worker would have to sleep through
    exactly a multiple of that many jobs to confuse two of them. A worker
    that sees a new sequence joins with a CAS (only while the job is open),
    then reads fn/arg, so it always runs the job it joined. Two kinds of job:
      - threadpool_run: every worker must join; the caller waits for a
        pending count to reach zero;
      - threadpool_run_shared: the caller closes the job once its own call
        returns and waits only for workers that joined before. A worker the
        OS has not scheduled in time simply misses the job, so a busy or
        oversubscribed machine costs at most the caller's own speed.

    Memory ordering: fn/arg/kind are plain fields written before the seq_cst
    store that opens the job and read after the CAS that joins it; workers'
    writes are published by their seq_cst decrements, which the caller
    reads. The sleeper/waiter flags pair with the futex value check in the
    kernel (Dekker style, all seq_cst), so a wake is never lost.
*/
#include "threadpool.h"

#include <assert.h>
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

#define ST_ACTIVE_MASK  0x3ffu
#define ST_CLOSED       0x400u
#define ST_SEQ_SHIFT    11
#define ST_SEQ(v)       ((v) >> ST_SEQ_SHIFT)

typedef enum { JOB_ALL, JOB_SHARED, JOB_STOP } s_kind_t;

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
    unsigned seq;               //  sequence of the last job published
    threadpool_fn *fn;          //  current job, valid once joined
    void *arg;                  //  its argument
    s_kind_t kind;              //  its kind
    alignas (64) atomic_uint state;     //  seq | closed | active, see above
    atomic_int sleepers;                //  threads parked on state
    alignas (64) atomic_uint pending;   //  JOB_ALL: workers not yet done
    atomic_int caller_waiting;          //  caller parked on pending/state
    alignas (64) char pad_;             //  keeps the counters off others' lines
};

//  Threads of all live pools in this process, and the CPUs online: when
//  the pools together have more threads than CPUs (say a draft model's
//  pool beside a target stage's), spinning would steal the CPU a waited-for
//  thread needs, so every pool parks at once instead.
static atomic_int s_live_threads;
static atomic_long s_n_cpus;

static long
s_spin_budget (const threadpool_t *self)
{
    return atomic_load_explicit (&s_live_threads, memory_order_relaxed)
           > atomic_load_explicit (&s_n_cpus, memory_order_relaxed) ? 0 : self->spin_ns;
}

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

//  Waits until done (*addr) is true: spins for spin_ns, then parks on the
//  futex with *flag raised so the writer knows to wake us. Returns the
//  value that satisfied it.
static unsigned
s_wait_until (atomic_uint *addr, int (*done) (unsigned v, unsigned ref), unsigned ref,
              atomic_int *flag, long spin_ns)
{
    long start = 0;
    unsigned spins = 0;
    for (;;) {
        unsigned v = atomic_load_explicit (addr, memory_order_acquire);
        if (done (v, ref))
            return v;
        if ((++spins & 63) == 0) {
            long t = s_now_ns ();
            if (start == 0)
                start = t;
            else
            if (t - start > spin_ns) {
                atomic_fetch_add (flag, 1);
                v = atomic_load (addr);
                if (!done (v, ref))
                    s_futex (addr, FUTEX_WAIT_PRIVATE, v);
                atomic_fetch_sub (flag, 1);
                start = 0;
                continue;
            }
        }
        s_cpu_relax ();
    }
}

static int
s_new_seq (unsigned v, unsigned seen)
{
    return ST_SEQ (v) != seen;
}

static int
s_is_zero (unsigned v, unsigned unused)
{
    return v == 0;
}

static int
s_no_active (unsigned v, unsigned unused)
{
    return (v & ST_ACTIVE_MASK) == 0;
}

static void *
s_worker_main (void *args)
{
    s_worker_t *worker = (s_worker_t *) args;
    threadpool_t *self = worker->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned v = s_wait_until (&self->state, s_new_seq, seen, &self->sleepers, s_spin_budget (self));
        //  Join the job we saw, unless it closed (or was replaced) meanwhile.
        for (;;) {
            if (ST_SEQ (v) == seen)
                break;                  //  nothing new after all
            if (v & ST_CLOSED) {
                seen = ST_SEQ (v);      //  missed it: wait for the next one
                break;
            }
            if (atomic_compare_exchange_weak (&self->state, &v, v + 1)) {
                seen = ST_SEQ (v);
                s_kind_t kind = self->kind;
                if (kind == JOB_STOP)
                    return NULL;
                self->fn (self->arg, worker->ith, self->n_threads);
                unsigned left = atomic_fetch_sub (&self->state, 1) - 1;
                if (kind == JOB_ALL) {
                    if (atomic_fetch_sub (&self->pending, 1) == 1
                    &&  atomic_load (&self->caller_waiting) > 0)
                        s_futex (&self->pending, FUTEX_WAKE_PRIVATE, 1);
                }
                else
                if ((left & ST_CLOSED) && (left & ST_ACTIVE_MASK) == 0
                &&  atomic_load (&self->caller_waiting) > 0)
                    //  Sleeping workers share this word: wake them all, they
                    //  re-check their sequence and park again.
                    s_futex (&self->state, FUTEX_WAKE_PRIVATE, INT_MAX);
                break;
            }
        }
    }
}

//  Opens a new job for every worker to see.
static void
s_publish (threadpool_t *self, s_kind_t kind, threadpool_fn *fn, void *arg)
{
    self->fn = fn;
    self->arg = arg;
    self->kind = kind;
    atomic_store_explicit (&self->pending, (unsigned) self->n_threads - 1, memory_order_relaxed);
    self->seq = (self->seq + 1) & (UINT_MAX >> ST_SEQ_SHIFT);
    //  No worker is active here: the previous job's caller waited for them.
    atomic_store (&self->state, self->seq << ST_SEQ_SHIFT);
    if (atomic_load (&self->sleepers) > 0)
        s_futex (&self->state, FUTEX_WAKE_PRIVATE, INT_MAX);
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
    atomic_init (&self->state, 0);
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
    self->spin_ns = spin_us * 1000;
    if (atomic_load (&s_n_cpus) == 0) {
        long n_cpus = sysconf (_SC_NPROCESSORS_ONLN);
        atomic_store (&s_n_cpus, n_cpus > 0 ? n_cpus : 1);
    }
    atomic_fetch_add (&s_live_threads, n_threads);
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
    atomic_fetch_sub (&s_live_threads, self->n_threads);
    if (self->n_started > 0) {
        //  Every worker joins a stop job (it is never closed) and exits.
        s_publish (self, JOB_STOP, NULL, NULL);
        s_futex (&self->state, FUTEX_WAKE_PRIVATE, INT_MAX);
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
    s_publish (self, JOB_ALL, fn, arg);
    fn (arg, 0, self->n_threads);
    s_wait_until (&self->pending, s_is_zero, 0, &self->caller_waiting, s_spin_budget (self));
}

void
threadpool_run_shared (threadpool_t *self, threadpool_fn *fn, void *arg)
{
    assert (fn);
    if (!self || self->n_threads == 1) {
        fn (arg, 0, 1);
        return;
    }
    s_publish (self, JOB_SHARED, fn, arg);
    fn (arg, 0, self->n_threads);
    unsigned v = atomic_fetch_or (&self->state, ST_CLOSED) | ST_CLOSED;
    if ((v & ST_ACTIVE_MASK) != 0)
        s_wait_until (&self->state, s_no_active, 0, &self->caller_waiting, s_spin_budget (self));
}
