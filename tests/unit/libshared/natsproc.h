/* natsproc.h — a real nats-server (with JetStream) for tests, on a free loopback port.
 *
 * Each natsproc owns a temporary directory (JetStream store and the server's log) and at most
 * one running server process. Tests that need NATS call natsproc_start() and SKIP when it
 * reports that no nats-server is installed. Not thread-safe: one test thread drives it. */
#ifndef PARLEY_TEST_NATSPROC_H
#define PARLEY_TEST_NATSPROC_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct natsproc {
    pid_t pid; /* 0 when not running */
    int port;
    char dir[64]; /* temporary directory, "" before start */
    char url[64]; /* "nats://127.0.0.1:<port>" */
} natsproc;

/* The path of nats-server found on PATH (or in /usr/sbin), or NULL. Static storage. */
const char *natsproc_binary(void);

/* A free TCP port on 127.0.0.1 (bound then released, so only probably still free). */
int natsproc_free_port(void);

/* Prepares `p` (temp dir, port — `port` 0 picks a free one) without starting a server, so a
 * test can point a client at the URL first. false when nats-server is missing or on error. */
bool natsproc_init(natsproc *p, int port);

/* Starts the server on p->port and waits (up to 5 s) until it accepts connections. `p` is
 * either zeroed ({0}: natsproc_init(p, 0) is called first) or prepared by natsproc_init. */
bool natsproc_start(natsproc *p);

/* Kills the server (SIGKILL when `hard`, else SIGTERM) and reaps it; the directory stays so
 * natsproc_start can bring it back on the same port with the same JetStream store. */
void natsproc_kill(natsproc *p, bool hard);

/* Stops the server if running and removes the directory. */
void natsproc_stop(natsproc *p);

#endif
