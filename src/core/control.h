/* The control socket: natterctl's way into a running natterd (DESIGN.md).
 *
 * A UNIX stream socket at <data_dir>/natterd.sock, mode 0600, accepted on
 * the service loop, and only from the user natterd runs as (or root; SO_PEERCRED).
 * One command per connection, one line ("directory refresh"); the answer
 * is text lines, the first starting with "ok" or "error", then the
 * connection closes. */
#ifndef NATTER_CONTROL_H
#define NATTER_CONTROL_H

#include <stddef.h>

struct server;

/* The socket's path for a data_dir. Returns 0 or -1 (too long). */
int control_path(const char *data_dir, char *out, size_t cap);

/* Listens on the service loop (before the loops run). Returns 0 or -1 (logged). */
int control_start(struct server *srv);

/* After the service loop closed its handles: removes the socket file, frees. */
void control_free(struct server *srv);

#endif
