/*  sm_http.h: a minimal HTTP/1.0 GET client for integration tests.

    Tests of HTTP services (telemetry, gateway) and of tools with an HTTP
    API (Prometheus) need to fetch a URL on 127.0.0.1 with a deadline and
    look at the status and body. This is that and nothing more: one
    request per connection, no TLS, no redirects, no chunked encoding (the
    request is HTTP/1.0, so servers answer with a plain body).
*/
#ifndef SM_HTTP_H_INCLUDED
#define SM_HTTP_H_INCLUDED

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int status;                 //  HTTP status, 0 if no answer
    char *headers;              //  raw header block (NUL-terminated)
    char *body;                 //  body (NUL-terminated; may hold NULs before)
    size_t body_size;           //  body bytes
} sm_http_reply_t;

//  Sends `method` `path` to 127.0.0.1:port and reads the whole answer
//  (at most 64 MiB) within timeout_ms. Returns 0 and fills reply (free it
//  with sm_http_reply_free), or -1 (connection refused, timeout, garbage)
//  with reply->status 0.
int
    sm_http_request (int port, const char *method, const char *path,
                     int timeout_ms, sm_http_reply_t *reply);

//  sm_http_request with GET.
int
    sm_http_get (int port, const char *path, int timeout_ms, sm_http_reply_t *reply);

//  Frees what a reply holds and zeroes it.
void
    sm_http_reply_free (sm_http_reply_t *reply);

//  Value of header `name` (case-insensitive) copied into buf; NULL if absent.
const char *
    sm_http_header (const sm_http_reply_t *reply, const char *name, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif
