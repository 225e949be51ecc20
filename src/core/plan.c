#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/plan.h"
#include "util/hash.h"
#include "util/hex.h"

eddy_plan *eddy_plan_new(void)
{
    eddy_plan *p = calloc(1, sizeof(*p));
    if (p != NULL)
        eddy__map_init(&p->routes);
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
    if (plan->lang_free != NULL)
        plan->lang_free(plan->lang);
    if (plan->dl != NULL)
        dlclose(plan->dl);
    free(plan);
}

eddy__action *eddy__plan_find(const eddy_plan *plan, const char *name)
{
    for (size_t i = 0; i < plan->n; i++) {
        if (strcmp(plan->actions[i]->name, name) == 0)
            return plan->actions[i];
    }
    return NULL;
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
    for (size_t i = 0; i < r->n; i++) {
        if (r->actions[i] == a)
            return EDDY_OK; /* the same type listed twice */
    }
    eddy__action **na = realloc(r->actions, (r->n + 1) * sizeof(*na));
    if (na == NULL)
        return EDDY_ENOMEM;
    r->actions = na;
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

int eddy__plan_add(eddy_plan *plan, const char *name, const char *const *types, eddy_action_fn fn,
                   void *arg, const eddy__action_ops *ops, void *impl)
{
    if (plan == NULL || name == NULL || *name == '\0' || types == NULL || types[0] == NULL ||
        (fn == NULL && ops == NULL))
        return EDDY_EINVAL;
    if (eddy__plan_find(plan, name) != NULL)
        return EDDY_EINVAL;
    size_t nt = 0;
    for (; types[nt] != NULL; nt++) {
        if (*types[nt] == '\0' || strcmp(types[nt], EDDY_OUTPUT_EVENT) == 0)
            return EDDY_EINVAL;
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
    if (fn == NULL)
        return EDDY_EINVAL;
    return eddy__plan_add(plan, name, event_types, fn, arg, NULL, NULL);
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

void eddy__plan_fingerprint(const eddy_plan *plan, char out[17])
{
    uint64_t h = 0x65646479706c616eULL;
    for (size_t i = 0; i < plan->n; i++) {
        const eddy__action *a = plan->actions[i];
        h = eddy__mix64(h ^ eddy__hash_bytes(a->name, strlen(a->name) + 1));
        for (size_t t = 0; t < a->ntypes; t++)
            h = eddy__mix64(h ^ eddy__hash_bytes(a->types[t], strlen(a->types[t]) + 1) ^ t);
    }
    eddy__hex64(h, out);
}

void eddy__plan_truncate(eddy_plan *plan, size_t n)
{
    while (plan->n > n) {
        eddy__action *a = plan->actions[--plan->n];
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
    int rc = init(plan);
    if (rc != EDDY_OK)
        rc = eddy__error_set(err, EDDY_EPLAN, "plan", "%s: " EDDY_AGENT_INIT_SYMBOL "() failed: %s",
                             path, eddy_strerror(rc));
    else if (plan->n == before)
        rc = eddy__error_set(err, EDDY_EPLAN, "plan", "%s: the agent registered no action", path);
    if (rc != EDDY_OK) {
        /* Its actions go before its code: their args may point into it. */
        eddy__plan_truncate(plan, before);
        plan->dl = NULL;
        dlclose(dl);
    }
    return rc;
}

#ifndef EDDY_WITH_PYTHON
int eddy_plan_load_python(eddy_plan *plan, const char *path, const char *agent_class,
                          eddy_error **err)
{
    (void)plan;
    (void)agent_class;
    return eddy__error_set(err, EDDY_ENOTSUP, "plan",
                           "%s: this eddy was built without Python support",
                           path != NULL ? path : "Python agent");
}
#endif
