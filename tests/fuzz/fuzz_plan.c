/*
 * libFuzzer target for agent plans: a plan built from arbitrary action names
 * and trigger lists. The input is lines "name type type ..." (fields split by
 * spaces, empty fields kept so that empty names and types are tried too).
 *
 * Checks: eddy_plan_add_action() accepts exactly the actions with a new,
 * non-empty UTF-8 name and at least one trigger, each non-empty, UTF-8 and
 * not OutputEvent,
 * and refuses the others with EDDY_EINVAL, leaving the plan as it was; every
 * accepted action is routed from each of its types, once, in registration
 * order; the fingerprint is a function of the accepted actions alone (a plan
 * rebuilt from them has the same one), and so is the description
 * (eddy__plan_describe), in which eddy__plan_differences() finds nothing
 * against itself and, when it can read it, the new action after an added
 * one. The input as a whole is also given to eddy__plan_differences() as a
 * state's description, which it reads or refuses.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz.h"
#include "core/plan.h"

#define MAX_FIELDS 16

static int noop(eddy_ctx *ctx, const eddy_event *ev, void *arg)
{
    (void)ctx;
    (void)ev;
    (void)arg;
    return EDDY_OK;
}

/* Split line into fields at spaces, in place; returns how many (at most MAX_FIELDS). */
static size_t split(char *line, const char *fields[MAX_FIELDS + 1])
{
    size_t n = 0;
    char *p = line;
    while (n < MAX_FIELDS) {
        fields[n++] = p;
        char *sp = strchr(p, ' ');
        if (sp == NULL)
            break;
        *sp = '\0';
        p = sp + 1;
    }
    fields[n] = NULL;
    return n;
}

/* RFC 3629's table of well-formed sequences, written apart from the
 * runtime's own check (util/utf8.h) so that the two are compared. */
static int utf8(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s != 0) {
        unsigned c = *s;
        unsigned lo = 0x80, hi = 0xBF;
        size_t more;
        if (c < 0x80)
            more = 0;
        else if (c >= 0xC2 && c <= 0xDF)
            more = 1;
        else if (c >= 0xE0 && c <= 0xEF)
            more = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4)
            more = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        else
            return 0;
        s++;
        for (size_t i = 0; i < more; i++, s++) {
            if (*s < (i == 0 ? lo : 0x80) || *s > (i == 0 ? hi : 0xBF))
                return 0;
        }
    }
    return 1;
}

static int valid(const eddy_plan *p, const char *const *f, size_t n)
{
    if (n < 2 || f[0][0] == '\0' || !utf8(f[0]) || eddy__plan_find(p, f[0]) != NULL)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if (f[i][0] == '\0' || !utf8(f[i]) || strcmp(f[i], EDDY_OUTPUT_EVENT) == 0)
            return 0;
    }
    return 1;
}

/* Each accepted action is in the route of each of its types exactly once, and
 * routes list actions in registration order. */
static void check_routes(const eddy_plan *p)
{
    for (size_t a = 0; a < p->n; a++) {
        const eddy__action *act = p->actions[a];
        CHECK(act->index == a);
        for (size_t t = 0; t < act->ntypes; t++) {
            const eddy__route *r = eddy__plan_route(p, act->types[t]);
            CHECK(r != NULL);
            size_t seen = 0;
            for (size_t i = 0; i < r->n; i++) {
                seen += r->actions[i] == act;
                if (i > 0)
                    CHECK(r->actions[i - 1]->index < r->actions[i]->index);
            }
            CHECK(seen == 1);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *raw = strdup(text);
    CHECK(raw != NULL);
    eddy_plan *p = eddy_plan_new();
    eddy_plan *again = eddy_plan_new();
    CHECK(p != NULL && again != NULL);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        const char *f[MAX_FIELDS + 1];
        size_t n = split(line, f);
        int ok = valid(p, f, n);
        size_t before = eddy_plan_action_count(p);
        char fp_before[17], fp_after[17], *d_before = NULL, *d_after = NULL;
        eddy__plan_fingerprint(p, fp_before);
        CHECK(eddy__plan_describe(p, &d_before) == EDDY_OK);
        int rc = eddy_plan_add_action(p, f[0], f + 1, noop, NULL);
        eddy__plan_fingerprint(p, fp_after);
        CHECK(eddy__plan_describe(p, &d_after) == EDDY_OK);
        char *says = eddy__plan_differences(d_before, fp_before, d_after);
        CHECK(says == NULL || (ok && strstr(says, "' is new") != NULL));
        free(says);
        free(d_before);
        free(d_after);
        if (ok) {
            CHECK(rc == EDDY_OK);
            CHECK(eddy_plan_action_count(p) == before + 1);
            CHECK(strcmp(eddy_plan_action_name(p, before), f[0]) == 0);
            CHECK(eddy_plan_add_action(again, f[0], f + 1, noop, NULL) == EDDY_OK);
        } else {
            CHECK(rc == EDDY_EINVAL);
            CHECK(eddy_plan_action_count(p) == before);
            CHECK(strcmp(fp_before, fp_after) == 0);
        }
    }
    check_routes(p);
    char fa[17], fb[17];
    eddy__plan_fingerprint(p, fa);
    eddy__plan_fingerprint(again, fb);
    CHECK(strcmp(fa, fb) == 0);
    char *da = NULL, *db = NULL;
    CHECK(eddy__plan_describe(p, &da) == EDDY_OK && eddy__plan_describe(again, &db) == EDDY_OK);
    CHECK(strcmp(da, db) == 0);
    CHECK(eddy__plan_differences(da, fa, db) == NULL);
    free(eddy__plan_differences(raw, fa, da));
    free(da);
    free(db);
    free(raw);
    eddy_plan_free(p);
    eddy_plan_free(again);
    free(text);
    return 0;
}
