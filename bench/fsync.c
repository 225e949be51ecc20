/*
 * bench_fsync (W4 bound): the fdatasync rate of a disk. Appends 200-byte
 * records to a file in DIR, fdatasync after each, N times; then writes the
 * same records again in place, fdatasync after each. An append also makes
 * the filesystem commit the new file size; an overwrite of written blocks
 * does not, and is what eddy's commits do once the WAL has its size.
 *
 *   bench_fsync DIR N [PAUSE_MS]
 *
 * Prints one JSON object: syncs, elapsed_s, syncs_per_s, us_per_sync (the
 * appends) and overwrite_syncs_per_s, overwrite_us_per_sync.
 *
 * With PAUSE_MS, then N more overwrites, each after a pause of PAUSE_MS
 * with nothing written: W3's syncs come after its 10 ms sleep, and a sync
 * after an idle pause can take three times one made back to back (the
 * virtual disk's host side, the vCPU woken from its idle halt). Adds
 * paused_us_p50, the median of those syncs alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* s as a decimal in min..max, or -1 after saying what is wrong. */
static long arg(const char *s, const char *name, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "bench_fsync: %s must be %ld..%ld, not '%s'\n", name, min, max, s);
        return -1;
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_fsync DIR N [PAUSE_MS]\n");
        return 2;
    }
    long nl = arg(argv[2], "N", 1, 10000000);
    long pause_ms = argc > 3 ? arg(argv[3], "PAUSE_MS", 0, 60000) : -1;
    if (nl < 0 || (argc > 3 && pause_ms < 0))
        return 2;
    int n = (int)nl;
    char path[4096];
    snprintf(path, sizeof(path), "%s/bench_fsync.dat", argv[1]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    char rec[200];
    memset(rec, 'x', sizeof(rec));
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        if (write(fd, rec, sizeof(rec)) != (ssize_t)sizeof(rec) || fdatasync(fd) != 0) {
            perror(path);
            return 1;
        }
    }
    double el = now_s() - t0;
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        if (pwrite(fd, rec, sizeof(rec), (off_t)i * (off_t)sizeof(rec)) != (ssize_t)sizeof(rec) ||
            fdatasync(fd) != 0) {
            perror(path);
            return 1;
        }
    }
    double ow = now_s() - t0;
    double paused_p50 = -1;
    if (pause_ms >= 0) {
        double *us = malloc((size_t)n * sizeof(*us));
        if (us == NULL) {
            perror("bench_fsync");
            return 1;
        }
        struct timespec pause = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
        for (int i = 0; i < n; i++) {
            while (nanosleep(&pause, &pause) != 0)
                ;
            pause = (struct timespec){pause_ms / 1000, (pause_ms % 1000) * 1000000L};
            if (pwrite(fd, rec, sizeof(rec), (off_t)i * (off_t)sizeof(rec)) !=
                (ssize_t)sizeof(rec)) {
                perror(path);
                return 1;
            }
            double s0 = now_s();
            if (fdatasync(fd) != 0) {
                perror(path);
                return 1;
            }
            us[i] = (now_s() - s0) * 1e6;
        }
        qsort(us, (size_t)n, sizeof(*us), cmp_double);
        paused_p50 = us[n / 2];
        free(us);
    }
    close(fd);
    unlink(path);
    printf("{\"syncs\": %d, \"elapsed_s\": %.6f, \"syncs_per_s\": %.0f, \"us_per_sync\": %.2f, "
           "\"overwrite_syncs_per_s\": %.0f, \"overwrite_us_per_sync\": %.2f",
           n, el, n / el, el * 1e6 / n, n / ow, ow * 1e6 / n);
    if (pause_ms >= 0)
        printf(", \"pause_ms\": %ld, \"paused_us_p50\": %.2f", pause_ms, paused_p50);
    printf("}\n");
    return 0;
}
