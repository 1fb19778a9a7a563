/*  mdp_session.h: a bounded peek into an MDP request body for the broker.

    The broker treats request bodies as opaque, except for one thing: a body
    whose first frame is a MessagePack map may carry a string key "session"
    that pins the request to the worker holding that session (session-affine
    routing). This module reads that key without trusting any length on the
    wire: every count and size is checked against the bytes that remain,
    nesting is bounded, and nothing is allocated. While it walks the map it
    also checks the schema version "v" when present, so that a body from a
    newer or broken client gets a clear 400 from the broker instead of
    reaching a worker.

    Bodies that are not MessagePack maps (raw bytes, arrays, empty frames)
    are "opaque": plain RFC 18 clients keep working and get LRU routing.
*/
#ifndef MDP_SESSION_H_INCLUDED
#define MDP_SESSION_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MDP_BODY_DEPTH_MAX  32      //  nesting levels a body may use

//  Result codes of mdp_body_peek
#define MDP_BODY_MAP         0      //  a well-formed map (session may be "")
#define MDP_BODY_OPAQUE      1      //  not a MessagePack map: route by LRU
#define MDP_BODY_MALFORMED  -2      //  a map that is broken: answer 400

//  Peeks at one body frame of `size` bytes. On MDP_BODY_MAP writes the
//  session id (NUL-terminated, "" if the map has none) into `session`, which
//  must hold MDP_SESSION_MAX + 1 bytes. On MDP_BODY_MALFORMED writes a
//  one-line reason into `err` (err_size bytes, may be 0). Never allocates,
//  never reads outside [data, data + size).
int
    mdp_body_peek (const uint8_t *data, size_t size,
                   char *session, char *err, size_t err_size);

//  Parses the READY capacity frame of the splitmesh extension, a map
//  {"v":1,"capacity":N} with N in 1..MDP_CAPACITY_MAX. Returns 0 and sets
//  *capacity, or MDP_BODY_MALFORMED with a reason in err.
int
    mdp_capacity_parse (const uint8_t *data, size_t size, int *capacity,
                        char *err, size_t err_size);

//  The same frame with the cancel extension (mdp_common.h): also sets
//  *cancel to the value of its optional "cancel" key (false when absent).
int
    mdp_ready_parse (const uint8_t *data, size_t size, int *capacity, bool *cancel,
                     char *err, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif
