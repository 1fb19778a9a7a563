/*  session_store.h: a bounded map from session id to a service's
    per-session state (a KV cache and its bookkeeping), evicting the least
    recently used session when full.

    split-prefix and cloud-target keep one KV cache per generation; memory
    must stay bounded however many clients come and go without closing, so
    the store holds at most max_sessions entries. An evicted session is gone:
    its next request answers 404 "unknown session" and the edge re-prefills.
    Lookups refresh recency. Not thread-safe (one service actor owns it).
*/
#ifndef SPLITMESH_SESSION_STORE_H
#define SPLITMESH_SESSION_STORE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

//  Destroys one stored item and nullifies the pointer.
typedef void (session_store_free_fn) (void **item_p);

typedef struct _session_store_t session_store_t;

//  A store of at most max_sessions (>= 1) items, destroyed with
//  destructor. NULL on bad arguments or no memory. Caller owns the result
//  and must destroy it.
session_store_t *session_store_new (size_t max_sessions, session_store_free_fn *destructor);

//  Destroys every item and the store; sets *self_p to NULL. Safe on NULL.
void session_store_destroy (session_store_t **self_p);

//  The item of session id (and marks it most recently used), or NULL.
void *session_store_lookup (session_store_t *self, const char *id);

//  Stores item under id, taking ownership of it. An item already stored
//  under id is destroyed first. When the store is full, the least recently
//  used session is destroyed and, if evicted is not NULL, its id copied
//  there (evicted_size bytes; "" when none was evicted). Returns 0, or -1
//  when out of memory (the item is then destroyed).
int session_store_insert (session_store_t *self, const char *id, void *item,
                          char *evicted, size_t evicted_size);

//  Destroys the item of id. Returns 1 if there was one, 0 if not.
int session_store_remove (session_store_t *self, const char *id);

size_t session_store_size (const session_store_t *self);
size_t session_store_max (const session_store_t *self);

#ifdef __cplusplus
}
#endif

#endif
