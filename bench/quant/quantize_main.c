/*  quantize_main.c: `splitmesh quantize` as a standalone program that links
    only the engine (no ZeroMQ), so the sensitivity measurement can run on a
    bigger machine than the one that builds it. Same options as the command.
*/
#include "cli.h"

int
main (int argc, char **argv)
{
    return cmd_quantize (argc, argv);
}
