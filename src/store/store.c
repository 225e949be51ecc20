/*
 * The store interface: argument checks, then dispatch through the
 * implementation's operation table (store_impl.h).
 */
#include "store/store.h"

#include <stddef.h>
#include <string.h>

#include "core/error.h"
#include "store/store_impl.h"

int eddy__store_open(eddy__store **out, const char *dir, const char *plan_fingerprint,
                     const char *plan_actions, eddy_error **err)
{
    if (out == NULL)
        return eddy__error_set(err, EDDY_EINVAL, "store", "eddy__store_open: out is NULL");
    *out = NULL;
    if (dir == NULL || *dir == '\0')
        return eddy__error_set(err, EDDY_EINVAL, "store", "no state directory given");
    return eddy__store_sqlite_open(out, dir, plan_fingerprint, plan_actions, err);
}

void eddy__store_close(eddy__store *s)
{
    if (s != NULL)
        s->ops->close(s);
}

const char *eddy__store_error(const eddy__store *s)
{
    return s != NULL ? s->ops->error(s) : "";
}

int eddy__store_dirty(const eddy__store *s)
{
    return s != NULL ? s->ops->dirty(s) : 0;
}

int eddy__store_commit(eddy__store *s)
{
    if (s == NULL)
        return EDDY_EINVAL;
    return s->ops->commit(s);
}

int eddy__store_commit_nosync(eddy__store *s)
{
    if (s == NULL)
        return EDDY_EINVAL;
    return eddy__store_split_commit(s) ? s->ops->commit_nosync(s) : s->ops->commit(s);
}

int eddy__store_split_commit(const eddy__store *s)
{
    return s != NULL && s->ops->split_commit != NULL && s->ops->split_commit(s);
}

int eddy__store_sync(eddy__store *s)
{
    if (s == NULL)
        return EDDY_EINVAL;
    return eddy__store_split_commit(s) ? s->ops->sync(s) : EDDY_OK;
}

void eddy__store_sync_note(eddy__store *s)
{
    if (s != NULL && s->ops->sync_note != NULL)
        s->ops->sync_note(s);
}

int eddy__store_get_source_pos(eddy__store *s, uint64_t *offset, uint64_t *line)
{
    if (s == NULL || offset == NULL || line == NULL)
        return EDDY_EINVAL;
    return s->ops->get_source_pos(s, offset, line);
}

int eddy__store_set_source_pos(eddy__store *s, uint64_t offset, uint64_t line)
{
    if (s == NULL)
        return EDDY_EINVAL;
    return s->ops->set_source_pos(s, offset, line);
}

int eddy__store_get_sink_pos(eddy__store *s, uint64_t *offset)
{
    if (s == NULL || offset == NULL)
        return EDDY_EINVAL;
    return s->ops->get_sink_pos(s, offset);
}

int eddy__store_set_sink_pos(eddy__store *s, uint64_t offset)
{
    if (s == NULL)
        return EDDY_EINVAL;
    return s->ops->set_sink_pos(s, offset);
}

int eddy__store_get_meta_u64(eddy__store *s, const char *name, uint64_t *value)
{
    if (s == NULL || name == NULL || value == NULL)
        return EDDY_EINVAL;
    return s->ops->get_meta_u64(s, name, value);
}

int eddy__store_set_meta_u64(eddy__store *s, const char *name, uint64_t value)
{
    if (s == NULL || name == NULL)
        return EDDY_EINVAL;
    return s->ops->set_meta_u64(s, name, value);
}

int eddy__store_get_meta_text(eddy__store *s, const char *name, char **value)
{
    if (s == NULL || name == NULL || value == NULL)
        return EDDY_EINVAL;
    return s->ops->get_meta_text(s, name, value);
}

int eddy__store_set_meta_text(eddy__store *s, const char *name, const char *value)
{
    if (s == NULL || name == NULL || value == NULL)
        return EDDY_EINVAL;
    return s->ops->set_meta_text(s, name, value);
}

int eddy__store_keys_load(eddy__store *s, eddy__store_key_fn fn, void *arg)
{
    if (s == NULL || fn == NULL)
        return EDDY_EINVAL;
    return s->ops->keys_load(s, fn, arg);
}

int eddy__store_key_put(eddy__store *s, const char *key, uint64_t next_seq, const char *stm_json)
{
    if (s == NULL || key == NULL || stm_json == NULL)
        return EDDY_EINVAL;
    return s->ops->key_put(s, key, next_seq, stm_json);
}

int eddy__store_key_get(eddy__store *s, const char *key, uint64_t *next_seq, char **stm_json)
{
    if (s == NULL || key == NULL || next_seq == NULL || stm_json == NULL)
        return EDDY_EINVAL;
    *stm_json = NULL;
    return s->ops->key_get(s, key, next_seq, stm_json);
}

int eddy__store_pending_add(eddy__store *s, const char *key, uint64_t seq, uint64_t line_no,
                            const char *record_json)
{
    if (s == NULL || key == NULL || record_json == NULL)
        return EDDY_EINVAL;
    return s->ops->pending_add(s, key, seq, line_no, record_json);
}

int eddy__store_pending_remove(eddy__store *s, const char *key, uint64_t seq)
{
    if (s == NULL || key == NULL)
        return EDDY_EINVAL;
    return s->ops->pending_remove(s, key, seq);
}

int eddy__store_pending_load(eddy__store *s, eddy__store_pending_fn fn, void *arg)
{
    if (s == NULL || fn == NULL)
        return EDDY_EINVAL;
    return s->ops->pending_load(s, fn, arg);
}

int eddy__store_journal_put(eddy__store *s, const eddy__jrec *rec)
{
    if (s == NULL || rec == NULL || rec->key == NULL || rec->event_id == NULL ||
        rec->action == NULL)
        return EDDY_EINVAL;
    if (rec->kind == EDDY_JREC_CALL) {
        if (rec->idx < 0 || rec->status < EDDY_JCALL_OK || rec->status > EDDY_JCALL_PENDING)
            return EDDY_EINVAL;
    } else if (rec->kind == EDDY_JREC_DONE || rec->kind == EDDY_JREC_FAILED) {
        if (rec->idx != (rec->kind == EDDY_JREC_DONE ? -1 : -2))
            return EDDY_EINVAL;
    } else {
        return EDDY_EINVAL;
    }
    return s->ops->journal_put(s, rec);
}

int eddy__store_journal_cut(eddy__store *s, const char *key, uint64_t seq, const char *event_id,
                            const char *action, int64_t from_idx)
{
    if (s == NULL || key == NULL || event_id == NULL || action == NULL)
        return EDDY_EINVAL;
    return s->ops->journal_cut(s, key, seq, event_id, action, from_idx);
}

int eddy__store_journal_load_run(eddy__store *s, const char *key, uint64_t seq,
                                 eddy__store_jrec_fn fn, void *arg)
{
    if (s == NULL || key == NULL || fn == NULL)
        return EDDY_EINVAL;
    return s->ops->journal_load_run(s, key, seq, fn, arg);
}

int eddy__store_journal_load_all(eddy__store *s, eddy__store_jrec_fn fn, void *arg)
{
    if (s == NULL || fn == NULL)
        return EDDY_EINVAL;
    return s->ops->journal_load_all(s, fn, arg);
}

int eddy__store_journal_prune_run(eddy__store *s, const char *key, uint64_t seq)
{
    if (s == NULL || key == NULL)
        return EDDY_EINVAL;
    return s->ops->journal_prune_run(s, key, seq);
}

int eddy__store_outbox_add(eddy__store *s, const char *line, size_t len, uint64_t *id)
{
    if (s == NULL || (line == NULL && len > 0) || id == NULL ||
        (len > 0 && memchr(line, '\n', len) != NULL))
        return EDDY_EINVAL;
    return s->ops->outbox_add(s, line != NULL ? line : "", len, id);
}

int eddy__store_outbox_load(eddy__store *s, eddy__store_outbox_fn fn, void *arg)
{
    if (s == NULL || fn == NULL)
        return EDDY_EINVAL;
    return s->ops->outbox_load(s, fn, arg);
}

int eddy__store_outbox_ack(eddy__store *s, uint64_t up_to)
{
    if (s == NULL)
        return EDDY_EINVAL;
    return s->ops->outbox_ack(s, up_to);
}

int eddy__store_counts_get(eddy__store *s, eddy__store_counts *out)
{
    if (s == NULL || out == NULL)
        return EDDY_EINVAL;
    return s->ops->counts_get(s, out);
}
