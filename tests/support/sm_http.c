/*  sm_http.c: a minimal HTTP/1.0 GET client for integration tests.

    See sm_http.h. Plain blocking sockets with poll() for the deadline.
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "sm_http.h"

#define SM_HTTP_MAX (64u << 20)

static long long
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

//  Waits for `events` on fd until the deadline; 1 ready, 0 timeout, -1 error.
static int
s_wait (int fd, short events, long long deadline)
{
    while (1) {
        long long left = deadline - s_now_ms ();
        if (left <= 0)
            return 0;
        struct pollfd pfd = { fd, events, 0 };
        int rc = poll (&pfd, 1, (int) left);
        if (rc < 0 && errno == EINTR)
            continue;
        return rc < 0? -1: rc;
    }
}

int
sm_http_request (int port, const char *method, const char *path,
                 int timeout_ms, sm_http_reply_t *reply)
{
    memset (reply, 0, sizeof *reply);
    long long deadline = s_now_ms () + timeout_ms;
    int fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    char *data = NULL;
    size_t size = 0, cap = 0;
    int rc = -1;
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons ((unsigned short) port);
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr) < 0) {
        if (errno != EINPROGRESS || s_wait (fd, POLLOUT, deadline) != 1)
            goto cleanup;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err)
            goto cleanup;
    }
    char request [2048];
    int n = snprintf (request, sizeof request,
                      "%s %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nAccept: */*\r\n"
                      "Connection: close\r\n\r\n", method, path, port);
    if (n < 0 || (size_t) n >= sizeof request)
        goto cleanup;
    for (int sent = 0; sent < n; ) {
        if (s_wait (fd, POLLOUT, deadline) != 1)
            goto cleanup;
        ssize_t w = send (fd, request + sent, (size_t) (n - sent), MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            goto cleanup;
        if (w > 0)
            sent += (int) w;
    }
    while (1) {
        if (s_wait (fd, POLLIN, deadline) != 1)
            goto cleanup;
        if (size + 65536 + 1 > cap) {
            if (cap >= SM_HTTP_MAX)
                goto cleanup;
            cap = cap? cap * 2: 131072;
            char *grown = (char *) realloc (data, cap);
            if (!grown)
                goto cleanup;
            data = grown;
        }
        ssize_t r = recv (fd, data + size, 65536, 0);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            goto cleanup;
        }
        size += (size_t) r;
    }
    if (!data)
        goto cleanup;
    data [size] = '\0';
    char *end = strstr (data, "\r\n\r\n");
    int status = 0;
    if (!end || sscanf (data, "HTTP/%*d.%*d %d", &status) != 1)
        goto cleanup;
    size_t header_len = (size_t) (end - data);
    reply->headers = strndup (data, header_len);
    reply->body_size = size - header_len - 4;
    reply->body = (char *) malloc (reply->body_size + 1);
    if (!reply->headers || !reply->body) {
        sm_http_reply_free (reply);
        goto cleanup;
    }
    memcpy (reply->body, end + 4, reply->body_size);
    reply->body [reply->body_size] = '\0';
    reply->status = status;
    rc = 0;

cleanup:
    free (data);
    close (fd);
    return rc;
}

int
sm_http_get (int port, const char *path, int timeout_ms, sm_http_reply_t *reply)
{
    return sm_http_request (port, "GET", path, timeout_ms, reply);
}

void
sm_http_reply_free (sm_http_reply_t *reply)
{
    free (reply->headers);
    free (reply->body);
    memset (reply, 0, sizeof *reply);
}

const char *
sm_http_header (const sm_http_reply_t *reply, const char *name, char *buf, size_t size)
{
    if (!reply->headers)
        return NULL;
    size_t len = strlen (name);
    for (const char *line = strstr (reply->headers, "\r\n"); line; line = strstr (line + 2, "\r\n")) {
        const char *start = line + 2;
        if (strncasecmp (start, name, len) == 0 && start [len] == ':') {
            const char *value = start + len + 1;
            while (*value == ' ')
                value++;
            const char *stop = strstr (value, "\r\n");
            size_t n = stop? (size_t) (stop - value): strlen (value);
            if (n >= size)
                n = size - 1;
            memcpy (buf, value, n);
            buf [n] = '\0';
            return buf;
        }
    }
    return NULL;
}
