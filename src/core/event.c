#include <stdlib.h>
#include <string.h>

#include "core/event.h"
#include "util/poison.h"
#include "util/fault.h"
#include "util/hash.h"
#include "util/hex.h"
#include "util/utf8.h"

eddy_event *eddy_event_new(const char *type, json_t *attrs)
{
    /* A type is journaled and reported as JSON: it must be UTF-8. */
    if (type == NULL || *type == '\0' || (attrs != NULL && !json_is_object(attrs)) ||
        !eddy__utf8_valid(type)) {
        json_decref(attrs);
        return NULL;
    }
    size_t tlen = strlen(type);
    eddy_event *ev = eddy__fault("alloc.event") ? NULL : malloc(sizeof(*ev) + tlen + 1);
    if (ev == NULL) {
        json_decref(attrs);
        return NULL;
    }
    if (attrs == NULL && (attrs = json_object()) == NULL) {
        free(ev);
        return NULL;
    }
    eddy__queue_init(&ev->node);
    ev->attrs = attrs;
    ev->refs = 1;
    ev->sent = 0;
    memcpy(ev->type, type, tlen + 1);
    ev->is_output = strcmp(type, EDDY_OUTPUT_EVENT) == 0;
    eddy__event_set_id(ev, 0);
    return ev;
}

void eddy__event_unref(eddy_event *ev)
{
    if (ev == NULL || --ev->refs != 0)
        return;
    json_decref(ev->attrs);
    EDDY__POISON(ev, sizeof(*ev));
    free(ev);
}

void eddy_event_free(eddy_event *ev)
{
    eddy__event_unref(ev);
}

const char *eddy_event_type(const eddy_event *ev)
{
    return ev != NULL ? ev->type : NULL;
}

json_t *eddy_event_attrs(const eddy_event *ev)
{
    return ev != NULL ? ev->attrs : NULL;
}

/* The text form is made on first use: most events never need it. */
const char *eddy_event_id(const eddy_event *ev)
{
    if (ev == NULL)
        return NULL;
    eddy_event *e = (eddy_event *)ev; /* id_text is a cache */
    if (e->id_text[0] == '\0')
        eddy__hex64(e->id, e->id_text);
    return e->id_text;
}

void eddy__event_set_id(eddy_event *ev, uint64_t id)
{
    ev->id = id;
    ev->id_text[0] = '\0';
}

/*
 * Ids are 64-bit mixes. They only need to be unique within one run of one key
 * (journal keys also carry the key and the run sequence number), where a
 * collision needs two of a run's few events to meet in 2^64.
 */
uint64_t eddy__event_input_id(uint64_t key_hash, uint64_t seq)
{
    return eddy__mix64(key_hash ^ eddy__mix64(seq + 0x9e3779b97f4a7c15ULL));
}

uint64_t eddy__event_child_id(uint64_t parent_id, uint32_t action_index, uint32_t n)
{
    uint64_t pos = ((uint64_t)action_index << 32) | n;
    return eddy__mix64(parent_id ^ eddy__mix64(pos + 0xd1b54a32d192ed03ULL));
}
