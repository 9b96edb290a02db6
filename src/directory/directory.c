#include "directory/directory.h"

#include <stdlib.h>

#include "core/server.h"

/* Placeholder until the pool lands: no host uses a directory yet. */
int directory_start(struct server *srv)
{
	(void)srv;
	return 0;
}

void directory_stop(struct server *srv) { (void)srv; }

struct directory *directory_of(struct server *srv, const char *domain)
{
	(void)srv;
	(void)domain;
	return NULL;
}
