/*  test_model_run.c: the `splitmesh run` and `splitmesh perplexity` commands as processes.

    Bad flags are usage errors (exit 2, a message naming the flag); a
    missing model is a runtime error (exit 1); with the real model (skipped
    when absent) greedy generation is deterministic and answers a simple
    prompt, sampling is reproducible by seed, and the statistics reach
    stderr, not stdout.
*/
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int status;                 //  exit status, or -1 when killed by the timeout
    char out[16384];            //  stdout
    char err[16384];            //  stderr
} s_result_t;

static const char *
s_bin (void)
{
    static char path[1024];
    const char *dir = getenv ("SPLITMESH_BIN_DIR");
    snprintf (path, sizeof path, "%s/splitmesh", dir ? dir : SPLITMESH_BIN_DIR);
    return path;
}

static const char *
s_model_or_skip (void)
{
    static char path[1024];
    const char *env = getenv ("SPLITMESH_MODEL");
    if (env && *env)
        snprintf (path, sizeof path, "%s", env);
    else
        snprintf (path, sizeof path, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", SPLITMESH_SOURCE_DIR);
    if (access (path, R_OK))
        cr_skip_test ("model file %s absent (set SPLITMESH_MODEL or run scripts/fetch-model.sh)", path);
    return path;
}

static void
s_slurp (int fd, char *buf, size_t size)
{
    size_t n = 0;
    ssize_t r;
    while (n + 1 < size && (r = read (fd, buf + n, size - 1 - n)) > 0)
        n += (size_t) r;
    buf[n] = 0;
}

//  Runs splitmesh with argv (NULL-terminated, argv[0] ignored), killing it
//  after timeout_s seconds. Output is captured through temp files so a
//  chatty child cannot block on a full pipe.
static s_result_t *
s_run (int timeout_s, const char *const *args)
{
    s_result_t *r = calloc (1, sizeof *r);
    char out_path[] = "/tmp/splitmesh_run_out_XXXXXX", err_path[] = "/tmp/splitmesh_run_err_XXXXXX";
    int out_fd = mkstemp (out_path), err_fd = mkstemp (err_path);
    cr_assert (out_fd >= 0 && err_fd >= 0);
    //  posix_spawn, not fork: the child must not run any of the test
    //  runner's handlers before it becomes splitmesh.
    const char *argv[64];
    int n = 0;
    argv[n++] = s_bin ();
    for (int i = 1; args[i] && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init (&fa);
    posix_spawn_file_actions_adddup2 (&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2 (&fa, err_fd, 2);
    pid_t pid;
    extern char **environ;
    int rc = posix_spawn (&pid, argv[0], &fa, NULL, (char *const *) argv, environ);
    posix_spawn_file_actions_destroy (&fa);
    cr_assert_eq (rc, 0, "cannot start %s", argv[0]);
    int status = 0;
    time_t deadline = time (NULL) + timeout_s;
    pid_t w;
    while ((w = waitpid (pid, &status, WNOHANG)) == 0 && time (NULL) < deadline)
        usleep (20000);
    if (w == 0) {
        kill (pid, SIGKILL);
        waitpid (pid, &status, 0);
        r->status = -1;
    }
    else
        r->status = WIFEXITED (status) ? WEXITSTATUS (status) : -1;
    lseek (out_fd, 0, SEEK_SET);
    lseek (err_fd, 0, SEEK_SET);
    s_slurp (out_fd, r->out, sizeof r->out);
    s_slurp (err_fd, r->err, sizeof r->err);
    close (out_fd);
    close (err_fd);
    unlink (out_path);
    unlink (err_path);
    return r;
}

#define RUN(timeout, ...) s_run (timeout, (const char *const[]) { "", __VA_ARGS__, NULL })

Test (model_run, bad_flags_are_usage_errors)
{
    s_result_t *r = RUN (20, "run", "-p", "x", "-n", "12x");
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "bad value '12x' for --tokens"), "%s", r->err);
    r = RUN (20, "run", "-p", "x", "--format", "w5");
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "unknown format 'w5'"), "%s", r->err);
    r = RUN (20, "run", "-p", "x", "--top-p", "1.5");
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "--top-p"), "%s", r->err);
    r = RUN (20, "run", "-p", "x", "--bogus");
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "unknown option '--bogus'"), "%s", r->err);
    r = RUN (20, "run", "-n", "3");
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "-p PROMPT is required"), "%s", r->err);
    r = RUN (20, "run", "-p", "x", "--threads");
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "needs a value"), "%s", r->err);
    r = RUN (20, "perplexity", "--format", "f32");
    cr_assert_eq (r->status, 2);
    cr_assert (strstr (r->err, "--file is required"), "%s", r->err);
}

Test (model_run, missing_model_is_runtime_error)
{
    s_result_t *r = RUN (20, "run", "-p", "x", "--model", "/nonexistent/model.gguf");
    cr_assert_eq (r->status, 1, "status %d: %s", r->status, r->err);
    cr_assert (strstr (r->err, "/nonexistent/model.gguf"), "%s", r->err);
    cr_assert_eq (r->out[0], 0, "nothing on stdout");
}

Test (model_run, greedy_answers_and_is_deterministic, .timeout = 120)
{
    const char *model = s_model_or_skip ();
    s_result_t *a = RUN (60, "run", "--model", model, "-p", "The capital of France is", "-n", "8",
                         "--format", "w4", "--threads", "2");
    cr_assert_eq (a->status, 0, "%s", a->err);
    cr_assert (strstr (a->out, "Paris"), "stdout: '%s'", a->out);
    cr_assert (strstr (a->err, "prompt tokens: 5"), "%s", a->err);
    cr_assert (strstr (a->err, "decode") && strstr (a->err, "tok/s"), "%s", a->err);
    cr_assert_null (strstr (a->out, "tok/s"), "stats must not reach stdout");
    s_result_t *b = RUN (60, "run", "--model", model, "-p", "The capital of France is", "-n", "8",
                         "--format", "w4", "--threads", "1");
    cr_assert_eq (b->status, 0, "%s", b->err);
    cr_assert_str_eq (a->out, b->out, "1 and 2 threads differ");
}

Test (model_run, chat_and_seeded_sampling, .timeout = 120)
{
    const char *model = s_model_or_skip ();
    s_result_t *c = RUN (60, "run", "--model", model, "--chat", "-p", "What is 2+2?", "-n", "24");
    cr_assert_eq (c->status, 0, "%s", c->err);
    cr_assert (strstr (c->out, "4"), "chat answer: '%s'", c->out);
    cr_assert_null (strstr (c->out, "<|im_end|>"), "end-of-turn token must stop, not print");
    const char *args[] = { "", "run", "--model", model, "-p", "Once upon a time", "-n", "24",
                           "--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--seed", "7", NULL };
    s_result_t *a = s_run (60, args), *b = s_run (60, args);
    cr_assert_eq (a->status, 0, "%s", a->err);
    cr_assert_str_eq (a->out, b->out, "same seed, different text");
    args[15] = "8";
    s_result_t *d = s_run (60, args);
    cr_assert_eq (d->status, 0, "%s", d->err);
    cr_assert_str_neq (a->out, d->out, "seeds 7 and 8 gave the same 24 tokens");
}
