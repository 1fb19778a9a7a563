/*  sm_fuzz.c: corpus replay and mutation for the fuzz_* ctests (sm_fuzz.h). */
#include "sm_fuzz.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint8_t *data;
    size_t size;
} s_input_t;

static const uint8_t *s_current;     //  input being run (for the crash dump)
static size_t s_current_size;
static char s_crash_path [256];

static void
s_on_crash (int sig)
{
    int fd = open (s_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        if (s_current && s_current_size)
            (void) !write (fd, s_current, s_current_size);
        close (fd);
    }
    signal (sig, SIG_DFL);
    raise (sig);
}

static uint64_t s_state;

static uint64_t
s_rand (void)
{
    s_state ^= s_state << 13;
    s_state ^= s_state >> 7;
    s_state ^= s_state << 17;
    return s_state;
}

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
s_load (const char *dir, s_input_t **inputs_p, size_t *count_p)
{
    DIR *d = opendir (dir);
    if (!d)
        return -1;
    s_input_t *inputs = NULL;
    size_t count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir (d))) {
        if (e->d_name [0] == '.')
            continue;
        char path [1024];
        snprintf (path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen (path, "rb");
        if (!f)
            continue;
        fseek (f, 0, SEEK_END);
        long n = ftell (f);
        fseek (f, 0, SEEK_SET);
        if (n < 0 || n > (1 << 22)) {
            fclose (f);
            continue;
        }
        uint8_t *buf = malloc ((size_t) n + 1);
        if (buf && fread (buf, 1, (size_t) n, f) == (size_t) n) {
            if (count == cap) {
                cap = cap? cap * 2: 64;
                inputs = realloc (inputs, cap * sizeof *inputs);
            }
            inputs [count++] = (s_input_t) { buf, (size_t) n };
        }
        else
            free (buf);
        fclose (f);
    }
    closedir (d);
    *inputs_p = inputs;
    *count_p = count;
    return count? 0: -1;
}

static const int64_t s_interesting [] = {
    0, 1, -1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000,
    0x7fffffff, 0x80000000LL, 0xffffffffLL, INT64_MAX, INT64_MIN
};

//  Writes a mutation of src (and maybe other) into out (cap bytes);
//  returns its size.
static size_t
s_mutate (const s_input_t *src, const s_input_t *other, uint8_t *out, size_t cap)
{
    size_t n = src->size < cap? src->size: cap;
    memcpy (out, src->data, n);
    int rounds = 1 + (int) (s_rand () % 4);
    for (int r = 0; r < rounds; r++) {
        size_t at = n? s_rand () % n: 0;
        switch (s_rand () % 8) {
            case 0:             //  flip a bit
                if (n) out [at] ^= (uint8_t) (1u << (s_rand () % 8));
                break;
            case 1:             //  overwrite a byte
                if (n) out [at] = (uint8_t) s_rand ();
                break;
            case 2:             //  insert bytes
                if (n < cap) {
                    size_t k = 1 + s_rand () % 8;
                    if (k > cap - n) k = cap - n;
                    memmove (out + at + k, out + at, n - at);
                    for (size_t i = 0; i < k; i++)
                        out [at + i] = (uint8_t) s_rand ();
                    n += k;
                }
                break;
            case 3:             //  delete bytes
                if (n) {
                    size_t k = 1 + s_rand () % 8;
                    if (k > n - at) k = n - at;
                    memmove (out + at, out + at + k, n - at - k);
                    n -= k;
                }
                break;
            case 4:             //  truncate
                n = at;
                break;
            case 5: {           //  splice: our head, the other's tail
                size_t from = other->size? s_rand () % other->size: 0;
                size_t k = other->size - from;
                if (k > cap - at) k = cap - at;
                memcpy (out + at, other->data + from, k);
                n = at + k;
                break;
            }
            case 6: {           //  an interesting integer, 1/2/4/8 bytes, either order
                int64_t v = s_interesting [s_rand () % (sizeof s_interesting / sizeof s_interesting [0])];
                size_t w = (size_t) 1 << (s_rand () % 4);
                bool big = s_rand () & 1;
                for (size_t i = 0; i < w && at + i < n; i++)
                    out [at + i] = (uint8_t) (v >> (8 * (big? w - 1 - i: i)));
                break;
            }
            default:            //  duplicate a chunk in place
                if (n && n < cap) {
                    size_t k = 1 + s_rand () % 16;
                    if (k > n - at) k = n - at;
                    if (k > cap - n) k = cap - n;
                    memmove (out + at + k, out + at, n - at);
                    n += k;
                }
                break;
        }
    }
    return n;
}

int
sm_fuzz_replay (const char *name, sm_fuzz_fn *fn, double seconds,
                size_t max_len, sm_fuzz_stats_t *stats)
{
    memset (stats, 0, sizeof *stats);
    const char *env = getenv ("SPLITMESH_FUZZ_SECONDS");
    if (env && *env)
        seconds = atof (env);
    env = getenv ("SPLITMESH_FUZZ_SEED");
    uint64_t seed = env && *env? strtoull (env, NULL, 0): (uint64_t) time (NULL) ^ (uint64_t) getpid ();
    s_state = seed? seed: 1;
    const char *root = getenv ("SPLITMESH_SOURCE_DIR");
    char dir [768];
    snprintf (dir, sizeof dir, "%s/fuzz/corpus/%s", root? root: ".", name);
    snprintf (s_crash_path, sizeof s_crash_path, "fuzz-%s-crash.bin", name);
    printf ("sm_fuzz %s: corpus %s, %.0f s of mutations, seed %llu (SPLITMESH_FUZZ_SEED)\n",
            name, dir, seconds, (unsigned long long) seed);
    fflush (stdout);

    s_input_t *inputs = NULL;
    size_t count = 0;
    if (s_load (dir, &inputs, &count) != 0)
        return -1;
    signal (SIGABRT, s_on_crash);
    signal (SIGSEGV, s_on_crash);
    signal (SIGBUS, s_on_crash);
    signal (SIGFPE, s_on_crash);

    double start = s_now ();
    for (size_t i = 0; i < count; i++) {
        s_current = inputs [i].data;
        s_current_size = inputs [i].size;
        fn (inputs [i].data, inputs [i].size);
    }
    stats->corpus_files = count;

    uint8_t *buf = malloc (max_len + 1);
    double end = s_now () + seconds;
    while (s_now () < end) {
        for (int batch = 0; batch < 64; batch++) {
            const s_input_t *a = &inputs [s_rand () % count];
            const s_input_t *b = &inputs [s_rand () % count];
            size_t n = s_mutate (a, b, buf, max_len);
            //  a copy of exactly n bytes, so ASan sees reads past the end
            uint8_t *input = malloc (n? n: 1);
            memcpy (input, buf, n);
            s_current = input;
            s_current_size = n;
            fn (input, n);
            free (input);
            stats->mutations++;
        }
    }
    s_current = NULL;
    signal (SIGABRT, SIG_DFL);
    signal (SIGSEGV, SIG_DFL);
    signal (SIGBUS, SIG_DFL);
    signal (SIGFPE, SIG_DFL);
    free (buf);
    for (size_t i = 0; i < count; i++)
        free (inputs [i].data);
    free (inputs);
    stats->seconds = s_now () - start;
    return 0;
}
