/*  test_curve_capture.c: what an eavesdropper on the link sees during a
    real generation.

    `splitmesh up --crypt` on a tiny generated model: the device side
    (broker-device, tokenizer, edge-draft, split-prefix, the device
    crypt-proxy) and the cloud side (the cloud crypt-proxy, broker-cloud,
    cloud-target) joined only by the CURVE link. tshark (Debian package
    `tshark`) captures loopback traffic on two ports at once while real
    `generate` requests run with a recognisable prompt:
      - the crypt-proxy link (CURVE) must hold none of the needles, in
        either direction;
      - the cloud broker's port (plaintext MDP behind the cloud proxy: what
        the cloud processes receive) is the control, proving the capture
        and the search work and the test could fail.

    Needles, and why the control shows them: in `prefix` mode (the
    default) the cloud receives layer-L activations, never the prompt's
    text or ids, but it does receive the drafted token ids and answers
    with `next_token`, so it learns every token of the answer. In `none`
    mode (the cloud-only baseline) the prompt's token ids go to the cloud.
    So the test runs one generation in each mode and looks for
      1. the prompt's bytes (and a distinctive part of it): the link must
         not hold them; no control (in no mode does the text reach the
         cloud: tokenization is on the device);
      2. the MessagePack encoding of the prompt's token ids as the
         tokenizer produced them (`splitmesh tokenize`; the ids without the
         array header, so they match inside the longer array the pipeline
         sends): the link must not hold them; control: the cloud port shows
         them (none mode);
      3. the answer's token ids as the cloud returns them, the MessagePack
         pair `next_token: id` of every token of the prefix-mode answer,
         and the field names `next_token` and `draft_tokens`: the link
         must hold none; control: the cloud port shows them;
      4. the answer's ids in sequence (first six, MessagePack): the link
         must not hold them (the cloud never sees them as one run, so this
         one has no control).
    Skips, saying why, when tshark is missing or cannot capture.
*/
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <limits.h>
#include <msgpack.h>
#include <signal.h>
#include <unistd.h>
#include "sm_cli.h"
#include "sm_crypt.h"
#include "sm_proc.h"

static char *s_dir;
static char s_run_dir [1024], s_model [1024];

static const char *s_prompt = "The launch code for project PURPLE-OCTOPUS is 4471-zeta";

static void
s_fini (void)
{
    if (s_dir) {
        sm_mesh_teardown (s_run_dir);
        sm_tmpdir_remove (&s_dir);
    }
    sm_proc_kill_all ();
}

TestSuite (curve_capture, .fini = s_fini, .timeout = 150);

//  MessagePack of the ids, one after another (no array header).
static void
s_pack_ids (msgpack_sbuffer *sbuf, const int32_t *ids, size_t count)
{
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    for (size_t i = 0; i < count; i++)
        msgpack_pack_int64 (&pk, ids [i]);
}

//  MessagePack of the map entry "next_token": id, as the codec writes it.
static void
s_pack_next_token (msgpack_sbuffer *sbuf, int32_t id)
{
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    msgpack_pack_str_with_body (&pk, "next_token", 10);
    msgpack_pack_int64 (&pk, id);
}

static int32_t *
s_generate (const char *privacy, size_t *n)
{
    sm_cli_result_t *r = SM_SPLITMESH (90, "generate", "--run-dir", s_run_dir, "--json",
                                       "--privacy", privacy, "-n", "24", "--draft-k", "4",
                                       "--timeout", "30", s_prompt);
    cr_assert_eq (r->status, 0, "generate --privacy %s failed:\n%s\n%s", privacy, r->out, r->err);
    int32_t *tokens = sm_json_ints (r->out, "tokens", n);
    cr_assert (tokens && *n > 0, "no tokens in %s", r->out);
    cr_assert (!strstr (r->out, "\"degraded\":true"), "the generation did not reach the cloud");
    sm_cli_result_destroy (&r);
    return tokens;
}

//  The prompt's ids from `splitmesh tokenize` (space-separated).
static int32_t *
s_tokenize (size_t *n)
{
    sm_cli_result_t *r = SM_SPLITMESH (30, "tokenize", "--model", s_model, s_prompt);
    cr_assert_eq (r->status, 0, "tokenize failed: %s", r->err);
    int32_t *ids = calloc (strlen (r->out) + 1, sizeof *ids);
    size_t count = 0;
    for (char *p = r->out, *end; *p; p = end) {
        long id = strtol (p, &end, 10);
        if (end == p)
            break;
        ids [count++] = (int32_t) id;
    }
    sm_cli_result_destroy (&r);
    *n = count;
    return ids;
}

static uint32_t
s_u32 (const byte *p, bool swap)
{
    uint32_t v;
    memcpy (&v, p, 4);
    return swap? __builtin_bswap32 (v): v;
}

//  Reads a classic pcap file and appends each TCP payload to `link` or
//  `plain` by port. Returns the number of TCP packets, or -1 if the file
//  is not a pcap we understand.
static int
s_split_pcap (const char *path, int link_port, int plain_port, zchunk_t *link, zchunk_t *plain)
{
    zfile_t *file = zfile_new (NULL, path);
    zchunk_t *chunk = file && zfile_input (file) == 0? zfile_read (file, zfile_cursize (file), 0): NULL;
    zfile_destroy (&file);
    if (!chunk || zchunk_size (chunk) < 24) {
        zchunk_destroy (&chunk);
        return -1;
    }
    const byte *data = zchunk_data (chunk);
    size_t size = zchunk_size (chunk);
    uint32_t magic;
    memcpy (&magic, data, 4);
    bool swap = magic == 0xd4c3b2a1 || magic == 0x4d3cb2a1;
    if (!swap && magic != 0xa1b2c3d4 && magic != 0xa1b23c4d) {
        zchunk_destroy (&chunk);
        return -1;
    }
    uint32_t linktype = s_u32 (data + 20, swap);
    size_t l2 = linktype == 1? 14: linktype == 113? 16: linktype == 276? 20: linktype == 0? 4: 0;
    int packets = 0;
    for (size_t at = 24; at + 16 <= size; ) {
        uint32_t caplen = s_u32 (data + at + 8, swap);
        const byte *pkt = data + at + 16;
        at += 16 + caplen;
        if (at > size || caplen < l2 + 20)
            break;
        const byte *ip = pkt + l2;
        if ((ip [0] >> 4) != 4 || ip [9] != 6)     //  IPv4 TCP only (loopback)
            continue;
        size_t ihl = (ip [0] & 0x0f) * 4;
        size_t total = ((size_t) ip [2] << 8) | ip [3];
        if (l2 + total > caplen || ihl + 20 > total)
            continue;
        const byte *tcp = ip + ihl;
        int sport = (tcp [0] << 8) | tcp [1];
        int dport = (tcp [2] << 8) | tcp [3];
        size_t thl = (tcp [12] >> 4) * 4;
        if (ihl + thl > total)
            continue;
        packets++;
        const byte *payload = tcp + thl;
        size_t length = total - ihl - thl;
        if (sport == link_port || dport == link_port)
            zchunk_extend (link, payload, length);
        else
        if (sport == plain_port || dport == plain_port)
            zchunk_extend (plain, payload, length);
    }
    zchunk_destroy (&chunk);
    return packets;
}

static bool
s_contains (zchunk_t *haystack, const void *needle, size_t size)
{
    return zchunk_size (haystack) >= size
        && memmem (zchunk_data (haystack), zchunk_size (haystack), needle, size) != NULL;
}

static const char *
s_tshark_path (void)
{
    static const char *paths [] = { "/usr/bin/tshark", "/usr/local/bin/tshark", NULL };
    for (int i = 0; paths [i]; i++)
        if (access (paths [i], X_OK) == 0)
            return paths [i];
    return NULL;
}

Test (curve_capture, real_generation_link_holds_no_prompt_and_no_token_ids)
{
    const char *tshark = s_tshark_path ();
    if (!tshark)
        cr_skip_test ("tshark is not installed (Debian package tshark; scripts/install-deps.sh)");
    const char *names [] = { "splitmesh-broker", "splitmesh-tokenizer", "splitmesh-split-prefix",
                             "splitmesh-cloud-target", "splitmesh-edge-draft", "splitmesh-crypt-proxy" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        char path [PATH_MAX];
        snprintf (path, sizeof path, "%s/%s", sm_bin_dir (), names [i]);
        if (access (path, X_OK))
            cr_skip_test ("%s is not built", names [i]);
    }
    s_dir = sm_tmpdir_new ("curve_capture");
    cr_assert (s_dir);
    snprintf (s_run_dir, sizeof s_run_dir, "%s/run", s_dir);
    snprintf (s_model, sizeof s_model, "%s/tiny.gguf", s_dir);
    sm_cli_result_t *r = SM_SPLITMESH (60, "tiny-model", "--out", s_model, "--layers", "4",
                                       "--seed", "3", "--ctx", "256");
    cr_assert_eq (r->status, 0, "%s", r->err);
    sm_cli_result_destroy (&r);
    r = SM_SPLITMESH (120, "up", "--crypt", "--run-dir", s_run_dir, "--model", s_model,
                      "--split", "2", "--no-telemetry", "--no-gateway", "--timeout", "60");
    cr_assert_eq (r->status, 0, "up --crypt failed:\n%s\n%s", r->out, r->err);
    sm_cli_result_destroy (&r);
    char link [256] = "", cloud [256] = "";
    cr_assert_eq (sm_mesh_env (s_run_dir, "SPLITMESH_CRYPT_LINK", link, sizeof link), 0);
    cr_assert_eq (sm_mesh_env (s_run_dir, "SPLITMESH_CLOUD", cloud, sizeof cloud), 0);
    int link_port = sm_endpoint_port (link);
    int plain_port = sm_endpoint_port (cloud);
    cr_assert (link_port > 0 && plain_port > 0, "endpoints '%s' '%s'", link, cloud);
    size_t n_prompt = 0;
    int32_t *prompt_ids = s_tokenize (&n_prompt);
    cr_assert_geq (n_prompt, 8, "the prompt tokenized to %zu ids", n_prompt);

    char filter [128], pcap [1200], log [1200];
    snprintf (filter, sizeof filter, "tcp port %d or tcp port %d", link_port, plain_port);
    snprintf (pcap, sizeof pcap, "%s/link.pcap", s_dir);
    snprintf (log, sizeof log, "%s/tshark.log", s_dir);
    pid_t pid = sm_spawn (log, tshark, "-i", "lo", "-f", filter, "-F", "pcap", "-w", pcap, NULL);
    cr_assert_gt (pid, 0);
    //  tshark says "Capturing on ..." once dumpcap listens, or why not.
    bool capturing = false;
    for (int i = 0; i < 100 && !capturing && sm_alive (pid); i++) {
        zclock_sleep (100);
        FILE *file = fopen (log, "r");
        char line [1024];
        while (file && fgets (line, sizeof line, file))
            capturing |= strstr (line, "Capturing on") != NULL;
        if (file)
            fclose (file);
    }
    if (!capturing) {
        sm_kill (pid, SIGKILL, 1000);
        char reason [600] = "tshark cannot capture on lo (see log)";
        FILE *file = fopen (log, "r");
        if (file) {
            char line [512];
            while (fgets (line, sizeof line, file))
                if (*line && *line != '\n')
                    snprintf (reason, sizeof reason, "tshark cannot capture: %s", line);
            fclose (file);
        }
        cr_skip_test ("%s", reason);
    }
    zclock_sleep (300);
    size_t n_none = 0, n_prefix = 0;
    int32_t *answer_none = s_generate ("none", &n_none);
    int32_t *answer = s_generate ("prefix", &n_prefix);
    zclock_sleep (500);
    sm_kill (pid, SIGINT, 5000);        //  tshark flushes the file on SIGINT

    zchunk_t *on_link = zchunk_new (NULL, 0);
    zchunk_t *plain = zchunk_new (NULL, 0);
    int packets = s_split_pcap (pcap, link_port, plain_port, on_link, plain);
    cr_assert_gt (packets, 0, "the capture holds no TCP packets (%d)", packets);
    cr_assert_gt (zchunk_size (on_link), 1000, "no link traffic captured");
    cr_assert_gt (zchunk_size (plain), 1000, "no cloud broker traffic captured");

    //  1. The prompt's text: never in clear on the link.
    cr_assert (!s_contains (on_link, s_prompt, strlen (s_prompt)), "the prompt crossed the link in clear");
    cr_assert (!s_contains (on_link, "PURPLE-OCTOPUS", 14), "part of the prompt crossed the link in clear");
    //  2. The prompt's ids, the tokenizer's, inner ones (the edges may merge
    //  differently with what the pipeline adds around the prompt).
    msgpack_sbuffer ids;
    msgpack_sbuffer_init (&ids);
    s_pack_ids (&ids, prompt_ids + 1, n_prompt - 2);
    cr_assert (s_contains (plain, ids.data, ids.size),
               "control failed: the prompt's token ids not seen on the cloud broker port (none mode)");
    cr_assert (!s_contains (on_link, ids.data, ids.size), "the prompt's token ids crossed the link in clear");
    msgpack_sbuffer_destroy (&ids);
    //  3. The answer's ids as the cloud returns them, and the field names.
    int seen_plain = 0;
    for (size_t i = 0; i < n_prefix; i++) {
        msgpack_sbuffer pair;
        msgpack_sbuffer_init (&pair);
        s_pack_next_token (&pair, answer [i]);
        seen_plain += s_contains (plain, pair.data, pair.size);
        cr_assert (!s_contains (on_link, pair.data, pair.size),
                   "answer token %d (next_token) crossed the link in clear", answer [i]);
        msgpack_sbuffer_destroy (&pair);
    }
    cr_assert_gt (seen_plain, 0, "control failed: no answer token as next_token on the cloud broker port");
    const char *fields [] = { "next_token", "draft_tokens", "activations" };
    for (size_t i = 0; i < sizeof fields / sizeof fields [0]; i++) {
        cr_assert (s_contains (plain, fields [i], strlen (fields [i])),
                   "control failed: '%s' not seen on the cloud broker port", fields [i]);
        cr_assert (!s_contains (on_link, fields [i], strlen (fields [i])),
                   "the field name '%s' crossed the link in clear", fields [i]);
    }
    //  4. The answers' ids in sequence.
    int32_t *answers [] = { answer, answer_none };
    size_t counts [] = { n_prefix, n_none };
    for (int a = 0; a < 2; a++) {
        msgpack_sbuffer run;
        msgpack_sbuffer_init (&run);
        s_pack_ids (&run, answers [a], counts [a] < 6? counts [a]: 6);
        cr_assert (!s_contains (on_link, run.data, run.size), "the answer's token ids crossed the link in clear");
        msgpack_sbuffer_destroy (&run);
    }
    cr_log_info ("capture: %d TCP packets; link %zu bytes, cloud broker %zu bytes; prompt %zu ids; "
                 "answer %zu tokens, %d of them seen as next_token on the cloud broker port",
                 packets, zchunk_size (on_link), zchunk_size (plain), n_prompt, n_prefix, seen_plain);
    free (prompt_ids);
    free (answer);
    free (answer_none);
    zchunk_destroy (&on_link);
    zchunk_destroy (&plain);
}
