/*
 * libFuzzer target for the journal log's rows (src/store/jlog.c): a row of
 * the state file is untrusted. The input is the row's blob.
 *
 * Checks: decoding never reads past the blob or crashes; when it succeeds,
 * encoding the decoded entries again gives the same bytes (the encoding is
 * canonical) unless some were legacy 'P' entries, which encode as 'p': then
 * the new encoding decodes to the same entries, and replaying them into a
 * view and listing it works and leaks nothing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz.h"
#include "store/jlog.h"

static int legacy;

static int reencode(void *arg, const eddy__jlog_entry *e)
{
    eddy__buf *b = arg;
    legacy |= e->legacy;
    if (e->cut)
        return eddy__jlog_cut(b, e->rec.key, e->rec.seq, e->rec.event_id, e->rec.action,
                              e->rec.idx);
    return eddy__jlog_put(b, &e->rec);
}

static int count(void *arg, const eddy__jrec *r)
{
    CHECK(r->key != NULL && r->event_id != NULL && r->action != NULL);
    (*(size_t *)arg)++;
    return EDDY_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eddy__buf b = {0};
    legacy = 0;
    int rc = eddy__jlog_walk(data, size, reencode, &b);
    CHECK(rc == EDDY_OK || rc == EDDY_ESTATE || rc == EDDY_ENOMEM);
    if (rc == EDDY_OK && legacy) {
        /* The 'p' encoding of the same entries is canonical. */
        eddy__buf c = {0};
        legacy = 0;
        rc = eddy__jlog_walk(b.p, b.len, reencode, &c);
        CHECK(rc == EDDY_OK || rc == EDDY_ENOMEM);
        CHECK(rc != EDDY_OK || (!legacy && c.len == b.len && memcmp(c.p, b.p, b.len) == 0));
        free(c.p);
    } else if (rc == EDDY_OK) {
        CHECK(b.len == size && (size == 0 || memcmp(b.p, data, size) == 0));
    }
    if (rc == EDDY_OK) {
        eddy__jview *v = eddy__jview_new();
        if (v != NULL && eddy__jlog_walk(data, size, eddy__jview_apply_fn, v) == EDDY_OK) {
            size_t n = 0;
            eddy__jview_emit(v, NULL, NULL, count, &n);
        }
        eddy__jview_free(v);
    }
    free(b.p);
    return 0;
}
