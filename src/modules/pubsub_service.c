#include "modules/pubsub_service.h"

#include <string.h>

#include "core/server.h"
#include "modules/module.h"
#include "router/deliver.h"
#include "storage/pending.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

static const struct pubsub_service *find_service(const struct server *srv, const char *domain)
{
	const struct pubsub *p = srv->pubsub;
	for (size_t i = 0; p && i < p->n_services; i++)
		if (strcmp(p->services[i].domain, domain) == 0)
			return &p->services[i];
	return NULL;
}

const struct config_host *pubsub_service_host(const struct server *srv, const char *domain)
{
	const struct pubsub_service *s = find_service(srv, domain);
	return s ? s->host : NULL;
}

const char *pubsub_service_domain(const struct server *srv, const char *host_domain)
{
	const struct pubsub *p = srv->pubsub;
	for (size_t i = 0; p && i < p->n_services; i++)
		if (strcmp(p->services[i].host->domain, host_domain) == 0)
			return p->services[i].domain;
	return NULL;
}

static void host_of(const struct pubsub_service *s, struct pubsub_host *h)
{
	memset(h, 0, sizeof *h);
	h->jid = s->domain;
	h->domain = s->domain;
	h->local = "";
	h->host = s->host;
}

bool pubsub_service_of(const struct server *srv, const char *host_domain,
		       struct pubsub_host *h)
{
	const struct pubsub *p = srv->pubsub;
	for (size_t i = 0; p && i < p->n_services; i++) {
		if (strcmp(p->services[i].host->domain, host_domain) == 0) {
			host_of(&p->services[i], h);
			return true;
		}
	}
	return false;
}

/* The features a pubsub service advertises (XEP-0060 §10). */
static const char *const service_features[] = {
	NS_DISCO_INFO,
	NS_DISCO_ITEMS,
	NS_PUBSUB,
	NS_PUBSUB "#access-open",
	NS_PUBSUB "#access-presence",
	NS_PUBSUB "#access-roster",
	NS_PUBSUB "#access-whitelist",
	NS_PUBSUB "#config-node",
	NS_PUBSUB "#create-and-configure",
	NS_PUBSUB "#create-nodes",
	NS_PUBSUB "#delete-items",
	NS_PUBSUB "#delete-nodes",
	NS_PUBSUB "#instant-nodes",
	NS_PUBSUB "#item-ids",
	NS_PUBSUB "#last-published",
	NS_PUBSUB "#manage-subscriptions",
	NS_PUBSUB "#member-affiliation",
	NS_PUBSUB "#modify-affiliations",
	NS_PUBSUB "#outcast-affiliation",
	NS_PUBSUB "#persistent-items",
	NS_PUBSUB "#publish",
	NS_PUBSUB "#publish-options",
	NS_PUBSUB "#publisher-affiliation",
	NS_PUBSUB "#purge-nodes",
	NS_PUBSUB "#retract-items",
	NS_PUBSUB "#retrieve-affiliations",
	NS_PUBSUB "#retrieve-default",
	NS_PUBSUB "#retrieve-items",
	NS_PUBSUB "#retrieve-subscriptions",
	NS_PUBSUB "#subscribe",
	NULL,
};

static void service_info(struct iq_ctx *c)
{
	struct xml_node *q = xml_new(c->a, NS_DISCO_INFO, "query");
	struct xml_node *id = xml_add_child(c->a, q, NS_DISCO_INFO, "identity");
	xml_set_attr(c->a, id, "category", "pubsub");
	xml_set_attr(c->a, id, "type", "service");
	xml_set_attr(c->a, id, "name", "Publish-Subscribe");
	for (const char *const *f = service_features; *f; f++) {
		struct xml_node *fe = xml_add_child(c->a, q, NS_DISCO_INFO, "feature");
		xml_set_attr(c->a, fe, "var", *f);
	}
	module_reply(c, q);
}

bool pubsub_service_route(struct loop *l, struct xml_node *st, struct arena *a,
			  const struct jid *from, const struct jid *to)
{
	if (to == NULL)
		return false;
	const struct pubsub_service *s = find_service(l->srv, to->domain);
	if (s == NULL)
		return false;
	const char *type = xml_attr(st, "type");
	bool request = strcmp(st->name, "iq") == 0 && type != NULL &&
		       (strcmp(type, "get") == 0 || strcmp(type, "set") == 0);
	if (strcmp(st->name, "presence") == 0 || (strcmp(st->name, "iq") == 0 && !request))
		return true; /* presence, results and errors end here */
	struct iq_ctx c = { .loop = l, .iq = st, .a = a, .from = from, .to = to,
			    .writes = pending_queued(l->store) };
	c.payload = xml_first_element(st);
	if (!request || to->local[0] != '\0' || to->resource[0] != '\0' || c.payload == NULL) {
		deliver_error(l, st, a, "cancel", "service-unavailable");
		return true;
	}
	if (xml_is(c.payload, NS_DISCO_INFO, "query") && xml_attr(c.payload, "node") == NULL) {
		if (strcmp(type, "get") == 0)
			service_info(&c);
		else
			deliver_error(l, st, a, "cancel", "service-unavailable");
		return true;
	}
	struct pubsub_host h;
	host_of(s, &h);
	if ((xml_is(c.payload, NS_DISCO_INFO, "query") || xml_is(c.payload, NS_DISCO_ITEMS, "query")) &&
	    strcmp(type, "get") != 0) {
		deliver_error(l, st, a, "cancel", "service-unavailable");
		return true;
	}
	if (pubsub_iq(&c, &h) != OK)
		deliver_error(l, st, a, "cancel", "service-unavailable");
	return true;
}
