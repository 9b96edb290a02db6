/* XEP-0049: Private XML Storage. An account keeps XML fragments on the
 * server for itself only (bookmarks of XEP-0048, client preferences), one
 * per namespace, in map store "private" keyed by that namespace. */
#include <stdbool.h>
#include <string.h>

#include "core/log.h"
#include "core/server.h"
#include "modules/module.h"
#include "xml/xml_parse.h"

#define NS_PRIVATE "jabber:iq:private"
#define STORE_PRIVATE "private"

/* A fragment's serialised size: larger is not-acceptable, and a get,
 * which answers one fragment, is never larger. Past what the account keeps
 * in all (limits.max_private_size, max_private_items): resource-constraint. */
#define PRIVATE_MAX_BYTES (64 * 1024)

/* XEP-0049 §2.3: the namespaces of XMPP itself are not storage keys. */
static bool private_reserved(const char *ns)
{
	return ns[0] == '\0' || strncmp(ns, "jabber:", 7) == 0 ||
	       strncmp(ns, "http://jabber.org/", 18) == 0 || strcmp(ns, "vcard-temp") == 0 ||
	       strncmp(ns, "urn:ietf:params:xml:ns:xmpp-", 28) == 0 ||
	       strcmp(ns, NS_STREAMS) == 0;
}

/* The fragment the request names, or NULL after answering an error. */
static struct xml_node *private_fragment(struct iq_ctx *c)
{
	if (strcmp(c->to->local, c->from->local) != 0 ||
	    strcmp(c->to->domain, c->from->domain) != 0) {
		module_error(c, "auth", "forbidden");
		return NULL;
	}
	struct xml_node *el = xml_first_element(c->payload);
	if (xml_element_count(c->payload) != 1 || private_reserved(el->ns)) {
		module_error(c, "modify", "not-acceptable");
		return NULL;
	}
	return el;
}

static void private_reply(struct iq_ctx *c, struct xml_node *el)
{
	struct xml_node *q = xml_new(c->a, NS_PRIVATE, "query");
	el->parent = q;
	el->next = NULL;
	q->children = q->last = el;
	module_reply(c, q);
}

static enum status private_get(struct iq_ctx *c)
{
	struct xml_node *el = private_fragment(c);
	if (el == NULL)
		return OK;
	struct server *srv = c->loop->srv;
	struct buf b;
	buf_init(&b);
	int rc = srv->storage->map_get(c->loop->store, c->from->domain, c->from->local,
				       STORE_PRIVATE, el->ns, &b);
	struct xml_node *stored = NULL;
	if (rc == 0) {
		stored = xml_parse_element(c->a, b.data, b.len);
		if (stored == NULL || strcmp(stored->ns, el->ns) != 0) {
			log_error("private storage of %s@%s: unreadable entry for %s",
				  c->from->local, c->from->domain, el->ns);
			stored = NULL;
		}
	}
	buf_free(&b);
	if (rc < 0) {
		module_error(c, "wait", "internal-server-error");
		return OK;
	}
	/* Nothing stored: the request's element comes back empty. */
	if (stored == NULL)
		stored = xml_new(c->a, el->ns, el->name);
	private_reply(c, stored);
	return OK;
}

/* Whether the account may store len bytes under key, replacing what is
 * there: within limits.max_private_items and max_private_size, or no
 * larger than before (a store over the limits can be tidied). Returns 1
 * yes, 0 over the limit, -1 store error. */
static int private_room(struct loop *l, const char *domain, const char *local, const char *key,
			size_t len)
{
	const struct storage_driver *drv = l->srv->storage;
	const struct config_limits *lim = &l->srv->cfg->limits;
	struct buf old;
	buf_init(&old);
	int rc = drv->map_get(l->store, domain, local, STORE_PRIVATE, key, &old);
	size_t old_len = old.len;
	buf_free(&old);
	if (rc < 0)
		return -1;
	if (rc == 0 && len <= old_len)
		return 1;
	long long bytes;
	int n = drv->map_size(l->store, domain, local, STORE_PRIVATE, &bytes);
	if (n < 0)
		return -1;
	if (rc == 1 && n >= lim->max_private_items)
		return 0;
	unsigned long long after = (unsigned long long)bytes + len +
				   (rc == 1 ? strlen(key) : 0) - (rc == 0 ? old_len : 0);
	return after <= lim->max_private_size;
}

static enum status private_set(struct iq_ctx *c)
{
	struct xml_node *el = private_fragment(c);
	if (el == NULL)
		return OK;
	struct loop *l = c->loop;
	const char *domain = c->from->domain, *local = c->from->local;
	struct buf b;
	buf_init(&b);
	xml_serialize(el, NS_CLIENT, &b);
	int room = b.len > PRIVATE_MAX_BYTES ? 0 : private_room(l, domain, local, el->ns, b.len);
	if (b.len > PRIVATE_MAX_BYTES)
		module_error(c, "modify", "not-acceptable");
	else if (room == 0)
		module_error(c, "wait", "resource-constraint");
	else if (room < 0 || l->srv->storage->map_put(l->store, domain, local, STORE_PRIVATE,
						      el->ns, b.data, b.len) != 0)
		module_error(c, "wait", "internal-server-error");
	else
		module_reply(c, NULL);
	buf_free(&b);
	return OK;
}

static const char *const features[] = { NS_PRIVATE, NULL };

static const struct module_iq iqs[] = {
	{ "get", NS_PRIVATE, "query", IQ_ACCOUNT, private_get },
	{ "set", NS_PRIVATE, "query", IQ_ACCOUNT, private_set },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_private = { "private", features, iqs, NULL, NULL };
