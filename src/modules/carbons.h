/* XEP-0280: Message Carbons (mod_carbons.c). */
#ifndef NATTER_CARBONS_H
#define NATTER_CARBONS_H

#include <stdint.h>

#include "router/router.h"
#include "xml/xml.h"

struct loop;

/* Copies message st to the carbon-enabled sessions of owner (a local bare
 * JID), wrapped in <direction/> ("received" or "sent"), except the session
 * skip and the n_already sessions that got st itself. Does nothing for
 * messages XEP-0280 leaves alone. */
void carbons_copy(struct loop *l, struct xml_node *st, const char *owner, const char *direction,
		  uint64_t skip, const struct router_target *already, int n_already);

#endif
