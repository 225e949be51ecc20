/*
 * bench_fsync (W4 bound): the fdatasync rate of a disk. Appends 200-byte
 * records to a file in DIR, fdatasync after each, N times; then writes the
 * same records again in place, fdatasync after each. An append also makes
 * the filesystem commit the new file size; an overwrite of written blocks
 * does not, and is what eddy's commits do once the WAL has its size.
 *
 *   bench_fsync DIR N
 *
 * Prints one JSON object: syncs, elapsed_s, syncs_per_s, us_per_sync (the
 * appends) and overwrite_syncs_per_s, overwrite_us_per_sync.
 */
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

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_fsync DIR N\n");
        return 2;
    }
    int n = atoi(argv[2]);
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
    close(fd);
    unlink(path);
    printf("{\"syncs\": %d, \"elapsed_s\": %.6f, \"syncs_per_s\": %.0f, \"us_per_sync\": %.2f, "
           "\"overwrite_syncs_per_s\": %.0f, \"overwrite_us_per_sync\": %.2f}\n",
           n, el, n / el, el * 1e6 / n, n / ow, ow * 1e6 / n);
    return 0;
}
