/* eddy_state_inspect(): a read-only report of a state directory. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "store/store.h"
#include "util/utf8.h"

typedef struct inspect_ctx {
    json_t *in_flight; /* array, arrival order */
    json_t *by_key;    /* key text -> entry in in_flight */
    const char *key;   /* detail this key, or NULL */
    json_t *detail_pending;
    json_t *journal;        /* every run in flight's (NULL: not kept, KEY_ONLY) */
    json_t *detail_journal; /* the detailed key's */
} inspect_ctx;

static json_t *key_value(const char *text)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    return v != NULL ? v : json_string(text);
}

static int on_pending(void *arg, const char *key, uint64_t seq, uint64_t line_no,
                      const char *record_json)
{
    inspect_ctx *c = arg;
    json_t *e = json_object_get(c->by_key, key);
    if (e == NULL) {
        e = json_pack("{s:o, s:I, s:I, s:i, s:b}", "key", key_value(key), "seq", (json_int_t)seq,
                      "line", (json_int_t)line_no, "pending", 0, "failed", 0);
        if (e == NULL || json_array_append_new(c->in_flight, e) != 0 ||
            json_object_set(c->by_key, key, e) != 0)
            return EDDY_ENOMEM;
    }
    json_object_set_new(e, "pending",
                        json_integer(json_integer_value(json_object_get(e, "pending")) + 1));
    if (c->key != NULL && strcmp(c->key, key) == 0) {
        json_t *rec = json_loads(record_json, JSON_ALLOW_NUL, NULL);
        if (json_array_append_new(c->detail_pending,
                                  json_pack("{s:I, s:I, s:o}", "seq", (json_int_t)seq, "line",
                                            (json_int_t)line_no, "record",
                                            rec != NULL ? rec : json_string(record_json))) != 0)
            return EDDY_ENOMEM;
    }
    return EDDY_OK;
}

static const char *status_name(int kind, int status)
{
    if (kind == EDDY_JREC_DONE)
        return "finished";
    if (kind == EDDY_JREC_FAILED)
        return "failed";
    switch (status) {
    case EDDY_JCALL_OK:
        return "ok";
    case EDDY_JCALL_ERROR:
        return "error";
    case EDDY_JCALL_PENDING:
        return "pending";
    }
    return "unknown";
}

static int on_jrec(void *arg, const eddy__jrec *r)
{
    inspect_ctx *c = arg;
    /* A retry's mark (src/exec/durable.c, RETRY_MARK_IDX): no call. */
    if (r->kind == EDDY_JREC_CALL && r->idx == INT64_MAX && r->fn_id != NULL &&
        strcmp(r->fn_id, "eddy.retried") == 0)
        return EDDY_OK;
    int failed_run = r->kind == EDDY_JREC_FAILED;
    if (c->journal == NULL && !failed_run && strcmp(c->key, r->key) != 0)
        return EDDY_OK; /* neither kept nor marking its run */
    json_t *e = json_pack("{s:o, s:I, s:s, s:s, s:I, s:s}", "key", key_value(r->key), "seq",
                          (json_int_t)r->seq, "event_id", r->event_id, "action", r->action, "idx",
                          (json_int_t)r->idx, "status", status_name(r->kind, r->status));
    if (e == NULL)
        return EDDY_ENOMEM;
    if (r->kind == EDDY_JREC_CALL) {
        json_object_set_new(e, "fn_id", json_string(r->fn_id != NULL ? r->fn_id : ""));
        json_object_set_new(e, "digest", json_string(r->digest != NULL ? r->digest : ""));
    }
    if (r->payload != NULL) {
        json_t *p = json_loads(r->payload, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        json_object_set_new(e, r->kind == EDDY_JREC_DONE ? "record" : "result",
                            p != NULL ? p : json_string(r->payload));
    }
    if (r->err_type != NULL)
        json_object_set_new(e, "error",
                            json_pack("{s:s, s:s}", "type", r->err_type, "message",
                                      r->err_msg != NULL ? r->err_msg : ""));
    /* The run in flight failed (its input was dead-lettered): the next run
     * ends it without running its actions. */
    json_t *run = r->kind == EDDY_JREC_FAILED ? json_object_get(c->by_key, r->key) : NULL;
    if (run != NULL && json_integer_value(json_object_get(run, "seq")) == (json_int_t)r->seq &&
        json_object_set_new(run, "failed", json_true()) != 0) {
        json_decref(e);
        return EDDY_ENOMEM;
    }
    if (c->key != NULL && strcmp(c->key, r->key) == 0 &&
        json_array_append(c->detail_journal, e) != 0) {
        json_decref(e);
        return EDDY_ENOMEM;
    }
    if (c->journal == NULL) {
        json_decref(e); /* the key's alone are kept */
        return EDDY_OK;
    }
    return json_array_append_new(c->journal, e) == 0 ? EDDY_OK : EDDY_ENOMEM;
}

json_t *eddy_state_inspect(const char *dir, const char *key, eddy_error **err)
{
    return eddy_state_inspect_ex(dir, key, 0, err);
}

json_t *eddy_state_inspect_ex(const char *dir, const char *key, unsigned flags, eddy_error **err)
{
    eddy__store *s = NULL;
    if (dir == NULL)
        return eddy__error_set(err, EDDY_EINVAL, "store", "no state directory given"), NULL;
    int key_only = key != NULL && (flags & EDDY_INSPECT_KEY_ONLY) != 0;
    if (eddy__store_open(&s, dir, NULL, NULL, err) != EDDY_OK)
        return NULL;
    inspect_ctx c = {.in_flight = json_array(),
                     .by_key = json_object(),
                     .key = key,
                     .detail_pending = json_array(),
                     .journal = key_only ? NULL : json_array(),
                     .detail_journal = json_array()};
    json_t *out = NULL;
    uint64_t off = 0, line = 0, sink = 0, dead = 0, next_run = 0, sink_id = 0, dead_id = 0;
    char *key_field = NULL, *plan_actions = NULL;
    /* The directory as the report names it: valid UTF-8 (JSON is), its
     * other bytes escaped (a name is bytes to the system). */
    char *dir_text = eddy__utf8_escaped(dir);
    /* Why the report could not be made, when not for want of memory. */
    const char *why = NULL;
    json_error_t jerr;
    eddy__store_counts n;
    int rc = EDDY_ENOMEM;
    if (dir_text == NULL || c.in_flight == NULL || c.by_key == NULL || c.detail_pending == NULL ||
        (c.journal == NULL && !key_only) || c.detail_journal == NULL)
        goto done;
    if ((rc = eddy__store_get_source_pos(s, &off, &line)) != EDDY_OK ||
        (rc = eddy__store_get_sink_pos(s, &sink)) != EDDY_OK ||
        (rc = eddy__store_get_meta_u64(s, "dead_offset", &dead)) != EDDY_OK ||
        (rc = eddy__store_get_meta_u64(s, "output_id", &sink_id)) != EDDY_OK ||
        (rc = eddy__store_get_meta_u64(s, "dead_id", &dead_id)) != EDDY_OK ||
        (rc = eddy__store_get_meta_u64(s, "next_run", &next_run)) != EDDY_OK ||
        (rc = eddy__store_get_meta_text(s, "key_field_name", &key_field)) != EDDY_OK ||
        (rc = eddy__store_get_meta_text(s, "plan_actions", &plan_actions)) != EDDY_OK ||
        (rc = eddy__store_counts_get(s, &n)) != EDDY_OK ||
        (rc = eddy__store_pending_load(s, on_pending, &c)) != EDDY_OK ||
        (rc = eddy__store_journal_load_all(s, on_jrec, &c)) != EDDY_OK)
        goto done;
    out = json_pack_ex(&jerr, 0, "{s:s, s:{s:I, s:I}, s:I, s:I, s:{s:I, s:I, s:I, s:I}, s:O}",
                       "state", dir_text, "source", "offset", (json_int_t)off, "line",
                       (json_int_t)line, "output_offset", (json_int_t)sink, "dead_letter_offset",
                       (json_int_t)dead, "counts", "keys", (json_int_t)n.keys, "pending",
                       (json_int_t)n.pending, "journal", (json_int_t)n.journal, "outbox",
                       (json_int_t)n.outbox, "in_flight", c.in_flight);
    if (out != NULL && c.journal != NULL && json_object_set(out, "journal", c.journal) != 0) {
        rc = EDDY_ENOMEM; /* out is freed at done */
        goto done;
    }
    /* The run counter is one for all keys; the key field's name is known
     * to states written since it was stored (null before), and so are the
     * plan's actions and what they listen to (shown, not trusted: null if
     * the row is not a JSON array). */
    json_t *kf = key_field != NULL ? json_string(key_field) : NULL; /* NULL: not UTF-8 */
    json_t *pa = plan_actions != NULL ? json_loads(plan_actions, 0, NULL) : NULL;
    if (pa != NULL && !json_is_array(pa)) {
        json_decref(pa);
        pa = NULL;
    }
    if (out == NULL) {
        json_decref(kf);
        json_decref(pa);
        rc = EDDY_ENOMEM;
        /* jansson says "NULL object value" of a value it could not make
         * (a string, for want of memory) as of a NULL argument. */
        if (json_error_code(&jerr) != json_error_out_of_memory &&
            json_error_code(&jerr) != json_error_null_value) {
            rc = EDDY_ESTORE;
            why = jerr.text;
        }
        goto done;
    }
    /* Each set takes its value, also when it fails: all are made. */
    int bad = json_object_set_new(out, "next_run", json_integer((json_int_t)next_run)) != 0;
    bad |= json_object_set_new(out, "key_field", kf != NULL ? kf : json_null()) != 0;
    bad |= json_object_set_new(out, "plan", pa != NULL ? pa : json_null()) != 0;
    /* Which the last run wrote to, a file or a standard stream (its
     * identity 1, durable.c), null when the state does not say (made by an
     * older eddy). A stream's position is where it stood, not a length
     * committed to a file: eddy never cuts a stream back, and what it holds
     * before that position may be anybody's (2>>log). */
    bad |= json_object_set_new(out, "output_stream",
                               sink_id == 0 ? json_null() : json_boolean(sink_id == 1)) != 0;
    bad |= json_object_set_new(out, "dead_letter_stream",
                               dead_id == 0 ? json_null() : json_boolean(dead_id == 1)) != 0;
    if (bad) {
        rc = EDDY_ENOMEM;
        goto done;
    }
    if (key != NULL) {
        uint64_t next_seq = 0;
        char *stm = NULL;
        rc = eddy__store_key_get(s, key, &next_seq, &stm);
        json_t *k = json_pack("{s:o, s:O}", "key", key_value(key), "pending", c.detail_pending);
        if (k == NULL || json_object_set_new(out, "key", k) != 0) {
            free(stm);
            rc = EDDY_ENOMEM;
            goto done;
        }
        json_object_set(k, "journal", c.detail_journal);
        if (rc == EDDY_OK) {
            json_t *m = json_loads(stm, JSON_ALLOW_NUL, NULL);
            /* Run numbers come from one counter for all keys (a key's row
             * holds the counter as of its last memory write). */
            if (next_run > next_seq)
                next_seq = next_run;
            json_object_set_new(k, "next_seq", json_integer((json_int_t)next_seq));
            json_object_set_new(k, "short_term_memory", m != NULL ? m : json_string(stm));
        } else if (rc == EDDY_ENOTFOUND && json_array_size(c.detail_pending) != 0) {
            json_object_set_new(k, "next_seq", json_integer((json_int_t)next_run));
            json_object_set_new(k, "short_term_memory", json_object()); /* none stored yet */
            rc = EDDY_OK;
        } else if (rc == EDDY_ENOTFOUND) {
            /* --key 42 for the string "42" (the usual slip): say so. */
            char *as_string = NULL;
            json_t *v = json_loads(key, JSON_DECODE_ANY, NULL);
            if (v != NULL && !json_is_string(v)) {
                json_t *str = json_string(key);
                char *q = str != NULL ? json_dumps(str, JSON_ENCODE_ANY) : NULL;
                uint64_t seq = 0;
                char *mem = NULL;
                if (q != NULL && eddy__store_key_get(s, q, &seq, &mem) == EDDY_OK)
                    as_string = q;
                else
                    free(q);
                free(mem);
                json_decref(str);
            }
            const char *never = json_is_object(v)  ? "an object"
                                : json_is_array(v) ? "an array"
                                : json_is_null(v)  ? "null"
                                                   : NULL;
            json_decref(v);
            if (never != NULL)
                eddy__error_set(err, EDDY_ENOTFOUND, "state",
                                "key %s is not in %s, nor can it be: an input whose key is %s is "
                                "dead-lettered, not run (give a string, a number, true or false, "
                                "as JSON: '\"u1\"' or 42)",
                                key, dir, never);
            else if (as_string != NULL)
                eddy__error_set(err, EDDY_ENOTFOUND, "state",
                                "key %s is not in %s, but the string %s is: give --key '%s'", key,
                                dir, as_string, as_string);
            else
                eddy__error_set(err, EDDY_ENOTFOUND, "state",
                                "key %s is not in %s: no short-term memory and no work in flight "
                                "(give the key as JSON: '\"u1\"' or 42)",
                                key, dir);
            free(as_string);
        }
        free(stm);
    }
done:
    if (rc != EDDY_OK) {
        if (rc != EDDY_ENOTFOUND)
            eddy__error_set(err, rc, "store", "%s: %s%s", dir,
                            why != NULL ? "cannot make the report: " : "",
                            why != NULL         ? why
                            : rc == EDDY_ENOMEM ? "out of memory"
                                                : eddy__store_error(s));
        json_decref(out);
        out = NULL;
    }
    json_decref(c.in_flight);
    json_decref(c.by_key);
    json_decref(c.detail_pending);
    json_decref(c.journal);
    json_decref(c.detail_journal);
    free(key_field);
    free(plan_actions);
    free(dir_text);
    eddy__store_close(s);
    return out;
}
