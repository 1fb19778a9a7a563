/*  test_gpu.c: the GPU backend's device checks.

    Without a CUDA device (CI, developer laptops) every test skips with the
    reason; on the GPU host they check that the device computes correctly.
*/
#include <criterion/criterion.h>
#include "gpu.h"

Test (gpu, selftest_on_device_or_skip)
{
    char err[256] = "";
    if (gpu_device_count () == 0)
        cr_skip_test ("no CUDA device: GPU tests skipped");
    int rc = gpu_selftest (err, sizeof err);
    cr_assert_eq (rc, 0, "GPU self-test failed: %s", err);
}

Test (gpu, describe_matches_device_count)
{
    char buf[256] = "";
    int rc = gpu_describe (buf, sizeof buf);
    cr_assert_eq (rc == 0, gpu_device_count () > 0,
                  "gpu_describe says %d but device count is %d (%s)",
                  rc, gpu_device_count (), buf);
    cr_assert_neq (buf[0], '\0', "gpu_describe wrote nothing");
}
