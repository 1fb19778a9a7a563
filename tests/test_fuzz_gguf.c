/*  test_fuzz_gguf.c: the fuzz_gguf libFuzzer target, run under gcc in ctest.

    Target: the GGUF reader and writer (core/gguf.c, core/gguf_write.c).
    fuzz/fuzz_gguf.c is compiled in here with LLVMFuzzerTestOneInput renamed;
    sm_fuzz_replay runs it on every file of fuzz/corpus/gguf/ and then on
    random mutations for 20 s (SPLITMESH_FUZZ_SECONDS overrides). The
    target aborts when a property fails, which fails this test; under
    -DSPLITMESH_SANITIZE=ON ASan and UBSan also turn any bad read into a
    failure. fuzz/README.md says why CI does this instead of libFuzzer.
*/
#include <criterion/criterion.h>
#include "sm_fuzz.h"

#define LLVMFuzzerTestOneInput s_fuzz_gguf_one
int s_fuzz_gguf_one (const uint8_t *data, size_t size);
#include "../fuzz/fuzz_gguf.c"

Test (fuzz_gguf, corpus_then_mutations, .timeout = 110)
{
    sm_fuzz_stats_t stats;
    int rc = sm_fuzz_replay ("gguf", s_fuzz_gguf_one, 20, 65536, &stats);
    cr_assert_eq (rc, 0, "fuzz/corpus/gguf/ is missing or empty");
    cr_assert_gt (stats.corpus_files, 10, "only %zu corpus files", stats.corpus_files);
    cr_log_info ("fuzz_gguf: %zu corpus files, %llu mutations in %.1f s, no failure",
                 stats.corpus_files, (unsigned long long) stats.mutations, stats.seconds);
    printf ("fuzz_gguf: %zu corpus files, %llu mutations in %.1f s, no failure\n",
            stats.corpus_files, (unsigned long long) stats.mutations, stats.seconds);
}
