/* jabber:iq:roster: storage, get/set, pushes, versioning. */
#include "modules/roster.h"

#include <pthread.h>
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

/* Stored form, cheap to read on every presence broadcast (no XML):
 * three flag characters (subscription 0-3; ask and managed as the bits of
 * 0-3, so that items stored before managed existed, 0/1, read unmanaged;
 * approved 0/1), then the name and each group, each NUL terminated (an
 * empty name is none). */
static void item_encode(const struct roster_item *it, struct buf *out)
{
	char flags[3] = { (char)('0' + (it->sub & 3)),
			  (char)('0' + (it->ask ? 1 : 0) + (it->managed ? 2 : 0)),
			  it->approved ? '1' : '0' };
	buf_append(out, flags, 3);
	const char *name = it->name ? it->name : "";
	buf_append(out, name, strlen(name) + 1);
	for (int i = 0; i < it->n_groups; i++)
		buf_append(out, it->groups[i], strlen(it->groups[i]) + 1);
}

/* Items stored by natter before the compact form were the <item/> XML
 * itself; they are still read (and rewritten compact at their next change). */
static int item_decode_xml(struct arena *a, const char *jid, const char *v, size_t len,
			   struct roster_item *out)
{
	struct xml_node *n = xml_parse_element(a, v, len);
	if (n == NULL)
		return -1;
	memset(out, 0, sizeof *out);
	out->jid = arena_strdup(a, jid);
	const char *sub = xml_attr(n, "subscription");
	if (sub && (strcmp(sub, "to") == 0 || strcmp(sub, "both") == 0))
		out->sub |= SUB_TO;
	if (sub && (strcmp(sub, "from") == 0 || strcmp(sub, "both") == 0))
		out->sub |= SUB_FROM;
	const char *ask = xml_attr(n, "ask"), *approved = xml_attr(n, "approved");
	out->ask = ask && strcmp(ask, "subscribe") == 0;
	out->approved = approved && strcmp(approved, "true") == 0;
	out->name = xml_attr(n, "name");
	out->groups = arena_alloc(a, (size_t)(xml_element_count(n) + 1) * sizeof *out->groups);
	for (struct xml_node *g = n->children; g; g = g->next)
		if (g->name != NULL && strcmp(g->name, "group") == 0)
			out->groups[out->n_groups++] = xml_text(a, g);
	return 0;
}

static int item_decode(struct arena *a, const char *jid, const char *v, size_t len,
		       struct roster_item *out)
{
	if (len > 0 && v[0] == '<')
		return item_decode_xml(a, jid, v, len, out);
	if (len < 4 || v[len - 1] != '\0' || v[0] < '0' || v[0] > '3' || v[1] < '0' ||
	    v[1] > '3')
		return -1;
	memset(out, 0, sizeof *out);
	out->jid = arena_strdup(a, jid);
	out->sub = (unsigned)(v[0] - '0');
	out->ask = (v[1] - '0') & 1;
	out->managed = (v[1] - '0') & 2;
	out->approved = v[2] == '1';
	size_t off = 3;
	size_t n = strlen(v + off);
	if (n > 0)
		out->name = arena_strndup(a, v + off, n);
	off += n + 1;
	int count = 0;
	for (size_t p = off; p < len; p += strlen(v + p) + 1)
		count++;
	out->groups = arena_alloc(a, (size_t)(count ? count : 1) * sizeof *out->groups);
	for (; off < len; off += strlen(v + off) + 1)
		out->groups[out->n_groups++] = arena_strdup(a, v + off);
	return 0;
}

struct xml_node *roster_item_node(struct arena *a, const struct roster_item *it)
{
	static const char *const subs[] = { "none", "to", "from", "both" };
	struct xml_node *n = xml_new(a, NS_ROSTER, "item");
	xml_set_attr(a, n, "jid", it->jid);
	if (it->name != NULL)
		xml_set_attr(a, n, "name", it->name);
	xml_set_attr(a, n, "subscription", subs[it->sub & 3]);
	if (it->ask)
		xml_set_attr(a, n, "ask", "subscribe");
	if (it->approved)
		xml_set_attr(a, n, "approved", "true");
	for (int i = 0; i < it->n_groups; i++)
		xml_add_text(a, xml_add_child(a, n, NS_ROSTER, "group"), it->groups[i],
			     strlen(it->groups[i]));
	return n;
}

static pthread_mutex_t *lock_of(struct loop *l, const char *owner)
{
	uint32_t h = str_hash(owner);
	size_t n = sizeof l->srv->roster_locks / sizeof *l->srv->roster_locks;
	return &l->srv->roster_locks[h % n];
}

void roster_lock(struct loop *l, const char *owner) { pthread_mutex_lock(lock_of(l, owner)); }

void roster_unlock(struct loop *l, const char *owner) { pthread_mutex_unlock(lock_of(l, owner)); }

void roster_new_item(struct arena *a, const char *contact, struct roster_item *out)
{
	memset(out, 0, sizeof *out);
	out->jid = arena_strdup(a, contact);
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
		if (item_decode(a, contact, b.data, b.len, out) == 0)
			result = 1;
		else
			log_error("roster of %s: unreadable item for %s", owner, contact);
	}
	buf_free(&b);
	return result;
}

static long long read_version(struct loop *l, const char *domain, const char *local)
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

static long long bump_version(struct loop *l, const char *domain, const char *local)
{
	long long ver = read_version(l, domain, local) + 1;
	char s[32];
	int n = snprintf(s, sizeof s, "%lld", ver);
	l->srv->storage->map_put(l->store, domain, local, STORE_META, "ver", s, (size_t)n);
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
	item->parent = q;
	item->next = NULL;
	q->children = q->last = item;
	deliver_to_targets(l, iq, t, n);
}

int roster_save(struct loop *l, const char *owner, struct roster_item *it, struct arena *a)
{
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	if (split_bare(owner, local, domain) != 0)
		return -1;
	struct buf b;
	buf_init(&b);
	item_encode(it, &b);
	int rc = l->srv->storage->map_put(l->store, domain, local, STORE_ROSTER, it->jid, b.data,
					  b.len);
	buf_free(&b);
	if (rc != 0)
		return -1;
	push(l, owner, roster_item_node(a, it), bump_version(l, domain, local), a);
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
	struct roster_item it;
	if (item_decode(c->a, key, value, len, &it) == 0)
		c->fn(c->arg, &it);
}

/* What roster_each reads at most, in stored bytes. A roster within
 * limits.max_roster_size is smaller stored than sent (each item as a
 * compact string, roster_item_size), so this never cuts one short; it
 * bounds the work on a roster filled before the limit existed. Twice the
 * limit leaves room for items still stored as XML (item_decode_xml). */
static size_t read_budget(struct loop *l)
{
	return 2 * l->srv->cfg->limits.max_roster_size;
}

int roster_each(struct loop *l, const char *owner, struct arena *a,
		void (*fn)(void *arg, struct roster_item *it), void *arg)
{
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	if (split_bare(owner, local, domain) != 0)
		return -1;
	struct each_ctx c = { a, fn, arg };
	return l->srv->storage->map_list_max(l->store, domain, local, STORE_ROSTER,
					     read_budget(l), each_entry, &c);
}

/* The bytes the item takes in a roster result. */
static size_t item_bytes(const struct roster_item *it, struct arena *a, struct buf *b)
{
	b->len = 0;
	xml_serialize(roster_item_node(a, it), NS_ROSTER, b);
	return b->len;
}

size_t roster_item_size(const struct roster_item *it, struct arena *scratch, struct buf *b)
{
	/* The largest the subscription state can make it: what the user
	 * stores is counted once, whatever the contact does later. */
	struct roster_item worst = *it;
	worst.sub = SUB_TO | SUB_FROM;
	worst.ask = true;
	worst.approved = true;
	return item_bytes(&worst, scratch, b);
}

struct measure_ctx {
	const char *skip;  /* the item being replaced */
	struct arena *a;
	struct buf b;
	size_t total;      /* roster_item_size of the others */
};

static void measure_one(void *arg, const char *key, const void *value, size_t len)
{
	struct measure_ctx *m = arg;
	struct roster_item it;
	if (strcmp(key, m->skip) != 0 && item_decode(m->a, key, value, len, &it) == 0)
		m->total += roster_item_size(&it, m->a, &m->b);
}

/* roster_room for an item of need bytes that is new (found false) or
 * grows: counts and measures the rest of the roster. */
static int room_for(struct loop *l, const char *domain, const char *local,
		    struct measure_ctx *m, size_t need, bool found)
{
	const struct config_limits *lim = &l->srv->cfg->limits;
	const struct storage_driver *drv = l->srv->storage;
	long long stored;
	int count = drv->map_size(l->store, domain, local, STORE_ROSTER, &stored);
	if (count < 0)
		return -1;
	if (!found && count >= lim->max_roster_items)
		return 0;
	if ((unsigned long long)stored > read_budget(l))
		return 0; /* filled before the limit: far over it */
	if (drv->map_list_max(l->store, domain, local, STORE_ROSTER, read_budget(l), measure_one,
			      m) < 0)
		return -1;
	return m->total + need <= lim->max_roster_size;
}

int roster_room(struct loop *l, const char *owner, const struct roster_item *it)
{
	char local[JID_PART_MAX + 1], domain[JID_PART_MAX + 1];
	if (split_bare(owner, local, domain) != 0)
		return -1;
	struct arena a;
	arena_init(&a);
	struct measure_ctx m = { .skip = it->jid, .a = &a };
	buf_init(&m.b);
	struct roster_item old;
	int found = roster_load(l, owner, it->jid, &a, &old);
	size_t need = roster_item_size(it, &a, &m.b);
	int rc;
	if (found < 0)
		rc = -1;
	else if (found == 1 && need <= roster_item_size(&old, &a, &m.b))
		rc = 1; /* not larger: allowed, so that a roster over the limit can be tidied */
	else
		rc = room_for(l, domain, local, &m, need, found == 1);
	buf_free(&m.b);
	arena_reset(&a);
	return rc;
}

/* --- the iq handler --- */

struct result_ctx {
	struct iq_ctx *c;
	struct xml_node *q;
	struct buf b;      /* scratch, to measure each item */
	size_t total;      /* bytes of the items added */
	int left_out;      /* items past limits.max_roster_size */
};

/* Items are added in key order until the result would pass
 * limits.max_roster_size; only a roster filled before that limit existed
 * gets there, and it is answered short rather than built whole. */
static void add_to_result(void *arg, struct roster_item *it)
{
	struct result_ctx *r = arg;
	if (r->left_out > 0) {
		r->left_out++;
		return;
	}
	struct xml_node *item = roster_item_node(r->c->a, it);
	r->b.len = 0;
	xml_serialize(item, NS_ROSTER, &r->b);
	if (r->total + r->b.len > r->c->loop->srv->cfg->limits.max_roster_size) {
		r->left_out = 1;
		return;
	}
	r->total += r->b.len;
	item->parent = r->q;
	if (r->q->last)
		r->q->last->next = item;
	else
		r->q->children = item;
	r->q->last = item;
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
	long long ver = read_version(c->loop, c->from->domain, c->from->local);
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
	struct result_ctx r = { .c = c, .q = q };
	buf_init(&r.b);
	int n = roster_each(c->loop, owner, c->a, add_to_result, &r);
	buf_free(&r.b);
	if (n < 0) {
		module_error(c, "wait", "internal-server-error");
		return OK;
	}
	long long stored;
	int all = c->loop->srv->storage->map_size(c->loop->store, c->from->domain,
						  c->from->local, STORE_ROSTER, &stored);
	if (r.left_out > 0 || all > n)
		log_warn("roster of %s is over limits.max_roster_size: %d of its %d items "
			 "sent; it takes no new items until it is smaller",
			 owner, n - r.left_out, all);
	module_reply(c, q);
	return OK;
}

/* Whether a and b have the same name and the same set of groups. */
static bool same_name_groups(const struct roster_item *a, const struct roster_item *b)
{
	if ((a->name == NULL) != (b->name == NULL) ||
	    (a->name != NULL && strcmp(a->name, b->name) != 0) || a->n_groups != b->n_groups)
		return false;
	for (int i = 0; i < a->n_groups; i++) {
		int k = 0;
		while (k < b->n_groups && strcmp(a->groups[i], b->groups[k]) != 0)
			k++;
		if (k == b->n_groups)
			return false;
	}
	return true;
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
		/* Checked and removed under the lock, so that an item the
		 * directory adopts meanwhile is not lost; the subscriptions are
		 * cancelled after, as they take the contact's lock. */
		roster_lock(c->loop, owner);
		found = roster_load(c->loop, owner, cbare, c->a, &it);
		if (found == 1 && it.managed) {
			roster_unlock(c->loop, owner);
			module_error(c, "cancel", "not-allowed");
			return OK;
		}
		if (found == 1 && roster_remove(c->loop, owner, cbare, c->a) != 0)
			found = -1;
		roster_unlock(c->loop, owner);
		if (found != 1) {
			module_error(c, found < 0 ? "wait" : "modify",
				     found < 0 ? "internal-server-error" : "item-not-found");
			return OK;
		}
		module_reply(c, NULL);
		presence_roster_removed(c->loop, c->from, &it, c->a);
		return OK;
	}
	if (found == 0)
		roster_new_item(c->a, cbare, &it);
	/* The client sets name and groups; subscription state is ours.
	 * RFC 6121 §2.3.3: a name or group over the server's limits is
	 * not-acceptable; so are more groups than it keeps on one item. */
	const struct config_limits *lim = &c->loop->srv->cfg->limits;
	const char *name = xml_attr(req, "name");
	if ((name != NULL && strlen(name) > lim->max_roster_name_size) ||
	    xml_element_count(req) > lim->max_roster_groups) {
		module_error(c, "modify", "not-acceptable");
		return OK;
	}
	it.name = name != NULL && name[0] != '\0' ? name : NULL;
	it.n_groups = 0;
	it.groups = arena_alloc(c->a, (size_t)(xml_element_count(req) + 1) * sizeof *it.groups);
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
		for (int k = 0; k < it.n_groups; k++) {
			if (strcmp(it.groups[k], gname) == 0) {
				module_error(c, "modify", "bad-request");
				return OK;
			}
		}
		it.groups[it.n_groups++] = gname;
	}
	/* Measured before the lock: the size does not depend on the
	 * subscription state (roster_item_size). */
	int room = roster_room(c->loop, owner, &it);
	if (room <= 0) {
		module_error(c, "wait", room < 0 ? "internal-server-error" : "resource-constraint");
		return OK;
	}
	/* The subscription state may have changed since it was read (another
	 * loop handling the contact's answer): take it fresh, under the lock. */
	roster_lock(c->loop, owner);
	struct roster_item updated;
	if (roster_load(c->loop, owner, cbare, c->a, &updated) != 1)
		roster_new_item(c->a, cbare, &updated);
	if (updated.managed) {
		/* The directory owns the item: setting it as it is succeeds,
		 * anything else would be undone at the next refresh. */
		bool same = same_name_groups(&updated, &it);
		roster_unlock(c->loop, owner);
		if (same)
			module_reply(c, NULL);
		else
			module_error(c, "cancel", "not-allowed");
		return OK;
	}
	updated.name = it.name;
	updated.groups = it.groups;
	updated.n_groups = it.n_groups;
	int rc = roster_save(c->loop, owner, &updated, c->a);
	roster_unlock(c->loop, owner);
	if (rc != 0) {
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

const struct module mod_roster = { .name = "roster", .features = features, .iqs = iqs };
