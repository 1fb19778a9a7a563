/*  main.c: `splitmesh-tokenizer`, the tokenizer service process.

    Parses the common service options (service.h) and runs
    tokenizer_service_actor until SIGINT or SIGTERM.
*/
#include "tokenizer_service.h"

int
main (int argc, char **argv)
{
    service_config_t config;
    int rc = service_config_parse (&config, argc, argv, "splitmesh-tokenizer", 0, QFMT_F32);
    if (rc)
        return rc == 1? 0: rc;
    return service_main_run (tokenizer_service_actor, &config, "splitmesh-tokenizer");
}
