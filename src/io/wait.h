/*
 * The waits that last as long as another process chooses: opening a FIFO
 * (until a writer or a reader opens it too) and writing to a pipe, FIFO or
 * terminal (until its reader reads). Each is marked for the program's wait
 * hook (eddy_set_wait_hook), which may end the process during one.
 */
#ifndef EDDY_IO_WAIT_H
#define EDDY_IO_WAIT_H

#include "eddy/eddy.h"

/* what (EDDY_WAIT_*) begins on this thread, name its file; the hook's. */
void eddy__wait_begin(int what, const char *name);
/* It has ended. */
void eddy__wait_end(void);

/*
 * open(path, flags, mode), as a wait of what (EDDY_WAIT_OPEN_READ or
 * EDDY_WAIT_OPEN_WRITE) when path is a FIFO: its open waits for the other
 * end. Only a FIFO is marked: the open of any other file does not wait on
 * another process.
 */
int eddy__wait_open(const char *path, int flags, int mode, int what);

#endif
