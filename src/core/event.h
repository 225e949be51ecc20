/* Events: {id, type, attributes}. Public API in eddy.h. */
#ifndef EDDY_CORE_EVENT_H
#define EDDY_CORE_EVENT_H

#include <stdint.h>

#include "eddy/eddy.h"
#include "util/queue.h"

struct eddy_event {
    eddy__queue node;  /* in the sending task's buffer until released */
    json_t *attrs;     /* owned */
    uint64_t id;       /* 0 until the runtime assigns it */
    unsigned refs;     /* tasks holding it as their trigger, plus the sender */
    uint8_t sent;      /* handed to eddy_ctx_send_event() */
    uint8_t is_output; /* type is OutputEvent */
    char id_text[17];  /* text of id, made on demand; "" until then */
    char type[];       /* NUL-terminated, inline */
};

/* Set the event's id (and its text form). */
void eddy__event_set_id(eddy_event *ev, uint64_t id);

/* The InputEvent id of run seq of a key whose text hashes to key_hash. */
uint64_t eddy__event_input_id(uint64_t key_hash, uint64_t seq);
/* The id of the n-th event (0-based) sent by action action_index triggered by
 * the event parent_id. Deterministic, so a re-run after a crash reproduces it. */
uint64_t eddy__event_child_id(uint64_t parent_id, uint32_t action_index, uint32_t n);

/* Take one more reference / drop one (frees at zero). */
static inline void eddy__event_ref(eddy_event *ev)
{
    ev->refs++;
}
void eddy__event_unref(eddy_event *ev);

#endif /* EDDY_CORE_EVENT_H */
