/* Fault injection for tests; see fault.h. */
#ifdef EDDY_TEST_HOOKS
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "util/fault.h"

#define RULES_MAX    8
#define NAME_MAX_LEN 32

static struct rule {
    char name[NAME_MAX_LEN];
    unsigned long nth;
    int err;
    atomic_ulong calls;
} rules[RULES_MAX];
static int nrules;
static uv_once_t once = UV_ONCE_INIT;
atomic_int eddy__fault_rules = -1;

static int errno_named(const char *s)
{
    static const struct {
        const char *name;
        int value;
    } names[] = {{"EIO", EIO}, {"ENOSPC", ENOSPC}, {"ENOMEM", ENOMEM}, {"EPIPE", EPIPE}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i].name) == 0)
            return names[i].value;
    return EIO;
}

/* Parse rules (NULL: none); malformed rules are ignored (a test then sees
 * no fault). */
static void parse_rules(const char *env)
{
    nrules = 0;
    if (env == NULL) {
        atomic_store(&eddy__fault_rules, 0);
        return;
    }
    char buf[256];
    strncpy(buf, env, sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = '\0';
    char *save = NULL;
    for (char *r = strtok_r(buf, ",", &save); r != NULL && nrules < RULES_MAX;
         r = strtok_r(NULL, ",", &save)) {
        char *n = strchr(r, ':');
        if (n == NULL || (size_t)(n - r) >= NAME_MAX_LEN)
            continue;
        *n++ = '\0';
        char *e = strchr(n, ':');
        if (e != NULL)
            *e++ = '\0';
        struct rule *ru = &rules[nrules];
        strcpy(ru->name, r);
        ru->nth = strtoul(n, NULL, 10);
        ru->err = e != NULL ? errno_named(e) : EIO;
        atomic_init(&ru->calls, 0);
        if (ru->nth > 0)
            nrules++;
    }
    atomic_store(&eddy__fault_rules, nrules);
}

static void load_rules(void)
{
    parse_rules(getenv("EDDY_FAULT"));
}

void eddy__fault_set(const char *rules_text)
{
    uv_once(&once, load_rules);
    parse_rules(rules_text);
}

static int matches(const char *name, const char *site)
{
    size_t n = strlen(name);
    return strncmp(name, site, n) == 0 && (site[n] == '\0' || site[n] == '.');
}

int eddy__fault_check(const char *site)
{
    uv_once(&once, load_rules);
    for (int i = 0; i < nrules; i++) {
        struct rule *r = &rules[i];
        if (matches(r->name, site) && atomic_fetch_add(&r->calls, 1) + 1 == r->nth)
            return r->err;
    }
    return 0;
}
#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int eddy__fault_unused;
#endif
