/*  link_proxy.h: a ZeroMQ proxy that carries messages over an emulated link.

    It binds a ROUTER (the near end, where clients or workers connect as if
    it were the far endpoint) and opens one DEALER per near-end peer to the
    far endpoint, so each peer keeps its own connection and the far side
    sees distinct peers, as over a real network. Every message waits for
    its arrival time from link_emu before it is passed on. MDP traffic
    passes through unchanged: the proxy does not look inside messages.

    Runs as a CZMQ actor; start it with link_proxy_new, which reports a
    bad endpoint or bad parameters as an error instead of a dead actor:
        link_proxy_args_t args = { "ipc:///tmp/near", "tcp://cloud:5555", params };
        zactor_t *proxy = link_proxy_new (&args, err, sizeof err);
    Commands on the pipe:
      "STATUS" -> replies "OK" or "ERROR" + reason
      "STATS"  -> replies "STATS" + 6 uint64 frames as link_stats_t
      "$TERM"  -> stops
*/
#ifndef SPLITMESH_LINK_PROXY_H
#define SPLITMESH_LINK_PROXY_H

#include <czmq.h>
#include "link_emu.h"

typedef struct {
    const char *near_endpoint;  //  bound: peers on this side connect here
    const char *far_endpoint;   //  connected: the service across the link
    link_params_t params;       //  the emulated link
    int max_peers;              //  0 = 1024; beyond it the idlest peer is dropped
} link_proxy_args_t;

void link_proxy_actor (zsock_t *pipe, void *args);

//  Starts the actor and waits until it is bound. Returns NULL with the
//  reason in err when it cannot start. Caller owns the actor and ends it
//  with zactor_destroy.
zactor_t *link_proxy_new (const link_proxy_args_t *args, char *err, size_t err_size);

//  Asks a running proxy for its counters. Returns 0, or -1 on timeout.
int link_proxy_stats (zactor_t *proxy, link_stats_t *stats);

#endif
