/*
 * Unit tests' scratch directories: made with mkdtemp under /tmp, removed with
 * everything in them. Header-only.
 */
#ifndef EDDY_TESTS_TMPTREE_H
#define EDDY_TESTS_TMPTREE_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* root: a buffer of at least 64 bytes; name: a short word for the path.
 * 0, or -1 when the directory could not be made. */
static inline int tmptree_make(char *root, const char *name)
{
    snprintf(root, 64, "/tmp/eddy-test-%s-XXXXXX", name);
    return mkdtemp(root) != NULL ? 0 : -1;
}

static inline int tmptree_rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

/* Remove root and everything under it (symbolic links are not followed). */
static inline int tmptree_remove(const char *root)
{
    return nftw(root, tmptree_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif /* EDDY_TESTS_TMPTREE_H */
