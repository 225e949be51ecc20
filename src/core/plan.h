/* Agent plans: actions and the event types that trigger them. */
#ifndef EDDY_CORE_PLAN_H
#define EDDY_CORE_PLAN_H

#include <stddef.h>

#include "eddy/eddy.h"
#include "io/paths.h"
#include "util/map.h"

typedef struct eddy__action eddy__action;

/*
 * How an action executes. C actions (ops NULL) run fn on a coroutine; other
 * languages provide ops. step() runs the action execution until it suspends
 * or finishes: returns 1 when finished (the task's rc is set), 0 when
 * suspended on something that will make the task ready again.
 */
typedef struct eddy__action_ops {
    int (*step)(eddy_ctx *task);
    /* Drop what the language keeps for an unfinished task (a coroutine
     * object), when the runtime discards it. May be NULL. */
    void (*discard)(eddy_ctx *task);
    /* Free impl. May be NULL. */
    void (*free_impl)(void *impl);
    /* The runtime ran a batch of steps and goes on to something else (the
     * loop, completions, closing): release what step() keeps from one step
     * to the next of a batch (the GIL). May be NULL. */
    void (*pause)(void);
} eddy__action_ops;

struct eddy__action {
    char *name;
    size_t index; /* registration order */
    eddy_action_fn fn;
    void *arg;
    const eddy__action_ops *ops; /* NULL for C actions */
    void *impl;                  /* language-specific callable */
    char **types;
    size_t ntypes;
};

typedef struct eddy__route {
    char *type;
    size_t n, cap;
    eddy__action **actions; /* in registration order */
} eddy__route;

struct eddy_plan {
    eddy__action **actions;
    size_t n, cap;
    eddy__map routes; /* event type -> eddy__route */
    eddy__map names;  /* action name -> eddy__action (names are unique) */
    void *dl;         /* dlopen handle of a C agent */
    /* The files its agents were loaded from (a C agent's module, a Python
     * agent's source): a run refuses to write over one. */
    eddy__file_id *files;
    size_t nfiles;
    /* Language runtime that owns impls (the embedded interpreter). */
    void *lang;
    void (*lang_free)(void *lang);
    /* Why the last eddy__plan_add() refused its action (EDDY_EINVAL), in
     * words naming it ("action 'a' is in the plan already: ..."); "" after a
     * call that added its action or failed on memory. A load whose init
     * returns EDDY_EINVAL says it. */
    char why[384];
};

/* Add an action with language ops (impl taken on success). An EDDY_EINVAL
 * leaves the reason in plan->why. */
int eddy__plan_add(eddy_plan *plan, const char *name, const char *const *types, eddy_action_fn fn,
                   void *arg, const eddy__action_ops *ops, void *impl);

/* Note that an agent was loaded from path (a file a run must not write):
 * EDDY_OK, also when path cannot be stat'ed (nothing to protect then), or
 * EDDY_ENOMEM. */
int eddy__plan_add_file(eddy_plan *plan, const char *path);

/* Remove the actions added after the first n, newest first, and their routes:
 * the plan is as it was when it had n actions. A failed load uses it. */
void eddy__plan_truncate(eddy_plan *plan, size_t n);

/* The actions triggered by type, or NULL. */
const eddy__route *eddy__plan_route(const eddy_plan *plan, const char *type);

/* 16 hex digits identifying the action names and triggers (order-sensitive). */
void eddy__plan_fingerprint(const eddy_plan *plan, char out[17]);

/*
 * What the fingerprint covers, in words a later run can compare: the actions
 * in registration order, each with its event types in the order given, as
 * JSON text ([{"name":"triage","event_types":["Scored","Flagged"]}, ...]).
 * A state keeps it beside the fingerprint. *out is new (free()); EDDY_OK or
 * EDDY_ENOMEM.
 */
int eddy__plan_describe(const eddy_plan *plan, char **out);

/*
 * What differs between the plan that theirs describes and the one ours
 * describes (eddy__plan_describe), in words: "action 'score' is new; action
 * 'triage' listens to Scored, Flagged instead of Scored; action 'old' was
 * removed", and a change of order among the actions both have. New text
 * (free()), or NULL when it cannot be told: theirs is not a description, or
 * not one of a plan whose fingerprint is their_fp (a description is trusted
 * only that far); a name is not UTF-8 (JSON cannot hold it); no difference
 * shows; out of memory.
 */
char *eddy__plan_differences(const char *theirs, const char *their_fp, const char *ours);

/* The action named name, or NULL. */
eddy__action *eddy__plan_find(const eddy_plan *plan, const char *name);

#endif /* EDDY_CORE_PLAN_H */
