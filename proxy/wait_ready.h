/* wait_ready.h - the `remora wait-ready` subcommand. */
#ifndef REMORA_WAIT_READY_H
#define REMORA_WAIT_READY_H

/* argv[0] is "wait-ready".  Returns the exit status: 0 ready, 1 timeout,
 * 2 usage error. */
int wait_ready_main(int argc, char **argv);

#endif
