/* jabber:iq:roster: storage, get/set, pushes, versioning. */
#include "modules/roster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "core/server.h"
#include "jid/jid.h"
#include "modules/module.h"
#include "modules/presence.h"
#include "router/deliver.h"
#include "router/router.h"
#include "xml/xml_parse.h"

#define STORE_ROSTER "roster"
#define STORE_META "roster_meta"

/* Splits "local@domain" into its parts (the buffers are JID-sized). */
static int split_bare(const char *bare, char *local, char *domain)
{
	const char *at = strchr(bare, '@');
	if (at == NULL || at - bare > JID_PART_MAX || strlen(at + 1) > JID_PART_MAX)
		return -1;
	memcpy(local, bare, (size_t)(at - bare));
	local[at - bare] = '\0';
	strcpy(domain, at + 1);
	return 0;
}

static void item_from_node(struct xml_node *n, struct roster_item *out)
{
	const char *sub = xml_attr(n, "subscription");
	const char *ask = xml_attr(n, "ask");
	const char *approved = xml_attr(n, "approved");
	out->node = n;
	out->jid = xml_attr(n, "jid");
	out->sub = 0;
	if (sub && (strcmp(sub, "to") == 0 || strcmp(sub, "both") == 0))
		out->sub |= SUB_TO;
	if (sub && (strcmp(sub, "from") == 0 || strcmp(sub, "both") == 0))
		out->sub |= SUB_FROM;
	out->ask = ask && strcmp(ask, "subscribe") == 0;
	out->approved = approved && strcmp(approved, "true") == 0;
}

static void item_to_node(struct arena *a, struct roster_item *it)
{
	static const char *const subs[] = { "none", "to", "from", "both" };
	xml_set_attr(a, it->node, "subscription", subs[it->sub & 3]);
	xml_set_attr(a, it->node, "ask", it->ask ? "subscribe" : NULL);
	xml_set_attr(a, it->node, "approved", it->approved ? "true" : NULL);
}

void roster_new_item(struct arena *a, const char *contact, struct roster_item *out)
{
	struct xml_node *n = xml_new(a, NS_ROSTER, "item");
	xml_set_attr(a, n, "jid", contact);
	memset(out, 0, sizeof *out);
	out->node = n;
	out->jid = xml_attr(n, "jid");
	item_to_node(a, out);
}

int roster_load(struct loop *l, const char *owner, const char *contact, struct arena *a,
		struct roster_item *out)
{
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	if (split_bare(owner, local, domain) != 0)
		return 0;
	struct buf b;
	buf_init(&b);
	int rc = l->srv->storage->map_get(l->store, domain, local, STORE_ROSTER, contact, &b);
	int result = rc < 0 ? -1 : 0;
	if (rc == 0) {
		struct xml_node *n = xml_parse_element(a, b.data, b.len);
		if (n != NULL) {
			item_from_node(n, out);
			result = 1;
		} else {
			log_error("roster of %s: unreadable item for %s", owner, contact);
		}
	}
	buf_free(&b);
	return result;
}

/* The item as clients see it (a copy: the caller's tree stays intact). */
static struct xml_node *client_item(struct arena *a, const struct xml_node *n)
{
	return xml_copy(a, n);
}

static long long bump_version(struct loop *l, const char *domain, const char *local)
{
	struct buf b;
	buf_init(&b);
	long long ver = 0;
	if (l->srv->storage->map_get(l->store, domain, local, STORE_META, "ver", &b) == 0) {
		buf_append(&b, "", 1);
		ver = atoll(b.data);
	}
	ver++;
	char s[32];
	int n = snprintf(s, sizeof s, "%lld", ver);
	l->srv->storage->map_put(l->store, domain, local, STORE_META, "ver", s, (size_t)n);
	buf_free(&b);
	return ver;
}

static long long current_version(struct loop *l, const char *domain, const char *local)
{
	struct buf b;
	buf_init(&b);
	long long ver = 0;
	if (l->srv->storage->map_get(l->store, domain, local, STORE_META, "ver", &b) == 0) {
		buf_append(&b, "", 1);
		ver = atoll(b.data);
	}
	buf_free(&b);
	return ver;
}

/* RFC 6121 §2.1.6: every interested session of the owner gets the change. */
static void push(struct loop *l, const char *owner, struct xml_node *item, long long ver,
		 struct arena *a)
{
	struct router_target t[ROUTER_MAX_TARGETS];
	int n = router_find_interested(l->srv->router, owner, ROUTER_WANTS_ROSTER, t,
				       ROUTER_MAX_TARGETS);
	if (n == 0)
		return;
	struct xml_node *iq = xml_new(a, NS_CLIENT, "iq");
	char id[24];
	random_hex(id, 6);
	xml_set_attr(a, iq, "type", "set");
	xml_set_attr(a, iq, "id", id);
	struct xml_node *q = xml_add_child(a, iq, NS_ROSTER, "query");
	char v[32];
	snprintf(v, sizeof v, "%lld", ver);
	xml_set_attr(a, q, "ver", v);
	struct xml_node *c = client_item(a, item);
	c->parent = q;
	q->children = q->last = c;
	struct buf b;
	buf_init(&b);
	xml_serialize(iq, NS_CLIENT, &b);
	struct refbuf *bytes = refbuf_new(b.data, b.len);
	buf_free(&b);
	for (int i = 0; i < n; i++)
		deliver_to_session(l, &t[i], bytes);
	refbuf_release(bytes);
}

int roster_save(struct loop *l, const char *owner, struct roster_item *it, struct arena *a)
{
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	if (split_bare(owner, local, domain) != 0)
		return -1;
	item_to_node(a, it);
	struct buf b;
	buf_init(&b);
	/* Stored with its namespace: xml_parse_element reads in jabber:client. */
	xml_serialize(it->node, NS_CLIENT, &b);
	int rc = l->srv->storage->map_put(l->store, domain, local, STORE_ROSTER, it->jid, b.data,
					  b.len);
	buf_free(&b);
	if (rc != 0)
		return -1;
	push(l, owner, it->node, bump_version(l, domain, local), a);
	return 0;
}

int roster_remove(struct loop *l, const char *owner, const char *contact, struct arena *a)
{
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	if (split_bare(owner, local, domain) != 0)
		return -1;
	if (l->srv->storage->map_del(l->store, domain, local, STORE_ROSTER, contact) < 0)
		return -1;
	struct xml_node *n = xml_new(a, NS_ROSTER, "item");
	xml_set_attr(a, n, "jid", contact);
	xml_set_attr(a, n, "subscription", "remove");
	push(l, owner, n, bump_version(l, domain, local), a);
	return 0;
}

struct each_ctx {
	struct arena *a;
	void (*fn)(void *arg, struct roster_item *it);
	void *arg;
};

static void each_entry(void *arg, const char *key, const void *value, size_t len)
{
	struct each_ctx *c = arg;
	(void)key;
	struct xml_node *n = xml_parse_element(c->a, value, len);
	if (n == NULL)
		return;
	struct roster_item it;
	item_from_node(n, &it);
	if (it.jid != NULL)
		c->fn(c->arg, &it);
}

int roster_each(struct loop *l, const char *owner, struct arena *a,
		void (*fn)(void *arg, struct roster_item *it), void *arg)
{
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	if (split_bare(owner, local, domain) != 0)
		return -1;
	struct each_ctx c = { a, fn, arg };
	return l->srv->storage->map_list(l->store, domain, local, STORE_ROSTER, each_entry, &c);
}

/* --- the iq handler --- */

static void add_to_result(void *arg, struct roster_item *it)
{
	struct iq_ctx *c = ((void **)arg)[0];
	struct xml_node *q = ((void **)arg)[1];
	struct xml_node *item = client_item(c->a, it->node);
	item->parent = q;
	if (q->last)
		q->last->next = item;
	else
		q->children = item;
	q->last = item;
}

static enum status roster_get(struct iq_ctx *c)
{
	char owner[2 * JID_PART_MAX + 2];
	jid_format_bare(c->from, owner, sizeof owner);
	if (c->to_account && strcmp(c->to->local, c->from->local) != 0) {
		module_error(c, "cancel", "forbidden");
		return OK;
	}
	presence_mark_interested(c->loop, c->from, ROUTER_WANTS_ROSTER);
	long long ver = current_version(c->loop, c->from->domain, c->from->local);
	const char *have = xml_attr(c->payload, "ver");
	char v[32];
	snprintf(v, sizeof v, "%lld", ver);
	if (have != NULL && strcmp(have, v) == 0) {
		/* XEP-0237: the client's copy is current. */
		module_reply(c, NULL);
		return OK;
	}
	struct xml_node *q = xml_new(c->a, NS_ROSTER, "query");
	xml_set_attr(c->a, q, "ver", v);
	void *args[2] = { c, q };
	if (roster_each(c->loop, owner, c->a, add_to_result, args) < 0) {
		module_error(c, "wait", "internal-server-error");
		return OK;
	}
	module_reply(c, q);
	return OK;
}

static void count_one(void *arg, const char *key, const void *value, size_t len)
{
	(void)key, (void)value, (void)len;
	(*(int *)arg)++;
}

static int count_items(struct loop *l, const char *owner)
{
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	int n = 0;
	if (split_bare(owner, local, domain) != 0)
		return -1;
	if (l->srv->storage->map_list(l->store, domain, local, STORE_ROSTER, count_one, &n) < 0)
		return -1;
	return n;
}

static enum status roster_set(struct iq_ctx *c)
{
	char owner[2 * JID_PART_MAX + 2];
	jid_format_bare(c->from, owner, sizeof owner);
	if (c->to_account && strcmp(c->to->local, c->from->local) != 0) {
		module_error(c, "cancel", "forbidden");
		return OK;
	}
	struct xml_node *req = xml_first_element(c->payload);
	if (req == NULL || xml_element_count(c->payload) != 1 || !xml_is(req, NS_ROSTER, "item")) {
		module_error(c, "modify", "bad-request");
		return OK;
	}
	const char *jid_str = xml_attr(req, "jid");
	struct jid contact;
	if (jid_str == NULL || jid_parse(&contact, jid_str, strlen(jid_str)) != 0 ||
	    contact.resource[0] != '\0') {
		module_error(c, "modify", "bad-request");
		return OK;
	}
	char cbare[2 * JID_PART_MAX + 2];
	jid_format_bare(&contact, cbare, sizeof cbare);
	if (strcmp(cbare, owner) == 0) {
		module_error(c, "cancel", "not-allowed");
		return OK;
	}
	struct roster_item it;
	int found = roster_load(c->loop, owner, cbare, c->a, &it);
	if (found < 0) {
		module_error(c, "wait", "internal-server-error");
		return OK;
	}
	const char *sub = xml_attr(req, "subscription");
	if (sub != NULL && strcmp(sub, "remove") == 0) {
		if (found == 0) {
			module_error(c, "modify", "item-not-found");
			return OK;
		}
		module_reply(c, NULL);
		presence_roster_removed(c->loop, c->from, &it, c->a);
		roster_remove(c->loop, owner, cbare, c->a);
		return OK;
	}
	if (found == 0) {
		int n = count_items(c->loop, owner);
		if (n >= c->loop->srv->cfg->limits.max_roster_items) {
			module_error(c, "wait", "resource-constraint");
			return OK;
		}
		roster_new_item(c->a, cbare, &it);
	}
	/* The client sets name and groups; subscription state is ours. */
	struct xml_node *n = xml_new(c->a, NS_ROSTER, "item");
	xml_set_attr(c->a, n, "jid", cbare);
	const char *name = xml_attr(req, "name");
	if (name != NULL && name[0] != '\0')
		xml_set_attr(c->a, n, "name", name);
	for (struct xml_node *g = req->children; g; g = g->next) {
		if (g->name == NULL)
			continue;
		if (!xml_is(g, NS_ROSTER, "group")) {
			module_error(c, "modify", "bad-request");
			return OK;
		}
		const char *gname = xml_text(c->a, g);
		if (gname[0] == '\0' || strlen(gname) > JID_PART_MAX) {
			module_error(c, "modify", "not-acceptable");
			return OK;
		}
		for (struct xml_node *o = n->children; o; o = o->next) {
			if (strcmp(xml_text(c->a, o), gname) == 0) {
				module_error(c, "modify", "bad-request");
				return OK;
			}
		}
		xml_add_text(c->a, xml_add_child(c->a, n, NS_ROSTER, "group"), gname, strlen(gname));
	}
	struct roster_item updated = it;
	updated.node = n;
	updated.jid = xml_attr(n, "jid");
	if (roster_save(c->loop, owner, &updated, c->a) != 0) {
		module_error(c, "wait", "internal-server-error");
		return OK;
	}
	module_reply(c, NULL);
	return OK;
}

static const char *const features[] = { NULL };

static const struct module_iq iqs[] = {
	{ "get", NS_ROSTER, "query", IQ_ACCOUNT, roster_get },
	{ "set", NS_ROSTER, "query", IQ_ACCOUNT, roster_set },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_roster = { "roster", features, iqs };
