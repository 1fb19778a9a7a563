/*  link_emu.c: arrival-time arithmetic for an emulated link (see link_emu.h).  */
#include "link_emu.h"
#include "rng.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _link_emu_t {
    link_params_t params;       //  as validated at creation
    uint64_t rng;               //  rng.h state for jitter and loss
    int64_t busy_until_us[2];   //  when the sender side finishes serialising, per direction
    int64_t last_arrival_us[2]; //  latest scheduled arrival, per direction (FIFO order)
    link_stats_t stats;         //  counters, per direction
};

static int
s_parse_double (const char *text, double *out)
{
    char *end;
    errno = 0;
    double value = strtod (text, &end);
    if (errno || end == text || *end || !isfinite (value))
        return -1;
    *out = value;
    return 0;
}

int
link_params_parse (link_params_t *params, const char *spec, char *err, size_t err_size)
{
    char buf[256];
    if (!spec || !*spec)
        return 0;
    if (strlen (spec) >= sizeof buf) {
        snprintf (err, err_size, "link spec longer than %zu characters", sizeof buf - 1);
        return -1;
    }
    strcpy (buf, spec);
    char *saveptr = NULL;
    for (char *item = strtok_r (buf, ",", &saveptr); item; item = strtok_r (NULL, ",", &saveptr)) {
        char *eq = strchr (item, '=');
        double value;
        if (!eq || s_parse_double (eq + 1, &value)) {
            snprintf (err, err_size, "link spec item '%s' is not name=number", item);
            return -1;
        }
        *eq = 0;
        if (!strcmp (item, "delay"))
            params->delay_ms = value;
        else if (!strcmp (item, "rtt"))
            params->delay_ms = value / 2;
        else if (!strcmp (item, "jitter"))
            params->jitter_ms = value;
        else if (!strcmp (item, "bw") || !strcmp (item, "bandwidth"))
            params->bandwidth_mbps = value;
        else if (!strcmp (item, "loss"))
            params->loss = value;
        else if (!strcmp (item, "seed"))
            params->seed = (uint64_t) value;
        else {
            snprintf (err, err_size, "unknown link spec item '%s' (delay, rtt, jitter, bw, loss, seed)", item);
            return -1;
        }
    }
    return 0;
}

link_emu_t *
link_emu_new (const link_params_t *params, char *err, size_t err_size)
{
    if (params->delay_ms < 0 || params->delay_ms > 60000) {
        snprintf (err, err_size, "link delay %.3f ms is outside [0, 60000]", params->delay_ms);
        return NULL;
    }
    if (params->jitter_ms < 0 || params->jitter_ms > 60000) {
        snprintf (err, err_size, "link jitter %.3f ms is outside [0, 60000]", params->jitter_ms);
        return NULL;
    }
    if (params->bandwidth_mbps < 0) {
        snprintf (err, err_size, "link bandwidth %.3f Mbit/s is negative", params->bandwidth_mbps);
        return NULL;
    }
    if (!(params->loss >= 0 && params->loss <= 1)) {
        snprintf (err, err_size, "link loss %.3f is outside [0, 1]", params->loss);
        return NULL;
    }
    link_emu_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, err_size, "out of memory");
        return NULL;
    }
    self->params = *params;
    self->rng = params->seed;
    return self;
}

void
link_emu_destroy (link_emu_t **self_p)
{
    if (self_p && *self_p) {
        free (*self_p);
        *self_p = NULL;
    }
}

int64_t
link_emu_schedule (link_emu_t *self, link_dir_t dir, size_t size, int64_t now_us)
{
    const link_params_t *p = &self->params;
    self->stats.messages[dir]++;
    self->stats.bytes[dir] += size;
    //  Draw both random numbers every time so the schedule of later messages
    //  does not depend on whether loss or jitter is enabled.
    double loss_draw = rng_uniform (&self->rng);
    double jitter_draw = rng_uniform (&self->rng);
    if (loss_draw < p->loss) {
        self->stats.lost[dir]++;
        return -1;
    }
    //  Serialisation: the message leaves after the previous one has left.
    int64_t start = now_us > self->busy_until_us[dir] ? now_us : self->busy_until_us[dir];
    int64_t wire_us = 0;
    if (p->bandwidth_mbps > 0)
        wire_us = (int64_t) llround (size * 8.0 / p->bandwidth_mbps);  //  bits / (Mbit/s) = us
    self->busy_until_us[dir] = start + wire_us;
    int64_t arrival = start + wire_us
                    + (int64_t) llround ((p->delay_ms + jitter_draw * p->jitter_ms) * 1000.0);
    //  FIFO: jitter may not reorder a stream.
    if (arrival < self->last_arrival_us[dir])
        arrival = self->last_arrival_us[dir];
    self->last_arrival_us[dir] = arrival;
    return arrival;
}

void
link_emu_stats (const link_emu_t *self, link_stats_t *stats)
{
    *stats = self->stats;
}

const link_params_t *
link_emu_params (const link_emu_t *self)
{
    return &self->params;
}
