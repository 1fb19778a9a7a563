/*  version.c: version string with the build's optional parts, for --version.  */
#include "version.h"
#include <stdio.h>

const char *
splitmesh_version_string (void)
{
    static char buf[128];
    if (!buf[0])
        snprintf (buf, sizeof buf, "splitmesh %d.%d.%d (%s)",
                  SPLITMESH_VERSION_MAJOR, SPLITMESH_VERSION_MINOR, SPLITMESH_VERSION_PATCH,
#ifdef SPLITMESH_HAVE_CUDA
                  "cuda"
#else
                  "cpu-only"
#endif
        );
    return buf;
}
