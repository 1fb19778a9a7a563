/*  link_emu.h: a model of an unreliable network link (delay, jitter,
    bandwidth cap, loss) that decides when each message would arrive.

    The edge-cloud link is the thing splitmesh optimises for, so tests and
    benchmarks need a link with a known round trip on one machine. This
    module is only the arithmetic: given a message's size and the time it
    was sent, it returns the time it arrives (or that it is lost). The
    proxy in link_proxy.h moves real ZeroMQ messages on that schedule.

    Each direction is a FIFO pipe like a TCP stream: a message occupies the
    link for size / bandwidth, arrives after the one-way delay plus jitter,
    and never overtakes an earlier message in the same direction.
*/
#ifndef SPLITMESH_LINK_EMU_H
#define SPLITMESH_LINK_EMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { LINK_UP = 0, LINK_DOWN = 1 } link_dir_t;   //  up: device -> cloud

typedef struct {
    double delay_ms;            //  one-way delay, each direction (RTT = 2 x delay)
    double jitter_ms;           //  uniform extra delay in [0, jitter_ms)
    double bandwidth_mbps;      //  serialisation rate, megabits/s; 0 = unlimited
    double loss;                //  probability a message is dropped, 0..1
    uint64_t seed;              //  for jitter and loss; same seed, same schedule
} link_params_t;

typedef struct _link_emu_t link_emu_t;

//  Parses "delay=25,jitter=2,bw=100,loss=0.01,seed=7" (any subset, any
//  order; "rtt=50" sets delay to 25). Returns 0, or -1 with a message in
//  err naming the bad item. Unset fields keep their current values.
int link_params_parse (link_params_t *params, const char *spec, char *err, size_t err_size);

//  Creates a link; NULL with a message when a parameter is out of range
//  (negative delay, loss outside [0, 1], ...). Caller owns it.
link_emu_t *link_emu_new (const link_params_t *params, char *err, size_t err_size);
void link_emu_destroy (link_emu_t **self_p);

//  Decides the fate of a message of size bytes sent at now_us (monotonic
//  microseconds). Returns its arrival time in microseconds, or -1 when the
//  link loses it. Counts bytes and messages either way.
int64_t link_emu_schedule (link_emu_t *self, link_dir_t dir, size_t size, int64_t now_us);

typedef struct {
    uint64_t messages[2];       //  sent, per direction
    uint64_t bytes[2];          //  sent, per direction
    uint64_t lost[2];           //  dropped, per direction
} link_stats_t;

void link_emu_stats (const link_emu_t *self, link_stats_t *stats);
const link_params_t *link_emu_params (const link_emu_t *self);

#endif
