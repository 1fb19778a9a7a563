/*  test_curve_flip.c: a flipped byte on the CURVE link is rejected.

    A small TCP relay (a thread in this test) sits between the device proxy
    and the cloud proxy and, when armed, flips one byte of the next large
    chunk going one way. CurveZMQ authenticates every message, so the
    receiving side must reject it and drop the connection: the request in
    flight ends in a clear 503 (or, if the retry raced ahead, succeeds with
    the exact body), never in a corrupted answer; the device proxy builds a
    new connection and both proxies keep serving.
*/
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>
#include "sm_mdp.h"
#include "sm_proc.h"
#include "sm_crypt.h"

//  The relay: one connection at a time, device side <-> cloud side.
typedef struct {
    int listen_fd;
    int upstream_port;              //  the cloud proxy's port
    atomic_int stop;
    atomic_int armed;               //  0 none, 1 flip device->cloud, 2 cloud->device
    atomic_int flips;               //  bytes flipped so far
    atomic_int accepted;            //  connections accepted
    pthread_t thread;
} relay_t;

static relay_t s_relay;
static sm_crypt_t s_mesh;

static int
s_connect_upstream (int port)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons (port) };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr)) {
        close (fd);
        return -1;
    }
    return fd;
}

//  Moves one chunk from `from` to `to`, flipping a byte when armed for this
//  direction. Returns false when either side closed.
static bool
s_pump (relay_t *self, int from, int to, int direction)
{
    char buffer [65536];
    ssize_t size = read (from, buffer, sizeof buffer);
    if (size <= 0)
        return false;
    //  Only chunks that carry a request/reply (not handshake or heartbeat
    //  commands, which are shorter) are tampered with.
    int expected = direction;
    if (size >= 512 && atomic_compare_exchange_strong (&self->armed, &expected, 0)) {
        buffer [size / 2] ^= 0x20;
        if (getenv ("SPLITMESH_RELAY_DEBUG"))
            fprintf (stderr, "relay: flipped byte %zd of a %zd-byte chunk (direction %d) at %lld\n",
                     size / 2, size, direction, (long long) zclock_mono ());
        atomic_fetch_add (&self->flips, 1);
    }
    for (ssize_t done = 0; done < size; ) {
        ssize_t rc = write (to, buffer + done, size - done);
        if (rc <= 0)
            return false;
        done += rc;
    }
    return true;
}

static void *
s_relay_run (void *arg)
{
    relay_t *self = (relay_t *) arg;
    while (!atomic_load (&self->stop)) {
        struct pollfd lp = { self->listen_fd, POLLIN, 0 };
        if (poll (&lp, 1, 50) <= 0)
            continue;
        int down = accept (self->listen_fd, NULL, NULL);
        if (down < 0)
            continue;
        atomic_fetch_add (&self->accepted, 1);
        int up = s_connect_upstream (self->upstream_port);
        if (up < 0) {
            close (down);
            continue;
        }
        while (!atomic_load (&self->stop)) {
            struct pollfd fds [2] = { { down, POLLIN, 0 }, { up, POLLIN, 0 } };
            if (poll (fds, 2, 50) <= 0)
                continue;
            if ((fds [0].revents & (POLLIN | POLLHUP | POLLERR)) && !s_pump (self, down, up, 1))
                break;
            if ((fds [1].revents & (POLLIN | POLLHUP | POLLERR)) && !s_pump (self, up, down, 2))
                break;
        }
        if (getenv ("SPLITMESH_RELAY_DEBUG"))
            fprintf (stderr, "relay: connection closed at %lld\n", (long long) zclock_mono ());
        close (down);
        close (up);
    }
    return NULL;
}

static int
s_relay_start (relay_t *self, int upstream_port)
{
    memset (self, 0, sizeof *self);
    self->upstream_port = upstream_port;
    self->listen_fd = socket (AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt (self->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = 0 };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind (self->listen_fd, (struct sockaddr *) &addr, sizeof addr)
    ||  listen (self->listen_fd, 8)
    ||  getsockname (self->listen_fd, (struct sockaddr *) &addr, &len))
        return -1;
    if (pthread_create (&self->thread, NULL, s_relay_run, self))
        return -1;
    return ntohs (addr.sin_port);
}

static void
s_init (void)
{
    cr_assert_eq (sm_crypt_init (&s_mesh, "sm-curve-flip", true), 0);
    s_relay.listen_fd = -1;
}

static void
s_fini (void)
{
    if (s_relay.listen_fd >= 0) {
        atomic_store (&s_relay.stop, 1);
        pthread_join (s_relay.thread, NULL);
        close (s_relay.listen_fd);
        s_relay.listen_fd = -1;
    }
    sm_crypt_fini (&s_mesh);
}

TestSuite (curve_flip, .init = s_init, .fini = s_fini, .timeout = 40);

//  A request whose body is 2 KB of a known pattern inside the map.
static zmsg_t *
s_big_body (void)
{
    zmsg_t *body = sm_body_new ("flip", -1, -1);
    zframe_t *frame = zmsg_first (body);
    //  Re-pack: map with one more key "pad" (bin 2048).
    size_t size = zframe_size (frame);
    byte *data = (byte *) malloc (size + 7 + 2048);
    memcpy (data, zframe_data (frame), size);
    data [0] += 1;                                  //  fixmap count + 1
    memcpy (data + size, "\xa3pad", 4);
    data [size + 4] = 0xc5;                         //  bin 16
    data [size + 5] = 0x08;
    data [size + 6] = 0x00;
    for (int i = 0; i < 2048; i++)
        data [size + 7 + i] = (byte) ('a' + i % 26);
    zmsg_t *big = zmsg_new ();
    zmsg_addmem (big, data, size + 7 + 2048);
    free (data);
    zmsg_destroy (&body);
    return big;
}

static void
s_flip_one_way (int direction)
{
    cr_assert_eq (sm_crypt_start_brokers (&s_mesh), 0);
    cr_assert_gt (sm_crypt_start_worker (&s_mesh, "w1"), 0);
    cr_assert_gt (sm_crypt_start_cloud_proxy (&s_mesh, 5000), 0);
    int port = s_relay_start (&s_relay, s_mesh.link_port);
    cr_assert_gt (port, 0, "relay did not start");
    char relay_ep [64];
    snprintf (relay_ep, sizeof relay_ep, "tcp://127.0.0.1:%d", port);
    //  Request timeout 5 s, link timeout 1.5 s: the drop is found first.
    cr_assert_gt (sm_crypt_start_device_proxy (&s_mesh, relay_ep, NULL, 5000), 0);
    cr_assert (sm_mdp_wait_workers (s_mesh.device_ep, "echo", 1, 5000));
    cr_assert_geq (sm_crypt_wait_ok (&s_mesh, 5000, 2000), 0, "no traffic through the relay");
    int accepted = atomic_load (&s_relay.accepted);

    atomic_store (&s_relay.armed, direction);
    zmsg_t *body = s_big_body ();
    zframe_t *sent = zframe_dup (zmsg_first (body));
    zmsg_t *reply = sm_crypt_call (&s_mesh, &body, 8000, NULL);
    cr_assert_eq (atomic_load (&s_relay.flips), 1, "the relay flipped no byte");
    cr_assert_not_null (reply, "a tampered request got no answer at all");
    int status = sm_crypt_status (reply);
    if (status == 200) {
        //  Only acceptable if the body is exactly what was sent.
        zframe_t *frame = zmsg_first (reply);
        cr_assert (memmem (zframe_data (frame), zframe_size (frame),
                           zframe_data (sent), zframe_size (sent)),
                   "a corrupted body was accepted");
    }
    else {
        char *error = sm_body_str (reply, "error");
        cr_assert_eq (status, 503, "status %d (%s)", status, error);
        cr_assert (error && strstr (error, "link"), "unclear error '%s'", error);
        free (error);
    }
    zframe_destroy (&sent);
    zmsg_destroy (&reply);

    //  The connection was dropped and rebuilt; both proxies keep serving.
    int took = sm_crypt_wait_ok (&s_mesh, 6000, 2000);
    cr_assert_geq (took, 0, "traffic did not resume after the tampering");
    cr_assert_gt (atomic_load (&s_relay.accepted), accepted,
                  "the tampered connection was not dropped");
    cr_assert (sm_alive (s_mesh.device_proxy) && sm_alive (s_mesh.cloud_proxy));
    for (int i = 0; i < 5; i++) {
        zmsg_t *again = s_big_body ();
        zmsg_t *ok = sm_crypt_call (&s_mesh, &again, 3000, NULL);
        cr_assert_eq (sm_crypt_status (ok), 200);
        zmsg_destroy (&ok);
    }
}

Test (curve_flip, device_to_cloud)
{
    s_flip_one_way (1);
}

Test (curve_flip, cloud_to_device)
{
    s_flip_one_way (2);
}
