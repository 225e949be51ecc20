#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/plan.h"
#include "util/hash.h"
#include "util/hex.h"
#include "util/jsonw.h"
#include "util/utf8.h"

eddy_plan *eddy_plan_new(void)
{
    eddy_plan *p = calloc(1, sizeof(*p));
    if (p != NULL) {
        eddy__map_init(&p->routes);
        eddy__map_init(&p->names);
    }
    return p;
}

static void action_free(eddy__action *a)
{
    if (a == NULL)
        return;
    if (a->ops != NULL && a->ops->free_impl != NULL && a->impl != NULL)
        a->ops->free_impl(a->impl);
    for (size_t i = 0; i < a->ntypes; i++)
        free(a->types[i]);
    free(a->types);
    free(a->name);
    free(a);
}

void eddy_plan_free(eddy_plan *plan)
{
    if (plan == NULL)
        return;
    for (size_t i = 0; i < plan->n; i++)
        action_free(plan->actions[i]);
    free(plan->actions);
    for (size_t i = 0; i < plan->routes.cap; i++) {
        eddy__route *r = plan->routes.slots[i].value;
        if (plan->routes.slots[i].key == NULL)
            continue;
        free(r->actions);
        free(r->type);
        free(r);
    }
    eddy__map_free(&plan->routes);
    eddy__map_free(&plan->names);
    if (plan->lang_free != NULL)
        plan->lang_free(plan->lang);
    if (plan->dl != NULL)
        dlclose(plan->dl);
    for (size_t i = 0; i < plan->nfiles; i++)
        free(plan->files[i].path);
    free(plan->files);
    free(plan);
}

int eddy__plan_add_file(eddy_plan *plan, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return EDDY_OK;
    for (size_t i = 0; i < plan->nfiles; i++)
        if (plan->files[i].dev == st.st_dev && plan->files[i].ino == st.st_ino)
            return EDDY_OK;
    eddy__file_id *f = realloc(plan->files, (plan->nfiles + 1) * sizeof(*f));
    if (f == NULL)
        return EDDY_ENOMEM;
    plan->files = f;
    char *p = strdup(path);
    if (p == NULL)
        return EDDY_ENOMEM;
    f[plan->nfiles++] = (eddy__file_id){.dev = st.st_dev, .ino = st.st_ino, .path = p};
    return EDDY_OK;
}

eddy__action *eddy__plan_find(const eddy_plan *plan, const char *name)
{
    return eddy__map_get(&plan->names, name, strlen(name));
}

static int route_add(eddy_plan *plan, const char *type, eddy__action *a)
{
    size_t len = strlen(type);
    eddy__route *r = eddy__map_get(&plan->routes, type, len);
    if (r == NULL) {
        r = calloc(1, sizeof(*r));
        if (r == NULL || (r->type = strdup(type)) == NULL) {
            free(r);
            return EDDY_ENOMEM;
        }
        if (eddy__map_put(&plan->routes, r->type, len, r) != EDDY_OK) {
            free(r->type);
            free(r);
            return EDDY_ENOMEM;
        }
    }
    /* a is the newest action of the plan: when it is in the route already
     * (the same type listed twice), it is last there. */
    if (r->n > 0 && r->actions[r->n - 1] == a)
        return EDDY_OK;
    if (r->n == r->cap) {
        size_t ncap = r->cap != 0 ? r->cap * 2 : 1;
        eddy__action **na = realloc(r->actions, ncap * sizeof(*na));
        if (na == NULL)
            return EDDY_ENOMEM;
        r->actions = na;
        r->cap = ncap;
    }
    r->actions[r->n++] = a;
    return EDDY_OK;
}

/*
 * Take action a out of the routes of the first n of types, where it is last
 * (it was added last), and drop a route it leaves empty: no route of a plan is
 * empty otherwise. A type listed twice is seen once.
 */
static void routes_drop(eddy_plan *plan, const char *const *types, size_t n, const eddy__action *a)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(types[i]);
        eddy__route *r = eddy__map_get(&plan->routes, types[i], len);
        if (r == NULL)
            continue;
        if (r->n > 0 && r->actions[r->n - 1] == a)
            r->n--;
        if (r->n == 0) {
            eddy__map_remove(&plan->routes, types[i], len);
            free(r->actions);
            free(r->type);
            free(r);
        }
    }
}

/* EDDY_EINVAL, with why in plan->why: what is wrong with the action named
 * name, or with its name (name NULL). */
static int refuse(eddy_plan *plan, const char *name, const char *what)
{
    char q[EDDY__QUOTED_MAX];
    if (name != NULL) {
        eddy__quote(q, sizeof(q), name);
        snprintf(plan->why, sizeof(plan->why), "action %s %s", q, what);
    } else {
        snprintf(plan->why, sizeof(plan->why), "%s", what);
    }
    return EDDY_EINVAL;
}

int eddy__plan_add(eddy_plan *plan, const char *name, const char *const *types, eddy_action_fn fn,
                   void *arg, const eddy__action_ops *ops, void *impl)
{
    if (plan == NULL)
        return EDDY_EINVAL;
    plan->why[0] = '\0';
    if (name == NULL || *name == '\0')
        return refuse(plan, NULL, name == NULL ? "the name is NULL" : "the name is empty");
    /* Names and types are journaled, kept in the state and reported as
     * JSON, which holds UTF-8 only. */
    if (!eddy__utf8_valid(name))
        return refuse(plan, name, "has a name that is not UTF-8");
    if (types == NULL || types[0] == NULL)
        return refuse(plan, name, "has no event types: it needs at least one");
    if (fn == NULL && ops == NULL)
        return refuse(plan, name, "has no function: fn is NULL");
    if (eddy__plan_find(plan, name) != NULL)
        return refuse(plan, name, "is in the plan already: names are unique");
    size_t nt = 0;
    for (; types[nt] != NULL; nt++) {
        if (*types[nt] == '\0')
            return refuse(plan, name, "listens to an empty event type");
        if (!eddy__utf8_valid(types[nt]))
            return refuse(plan, name, "listens to an event type that is not UTF-8");
        if (strcmp(types[nt], EDDY_OUTPUT_EVENT) == 0)
            return refuse(plan, name,
                          "listens to " EDDY_OUTPUT_EVENT ", which never triggers actions: its "
                          "events go to the sink");
    }
    if (plan->n == plan->cap) {
        size_t ncap = plan->cap != 0 ? plan->cap * 2 : 8;
        eddy__action **na = realloc(plan->actions, ncap * sizeof(*na));
        if (na == NULL)
            return EDDY_ENOMEM;
        plan->actions = na;
        plan->cap = ncap;
    }
    eddy__action *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return EDDY_ENOMEM;
    size_t routed = 0; /* route_add() calls made, a failed one included */
    a->name = strdup(name);
    a->types = calloc(nt, sizeof(char *));
    if (a->name == NULL || a->types == NULL)
        goto fail;
    for (size_t i = 0; i < nt; i++, a->ntypes++) {
        if ((a->types[i] = strdup(types[i])) == NULL)
            goto fail;
    }
    a->index = plan->n;
    a->fn = fn;
    a->arg = arg;
    for (size_t i = 0; i < nt; i++, routed++) {
        if (route_add(plan, a->types[i], a) != EDDY_OK) {
            routed++; /* it may have made the type's route */
            goto fail;
        }
    }
    if (eddy__map_put(&plan->names, a->name, strlen(a->name), a) != EDDY_OK)
        goto fail;
    a->ops = ops;
    a->impl = impl;
    plan->actions[plan->n++] = a;
    return EDDY_OK;
fail:
    routes_drop(plan, (const char *const *)a->types, routed, a);
    action_free(a);
    return EDDY_ENOMEM;
}

int eddy_plan_add_action(eddy_plan *plan, const char *name, const char *const *event_types,
                         eddy_action_fn fn, void *arg)
{
    return eddy__plan_add(plan, name, event_types, fn, arg, NULL, NULL); /* fn NULL refused */
}

size_t eddy_plan_action_count(const eddy_plan *plan)
{
    return plan != NULL ? plan->n : 0;
}

const char *eddy_plan_action_name(const eddy_plan *plan, size_t i)
{
    return plan != NULL && i < plan->n ? plan->actions[i]->name : NULL;
}

const char *eddy_plan_action_event_type(const eddy_plan *plan, size_t i, size_t j)
{
    if (plan == NULL || i >= plan->n || j >= plan->actions[i]->ntypes)
        return NULL;
    return plan->actions[i]->types[j];
}

const eddy__route *eddy__plan_route(const eddy_plan *plan, const char *type)
{
    return eddy__map_get(&plan->routes, type, strlen(type));
}

/* The steps of the fingerprint, shared by a plan and a description of one. */
#define FINGERPRINT_SEED 0x65646479706c616eULL

static uint64_t fingerprint_name(uint64_t h, const char *name)
{
    return eddy__mix64(h ^ eddy__hash_bytes(name, strlen(name) + 1));
}

static uint64_t fingerprint_type(uint64_t h, const char *type, size_t t)
{
    return eddy__mix64(h ^ eddy__hash_bytes(type, strlen(type) + 1) ^ t);
}

void eddy__plan_fingerprint(const eddy_plan *plan, char out[17])
{
    uint64_t h = FINGERPRINT_SEED;
    for (size_t i = 0; i < plan->n; i++) {
        const eddy__action *a = plan->actions[i];
        h = fingerprint_name(h, a->name);
        for (size_t t = 0; t < a->ntypes; t++)
            h = fingerprint_type(h, a->types[t], t);
    }
    eddy__hex64(h, out);
}

static int put(eddy__buf *b, const char *s)
{
    return eddy__buf_put(b, s, strlen(s));
}

/* Names are written as they are. eddy__plan_add() takes UTF-8 names and
 * types only, but an older eddy took any: a state's description holding
 * one that is not UTF-8 is a text that eddy__plan_differences() does not
 * read, and the refusal of the state gives the fingerprints only. */
int eddy__plan_describe(const eddy_plan *plan, char **out)
{
    eddy__buf b = {0};
    int rc = put(&b, "[");
    for (size_t i = 0; i < plan->n && rc == EDDY_OK; i++) {
        const eddy__action *a = plan->actions[i];
        rc = put(&b, i > 0 ? ",{\"name\":" : "{\"name\":");
        if (rc == EDDY_OK)
            rc = eddy__json_write_str(&b, a->name, strlen(a->name));
        if (rc == EDDY_OK)
            rc = put(&b, ",\"event_types\":[");
        for (size_t t = 0; t < a->ntypes && rc == EDDY_OK; t++) {
            if (t > 0)
                rc = put(&b, ",");
            if (rc == EDDY_OK)
                rc = eddy__json_write_str(&b, a->types[t], strlen(a->types[t]));
        }
        if (rc == EDDY_OK)
            rc = put(&b, "]}");
    }
    if (rc == EDDY_OK)
        rc = put(&b, "]");
    if (rc == EDDY_OK)
        rc = eddy__buf_nul(&b);
    if (rc != EDDY_OK) {
        free(b.p);
        b.p = NULL;
    }
    *out = b.p;
    return rc;
}

/* The actions of a description, each checked to have a name and a list of
 * event types; NULL when text is not a description (or NULL). */
static json_t *described(const char *text)
{
    json_t *v = text != NULL ? json_loads(text, 0, NULL) : NULL, *a, *type;
    size_t i, t;
    if (!json_is_array(v))
        goto bad;
    json_array_foreach(v, i, a)
    {
        json_t *types = json_object_get(a, "event_types");
        if (!json_is_string(json_object_get(a, "name")) || !json_is_array(types))
            goto bad;
        json_array_foreach(types, t, type)
        {
            if (!json_is_string(type))
                goto bad;
        }
    }
    return v;
bad:
    json_decref(v);
    return NULL;
}

static const char *described_name(const json_t *actions, size_t i)
{
    return json_string_value(json_object_get(json_array_get(actions, i), "name"));
}

static const json_t *described_types(const json_t *actions, size_t i)
{
    return json_object_get(json_array_get(actions, i), "event_types");
}

/* An index of a description: each action's name -> its place (a plan
 * may have thousands of actions: no search per name). NULL on ENOMEM. */
static json_t *described_index(const json_t *actions)
{
    json_t *index = json_object();
    for (size_t i = 0; index != NULL && i < json_array_size(actions); i++) {
        if (json_object_set_new(index, described_name(actions, i), json_integer((json_int_t)i)) !=
            0) {
            json_decref(index);
            index = NULL;
        }
    }
    return index;
}

/* The place of the action named name in index's description, or SIZE_MAX. */
static size_t described_find(const json_t *index, const char *name)
{
    const json_t *v = json_object_get(index, name);
    return v != NULL ? (size_t)json_integer_value(v) : SIZE_MAX;
}

static uint64_t described_fingerprint(const json_t *actions)
{
    uint64_t h = FINGERPRINT_SEED;
    for (size_t i = 0; i < json_array_size(actions); i++) {
        const json_t *types = described_types(actions, i);
        h = fingerprint_name(h, described_name(actions, i));
        for (size_t t = 0; t < json_array_size(types); t++)
            h = fingerprint_type(h, json_string_value(json_array_get(types, t)), t);
    }
    return h;
}

/* The place of the first action from i on that other (by its index) has
 * too, or SIZE_MAX. */
static size_t next_shared(const json_t *actions, size_t i, const json_t *other)
{
    for (; i < json_array_size(actions); i++) {
        if (described_find(other, described_name(actions, i)) != SIZE_MAX)
            return i;
    }
    return SIZE_MAX;
}

/* At most this many clauses are spelt out; the rest are counted. */
#define MAX_CLAUSES 10
/* And at most this many names in the order clause. */
#define MAX_NAMES 10

/* The clauses of eddy__plan_differences(), "; " between them. */
typedef struct clauses {
    eddy__buf b;
    int rc;
    size_t n;  /* clauses begun */
    int muted; /* the current clause is past MAX_CLAUSES: not written */
} clauses;

static void say(clauses *c, const char *s)
{
    if (c->rc == EDDY_OK && !c->muted)
        c->rc = put(&c->b, s);
}

static void clause(clauses *c, const char *s)
{
    c->muted = ++c->n > MAX_CLAUSES;
    say(c, c->b.len > 0 ? "; " : "");
    say(c, s);
}

/* A clause on the action named name: "action 'name'" and then rest. */
static void about(clauses *c, const char *name, const char *rest)
{
    clause(c, "action '");
    say(c, name);
    say(c, "'");
    say(c, rest);
}

static void say_types(clauses *c, const json_t *types)
{
    for (size_t t = 0; t < json_array_size(types); t++) {
        say(c, t > 0 ? ", " : "");
        say(c, json_string_value(json_array_get(types, t)));
    }
}

/* The names of the actions that other (by its index) has too, in the
 * order of actions: 'a', 'b' (the first MAX_NAMES, then "..."). */
static void say_shared(clauses *c, const json_t *actions, const json_t *other)
{
    const char *sep = "'";
    size_t n = 0;
    for (size_t i = next_shared(actions, 0, other); i != SIZE_MAX;
         i = next_shared(actions, i + 1, other)) {
        if (n++ == MAX_NAMES) {
            say(c, ", ...");
            break;
        }
        say(c, sep);
        say(c, described_name(actions, i));
        say(c, "'");
        sep = ", '";
    }
}

char *eddy__plan_differences(const char *theirs, const char *their_fp, const char *ours)
{
    json_t *was = described(theirs), *now = described(ours);
    json_t *was_at = was != NULL ? described_index(was) : NULL;
    json_t *now_at = now != NULL ? described_index(now) : NULL;
    clauses c = {{0}, EDDY_OK, 0, 0};
    char fp[17];
    if (was_at == NULL || now_at == NULL || their_fp == NULL)
        goto out;
    eddy__hex64(described_fingerprint(was), fp);
    if (strcmp(fp, their_fp) != 0)
        goto out;
    for (size_t i = 0; i < json_array_size(now); i++) {
        const char *name = described_name(now, i);
        size_t j = described_find(was_at, name);
        if (j == SIZE_MAX) {
            about(&c, name, " is new");
        } else if (!json_equal(described_types(now, i), described_types(was, j))) {
            about(&c, name, " listens to ");
            say_types(&c, described_types(now, i));
            say(&c, " instead of ");
            say_types(&c, described_types(was, j));
        }
    }
    for (size_t j = 0; j < json_array_size(was); j++) {
        if (described_find(now_at, described_name(was, j)) == SIZE_MAX)
            about(&c, described_name(was, j), " was removed");
    }
    /* The actions both have, in the order of each. */
    size_t i = next_shared(now, 0, was_at), j = next_shared(was, 0, now_at);
    while (i != SIZE_MAX && j != SIZE_MAX &&
           strcmp(described_name(now, i), described_name(was, j)) == 0) {
        i = next_shared(now, i + 1, was_at);
        j = next_shared(was, j + 1, now_at);
    }
    if (i != SIZE_MAX || j != SIZE_MAX) {
        clause(&c, "the actions are in another order: ");
        say_shared(&c, now, was_at);
        say(&c, " instead of ");
        say_shared(&c, was, now_at);
    }
    if (c.n > MAX_CLAUSES) {
        char more[64];
        snprintf(more, sizeof(more), "; and %zu more difference%s", c.n - MAX_CLAUSES,
                 c.n - MAX_CLAUSES == 1 ? "" : "s");
        c.muted = 0;
        say(&c, more);
    }
    if (c.rc == EDDY_OK && c.b.len > 0)
        c.rc = eddy__buf_nul(&c.b);
out:
    json_decref(was_at);
    json_decref(now_at);
    json_decref(was);
    json_decref(now);
    if (c.rc != EDDY_OK || c.b.len == 0) {
        free(c.b.p);
        return NULL;
    }
    return c.b.p;
}

void eddy__plan_truncate(eddy_plan *plan, size_t n)
{
    while (plan->n > n) {
        eddy__action *a = plan->actions[--plan->n];
        eddy__map_remove(&plan->names, a->name, strlen(a->name));
        routes_drop(plan, (const char *const *)a->types, a->ntypes, a);
        action_free(a);
    }
}

int eddy_plan_load_shared(eddy_plan *plan, const char *path, eddy_error **err)
{
    if (plan == NULL || path == NULL)
        return eddy__error_set(err, EDDY_EINVAL, "plan", "eddy_plan_load_shared: %s is NULL",
                               plan == NULL ? "plan" : "path");
    if (plan->dl != NULL)
        return eddy__error_set(err, EDDY_EINVAL, "plan", "%s: the plan already has a C agent",
                               path);
    /* dlopen() searches the library path for a bare name; an agent is a file. */
    char *full = NULL;
    if (strchr(path, '/') == NULL) {
        full = malloc(strlen(path) + 3);
        if (full == NULL)
            return eddy__error_set(err, EDDY_ENOMEM, "memory", "cannot load agent %s: %s", path,
                                   eddy_strerror(EDDY_ENOMEM));
        strcpy(full, "./");
        strcat(full, path);
    }
    void *dl = dlopen(full != NULL ? full : path, RTLD_NOW | RTLD_LOCAL);
    free(full);
    if (dl == NULL)
        return eddy__error_set(err, EDDY_EPLAN, "plan", "cannot load agent %s: %s", path,
                               dlerror());
    eddy_agent_init_fn init;
    *(void **)&init = dlsym(dl, EDDY_AGENT_INIT_SYMBOL);
    if (init == NULL) {
        dlclose(dl);
        return eddy__error_set(
            err, EDDY_EPLAN, "plan",
            "%s does not export " EDDY_AGENT_INIT_SYMBOL "(): is it an eddy agent?", path);
    }
    size_t before = plan->n;
    plan->dl = dl;
    plan->why[0] = '\0';
    int rc = init(plan);
    /* The refusal of its last eddy_plan_add_action() call, when it returns
     * that call's code: most likely why it failed (the action and the
     * reason; "invalid argument" alone names nothing). */
    if (rc == EDDY_EINVAL && plan->why[0] != '\0')
        rc = eddy__error_set(err, EDDY_EPLAN, "plan",
                             "%s: " EDDY_AGENT_INIT_SYMBOL
                             "() failed: %s (eddy_plan_add_action: %s)",
                             path, eddy_strerror(rc), plan->why);
    else if (rc != EDDY_OK)
        rc = eddy__error_set(err, EDDY_EPLAN, "plan", "%s: " EDDY_AGENT_INIT_SYMBOL "() failed: %s",
                             path, eddy_strerror(rc));
    else if (plan->n == before)
        rc = eddy__error_set(err, EDDY_EPLAN, "plan", "%s: the agent registered no action", path);
    if (rc == EDDY_OK && eddy__plan_add_file(plan, path) != EDDY_OK)
        rc = eddy__error_set(err, EDDY_ENOMEM, "memory", "cannot load agent %s: %s", path,
                             eddy_strerror(EDDY_ENOMEM));
    if (rc != EDDY_OK) {
        /* Its actions go before its code: their args may point into it. */
        eddy__plan_truncate(plan, before);
        plan->dl = NULL;
        dlclose(dl);
    }
    return rc;
}

#ifndef EDDY_WITH_PYTHON
/* The arguments are checked as with Python (src/py/agent.c): a NULL plan or
 * path is the caller's mistake in any build. */
int eddy_plan_load_python(eddy_plan *plan, const char *path, const char *agent_class,
                          eddy_error **err)
{
    (void)agent_class;
    if (plan == NULL || path == NULL)
        return eddy__error_set(err, EDDY_EINVAL, "plan", "eddy_plan_load_python: %s is NULL",
                               plan == NULL ? "plan" : "path");
    return eddy__error_set(
        err, EDDY_ENOTSUP, "plan",
        "cannot load Python agent %s: this eddy was built without Python support", path);
}

int eddy_python_hold(eddy_error **err)
{
    return eddy__error_set(err, EDDY_ENOTSUP, "plan", "this eddy was built without Python support");
}

void eddy_python_release(void)
{
}

/* No Python agent can load: nothing for the hooks to see. */
void eddy_python_set_signal_hook(eddy_python_signal_fn fn, void *arg)
{
    (void)fn;
    (void)arg;
}

void eddy_python_set_finalize_hook(eddy_python_finalize_fn fn, void *arg)
{
    (void)fn;
    (void)arg;
}
#endif
