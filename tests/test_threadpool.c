/*  test_threadpool.c: the fork-join pool runs every ith exactly once per job.

    Covers 1..4 threads, thousands of back-to-back jobs (the hot spinning
    path), jobs spaced out past the spin budget (the futex sleep/wake path),
    visibility of the workers' writes to the caller, and bad arguments.
*/
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include "threadpool.h"

//  Asserts without reporting passes: ctest runs with --full-stats, where
//  every passing cr_assert is a message to the runner, too slow in loops.
#define CHECK(cond, ...) do { if (!(cond)) cr_assert_fail (__VA_ARGS__); } while (0)

#define MAX_T 8

typedef struct {
    atomic_int calls[MAX_T];    //  calls per ith in this job
    int nth_seen[MAX_T];        //  nth each ith was given
    long data[MAX_T * 16];      //  written by workers, read by the caller
    int round;                  //  job number, checked by the caller
} counts_t;

static void
s_count (void *arg, int ith, int nth)
{
    counts_t *c = (counts_t *) arg;
    atomic_fetch_add (&c->calls[ith], 1);
    c->nth_seen[ith] = nth;
    //  Plain writes: the pool must publish them to the caller.
    for (int i = 0; i < 16; i++)
        c->data[ith * 16 + i] = (long) c->round * 1000 + ith * 16 + i;
}

static void
s_check_rounds (threadpool_t *pool, int n, int rounds)
{
    counts_t c;
    for (int r = 0; r < rounds; r++) {
        memset (&c, 0, sizeof c);
        c.round = r;
        threadpool_run (pool, s_count, &c);
        for (int i = 0; i < MAX_T; i++) {
            CHECK (atomic_load (&c.calls[i]) == (i < n ? 1 : 0),
                   "round %d, %d threads: ith %d called %d times", r, n, i,
                   atomic_load (&c.calls[i]));
            if (i < n) {
                CHECK (c.nth_seen[i] == n, "ith %d saw nth %d, not %d", i, c.nth_seen[i], n);
                for (int k = 0; k < 16; k++)
                    CHECK (c.data[i * 16 + k] == (long) r * 1000 + i * 16 + k,
                           "write of ith %d not visible after run", i);
            }
        }
    }
}

Test (threadpool, every_ith_once_many_runs)
{
    for (int n = 1; n <= 4; n++) {
        threadpool_t *pool = threadpool_new (n);
        cr_assert_not_null (pool);
        cr_assert_eq (threadpool_size (pool), n);
        s_check_rounds (pool, n, 3000);
        threadpool_destroy (&pool);
        cr_assert_null (pool);
    }
}

Test (threadpool, futex_path_when_spin_is_zero)
{
    //  With no spin budget every wait parks on the futex: exercises the
    //  sleeper count and the wake on both sides.
    setenv ("SPLITMESH_SPIN_US", "0", 1);
    for (int n = 2; n <= 4; n++) {
        threadpool_t *pool = threadpool_new (n);
        cr_assert_not_null (pool);
        s_check_rounds (pool, n, 500);
        threadpool_destroy (&pool);
    }
}

Test (threadpool, wakes_after_idle_longer_than_spin)
{
    setenv ("SPLITMESH_SPIN_US", "50", 1);
    threadpool_t *pool = threadpool_new (3);
    cr_assert_not_null (pool);
    for (int i = 0; i < 20; i++) {
        struct timespec ts = { 0, 2 * 1000 * 1000 };       //  2 ms > 50 us spin
        nanosleep (&ts, NULL);
        s_check_rounds (pool, 3, 1);
    }
    threadpool_destroy (&pool);
}

typedef struct {
    long *sums;                 //  one slot per ith
    int n;                      //  elements to sum
} sum_job_t;

static void
s_partial_sum (void *arg, int ith, int nth)
{
    sum_job_t *job = (sum_job_t *) arg;
    long s = 0;
    for (int i = ith; i < job->n; i += nth)
        s += i;
    job->sums[ith] = s;
}

Test (threadpool, split_work_sums_correctly)
{
    threadpool_t *pool = threadpool_new (4);
    cr_assert_not_null (pool);
    long sums[4];
    for (int n = 0; n < 200; n += 7) {
        sum_job_t job = { sums, n };
        threadpool_run (pool, s_partial_sum, &job);
        long total = 0;
        for (int i = 0; i < 4; i++)
            total += sums[i];
        CHECK (total == (long) n * (n - 1) / 2, "sum of 0..%d is %ld", n - 1, total);
    }
    threadpool_destroy (&pool);
}

Test (threadpool, null_pool_runs_on_caller)
{
    counts_t c;
    memset (&c, 0, sizeof c);
    threadpool_run (NULL, s_count, &c);
    cr_assert_eq (atomic_load (&c.calls[0]), 1);
    cr_assert_eq (c.nth_seen[0], 1);
    cr_assert_eq (atomic_load (&c.calls[1]), 0);
    cr_assert_eq (threadpool_size (NULL), 1);
}

Test (threadpool, bad_args)
{
    cr_assert_null (threadpool_new (0));
    cr_assert_null (threadpool_new (-3));
    cr_assert_null (threadpool_new (THREADPOOL_MAX_THREADS + 1));
    threadpool_t *pool = NULL;
    threadpool_destroy (&pool);         //  harmless on NULL
    cr_assert_null (pool);
    pool = threadpool_new (2);
    threadpool_destroy (&pool);
    threadpool_destroy (&pool);         //  and twice
    cr_assert_null (pool);
}

typedef struct {
    atomic_int next;            //  next item to claim
    int n_items;                //  items in all
    unsigned char *done;        //  per item: times processed
    atomic_int calls[MAX_T];    //  calls per ith
} shared_job_t;

static void
s_claim_items (void *arg, int ith, int nth)
{
    shared_job_t *job = (shared_job_t *) arg;
    atomic_fetch_add (&job->calls[ith], 1);
    for (int i = atomic_fetch_add (&job->next, 1); i < job->n_items; i = atomic_fetch_add (&job->next, 1))
        job->done[i]++;
}

//  Shared jobs: every item is processed exactly once whoever runs, the
//  caller always runs, no ith runs twice; interleaved with plain jobs.
static void
s_check_shared (int n, int rounds)
{
    threadpool_t *pool = threadpool_new (n);
    cr_assert_not_null (pool);
    unsigned char done[257];
    long worker_calls = 0;
    for (int r = 0; r < rounds; r++) {
        shared_job_t job = { .n_items = 1 + r % 257, .done = done };
        atomic_init (&job.next, 0);
        for (int i = 0; i < MAX_T; i++)
            atomic_init (&job.calls[i], 0);
        memset (done, 0, sizeof done);
        threadpool_run_shared (pool, s_claim_items, &job);
        for (int i = 0; i < job.n_items; i++)
            CHECK (done[i] == 1, "round %d: item %d processed %d times", r, i, done[i]);
        CHECK (atomic_load (&job.calls[0]) == 1, "caller ran %d times", atomic_load (&job.calls[0]));
        for (int i = 1; i < MAX_T; i++) {
            int c = atomic_load (&job.calls[i]);
            CHECK (c <= (i < n ? 1 : 0), "round %d: ith %d ran %d times", r, i, c);
            worker_calls += c;
        }
        if (r % 10 == 0)
            s_check_rounds (pool, n, 1);       //  a plain job in between
    }
    threadpool_destroy (&pool);
}

Test (threadpool, shared_jobs_claim_every_item_once)
{
    for (int n = 1; n <= 4; n++)
        s_check_shared (n, 2000);
}

Test (threadpool, shared_jobs_oversubscribed)
{
    //  Eight threads on this machine's few CPUs: workers often miss jobs,
    //  which must never lose or repeat work.
    s_check_shared (8, 1000);
}

Test (threadpool, shared_null_pool_runs_on_caller)
{
    unsigned char done[5] = { 0 };
    shared_job_t job = { .n_items = 5, .done = done };
    atomic_init (&job.next, 0);
    threadpool_run_shared (NULL, s_claim_items, &job);
    for (int i = 0; i < 5; i++)
        cr_assert_eq (done[i], 1);
}

Test (threadpool, two_pools_side_by_side)
{
    //  Two pools in one process (a draft model's beside a target stage's):
    //  together they may exceed the CPUs, and jobs alternate between them.
    threadpool_t *a = threadpool_new (2), *b = threadpool_new (3);
    cr_assert (a && b);
    for (int r = 0; r < 300; r++) {
        s_check_rounds (a, 2, 1);
        s_check_rounds (b, 3, 1);
    }
    threadpool_destroy (&a);
    s_check_rounds (b, 3, 200);     //  back to one pool
    threadpool_destroy (&b);
}
