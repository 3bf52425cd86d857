/* verify_store: the verification cache kept in the spool directory across
 * restarts (see verify_store.c). Main thread: started after the spool is
 * ready and before the workers, stopped after they are joined. */
#ifndef RINGMX_IO_VERIFY_STORE_H
#define RINGMX_IO_VERIFY_STORE_H

#include "io/types-t.h"

/* With g->vcache: reads "verify.cache" back into it, writes it compacted
 * and starts the thread that appends to it. Returns 0 or -errno. */
int verify_store_start(struct gateway *g);
/* Stops the thread after a last append. */
void verify_store_stop(struct gateway *g);

#endif
