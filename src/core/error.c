#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

struct eddy_error {
    char *type;
    char *message;
};

const char *eddy_strerror(int code)
{
    switch (code) {
#define EDDY__ERRNO_TEXT(name, val, text) \
    case EDDY_##name:                     \
        return text;
        EDDY_ERRNO_MAP(EDDY__ERRNO_TEXT)
#undef EDDY__ERRNO_TEXT
    }
    return "unknown error";
}

const char *eddy_err_name(int code)
{
    switch (code) {
#define EDDY__ERRNO_NAME(name, val, text) \
    case EDDY_##name:                     \
        return "EDDY_" #name;
        EDDY_ERRNO_MAP(EDDY__ERRNO_NAME)
#undef EDDY__ERRNO_NAME
    }
    return "EDDY_UNKNOWN";
}

const char *eddy_version(void)
{
    return EDDY_VERSION_STRING;
}

eddy_error *eddy_error_new(const char *type, const char *message)
{
    eddy_error *e = malloc(sizeof(*e));
    if (e == NULL)
        return NULL;
    e->type = strdup(type != NULL && *type != '\0' ? type : "error");
    e->message = strdup(message != NULL ? message : "");
    if (e->type == NULL || e->message == NULL) {
        eddy_error_free(e);
        return NULL;
    }
    return e;
}

static eddy_error *error_vnewf(const char *type, const char *fmt, va_list ap)
{
    char buf[512];
    char *msg = buf;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return NULL;
    }
    if ((size_t)n >= sizeof(buf)) {
        msg = malloc((size_t)n + 1);
        if (msg == NULL) {
            va_end(ap2);
            return NULL;
        }
        vsnprintf(msg, (size_t)n + 1, fmt, ap2);
    }
    va_end(ap2);
    eddy_error *e = eddy_error_new(type, msg);
    if (msg != buf)
        free(msg);
    return e;
}

eddy_error *eddy_error_newf(const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    eddy_error *e = error_vnewf(type, fmt, ap);
    va_end(ap);
    return e;
}

const char *eddy_error_type(const eddy_error *e)
{
    return e != NULL ? e->type : "";
}

const char *eddy_error_message(const eddy_error *e)
{
    return e != NULL ? e->message : "";
}

void eddy_error_free(eddy_error *e)
{
    if (e == NULL)
        return;
    free(e->type);
    free(e->message);
    free(e);
}

eddy_error *eddy__error_dup(const eddy_error *e)
{
    return e != NULL ? eddy_error_new(e->type, e->message) : NULL;
}

int eddy__error_set(eddy_error **err, int code, const char *type, const char *fmt, ...)
{
    if (err == NULL || *err != NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    *err = error_vnewf(type, fmt, ap);
    va_end(ap);
    return code;
}

void eddy__quote(char *out, size_t size, const char *s)
{
    if (size == 0)
        return;
    if (s == NULL) {
        snprintf(out, size, "NULL");
        return;
    }
    size_t o = 0, i = 0;
    out[o++] = '\'';
    for (; s[i] != '\0' && i < 64 && o + 8 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", c);
    }
    if (s[i] != '\0' && o + 4 < size)
        o += (size_t)snprintf(out + o, size - o, "...");
    if (o + 1 < size)
        out[o++] = '\'';
    out[o < size ? o : size - 1] = '\0';
}
