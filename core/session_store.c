/*  session_store.c: LRU-bounded session map (see session_store.h).

    Entries live in a CZMQ hash by id; each carries the tick of its last
    use. Eviction scans for the oldest tick: O(n) but only on inserting into
    a full store, and n is at most a few hundred sessions.
*/
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <czmq.h>
#include "session_store.h"

typedef struct {
    void *item;                 //  owned by the store
    uint64_t tick;              //  last use
} s_entry_t;

struct _session_store_t {
    zhashx_t *entries;          //  id -> s_entry_t *
    size_t max_sessions;        //  capacity
    uint64_t tick;              //  use counter
    session_store_free_fn *destructor;
};

session_store_t *
session_store_new (size_t max_sessions, session_store_free_fn *destructor)
{
    if (max_sessions < 1)
        return NULL;
    session_store_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->entries = zhashx_new ();
    if (!self->entries) {
        free (self);
        return NULL;
    }
    self->max_sessions = max_sessions;
    self->destructor = destructor;
    return self;
}

//  Destroys an entry with this store's item destructor. (zhashx's
//  destructor hook takes no context, so entries are freed here by hand.)
static void
s_destroy_entry (session_store_t *self, s_entry_t *entry)
{
    if (entry->item && self->destructor)
        self->destructor (&entry->item);
    free (entry);
}

void
session_store_destroy (session_store_t **self_p)
{
    assert (self_p);
    session_store_t *self = *self_p;
    if (self) {
        for (s_entry_t *e = (s_entry_t *) zhashx_first (self->entries); e;
             e = (s_entry_t *) zhashx_next (self->entries))
            s_destroy_entry (self, e);
        zhashx_destroy (&self->entries);
        free (self);
        *self_p = NULL;
    }
}

void *
session_store_lookup (session_store_t *self, const char *id)
{
    assert (self);
    s_entry_t *entry = (s_entry_t *) zhashx_lookup (self->entries, id);
    if (!entry)
        return NULL;
    entry->tick = ++self->tick;
    return entry->item;
}

int
session_store_remove (session_store_t *self, const char *id)
{
    assert (self);
    s_entry_t *entry = (s_entry_t *) zhashx_lookup (self->entries, id);
    if (!entry)
        return 0;
    zhashx_delete (self->entries, id);
    s_destroy_entry (self, entry);
    return 1;
}

int
session_store_insert (session_store_t *self, const char *id, void *item,
                      char *evicted, size_t evicted_size)
{
    assert (self);
    if (evicted && evicted_size)
        *evicted = 0;
    session_store_remove (self, id);
    if (zhashx_size (self->entries) >= self->max_sessions) {
        const char *oldest = NULL;
        uint64_t oldest_tick = UINT64_MAX;
        for (s_entry_t *e = (s_entry_t *) zhashx_first (self->entries); e;
             e = (s_entry_t *) zhashx_next (self->entries))
            if (e->tick < oldest_tick) {
                oldest_tick = e->tick;
                oldest = (const char *) zhashx_cursor (self->entries);
            }
        if (oldest) {
            char copy [256];
            snprintf (copy, sizeof copy, "%s", oldest);
            if (evicted && evicted_size)
                snprintf (evicted, evicted_size, "%s", copy);
            session_store_remove (self, copy);
        }
    }
    s_entry_t *entry = calloc (1, sizeof *entry);
    if (!entry || zhashx_insert (self->entries, id, entry)) {
        free (entry);
        if (self->destructor)
            self->destructor (&item);
        return -1;
    }
    entry->item = item;
    entry->tick = ++self->tick;
    return 0;
}

size_t
session_store_size (const session_store_t *self)
{
    return zhashx_size (self->entries);
}

size_t
session_store_max (const session_store_t *self)
{
    return self->max_sessions;
}
