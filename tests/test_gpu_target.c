/*  test_gpu_target.c: cloud-target's CUDA backend table
    (services/cloud-target/target_backend_cuda.c) against its CPU table on
    the same tiny model: embed, forward over the session's cache, head,
    rollback by truncation and cache accounting, as the service calls them.
    Without a CUDA device only the refusal is checked.
*/
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "gpu.h"
#include "target_backend.h"

static char s_dir[256];
static char s_path[300];

static const char *
s_tiny (void)
{
    const char *bin = getenv ("SPLITMESH_BIN_DIR");
    if (!bin)
        bin = SPLITMESH_BIN_DIR;
    snprintf (s_dir, sizeof s_dir, "/tmp/splitmesh_gput_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    snprintf (s_path, sizeof s_path, "%s/tiny.gguf", s_dir);
    char cmd[1024];
    snprintf (cmd, sizeof cmd,
              "'%s/splitmesh' tiny-model --out '%s' --layers 2 --dim 128 --heads 4 --kv-heads 2 "
              "--ff 256 --ctx 256 --type f32 --seed 5 >/dev/null", bin, s_path);
    cr_assert_eq (system (cmd), 0, "%s", cmd);
    return s_path;
}

static void
s_cleanup (void)
{
    if (s_path[0])
        unlink (s_path);
    if (s_dir[0])
        rmdir (s_dir);
    s_path[0] = s_dir[0] = '\0';
}

static double
s_rel_err (const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite (a[i]))
            return INFINITY;
        num += ((double) a[i] - ref[i]) * ((double) a[i] - ref[i]);
        den += (double) ref[i] * ref[i];
    }
    return sqrt (num / (den > 0 ? den : 1));
}

Test (gpu_target, refused_without_device)
{
    if (gpu_device_count () > 0)
        cr_skip_test ("a CUDA device is present (the refusal is for hosts without one)");
    char err[256] = "";
    //  The device is checked before the file is opened.
    target_backend_t *b = target_backend_cuda_new ("/nonexistent.gguf", QFMT_F32, 0, 0, 2, 64,
                                                   err, sizeof err);
    cr_expect_null (b);
    cr_expect (strstr (err, "no CUDA device"), "message: %s", err);
}

//  Runs the service's sequence on one backend: prefill 12 tokens, logits
//  of every row; roll back to 8; 4 other tokens; logits of those rows.
static void
s_run (target_backend_t *b, const int32_t *tok, const int32_t *tok2, float *l1, float *l2)
{
    target_kv_t *kv = b->ops->kv_new (b, 64);
    cr_assert_not_null (kv, "%s", b->ops->error (b));
    float *x = malloc ((size_t) 12 * b->dim * sizeof (float));
    cr_assert_eq (b->ops->embed (b, tok, 12, x), 0, "%s", b->ops->error (b));
    cr_assert_eq (b->ops->forward (b, kv, 0, b->n_layers, 0, 12, x), 0, "%s", b->ops->error (b));
    cr_assert_eq (b->ops->head (b, x, 12, l1), 0, "%s", b->ops->error (b));
    cr_expect_gt (b->ops->kv_bytes (kv), 0);
    b->ops->kv_truncate (kv, 8);
    cr_assert_eq (b->ops->embed (b, tok2, 4, x), 0, "%s", b->ops->error (b));
    cr_assert_eq (b->ops->forward (b, kv, 0, b->n_layers, 8, 4, x), 0, "%s", b->ops->error (b));
    cr_assert_eq (b->ops->head (b, x, 4, l2), 0, "%s", b->ops->error (b));
    //  A position gap is refused.
    cr_expect_neq (b->ops->forward (b, kv, 0, b->n_layers, 20, 1, x), 0);
    b->ops->kv_destroy (&kv);
    cr_expect_null (kv);
    free (x);
}

Test (gpu_target, cuda_table_matches_cpu_table, .fini = s_cleanup)
{
    if (gpu_device_count () == 0)
        cr_skip_test ("no CUDA device: GPU tests skipped");
    const char *path = s_tiny ();
    char err[512] = "";
    target_backend_t *cpu = target_backend_cpu_new (path, QFMT_F32, 2, 0, err, sizeof err);
    cr_assert_not_null (cpu, "%s", err);
    target_backend_t *gpu = target_backend_cuda_new (path, QFMT_F32, 0, 0, 2, 64, err, sizeof err);
    cr_assert_not_null (gpu, "%s", err);
    cr_assert_str_eq (gpu->ops->name, "cuda");
    cr_assert_eq (gpu->dim, cpu->dim);
    cr_assert_eq (gpu->vocab, cpu->vocab);
    int V = cpu->vocab;
    int32_t tok[12], tok2[4];
    for (int i = 0; i < 12; i++)
        tok[i] = (i * 37 + 5) % V;
    for (int i = 0; i < 4; i++)
        tok2[i] = (i * 53 + 11) % V;
    float *c1 = malloc ((size_t) 12 * V * sizeof (float)), *c2 = malloc ((size_t) 4 * V * sizeof (float));
    float *g1 = malloc ((size_t) 12 * V * sizeof (float)), *g2 = malloc ((size_t) 4 * V * sizeof (float));
    s_run (cpu, tok, tok2, c1, c2);
    s_run (gpu, tok, tok2, g1, g2);
    double e1 = s_rel_err (g1, c1, (size_t) 12 * V), e2 = s_rel_err (g2, c2, (size_t) 4 * V);
    cr_expect_leq (e1, 1e-2, "prefill logits: relative error %.3e", e1);
    cr_expect_leq (e2, 1e-2, "after rollback: relative error %.3e", e2);
    //  More caches than GPU session slots are refused, with a message.
    target_kv_t *a = gpu->ops->kv_new (gpu, 64), *b = gpu->ops->kv_new (gpu, 64);
    cr_expect (a && b);
    cr_expect_null (gpu->ops->kv_new (gpu, 64));
    cr_expect (strstr (gpu->ops->error (gpu), "slots"), "%s", gpu->ops->error (gpu));
    gpu->ops->kv_destroy (&a);
    gpu->ops->kv_destroy (&b);
    free (c1); free (c2); free (g1); free (g2);
    cpu->ops->destroy (&cpu);
    gpu->ops->destroy (&gpu);
    cr_expect_null (gpu);
}

//  The CUDA table's forward_batch (the service's continuous batching):
//  three sessions' rows in one pass give what each gives alone, for
//  verify-sized rows and for a prefill-sized mix; a batch naming a
//  position gap fails as a whole and leaves the others' inputs for the
//  service's one-by-one retry.
Test (gpu_target, cuda_forward_batch_equals_forward_alone, .fini = s_cleanup)
{
    if (gpu_device_count () == 0)
        cr_skip_test ("no CUDA device: GPU tests skipped");
    const char *path = s_tiny ();
    char err[512] = "";
    target_backend_t *b = target_backend_cuda_new (path, QFMT_F32, 0, 0, 8, 64, err, sizeof err);
    cr_assert_not_null (b, "%s", err);
    cr_assert_not_null (b->ops->forward_batch);
    int D = b->dim, V = b->vocab;
    const int rows[2][3] = { { 5, 5, 5 }, { 12, 3, 9 } };
    for (int v = 0; v < 2; v++) {
        target_kv_t *alone[3], *batch[3];
        float *xa[3], *xb[3];
        target_batch_item_t items[3];
        for (int i = 0; i < 3; i++) {
            int n = rows[v][i];
            int32_t tok[16];
            for (int j = 0; j < n; j++)
                tok[j] = (i * 41 + j * 7 + v) % V;
            alone[i] = b->ops->kv_new (b, 64);
            batch[i] = b->ops->kv_new (b, 64);
            xa[i] = malloc ((size_t) n * D * sizeof (float));
            xb[i] = malloc ((size_t) n * D * sizeof (float));
            cr_assert_eq (b->ops->embed (b, tok, n, xa[i]), 0);
            memcpy (xb[i], xa[i], (size_t) n * D * sizeof (float));
            cr_assert_eq (b->ops->forward (b, alone[i], 0, b->n_layers, 0, n, xa[i]), 0, "%s",
                          b->ops->error (b));
            items[i] = (target_batch_item_t) { batch[i], 0, n, xb[i] };
        }
        cr_assert_eq (b->ops->forward_batch (b, items, 3, 0), 0, "%s", b->ops->error (b));
        for (int i = 0; i < 3; i++) {
            double num = 0, den = 0;
            for (int k = 0; k < rows[v][i] * D; k++) {
                num += ((double) xb[i][k] - xa[i][k]) * ((double) xb[i][k] - xa[i][k]);
                den += (double) xa[i][k] * xa[i][k];
            }
            //  Up to 16 rows in the pass (3 x 5) run the same per-row
            //  kernels as alone: equal; a prefill-sized batch (24 rows)
            //  goes through cuBLASLt, which sums in another order.
            cr_expect_leq (sqrt (num / den), v == 0 ? 1e-6 : 2e-3, "rows %d session %d: rel err %.3e",
                           v, i, sqrt (num / den));
        }
        //  A batch with a position gap (session 1 at pos 40) is refused whole.
        items[1].pos = 40;
        cr_expect_neq (b->ops->forward_batch (b, items, 3, 0), 0);
        for (int i = 0; i < 3; i++) {
            b->ops->kv_destroy (&alone[i]);
            b->ops->kv_destroy (&batch[i]);
            free (xa[i]);
            free (xb[i]);
        }
    }
    b->ops->destroy (&b);
}
