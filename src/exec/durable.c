/* Durable execution; see the design notes in durable.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/timerfd.h>
#endif

#include "core/error.h"
#include "core/log.h"
#include "exec/durable.h"
#include "io/paths.h"
#include "store/store.h"
#ifdef EDDY_TEST_HOOKS
#include "store/store_impl.h"
#endif
#include "util/fault.h"
#include "util/hash.h"
#include "util/hex.h"
#include "util/jalloc.h"
#include "util/jsonw.h"
#include "util/map.h"
#include "util/thread.h"
#include "util/utf8.h"

/* ---------------------------------------------------------------- journal */

typedef struct jent {
    char *event_id, *action;
    int64_t idx;
    int kind, status;
    char *fn_id, *digest, *payload, *err_type, *err_msg;
} jent;

/* The journal of a resumed run: its records in the order the store gave
 * them, and an index of them by (event, action, call index) so that a run
 * of many finished actions finds each in constant time. Without the index
 * (out of memory building it) lookups scan. */
struct eddy__journal {
    jent *v;
    size_t n, cap;
    uint32_t *slot; /* open addressing: position in v + 1, or 0 */
    size_t mask;    /* slots - 1; slots a power of two >= 2n */
};

static void jent_clear(jent *e)
{
    free(e->event_id);
    free(e->action);
    free(e->fn_id);
    free(e->digest);
    free(e->payload);
    free(e->err_type);
    free(e->err_msg);
}

void eddy__journal_free(eddy__journal *j)
{
    if (j == NULL)
        return;
    for (size_t i = 0; i < j->n; i++)
        jent_clear(&j->v[i]);
    free(j->v);
    free(j->slot);
    free(j);
}

static size_t jent_hash(const char *event_id, const char *action, int64_t idx)
{
    uint64_t h = eddy__hash_bytes(event_id, strlen(event_id));
    h ^= eddy__hash_bytes(action, strlen(action)) * 0x9e3779b97f4a7c15ULL;
    return (size_t)eddy__mix64(h ^ (uint64_t)idx);
}

/* (Re)build the index of j's records. */
static void journal_index(eddy__journal *j)
{
    free(j->slot);
    j->slot = NULL;
    j->mask = 0;
    if (j->n == 0 || j->n >= UINT32_MAX / 2)
        return;
    size_t cap = 16;
    while (cap < 2 * j->n)
        cap <<= 1;
    if ((j->slot = calloc(cap, sizeof(*j->slot))) == NULL)
        return;
    j->mask = cap - 1;
    for (size_t i = 0; i < j->n; i++) {
        jent *e = &j->v[i];
        size_t h = jent_hash(e->event_id, e->action, e->idx) & j->mask;
        while (j->slot[h] != 0)
            h = (h + 1) & j->mask;
        j->slot[h] = (uint32_t)(i + 1);
    }
}

/* *dst = a copy of s, NULL for NULL; 0 when the copy of s failed. */
static int copy_field(char **dst, const char *s)
{
    *dst = NULL;
    if (s == NULL)
        return 1;
    if (eddy__fault("alloc.journal"))
        return 0; /* test hook */
    return (*dst = strdup(s)) != NULL;
}

static int journal_add(void *arg, const eddy__jrec *r)
{
    eddy__journal *j = arg;
    if (j->n == j->cap) {
        size_t ncap = j->cap != 0 ? j->cap * 2 : 8;
        jent *nv = realloc(j->v, ncap * sizeof(*nv));
        if (nv == NULL)
            return EDDY_ENOMEM;
        j->v = nv;
        j->cap = ncap;
    }
    jent *e = &j->v[j->n];
    memset(e, 0, sizeof(*e));
    e->idx = r->idx;
    e->kind = r->kind;
    e->status = r->status;
    /* Every field the record has, or none: one without a field it has
     * would read as another record (a missing result replays as null, a
     * missing fn_id or digest is compared), and eddy__durable_unpend would
     * store it so, damaged. */
    if (!copy_field(&e->event_id, r->event_id) || !copy_field(&e->action, r->action) ||
        !copy_field(&e->fn_id, r->fn_id) || !copy_field(&e->digest, r->digest) ||
        !copy_field(&e->payload, r->payload) || !copy_field(&e->err_type, r->err_type) ||
        !copy_field(&e->err_msg, r->err_msg) || e->event_id == NULL || e->action == NULL) {
        jent_clear(e);
        return EDDY_ENOMEM;
    }
    j->n++;
    return EDDY_OK;
}

static jent *journal_find(eddy__journal *j, const char *event_id, const char *action, int64_t idx)
{
    if (j == NULL)
        return NULL;
    if (j->slot != NULL) {
        for (size_t h = jent_hash(event_id, action, idx) & j->mask; j->slot[h] != 0;
             h = (h + 1) & j->mask) {
            jent *e = &j->v[j->slot[h] - 1];
            if (e->idx == idx && strcmp(e->event_id, event_id) == 0 &&
                strcmp(e->action, action) == 0)
                return e;
        }
        return NULL;
    }
    for (size_t i = 0; i < j->n; i++) {
        jent *e = &j->v[i];
        if (e->idx == idx && strcmp(e->event_id, event_id) == 0 && strcmp(e->action, action) == 0)
            return e;
    }
    return NULL;
}

/* Drop the call records of an action execution from position from on, or
 * (only) at that position alone. */
static void journal_cut_ex(eddy__journal *j, const char *event_id, const char *action, int64_t from,
                           int only)
{
    if (j == NULL)
        return;
    size_t w = 0;
    for (size_t i = 0; i < j->n; i++) {
        jent *e = &j->v[i];
        if (e->kind == EDDY_JREC_CALL && (only ? e->idx == from : e->idx >= from) &&
            strcmp(e->event_id, event_id) == 0 && strcmp(e->action, action) == 0) {
            jent_clear(e);
            continue;
        }
        j->v[w++] = *e;
    }
    j->n = w;
    journal_index(j);
}

static void journal_cut(eddy__journal *j, const char *event_id, const char *action, int64_t from)
{
    journal_cut_ex(j, event_id, action, from, 0);
}

/* ---------------------------------------------------------------- store errors */

static void store_failed(eddy_runtime *rt, const char *what)
{
    eddy__runtime_fail(rt, EDDY_ESTORE,
                       eddy_error_newf("store", "state store failure while %s: %s", what,
                                       eddy__store_error(rt->store)));
}

#define STORE_DO(rt, call, what)                        \
    do {                                                \
        if (!(rt)->store_failed && (call) != EDDY_OK) { \
            (rt)->store_failed = 1;                     \
            store_failed((rt), (what));                 \
        }                                               \
    } while (0)

/* With the first source position: the head of the input, once the reader
 * read its first line (see eddy__source_head). */
static void save_head(eddy_runtime *rt)
{
    uint64_t len, hash;
    if (rt->source == NULL || !eddy__source_head(rt->source, &len, &hash))
        return;
    rt->head_saved = 1;
    if (len == 0)
        return; /* an empty first line: nothing to tell inputs apart by */
    STORE_DO(rt, eddy__store_set_meta_u64(rt->store, "input_head_len", len),
             "recording the input's first line");
    STORE_DO(rt, eddy__store_set_meta_u64(rt->store, "input_head", hash),
             "recording the input's first line");
}

/* ---------------------------------------------------------------- outbox */

typedef struct outline {
    eddy__queue node;
    uint64_t id;
    uint64_t txn; /* on rt->outbox_unsynced: its commit */
    char channel;
    size_t len;
    char text[];
} outline;

static int write_line(eddy_runtime *rt, char channel, const char *text, size_t len)
{
    eddy__sink *s = channel == 'd' ? rt->dead : rt->sink;
    int rc = eddy__sink_write(s, text, len);
    if (rc != EDDY_OK)
        rt->output_failed = 1;
    if (rc != EDDY_OK)
        eddy__runtime_fail(rt, EDDY_EIO,
                           eddy_error_newf("io", "%s",
                                           eddy__sink_error(s)[0] != '\0' ? eddy__sink_error(s)
                                                                          : "cannot write output"));
    return rc;
}

int eddy__durable_emit(eddy_runtime *rt, char channel, const json_t *line)
{
    if (rt->store == NULL) {
        eddy__sink *s = channel == 'd' ? rt->dead : rt->sink;
        int rc = eddy__sink_write_json(s, line);
        if (rc != EDDY_OK)
            eddy__runtime_fail(rt, EDDY_EIO,
                               eddy_error_newf("io", "%s",
                                               eddy__sink_error(s)[0] != '\0'
                                                   ? eddy__sink_error(s)
                                                   : "cannot write output"));
        return rc;
    }
    rt->scratch.len = 0;
    outline *o = NULL;
    if (eddy__json_write(&rt->scratch, line) != EDDY_OK || eddy__fault("alloc.emit") ||
        (o = malloc(sizeof(*o) + rt->scratch.len + 2)) == NULL) {
        eddy__runtime_fail(rt, EDDY_ENOMEM, eddy_error_new("memory", "out of memory"));
        return EDDY_ENOMEM;
    }
    size_t len = rt->scratch.len;
    /* The stored line starts with its channel byte. */
    o->channel = channel;
    o->text[0] = channel;
    memcpy(o->text + 1, rt->scratch.p, len);
    o->text[len + 1] = '\0';
    o->len = len;
    STORE_DO(rt, eddy__store_outbox_add(rt->store, o->text, len + 1, &o->id), "journaling output");
    eddy__queue_insert_tail(&rt->outbox_uncommitted, &o->node);
    return EDDY_OK;
}

/* Flush and sync both files; NULL, or the text of the failure. */
static const char *sync_sinks(eddy_runtime *rt)
{
    if (eddy__sink_sync(rt->sink) != EDDY_OK)
        return eddy__sink_error(rt->sink);
    if (eddy__sink_sync(rt->dead) != EDDY_OK)
        return eddy__sink_error(rt->dead);
    return NULL;
}

/*
 * Record the files' lengths, in the open transaction, each with a
 * fingerprint of the bytes before it (see sink_mode): once per sync of the
 * files, never per line.
 */
static int record_sinks(eddy_runtime *rt)
{
    int rc;
    if ((rc = eddy__store_set_sink_pos(rt->store, eddy__sink_offset(rt->sink))) != EDDY_OK ||
        (rc = eddy__store_set_meta_u64(rt->store, "dead_offset", eddy__sink_offset(rt->dead))) !=
            EDDY_OK ||
        (rc = eddy__store_set_meta_u64(rt->store, "output_tail", eddy__sink_tail_hash(rt->sink))) !=
            EDDY_OK)
        return rc;
    return eddy__store_set_meta_u64(rt->store, "dead_tail", eddy__sink_tail_hash(rt->dead));
}

/*
 * Write committed outbox lines to their files at once (readers see them after
 * one commit), but sync the files and record their new committed lengths, in
 * the next transaction together with the removal of those lines, only every
 * SINK_SYNC_MS: that fdatasync is off the path of every run. Until then the
 * lines stay in the outbox; after a crash the files are cut back to their
 * committed lengths and the outbox is written again, so each line still lands
 * exactly once.
 */
#define SINK_SYNC_MS 50

static void deliver(eddy_runtime *rt, int final)
{
    /* Once an output failed, nothing more is written or acknowledged: the
     * lines stay in the outbox and a restart writes them again from the
     * committed file length (acknowledging them here would lose them). Also
     * when eddy was stopping already for another reason, which the failure
     * does not replace as the run's outcome. */
    int ok = !rt->output_failed;
    while (!eddy__queue_empty(&rt->outbox_committed)) {
        eddy__queue *q = eddy__queue_head(&rt->outbox_committed);
        eddy__queue_remove(q);
        outline *o = eddy__queue_data(q, outline, node);
        if (ok && write_line(rt, o->channel, o->text + 1, o->len) != EDDY_OK)
            ok = 0;
        if (ok)
            rt->outbox_written = o->id;
        free(o);
    }
    uint64_t now = uv_hrtime();
    if (!ok || rt->outbox_written <= rt->outbox_acked ||
        (!final && (now - rt->sink_synced) / 1000000 < SINK_SYNC_MS))
        return;
    /* The files' bytes must be on disk before a commit claims them. */
    const char *why = sync_sinks(rt);
    if (why != NULL) {
        rt->output_failed = 1;
        eddy__runtime_fail(rt, EDDY_EIO, eddy_error_new("io", why));
        return;
    }
    rt->sink_synced = now;
    rt->outbox_acked = rt->outbox_written;
    STORE_DO(rt, eddy__store_outbox_ack(rt->store, rt->outbox_written), "acknowledging output");
    STORE_DO(rt, record_sinks(rt), "recording the output positions");
}

static void free_lines(eddy__queue *h)
{
    while (!eddy__queue_empty(h)) {
        eddy__queue *q = eddy__queue_head(h);
        eddy__queue_remove(q);
        free(eddy__queue_data(q, outline, node));
    }
}

/* After a store failure: every waiting task goes on (it sees the stop and
 * unwinds). */
static void release_commit_waiters(eddy_runtime *rt)
{
    eddy__queue_move(&rt->sync_wait, &rt->commit_wait);
    while (!eddy__queue_empty(&rt->commit_wait)) {
        eddy__queue *q = eddy__queue_head(&rt->commit_wait);
        eddy__queue_remove(q);
        eddy__task_ready(eddy__queue_data(q, eddy_ctx, node));
    }
}

/* ---------------------------------------------------------------- syncer */

typedef struct eddy__syncer eddy__syncer;

struct eddy__syncer {
    uv_thread_t thread;
    uv_mutex_t lock;
    uv_sem_t wake; /* posted to the sleeping syncer (see sleeping) */
    eddy__store *store;
    uint64_t want;  /* newest commit to make durable (set by the mailbox) */
    uint64_t done;  /* newest commit made durable (set by the syncer) */
    uint64_t syncs; /* syncs made and not yet counted in the stats */
    int err;        /* errno of a failed sync: the syncer then stops */
    int sleeping;   /* the syncer waits on wake; whoever posts it clears it */
    int stop;
    int joined;       /* the thread is gone (syncer_stop) */
    eddy__pool *pool; /* told of each sync, for the jobs waiting on one */
    uv_async_t async; /* syncer -> mailbox: done or err moved */
    int refd;         /* async referenced: a sync is outstanding (mailbox only) */
    /* Mailbox only: wakes the loop when a sync put off while calls run
     * is due (request_sync). A timerfd where there is one: libuv's timers
     * count milliseconds. */
#ifdef __linux__
    int due_fd;
    uv_poll_t due;
#else
    uv_timer_t due;
#endif
    int due_armed;
    int open_handles; /* async and due: s is freed when both are closed */
};

static void syncer_main(void *arg)
{
    eddy__thread_name("eddy-sync");
    eddy__syncer *s = arg;
    uv_mutex_lock(&s->lock);
    for (;;) {
        /* A semaphore, not a condition variable: woken, the syncer takes
         * the lock as anyone does (glibc's condition variables take it
         * back marked contended, so every unlock after a wake-up was a
         * futex call). */
        if (!s->stop && s->err == 0 && s->want == s->done) {
            s->sleeping = 1;
            uv_mutex_unlock(&s->lock);
            uv_sem_wait(&s->wake);
            uv_mutex_lock(&s->lock);
            continue;
        }
        if (s->stop || s->err != 0)
            break;
        uint64_t target = s->want; /* every commit up to it was written */
        uv_mutex_unlock(&s->lock);
        errno = 0;
        int rc = eddy__store_sync(s->store);
        int e = rc == EDDY_OK ? 0 : errno != 0 ? errno : EIO;
        uv_mutex_lock(&s->lock);
        eddy__pool *pool = s->pool;
        if (e != 0) {
            s->err = e; /* recorded before the jobs are canceled */
        } else {
            s->done = target;
            s->syncs++;
        }
        /* The jobs and the mailbox are told with the lock let go: the
         * mailbox takes it to ask for syncs and to take their outcome. */
        uv_mutex_unlock(&s->lock);
        if (pool != NULL && e != 0)
            eddy__pool_sync_failed(pool);
        else if (pool != NULL)
            eddy__pool_synced(pool, target); /* its waiting jobs go on */
        uv_async_send(&s->async);
        if (e == 0)
            eddy__store_sync_note(s->store); /* after the waiters were told */
        uv_mutex_lock(&s->lock);
    }
    uv_mutex_unlock(&s->lock);
}

/* Tasks and outbox lines whose commit is now durable go on. */
static void synced(eddy_runtime *rt, uint64_t done)
{
    if (done > rt->txn_synced)
        rt->txn_synced = done;
    while (!eddy__queue_empty(&rt->sync_wait)) {
        eddy__queue *q = eddy__queue_head(&rt->sync_wait);
        eddy_ctx *t = eddy__queue_data(q, eddy_ctx, node);
        if (t->wait_txn > rt->txn_synced)
            break;
        eddy__queue_remove(q);
        eddy__task_ready(t);
    }
    while (!eddy__queue_empty(&rt->outbox_unsynced)) {
        eddy__queue *q = eddy__queue_head(&rt->outbox_unsynced);
        if (eddy__queue_data(q, outline, node)->txn > rt->txn_synced)
            break;
        eddy__queue_remove(q);
        eddy__queue_insert_tail(&rt->outbox_committed, q);
    }
    eddy__syncer *s = rt->syncer;
    if (s != NULL && s->refd && rt->txn_synced >= rt->txn_written) {
        uv_unref((uv_handle_t *)&s->async);
        s->refd = 0;
    }
}

/* A sync failed (errno e): what was committed may not be on disk, so
 * nothing may go on from it. */
static void sync_failed(eddy_runtime *rt, int e)
{
    if (!rt->store_failed) {
        rt->store_failed = 1;
        eddy__runtime_fail(rt, EDDY_ESTORE,
                           eddy_error_newf("store",
                                           "state store failure while syncing %s/eddy.db-wal "
                                           "to disk: %s",
                                           rt->cv->state, strerror(e)));
    }
    release_commit_waiters(rt);
}

/* Take what the syncer did: syncs made, or its failure. */
static void take_syncs(eddy_runtime *rt)
{
    eddy__syncer *s = rt->syncer;
    uv_mutex_lock(&s->lock);
    uint64_t done = s->done;
    int e = s->err;
    rt->stats.syncs += s->syncs;
    s->syncs = 0;
    uv_mutex_unlock(&s->lock);
    if (e != 0) {
        if (s->refd) {
            uv_unref((uv_handle_t *)&s->async);
            s->refd = 0;
        }
        sync_failed(rt, e);
        return;
    }
    synced(rt, done);
    if (!rt->store_failed)
        deliver(rt, 0);
}

static void on_synced(uv_async_t *h)
{
    take_syncs(h->data);
}

void eddy__durable_job_canceled(eddy_runtime *rt)
{
    /* Only a failed sync cancels a job before the stop (close comes after
     * it), and the syncer records its failure before it cancels: take it
     * now, in case its wake-up comes after the worker's. */
    if (!rt->stopping && rt->syncer != NULL)
        take_syncs(rt);
}

/* Every commit written is durable (synced here, or whole without a
 * syncer): count the sync and let the waiting jobs and tasks go on. */
static void all_synced(eddy_runtime *rt)
{
    rt->stats.syncs++;
    if (rt->pool != NULL)
        eddy__pool_synced(rt->pool, rt->txn_written);
    synced(rt, rt->txn_written);
}

/* Make every commit durable on the mailbox thread itself. */
static int sync_here(eddy_runtime *rt)
{
    errno = 0;
    if (eddy__store_sync(rt->store) != EDDY_OK) {
        if (rt->pool != NULL)
            eddy__pool_sync_failed(rt->pool);
        sync_failed(rt, errno != 0 ? errno : EIO);
        return EDDY_ESTORE;
    }
    all_synced(rt);
    eddy__store_sync_note(rt->store); /* after the waiters were told */
    return EDDY_OK;
}

/* The commits up to rt->txn_written are to be made durable. When the
 * syncer is idle, the mailbox syncs itself once it has nothing else to do:
 * the hand-over to the syncer and back costs two thread wake-ups (at one
 * call in flight, ~40 % of a commit's latency here). With one task ready
 * and no job in the pool waiting for a sync, the sync is put off for up to
 * SYNC_PUT_OFF_NS: the task mostly just hands a call to a worker or ends its
 * run, and the sync then also takes what it writes (at one run in flight,
 * two syncs per run of two calls instead of 2.4). With more tasks ready the
 * next turn takes longer than the put-off, and jobs held for the sync, or
 * the tasks that will hand them over, would wait for it: W3 at C = 256 gave
 * 0.56-0.69 of its bound with the put-off, 0.68-0.78 without. */
#define SYNC_PUT_OFF_NS 100000 /* about what the hand-over costs */

/*
 * With no task ready, no task or job waiting for the sync and calls running
 * on workers, only output lines wait for it (a run's end, typically), and
 * the next call result is likely to come soon: the sync is put off for up
 * to SYNC_CALLS_PUT_OFF_NS so that one sync takes both. One run at a time,
 * the end of a run and the first result of the next shared no sync before:
 * the mailbox made the first sync as soon as it was idle, and the result
 * arrived while it waited for the disk. W3 at C = 1: 2.01 -> 1.21 syncs
 * per run, 0.887-0.901 -> 0.906-0.911 of the bound alternating with the
 * build before, p50 11.5-11.7 -> 11.4-11.5 ms. The output lines wait at
 * most that long more.
 */
#define SYNC_CALLS_PUT_OFF_NS 200000

/* Exactly one task is ready. */
static int ready_one(const eddy_runtime *rt)
{
    return rt->ready.next != &rt->ready && rt->ready.next->next == &rt->ready;
}

#ifdef __linux__
static void on_sync_due(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    eddy__syncer *s = h->data;
    uint64_t expirations;
    if (read(s->due_fd, &expirations, sizeof(expirations)) < 0) {
        /* EAGAIN: disarmed meanwhile. Either way the loop now turns. */
    }
    s->due_armed = 0;
}
#else
static void on_sync_due(uv_timer_t *h)
{
    ((eddy__syncer *)h->data)->due_armed = 0;
}
#endif

/* Wake the loop in ns (it may block meanwhile); 0 disarms. */
static void sync_due_in(eddy__syncer *s, uint64_t ns)
{
    if (ns == 0 && !s->due_armed)
        return;
#ifdef __linux__
    struct itimerspec t = {.it_value = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)}};
    if (timerfd_settime(s->due_fd, 0, &t, NULL) != 0)
        return; /* the next wake-up of the loop brings the sync */
#else
    if (ns == 0)
        uv_timer_stop(&s->due);
    else
        uv_timer_start(&s->due, on_sync_due, (ns + 999999) / 1000000, 0);
#endif
    s->due_armed = ns != 0;
}

static void request_sync(eddy_runtime *rt)
{
    eddy__syncer *s = rt->syncer;
    if (s == NULL) {
        rt->txn_requested = rt->txn_written;
        all_synced(rt); /* the commit synced itself */
        return;
    }
    uv_mutex_lock(&s->lock);
    int idle = s->want == s->done;
    uv_mutex_unlock(&s->lock);
    uint64_t put_off = 0;
    if (idle && rt->barrier_max <= rt->txn_synced) {
        if (ready_one(rt))
            put_off = SYNC_PUT_OFF_NS;
        else if (eddy__queue_empty(&rt->ready) && eddy__queue_empty(&rt->sync_wait) &&
                 rt->pool != NULL && eddy__pool_pending(rt->pool) > 0)
            put_off = SYNC_CALLS_PUT_OFF_NS;
    }
    if (put_off > 0) {
        uint64_t now = uv_hrtime();
        if (rt->sync_owed_since == 0)
            rt->sync_owed_since = now;
        uint64_t waited = now - rt->sync_owed_since;
        if (waited < put_off) {
            if (eddy__queue_empty(&rt->ready))
                sync_due_in(s, put_off - waited); /* the loop may block */
            return;
        }
    }
    rt->sync_owed_since = 0;
    sync_due_in(s, 0);
    rt->txn_requested = rt->txn_written;
    if (idle && eddy__queue_empty(&rt->ready)) {
        sync_here(rt);
        return;
    }
    uv_mutex_lock(&s->lock);
    s->want = rt->txn_written;
    int wake = s->sleeping;
    s->sleeping = 0;
    uv_mutex_unlock(&s->lock);
    if (wake) /* after the unlock: it would only wait for the lock */
        uv_sem_post(&s->wake);
    if (!s->refd) {
        uv_ref((uv_handle_t *)&s->async);
        s->refd = 1;
    }
}

static void free_syncer_handle(uv_handle_t *h)
{
    eddy__syncer *s = h->data;
    if (--s->open_handles > 0)
        return;
#ifdef __linux__
    close(s->due_fd);
#endif
    uv_sem_destroy(&s->wake);
    uv_mutex_destroy(&s->lock);
    free(s);
}

/* Stop the syncer thread and wait for it: then no sync of it runs beside
 * the mailbox's. Returns the errno of its failure, or 0. */
static int syncer_stop(eddy_runtime *rt)
{
    eddy__syncer *s = rt->syncer;
    if (s == NULL)
        return 0;
    if (!s->joined) {
        uv_mutex_lock(&s->lock);
        s->stop = 1;
        int wake = s->sleeping;
        s->sleeping = 0;
        uv_mutex_unlock(&s->lock);
        if (wake)
            uv_sem_post(&s->wake);
        uv_thread_join(&s->thread);
        s->joined = 1;
        rt->stats.syncs += s->syncs;
        s->syncs = 0;
    }
    return s->err;
}

void eddy__durable_shutdown(eddy_runtime *rt)
{
    eddy__syncer *s = rt->syncer;
    if (s == NULL)
        return;
    syncer_stop(rt);
    s->async.data = s;
    uv_close((uv_handle_t *)&s->async, free_syncer_handle);
    uv_close((uv_handle_t *)&s->due, free_syncer_handle);
    rt->syncer = NULL; /* later commits, if any, are whole again */
}

/* Start the syncer when the store splits its commits; without it commits
 * stay whole. */
static void syncer_start(eddy_runtime *rt)
{
    if (!eddy__store_split_commit(rt->store))
        return;
    eddy__syncer *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return;
    s->store = rt->store;
    if (uv_mutex_init(&s->lock) != 0)
        goto fail_lock;
    if (uv_sem_init(&s->wake, 0) != 0)
        goto fail_sem;
#ifdef __linux__
    s->due_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (s->due_fd < 0)
        goto fail_due;
    if (uv_poll_init(&rt->loop, &s->due, s->due_fd) != 0) {
        close(s->due_fd);
        goto fail_due;
    }
    uv_poll_start(&s->due, UV_READABLE, on_sync_due);
#else
    uv_timer_init(&rt->loop, &s->due);
#endif
    s->due.data = s;
    uv_unref((uv_handle_t *)&s->due);
    s->open_handles = 2;
    if (uv_async_init(&rt->loop, &s->async, on_synced) != 0) {
        s->open_handles = 1;
        uv_close((uv_handle_t *)&s->due, free_syncer_handle);
        return; /* the closing handle frees s */
    }
    s->async.data = rt;
    uv_unref((uv_handle_t *)&s->async);
    if (uv_thread_create(&s->thread, syncer_main, s) != 0) {
        s->async.data = s;
        uv_close((uv_handle_t *)&s->async, free_syncer_handle);
        uv_close((uv_handle_t *)&s->due, free_syncer_handle);
        return; /* the closing handles free s */
    }
    rt->syncer = s;
    return;
fail_due:
    uv_sem_destroy(&s->wake);
fail_sem:
    uv_mutex_destroy(&s->lock);
fail_lock:
    free(s);
}

/* The records of the tasks on commit_wait are in commit txn, now written.
 * A task whose call ran on a worker goes on at once (its run's next call
 * waits for the sync: eddy__durable_gate); the others wait for the sync. */
static void wait_sync(eddy_runtime *rt, uint64_t txn)
{
    while (!eddy__queue_empty(&rt->commit_wait)) {
        eddy__queue *q = eddy__queue_head(&rt->commit_wait);
        eddy__queue_remove(q);
        eddy_ctx *t = eddy__queue_data(q, eddy_ctx, node);
        int early = t->resume_written && rt->syncer != NULL && txn > rt->txn_synced;
        t->resume_written = 0;
        if (early) {
            if (t->key->need_txn < txn)
                t->key->need_txn = txn;
            eddy__task_ready(t);
        } else {
            t->wait_txn = txn;
            eddy__queue_insert_tail(&rt->sync_wait, q);
        }
    }
}

/* A failure in the middle of the work of a turn (out of memory between an
 * action's completion record and its output line, say) leaves the open
 * transaction half done: it is never committed (the store rolls it back
 * when it closes), as if the process had died. A stop asked for, or an
 * action's failure, leaves it whole. */
static int poisoned(const eddy_runtime *rt)
{
    return rt->rc != EDDY_OK && rt->rc != EDDY_ESTOPPED && rt->rc != EDDY_EACTION;
}

/* Commit the open transaction (store dirty or source position moved): it
 * becomes commit rt->txn_written; the tasks waiting for it go on or wait
 * for its sync, and its outbox lines for the sync. EDDY_OK, or EDDY_ESTORE
 * after failing the runtime (the waiting tasks then see the stop). */
static int commit_open(eddy_runtime *rt)
{
    if (rt->next_seq != rt->next_seq_saved) {
        /* Runs admitted since: the counter goes with them, once per commit. */
        STORE_DO(rt, eddy__store_set_meta_u64(rt->store, "next_run", rt->next_seq),
                 "saving the run counter");
        if (rt->store_failed) {
            release_commit_waiters(rt);
            return EDDY_ESTORE;
        }
        rt->next_seq_saved = rt->next_seq;
    }
    if (rt->source_offset != rt->source_saved) {
        /* Admitted inputs and dead-lettered lines moved the source
         * position: it is written with them, once per commit. */
        STORE_DO(rt, eddy__store_set_source_pos(rt->store, rt->source_offset, rt->source_line),
                 "recording the source position");
        if (rt->store_failed) {
            release_commit_waiters(rt);
            return EDDY_ESTORE;
        }
        rt->source_saved = rt->source_offset;
        if (!rt->head_saved)
            save_head(rt);
    }
    int rc =
        rt->syncer != NULL ? eddy__store_commit_nosync(rt->store) : eddy__store_commit(rt->store);
    if (rc != EDDY_OK) {
        rt->store_failed = 1;
        store_failed(rt, "committing");
        release_commit_waiters(rt); /* now: nothing else may wake the loop */
        return EDDY_ESTORE;
    }
    rt->stats.commits++;
    rt->commit_now = 0;
    rt->txn_start = uv_hrtime();
    uint64_t txn = ++rt->txn_written;
    wait_sync(rt, txn);
    while (!eddy__queue_empty(&rt->outbox_uncommitted)) {
        eddy__queue *q = eddy__queue_head(&rt->outbox_uncommitted);
        eddy__queue_remove(q);
        eddy__queue_data(q, outline, node)->txn = txn;
        eddy__queue_insert_tail(&rt->outbox_unsynced, q);
    }
    return EDDY_OK;
}

void eddy__durable_went_on(eddy_ctx *t)
{
    eddy_runtime *rt = t->rt;
    if (rt->store != NULL && !rt->store_failed)
        t->key->need_txn = rt->txn_written + 1; /* the open transaction's number */
}

/* The commit t's key waits for (key->need_txn); when that is the open
 * transaction (eddy__durable_went_on), it commits at the end of this turn
 * rather than after --commit-interval-ms. */
static uint64_t key_need(const eddy_ctx *t)
{
    eddy_runtime *rt = t->rt;
    uint64_t need = t->key->need_txn;
    if (need > rt->txn_written)
        rt->commit_now = 1;
    return need;
}

uint64_t eddy__durable_barrier(const eddy_ctx *t)
{
    eddy_runtime *rt = t->rt;
    if (rt->store == NULL || t->key->need_txn <= rt->txn_synced)
        return 0;
    uint64_t need = key_need(t);
    if (need > rt->barrier_max)
        rt->barrier_max = need;
    return need;
}

uint64_t eddy__durable_barrier_open(eddy_ctx *t)
{
    eddy_runtime *rt = t->rt;
    if (rt->store == NULL)
        return 0;
    uint64_t need = rt->txn_written + 1;
    rt->commit_now = 1;
    if (need > rt->barrier_max)
        rt->barrier_max = need;
    return need;
}

void eddy__durable_pool_ready(eddy_runtime *rt)
{
    eddy__syncer *s = rt->syncer;
    if (s == NULL)
        return;
    uv_mutex_lock(&s->lock);
    s->pool = rt->pool;
    uv_mutex_unlock(&s->lock);
}

int eddy__durable_settle(eddy_ctx *t)
{
    eddy_runtime *rt = t->rt;
    uint64_t need = t->key->need_txn;
    if (need <= rt->txn_synced)
        return EDDY_OK;
    if (rt->store_failed)
        return EDDY_ESTORE;
    if (poisoned(rt))
        return EDDY_ECANCELED; /* the open transaction may be half done */
    /* The run went on with a record of the open transaction (an earlier
     * durable_execute): the task cannot wait for the turn's commit, so the
     * transaction commits here, in the middle of the action's step. What
     * it holds is whole: the other tasks' work between their steps, and
     * this task's journal records (its memory writes, events and outputs
     * go in when it finishes). */
    if (need > rt->txn_written && commit_open(rt) != EDDY_OK)
        return EDDY_ESTORE;
    int rc = EDDY_OK;
    if (rt->syncer != NULL)
        rc = sync_here(rt);
    else
        all_synced(rt); /* a whole commit: synced already */
    /* Every commit written is on disk: no sync is owed for them. */
    rt->txn_requested = rt->txn_written;
    rt->sync_owed_since = 0;
    if (rt->syncer != NULL)
        sync_due_in(rt->syncer, 0);
    return rc;
}

int eddy__durable_gate(eddy_ctx *t)
{
    eddy_runtime *rt = t->rt;
    if (t->key->need_txn <= rt->txn_synced)
        return EDDY_OK;
    uint64_t need = key_need(t);
    /* sync_wait is in commit order: go after the last task waiting for the
     * same or an earlier commit. */
    eddy__queue *q = rt->sync_wait.prev;
    while (q != &rt->sync_wait && eddy__queue_data(q, eddy_ctx, node)->wait_txn > need)
        q = q->prev;
    t->wait_txn = need;
    eddy__queue_insert_tail(q->next, &t->node);
    t->state = EDDY_TASK_SUSPENDED;
    eddy__coro_yield();
    return rt->stopping ? EDDY_ECANCELED : EDDY_OK;
}

void eddy__durable_turn(eddy_runtime *rt, int final)
{
    if (rt->store == NULL)
        return;
    if (rt->store_failed || poisoned(rt)) {
        release_commit_waiters(rt); /* they see the stop and unwind */
        return;
    }
    /* A sync put off (request_sync) takes what this turn wrote. */
    int owed = rt->txn_requested < rt->txn_written;
    /* Admitted inputs and dead-lettered lines moved the source position:
     * it is written with them, once per commit. */
    int moved = rt->source_offset != rt->source_saved;
    int due = final || owed || rt->commit_now || !eddy__queue_empty(&rt->commit_wait) ||
              (eddy__queue_empty(&rt->ready) && !rt->admit_more) ||
              (uv_hrtime() - rt->txn_start) / 1000000 >= rt->cv->commit_interval_ms;
    if (!eddy__store_dirty(rt->store) && !moved) {
        /* Their writes went out with an earlier commit (a Python task waits
         * for calls that completed on both sides of a commit), which may
         * not be on disk yet. */
        wait_sync(rt, rt->txn_written);
        synced(rt, rt->txn_synced);
    } else if (due) { /* otherwise more work is ready: let the transaction grow */
        if (commit_open(rt) != EDDY_OK)
            return;
    }
    if (final) {
        /* At the end the mailbox waits for the disk itself, alone: a sync
         * failing on the syncer beside it would go unseen (the file's
         * error is reported once), and the outputs would go out. */
        int e = syncer_stop(rt);
        if (e != 0) {
            sync_failed(rt, e);
            return;
        }
        if (rt->txn_synced < rt->txn_written && sync_here(rt) != EDDY_OK)
            return;
    } else if (rt->txn_requested < rt->txn_written) {
        request_sync(rt);
    }
    deliver(rt, final);
    if (final && eddy__store_dirty(rt->store) && !rt->store_failed) {
        if (eddy__store_commit(rt->store) != EDDY_OK) {
            rt->store_failed = 1;
            store_failed(rt, "committing");
        }
    }
}

/* v as exact compact JSON text in the runtime's scratch buffer (valid until
 * the next use of it), or NULL after failing the runtime on ENOMEM. */
static const char *scratch_json(eddy_runtime *rt, const json_t *v)
{
    rt->scratch.len = 0;
    if (eddy__fault("alloc.scratch") ||
        eddy__json_write_ex(&rt->scratch, v, EDDY__JSONW_EXACT) != EDDY_OK) {
        eddy__runtime_fail(rt, EDDY_ENOMEM, eddy_error_new("memory", "out of memory"));
        return NULL;
    }
    return rt->scratch.p;
}

/* ---------------------------------------------------------------- admission and runs */

void eddy__durable_admit(eddy_runtime *rt, eddy__key *k, const eddy__input *in)
{
    (void)k;
    if (rt->store == NULL)
        return;
    const char *rec = scratch_json(rt, in->record);
    if (rec == NULL)
        return;
    STORE_DO(rt, eddy__store_pending_add(rt->store, in->key, in->seq, in->line_no, rec),
             "appending an input");
}

int eddy__durable_key_load(eddy_runtime *rt, eddy__key *k)
{
    uint64_t next_seq = 0;
    char *text = NULL;
    json_t *stm = NULL;
    int rc = eddy__store_key_get(rt->store, k->text, &next_seq, &text);
    int row_bad = rc == EDDY_ESTATE; /* the store says what is wrong with the row */
    if (rc == EDDY_ENOTFOUND) {
        rc = (stm = json_object()) != NULL ? EDDY_OK : EDDY_ENOMEM;
    } else if (rc == EDDY_OK && (rc = eddy__durable_decode_memory(text, &stm)) == EDDY_OK) {
        rt->stats.keys_loaded++;
        k->stm_bytes = strlen(text);
    }
    free(text);
    if (rc == EDDY_OK) {
        k->stm = stm;
        return EDDY_OK;
    }
    if (rc == EDDY_ENOMEM)
        eddy__runtime_fail(rt, rc,
                           eddy_error_newf("memory",
                                           "out of memory reading the short-term memory of key %s",
                                           k->text));
    else if (rc == EDDY_ESTATE && row_bad)
        eddy__runtime_fail(rt, rc, eddy_error_newf("state", "%s", eddy__store_error(rt->store)));
    else if (rc == EDDY_ESTATE)
        eddy__runtime_fail(rt, rc,
                           eddy_error_newf("state",
                                           "%s/eddy.db: the short-term memory of key %s does not "
                                           "decode; the state is damaged",
                                           rt->cv->state, k->text));
    else {
        rc = EDDY_ESTORE;
        rt->store_failed = 1;
        eddy__runtime_fail(rt, rc,
                           eddy_error_newf("store",
                                           "state store failure while reading the short-term "
                                           "memory of key %s: %s",
                                           k->text, eddy__store_error(rt->store)));
    }
    return rc;
}

void eddy__durable_run_end(eddy_runtime *rt, eddy__key *k)
{
    eddy__journal_free(k->journal);
    k->journal = NULL;
    if (rt->store == NULL)
        return;
    STORE_DO(rt, eddy__store_journal_prune_run(rt->store, k->text, k->seq), "pruning the journal");
    STORE_DO(rt, eddy__store_pending_remove(rt->store, k->text, k->seq), "ending a run");
    if (!k->stm_dirty)
        return; /* the store has it as it is */
    const char *stm = scratch_json(rt, k->stm);
    if (stm != NULL) {
        STORE_DO(rt, eddy__store_key_put(rt->store, k->text, rt->next_seq, stm), "saving memory");
        k->stm_bytes = rt->scratch.len;
    }
    k->stm_dirty = 0;
}

/* ---------------------------------------------------------------- finished actions */

/* Append ,"name": and the exact text of v. */
static int put_member(eddy__buf *b, const char *name, size_t n, const json_t *v)
{
    return eddy__buf_put(b, name, n) == EDDY_OK &&
                   eddy__json_write_ex(b, v, EDDY__JSONW_EXACT) == EDDY_OK
               ? EDDY_OK
               : EDDY_ENOMEM;
}

/* The completion record of t into rt->scratch, NUL-terminated:
 * {"order":N,"events":[{"type":T,"id":I,"attrs":{...}},...],"stm":{...},
 * "sensory":{...}} (stm and sensory only when the action wrote them), the
 * text a jansson object built in that order would give, written straight
 * (building it cost ~11 k instructions per run, a sixth of W3's mailbox). */
static int done_record(eddy_runtime *rt, eddy_ctx *t)
{
    eddy__buf *b = &rt->scratch;
    b->len = 0;
    int ok = eddy__buf_put(b, "{\"order\":", 9) == EDDY_OK &&
             eddy__json_write_int(b, (json_int_t)t->key->completions) == EDDY_OK &&
             eddy__buf_put(b, ",\"events\":[", 11) == EDDY_OK;
    eddy__queue *q;
    int first = 1;
    eddy__queue_foreach(q, &t->sent)
    {
        if (!ok)
            break;
        eddy_event *ev = eddy__queue_data(q, eddy_event, node);
        const char *id = eddy_event_id(ev);
        ok = eddy__buf_put(b, first ? "{\"type\":" : ",{\"type\":", first ? 8 : 9) == EDDY_OK &&
             eddy__json_write_str(b, ev->type, strlen(ev->type)) == EDDY_OK &&
             eddy__buf_put(b, ",\"id\":", 6) == EDDY_OK &&
             eddy__json_write_str(b, id, strlen(id)) == EDDY_OK &&
             put_member(b, ",\"attrs\":", 9, ev->attrs) == EDDY_OK &&
             eddy__buf_put(b, "}", 1) == EDDY_OK;
        first = 0;
    }
    const json_t *stm = eddy__memview_updates(&t->stm.view);
    const json_t *sen = eddy__memview_updates(&t->sensory.view);
    ok = ok && eddy__buf_put(b, "]", 1) == EDDY_OK &&
         (stm == NULL || put_member(b, ",\"stm\":", 7, stm) == EDDY_OK) &&
         (sen == NULL || put_member(b, ",\"sensory\":", 11, sen) == EDDY_OK) &&
         eddy__buf_put(b, "}", 1) == EDDY_OK && eddy__buf_nul(b) == EDDY_OK;
    return ok ? EDDY_OK : EDDY_ENOMEM;
}

void eddy__durable_task_done(eddy_runtime *rt, eddy_ctx *t)
{
    if (rt->store == NULL || t->replayed)
        return;
    eddy__key *k = t->key;
    if (done_record(rt, t) != EDDY_OK) {
        eddy__runtime_fail(rt, EDDY_ENOMEM, eddy_error_new("memory", "out of memory"));
        return;
    }
    eddy__jrec r = {.key = k->text,
                    .seq = k->seq,
                    .event_id = eddy_event_id(t->event),
                    .action = t->action->name,
                    .idx = -1,
                    .kind = EDDY_JREC_DONE,
                    .payload = rt->scratch.p,
                    .run = &k->store_run};
    STORE_DO(rt, eddy__store_journal_put(rt->store, &r), "journaling a finished action");
}

void eddy__durable_run_failed(eddy_runtime *rt, eddy_ctx *t, const char *etype, const char *emsg)
{
    if (rt->store == NULL)
        return;
    eddy__key *k = t->key;
    eddy__jrec r = {.key = k->text,
                    .seq = k->seq,
                    .event_id = eddy_event_id(t->event),
                    .action = t->action->name,
                    .idx = -2, /* (-1 is its DONE record's) */
                    .kind = EDDY_JREC_FAILED,
                    .err_type = etype,
                    .err_msg = emsg,
                    .run = &k->store_run};
    STORE_DO(rt, eddy__store_journal_put(rt->store, &r), "journaling a failed run");
}

int eddy__durable_replay_finished(eddy_runtime *rt, eddy_ctx *t)
{
    eddy__key *k = t->key;
    jent *e = journal_find(k->journal, eddy_event_id(t->event), t->action->name, -1);
    if (e == NULL || e->kind != EDDY_JREC_DONE)
        return 0;
    json_t *rec = NULL;
    int rc = eddy__durable_decode_done(e->payload, &rec);
    if (rc == EDDY_ENOMEM) {
        /* Stop, as for its events below: the open transaction is not
         * committed, and the next run replays it. */
        eddy__runtime_fail(rt, EDDY_ENOMEM,
                           eddy_error_newf("memory",
                                           "out of memory decoding the journal record of action "
                                           "'%s' for key %s",
                                           t->action->name, k->text));
        return 1;
    }
    if (rc != EDDY_OK) {
        eddy__runtime_fail(rt, EDDY_ESTATE,
                           eddy_error_newf("state",
                                           "%s/eddy.db: the journal record of action '%s' for "
                                           "key %s does not decode; the state is damaged",
                                           rt->cv->state, t->action->name, k->text));
        return 1;
    }
    json_t *events = json_object_get(rec, "events");
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        const char *type = json_string_value(json_object_get(ev, "type"));
        const char *id = json_string_value(json_object_get(ev, "id"));
        json_t *attrs = json_object_get(ev, "attrs");
        /* Outputs were put in the outbox when the action first finished. */
        if (strcmp(type, EDDY_OUTPUT_EVENT) == 0)
            continue;
        eddy_event *nev = eddy_event_new(type, json_incref(attrs));
        if (nev == NULL) {
            /* Without all its events the action is not replayed: stop (the
             * open transaction is then not committed) rather than go on
             * without them. */
            eddy__runtime_fail(rt, EDDY_ENOMEM, eddy_error_new("memory", "out of memory"));
            break;
        }
        eddy__event_set_id(nev, strtoull(id, NULL, 16));
        nev->sent = 1;
        eddy__queue_insert_tail(&t->sent, &nev->node);
    }
    json_decref(rec);
    t->replayed = 1;
    rt->stats.actions_replayed++;
    return 1;
}

/* ---------------------------------------------------------------- durable calls */

void eddy__durable_digest(const void *bytes, size_t len, char out[17])
{
    eddy__hex64(eddy__hash_bytes(bytes, len), out);
}

int eddy__durable_digest_json(eddy_runtime *rt, const json_t *args, char out[17])
{
    /* The canonical text: compact, keys sorted, reals exact; written to the
     * runtime's scratch buffer (no allocation per call once it has grown). */
    if (args == NULL) {
        eddy__durable_digest("null", 4, out);
        return EDDY_OK;
    }
    eddy__buf *b = &rt->scratch;
    b->len = 0;
    int rc = eddy__fault("alloc.digest")
                 ? EDDY_ENOMEM
                 : eddy__json_write_ex(b, args, EDDY__JSONW_SORT_KEYS | EDDY__JSONW_EXACT);
    if (rc == EDDY_ELIMIT) {
        /* Too deep to write (so for jansson's parser too): the digest of
         * "null", the same on every run. */
        eddy__durable_digest("null", 4, out);
        return EDDY_OK;
    }
    if (rc != EDDY_OK)
        return EDDY_ENOMEM; /* not the digest of "null": see durable.h */
    eddy__durable_digest(b->p, b->len, out);
    return EDDY_OK;
}

void eddy__durable_wait_commit(eddy_ctx *t, int written)
{
    eddy__queue_insert_tail(&t->rt->commit_wait, &t->node);
    t->state = EDDY_TASK_SUSPENDED;
    t->resume_written = written;
}

/* Store again a record of k's run read back from the journal. */
static void put_back(eddy_runtime *rt, eddy__key *k, const jent *e, const char *what)
{
    eddy__jrec r = {.key = k->text,
                    .seq = k->seq,
                    .event_id = e->event_id,
                    .action = e->action,
                    .idx = e->idx,
                    .kind = e->kind,
                    .status = e->status,
                    .fn_id = e->fn_id,
                    .digest = e->digest,
                    .payload = e->payload,
                    .err_type = e->err_type,
                    .err_msg = e->err_msg,
                    .run = &k->store_run};
    STORE_DO(rt, eddy__store_journal_put(rt->store, &r), what);
}

/* The journal position of an action execution's retry mark (see the retry
 * in eddy__durable_plan): past any call's, so that no call finds it and a
 * cut from any position takes it too. */
#define RETRY_MARK_IDX INT64_MAX
#define RETRY_MARK_FN  "eddy.retried"

int eddy__durable_plan(eddy_ctx *t, const char *fn_id, const char *digest, int reconcilable,
                       eddy__dcall *c)
{
    eddy_runtime *rt = t->rt;
    memset(c, 0, sizeof(*c));
    c->what = EDDY_DCALL_RUN;
    /* Not snprintf: this runs for every durable call. */
    size_t dl = digest != NULL ? strnlen(digest, sizeof(c->digest) - 1) : 0;
    memcpy(c->digest, digest != NULL ? digest : "", dl);
    c->digest[dl] = '\0';
    if (rt->stopping)
        return EDDY_ECANCELED;
    if (t->nondet != NULL)
        return EDDY_ENONDET; /* past a strict divergence: the journal no longer applies */
    rt->stats.durable_calls++;
    c->idx = t->call_index++;
    if (rt->store == NULL)
        return EDDY_OK;
    int64_t idx = c->idx;
    eddy__key *k = t->key;
    jent *j = journal_find(k->journal, eddy_event_id(t->event), t->action->name, idx);
    if (j == NULL || j->kind != EDDY_JREC_CALL) {
        c->what = reconcilable ? EDDY_DCALL_RUN_PENDING : EDDY_DCALL_RUN;
        return EDDY_OK;
    }
    if (strcmp(j->fn_id, fn_id) == 0 && strcmp(j->digest, digest) == 0) {
        switch (j->status) {
        case EDDY_JCALL_OK:
            rt->stats.durable_replayed++;
            c->what = EDDY_DCALL_REPLAY_OK;
            c->payload = j->payload != NULL ? j->payload : "null";
            return EDDY_OK;
        case EDDY_JCALL_ERROR:
            if (rt->cv->retry_failed_calls) {
                /* A failure journaled by an earlier process (an action
                 * execution never re-runs in the one that journaled it):
                 * asked to, this run calls it again, and its new outcome
                 * replaces the record in the store. The records after it
                 * stay: they replay while the action makes the same calls
                 * (a reconciled call's PENDING goes to its reconciler).
                 * Where it makes others (the new outcome took it another
                 * way), the journal is cut there with a note, not the
                 * non-determinism warning (below): this run knows
                 * (t->retried), and so does any later one until then,
                 * from the retry mark journaled now, beyond every call
                 * position (a crash or stop may come between the new
                 * outcome and that cut). */
                eddy__log(EDDY_LOG_NOTE,
                          "durable call %lld of action '%s' for key %s raised %s before; "
                          "calling %s again (--retry-failed-calls)",
                          (long long)idx, t->action->name, k->text,
                          j->err_type != NULL ? j->err_type : "an exception", fn_id);
                journal_cut_ex(k->journal, eddy_event_id(t->event), t->action->name, idx, 1);
                if (!t->retried && journal_find(k->journal, eddy_event_id(t->event),
                                                t->action->name, RETRY_MARK_IDX) == NULL) {
                    eddy__jrec mark = {.key = k->text,
                                       .seq = k->seq,
                                       .event_id = eddy_event_id(t->event),
                                       .action = t->action->name,
                                       .idx = RETRY_MARK_IDX,
                                       .kind = EDDY_JREC_CALL,
                                       .status = EDDY_JCALL_OK,
                                       .fn_id = RETRY_MARK_FN,
                                       .digest = "",
                                       .payload = "null",
                                       .run = &k->store_run};
                    STORE_DO(rt, eddy__store_journal_put(rt->store, &mark), "journaling a retry");
                }
                t->retried = 1;
                c->what = reconcilable ? EDDY_DCALL_RUN_PENDING : EDDY_DCALL_RUN;
                return rt->store_failed ? EDDY_ESTORE : EDDY_OK;
            }
            rt->stats.durable_replayed++;
            c->what = EDDY_DCALL_REPLAY_ERROR;
            c->payload = j->payload;
            c->err_type = j->err_type;
            c->err_msg = j->err_msg;
            return EDDY_OK;
        default:
            /* PENDING: the process died while the call ran. Without a
             * reconciler the call simply runs again. */
            c->what = reconcilable ? EDDY_DCALL_RECONCILE : EDDY_DCALL_RUN;
            return EDDY_OK;
        }
    }
    if (t->retried || journal_find(k->journal, eddy_event_id(t->event), t->action->name,
                                   RETRY_MARK_IDX) != NULL) {
        /* Another path after a call retried (in this run, or in one before
         * it that stopped before the cut): what the retry is for. */
        eddy__log(EDDY_LOG_NOTE,
                  "durable call %lld of action '%s' for key %s differs from the journal after a "
                  "retried call (--retry-failed-calls); re-executing from there",
                  (long long)idx, t->action->name, k->text);
    } else if (rt->cv->strict_determinism) {
        /* The action execution fails with this, whatever it does with the
         * code (task_finish), and makes no more durable calls. */
        t->nondet = eddy_error_newf("NonDeterminism",
                                    "durable call %lld of action '%s' for key %s was "
                                    "%s(args %s) in the journal but is now %s(args %s)",
                                    (long long)idx, t->action->name, k->text, j->fn_id, j->digest,
                                    fn_id, digest);
        if (t->nondet == NULL) {
            eddy__runtime_fail(rt, EDDY_ENOMEM, eddy_error_new("memory", "out of memory"));
            return EDDY_ENOMEM;
        }
        return EDDY_ENONDET;
    } else {
        eddy__log(EDDY_LOG_WARNING,
                  "non-deterministic durable call %lld of action '%s' for key %s: the journal "
                  "has %s(args %s), the action now calls %s(args %s); re-executing from there",
                  (long long)idx, t->action->name, k->text, j->fn_id, j->digest, fn_id, digest);
    }
    journal_cut(k->journal, eddy_event_id(t->event), t->action->name, idx);
    STORE_DO(rt,
             eddy__store_journal_cut(rt->store, k->text, k->seq, eddy_event_id(t->event),
                                     t->action->name, idx),
             "cutting the journal");
    c->what = reconcilable ? EDDY_DCALL_RUN_PENDING : EDDY_DCALL_RUN;
    return rt->store_failed ? EDDY_ESTORE : EDDY_OK;
}

int eddy__durable_record(eddy_ctx *t, const char *fn_id, const eddy__dcall *c, int status,
                         const char *payload, const char *err_type, const char *err_msg)
{
    eddy_runtime *rt = t->rt;
    if (rt->store == NULL)
        return EDDY_OK;
    eddy__jrec r = {.key = t->key->text,
                    .seq = t->key->seq,
                    .event_id = eddy_event_id(t->event),
                    .action = t->action->name,
                    .idx = c->idx,
                    .kind = EDDY_JREC_CALL,
                    .status = status,
                    .fn_id = fn_id,
                    .digest = c->digest,
                    .payload = payload,
                    .err_type = err_type,
                    .err_msg = err_msg,
                    .run = &t->key->store_run};
    STORE_DO(rt, eddy__store_journal_put(rt->store, &r), "journaling a durable call");
    return rt->store_failed ? EDDY_ESTORE : EDDY_OK;
}

/* What eddy__durable_unpend keeps: the call records of one action execution
 * after a position. */
typedef struct unpend {
    const char *event_id, *action;
    int64_t idx;
    eddy__journal *later;
} unpend;

static int unpend_collect(void *arg, const eddy__jrec *r)
{
    unpend *u = arg;
    if (r->kind != EDDY_JREC_CALL || r->idx <= u->idx || strcmp(r->event_id, u->event_id) != 0 ||
        strcmp(r->action, u->action) != 0)
        return EDDY_OK;
    return journal_add(u->later, r);
}

void eddy__durable_unpend(eddy_ctx *t, const eddy__dcall *c)
{
    eddy_runtime *rt = t->rt;
    if (rt->store == NULL || rt->store_failed)
        return;
    /* The journal can only be cut from a position on: the records after
     * this one (a call of the same batch that ran, or an earlier process's)
     * are put back after the cut. Not read, the record stays (and the
     * reconciler decides, as after a crash). */
    eddy__key *k = t->key;
    eddy__journal later = {0};
    unpend u = {eddy_event_id(t->event), t->action->name, c->idx, &later};
    if (eddy__store_journal_load_run(rt->store, k->text, k->seq, unpend_collect, &u) == EDDY_OK) {
        STORE_DO(rt,
                 eddy__store_journal_cut(rt->store, k->text, k->seq, u.event_id, u.action, c->idx),
                 "dropping the start of a call that never ran");
        for (size_t i = 0; i < later.n && !rt->store_failed; i++)
            put_back(rt, k, &later.v[i], "dropping the start of a call that never ran");
    }
    for (size_t i = 0; i < later.n; i++)
        jent_clear(&later.v[i]);
    free(later.v);
}

/* Suspend the C task until the open transaction commits: until it is
 * written (written: the result of a call that ran on a worker) or synced. */
static void wait_commit(eddy_ctx *t, int written)
{
    eddy__durable_wait_commit(t, written);
    eddy__coro_yield();
}

static int journal_call(eddy_ctx *t, const char *fn_id, const eddy__dcall *c, int status,
                        const json_t *result, const eddy_error *err)
{
    const char *payload = NULL;
    if (status == EDDY_JCALL_OK) {
        json_t *null = result == NULL ? json_null() : NULL;
        payload = scratch_json(t->rt, result != NULL ? result : null);
        json_decref(null);
        if (payload == NULL)
            return EDDY_ENOMEM;
    }
    return eddy__durable_record(t, fn_id, c, status, payload,
                                err != NULL ? eddy_error_type(err) : NULL,
                                err != NULL ? eddy_error_message(err) : NULL);
}

/* Run fn (inline or on the pool), normalising its failure to EDDY_ECALL with
 * an error object. */
static int run_fn(eddy_ctx *t, int async, eddy_call_fn fn, const json_t *args, void *arg,
                  json_t **result, eddy_error **err)
{
    int rc;
    *result = NULL;
    *err = NULL;
    if (async) {
        eddy_async_call c = {.fn = fn, .args = args, .arg = arg};
        rc = eddy_ctx_execute_async_all(t, &c, 1);
        if (rc != EDDY_OK && rc != EDDY_ECALL)
            return rc;
        rc = c.rc;
        *result = c.result;
        *err = c.err;
    } else {
        /* Inline, on the mailbox thread: a context call from the body would
         * take journal positions and send events the replay never makes. */
        t->in_body = 1;
        rc = fn(args, arg, result, err);
        t->in_body = 0;
    }
    if (rc != EDDY_OK) {
        json_decref(*result);
        *result = NULL;
        if (*err == NULL)
            *err = eddy_error_new(eddy_err_name(rc), eddy_strerror(rc));
        return EDDY_ECALL;
    }
    eddy_error_free(*err);
    *err = NULL;
    return EDDY_OK;
}

/* The checks every durable call makes first, in this order: the thread and
 * the handle (nothing of t read before; stale: the refusal's text when t
 * is not the running task's), then the call takes the handle, so that an
 * earlier refusal no longer explains the action's failure. */
static int durable_enter(eddy_ctx *t, const char *stale)
{
    if (t == NULL)
        return EDDY_EINVAL;
    int rc = eddy__ctx_usable(t, stale);
    if (rc == EDDY_OK)
        eddy__ctx_called(t);
    return rc;
}

/* Then those of each call: fn and fn_id, which is journaled, and shown as
 * JSON. */
static int durable_fn_ok(eddy_ctx *t, const char *fn_id, eddy_call_fn fn)
{
    if (fn_id == NULL || *fn_id == '\0' || fn == NULL)
        return eddy__ctx_refuse(t, EDDY_EINVAL,
                                fn == NULL ? "a durable call's fn is NULL"
                                           : "a durable call's fn_id is empty");
    if (!eddy__utf8_valid(fn_id))
        return eddy__ctx_refuse(t, EDDY_EINVAL, "a durable call's fn_id is not UTF-8");
    return EDDY_OK;
}

static int durable_call(eddy_ctx *t, int async, const char *fn_id, const json_t *args,
                        eddy_call_fn fn, eddy_call_fn reconcile, void *arg, json_t **result,
                        eddy_error **err)
{
    /* The call's outcome: always set, NULL until there is one (eddy.h). */
    if (result != NULL)
        *result = NULL;
    if (err != NULL)
        *err = NULL;
    int rc = durable_enter(t, "a durable call: " EDDY__CTX_STALE);
    if (rc != EDDY_OK || (rc = durable_fn_ok(t, fn_id, fn)) != EDDY_OK)
        return rc;
    eddy_runtime *rt = t->rt;
    int in_coro = t->coro != NULL && eddy__coro_current() == t->coro;
    if ((async || rt->store != NULL) && !in_coro)
        return eddy__ctx_refuse(
            t, EDDY_ESTATE,
            "a durable call that suspends was made outside the action's own coroutine");
    json_t *res = NULL;
    eddy_error *e = NULL;
    eddy__dcall c;
    char digest[17] = "";
    if (rt->store != NULL && (rc = eddy__durable_digest_json(rt, args, digest)) != EDDY_OK) {
        eddy__runtime_fail(rt, rc, eddy_error_new("memory", "out of memory"));
        goto out;
    }
    rc = eddy__durable_plan(t, fn_id, digest, reconcile != NULL, &c);
    if (rc != EDDY_OK)
        goto out;
    switch (c.what) {
    case EDDY_DCALL_REPLAY_OK:
        if ((rc = eddy__durable_decode_result(c.payload, &res)) == EDDY_ENOMEM) {
            eddy__runtime_fail(rt, rc, eddy_error_new("memory", "out of memory"));
        } else if (rc != EDDY_OK) {
            eddy__runtime_fail(rt, EDDY_ESTATE,
                               eddy_error_newf("state",
                                               "%s/eddy.db: the journaled result of call %lld (%s) "
                                               "of action '%s' for key %s does not decode; the "
                                               "state is damaged",
                                               rt->cv->state, (long long)c.idx, fn_id,
                                               t->action->name, t->key->text));
            rc = EDDY_ESTATE;
        }
        goto out;
    case EDDY_DCALL_REPLAY_ERROR:
        e = eddy_error_new(c.err_type, c.err_msg);
        rc = EDDY_ECALL;
        goto out;
    case EDDY_DCALL_RUN_PENDING:
        if ((rc = journal_call(t, fn_id, &c, EDDY_JCALL_PENDING, NULL, NULL)) != EDDY_OK)
            goto out;
        wait_commit(t, 0); /* the call runs next: wait for the sync */
        if (rt->stopping) {
            eddy__durable_unpend(t, &c); /* it never ran */
            rc = EDDY_ECANCELED;
            goto out;
        }
        break;
    default:
        break;
    }
    int reconciling = c.what == EDDY_DCALL_RECONCILE;
    if (!async && !reconciling && (rc = eddy__durable_gate(t)) != EDDY_OK)
        goto out;
    rc = run_fn(t, async || reconciling, reconciling ? reconcile : fn, args, arg, &res, &e);
    if (rc != EDDY_OK && rc != EDDY_ECALL) {
        /* Canceled before it started: nothing to journal, and its PENDING
         * record goes (fn never ran). */
        if (c.what == EDDY_DCALL_RUN_PENDING)
            eddy__durable_unpend(t, &c);
        goto out;
    }
    int deep = rc == EDDY_OK ? eddy__json_deeper_than(res, EDDY__VALUE_MAX_DEPTH) : 0;
    if (deep != 0) {
        /* Journaled as the call's failure: a replay fails the same way.
         * Freed without recursing: it may be nested deeper than this
         * coroutine's stack holds. */
        eddy__json_decref_deep(res);
        res = NULL;
        e = deep == 1 ? eddy_error_newf("limit",
                                        "the result of durable call %s nests arrays and objects "
                                        "deeper than %d levels",
                                        fn_id, EDDY__VALUE_MAX_DEPTH)
                      : NULL;
        rc = e != NULL ? EDDY_ECALL : EDDY_ENOMEM;
        if (rc == EDDY_ENOMEM)
            goto out;
    }
    if (rt->store == NULL)
        goto out;
    int jrc = journal_call(t, fn_id, &c, rc == EDDY_OK ? EDDY_JCALL_OK : EDDY_JCALL_ERROR, res, e);
    if (jrc != EDDY_OK) {
        json_decref(res); /* a failed call hands out no result */
        res = NULL;
        rc = jrc;
        goto out;
    }
    /* The action goes on once the record is written: it mostly ends its
     * run or makes its next call, which waits for the sync (in the pool,
     * or at eddy__durable_gate for a call here), and a run's end shares
     * the sync of its last call. Waiting here for the sync instead made an
     * inline call's run wait for the mailbox to resume it after the sync,
     * and only then hand its next call to a worker. */
    wait_commit(t, 1);
    if (rt->stopping) {
        /* Woken by the stop: the commit may have failed, or never come. An
         * outcome that may not be journaled is not handed out (the action
         * is unwinding; its effects are discarded). */
        rc = EDDY_ECANCELED;
        goto out;
    }
out:
    /* A result only with EDDY_OK, an error object only with EDDY_ECALL. */
    if (rc != EDDY_OK) {
        json_decref(res);
        res = NULL;
    } else if (res == NULL) {
        /* fn's NULL is JSON null (eddy_call_fn), journaled as "null": the
         * replay hands out json null, and so does the first run. */
        res = json_null();
    }
    if (rc != EDDY_ECALL) {
        eddy_error_free(e);
        e = NULL;
    }
    if (result != NULL)
        *result = res;
    else
        json_decref(res);
    if (err != NULL)
        *err = e;
    else
        eddy_error_free(e);
    return rc;
}

int eddy_ctx_durable_execute(eddy_ctx *ctx, const char *fn_id, const json_t *args, eddy_call_fn fn,
                             void *arg, json_t **result, eddy_error **err)
{
    return durable_call(ctx, 0, fn_id, args, fn, NULL, arg, result, err);
}

int eddy_ctx_durable_execute_async(eddy_ctx *ctx, const char *fn_id, const json_t *args,
                                   eddy_call_fn fn, void *arg, json_t **result, eddy_error **err)
{
    return durable_call(ctx, 1, fn_id, args, fn, NULL, arg, result, err);
}

int eddy_ctx_durable_execute_reconciled(eddy_ctx *ctx, const char *fn_id, const json_t *args,
                                        eddy_call_fn fn, eddy_call_fn reconcile, void *arg,
                                        json_t **result, eddy_error **err)
{
    if (reconcile == NULL) {
        if (result != NULL)
            *result = NULL;
        if (err != NULL)
            *err = NULL;
        if (ctx == NULL)
            return EDDY_EINVAL;
        int rc = eddy__ctx_usable(ctx, "eddy_ctx_durable_execute_reconciled: " EDDY__CTX_STALE);
        if (rc != EDDY_OK) /* (from a wrong thread, EDDY_EINVAL, as it always was) */
            return rc == EDDY_EWRONGTHREAD ? EDDY_EINVAL : rc;
        return eddy__ctx_refuse(ctx, EDDY_EINVAL,
                                "eddy_ctx_durable_execute_reconciled: reconcile is NULL");
    }
    return durable_call(ctx, 1, fn_id, args, fn, reconcile, arg, result, err);
}

/* ---------------------------------------------------------------- several durable calls */

/* What the calls of one eddy_ctx_durable_execute_async_all share. */
typedef struct dall {
    int fail;      /* the first failure to journal an outcome, or EDDY_OK */
    int journaled; /* an outcome was journaled: the action waits for its commit */
} dall;

/* One of its calls: its planned position, its job and its outcome. */
typedef struct dall_job {
    eddy__job job;
    eddy_ctx *t;
    dall *batch;
    const eddy_durable_call *call;
    eddy_call_fn fn; /* fn, or its reconcile */
    eddy__dcall c;
    int rc; /* EDDY_OK, EDDY_ECALL, EDDY_ECANCELED (never ran), EDDY_ENOMEM */
    json_t *result;
    eddy_error *err;
} dall_job;

/* On a worker: the call, its outcome normalised as run_fn and durable_call
 * do (and the depth of its result checked here, off the action's stack). */
static void dall_work(eddy__job *job)
{
    dall_job *j = (dall_job *)job;
    int rc = j->fn(j->call->args, j->call->arg, &j->result, &j->err);
    if (rc != EDDY_OK) {
        json_decref(j->result);
        j->result = NULL;
        if (j->err == NULL)
            j->err = eddy_error_new(eddy_err_name(rc), eddy_strerror(rc));
        j->rc = EDDY_ECALL;
        return;
    }
    eddy_error_free(j->err);
    j->err = NULL;
    int deep = eddy__json_deeper_than(j->result, EDDY__VALUE_MAX_DEPTH);
    if (deep != 0) {
        /* Journaled as the call's failure: a replay fails the same way. */
        eddy__json_decref_deep(j->result);
        j->result = NULL;
        j->err = deep == 1 ? eddy_error_newf("limit",
                                             "the result of durable call %s nests arrays and "
                                             "objects deeper than %d levels",
                                             j->call->fn_id, EDDY__VALUE_MAX_DEPTH)
                           : NULL;
        rc = j->err != NULL ? EDDY_ECALL : EDDY_ENOMEM;
    } else if (j->result == NULL) {
        /* fn's NULL is JSON null (eddy_call_fn), journaled as "null": the
         * replay hands out json null, and so does the first run, as
         * durable_call does. (jansson's null is a constant: any thread.) */
        j->result = json_null();
    }
    j->rc = rc;
}

/* On the mailbox: journal the outcome as it comes (also while stopping: the
 * stop's last commit takes it), or drop the PENDING start of a call that
 * never ran; the last one resumes the action once the records are written. */
static void dall_done(eddy__job *job)
{
    dall_job *j = (dall_job *)job;
    eddy_ctx *t = j->t;
    dall *b = j->batch;
    if (job->canceled) { /* the stop, or its run's earlier results never reached the disk */
        j->rc = EDDY_ECANCELED;
        t->rt->stats.async_calls--; /* counted when handed over; it never ran */
        eddy__durable_job_canceled(t->rt);
        if (j->c.what == EDDY_DCALL_RUN_PENDING)
            eddy__durable_unpend(t, &j->c);
    } else if (j->rc == EDDY_ENOMEM) {
        if (b->fail == EDDY_OK)
            b->fail = EDDY_ENOMEM;
    } else if (t->rt->store != NULL) {
        int rc =
            journal_call(t, j->call->fn_id, &j->c,
                         j->rc == EDDY_OK ? EDDY_JCALL_OK : EDDY_JCALL_ERROR, j->result, j->err);
        if (rc == EDDY_OK)
            b->journaled = 1;
        else if (b->fail == EDDY_OK)
            b->fail = rc;
    }
    if (--t->waiting > 0)
        return;
    if (b->journaled)
        eddy__durable_wait_commit(t, 1); /* the calls ran on workers */
    else
        eddy__task_ready(t);
}

/* Checks before anything starts: durable_call's, in its order, for each
 * call. */
static int dall_check(eddy_ctx *t, const eddy_durable_call *calls, size_t n)
{
    int rc = durable_enter(t, "eddy_ctx_durable_execute_async_all: " EDDY__CTX_STALE);
    if (rc != EDDY_OK)
        return rc;
    if (n > 0 && calls == NULL)
        return eddy__ctx_refuse(t, EDDY_EINVAL,
                                "eddy_ctx_durable_execute_async_all: calls is NULL");
    for (size_t i = 0; i < n; i++) {
        if ((rc = durable_fn_ok(t, calls[i].fn_id, calls[i].fn)) != EDDY_OK)
            return rc;
    }
    if (t->coro == NULL || eddy__coro_current() != t->coro)
        return eddy__ctx_refuse(
            t, EDDY_ESTATE,
            "a durable call that suspends was made outside the action's own coroutine");
    return n > 0 && t->rt->stopping ? EDDY_ECANCELED : EDDY_OK;
}

/* The n calls (checked) with their jobs j (zeroed): EDDY_OK or EDDY_ECALL
 * with every outcome in calls, or the batch's failure with none (what was
 * made of them freed). */
static int dall_run(eddy_ctx *ctx, eddy_durable_call *calls, size_t n, dall_job *j)
{
    eddy_runtime *rt = ctx->rt;
    dall b = {EDDY_OK, 0};
    size_t nrun = 0;
    int rc = EDDY_OK;
    for (size_t i = 0; i < n; i++) {
        j[i].t = ctx;
        j[i].batch = &b;
        j[i].call = &calls[i];
        j[i].rc = EDDY_ECANCELED;
    }
    /* Each call takes its position and is checked against the journal in
     * array order (a non-deterministic one cuts the journal from there, so
     * the later ones run), before any of them runs. */
    for (size_t i = 0; i < n && rc == EDDY_OK; i++) {
        dall_job *d = &j[i];
        char digest[17] = "";
        if (rt->store != NULL &&
            (rc = eddy__durable_digest_json(rt, calls[i].args, digest)) != EDDY_OK) {
            eddy__runtime_fail(rt, rc, eddy_error_new("memory", "out of memory"));
            break;
        }
        rc = eddy__durable_plan(ctx, calls[i].fn_id, digest, calls[i].reconcile != NULL, &d->c);
        if (rc != EDDY_OK)
            break;
        switch (d->c.what) {
        case EDDY_DCALL_REPLAY_OK:
            if ((rc = eddy__durable_decode_result(d->c.payload, &d->result)) == EDDY_ENOMEM) {
                eddy__runtime_fail(rt, rc, eddy_error_new("memory", "out of memory"));
            } else if (rc != EDDY_OK) {
                eddy__runtime_fail(
                    rt, EDDY_ESTATE,
                    eddy_error_newf("state",
                                    "%s/eddy.db: the journaled result of call %lld (%s) of action "
                                    "'%s' for key %s does not decode; the state is damaged",
                                    rt->cv->state, (long long)d->c.idx, calls[i].fn_id,
                                    ctx->action->name, ctx->key->text));
                rc = EDDY_ESTATE;
            }
            d->rc = EDDY_OK;
            break;
        case EDDY_DCALL_REPLAY_ERROR:
            d->err = eddy_error_new(d->c.err_type, d->c.err_msg);
            d->rc = EDDY_ECALL;
            break;
        default:
            d->fn = d->c.what == EDDY_DCALL_RECONCILE ? calls[i].reconcile : calls[i].fn;
            nrun++;
        }
    }
    if (rc == EDDY_OK && nrun > 0) {
        /* The calls run once the results their run went on with are on
         * disk, and a call with a reconciler once its start is. */
        uint64_t barrier = eddy__durable_barrier(ctx), pending = barrier;
        for (size_t i = 0; i < n && rc == EDDY_OK; i++) {
            if (j[i].c.what != EDDY_DCALL_RUN_PENDING)
                continue;
            rc = journal_call(ctx, calls[i].fn_id, &j[i].c, EDDY_JCALL_PENDING, NULL, NULL);
            if (rc == EDDY_OK)
                pending = eddy__durable_barrier_open(ctx);
        }
        for (size_t i = 0; i < n && rc == EDDY_OK; i++) {
            if (j[i].fn == NULL)
                continue;
            j[i].job.work = dall_work;
            j[i].job.done = dall_done;
            eddy__pool_submit_after(rt->pool, &j[i].job,
                                    j[i].c.what == EDDY_DCALL_RUN_PENDING ? pending : barrier);
        }
        if (rc == EDDY_OK) {
            ctx->waiting += nrun;
            rt->stats.async_calls += nrun;
            while (ctx->waiting > 0) {
                ctx->state = EDDY_TASK_SUSPENDED;
                eddy__coro_yield();
            }
            /* Woken by the stop, the commit may have failed or never come:
             * an outcome that may not be journaled is not handed out. */
            rc = b.fail != EDDY_OK ? b.fail : rt->stopping ? EDDY_ECANCELED : EDDY_OK;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (rc != EDDY_OK) {
            json_decref(j[i].result);
            eddy_error_free(j[i].err);
            continue;
        }
        calls[i].rc = j[i].rc;
        calls[i].result = j[i].result;
        calls[i].err = j[i].err;
    }
    if (rc != EDDY_OK)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (calls[i].rc != EDDY_OK)
            return EDDY_ECALL;
    return EDDY_OK;
}

int eddy_ctx_durable_execute_async_all(eddy_ctx *ctx, eddy_durable_call *calls, size_t n)
{
    for (size_t i = 0; calls != NULL && i < n; i++) {
        calls[i].result = NULL;
        calls[i].err = NULL;
    }
    int rc = dall_check(ctx, calls, n);
    if (rc == EDDY_OK && n > 0) {
        dall_job local[8];
        dall_job *j = n <= 8 ? local : n <= SIZE_MAX / sizeof(*j) ? malloc(n * sizeof(*j)) : NULL;
        if (j != NULL) {
            memset(j, 0, n * sizeof(*j));
            rc = dall_run(ctx, calls, n, j);
            if (j != local)
                free(j);
        } else {
            rc = EDDY_ENOMEM;
        }
    }
    for (size_t i = 0; rc != EDDY_OK && rc != EDDY_ECALL && calls != NULL && i < n; i++)
        calls[i].rc = rc;
    return rc;
}

/* ---------------------------------------------------------------- decoding stored records */

/* 1 when s is exactly 16 lowercase hex digits (an event id). */
static int is_event_id(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return 0;
    return n == 16;
}

/* jansson's parser says a text does not parse when it ran out of memory,
 * or drops a character of a string and goes on (2.14: its lexer does not
 * check that its buffer grew): a record is damaged only when no allocation
 * failed while it was parsed (util/jalloc.h). */
static json_t *decode_json(const char *text, size_t flags, int *rc)
{
    unsigned failed = eddy__jalloc_failures;
    json_t *v = text != NULL ? json_loads(text, flags, NULL) : NULL;
    if (eddy__jalloc_failures != failed) {
        json_decref(v);
        *rc = EDDY_ENOMEM;
        return NULL;
    }
    *rc = v != NULL ? EDDY_OK : EDDY_ESTATE;
    return v;
}

static int decode_object(const char *text, json_t **out)
{
    *out = NULL;
    int rc;
    json_t *v = decode_json(text, JSON_ALLOW_NUL, &rc);
    if (rc != EDDY_OK)
        return rc;
    if (!json_is_object(v)) {
        json_decref(v);
        return EDDY_ESTATE;
    }
    *out = v;
    return EDDY_OK;
}

int eddy__durable_decode_done(const char *payload, json_t **rec)
{
    json_t *r;
    int rc = decode_object(payload, &r);
    if (rc != EDDY_OK)
        return rc;
    const json_t *order = json_object_get(r, "order");
    const json_t *events = json_object_get(r, "events");
    const json_t *stm = json_object_get(r, "stm");
    const json_t *sen = json_object_get(r, "sensory");
    int ok = json_is_integer(order) && json_integer_value(order) >= 0 && json_is_array(events) &&
             (stm == NULL || json_is_array(stm)) && (sen == NULL || json_is_array(sen));
    size_t i;
    const json_t *ev;
    json_array_foreach(events, i, ev)
    {
        const char *type = json_string_value(json_object_get(ev, "type"));
        const char *id = json_string_value(json_object_get(ev, "id"));
        if (type == NULL || *type == '\0' || id == NULL || !is_event_id(id) ||
            !json_is_object(json_object_get(ev, "attrs")))
            ok = 0;
    }
    if (!ok) {
        json_decref(r);
        return EDDY_ESTATE;
    }
    *rec = r;
    return EDDY_OK;
}

int eddy__durable_apply_done(const json_t *rec, json_t *stm, json_t *sensory)
{
    const json_t *s = json_object_get(rec, "stm");
    const json_t *x = json_object_get(rec, "sensory");
    int rc = s != NULL ? eddy__mem_tree_apply(stm, s, 1) : EDDY_OK;
    if (rc == EDDY_OK && x != NULL)
        rc = eddy__mem_tree_apply(sensory, x, 1);
    return rc == EDDY_OK || rc == EDDY_ENOMEM ? rc : EDDY_ESTATE;
}

int eddy__durable_decode_result(const char *payload, json_t **result)
{
    /* "null" decodes to json_null(), never to NULL. On the action's stack
     * for a replay, jansson's parser recurses, ~88 bytes a level (measured):
     * a result of EDDY__VALUE_MAX_DEPTH levels (deeper ones are journaled as
     * failures) takes ~86 KiB of the default 256 KiB. */
    int rc;
    *result = decode_json(payload, JSON_DECODE_ANY | JSON_ALLOW_NUL, &rc);
    return rc;
}

int eddy__durable_decode_pending(const char *record_json, json_t **record)
{
    return decode_object(record_json, record);
}

int eddy__durable_decode_memory(const char *stm_json, json_t **stm)
{
    return decode_object(stm_json, stm);
}

/* ---------------------------------------------------------------- open and recovery */

/* What the load callbacks share: the runtime, and which record did not decode. */
typedef struct loader {
    eddy_runtime *rt;
    char bad[192];
} loader;

/*
 * Keys' memory is not read at open: a key's is read when a run of it starts
 * or resumes (eddy__durable_key_load), so that a start does not read, and
 * hold, every key the state has. What the open needs of the keys table is
 * whether it holds any row (then every key made is read from it), and, for
 * a state whose keys kept their own run counters (format 2: no "next_run"
 * in meta), the highest of them, with a scan that decodes no memory.
 */
typedef struct key_probe {
    int any;      /* the table holds a row */
    int counters; /* scan every row for its counter */
    uint64_t next_seq;
} key_probe;

#define PROBE_DONE EDDY_ECANCELED /* (stops the scan; not an error) */

static int probe_key(void *arg, const char *key, uint64_t next_seq, const char *stm_json)
{
    key_probe *p = arg;
    (void)key;
    (void)stm_json;
    p->any = 1;
    if (next_seq > p->next_seq)
        p->next_seq = next_seq;
    return p->counters ? EDDY_OK : PROBE_DONE;
}

static int load_pending(void *arg, const char *key, uint64_t seq, uint64_t line_no,
                        const char *record_json)
{
    loader *l = arg;
    eddy_runtime *rt = l->rt;
    eddy__key *k = eddy__runtime_key(rt, key);
    if (k == NULL)
        return EDDY_ENOMEM;
    eddy__input *in = calloc(1, sizeof(*in));
    if (in == NULL)
        return EDDY_ENOMEM;
    in->key = strdup(key);
    in->key_len = k->len;
    in->key_hash = eddy__map_hash(key, k->len);
    int rc = eddy__durable_decode_pending(record_json, &in->record);
    if (rc != EDDY_OK || in->key == NULL) {
        int nomem = in->key == NULL || rc == EDDY_ENOMEM;
        eddy__input_free(in);
        if (nomem)
            return EDDY_ENOMEM;
        snprintf(l->bad, sizeof(l->bad), "the pending input %llu of key %.100s",
                 (unsigned long long)seq, key);
        return EDDY_ESTATE;
    }
    in->seq = seq;
    in->line_no = line_no;
    if (seq >= rt->next_seq)
        rt->next_seq = seq + 1;
    if (eddy__queue_empty(&k->pending))
        eddy__queue_insert_tail(&rt->recovered, &k->recover_node);
    eddy__queue_insert_tail(&k->pending, &in->node);
    rt->pending++; /* the key's run takes its first one: see eddy__durable_resume */
    return EDDY_OK;
}

static int load_outbox(void *arg, uint64_t id, const char *line, size_t len)
{
    eddy_runtime *rt = arg;
    if (len < 1 || (line[0] != 'o' && line[0] != 'd'))
        return EDDY_ESTATE;
    if (write_line(rt, line[0], line + 1, len - 1) != EDDY_OK)
        return EDDY_EIO;
    rt->outbox_last = id;
    return EDDY_OK;
}

typedef struct done_ref {
    long long order;
    json_t *rec;
} done_ref;

static int cmp_done(const void *a, const void *b)
{
    const done_ref *x = a, *y = b;
    return (x->order > y->order) - (x->order < y->order);
}

/* Load the journal of k's run in flight and apply the memory writes of its
 * finished action executions in the order they finished. Only the records
 * that wrote memory are kept until then (a run of many finished actions
 * would hold them all decoded); the replay decodes each record again when
 * its action comes up. A run that failed (a FAILED record: its input was
 * dead-lettered) has k->failed set: it runs none of its actions and ends as
 * it stands (see eddy__durable_resume); what its finished actions wrote is
 * applied all the same, as the run it was would have kept it. */
static int recover_run(eddy_runtime *rt, eddy__key *k, uint64_t seq)
{
    eddy__journal *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return EDDY_ENOMEM;
    int rc = eddy__store_journal_load_run(rt->store, k->text, seq, journal_add, j);
    if (rc != EDDY_OK || j->n == 0) {
        eddy__journal_free(j);
        return rc;
    }
    k->journal = j;
    journal_index(j);
    size_t nd = 0, nw = 0;
    int failed = 0;
    for (size_t i = 0; i < j->n; i++) {
        nd += j->v[i].kind == EDDY_JREC_DONE;
        failed |= j->v[i].kind == EDDY_JREC_FAILED;
    }
    done_ref *d = calloc(nd + 1, sizeof(*d));
    if (d == NULL)
        return EDDY_ENOMEM;
    for (size_t i = 0; i < j->n; i++) {
        if (j->v[i].kind != EDDY_JREC_DONE)
            continue;
        json_t *rec = NULL;
        if ((rc = eddy__durable_decode_done(j->v[i].payload, &rec)) != EDDY_OK)
            break; /* EDDY_ESTATE, or EDDY_ENOMEM */
        if (json_object_get(rec, "stm") == NULL && json_object_get(rec, "sensory") == NULL) {
            json_decref(rec);
            continue;
        }
        d[nw].rec = rec;
        d[nw].order = (long long)json_integer_value(json_object_get(rec, "order"));
        nw++;
    }
    qsort(d, nw, sizeof(*d), cmp_done);
    for (size_t i = 0; i < nw; i++) {
        if (rc == EDDY_OK)
            rc = eddy__durable_apply_done(d[i].rec, k->stm, k->sensory);
        json_decref(d[i].rec);
    }
    k->completions = (uint32_t)nd;
    if (nd > 0)
        k->stm_dirty = 1; /* finished actions' memory writes, re-applied */
    if (failed && rc == EDDY_OK) {
        /* Its finished actions are not replayed (their events would start
         * actions the failure dropped): their memory writes, applied above,
         * are all that is left of them to re-apply. */
        k->failed = 1;
        rt->stats.actions_replayed += nd;
    }
    free(d);
    return rc;
}

static uint64_t path_identity(const char *abs)
{
    uint64_t h = eddy__hash_bytes(abs, strlen(abs));
    return h > 1 ? h : h + 2;
}

/* The path as given, made absolute but not resolved ("/dir/./out.jsonl"),
 * into buf (PATH_MAX bytes; the path as given when that is too long). */
static void unresolved_path(const char *path, char *buf)
{
    if (path[0] != '/' && getcwd(buf, PATH_MAX) != NULL &&
        strlen(buf) + strlen(path) + 2 <= PATH_MAX) {
        strcat(buf, "/");
        strcat(buf, path);
    } else {
        snprintf(buf, PATH_MAX, "%s", path);
    }
}

/* The identity older eddies recorded for a file that was not there yet:
 * its unresolved path's; also the identity of a path whose directory cannot
 * be resolved. */
static uint64_t file_identity_unresolved(const char *path)
{
    char buf[PATH_MAX];
    unresolved_path(path, buf);
    return path_identity(buf);
}

/* The absolute path whose hash is a file's identity, into buf (PATH_MAX
 * bytes): resolved, the same whether the file is there yet or not
 * ("./out.jsonl" made by this run is the same file for the next one). */
static void file_key(const char *path, char *buf)
{
    if (eddy__paths_canonical(path, buf) != 0)
        unresolved_path(path, buf);
}

/* Which file a recorded position belongs to: 1 for a standard stream ("-"
 * or a path that names one, as the sink takes it), else the hash of its
 * file_key. */
static uint64_t file_identity(const char *path)
{
    if (eddy__paths_std_stream(path, STDOUT_FILENO) >= 0)
        return 1;
    char buf[PATH_MAX];
    file_key(path, buf);
    return path_identity(buf);
}

/* The bytes of a file past the committed length, against the lines of
 * one channel of the outbox ('o' or 'd'), each with its newline. */
typedef struct pending_tail {
    char channel;
    const char *tail; /* NULL: only count */
    size_t len;       /* of tail */
    size_t seen;      /* outbox bytes of the channel so far */
    int differs;
} pending_tail;

static int tail_check(void *arg, uint64_t id, const char *line, size_t len)
{
    (void)id;
    pending_tail *t = arg;
    if (len < 1 || line[0] != t->channel)
        return EDDY_OK;
    len--;
    line++;
    if (t->tail != NULL && !t->differs && t->seen < t->len) {
        size_t rest = t->len - t->seen, n = rest < len ? rest : len;
        if (memcmp(t->tail + t->seen, line, n) != 0 ||
            (rest > len && t->tail[t->seen + len] != '\n'))
            t->differs = 1;
    }
    t->seen += len + 1;
    return EDDY_OK;
}

/*
 * 1 when the extra bytes of the file open as fd past pos are the start of
 * the channel's lines still in the outbox (the last one may be torn: cut
 * short in the middle), which are exactly the lines a run may have written
 * past its committed length before it stopped.
 */
static int past_is_outbox(eddy_runtime *rt, int fd, char channel, uint64_t pos, uint64_t extra)
{
    if (extra == 0)
        return 1;
    /* What the outbox holds of the channel bounds what may be read. */
    pending_tail t = {.channel = channel};
    if (eddy__store_outbox_load(rt->store, tail_check, &t) != EDDY_OK || extra > t.seen)
        return 0;
    char *buf = malloc((size_t)extra);
    int same = buf != NULL && pread(fd, buf, (size_t)extra, (off_t)pos) == (ssize_t)extra;
    if (same) {
        t = (pending_tail){.channel = channel, .tail = buf, .len = (size_t)extra};
        same = eddy__store_outbox_load(rt->store, tail_check, &t) == EDDY_OK && !t.differs;
    }
    free(buf);
    return same;
}

/*
 * 1 when the file at path is a copy of the output whose committed length is
 * pos (channel: its lines in the outbox): it holds at least pos bytes, those
 * before pos have the fingerprint tail (eddy__sink_tail_hash), and those
 * after it are the start of the channel's lines still in the outbox, which
 * are exactly the lines a run may have written past pos before it stopped.
 * So only bytes eddy wrote and will write again are ever cut: a file with
 * the same end and anything else after it (another job's lines appended to
 * a copy) is not taken. Only regular files are opened (a FIFO's open would
 * wait for a writer), and without blocking.
 */
static int holds_output(eddy_runtime *rt, const char *path, char channel, uint64_t pos,
                        uint64_t tail)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size < pos)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return 0;
    int same = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size >= pos &&
               eddy__sink_fd_tail_hash(fd, pos) == tail &&
               past_is_outbox(rt, fd, channel, pos, (uint64_t)st.st_size - pos);
    close(fd);
    return same;
}

/* Bytes in the outbox of channel: what a run may have written past the
 * committed length (0 when it cannot be read). */
static uint64_t outbox_bytes(eddy_runtime *rt, char channel)
{
    pending_tail t = {.channel = channel};
    return eddy__store_outbox_load(rt->store, tail_check, &t) == EDDY_OK ? t.seen : 0;
}

/*
 * The file the previous run wrote to (old, with the identity stored), when
 * this run writes to another (now, as it is named in notes). After a
 * failure (a full disk, say) it may hold, past its committed length pos,
 * lines of the outbox, whole or torn, which this run writes to now: they
 * would be in both files. When old is still that file (the bytes before pos
 * have the recorded fingerprint tail, or pos is 0) and its bytes past pos
 * are a start of the channel's outbox lines (as holds_output decides), it
 * is cut back to pos, under its lock, and synced, with a note: only bytes
 * eddy wrote and writes again are cut, and the state, which still records
 * old at pos until this run commits the switch, takes old at pos as well.
 * Otherwise, when bytes are past pos and lines wait in the outbox, a note
 * says what to do. A file gone, shorter, at pos, or not a regular file
 * needs nothing.
 */
static void cut_old_output(eddy_runtime *rt, char channel, const char *old, uint64_t stored,
                           uint64_t pos, uint64_t tail, const char *now)
{
    if (outbox_bytes(rt, channel) == 0)
        return; /* no line waits: none can be past pos */
    if (old == NULL || old[0] == '\0' || path_identity(old) != stored) {
        eddy__log(EDDY_LOG_NOTE,
                  "the file the previous run wrote to may hold, past the %" PRIu64
                  " bytes committed to it, lines that this run writes to %s (the state does not "
                  "say which file that was: an older eddy wrote it); cut that file back to %" PRIu64
                  " bytes (truncate -s %" PRIu64 " FILE) to have each line once",
                  pos, now, pos, pos);
        return;
    }
    struct stat st;
    if (stat(old, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size <= pos)
        return;
    const char *why = NULL;
    char buf[256];
    int fd = open(old, O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        snprintf(buf, sizeof(buf), "it cannot be opened: %s", strerror(errno));
        why = buf;
    } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size <= pos) {
        close(fd);
        return;
    } else if (pos > 0 && (tail == 0 || eddy__sink_fd_tail_hash(fd, pos) != tail)) {
        why = tail == 0 ? "the state has no fingerprint of its committed bytes to tell that it is "
                          "the same file"
                        : "its bytes before them are not those the state recorded (the file was "
                          "changed since)";
    } else if (!past_is_outbox(rt, fd, channel, pos, (uint64_t)st.st_size - pos)) {
        why = "they are not only lines that this run writes (another program wrote there?)";
    } else {
        int r;
        while ((r = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR)
            ;
        if (r != 0 && errno == EWOULDBLOCK) {
            why = "another process holds a lock on it (another eddy writing there?)";
        } else if (ftruncate(fd, (off_t)pos) != 0 || fsync(fd) != 0) {
            snprintf(buf, sizeof(buf), "it cannot be cut: %s", strerror(errno));
            why = buf;
        }
    }
    if (why == NULL)
        eddy__log(EDDY_LOG_NOTE,
                  "cut %s back to %" PRIu64
                  " bytes: the lines past it were not committed and go to %s",
                  old, pos, now);
    else
        eddy__log(EDDY_LOG_NOTE,
                  "%s, the file the previous run wrote to, holds %" PRIu64
                  " bytes past the %" PRIu64
                  " committed to it, which may be lines that this run writes to %s too; it is "
                  "left as it is, since %s: remove from it the lines that %s holds too (truncate "
                  "-s %" PRIu64 " %s, when all its bytes past them are lines of this state)",
                  old, (uint64_t)st.st_size - pos, pos, now, why, now, pos, old);
    if (fd >= 0)
        close(fd); /* and its lock */
}

/*
 * How to open an output file: cut back to its committed length when the
 * recorded position belongs to it; append when it is a standard stream (no
 * position to cut back to: at-least-once), or when the previous run wrote to
 * another output, whose committed lines stay there (the lines past them,
 * which this run writes, are cut from it: cut_old_output). The state keeps
 * each file's identity (id_name, a hash of its absolute path) and the path
 * itself (path_name, a meta row that older eddies ignore: one that does not
 * hash to the identity is not used).
 *
 * A file at another path that holds the committed length and whose bytes
 * before it have the fingerprint recorded with it (tail_name) is the same
 * output, moved or copied with the state (`cp -a job job2`): it is cut back
 * like the file itself would be, or the lines written after the committed
 * length would be there twice. A length of 0 has no fingerprint: the file
 * is appended to, as is any other. States without fingerprints (from an
 * older eddy) are appended to as well.
 */
static int sink_mode(eddy_runtime *rt, const char *path, char channel, const char *id_name,
                     const char *tail_name, const char *path_name, uint64_t pos, int64_t *mode,
                     int *moved)
{
    uint64_t id = file_identity(path), stored = 0, tail = 0;
    char key[PATH_MAX], *old = NULL;
    key[0] = '\0';
    if (id != 1)
        file_key(path, key);
    int rc = eddy__store_get_meta_u64(rt->store, id_name, &stored);
    if (rc == EDDY_OK)
        rc = eddy__store_get_meta_u64(rt->store, tail_name, &tail);
    if (rc == EDDY_OK)
        rc = eddy__store_get_meta_text(rt->store, path_name, &old);
    int legacy = rc == EDDY_OK && stored != 0 && stored != id && id != 1 &&
                 stored == file_identity_unresolved(path);
    if (rc == EDDY_OK && stored != id)
        rc = eddy__store_set_meta_u64(rt->store, id_name, id);
    /* The path beside its hash: to find the file again once this run
     * writes to another (cut_old_output). */
    if (rc == EDDY_OK && (old == NULL || strcmp(old, key) != 0))
        rc = eddy__store_set_meta_text(rt->store, path_name, key);
    if (legacy)
        stored = id; /* this file, recorded by an older eddy before it was made */
    if (rc != EDDY_OK) {
        free(old);
        return rc;
    }
    int other = stored != 0 && stored != id;
    *moved = other;
    const char *now = strcmp(path, "-") != 0 ? path
                      : channel == 'd'       ? "standard error"
                                             : "standard output";
    if (id == 1) {
        if (other && stored != 1)
            cut_old_output(rt, channel, old, stored, pos, tail, now);
        *mode = -2;
    } else if (other && stored != 1 && pos > 0 && tail != 0 &&
               holds_output(rt, path, channel, pos, tail)) {
        eddy__log(
            EDDY_LOG_NOTE,
            "%s is not the file the previous run wrote to, but its first %" PRIu64
            " bytes end as that file's committed lines did (moved or copied with the state?): "
            "taking it for that file, cut back to them",
            path, pos);
        *mode = (int64_t)pos;
    } else if (other && eddy__sink_partial_line(path)) {
        /* Refused by the sink's open: before a note that says it is
         * appended to, and before the previous file is cut. */
        *mode = -2;
    } else if (other) {
        /* Nothing committed before and nothing here: nothing to say (the
         * dead-letter file of a job directory moved, mostly). */
        struct stat st;
        if (pos > 0 || (stat(path, &st) == 0 && (!S_ISREG(st.st_mode) || st.st_size > 0)))
            eddy__log(EDDY_LOG_NOTE,
                      "%s is not the file the previous run wrote to; earlier lines stay where "
                      "they were written and this run appends to %s",
                      path, path);
        if (stored != 1)
            cut_old_output(rt, channel, old, stored, pos, tail, now);
        *mode = -2;
    } else {
        *mode = (int64_t)pos;
    }
    free(old);
    return EDDY_OK;
}

/* What meta keeps of a key field under "key_field": a hash of its name. */
static uint64_t key_field_hash(const char *name)
{
    return eddy__hash_bytes(name, strlen(name)) | 1;
}

/*
 * The key field is part of what the state holds: keys read from another
 * field would share their memory and journal with these. States made
 * before it was recorded take the field of their next run. Its name is kept
 * too ("key_field_name"), so that a refusal can say which --key to give;
 * states whose hash an older eddy wrote get the name from their next run
 * with the same field (an older eddy never reads the name, and checks the
 * hash as before).
 */
static int check_key_field(eddy_runtime *rt, eddy_error **err)
{
    const char *key = rt->cv->key;
    uint64_t h = key_field_hash(key), stored = 0;
    char *name = NULL;
    int rc = eddy__store_get_meta_u64(rt->store, "key_field", &stored);
    if (rc == EDDY_OK)
        rc = eddy__store_get_meta_text(rt->store, "key_field_name", &name);
    if (rc == EDDY_OK && stored == 0)
        rc = eddy__store_set_meta_u64(rt->store, "key_field", h);
    if (rc == EDDY_OK && (stored == 0 || stored == h) && (name == NULL || strcmp(name, key) != 0))
        rc = eddy__store_set_meta_text(rt->store, "key_field_name", key);
    if (rc != EDDY_OK) {
        free(name);
        if (rc == EDDY_ENOMEM)
            return eddy__error_set(err, rc, "memory", "out of memory");
        return eddy__error_set(err, EDDY_ESTORE, "store", "%s: %s", rt->cv->state,
                               eddy__store_error(rt->store));
    }
    if (stored != 0 && stored != h) {
        /* A name that does not match the hash is not trusted. */
        if (name != NULL && key_field_hash(name) == stored)
            rc = eddy__error_set(err, EDDY_ESTATE, "state",
                                 "state directory %s was filled with --key %s, not --key %s (a "
                                 "state's key field cannot change); give --key %s, or use another "
                                 "--state directory",
                                 rt->cv->state, name, key, name);
        else
            rc = eddy__error_set(err, EDDY_ESTATE, "state",
                                 "state directory %s was filled with another key field than "
                                 "--key %s (a state's key field cannot change); give the --key it "
                                 "was filled with, or use another --state directory",
                                 rt->cv->state, key);
    }
    free(name);
    return rc;
}

/*
 * The dead-letter file is made only when a first dead letter is written, so
 * that a run without any leaves none behind (one that is there is cut as
 * usual). Its bookkeeping need not know: its identity is its path, whether
 * it is there or not, and a file not there has length 0, which is what the
 * state records for it until a sync of its first lines. A crash before that
 * sync leaves the file absent or holding uncommitted lines, which the rerun
 * cuts back to 0 as it would an empty file.
 */
#define DEAD_SINK (EDDY_SINK_STDERR | EDDY_SINK_LAZY)

int eddy__durable_open(eddy_runtime *rt, const eddy_plan *plan, eddy_error **err)
{
    const eddy__config_values *cv = rt->cv;
    const char *dead = eddy__config_dead_letter(rt->conf);
    if (cv->state == NULL || cv->state[0] == '\0') {
        if (eddy__runtime_open_input(rt, err) != EDDY_OK)
            return EDDY_EIO;
        if (eddy__sink_open(&rt->sink, cv->output, EDDY_SINK_STDOUT, -1, err) != EDDY_OK ||
            eddy__sink_open(&rt->dead, dead, DEAD_SINK, -1, err) != EDDY_OK)
            return EDDY_EIO;
        return EDDY_OK;
    }
    char fingerprint[17], *actions = NULL;
    eddy__plan_fingerprint(plan, fingerprint);
    if (eddy__plan_describe(plan, &actions) != EDDY_OK)
        return eddy__error_set(err, EDDY_ENOMEM, "memory", "out of memory");
    int rc = eddy__store_open(&rt->store, cv->state, fingerprint, actions, err);
    free(actions);
    if (rc != EDDY_OK)
        return rc;
#ifdef EDDY_TEST_HOOKS
    /* Tests provoke store failures (a full disk, a read-only database) with
     * SQLite limits set right after open. */
    const char *test_sql = getenv("EDDY_TEST_STORE_SQL");
    if (test_sql != NULL && eddy__store_sqlite_test_exec(rt->store, test_sql) != EDDY_OK)
        goto store_err;
    /* And stand for a long recovery (signals during start-up). */
    const char *pause_ms = getenv("EDDY_TEST_OPEN_PAUSE_MS");
    if (pause_ms != NULL)
        uv_sleep((unsigned)atoi(pause_ms));
#endif
    if ((rc = check_key_field(rt, err)) != EDDY_OK)
        return rc;
    uint64_t sink_pos = 0, dead_pos = 0;
    int64_t sink_how, dead_how;
    int sink_moved, dead_moved;
    if ((rc = eddy__store_get_sink_pos(rt->store, &sink_pos)) != EDDY_OK ||
        (rc = eddy__store_get_meta_u64(rt->store, "dead_offset", &dead_pos)) != EDDY_OK ||
        (rc = sink_mode(rt, cv->output, 'o', "output_id", "output_tail", "output_path", sink_pos,
                        &sink_how, &sink_moved)) != EDDY_OK ||
        (rc = sink_mode(rt, dead, 'd', "dead_id", "dead_tail", "dead_path", dead_pos, &dead_how,
                        &dead_moved)) != EDDY_OK)
        goto store_err;
    if ((rc = eddy__runtime_open_input(rt, err)) != EDDY_OK)
        return rc;
    if ((rc = eddy__sink_open(&rt->sink, cv->output, EDDY_SINK_STDOUT, sink_how, err)) != EDDY_OK ||
        (rc = eddy__sink_open(&rt->dead, dead, DEAD_SINK, dead_how, err)) != EDDY_OK)
        return rc;
    /* Another file than the last run's: where this run starts in it is
     * committed with the file's identity, before any line goes to it.
     * Otherwise a crash between the lines below and their commit would
     * leave the file unknown to the next run, which would append them
     * again. */
    if (sink_moved || dead_moved) {
        if ((rc = record_sinks(rt)) != EDDY_OK || (rc = eddy__store_commit(rt->store)) != EDDY_OK)
            goto store_err;
    }

    loader ld = {.rt = rt, .bad = ""};
    /* Lines committed to the outbox but maybe not written: write them again. */
    rt->outbox_last = 0;
    if ((rc = eddy__store_outbox_load(rt->store, load_outbox, rt)) != EDDY_OK) {
        if (rc == EDDY_EIO) /* writing them failed: an I/O failure, not a bad file name */
            return eddy__error_set(err, EDDY_EIO, "output", "%s",
                                   rt->error != NULL ? eddy_error_message(rt->error)
                                                     : "cannot write the output");
        goto load_err;
    }
    if (rt->outbox_last != 0) {
        const char *why = sync_sinks(rt);
        if (why != NULL)
            return eddy__error_set(err, EDDY_EIO, "output", "%s", why);
        rt->stats.outputs_from_state = eddy__sink_lines(rt->sink);
        rt->stats.dead_lettered_from_state = eddy__sink_lines(rt->dead);
        if ((rc = eddy__store_outbox_ack(rt->store, rt->outbox_last)) != EDDY_OK ||
            (rc = record_sinks(rt)) != EDDY_OK || (rc = eddy__store_commit(rt->store)) != EDDY_OK)
            goto store_err;
    }
    /* The run counter: as stored, and past every run number the keys and the
     * pending inputs hold (states of format 2 kept one counter per key). */
    uint64_t next_run = 0;
    if ((rc = eddy__store_get_meta_u64(rt->store, "next_run", &next_run)) != EDDY_OK)
        goto store_err;
    rt->next_seq = next_run;
    key_probe probe = {.counters = next_run == 0};
    if ((rc = eddy__store_keys_load(rt->store, probe_key, &probe)) != EDDY_OK && rc != PROBE_DONE)
        goto load_err;
    if (probe.next_seq > rt->next_seq)
        rt->next_seq = probe.next_seq; /* a state whose keys kept their own counters */
    rt->memory_offloaded = probe.any;
    if ((rc = eddy__store_pending_load(rt->store, load_pending, &ld)) != EDDY_OK)
        goto load_err;
    rt->next_seq_saved = rt->next_seq == next_run ? next_run : 0;
    rt->resumed_below = rt->next_seq; /* the runs loaded are numbered below */
    if ((rc = eddy__store_get_source_pos(rt->store, &rt->source_offset, &rt->source_line)) !=
            EDDY_OK ||
        (rc = eddy__store_get_meta_u64(rt->store, "input_head_len", &rt->head_len)) != EDDY_OK ||
        (rc = eddy__store_get_meta_u64(rt->store, "input_head", &rt->head_hash)) != EDDY_OK)
        goto store_err;
    rt->source_saved = rt->source_offset;
    /* A state that read past the start without a head (made by an older
     * eddy) goes on without: its reader never sees the first line. */
    rt->head_saved = rt->head_len != 0 || rt->source_offset != 0;
    syncer_start(rt);
    return EDDY_OK;

load_err:
    /* The store's words when it found the damage (a value of the wrong
     * type), the loader's when a record did not decode. */
    if (rc == EDDY_ESTATE && ld.bad[0] == '\0' && eddy__store_error(rt->store)[0] != '\0')
        return eddy__error_set(err, EDDY_ESTATE, "state", "%s", eddy__store_error(rt->store));
    if (rc == EDDY_ESTATE)
        return eddy__error_set(err, EDDY_ESTATE, "state",
                               "%s/eddy.db: %s does not decode; the state is damaged", cv->state,
                               ld.bad[0] != '\0' ? ld.bad : "a record");
    if (rc != EDDY_ESTORE)
        return eddy__error_set(err, rc, "state", "recovering from %s: %s", cv->state,
                               eddy_strerror(rc));
store_err:
    return eddy__error_set(err, EDDY_ESTORE, "store", "state store failure while opening %s: %s",
                           cv->state, eddy__store_error(rt->store));
}

void eddy__durable_resume(eddy_runtime *rt)
{
    /* Keys were queued in the order of their first pending input. */
    while (!eddy__queue_empty(&rt->recovered)) {
        eddy__queue *q = eddy__queue_head(&rt->recovered);
        eddy__queue_remove(q);
        eddy__key *k = eddy__queue_data(q, eddy__key, recover_node);
        if (k->running || eddy__queue_empty(&k->pending))
            continue;
        eddy__input *in = eddy__queue_data(eddy__queue_head(&k->pending), eddy__input, node);
        /* Its memory first: the run's finished actions' writes go on it. */
        if (k->stm == NULL && eddy__durable_key_load(rt, k) != EDDY_OK)
            return;
        int rc = recover_run(rt, k, in->seq);
        if (rc == EDDY_ENOMEM) { /* the state is fine: the next run resumes it */
            eddy__runtime_fail(
                rt, rc,
                eddy_error_newf("memory", "out of memory recovering the run of key %s", k->text));
            return;
        }
        if (rc != EDDY_OK) {
            eddy__runtime_fail(rt, rc == EDDY_ESTORE ? EDDY_ESTORE : EDDY_ESTATE,
                               rc == EDDY_ESTORE
                                   ? eddy_error_newf("store", "recovering the run of key %s: %s",
                                                     k->text, eddy__store_error(rt->store))
                                   : eddy_error_newf("state",
                                                     "%s/eddy.db: a journal record of the run of "
                                                     "key %s does not decode; the state is damaged",
                                                     rt->cv->state, k->text));
            return;
        }
        eddy__queue_remove(&in->node);
        rt->pending--;
        rt->stats.runs_in_flight_resumed++;
        /* A failed run (k->failed, from recover_run) starts as one: its
         * tasks are dropped unstarted (no call of them is made, PENDING ones
         * go to no reconciler) and it ends once they are, in one
         * transaction (eddy__durable_run_end), as it would have ended. */
        rt->stats.runs_failed_resumed += k->failed != 0;
        eddy__runtime_run_start(rt, k, in);
    }
}

void eddy__durable_close(eddy_runtime *rt)
{
#ifdef EDDY_TEST_HOOKS
    /* Tests stand for a long final close (signals then) with a wait until
     * a file exists, up to 60 s. */
    const char *wait_for = getenv("EDDY_TEST_CLOSE_WAIT_FOR");
    for (int i = 0;
         wait_for != NULL && rt->store != NULL && access(wait_for, F_OK) != 0 && i < 6000; i++)
        uv_sleep(10);
#endif
    free(rt->scratch.p);
    rt->scratch.p = NULL;
    free_lines(&rt->outbox_uncommitted);
    free_lines(&rt->outbox_unsynced);
    free_lines(&rt->outbox_committed);
    eddy__store_close(rt->store);
    rt->store = NULL;
}
