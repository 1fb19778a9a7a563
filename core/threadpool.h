/*  threadpool.h: a fork-join pool of hot worker threads for the matmul kernels.

    A decode step runs about two hundred small matmuls back to back, each a
    few tens of microseconds, so the cost of waking workers matters as much as
    the kernels. The pool keeps its workers spinning on a generation counter
    for a short while after each job (so the next job starts within a
    microsecond), then parks them on a futex so an idle process burns no CPU.
    Completion is a counter the caller spins on, with the same futex fallback.
    There is no mutex or condition variable on the job path.
    threadpool_run_shared lets the caller finish a job alone when a worker
    is not running (another process holds its CPU), instead of waiting a
    scheduler time slice for it.

    When the live pools of the process together have more threads than
    there are CPUs, no thread spins: all park at once (SPLITMESH_SPIN_US
    sets the spin budget otherwise, default 300 us).

    One thread at a time may call threadpool_run on a given pool (the engine's
    forward pass); the pool is not re-entrant (fn must not call
    threadpool_run on the same pool).
*/
#ifndef SPLITMESH_THREADPOOL_H
#define SPLITMESH_THREADPOOL_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _threadpool_t threadpool_t;

//  The job signature: fn splits its own work by ith (0..nth-1) and nth.
typedef void (threadpool_fn) (void *arg, int ith, int nth);

//  Creates a pool of n_threads threads in all: the caller of threadpool_run
//  counts as one, so n_threads - 1 workers are started. n_threads < 1 or
//  above THREADPOOL_MAX_THREADS, or a failed thread start, returns NULL.
//  Caller owns the result and must destroy it.
#define THREADPOOL_MAX_THREADS 256
threadpool_t *threadpool_new (int n_threads);

//  Stops and joins the workers, frees the pool and sets *self_p to NULL.
//  A NULL *self_p is a no-op.
void threadpool_destroy (threadpool_t **self_p);

//  Number of threads, the caller included (>= 1).
int threadpool_size (const threadpool_t *self);

//  Runs fn (arg, ith, nth) once on every thread (ith = 0..nth-1; the calling
//  thread is ith 0) and returns when all calls have returned; every write
//  made by fn on any thread is visible to the caller afterwards. A NULL pool
//  runs fn (arg, 0, 1) on the caller.
void threadpool_run (threadpool_t *self, threadpool_fn *fn, void *arg);

//  Like threadpool_run, but fn runs on the caller (ith 0) and on those
//  workers that pick the job up before the caller's own call returns; a
//  worker the OS has not scheduled by then skips it. So fn must take its
//  work from a shared source (an atomic counter of chunks) until none is
//  left, never by ith alone. Returns when every call that started has
//  returned, with their writes visible. On a busy or oversubscribed machine
//  this costs at most what the caller alone would take.
void threadpool_run_shared (threadpool_t *self, threadpool_fn *fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif
