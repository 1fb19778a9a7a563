/*  main.c: `splitmesh-split-prefix`, the device stage [0, L) process.

    Parses the common service options plus --split, --ctx, --max-sessions
    and --act-dtype (service.h) and runs split_prefix_actor until SIGINT or
    SIGTERM.
*/
#include "split_prefix.h"

int
main (int argc, char **argv)
{
    service_config_t config;
    int rc = service_config_parse (&config, argc, argv, "splitmesh-split-prefix",
                                   SERVICE_OPT_SPLIT | SERVICE_OPT_ACT_DTYPE, QFMT_W8);
    if (rc)
        return rc == 1? 0: rc;
    return service_main_run (split_prefix_actor, &config, "splitmesh-split-prefix");
}
