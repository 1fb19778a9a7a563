/*  sm_gateway.c: a small mesh for the gateway and client tests (sm_gateway.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "sm_cli.h"
#include "sm_http.h"
#include "sm_gateway.h"
#include "sm_proc.h"

int
sm_mesh_prepare (sm_mesh_t *mesh, const char *prefix, char *err, size_t size)
{
    memset (mesh, 0, sizeof *mesh);
    mesh->dir = sm_tmpdir_new (prefix);
    if (!mesh->dir) {
        snprintf (err, size, "cannot create a temp dir");
        return -1;
    }
    snprintf (mesh->run_dir, sizeof mesh->run_dir, "%s/run", mesh->dir);
    snprintf (mesh->model, sizeof mesh->model, "%s/tiny.gguf", mesh->dir);
    snprintf (mesh->broker, sizeof mesh->broker, "ipc://%s/device.ipc", mesh->run_dir);
    const char *vocab = sm_model_path ();
    sm_cli_result_t *r = vocab?
        SM_SPLITMESH (60, "tiny-model", "--out", mesh->model, "--layers", "4", "--ctx", "2048",
                      "--seed", "11", "--vocab-from", vocab):
        SM_SPLITMESH (60, "tiny-model", "--out", mesh->model, "--layers", "4", "--ctx", "2048",
                      "--seed", "11");
    int rc = r && r->status == 0? 0: -1;
    if (rc)
        snprintf (err, size, "tiny-model failed: %s", r? r->err: "?");
    sm_cli_result_destroy (&r);
    return rc;
}

int
sm_mesh_up (sm_mesh_t *mesh, const char *extra_arg, char *err, size_t size)
{
    const char *argv [16] = { "", "up", "--run-dir", mesh->run_dir, "--model", mesh->model,
                              "--draft-model", mesh->model, "--timeout", "60" };
    int argc = 10;
    if (!mesh->telemetry)
        argv [argc++] = "--no-telemetry";
    if (extra_arg)
        argv [argc++] = extra_arg;
    argv [argc] = NULL;
    sm_cli_result_t *r = sm_cli_run ("splitmesh", 120, NULL, argv);
    int rc = r && r->status == 0? 0: -1;
    if (rc)
        snprintf (err, size, "up failed:\n%s\n%s", r? r->out: "", r? r->err: "");
    else {
        const char *line = strstr (r->out, "gateway        http://127.0.0.1:");
        mesh->gateway_port = line? atoi (line + strlen ("gateway        http://127.0.0.1:")): 0;
        line = strstr (r->out, "telemetry      http://127.0.0.1:");
        mesh->telemetry_port = line? atoi (line + strlen ("telemetry      http://127.0.0.1:")): 0;
    }
    sm_cli_result_destroy (&r);
    return rc;
}

void
sm_mesh_down (sm_mesh_t *mesh)
{
    if (mesh->dir) {
        sm_mesh_teardown (mesh->run_dir);
        sm_tmpdir_remove (&mesh->dir);
    }
}

static double
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int
sm_http_post (int port, const char *path, const char *body, int timeout_ms, char **reply)
{
    if (reply)
        *reply = NULL;
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr)) {
        close (fd);
        return 0;
    }
    char head [512];
    int n = snprintf (head, sizeof head, "POST %s HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      path, strlen (body));
    if (write (fd, head, (size_t) n) != n
    ||  write (fd, body, strlen (body)) != (ssize_t) strlen (body)) {
        close (fd);
        return 0;
    }
    size_t size = 0, cap = 4096;
    char *buf = malloc (cap);
    double deadline = s_now_ms () + timeout_ms;
    while (buf) {
        int left = (int) (deadline - s_now_ms ());
        struct pollfd p = { fd, POLLIN, 0 };
        if (left <= 0 || poll (&p, 1, left) <= 0)
            break;
        if (size + 1024 >= cap) {
            char *grown = realloc (buf, cap * 2);
            if (!grown)
                break;
            buf = grown;
            cap *= 2;
        }
        ssize_t got = read (fd, buf + size, cap - size - 1);
        if (got <= 0)
            break;
        size += (size_t) got;
    }
    close (fd);
    if (!buf)
        return 0;
    buf [size] = 0;
    int status = 0;
    if (strncmp (buf, "HTTP/1.", 7) == 0 && size > 12)
        status = atoi (buf + 9);
    if (reply)
        *reply = buf;
    else
        free (buf);
    return status;
}

double
sm_prom_sum (const char *exposition, const char *name, int *found, ...)
{
    const char *must [16];
    size_t n_must = 0;
    va_list args;
    va_start (args, found);
    for (const char *m = va_arg (args, const char *); m && n_must < 16; m = va_arg (args, const char *))
        must [n_must++] = m;
    va_end (args);
    double sum = 0;
    int samples = 0;
    size_t len = strlen (name);
    for (const char *line = exposition; line && *line; ) {
        const char *next = strchr (line, '\n');
        size_t line_len = next? (size_t) (next - line): strlen (line);
        if (strncmp (line, name, len) == 0 && (line [len] == '{' || line [len] == ' ')) {
            const char *end = memchr (line, ' ', line_len);
            if (line [len] == '{')
                end = memchr (line, '}', line_len);
            bool match = end != NULL;
            for (size_t i = 0; match && i < n_must; i++) {
                const char *hit = strstr (line, must [i]);
                match = hit && hit < end;
            }
            if (match) {
                const char *value = strchr (end, ' ');
                if (value) {
                    sum += strtod (value + 1, NULL);
                    samples++;
                }
            }
        }
        line = next? next + 1: NULL;
    }
    if (found)
        *found = samples;
    return sum;
}

char *
sm_prom_scrape (int port)
{
    sm_http_reply_t reply;
    char *text = NULL;
    if (sm_http_get (port, "/metrics", 3000, &reply) == 0 && reply.status == 200)
        text = strdup (reply.body);
    sm_http_reply_free (&reply);
    return text;
}
