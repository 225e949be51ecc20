/*
 * Descriptors that hold eddy's locks (flock on the state directory, its
 * LOCK and the files eddy writes), closed in every child forked without an
 * exec: a child an agent forks (os.fork(), multiprocessing) shares the
 * open file descriptions, and with them the locks, which would stay held
 * while it lives, after eddy exited, and keep the next eddy out.
 * (O_CLOEXEC covers a fork followed by an exec.)
 */
#ifndef EDDY_UTIL_FORKFD_H
#define EDDY_UTIL_FORKFD_H

/* Close fd in forked children from now on. Any thread. Beyond a fixed
 * number of descriptors at once (64) the ones added are not closed. */
void eddy__forkfd_add(int fd);
/* No longer (before fd is closed). */
void eddy__forkfd_remove(int fd);

#endif /* EDDY_UTIL_FORKFD_H */
