/* The publish-subscribe service of each host (XEP-0060), on its own
 * domain (pubsub.DOMAIN by default, hosts[].pubsub), routed like a local
 * domain, as the chat service is (muc.h). Its nodes live in the store
 * under (service domain, ""), see pubsub.h. Any loop answers: every
 * request reads the store, and changes to a node take its lock. */
#ifndef NATTER_PUBSUB_SERVICE_H
#define NATTER_PUBSUB_SERVICE_H

#include <stdbool.h>

#include "core/arena.h"
#include "core/config.h"
#include "jid/jid.h"
#include "modules/pubsub.h"
#include "xml/xml.h"

struct loop;
struct server;

/* The host whose pubsub service domain is, or NULL: federation treats a
 * service's domain as local, with its host's certificate. */
const struct config_host *pubsub_service_host(const struct server *srv, const char *domain);

/* The pubsub service's domain of the host, or NULL when it has none. */
const char *pubsub_service_domain(const struct server *srv, const char *host_domain);

/* Fills h for the service of host_domain; returns false when it has none. */
bool pubsub_service_of(const struct server *srv, const char *host_domain,
		       struct pubsub_host *h);

/* If to is a pubsub service (or an address under it), handles st (from
 * stamped as from, a local session or a verified remote sender) and
 * returns true; iq get/set are answered, anything else is dropped or
 * refused. st and a stay the caller's. False for any other destination. */
bool pubsub_service_route(struct loop *l, struct xml_node *st, struct arena *a,
			  const struct jid *from, const struct jid *to);

#endif
