/*  privacy_record.h: a flight recorder of the bodies a service receives and
    sends, so a test can check what the cloud side actually saw.

    Privacy mode `full` promises that no token id of the prompt or the
    answer reaches cloud-target. That is a property of the bytes on the
    wire, so it is checked on those bytes: cloud-target, when the
    environment names a file in SPLITMESH_TARGET_RECORD, appends every
    request body it handles and every reply body it sends to that file.
    Records are: one direction byte ('Q' request, 'R' reply), the body
    length as 4 bytes big-endian, then the body (one msgpack map). The file
    is opened in append mode and written with one write per record, so
    records of several processes never interleave inside a record.

    Recording is off unless asked for; it is a test and audit aid, not a
    log (bodies carry activations, so files grow quickly).
*/
#ifndef SPLITMESH_PRIVACY_RECORD_H
#define SPLITMESH_PRIVACY_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PRIVACY_RECORD_ENV  "SPLITMESH_TARGET_RECORD"
#define PRIVACY_RECORD_MAX  (64u << 20)    //  largest body read back

typedef struct _privacy_record_t privacy_record_t;

//  Opens the file named by environment variable env for appending.
//  Returns NULL when the variable is unset or empty, or (with a warning
//  logged to stderr) when the file cannot be opened. Caller owns the
//  result and must destroy it.
privacy_record_t *privacy_record_open_env (const char *env);

//  Closes the file; sets *self_p to NULL. Safe on NULL.
void privacy_record_destroy (privacy_record_t **self_p);

//  Appends one record. Safe on a NULL recorder (does nothing). Returns 0,
//  or -1 when the write failed.
int privacy_record_append (privacy_record_t *self, char dir, const void *data, size_t size);

//  Reads the next record from file into a malloc'd buffer (*data_p, caller
//  frees) of *size_p bytes and sets *dir. Returns 1 for a record, 0 at a
//  clean end of file, -1 for a truncated or oversized record.
int privacy_record_read (FILE *file, char *dir, uint8_t **data_p, size_t *size_p);

#ifdef __cplusplus
}
#endif

#endif
