#include "modules/pubsub.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "modules/caps.h"
#include "modules/roster.h"
#include "router/deliver.h"
#include "router/router.h"
#include "xml/xml_parse.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_DATA "jabber:x:data"
#define NS_NODE "urn:xmpp:natter:pubsub:0" /* our stored node records */
#define NS_NODE_CONFIG "http://jabber.org/protocol/pubsub#node_config"
#define NS_PUBLISH_OPTIONS "http://jabber.org/protocol/pubsub#publish-options"
#define STORE_NODES "pubsub_nodes"
#define STORE_ITEMS "pubsub_items:"

/* Defaults of a new node: PEP keeps the last item (XEP-0163 §4.3), a
 * service node a few. */
#define PEP_DEFAULT_MAX_ITEMS 1
#define SERVICE_DEFAULT_MAX_ITEMS 10

struct ps_aff {
	const char *jid;
	const char *aff; /* owner, publisher, publish-only, member, outcast */
};

struct ps_sub {
	const char *jid;
	const char *subid;
};

/* A node record, everything in one arena. */
struct ps_node {
	const char *name;
	const char *access;        /* open, presence, roster, whitelist */
	const char *publish_model; /* publishers, subscribers, open */
	const char *title;
	const char *creator;       /* bare JID */
	bool persist, notify_retract, notify_delete, send_last;
	int max_items;
	const char **groups;       /* roster groups allowed */
	int n_groups;
	struct ps_aff *affs;
	int n_affs;
	struct ps_sub *subs;
	int n_subs;
	const char **ids;          /* item ids, oldest first */
	int n_ids;
};

/* An error for the requester: stanza error type and condition, with a
 * pubsub#errors child when app is set. */
struct ps_err {
	const char *type, *cond, *app;
};

static void ps_set_err(struct ps_err *e, const char *type, const char *cond, const char *app)
{
	e->type = type;
	e->cond = cond;
	e->app = app;
}

/* --- the server-wide state --- */

struct pubsub *pubsub_new(const struct config *cfg, char *err, size_t errlen)
{
	struct pubsub *p = xcalloc(1, sizeof *p);
	for (size_t i = 0; i < 64; i++)
		pthread_mutex_init(&p->locks[i], NULL);
	pthread_mutex_init(&p->creators_lock, NULL);
	p->services = xcalloc(cfg->n_hosts ? cfg->n_hosts : 1, sizeof *p->services);
	for (size_t i = 0; i < cfg->n_hosts; i++) {
		const struct config_host *h = &cfg->hosts[i];
		if (!h->pubsub.enabled)
			continue;
		struct pubsub_service *s = &p->services[p->n_services];
		s->host = h;
		int n = h->pubsub.domain
				? snprintf(s->domain, sizeof s->domain, "%s", h->pubsub.domain)
				: snprintf(s->domain, sizeof s->domain, "pubsub.%s", h->domain);
		if (n < 0 || (size_t)n >= sizeof s->domain || config_find_host(cfg, s->domain)) {
			snprintf(err, errlen, "host %s: the pubsub service's domain is %s", h->domain,
				 n < 0 || (size_t)n >= sizeof s->domain ? "too long" : "a host");
			pubsub_free(p);
			return NULL;
		}
		p->n_services++;
		log_info("host %s: pubsub service at %s", h->domain, s->domain);
	}
	return p;
}

void pubsub_free(struct pubsub *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < 64; i++)
		pthread_mutex_destroy(&p->locks[i]);
	pthread_mutex_destroy(&p->creators_lock);
	free(p->services);
	free(p);
}

void pubsub_pep_host(struct server *srv, const struct jid *account, char *bare, size_t cap,
		     struct pubsub_host *h)
{
	jid_format_bare(account, bare, cap);
	memset(h, 0, sizeof *h);
	h->pep = true;
	h->jid = bare;
	h->domain = account->domain;
	h->local = account->local;
	h->host = config_find_host(srv->cfg, account->domain);
}

static pthread_mutex_t *ps_lock_of(struct loop *l, const struct pubsub_host *h, const char *node)
{
	uint32_t x = str_hash_more(str_hash(h->jid), node);
	return &l->srv->pubsub->locks[x % 64];
}

/* --- storage: the only functions that touch the store --- */

static void ps_items_store(const char *node, char *out, size_t cap)
{
	snprintf(out, cap, "%s%s", STORE_ITEMS, node);
}

static int ps_store_node_get(struct loop *l, const struct pubsub_host *h, const char *node,
			     struct buf *out)
{
	return l->srv->storage->map_get(l->store, h->domain, h->local, STORE_NODES, node, out);
}

static int ps_store_node_put(struct loop *l, const struct pubsub_host *h, const char *node,
			     const struct buf *b)
{
	return l->srv->storage->map_put(l->store, h->domain, h->local, STORE_NODES, node, b->data,
					b->len);
}

static int ps_store_node_del(struct loop *l, const struct pubsub_host *h, const char *node)
{
	char store[sizeof STORE_ITEMS + PUBSUB_NAME_MAX + 1];
	ps_items_store(node, store, sizeof store);
	const struct storage_driver *d = l->srv->storage;
	if (d->map_del(l->store, h->domain, h->local, store, NULL) < 0)
		return -1;
	return d->map_del(l->store, h->domain, h->local, STORE_NODES, node) < 0 ? -1 : 0;
}

/* Node count of the service (its records' bytes in *bytes). */
static int ps_store_node_count(struct loop *l, const struct pubsub_host *h)
{
	long long bytes;
	return l->srv->storage->map_size(l->store, h->domain, h->local, STORE_NODES, &bytes);
}

static int ps_store_nodes_each(struct loop *l, const struct pubsub_host *h,
			       void (*fn)(void *arg, const char *key, const void *value, size_t len),
			       void *arg)
{
	/* Records are small: what a service may hold of them is bounded by
	 * its node count; this bounds a corrupt or oversized store too. */
	size_t max = (size_t)l->srv->cfg->limits.pubsub_max_nodes * 64 * 1024;
	return l->srv->storage->map_list_max(l->store, h->domain, h->local, STORE_NODES, max, fn,
					     arg);
}

static int ps_store_item_get(struct loop *l, const struct pubsub_host *h, const char *node,
			     const char *id, struct buf *out)
{
	char store[sizeof STORE_ITEMS + PUBSUB_NAME_MAX + 1];
	ps_items_store(node, store, sizeof store);
	return l->srv->storage->map_get(l->store, h->domain, h->local, store, id, out);
}

static int ps_store_item_put(struct loop *l, const struct pubsub_host *h, const char *node,
			     const char *id, const struct buf *b)
{
	char store[sizeof STORE_ITEMS + PUBSUB_NAME_MAX + 1];
	ps_items_store(node, store, sizeof store);
	return l->srv->storage->map_put(l->store, h->domain, h->local, store, id, b->data, b->len);
}

/* id NULL: every item of the node. */
static int ps_store_item_del(struct loop *l, const struct pubsub_host *h, const char *node,
			     const char *id)
{
	char store[sizeof STORE_ITEMS + PUBSUB_NAME_MAX + 1];
	ps_items_store(node, store, sizeof store);
	return l->srv->storage->map_del(l->store, h->domain, h->local, store, id) < 0 ? -1 : 0;
}

/* --- node records --- */

static const char *attr_or(const struct xml_node *n, const char *name, const char *def)
{
	const char *v = xml_attr(n, name);
	return v ? v : def;
}

static void ps_node_defaults(const struct pubsub_host *h, struct ps_node *n, const char *name,
			     const char *creator, int limit)
{
	memset(n, 0, sizeof *n);
	n->name = name;
	n->access = h->pep ? "presence" : "open";
	n->publish_model = "publishers";
	n->creator = creator;
	n->persist = true;
	n->notify_retract = true;
	n->notify_delete = true;
	n->send_last = true;
	int def = h->pep ? PEP_DEFAULT_MAX_ITEMS : SERVICE_DEFAULT_MAX_ITEMS;
	n->max_items = def < limit ? def : limit;
}

static const char **ps_strs_push(struct arena *a, const char **v, int n, const char *s)
{
	const char **nv = arena_alloc(a, (size_t)(n + 1) * sizeof *nv);
	if (n)
		memcpy(nv, v, (size_t)n * sizeof *nv);
	nv[n] = s;
	return nv;
}

static void ps_aff_push(struct arena *a, struct ps_node *n, const char *jid, const char *aff)
{
	struct ps_aff *v = arena_alloc(a, (size_t)(n->n_affs + 1) * sizeof *v);
	if (n->n_affs)
		memcpy(v, n->affs, (size_t)n->n_affs * sizeof *v);
	v[n->n_affs].jid = arena_strdup(a, jid);
	v[n->n_affs].aff = arena_strdup(a, aff);
	n->affs = v;
	n->n_affs++;
}

static void ps_sub_push(struct arena *a, struct ps_node *n, const char *jid, const char *subid)
{
	struct ps_sub *v = arena_alloc(a, (size_t)(n->n_subs + 1) * sizeof *v);
	if (n->n_subs)
		memcpy(v, n->subs, (size_t)n->n_subs * sizeof *v);
	v[n->n_subs].jid = arena_strdup(a, jid);
	v[n->n_subs].subid = arena_strdup(a, subid);
	n->subs = v;
	n->n_subs++;
}

static bool ps_bool(const char *v)
{
	return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
}

static int ps_node_parse(struct arena *a, const char *name, const void *data, size_t len,
			 struct ps_node *n)
{
	struct xml_node *r = xml_parse_element(a, data, len);
	if (r == NULL || !xml_is(r, NS_NODE, "node"))
		return -1;
	memset(n, 0, sizeof *n);
	n->name = arena_strdup(a, name);
	n->access = attr_or(r, "access", "presence");
	n->publish_model = attr_or(r, "publish", "publishers");
	n->title = xml_attr(r, "title");
	n->creator = attr_or(r, "creator", "");
	n->persist = ps_bool(attr_or(r, "persist", "1"));
	n->notify_retract = ps_bool(attr_or(r, "nr", "1"));
	n->notify_delete = ps_bool(attr_or(r, "nd", "1"));
	n->send_last = ps_bool(attr_or(r, "sl", "1"));
	n->max_items = atoi(attr_or(r, "max", "1"));
	for (struct xml_node *c = r->children; c; c = c->next) {
		if (xml_is(c, NS_NODE, "group"))
			n->groups = ps_strs_push(a, n->groups, n->n_groups++, xml_text(a, c));
		else if (xml_is(c, NS_NODE, "aff") && xml_attr(c, "jid") && xml_attr(c, "a"))
			ps_aff_push(a, n, xml_attr(c, "jid"), xml_attr(c, "a"));
		else if (xml_is(c, NS_NODE, "sub") && xml_attr(c, "jid"))
			ps_sub_push(a, n, xml_attr(c, "jid"), attr_or(c, "subid", ""));
		else if (xml_is(c, NS_NODE, "i") && xml_attr(c, "id"))
			n->ids = ps_strs_push(a, n->ids, n->n_ids++, xml_attr(c, "id"));
	}
	return 0;
}

static void ps_node_serialize(struct arena *a, const struct ps_node *n, struct buf *b)
{
	struct xml_node *r = xml_new(a, NS_NODE, "node");
	char num[16];
	xml_set_attr(a, r, "access", n->access);
	xml_set_attr(a, r, "publish", n->publish_model);
	if (n->title)
		xml_set_attr(a, r, "title", n->title);
	xml_set_attr(a, r, "creator", n->creator);
	xml_set_attr(a, r, "persist", n->persist ? "1" : "0");
	xml_set_attr(a, r, "nr", n->notify_retract ? "1" : "0");
	xml_set_attr(a, r, "nd", n->notify_delete ? "1" : "0");
	xml_set_attr(a, r, "sl", n->send_last ? "1" : "0");
	snprintf(num, sizeof num, "%d", n->max_items);
	xml_set_attr(a, r, "max", num);
	for (int i = 0; i < n->n_groups; i++) {
		struct xml_node *g = xml_add_child(a, r, NS_NODE, "group");
		xml_add_text(a, g, n->groups[i], strlen(n->groups[i]));
	}
	for (int i = 0; i < n->n_affs; i++) {
		struct xml_node *c = xml_add_child(a, r, NS_NODE, "aff");
		xml_set_attr(a, c, "jid", n->affs[i].jid);
		xml_set_attr(a, c, "a", n->affs[i].aff);
	}
	for (int i = 0; i < n->n_subs; i++) {
		struct xml_node *c = xml_add_child(a, r, NS_NODE, "sub");
		xml_set_attr(a, c, "jid", n->subs[i].jid);
		xml_set_attr(a, c, "subid", n->subs[i].subid);
	}
	for (int i = 0; i < n->n_ids; i++) {
		struct xml_node *c = xml_add_child(a, r, NS_NODE, "i");
		xml_set_attr(a, c, "id", n->ids[i]);
	}
	buf_init(b);
	xml_serialize(r, NS_CLIENT, b);
}

/* Returns 1 found, 0 none, -1 store error (or an unreadable record). */
static int ps_node_load(struct loop *l, const struct pubsub_host *h, const char *name,
			struct arena *a, struct ps_node *out)
{
	struct buf b;
	buf_init(&b);
	int rc = ps_store_node_get(l, h, name, &b);
	if (rc == 0 && ps_node_parse(a, name, b.data, b.len, out) != 0) {
		log_error("pubsub %s: node '%s' is unreadable", h->jid, name);
		rc = -1;
	}
	buf_free(&b);
	return rc == 0 ? 1 : rc == 1 ? 0 : -1;
}

static int ps_node_save(struct loop *l, const struct pubsub_host *h, const struct ps_node *n,
			struct arena *a)
{
	struct buf b;
	ps_node_serialize(a, n, &b);
	int rc = ps_store_node_put(l, h, n->name, &b);
	buf_free(&b);
	return rc;
}

/* --- who may do what --- */

static bool bare_eq(const char *jid, const char *bare)
{
	size_t n = strlen(bare);
	return strncmp(jid, bare, n) == 0 && (jid[n] == '\0' || jid[n] == '/');
}

/* The bare JID part of jid, in a. */
static const char *ps_bare(struct arena *a, const char *jid)
{
	const char *slash = strchr(jid, '/');
	return slash ? arena_strndup(a, jid, (size_t)(slash - jid)) : jid;
}

static const char *ps_aff_of(const struct pubsub_host *h, const struct ps_node *n,
			     const char *bare)
{
	if (h->pep && strcmp(bare, h->jid) == 0)
		return "owner";
	if (!h->pep && word_in_list(h->host->pubsub.admins, bare))
		return "owner";
	for (int i = 0; n && i < n->n_affs; i++)
		if (strcmp(n->affs[i].jid, bare) == 0)
			return n->affs[i].aff;
	return "none";
}

static bool ps_is_owner(const struct pubsub_host *h, const struct ps_node *n, const char *bare)
{
	return strcmp(ps_aff_of(h, n, bare), "owner") == 0;
}

/* The account whose roster the presence and roster models consult. */
static const char *ps_roster_owner(const struct pubsub_host *h, const struct ps_node *n)
{
	return h->pep ? h->jid : n->creator;
}

/* XEP-0060 §6.1.3 / §6.5.*: may bare see the node's items and subscribe?
 * Returns true, or false with the error set. */
static bool ps_may_access(struct loop *l, const struct pubsub_host *h, const struct ps_node *n,
			  const char *bare, struct arena *a, struct ps_err *e)
{
	const char *aff = ps_aff_of(h, n, bare);
	if (strcmp(aff, "owner") == 0)
		return true;
	if (strcmp(aff, "outcast") == 0) {
		ps_set_err(e, "auth", "forbidden", NULL);
		return false;
	}
	if (strcmp(n->access, "open") == 0)
		return true;
	if (strcmp(n->access, "whitelist") == 0) {
		if (strcmp(aff, "member") == 0 || strcmp(aff, "publisher") == 0 ||
		    strcmp(aff, "publish-only") == 0)
			return true;
		ps_set_err(e, "cancel", "not-allowed", "closed-node");
		return false;
	}
	struct roster_item it;
	const char *owner = ps_roster_owner(h, n);
	if (owner[0] == '\0' || roster_load(l, owner, bare, a, &it) != 1 ||
	    !(it.sub & SUB_FROM)) {
		ps_set_err(e, "auth", "not-authorized",
			   strcmp(n->access, "roster") == 0 ? "not-in-roster-group"
							   : "presence-subscription-required");
		return false;
	}
	if (strcmp(n->access, "presence") == 0)
		return true;
	for (int i = 0; i < n->n_groups; i++)
		for (int k = 0; k < it.n_groups; k++)
			if (strcmp(n->groups[i], it.groups[k]) == 0)
				return true;
	ps_set_err(e, "auth", "not-authorized", "not-in-roster-group");
	return false;
}

static bool ps_may_publish(const struct pubsub_host *h, const struct ps_node *n,
			   const char *bare)
{
	const char *aff = ps_aff_of(h, n, bare);
	if (strcmp(aff, "owner") == 0 || strcmp(aff, "publisher") == 0 ||
	    strcmp(aff, "publish-only") == 0)
		return true;
	if (h->pep || strcmp(aff, "outcast") == 0)
		return false;
	if (strcmp(n->publish_model, "open") == 0)
		return true;
	if (strcmp(n->publish_model, "subscribers") == 0)
		for (int i = 0; i < n->n_subs; i++)
			if (bare_eq(n->subs[i].jid, bare))
				return true;
	return false;
}

/* A node name or item id we keep: 1..PUBSUB_NAME_MAX bytes, no control
 * characters (they make no sense in a name, and keep logs readable). */
static bool ps_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > PUBSUB_NAME_MAX)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

/* --- configuration forms --- */

struct ps_field {
	const char *var;
	const char **values;
	int n;
};

/* The fields of a submitted data form (FORM_TYPE left out) in a. Returns
 * the count, or -1 when x is not a form of form_type. */
static int ps_form_fields(struct arena *a, const struct xml_node *x, const char *form_type,
			  struct ps_field **out)
{
	int n = 0;
	bool typed = false;
	struct ps_field *v = NULL;
	for (struct xml_node *f = x->children; f; f = f->next) {
		if (!xml_is(f, NS_DATA, "field") || xml_attr(f, "var") == NULL)
			continue;
		struct ps_field fld = { .var = xml_attr(f, "var") };
		for (struct xml_node *val = f->children; val; val = val->next)
			if (xml_is(val, NS_DATA, "value") && fld.n < 1000)
				fld.values = ps_strs_push(a, fld.values, fld.n++, xml_text(a, val));
		if (strcmp(fld.var, "FORM_TYPE") == 0) {
			typed = fld.n == 1 && strcmp(fld.values[0], form_type) == 0;
			if (!typed)
				return -1;
			continue;
		}
		if (n >= 64)
			return -1;
		struct ps_field *nv = arena_alloc(a, (size_t)(n + 1) * sizeof *nv);
		if (n)
			memcpy(nv, v, (size_t)n * sizeof *nv);
		nv[n++] = fld;
		v = nv;
	}
	*out = v;
	return n;
}

static const char *ps_first(const struct ps_field *f)
{
	return f->n > 0 ? f->values[0] : "";
}

static bool ps_parse_bool(const char *v, bool *out)
{
	if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
		*out = true;
	else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
		*out = false;
	else
		return false;
	return true;
}

/* max_items as a form gives it: a positive number, or "max" (the limit). */
static int ps_parse_max(const char *v, int limit)
{
	if (strcmp(v, "max") == 0)
		return limit;
	long n;
	if (parse_count(v, &n) != 0 || n < 1)
		return 0;
	return n > 1000000 ? 1000001 : (int)n;
}

static bool ps_one_of(const char *v, const char *const *set)
{
	for (; *set; set++)
		if (strcmp(v, *set) == 0)
			return true;
	return false;
}

static const char *const ps_access_models[] = { "open", "presence", "roster", "whitelist",
						NULL };
static const char *const ps_publish_models[] = { "publishers", "subscribers", "open", NULL };

/* Applies one field to n. Fields we do not keep are accepted and
 * ignored (XEP-0060 §16.4 lists many; clients send a few of them). */
static bool ps_apply_field(struct arena *a, struct ps_node *n, const struct ps_field *f,
			   int limit, struct ps_err *e)
{
	const char *v = ps_first(f);
	bool b;
	ps_set_err(e, "modify", "not-acceptable", NULL);
	if (strcmp(f->var, "pubsub#access_model") == 0) {
		if (!ps_one_of(v, ps_access_models))
			return false;
		n->access = arena_strdup(a, v);
	} else if (strcmp(f->var, "pubsub#publish_model") == 0) {
		if (!ps_one_of(v, ps_publish_models))
			return false;
		n->publish_model = arena_strdup(a, v);
	} else if (strcmp(f->var, "pubsub#max_items") == 0) {
		int m = ps_parse_max(v, limit);
		if (m == 0)
			return false;
		if (m > limit) {
			ps_set_err(e, "modify", "not-acceptable", "max-items-exceeded");
			return false;
		}
		n->max_items = m;
	} else if (strcmp(f->var, "pubsub#persist_items") == 0) {
		if (!ps_parse_bool(v, &b))
			return false;
		n->persist = b;
	} else if (strcmp(f->var, "pubsub#notify_retract") == 0) {
		if (!ps_parse_bool(v, &b))
			return false;
		n->notify_retract = b;
	} else if (strcmp(f->var, "pubsub#notify_delete") == 0) {
		if (!ps_parse_bool(v, &b))
			return false;
		n->notify_delete = b;
	} else if (strcmp(f->var, "pubsub#send_last_published_item") == 0) {
		n->send_last = strcmp(v, "never") != 0;
	} else if (strcmp(f->var, "pubsub#title") == 0) {
		if (strlen(v) > 1024)
			return false;
		n->title = v[0] ? arena_strdup(a, v) : NULL;
	} else if (strcmp(f->var, "pubsub#roster_groups_allowed") == 0) {
		if (f->n > 256)
			return false;
		n->groups = f->values;
		n->n_groups = f->n;
	}
	return true;
}

/* XEP-0223 §4: whether the node's configuration already is what field
 * asks. Fields we do not keep always match. */
static bool ps_field_matches(const struct ps_node *n, const struct ps_field *f, int limit)
{
	const char *v = ps_first(f);
	bool b;
	if (strcmp(f->var, "pubsub#access_model") == 0)
		return strcmp(n->access, v) == 0;
	if (strcmp(f->var, "pubsub#publish_model") == 0)
		return strcmp(n->publish_model, v) == 0;
	if (strcmp(f->var, "pubsub#max_items") == 0)
		return ps_parse_max(v, limit) == n->max_items;
	if (strcmp(f->var, "pubsub#persist_items") == 0)
		return ps_parse_bool(v, &b) && b == n->persist;
	if (strcmp(f->var, "pubsub#send_last_published_item") == 0)
		return (strcmp(v, "never") != 0) == n->send_last;
	return true;
}

static bool ps_apply_form(struct arena *a, struct ps_node *n, const struct xml_node *x,
			  const char *form_type, int limit, struct ps_err *e)
{
	struct ps_field *f = NULL;
	int nf = ps_form_fields(a, x, form_type, &f);
	if (nf < 0) {
		ps_set_err(e, "modify", "bad-request", "invalid-options");
		return false;
	}
	for (int i = 0; i < nf; i++)
		if (!ps_apply_field(a, n, &f[i], limit, e))
			return false;
	return true;
}

static void ps_form_field(struct arena *a, struct xml_node *x, const char *var, const char *type,
			  const char *label, const char *const *values, int n)
{
	struct xml_node *f = xml_add_child(a, x, NS_DATA, "field");
	xml_set_attr(a, f, "var", var);
	if (type)
		xml_set_attr(a, f, "type", type);
	if (label)
		xml_set_attr(a, f, "label", label);
	for (int i = 0; i < n; i++) {
		struct xml_node *v = xml_add_child(a, f, NS_DATA, "value");
		xml_add_text(a, v, values[i], strlen(values[i]));
	}
}

static void ps_form_options(struct arena *a, struct xml_node *x, const char *var,
			    const char *type, const char *value, const char *const *options)
{
	ps_form_field(a, x, var, type, NULL, &value, 1);
	struct xml_node *f = x->last;
	for (; *options; options++) {
		struct xml_node *o = xml_add_child(a, f, NS_DATA, "option");
		struct xml_node *v = xml_add_child(a, o, NS_DATA, "value");
		xml_add_text(a, v, *options, strlen(*options));
	}
}

/* XEP-0060 §8.2.1: the node_config form of n. */
static struct xml_node *ps_config_form(struct arena *a, const struct ps_node *n)
{
	struct xml_node *x = xml_new(a, NS_DATA, "x");
	xml_set_attr(a, x, "type", "form");
	const char *ft = NS_NODE_CONFIG;
	ps_form_field(a, x, "FORM_TYPE", "hidden", NULL, &ft, 1);
	const char *title = n->title ? n->title : "";
	ps_form_field(a, x, "pubsub#title", "text-single", "A friendly name for the node", &title,
		      1);
	ps_form_options(a, x, "pubsub#access_model", "list-single", n->access, ps_access_models);
	ps_form_options(a, x, "pubsub#publish_model", "list-single", n->publish_model,
			ps_publish_models);
	char num[16];
	snprintf(num, sizeof num, "%d", n->max_items);
	const char *m = num;
	ps_form_field(a, x, "pubsub#max_items", "text-single", "Max # of items to persist", &m, 1);
	const char *one = "1", *zero = "0";
	ps_form_field(a, x, "pubsub#persist_items", "boolean", "Persist items to storage",
		      n->persist ? &one : &zero, 1);
	ps_form_field(a, x, "pubsub#notify_retract", "boolean", "Notify when items are removed",
		      n->notify_retract ? &one : &zero, 1);
	ps_form_field(a, x, "pubsub#notify_delete", "boolean", "Notify when the node is deleted",
		      n->notify_delete ? &one : &zero, 1);
	static const char *const sends[] = { "never", "on_sub_and_presence", NULL };
	ps_form_options(a, x, "pubsub#send_last_published_item", "list-single",
			n->send_last ? "on_sub_and_presence" : "never", sends);
	ps_form_field(a, x, "pubsub#roster_groups_allowed", "list-multi",
		      "Roster groups allowed to subscribe", n->groups, n->n_groups);
	return x;
}

/* --- notifications --- */

struct ps_targets {
	struct loop *l;
	struct arena *a;
	const char *node;
	const char **jids;
	int n, max;
};

static void ps_target_add(struct ps_targets *t, const char *jid)
{
	if (t->n >= t->max)
		return;
	for (int i = 0; i < t->n; i++)
		if (strcmp(t->jids[i], jid) == 0)
			return;
	t->jids[t->n++] = arena_strdup(t->a, jid);
}

static void ps_target_caps(void *arg, const char *full, bool wants)
{
	if (wants)
		ps_target_add(arg, full);
}

struct ps_contacts {
	struct arena *a;
	const struct ps_node *n;
	const char **bare;
	int count, max;
};

static void ps_collect_contact(void *arg, struct roster_item *it)
{
	struct ps_contacts *c = arg;
	if (!(it->sub & SUB_FROM) || c->count >= c->max)
		return;
	if (strcmp(c->n->access, "roster") == 0) {
		bool in = false;
		for (int i = 0; i < c->n->n_groups && !in; i++)
			for (int k = 0; k < it->n_groups && !in; k++)
				in = strcmp(c->n->groups[i], it->groups[k]) == 0;
		if (!in)
			return;
	}
	c->bare[c->count++] = it->jid;
}

/* A stanza from the service to jid: a full JID or a remote one as
 * addressed, a local bare JID to its available resources. */
static void ps_send(struct loop *l, struct xml_node *st, struct arena *a, const char *to)
{
	struct jid j;
	if (jid_parse(&j, to, strlen(to)) != 0)
		return;
	xml_set_attr(a, st, "to", to);
	if (j.resource[0] != '\0' || config_find_host(l->srv->cfg, j.domain) == NULL) {
		deliver_to_jid(l, st, &j);
		return;
	}
	struct router_target t[ROUTER_MAX_TARGETS];
	int n = router_find_available(l->srv->router, to, t, ROUTER_MAX_TARGETS);
	deliver_to_targets(l, st, t, n);
}

/* The recipients of an event of node n (XEP-0060 §7.1.2.1, XEP-0163
 * §4.3): its subscribers that may still see it and, for PEP, every
 * resource of the owner and of the contacts the access model admits
 * whose caps want NODE+notify. At most limits.pubsub_max_notifications. */
static void ps_recipients(struct loop *l, const struct pubsub_host *h, const struct ps_node *n,
			  struct arena *a, struct ps_targets *t)
{
	struct server *srv = l->srv;
	t->l = l;
	t->a = a;
	t->node = n->name;
	t->max = srv->cfg->limits.pubsub_max_notifications;
	t->jids = arena_alloc(a, (size_t)t->max * sizeof *t->jids);
	t->n = 0;
	struct ps_err e;
	for (int i = 0; i < n->n_subs && t->n < t->max; i++)
		if (ps_may_access(l, h, n, ps_bare(a, n->subs[i].jid), a, &e))
			ps_target_add(t, n->subs[i].jid);
	if (!h->pep)
		return;
	caps_each(srv, h->jid, n->name, ROUTER_MAX_TARGETS, ps_target_caps, t);
	struct ps_contacts c = { .a = a, .n = n, .max = t->max };
	c.bare = arena_alloc(a, (size_t)c.max * sizeof *c.bare);
	if (strcmp(n->access, "whitelist") == 0) {
		for (int i = 0; i < n->n_affs && c.count < c.max; i++)
			if (strcmp(n->affs[i].aff, "outcast") != 0)
				c.bare[c.count++] = n->affs[i].jid;
	} else {
		roster_each(l, h->jid, a, ps_collect_contact, &c);
	}
	for (int i = 0; i < c.count && t->n < t->max; i++)
		caps_each(srv, c.bare[i], n->name, ROUTER_MAX_TARGETS, ps_target_caps, t);
}

/* Wraps what (an element of NS_PUBSUB_EVENT) in a headline message
 * from the service and sends it to each of t. */
static void ps_send_event(struct loop *l, const struct pubsub_host *h, struct xml_node *what,
			  struct arena *a, const struct ps_targets *t)
{
	if (t->n == 0)
		return;
	struct xml_node *m = xml_new(a, NS_CLIENT, "message");
	char id[17];
	random_hex(id, 8);
	xml_set_attr(a, m, "from", h->jid);
	xml_set_attr(a, m, "type", "headline");
	xml_set_attr(a, m, "id", id);
	struct xml_node *ev = xml_add_child(a, m, NS_PUBSUB_EVENT, "event");
	what->parent = ev;
	what->next = NULL;
	ev->children = ev->last = what;
	for (int i = 0; i < t->n; i++)
		ps_send(l, m, a, t->jids[i]);
}

/* A stored item (NS_PUBSUB) as an <item/> of ns, payload moved over. */
static struct xml_node *ps_item_as(struct arena *a, struct xml_node *stored, const char *ns)
{
	struct xml_node *it = xml_new(a, ns, "item");
	xml_set_attr(a, it, "id", xml_attr(stored, "id"));
	it->children = stored->children;
	it->last = stored->last;
	for (struct xml_node *c = it->children; c; c = c->next)
		c->parent = it;
	stored->children = stored->last = NULL;
	return it;
}

static struct xml_node *ps_item_load(struct loop *l, const struct pubsub_host *h,
				     const char *node, const char *id, struct arena *a)
{
	struct buf b;
	buf_init(&b);
	struct xml_node *it = NULL;
	if (ps_store_item_get(l, h, node, id, &b) == 0)
		it = xml_parse_element(a, b.data, b.len);
	buf_free(&b);
	return it && xml_is(it, NS_PUBSUB, "item") ? it : NULL;
}

static struct xml_node *ps_event_items(struct arena *a, const char *node)
{
	struct xml_node *items = xml_new(a, NS_PUBSUB_EVENT, "items");
	xml_set_attr(a, items, "node", node);
	return items;
}

static void ps_notify_item(struct loop *l, const struct pubsub_host *h, const struct ps_node *n,
			   struct xml_node *stored, struct arena *a)
{
	struct ps_targets t;
	ps_recipients(l, h, n, a, &t);
	struct xml_node *items = ps_event_items(a, n->name);
	struct xml_node *it = ps_item_as(a, stored, NS_PUBSUB_EVENT);
	it->parent = items;
	items->children = items->last = it;
	ps_send_event(l, h, items, a, &t);
}

/* --- operations, each under the node's lock --- */

/* The item (NS_PUBSUB <item/> with one payload) checked and serialised
 * for storage with id; NULL and e set when it is refused. */
static bool ps_item_check(struct loop *l, struct xml_node *item, struct ps_err *e)
{
	int n = item ? xml_element_count(item) : 0;
	if (item == NULL) {
		ps_set_err(e, "modify", "bad-request", "item-required");
		return false;
	}
	if (n == 0) {
		ps_set_err(e, "modify", "bad-request", "payload-required");
		return false;
	}
	if (n > 1) {
		ps_set_err(e, "modify", "bad-request", "invalid-payload");
		return false;
	}
	(void)l;
	return true;
}

/* Counts a new node against the creator's budget: PEP, the account's
 * nodes; a service, what the creator made. */
static bool ps_room_for_node(struct loop *l, const struct pubsub_host *h, const char *creator,
			     struct arena *a, struct ps_err *e);

static int ps_publish(struct loop *l, const struct pubsub_host *h, const char *name,
		      struct xml_node *item, const char *publisher, const struct xml_node *options,
		      const struct pubsub_options *opts, bool auto_create, struct arena *a,
		      struct ps_err *e, const char **id_out)
{
	const struct config_limits *lim = &l->srv->cfg->limits;
	if (!ps_item_check(l, item, e))
		return -1;
	const char *id = xml_attr(item, "id");
	if (id == NULL || id[0] == '\0') {
		char *gen = arena_alloc(a, 33);
		random_hex(gen, 16);
		id = gen;
	} else if (!ps_name_ok(id)) {
		ps_set_err(e, "modify", "bad-request", "invalid-payload");
		return -1;
	}
	struct xml_node *stored = xml_new(a, NS_PUBSUB, "item");
	xml_set_attr(a, stored, "id", id);
	xml_set_attr(a, stored, "publisher", publisher);
	struct xml_node *payload = xml_first_element(item);
	payload->parent = stored;
	payload->next = NULL;
	stored->children = stored->last = payload;
	struct buf b;
	buf_init(&b);
	xml_serialize(stored, NS_CLIENT, &b);
	if (b.len > lim->pubsub_max_item_size) {
		buf_free(&b);
		ps_set_err(e, "modify", "not-acceptable", "payload-too-big");
		return -1;
	}
	pthread_mutex_t *lock = ps_lock_of(l, h, name);
	pthread_mutex_lock(lock);
	int rc = -1;
	struct ps_node n;
	int found = ps_node_load(l, h, name, a, &n);
	ps_set_err(e, "wait", "internal-server-error", NULL);
	if (found < 0)
		goto out;
	if (found == 0) {
		if (!auto_create) {
			ps_set_err(e, "cancel", "item-not-found", NULL);
			goto out;
		}
		if (!h->pep || strcmp(publisher, h->jid) != 0) {
			ps_set_err(e, "auth", "forbidden", NULL);
			goto out;
		}
		if (!ps_room_for_node(l, h, publisher, a, e))
			goto out;
		ps_node_defaults(h, &n, arena_strdup(a, name), publisher, lim->pubsub_max_items);
		if (options && !ps_apply_form(a, &n, options, NS_PUBLISH_OPTIONS,
					      lim->pubsub_max_items, e))
			goto out;
		if (opts) {
			if (opts->access)
				n.access = opts->access;
			if (opts->max_items)
				n.max_items = opts->max_items < 0 ? lim->pubsub_max_items
								  : opts->max_items;
			if (opts->persist >= 0)
				n.persist = opts->persist;
			if (opts->send_last >= 0)
				n.send_last = opts->send_last;
		}
	} else {
		if (!ps_may_publish(h, &n, publisher)) {
			ps_set_err(e, "auth", "forbidden", NULL);
			goto out;
		}
		if (options) {
			struct ps_field *f = NULL;
			int nf = ps_form_fields(a, options, NS_PUBLISH_OPTIONS, &f);
			if (nf < 0) {
				ps_set_err(e, "modify", "bad-request", "invalid-options");
				goto out;
			}
			for (int i = 0; i < nf; i++) {
				if (!ps_field_matches(&n, &f[i], lim->pubsub_max_items)) {
					ps_set_err(e, "cancel", "conflict", "precondition-not-met");
					goto out;
				}
			}
		}
	}
	ps_set_err(e, "wait", "internal-server-error", NULL);
	if (ps_store_item_put(l, h, name, id, &b) != 0)
		goto out;
	/* The ids, oldest first, with this one last; beyond max_items (one
	 * for a node that does not persist: the last item is still sent
	 * to those who come online) the oldest go. */
	const char **ids = arena_alloc(a, (size_t)(n.n_ids + 1) * sizeof *ids);
	int k = 0;
	for (int i = 0; i < n.n_ids; i++)
		if (strcmp(n.ids[i], id) != 0)
			ids[k++] = n.ids[i];
	ids[k++] = id;
	int keep = n.persist ? n.max_items : 1;
	int drop = k > keep ? k - keep : 0;
	for (int i = 0; i < drop; i++)
		ps_store_item_del(l, h, name, ids[i]);
	n.ids = ids + drop;
	n.n_ids = k - drop;
	if (ps_node_save(l, h, &n, a) != 0)
		goto out;
	rc = 0;
out:
	pthread_mutex_unlock(lock);
	buf_free(&b);
	if (rc == 0) {
		*id_out = id;
		ps_notify_item(l, h, &n, stored, a);
	}
	return rc;
}

/* Loads node name of h for a request by bare: e set when it does not
 * exist (item-not-found) or on a store error. */
static bool ps_node_get(struct loop *l, const struct pubsub_host *h, const char *name,
			struct arena *a, struct ps_node *n, struct ps_err *e)
{
	if (!ps_name_ok(name)) {
		ps_set_err(e, "modify", "bad-request", "nodeid-required");
		return false;
	}
	int rc = ps_node_load(l, h, name, a, n);
	if (rc == 1)
		return true;
	if (rc == 0)
		ps_set_err(e, "cancel", "item-not-found", NULL);
	else
		ps_set_err(e, "wait", "internal-server-error", NULL);
	return false;
}

static int ps_retract(struct loop *l, const struct pubsub_host *h, const char *name,
		      const char *const *ids, int n_ids, const char *who, bool notify,
		      struct arena *a, struct ps_err *e)
{
	pthread_mutex_t *lock = ps_lock_of(l, h, name);
	pthread_mutex_lock(lock);
	struct ps_node n;
	int rc = -1;
	if (!ps_node_get(l, h, name, a, &n, e))
		goto out;
	if (who != NULL && !ps_may_publish(h, &n, who)) {
		ps_set_err(e, "auth", "forbidden", NULL);
		goto out;
	}
	const char **left = arena_alloc(a, (size_t)(n.n_ids + 1) * sizeof *left);
	int k = 0, gone = 0;
	for (int i = 0; i < n.n_ids; i++) {
		bool hit = false;
		for (int j = 0; j < n_ids && !hit; j++)
			hit = strcmp(n.ids[i], ids[j]) == 0;
		if (hit)
			gone++;
		else
			left[k++] = n.ids[i];
	}
	if (gone < n_ids) {
		ps_set_err(e, "cancel", "item-not-found", NULL);
		goto out;
	}
	for (int j = 0; j < n_ids; j++)
		ps_store_item_del(l, h, name, ids[j]);
	n.ids = left;
	n.n_ids = k;
	if (ps_node_save(l, h, &n, a) != 0) {
		ps_set_err(e, "wait", "internal-server-error", NULL);
		goto out;
	}
	rc = 0;
out:
	pthread_mutex_unlock(lock);
	if (rc == 0 && notify && n_ids > 0) {
		struct ps_targets t;
		ps_recipients(l, h, &n, a, &t);
		struct xml_node *items = ps_event_items(a, name);
		for (int j = 0; j < n_ids; j++) {
			struct xml_node *r = xml_add_child(a, items, NS_PUBSUB_EVENT, "retract");
			xml_set_attr(a, r, "id", ids[j]);
		}
		ps_send_event(l, h, items, a, &t);
	}
	return rc;
}

/* --- service-wide node listing --- */

struct ps_each {
	struct arena *a;
	struct ps_node *nodes;
	int n, max;
};

static void ps_each_node(void *arg, const char *key, const void *value, size_t len)
{
	struct ps_each *c = arg;
	if (c->n >= c->max)
		return;
	if (ps_node_parse(c->a, key, value, len, &c->nodes[c->n]) == 0)
		c->n++;
}

/* Every node of h (at most limits.pubsub_max_nodes times the number of
 * creators a service may have had: bounded by the store's listing). */
static int ps_nodes(struct loop *l, const struct pubsub_host *h, struct arena *a,
		    struct ps_node **out)
{
	struct ps_each c = { .a = a, .max = l->srv->cfg->limits.pubsub_max_nodes * (h->pep ? 1 : 64) };
	c.nodes = arena_alloc(a, (size_t)c.max * sizeof *c.nodes);
	if (ps_store_nodes_each(l, h, ps_each_node, &c) < 0)
		return -1;
	*out = c.nodes;
	return c.n;
}

#define STORE_CREATORS "pubsub_creators"

static int ps_creator_count(struct loop *l, const struct pubsub_host *h, const char *creator)
{
	struct buf b;
	buf_init(&b);
	int rc = l->srv->storage->map_get(l->store, h->domain, h->local, STORE_CREATORS, creator,
					  &b);
	int n = 0;
	if (rc == 0) {
		buf_append(&b, "", 1);
		n = atoi(b.data);
	}
	buf_free(&b);
	return rc < 0 ? -1 : n;
}

static void ps_creator_add(struct loop *l, const struct pubsub_host *h, const char *creator,
			   int delta)
{
	if (h->pep || creator == NULL || creator[0] == '\0')
		return;
	/* Not ps_lock_of: the caller holds a node's lock, which may be the
	 * same one (a self-deadlock one instant node in 64 hit). */
	pthread_mutex_t *lock = &l->srv->pubsub->creators_lock;
	pthread_mutex_lock(lock);
	int n = ps_creator_count(l, h, creator);
	if (n >= 0) {
		n += delta;
		const struct storage_driver *d = l->srv->storage;
		if (n <= 0) {
			d->map_del(l->store, h->domain, h->local, STORE_CREATORS, creator);
		} else {
			char num[16];
			int len = snprintf(num, sizeof num, "%d", n);
			d->map_put(l->store, h->domain, h->local, STORE_CREATORS, creator, num,
				   (size_t)len);
		}
	}
	pthread_mutex_unlock(lock);
}

static bool ps_room_for_node(struct loop *l, const struct pubsub_host *h, const char *creator,
			     struct arena *a, struct ps_err *e)
{
	(void)a;
	int max = l->srv->cfg->limits.pubsub_max_nodes;
	int n = h->pep ? ps_store_node_count(l, h) : ps_creator_count(l, h, creator);
	if (n < 0) {
		ps_set_err(e, "wait", "internal-server-error", NULL);
		return false;
	}
	if (n >= max) {
		ps_set_err(e, "cancel", "not-allowed", "max-nodes-exceeded");
		return false;
	}
	if (!h->pep)
		ps_creator_add(l, h, creator, 1);
	return true;
}

/* --- the protocol --- */

struct ps_req {
	struct iq_ctx *c;
	const struct pubsub_host *h;
	const char *from; /* requester's bare JID */
	struct arena *a;
};

static void ps_error(struct ps_req *r, const struct ps_err *e)
{
	deliver_error_app(r->c->loop, r->c->iq, r->a, e->type, e->cond,
			  e->app ? NS_PUBSUB_ERRORS : NULL, e->app);
}

static void ps_fail(struct ps_req *r, const char *type, const char *cond, const char *app)
{
	struct ps_err e;
	ps_set_err(&e, type, cond, app);
	ps_error(r, &e);
}

static struct xml_node *ps_reply_pubsub(struct ps_req *r, const char *ns)
{
	return xml_new(r->a, ns, "pubsub");
}

static const char *ps_node_attr(const struct xml_node *el)
{
	return xml_attr(el, "node");
}

static void ps_do_publish(struct ps_req *r, struct xml_node *pub, struct xml_node *ps)
{
	const char *name = ps_node_attr(pub);
	if (!ps_name_ok(name)) {
		ps_fail(r, "modify", "bad-request", "nodeid-required");
		return;
	}
	struct xml_node *item = NULL;
	int n_items = 0;
	for (struct xml_node *c = pub->children; c; c = c->next)
		if (xml_is(c, NS_PUBSUB, "item") && n_items++ == 0)
			item = c;
	if (n_items > 1) {
		ps_fail(r, "modify", "bad-request", "invalid-payload");
		return;
	}
	struct xml_node *po = xml_child(ps, NS_PUBSUB, "publish-options");
	struct xml_node *form = po ? xml_child(po, NS_DATA, "x") : NULL;
	struct ps_err e;
	const char *id;
	if (ps_publish(r->c->loop, r->h, name, item, r->from, form, NULL, r->h->pep, r->a, &e,
		       &id) != 0) {
		ps_error(r, &e);
		return;
	}
	struct xml_node *rp = ps_reply_pubsub(r, NS_PUBSUB);
	struct xml_node *p = xml_add_child(r->a, rp, NS_PUBSUB, "publish");
	xml_set_attr(r->a, p, "node", name);
	struct xml_node *it = xml_add_child(r->a, p, NS_PUBSUB, "item");
	xml_set_attr(r->a, it, "id", id);
	module_reply(r->c, rp);
}

static void ps_do_retract(struct ps_req *r, struct xml_node *el)
{
	const char *name = ps_node_attr(el);
	if (!ps_name_ok(name)) {
		ps_fail(r, "modify", "bad-request", "nodeid-required");
		return;
	}
	const char *ids[16];
	int n = 0;
	for (struct xml_node *c = el->children; c; c = c->next) {
		if (!xml_is(c, NS_PUBSUB, "item"))
			continue;
		if (n == 16 || !ps_name_ok(xml_attr(c, "id"))) {
			ps_fail(r, "modify", "bad-request", "item-required");
			return;
		}
		ids[n++] = xml_attr(c, "id");
	}
	if (n == 0) {
		ps_fail(r, "modify", "bad-request", "item-required");
		return;
	}
	const char *notify = xml_attr(el, "notify");
	struct ps_err e;
	/* XEP-0060 §7.2.2.1: notify='true' asks for it; the node's
	 * notify_retract says so by default. */
	struct ps_node n0;
	bool want = ps_bool(notify);
	if (!want && ps_node_load(r->c->loop, r->h, name, r->a, &n0) == 1)
		want = n0.notify_retract && notify == NULL;
	if (ps_retract(r->c->loop, r->h, name, ids, n, r->from, want, r->a, &e) != 0) {
		ps_error(r, &e);
		return;
	}
	module_reply(r->c, NULL);
}

/* Adds to parent the items of n (ids, or all of them; the newest
 * max_items when max > 0), oldest first, within the reply budget. */
static void ps_add_items(struct loop *l, const struct pubsub_host *h, const struct ps_node *n,
			 struct xml_node *parent, const char *ns, const char *const *ids,
			 int n_ids, int max, struct arena *a)
{
	const char **want = (const char **)ids;
	int count = n_ids;
	if (n_ids == 0) {
		want = n->ids;
		count = n->n_ids;
		if (max > 0 && count > max) {
			want += count - max;
			count = max;
		}
	}
	/* Newest first into the budget, so that a cut keeps the newest. */
	size_t budget = l->srv->cfg->limits.max_queued_output / 2, used = 0;
	struct xml_node **got = arena_alloc(a, (size_t)(count + 1) * sizeof *got);
	int n_got = 0;
	for (int i = count - 1; i >= 0; i--) {
		struct xml_node *it = ps_item_load(l, h, n->name, want[i], a);
		if (it == NULL)
			continue;
		struct buf b;
		buf_init(&b);
		xml_serialize(it, NS_CLIENT, &b);
		used += b.len;
		buf_free(&b);
		if (used > budget && n_got > 0)
			break;
		got[n_got++] = it;
	}
	for (int i = n_got - 1; i >= 0; i--) {
		struct xml_node *it = ps_item_as(a, got[i], ns);
		it->parent = parent;
		if (parent->last)
			parent->last->next = it;
		else
			parent->children = it;
		parent->last = it;
	}
}

static void ps_do_items(struct ps_req *r, struct xml_node *el)
{
	struct ps_node n;
	struct ps_err e;
	if (!ps_node_get(r->c->loop, r->h, ps_node_attr(el), r->a, &n, &e) ||
	    !ps_may_access(r->c->loop, r->h, &n, r->from, r->a, &e)) {
		ps_error(r, &e);
		return;
	}
	int max = 0;
	const char *mi = xml_attr(el, "max_items");
	if (mi != NULL) {
		long m;
		if (parse_count(mi, &m) != 0 || m < 1) {
			ps_fail(r, "modify", "bad-request", NULL);
			return;
		}
		max = m > INT_MAX ? INT_MAX : (int)m; /* atoi wrapped 2^32 + 1 to 1 */
	}
	const char *ids[64];
	int n_ids = 0;
	for (struct xml_node *c = el->children; c && n_ids < 64; c = c->next)
		if (xml_is(c, NS_PUBSUB, "item") && xml_attr(c, "id"))
			ids[n_ids++] = xml_attr(c, "id");
	struct xml_node *rp = ps_reply_pubsub(r, NS_PUBSUB);
	struct xml_node *items = xml_add_child(r->a, rp, NS_PUBSUB, "items");
	xml_set_attr(r->a, items, "node", n.name);
	ps_add_items(r->c->loop, r->h, &n, items, NS_PUBSUB, ids, n_ids, max, r->a);
	module_reply(r->c, rp);
}

static void ps_send_last_to(struct loop *l, const struct pubsub_host *h, const struct ps_node *n,
			    const char *to, struct arena *a)
{
	if (!n->send_last || n->n_ids == 0)
		return;
	struct xml_node *it = ps_item_load(l, h, n->name, n->ids[n->n_ids - 1], a);
	if (it == NULL)
		return;
	struct xml_node *items = ps_event_items(a, n->name);
	struct xml_node *ev = ps_item_as(a, it, NS_PUBSUB_EVENT);
	ev->parent = items;
	items->children = items->last = ev;
	struct ps_targets t = { .jids = &to, .n = 1, .max = 1 };
	ps_send_event(l, h, items, a, &t);
}

static void ps_subscription_el(struct arena *a, struct xml_node *parent, const char *ns,
			       const char *node, const char *jid, const char *subid,
			       const char *state)
{
	struct xml_node *s = xml_add_child(a, parent, ns, "subscription");
	if (node)
		xml_set_attr(a, s, "node", node);
	xml_set_attr(a, s, "jid", jid);
	if (subid && subid[0])
		xml_set_attr(a, s, "subid", subid);
	xml_set_attr(a, s, "subscription", state);
}

static void ps_do_subscribe(struct ps_req *r, struct xml_node *el)
{
	struct loop *l = r->c->loop;
	const char *name = ps_node_attr(el), *jid = xml_attr(el, "jid");
	struct jid j;
	if (!ps_name_ok(name)) {
		ps_fail(r, "modify", "bad-request", "nodeid-required");
		return;
	}
	if (jid == NULL) {
		ps_fail(r, "modify", "bad-request", "jid-required");
		return;
	}
	char norm[3 * JID_PART_MAX + 3];
	if (jid_parse(&j, jid, strlen(jid)) != 0 || jid_format(&j, norm, sizeof norm) < 0 ||
	    !bare_eq(norm, r->from)) {
		ps_fail(r, "modify", "bad-request", "invalid-jid");
		return;
	}
	pthread_mutex_t *lock = ps_lock_of(l, r->h, name);
	pthread_mutex_lock(lock);
	struct ps_node n;
	struct ps_err e;
	bool ok = ps_node_get(l, r->h, name, r->a, &n, &e) &&
		  ps_may_access(l, r->h, &n, r->from, r->a, &e);
	const char *subid = NULL;
	for (int i = 0; ok && i < n.n_subs; i++)
		if (strcmp(n.subs[i].jid, norm) == 0)
			subid = n.subs[i].subid;
	if (ok && subid == NULL) {
		if (n.n_subs + n.n_affs >= l->srv->cfg->limits.pubsub_max_subscriptions) {
			ps_set_err(&e, "wait", "policy-violation", "too-many-subscriptions");
			ok = false;
		} else {
			char *gen = arena_alloc(r->a, 17);
			random_hex(gen, 8);
			subid = gen;
			ps_sub_push(r->a, &n, norm, subid);
			if (ps_node_save(l, r->h, &n, r->a) != 0) {
				ps_set_err(&e, "wait", "internal-server-error", NULL);
				ok = false;
			}
		}
	}
	pthread_mutex_unlock(lock);
	if (!ok) {
		ps_error(r, &e);
		return;
	}
	struct xml_node *rp = ps_reply_pubsub(r, NS_PUBSUB);
	ps_subscription_el(r->a, rp, NS_PUBSUB, name, norm, subid, "subscribed");
	module_reply(r->c, rp);
	/* XEP-0060 §6.1.7: the last item, on subscription. */
	ps_send_last_to(l, r->h, &n, arena_strdup(r->a, norm), r->a);
}

static void ps_do_unsubscribe(struct ps_req *r, struct xml_node *el)
{
	struct loop *l = r->c->loop;
	const char *name = ps_node_attr(el), *jid = xml_attr(el, "jid");
	const char *subid = xml_attr(el, "subid");
	struct jid j;
	char norm[3 * JID_PART_MAX + 3];
	if (!ps_name_ok(name)) {
		ps_fail(r, "modify", "bad-request", "nodeid-required");
		return;
	}
	if (jid == NULL || jid_parse(&j, jid, strlen(jid)) != 0 ||
	    jid_format(&j, norm, sizeof norm) < 0) {
		ps_fail(r, "modify", "bad-request", "jid-required");
		return;
	}
	pthread_mutex_t *lock = ps_lock_of(l, r->h, name);
	pthread_mutex_lock(lock);
	struct ps_node n;
	struct ps_err e;
	bool ok = ps_node_get(l, r->h, name, r->a, &n, &e);
	if (ok && !bare_eq(norm, r->from) && !ps_is_owner(r->h, &n, r->from)) {
		ps_set_err(&e, "auth", "forbidden", NULL);
		ok = false;
	}
	int k = 0, removed = 0;
	for (int i = 0; ok && i < n.n_subs; i++) {
		if (strcmp(n.subs[i].jid, norm) == 0 &&
		    (subid == NULL || strcmp(subid, n.subs[i].subid) == 0))
			removed++;
		else
			n.subs[k++] = n.subs[i];
	}
	if (ok && removed == 0) {
		ps_set_err(&e, "cancel", "unexpected-request", "not-subscribed");
		ok = false;
	}
	if (ok) {
		n.n_subs = k;
		if (ps_node_save(l, r->h, &n, r->a) != 0) {
			ps_set_err(&e, "wait", "internal-server-error", NULL);
			ok = false;
		}
	}
	pthread_mutex_unlock(lock);
	if (!ok)
		ps_error(r, &e);
	else
		module_reply(r->c, NULL);
}

/* §5.6 and §5.7: the requester's subscriptions or affiliations. */
static void ps_do_mine(struct ps_req *r, struct xml_node *el, bool subs)
{
	struct ps_node *nodes;
	int count = ps_nodes(r->c->loop, r->h, r->a, &nodes);
	if (count < 0) {
		ps_fail(r, "wait", "internal-server-error", NULL);
		return;
	}
	const char *only = ps_node_attr(el);
	struct xml_node *rp = ps_reply_pubsub(r, NS_PUBSUB);
	struct xml_node *list = xml_add_child(r->a, rp, NS_PUBSUB,
					      subs ? "subscriptions" : "affiliations");
	for (int i = 0; i < count; i++) {
		struct ps_node *n = &nodes[i];
		if (only && strcmp(only, n->name) != 0)
			continue;
		if (subs) {
			for (int k = 0; k < n->n_subs; k++)
				if (bare_eq(n->subs[k].jid, r->from))
					ps_subscription_el(r->a, list, NS_PUBSUB, n->name,
							   n->subs[k].jid, n->subs[k].subid,
							   "subscribed");
		} else {
			const char *aff = ps_aff_of(r->h, n, r->from);
			if (strcmp(aff, "none") == 0)
				continue;
			struct xml_node *af = xml_add_child(r->a, list, NS_PUBSUB, "affiliation");
			xml_set_attr(r->a, af, "node", n->name);
			xml_set_attr(r->a, af, "affiliation", aff);
		}
	}
	module_reply(r->c, rp);
}

/* Whether the requester may create nodes here. */
static bool ps_may_create(struct ps_req *r)
{
	const struct pubsub_host *h = r->h;
	if (h->pep)
		return strcmp(r->from, h->jid) == 0;
	if (word_in_list(h->host->pubsub.admins, r->from))
		return true;
	switch (h->host->pubsub.create) {
	case PUBSUB_CREATE_ALL:
		return true;
	case PUBSUB_CREATE_LOCAL:
		return strcmp(r->c->from->domain, h->host->domain) == 0 &&
		       r->c->from->local[0] != '\0';
	default:
		return false;
	}
}

static void ps_do_create(struct ps_req *r, struct xml_node *el, struct xml_node *ps)
{
	struct loop *l = r->c->loop;
	const struct config_limits *lim = &l->srv->cfg->limits;
	const char *name = ps_node_attr(el);
	bool instant = name == NULL;
	if (instant) {
		char *gen = arena_alloc(r->a, 33);
		random_hex(gen, 16);
		name = gen;
	}
	if (!ps_name_ok(name)) {
		ps_fail(r, "modify", "bad-request", "nodeid-required");
		return;
	}
	if (!ps_may_create(r)) {
		ps_fail(r, "auth", "forbidden", NULL);
		return;
	}
	struct ps_node n;
	struct ps_err e;
	ps_node_defaults(r->h, &n, arena_strdup(r->a, name), r->from, lim->pubsub_max_items);
	struct xml_node *conf = xml_child(ps, NS_PUBSUB, "configure");
	struct xml_node *x = conf ? xml_child(conf, NS_DATA, "x") : NULL;
	if (x && !ps_apply_form(r->a, &n, x, NS_NODE_CONFIG, lim->pubsub_max_items, &e)) {
		ps_error(r, &e);
		return;
	}
	if (!r->h->pep)
		ps_aff_push(r->a, &n, r->from, "owner");
	pthread_mutex_t *lock = ps_lock_of(l, r->h, name);
	pthread_mutex_lock(lock);
	int found = ps_node_load(l, r->h, name, r->a, &(struct ps_node){ 0 });
	bool ok = false;
	if (found != 0)
		ps_set_err(&e, found < 0 ? "wait" : "cancel",
			   found < 0 ? "internal-server-error" : "conflict", NULL);
	else if (ps_room_for_node(l, r->h, r->from, r->a, &e)) {
		ok = ps_node_save(l, r->h, &n, r->a) == 0;
		if (!ok) {
			ps_creator_add(l, r->h, r->from, -1);
			ps_set_err(&e, "wait", "internal-server-error", NULL);
		}
	}
	pthread_mutex_unlock(lock);
	if (!ok) {
		ps_error(r, &e);
		return;
	}
	struct xml_node *rp = NULL;
	if (instant) {
		rp = ps_reply_pubsub(r, NS_PUBSUB);
		struct xml_node *c = xml_add_child(r->a, rp, NS_PUBSUB, "create");
		xml_set_attr(r->a, c, "node", name);
	}
	module_reply(r->c, rp);
}

/* The owner's use cases (§8): loads node name for r, holding its lock in
 * *lock (to be released by the caller) when set changes it; false with
 * *e set when it is missing or r's sender does not own it. */
static bool ps_owned_node(struct ps_req *r, const char *name, bool set, pthread_mutex_t **lock,
			  struct ps_node *n, struct ps_err *e)
{
	struct loop *l = r->c->loop;
	if (set && ps_name_ok(name)) {
		*lock = ps_lock_of(l, r->h, name);
		pthread_mutex_lock(*lock);
	}
	if (!ps_node_get(l, r->h, name, r->a, n, e))
		return false;
	if (!ps_is_owner(r->h, n, r->from)) {
		ps_set_err(e, "auth", "forbidden", NULL);
		return false;
	}
	return true;
}

static void ps_do_configure(struct ps_req *r, struct xml_node *el, bool set)
{
	struct loop *l = r->c->loop;
	const char *name = ps_node_attr(el);
	pthread_mutex_t *lock = NULL;
	struct ps_node n;
	struct ps_err e;
	bool ok = ps_owned_node(r, name, set, &lock, &n, &e);
	struct xml_node *x = set ? xml_child(el, NS_DATA, "x") : NULL;
	const char *xtype = x ? xml_attr(x, "type") : NULL;
	if (ok && set && x == NULL) {
		ps_set_err(&e, "modify", "bad-request", NULL);
		ok = false;
	}
	bool changed = false;
	if (ok && set && (xtype == NULL || strcmp(xtype, "cancel") != 0)) {
		ok = ps_apply_form(r->a, &n, x, NS_NODE_CONFIG, l->srv->cfg->limits.pubsub_max_items,
				   &e);
		if (ok) {
			/* Fewer items kept: the oldest go now. */
			int keep = n.persist ? n.max_items : 1;
			int drop = n.n_ids > keep ? n.n_ids - keep : 0;
			for (int i = 0; i < drop; i++)
				ps_store_item_del(l, r->h, n.name, n.ids[i]);
			n.ids += drop;
			n.n_ids -= drop;
			changed = true;
			if (ps_node_save(l, r->h, &n, r->a) != 0) {
				ps_set_err(&e, "wait", "internal-server-error", NULL);
				ok = false;
			}
		}
	}
	if (lock)
		pthread_mutex_unlock(lock);
	if (!ok) {
		ps_error(r, &e);
		return;
	}
	(void)changed;
	if (set) {
		module_reply(r->c, NULL);
		return;
	}
	struct xml_node *rp = ps_reply_pubsub(r, NS_PUBSUB_OWNER);
	struct xml_node *c = xml_add_child(r->a, rp, NS_PUBSUB_OWNER, "configure");
	xml_set_attr(r->a, c, "node", n.name);
	struct xml_node *form = ps_config_form(r->a, &n);
	form->parent = c;
	c->children = c->last = form;
	module_reply(r->c, rp);
}

static void ps_do_default(struct ps_req *r)
{
	struct ps_node n;
	ps_node_defaults(r->h, &n, "", r->from, r->c->loop->srv->cfg->limits.pubsub_max_items);
	struct xml_node *rp = ps_reply_pubsub(r, NS_PUBSUB_OWNER);
	struct xml_node *d = xml_add_child(r->a, rp, NS_PUBSUB_OWNER, "default");
	struct xml_node *form = ps_config_form(r->a, &n);
	form->parent = d;
	d->children = d->last = form;
	module_reply(r->c, rp);
}

/* Deletes (purge false) or purges node name; who NULL: the server
 * itself. */
static int ps_delete_or_purge(struct loop *l, const struct pubsub_host *h, const char *name,
			      const char *who, bool purge, struct arena *a, struct ps_err *e)
{
	pthread_mutex_t *lock = ps_lock_of(l, h, name);
	pthread_mutex_lock(lock);
	struct ps_node n;
	int rc = -1;
	if (!ps_node_get(l, h, name, a, &n, e))
		goto out;
	if (who != NULL && !ps_is_owner(h, &n, who)) {
		ps_set_err(e, "auth", "forbidden", NULL);
		goto out;
	}
	ps_set_err(e, "wait", "internal-server-error", NULL);
	if (purge) {
		if (ps_store_item_del(l, h, name, NULL) != 0)
			goto out;
		n.n_ids = 0;
		if (ps_node_save(l, h, &n, a) != 0)
			goto out;
	} else if (ps_store_node_del(l, h, name) != 0) {
		goto out;
	}
	rc = 0;
out:
	pthread_mutex_unlock(lock);
	if (rc == 0 && !purge)
		ps_creator_add(l, h, n.creator, -1);
	if (rc == 0 && (purge || n.notify_delete)) {
		struct ps_targets t;
		ps_recipients(l, h, &n, a, &t);
		struct xml_node *ev = xml_new(a, NS_PUBSUB_EVENT, purge ? "purge" : "delete");
		xml_set_attr(a, ev, "node", name);
		ps_send_event(l, h, ev, a, &t);
	}
	return rc;
}

static void ps_do_delete(struct ps_req *r, struct xml_node *el, bool purge)
{
	const char *name = ps_node_attr(el);
	if (!ps_name_ok(name)) {
		ps_fail(r, "modify", "bad-request", "nodeid-required");
		return;
	}
	struct ps_err e;
	if (ps_delete_or_purge(r->c->loop, r->h, name, r->from, purge, r->a, &e) != 0)
		ps_error(r, &e);
	else
		module_reply(r->c, NULL);
}

/* XEP-0060 §8.8.4: the owner changed jid's subscription to state. */
static void ps_tell_subscription(struct loop *l, const struct pubsub_host *h, const char *node,
				 const char *jid, const char *state, struct arena *a)
{
	struct xml_node *m = xml_new(a, NS_CLIENT, "message");
	char id[17];
	random_hex(id, 8);
	xml_set_attr(a, m, "from", h->jid);
	xml_set_attr(a, m, "id", id);
	struct xml_node *ps = xml_add_child(a, m, NS_PUBSUB, "pubsub");
	struct xml_node *sub = xml_add_child(a, ps, NS_PUBSUB, "subscription");
	xml_set_attr(a, sub, "node", node);
	xml_set_attr(a, sub, "jid", jid);
	xml_set_attr(a, sub, "subscription", state);
	ps_send(l, m, a, jid);
}

static const char *const ps_affiliations[] = { "owner", "publisher", "publish-only", "member",
					       "outcast", "none", NULL };

static bool ps_has_owner(const struct ps_node *n)
{
	for (int i = 0; i < n->n_affs; i++)
		if (strcmp(n->affs[i].aff, "owner") == 0)
			return true;
	return false;
}

/* §8.8 and §8.9: the owner manages subscriptions or affiliations. */
static void ps_do_manage(struct ps_req *r, struct xml_node *el, bool subs, bool set)
{
	struct loop *l = r->c->loop;
	const char *name = ps_node_attr(el);
	pthread_mutex_t *lock = NULL;
	struct ps_node n;
	struct ps_err e;
	bool ok = ps_owned_node(r, name, set, &lock, &n, &e);
	/* Subscriptions changed, told to their subscribers once saved: one
	 * per element, or each of an outcast's (full JIDs of one account). */
	size_t n_told = 0;
	const char **told = NULL;
	if (ok && set)
		told = arena_alloc(r->a, (xml_element_count(el) + (size_t)n.n_subs + 1) *
						 sizeof *told * 2);
	for (struct xml_node *c = el->children; ok && set && c; c = c->next) {
		if (!xml_is(c, NS_PUBSUB_OWNER, subs ? "subscription" : "affiliation"))
			continue;
		const char *jid = xml_attr(c, "jid");
		const char *v = xml_attr(c, subs ? "subscription" : "affiliation");
		struct jid j;
		char norm[3 * JID_PART_MAX + 3];
		if (jid == NULL || v == NULL || jid_parse(&j, jid, strlen(jid)) != 0 ||
		    jid_format(&j, norm, sizeof norm) < 0) {
			ps_set_err(&e, "modify", "bad-request", NULL);
			ok = false;
			break;
		}
		if (subs) {
			bool on = strcmp(v, "subscribed") == 0;
			if (!on && strcmp(v, "none") != 0) {
				ps_set_err(&e, "modify", "bad-request", NULL);
				ok = false;
				break;
			}
			int k = 0;
			for (int i = 0; i < n.n_subs; i++)
				if (strcmp(n.subs[i].jid, norm) != 0)
					n.subs[k++] = n.subs[i];
			n.n_subs = k;
			if (on) {
				char subid[17];
				random_hex(subid, 8);
				ps_sub_push(r->a, &n, norm, subid);
			}
			told[2 * n_told] = arena_strdup(r->a, norm);
			told[2 * n_told++ + 1] = on ? "subscribed" : "none";
		} else {
			if (!ps_one_of(v, ps_affiliations) || j.resource[0] != '\0') {
				ps_set_err(&e, "modify", "bad-request", NULL);
				ok = false;
				break;
			}
			/* A PEP node's owner is its account, for good. */
			if (r->h->pep && strcmp(norm, r->h->jid) == 0) {
				ps_set_err(&e, "cancel", "conflict", NULL);
				ok = false;
				break;
			}
			int k = 0;
			for (int i = 0; i < n.n_affs; i++)
				if (strcmp(n.affs[i].jid, norm) != 0)
					n.affs[k++] = n.affs[i];
			n.n_affs = k;
			if (strcmp(v, "none") != 0)
				ps_aff_push(r->a, &n, norm, v);
			/* An outcast may not be subscribed (4.1): its subscriptions
			 * end, and it is told so (8.8.4). */
			if (strcmp(v, "outcast") == 0) {
				k = 0;
				for (int i = 0; i < n.n_subs; i++) {
					if (!bare_eq(n.subs[i].jid, norm)) {
						n.subs[k++] = n.subs[i];
						continue;
					}
					told[2 * n_told] = arena_strdup(r->a, n.subs[i].jid);
					told[2 * n_told++ + 1] = "none";
				}
				n.n_subs = k;
			}
		}
		if (n.n_subs + n.n_affs > l->srv->cfg->limits.pubsub_max_subscriptions) {
			ps_set_err(&e, "wait", "policy-violation", "too-many-subscriptions");
			ok = false;
		}
	}
	/* A node keeps an owner (as a room does, XEP-0045 10.6): without one,
	 * no one could configure, purge or delete it again. */
	if (ok && set && !subs && !r->h->pep && !ps_has_owner(&n)) {
		ps_set_err(&e, "cancel", "conflict", NULL);
		ok = false;
	}
	if (ok && set && ps_node_save(l, r->h, &n, r->a) != 0) {
		ps_set_err(&e, "wait", "internal-server-error", NULL);
		ok = false;
	}
	if (lock)
		pthread_mutex_unlock(lock);
	if (!ok) {
		ps_error(r, &e);
		return;
	}
	if (set) {
		module_reply(r->c, NULL);
		for (size_t i = 0; i < n_told; i++)
			ps_tell_subscription(l, r->h, n.name, told[2 * i], told[2 * i + 1], r->a);
		return;
	}
	struct xml_node *rp = ps_reply_pubsub(r, NS_PUBSUB_OWNER);
	struct xml_node *list = xml_add_child(r->a, rp, NS_PUBSUB_OWNER,
					      subs ? "subscriptions" : "affiliations");
	xml_set_attr(r->a, list, "node", n.name);
	if (subs) {
		for (int i = 0; i < n.n_subs; i++)
			ps_subscription_el(r->a, list, NS_PUBSUB_OWNER, NULL, n.subs[i].jid,
					   n.subs[i].subid, "subscribed");
	} else {
		if (r->h->pep) {
			struct xml_node *af = xml_add_child(r->a, list, NS_PUBSUB_OWNER,
							    "affiliation");
			xml_set_attr(r->a, af, "jid", r->h->jid);
			xml_set_attr(r->a, af, "affiliation", "owner");
		}
		for (int i = 0; i < n.n_affs; i++) {
			struct xml_node *af = xml_add_child(r->a, list, NS_PUBSUB_OWNER,
							    "affiliation");
			xml_set_attr(r->a, af, "jid", n.affs[i].jid);
			xml_set_attr(r->a, af, "affiliation", n.affs[i].aff);
		}
	}
	module_reply(r->c, rp);
}

/* --- discovery of nodes and items --- */

static void ps_disco_info(struct ps_req *r, const char *name)
{
	struct ps_node n;
	struct ps_err e;
	if (!ps_node_get(r->c->loop, r->h, name, r->a, &n, &e) ||
	    !ps_may_access(r->c->loop, r->h, &n, r->from, r->a, &e)) {
		ps_fail(r, "cancel", "item-not-found", NULL);
		return;
	}
	struct xml_node *q = xml_new(r->a, NS_DISCO_INFO, "query");
	xml_set_attr(r->a, q, "node", n.name);
	struct xml_node *id = xml_add_child(r->a, q, NS_DISCO_INFO, "identity");
	xml_set_attr(r->a, id, "category", "pubsub");
	xml_set_attr(r->a, id, "type", "leaf");
	if (n.title)
		xml_set_attr(r->a, id, "name", n.title);
	struct xml_node *f = xml_add_child(r->a, q, NS_DISCO_INFO, "feature");
	xml_set_attr(r->a, f, "var", NS_PUBSUB);
	module_reply(r->c, q);
}

static void ps_disco_items(struct ps_req *r, const char *name)
{
	struct xml_node *q = xml_new(r->a, NS_DISCO_ITEMS, "query");
	struct ps_err e;
	if (name != NULL) {
		struct ps_node n;
		if (!ps_node_get(r->c->loop, r->h, name, r->a, &n, &e) ||
		    !ps_may_access(r->c->loop, r->h, &n, r->from, r->a, &e)) {
			ps_fail(r, "cancel", "item-not-found", NULL);
			return;
		}
		xml_set_attr(r->a, q, "node", n.name);
		for (int i = 0; i < n.n_ids; i++) {
			struct xml_node *it = xml_add_child(r->a, q, NS_DISCO_ITEMS, "item");
			xml_set_attr(r->a, it, "jid", r->h->jid);
			xml_set_attr(r->a, it, "name", n.ids[i]);
		}
		module_reply(r->c, q);
		return;
	}
	struct ps_node *nodes;
	int count = ps_nodes(r->c->loop, r->h, r->a, &nodes);
	if (count < 0) {
		ps_fail(r, "wait", "internal-server-error", NULL);
		return;
	}
	for (int i = 0; i < count; i++) {
		if (!ps_may_access(r->c->loop, r->h, &nodes[i], r->from, r->a, &e))
			continue;
		struct xml_node *it = xml_add_child(r->a, q, NS_DISCO_ITEMS, "item");
		xml_set_attr(r->a, it, "jid", r->h->jid);
		xml_set_attr(r->a, it, "node", nodes[i].name);
		if (nodes[i].title)
			xml_set_attr(r->a, it, "name", nodes[i].title);
	}
	module_reply(r->c, q);
}

/* --- dispatch --- */

/* The verb of a <pubsub/>: its first element child other than the
 * options that go with one. */
static struct xml_node *ps_verb(struct xml_node *ps)
{
	for (struct xml_node *c = ps->children; c; c = c->next) {
		if (c->name == NULL || xml_is(c, NULL, "publish-options") ||
		    xml_is(c, NULL, "configure") || xml_is(c, NULL, "options"))
			continue;
		return c;
	}
	/* <configure/> alone is the owner's verb. */
	return xml_first_element(ps);
}

enum status pubsub_iq(struct iq_ctx *c, const struct pubsub_host *h)
{
	const char *type = xml_attr(c->iq, "type");
	bool set = type && strcmp(type, "set") == 0;
	char from[2 * JID_PART_MAX + 2];
	jid_format_bare(c->from, from, sizeof from);
	struct ps_req r = { .c = c, .h = h, .from = from, .a = c->a };
	struct xml_node *p = c->payload;
	if (xml_is(p, NS_DISCO_INFO, "query")) {
		if (xml_attr(p, "node") == NULL)
			return DECLINED;
		ps_disco_info(&r, xml_attr(p, "node"));
		return OK;
	}
	if (xml_is(p, NS_DISCO_ITEMS, "query")) {
		ps_disco_items(&r, xml_attr(p, "node"));
		return OK;
	}
	bool owner = xml_is(p, NS_PUBSUB_OWNER, "pubsub");
	if (!owner && !xml_is(p, NS_PUBSUB, "pubsub"))
		return DECLINED;
	struct xml_node *v = ps_verb(p);
	const char *verb = v ? v->name : "";
	if (v == NULL || strcmp(v->ns, p->ns) != 0) {
		ps_fail(&r, "modify", "bad-request", NULL);
	} else if (!owner && set && strcmp(verb, "publish") == 0) {
		ps_do_publish(&r, v, p);
	} else if (!owner && set && strcmp(verb, "retract") == 0) {
		ps_do_retract(&r, v);
	} else if (!owner && set && strcmp(verb, "subscribe") == 0) {
		ps_do_subscribe(&r, v);
	} else if (!owner && set && strcmp(verb, "unsubscribe") == 0) {
		ps_do_unsubscribe(&r, v);
	} else if (!owner && set && strcmp(verb, "create") == 0) {
		ps_do_create(&r, v, p);
	} else if (!owner && !set && strcmp(verb, "items") == 0) {
		ps_do_items(&r, v);
	} else if (!owner && !set && strcmp(verb, "subscriptions") == 0) {
		ps_do_mine(&r, v, true);
	} else if (!owner && !set && strcmp(verb, "affiliations") == 0) {
		ps_do_mine(&r, v, false);
	} else if (owner && strcmp(verb, "configure") == 0) {
		ps_do_configure(&r, v, set);
	} else if (owner && !set && strcmp(verb, "default") == 0) {
		ps_do_default(&r);
	} else if (owner && set && strcmp(verb, "delete") == 0) {
		ps_do_delete(&r, v, false);
	} else if (owner && set && strcmp(verb, "purge") == 0) {
		ps_do_delete(&r, v, true);
	} else if (owner && strcmp(verb, "subscriptions") == 0) {
		ps_do_manage(&r, v, true, set);
	} else if (owner && strcmp(verb, "affiliations") == 0) {
		ps_do_manage(&r, v, false, set);
	} else {
		ps_fail(&r, "cancel", "feature-not-implemented", NULL);
	}
	return OK;
}

/* --- for the server's own use --- */

int pubsub_publish_item(struct loop *l, const struct pubsub_host *h, const char *node,
			struct xml_node *item, const struct pubsub_options *opts)
{
	struct arena a;
	arena_init(&a);
	struct ps_err e;
	const char *id;
	int rc = ps_publish(l, h, node, item, h->jid, NULL, opts, true, &a, &e, &id);
	arena_reset(&a);
	return rc;
}

int pubsub_retract_others(struct loop *l, const struct pubsub_host *h, const char *node,
			  const char *const *keep, int n_keep)
{
	struct arena a;
	arena_init(&a);
	struct ps_node n;
	int rc = ps_node_load(l, h, node, &a, &n);
	if (rc > 0) {
		const char **gone = arena_alloc(&a, (size_t)(n.n_ids + 1) * sizeof *gone);
		int k = 0;
		for (int i = 0; i < n.n_ids; i++) {
			bool kept = false;
			for (int j = 0; j < n_keep && !kept; j++)
				kept = strcmp(n.ids[i], keep[j]) == 0;
			if (!kept)
				gone[k++] = n.ids[i];
		}
		struct ps_err e;
		rc = k == 0 ? 0 : ps_retract(l, h, node, gone, k, NULL, true, &a, &e);
	}
	arena_reset(&a);
	return rc < 0 ? -1 : 0;
}

int pubsub_items(struct loop *l, const struct pubsub_host *h, const char *node,
		 struct arena *a, struct xml_node **out, int max)
{
	struct ps_node n;
	int rc = ps_node_load(l, h, node, a, &n);
	if (rc <= 0)
		return rc;
	int k = 0;
	for (int i = 0; i < n.n_ids && k < max; i++) {
		struct xml_node *it = ps_item_load(l, h, node, n.ids[i], a);
		if (it != NULL)
			out[k++] = it;
	}
	return k;
}

void pubsub_send_last(struct loop *l, const struct pubsub_host *h, const struct jid *who)
{
	struct arena a;
	arena_init(&a);
	char full[3 * JID_PART_MAX + 3], bare[2 * JID_PART_MAX + 2];
	jid_format(who, full, sizeof full);
	jid_format_bare(who, bare, sizeof bare);
	struct ps_node *nodes;
	int count = ps_nodes(l, h, &a, &nodes);
	struct ps_err e;
	for (int i = 0; i < count; i++) {
		if (!caps_wants(l->srv, who, nodes[i].name) ||
		    !ps_may_access(l, h, &nodes[i], bare, &a, &e))
			continue;
		ps_send_last_to(l, h, &nodes[i], full, &a);
	}
	arena_reset(&a);
}

void pubsub_owner_gone(struct loop *l, const struct pubsub_host *h, const char *owner)
{
	struct arena a;
	arena_init(&a);
	struct ps_node *nodes;
	int count = ps_nodes(l, h, &a, &nodes);
	for (int i = 0; i < count; i++) {
		struct ps_node *n = &nodes[i];
		int owners = 0;
		bool mine = false, touched = false;
		for (int k = 0; k < n->n_affs; k++) {
			if (strcmp(n->affs[k].aff, "owner") == 0) {
				owners++;
				mine |= strcmp(n->affs[k].jid, owner) == 0;
			}
		}
		if (mine && owners == 1) {
			struct ps_err e;
			ps_delete_or_purge(l, h, n->name, NULL, false, &a, &e);
			continue;
		}
		pthread_mutex_t *lock = ps_lock_of(l, h, n->name);
		pthread_mutex_lock(lock);
		struct ps_node cur;
		if (ps_node_load(l, h, n->name, &a, &cur) == 1) {
			int k = 0;
			for (int j = 0; j < cur.n_affs; j++)
				if (strcmp(cur.affs[j].jid, owner) != 0)
					cur.affs[k++] = cur.affs[j];
			touched |= k != cur.n_affs;
			cur.n_affs = k;
			k = 0;
			for (int j = 0; j < cur.n_subs; j++)
				if (!bare_eq(cur.subs[j].jid, owner))
					cur.subs[k++] = cur.subs[j];
			touched |= k != cur.n_subs;
			cur.n_subs = k;
			if (touched)
				ps_node_save(l, h, &cur, &a);
		}
		pthread_mutex_unlock(lock);
	}
	arena_reset(&a);
}
