/*  main.c: `splitmesh-cloud-target`, the cloud stage [L, N) + head process.

    Parses the common service options plus --split, --ctx, --max-sessions
    and --stage-only (service.h) and runs cloud_target_actor until SIGINT
    or SIGTERM.
*/
#include "cloud_target.h"

int
main (int argc, char **argv)
{
    service_config_t config;
    int rc = service_config_parse (&config, argc, argv, "splitmesh-cloud-target",
                                   SERVICE_OPT_SPLIT | SERVICE_OPT_STAGE, QFMT_W8);
    if (rc)
        return rc == 1? 0: rc;
    return service_main_run (cloud_target_actor, &config, "splitmesh-cloud-target");
}
