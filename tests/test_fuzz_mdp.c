/*  test_fuzz_mdp.c: the fuzz_mdp libFuzzer target, run under gcc in ctest.

    Target: the MDP frame handling: mdp_body_peek, mdp_capacity_parse and the broker actor.
    fuzz/fuzz_mdp.c is compiled in here with LLVMFuzzerTestOneInput renamed;
    sm_fuzz_replay runs it on every file of fuzz/corpus/mdp/ and then on
    random mutations for 15 s (SPLITMESH_FUZZ_SECONDS overrides). The
    target aborts when a property fails, which fails this test; under
    -DSPLITMESH_SANITIZE=ON ASan and UBSan also turn any bad read into a
    failure. fuzz/README.md says why CI does this instead of libFuzzer.
*/
#include <criterion/criterion.h>
#include "sm_fuzz.h"

#define LLVMFuzzerTestOneInput s_fuzz_mdp_one
int s_fuzz_mdp_one (const uint8_t *data, size_t size);
#include "../fuzz/fuzz_mdp.c"

Test (fuzz_mdp, corpus_then_mutations, .timeout = 110)
{
    sm_fuzz_stats_t stats;
    int rc = sm_fuzz_replay ("mdp", s_fuzz_mdp_one, 15, 8192, &stats);
    cr_assert_eq (rc, 0, "fuzz/corpus/mdp/ is missing or empty");
    cr_assert_gt (stats.corpus_files, 10, "only %zu corpus files", stats.corpus_files);
    cr_log_info ("fuzz_mdp: %zu corpus files, %llu mutations in %.1f s, no failure",
                 stats.corpus_files, (unsigned long long) stats.mutations, stats.seconds);
    printf ("fuzz_mdp: %zu corpus files, %llu mutations in %.1f s, no failure\n",
            stats.corpus_files, (unsigned long long) stats.mutations, stats.seconds);
}
