/*  cmd_keygen.c: `splitmesh keygen`, CurveZMQ key pairs for the crypt-proxy.

    Writes a certificate in CZMQ's zcert format: DIR/name holds the public
    key (this is the file that goes into the cloud proxy's --allow directory
    or to devices as --server-key), DIR/name_secret holds both keys and is
    made readable by its owner only. Existing files are never overwritten
    unless --force is given, since losing a secret key locks a device out.
*/
#include <czmq.h>
#include <getopt.h>
#include <sys/stat.h>
#include "cli.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: splitmesh keygen --out DIR/name [--force]\n"
        "  writes DIR/name (public key, zcert format) and DIR/name_secret\n"
        "  (public + secret key, mode 0600); prints the public key (Z85)\n"
        "  --out PATH     where to write (the directory must exist)\n"
        "  --force        overwrite existing files\n");
}

int
cmd_keygen (int argc, char **argv)
{
    static struct option options [] = {
        { "out", required_argument, 0, 'o' },
        { "force", no_argument, 0, 'f' },
        { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 }
    };
    const char *out = NULL;
    bool force = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long (argc, argv, "o:fh", options, NULL)) != -1) {
        switch (opt) {
            case 'o': out = optarg; break;
            case 'f': force = true; break;
            case 'h': s_usage (stdout); return 0;
            default:  s_usage (stderr); return 2;
        }
    }
    if (!out || !*out || optind < argc) {
        s_usage (stderr);
        return 2;
    }
    char secret [4096];
    if (snprintf (secret, sizeof secret, "%s_secret", out) >= (int) sizeof secret) {
        fprintf (stderr, "splitmesh keygen: path too long\n");
        return 2;
    }
    struct stat st;
    if (!force && (stat (out, &st) == 0 || stat (secret, &st) == 0)) {
        fprintf (stderr, "splitmesh keygen: %s or %s exists (use --force to replace)\n",
                 out, secret);
        return 1;
    }
    int rc = 1;
    zcert_t *cert = zcert_new ();
    if (!cert) {
        fprintf (stderr, "splitmesh keygen: cannot create a key pair\n");
        return 1;
    }
    const char *slash = strrchr (out, '/');
    zcert_set_meta (cert, "name", "%s", slash? slash + 1: out);
    zcert_set_meta (cert, "created-by", "splitmesh keygen");
    //  Secret first, with a umask that keeps it private from the start.
    mode_t old = umask (077);
    int failed = zcert_save_secret (cert, secret);
    umask (old);
    if (failed || chmod (secret, 0600)) {
        fprintf (stderr, "splitmesh keygen: cannot write %s\n", secret);
        goto cleanup;
    }
    if (zcert_save_public (cert, out)) {
        fprintf (stderr, "splitmesh keygen: cannot write %s\n", out);
        goto cleanup;
    }
    printf ("public key %s\nwrote %s (public) and %s (secret)\n",
            zcert_public_txt (cert), out, secret);
    rc = 0;
cleanup:
    zcert_destroy (&cert);
    return rc;
}
