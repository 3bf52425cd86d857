/* queue_cli: the `ringmx queue` command line (io/main.c hands it argv
 * after "queue"): listing, --json, show, shape, hold, release, requeue,
 * delete, --flush, with the selectors --from, --to, --older-than and
 * --state. Reads and writes the spool directly (queue/spool.h), then tells
 * a running gateway through io/control. */
#ifndef RINGMX_IO_QUEUE_CLI_H
#define RINGMX_IO_QUEUE_CLI_H

/* Runs `ringmx queue` with <argv>[0] "queue". Returns the exit status: 0
 * done, 1 a spool or gateway error (or a queue id with no message), 2 a
 * usage error. */
int queue_cli_main(int argc, char **argv);

#endif
