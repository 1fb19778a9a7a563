/*  privacy_record.c: see privacy_record.h. One write(2) per record on an
    O_APPEND descriptor keeps records whole when processes share a file.
*/
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "privacy_record.h"

struct _privacy_record_t {
    int fd;
};

privacy_record_t *
privacy_record_open_env (const char *env)
{
    const char *path = getenv (env);
    if (!path || !*path)
        return NULL;
    privacy_record_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->fd = open (path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (self->fd < 0) {
        fprintf (stderr, "privacy_record: cannot open %s for appending\n", path);
        free (self);
        return NULL;
    }
    return self;
}

void
privacy_record_destroy (privacy_record_t **self_p)
{
    if (self_p && *self_p) {
        close ((*self_p)->fd);
        free (*self_p);
        *self_p = NULL;
    }
}

int
privacy_record_append (privacy_record_t *self, char dir, const void *data, size_t size)
{
    if (!self)
        return 0;
    if (size > PRIVACY_RECORD_MAX)
        return -1;
    uint8_t *rec = malloc (5 + size);
    if (!rec)
        return -1;
    rec [0] = (uint8_t) dir;
    rec [1] = (uint8_t) (size >> 24);
    rec [2] = (uint8_t) (size >> 16);
    rec [3] = (uint8_t) (size >> 8);
    rec [4] = (uint8_t) size;
    if (size)
        memcpy (rec + 5, data, size);
    ssize_t n = write (self->fd, rec, 5 + size);
    free (rec);
    return n == (ssize_t) (5 + size)? 0: -1;
}

int
privacy_record_read (FILE *file, char *dir, uint8_t **data_p, size_t *size_p)
{
    uint8_t head [5];
    *data_p = NULL;
    *size_p = 0;
    size_t got = fread (head, 1, 5, file);
    if (got == 0)
        return 0;
    if (got != 5)
        return -1;
    size_t size = ((size_t) head [1] << 24) | ((size_t) head [2] << 16)
                | ((size_t) head [3] << 8) | head [4];
    if (size > PRIVACY_RECORD_MAX)
        return -1;
    uint8_t *data = malloc (size? size: 1);
    if (!data)
        return -1;
    if (fread (data, 1, size, file) != size) {
        free (data);
        return -1;
    }
    *dir = (char) head [0];
    *data_p = data;
    *size_p = size;
    return 1;
}
