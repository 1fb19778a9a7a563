/*  sm_fuzz.h: replays a libFuzzer target's committed corpus, then random
    mutations of it, inside a Criterion test (gcc, no libFuzzer needed).

    CI builds with gcc, and libFuzzer is part of clang; the fuzz_* ctests
    therefore call the very same LLVMFuzzerTestOneInput (fuzz/fuzz_<name>.c
    compiled into the test with the symbol renamed) on every corpus file and
    then on mutations (bit flips, byte overwrites, inserts, deletes,
    truncations, splices of two corpus files, interesting integers) for a
    time budget. Properties inside the target abort; Criterion reports the
    crash. The input that crashed is written to fuzz-<name>-crash.bin in
    the working directory before the signal is re-raised.

    Budget: SPLITMESH_FUZZ_SECONDS (default: the argument). Seed:
    SPLITMESH_FUZZ_SEED (default: time), printed so a failure can be replayed.
    Under -DSPLITMESH_SANITIZE=ON the same test runs with ASan and UBSan.
*/
#ifndef SM_FUZZ_H_INCLUDED
#define SM_FUZZ_H_INCLUDED
#include <stddef.h>
#include <stdint.h>

typedef int (sm_fuzz_fn) (const uint8_t *data, size_t size);

typedef struct {
    size_t corpus_files;        //  files replayed
    uint64_t mutations;         //  mutated inputs run
    double seconds;             //  wall time spent
} sm_fuzz_stats_t;

//  Replays fuzz/corpus/<name>/ (under SPLITMESH_SOURCE_DIR) through fn, then
//  mutations for `seconds` (capped at max_len bytes per input). Returns 0, or
//  -1 when the corpus directory is missing or empty (stats filled either way).
int
    sm_fuzz_replay (const char *name, sm_fuzz_fn *fn, double seconds,
                    size_t max_len, sm_fuzz_stats_t *stats);

#endif
