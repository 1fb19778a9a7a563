/*  cli.h: the subcommands of the `splitmesh` command.

    Each returns the process exit status: 0 ok, 1 runtime failure, 2 usage.
    argv[0] is the subcommand's own name.
*/
#ifndef SPLITMESH_CLI_H
#define SPLITMESH_CLI_H

//  splitmesh down: stops the mesh `splitmesh up` started (cmd_down.c).
int cmd_down (int argc, char **argv);
//  splitmesh generate: one request to the running mesh (cmd_generate.c).
int cmd_generate (int argc, char **argv);
//  splitmesh health: container health probe, MDP MMI or HTTP (cmd_health.c).
int cmd_health (int argc, char **argv);

//  cmd_keygen.c: writes a CurveZMQ key pair (zcert format) for crypt-proxy.
int cmd_keygen (int argc, char **argv);

//  splitmesh perplexity: perplexity of a weight format on a text file.
int cmd_perplexity (int argc, char **argv);
//  splitmesh privacy-audit: token recovery from link activations (cmd_privacy_audit.c).
int cmd_privacy_audit (int argc, char **argv);
//  splitmesh run: single-process generation, the reference path.
int cmd_run (int argc, char **argv);
//  splitmesh quantize: mixed-precision GGUF under a byte budget (cmd_quantize.c).
int cmd_quantize (int argc, char **argv);

//  splitmesh tiny-model: writes a tiny random-weight llama GGUF (cmd_tiny_model.c).
int cmd_tiny_model (int argc, char **argv);
//  splitmesh up: starts the local mesh as daemons (cmd_up.c, mesh_state.h).
int cmd_up (int argc, char **argv);

//  splitmesh tokenize: a model's tokenizer from the command line (cmd_tokenize.c).
int cmd_tokenize (int argc, char **argv);

#endif
