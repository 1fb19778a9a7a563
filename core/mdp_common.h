/*  mdp_common.h: Majordomo Protocol MDP/0.2 (ZeroMQ RFC 18) constants.

    The broker, the client API and the worker API all speak the same frames;
    this header writes them down once. MDP/0.2 framing (no empty delimiter
    before the protocol header; clients use DEALER sockets):

    Client -> broker   REQUEST  ["MDPC02"][0x01][service][body...]
    Broker -> client   PARTIAL  ["MDPC02"][0x02][service][body...]
                       FINAL    ["MDPC02"][0x03][service][body...]
    Worker <-> broker  READY    ["MDPW02"][0x01][service]([capacity map])
                       REQUEST  ["MDPW02"][0x02][client][""][body...]
                       PARTIAL  ["MDPW02"][0x03][client][""][body...]
                       FINAL    ["MDPW02"][0x04][client][""][body...]
                       HEARTBEAT["MDPW02"][0x05]
                       DISCONNECT["MDPW02"][0x06]

    splitmesh extensions (documented in broker.h): READY may carry one more
    frame, a MessagePack map {"v":1,"capacity":N,"cancel":true}, N in
    1..1024; a worker whose map says "cancel":true may get

    Broker -> worker   CANCEL   ["MDPW02"][0x07][client][""]

    when the broker could not deliver a PARTIAL of that request because
    the client has gone away: the worker should stop the work and send its
    FINAL as usual (the broker drops it and frees the slot).
*/
#ifndef MDP_COMMON_H_INCLUDED
#define MDP_COMMON_H_INCLUDED

#include <stddef.h>
#include <czmq.h>

#define MDPC_CLIENT         "MDPC02"
#define MDPW_WORKER         "MDPW02"

//  MDP/Client commands (one byte on the wire)
#define MDPC_REQUEST        0x01
#define MDPC_PARTIAL        0x02
#define MDPC_FINAL          0x03

//  MDP/Worker commands (one byte on the wire)
#define MDPW_READY          0x01
#define MDPW_REQUEST        0x02
#define MDPW_PARTIAL        0x03
#define MDPW_FINAL          0x04
#define MDPW_HEARTBEAT      0x05
#define MDPW_DISCONNECT     0x06
#define MDPW_CANCEL         0x07        //  splitmesh extension, see above

//  Limits the broker and the APIs enforce on what arrives from the wire.
#define MDP_SERVICE_MAX     255         //  bytes in a service name
#define MDP_SESSION_MAX     64          //  bytes in a session id
#define MDP_CAPACITY_MAX    1024        //  requests outstanding per worker
#define MDP_SCHEMA_VERSION  1           //  highest body schema version known

//  Defaults (RFC 18 and the Guide's Paranoid Pirate values)
#define MDP_HEARTBEAT_DEFAULT       2500    //  msecs between heartbeats
#define MDP_LIVENESS_DEFAULT        3       //  missed heartbeats = dead peer
#define MDP_RECONNECT_DEFAULT       250     //  first back-off, msecs
#define MDP_RECONNECT_MAX_DEFAULT   8000    //  back-off ceiling, msecs

//  Names for logs; index by command byte, NULL where no command exists.
static inline const char *
mdpc_command_name (int cmd)
{
    static const char *names [] = { NULL, "REQUEST", "PARTIAL", "FINAL" };
    return cmd > 0 && cmd < 4? names [cmd]: "UNKNOWN";
}

static inline const char *
mdpw_command_name (int cmd)
{
    static const char *names [] = {
        NULL, "READY", "REQUEST", "PARTIAL", "FINAL", "HEARTBEAT", "DISCONNECT", "CANCEL"
    };
    return cmd > 0 && cmd < 8? names [cmd]: "UNKNOWN";
}

//  Prepends the MDPW02 header to msg, which then reads
//  ["MDPW02"][command]([client][""])[body...]: the framing both the broker
//  (before it adds the worker's identity) and the worker API send.
//  client may be NULL (READY, HEARTBEAT, DISCONNECT).
static inline void
mdpw_push_header (zmsg_t *msg, int command, zframe_t *client)
{
    if (client) {
        zmsg_pushmem (msg, "", 0);
        zmsg_pushmem (msg, zframe_data (client), zframe_size (client));
    }
    uint8_t cmd = (uint8_t) command;
    zmsg_pushmem (msg, &cmd, 1);
    zmsg_pushstr (msg, MDPW_WORKER);
}

#endif
