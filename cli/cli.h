/*  cli.h: the subcommands of the `splitmesh` command.

    Each returns the process exit status: 0 ok, 1 runtime failure, 2 usage.
    argv[0] is the subcommand's own name.
*/
#ifndef SPLITMESH_CLI_H
#define SPLITMESH_CLI_H

//  splitmesh health: container health probe, MDP MMI or HTTP (cmd_health.c).
int cmd_health (int argc, char **argv);

//  cmd_keygen.c: writes a CurveZMQ key pair (zcert format) for crypt-proxy.
int cmd_keygen (int argc, char **argv);

//  splitmesh tiny-model: writes a tiny random-weight llama GGUF (cmd_tiny_model.c).
int cmd_tiny_model (int argc, char **argv);

#endif
