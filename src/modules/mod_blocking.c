/* XEP-0191: Blocking Command. The block list is a map store per account
 * ("blocklist": key = the normalised JID of the item, value empty); this
 * file answers <blocklist/>, <block/> and <unblock/>, pushes every change
 * to the account's interested sessions and tells subscribed contacts
 * about it with presence (§3.3, §3.4, §3.5). Enforcement in the delivery
 * path goes through blocking_blocks (blocking.h). */
#include "modules/blocking.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "modules/module.h"
#include "modules/presence.h"
#include "modules/roster.h"
#include "router/deliver.h"
#include "router/router.h"
#include "xml/xml_parse.h"

#define STORE_BLOCKLIST "blocklist"
/* What one list may hold is limits.max_blocklist_items and
 * max_blocklist_size (bytes of the <blocklist/> result); a block past
 * either gets <resource-constraint/>. */
static int blocking_max_items(const struct loop *l)
{
	return l->srv->cfg->limits.max_blocklist_items;
}

/* The bytes an item takes in a <blocklist/> result: <item jid='key'/>. */
static size_t blocking_item_bytes(const char *key)
{
	return sizeof "<item jid=''/>" - 1 + buf_escaped_len(key, strlen(key));
}

#define BARE_MAX (2 * JID_PART_MAX + 2)

/* One item of a request, normalised; strings live in the stanza arena. */
struct block_item {
	const char *key;      /* jid_format of the item: the storage key */
	const char *local;    /* "" when absent */
	const char *domain;
	const char *resource; /* "" when absent */
};

struct item_list {
	struct block_item *v;
	int n;
};

/* --- which accounts have a block list at all ---
 *
 * Every stanza between two accounts asks blocking_blocks twice, and almost
 * every account has an empty list: the answer "empty" is cached per
 * account, server-wide, so the common case is one hash lookup instead of
 * up to four store queries. Changes made here update the cache; a store
 * shared by several nodes will need an invalidation message too. */

#define CACHE_SHARDS 64

enum list_state { LIST_UNKNOWN, LIST_EMPTY, LIST_NONEMPTY };

struct cache_entry {
	struct cache_entry *next;
	enum list_state state;
	char bare[];
};

struct cache_shard {
	pthread_mutex_t lock;
	struct cache_entry **buckets;
	size_t cap, count;
};

struct blocking_cache {
	struct cache_shard shards[CACHE_SHARDS];
};

struct blocking_cache *blocking_cache_new(void)
{
	struct blocking_cache *c = xcalloc(1, sizeof *c);
	for (int i = 0; i < CACHE_SHARDS; i++) {
		pthread_mutex_init(&c->shards[i].lock, NULL);
		c->shards[i].cap = 64;
		c->shards[i].buckets = xcalloc(64, sizeof(struct cache_entry *));
	}
	return c;
}

void blocking_cache_free(struct blocking_cache *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < CACHE_SHARDS; i++) {
		struct cache_shard *sh = &c->shards[i];
		for (size_t b = 0; b < sh->cap; b++) {
			struct cache_entry *e = sh->buckets[b];
			while (e) {
				struct cache_entry *n = e->next;
				free(e);
				e = n;
			}
		}
		free(sh->buckets);
		pthread_mutex_destroy(&sh->lock);
	}
	free(c);
}

static uint64_t cache_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static enum list_state cache_get(struct blocking_cache *c, const char *bare)
{
	uint64_t h = cache_hash(bare);
	struct cache_shard *sh = &c->shards[h % CACHE_SHARDS];
	enum list_state st = LIST_UNKNOWN;
	pthread_mutex_lock(&sh->lock);
	for (struct cache_entry *e = sh->buckets[(h / CACHE_SHARDS) & (sh->cap - 1)]; e; e = e->next)
		if (strcmp(e->bare, bare) == 0) {
			st = e->state;
			break;
		}
	pthread_mutex_unlock(&sh->lock);
	return st;
}

/* Sets the state; with only_if_unknown, a state another loop set since
 * (a block that raced with our count) wins. */
static void cache_set(struct blocking_cache *c, const char *bare, enum list_state st,
		      bool only_if_unknown)
{
	uint64_t h = cache_hash(bare);
	struct cache_shard *sh = &c->shards[h % CACHE_SHARDS];
	pthread_mutex_lock(&sh->lock);
	struct cache_entry **pp = &sh->buckets[(h / CACHE_SHARDS) & (sh->cap - 1)];
	while (*pp && strcmp((*pp)->bare, bare) != 0)
		pp = &(*pp)->next;
	if (*pp != NULL) {
		if (!only_if_unknown || (*pp)->state == LIST_UNKNOWN)
			(*pp)->state = st;
	} else if (st != LIST_UNKNOWN) {
		if (sh->count + 1 > sh->cap) {
			size_t cap = sh->cap * 2;
			struct cache_entry **nb = xcalloc(cap, sizeof *nb);
			for (size_t b = 0; b < sh->cap; b++) {
				struct cache_entry *e = sh->buckets[b];
				while (e) {
					struct cache_entry *n = e->next;
					size_t j = (cache_hash(e->bare) / CACHE_SHARDS) & (cap - 1);
					e->next = nb[j];
					nb[j] = e;
					e = n;
				}
			}
			free(sh->buckets);
			sh->buckets = nb;
			sh->cap = cap;
			pp = &sh->buckets[(h / CACHE_SHARDS) & (cap - 1)];
		}
		size_t n = strlen(bare) + 1;
		struct cache_entry *e = xmalloc(sizeof *e + n);
		e->state = st;
		memcpy(e->bare, bare, n);
		e->next = *pp;
		*pp = e;
		sh->count++;
	}
	pthread_mutex_unlock(&sh->lock);
}

static void count_item(void *arg, const char *key, const void *value, size_t len)
{
	(void)key, (void)value, (void)len;
	(*(int *)arg)++;
}

/* --- the enforcement check --- */

/* Looks key up; 1 blocked, 0 not (or store error, logged). */
static int blocking_lookup(struct loop *l, const char *domain, const char *local,
			   struct buf *key, struct buf *val)
{
	buf_append(key, "", 1);
	int rc = l->srv->storage->map_get(l->store, domain, local, STORE_BLOCKLIST, key->data,
					  val);
	if (rc < 0)
		log_error("blocklist of %s@%s: store error, not enforced", local, domain);
	key->len = 0;
	return rc == 0;
}

bool blocking_blocks(struct loop *l, const char *owner_bare, const struct jid *other)
{
	const char *at = strchr(owner_bare, '@');
	if (at == NULL || at == owner_bare || at - owner_bare > JID_PART_MAX)
		return false;
	char local[JID_PART_MAX + 1];
	memcpy(local, owner_bare, (size_t)(at - owner_bare));
	local[at - owner_bare] = '\0';
	const char *domain = at + 1;
	bool has_local = other->local[0] != '\0';
	bool has_res = other->resource[0] != '\0';
	/* The user's own resources talk to each other whatever the list says. */
	if (has_local && strcmp(other->local, local) == 0 && strcmp(other->domain, domain) == 0)
		return false;
	struct blocking_cache *cache = l->srv->blocking_cache;
	enum list_state st = cache ? cache_get(cache, owner_bare) : LIST_UNKNOWN;
	if (st == LIST_EMPTY)
		return false;
	if (st == LIST_UNKNOWN && cache != NULL) {
		int n = 0;
		if (l->srv->storage->map_list(l->store, domain, local, STORE_BLOCKLIST, count_item,
					      &n) < 0)
			return false;
		cache_set(cache, owner_bare, n == 0 ? LIST_EMPTY : LIST_NONEMPTY, true);
		if (n == 0)
			return false;
	}

	struct buf key, val;
	buf_init(&key);
	buf_init(&val);
	int hit = 0;
	/* XEP-0016 §2.1 order: full, bare, domain/resource, domain. */
	if (has_local && has_res) {
		buf_printf(&key, "%s@%s/%s", other->local, other->domain, other->resource);
		hit = blocking_lookup(l, domain, local, &key, &val);
	}
	if (!hit && has_local) {
		buf_printf(&key, "%s@%s", other->local, other->domain);
		hit = blocking_lookup(l, domain, local, &key, &val);
	}
	if (!hit && has_res) {
		buf_printf(&key, "%s/%s", other->domain, other->resource);
		hit = blocking_lookup(l, domain, local, &key, &val);
	}
	if (!hit) {
		buf_puts(&key, other->domain);
		hit = blocking_lookup(l, domain, local, &key, &val);
	}
	buf_free(&key);
	buf_free(&val);
	return hit;
}

/* --- request parsing --- */

/* Only the account itself may read or change its block list. Answers
 * <forbidden/> and returns false for anyone else. */
static bool blocking_own_account(struct iq_ctx *c)
{
	if (c->to_account && (strcmp(c->to->local, c->from->local) != 0 ||
			      strcmp(c->to->domain, c->from->domain) != 0)) {
		module_error(c, "cancel", "forbidden");
		return false;
	}
	return true;
}

/* Reads the <item jid/> children of c->payload into out, normalised and
 * without duplicates. Returns 0, or -1 after answering the error. */
static int blocking_parse_items(struct iq_ctx *c, struct item_list *out)
{
	int cap = xml_element_count(c->payload);
	out->n = 0;
	out->v = NULL;
	if (cap > blocking_max_items(c->loop)) {
		module_error(c, "wait", "resource-constraint");
		return -1;
	}
	if (cap == 0)
		return 0;
	out->v = arena_alloc(c->a, (size_t)cap * sizeof *out->v);
	/* struct jid is 3 KiB: one on the heap, reused for every item. */
	struct jid *j = xmalloc(sizeof *j);
	char *key = xmalloc(3 * JID_PART_MAX + 3);
	int rc = 0;
	for (struct xml_node *n = c->payload->children; n; n = n->next) {
		if (n->name == NULL)
			continue;
		const char *s = xml_is(n, NS_BLOCKING, "item") ? xml_attr(n, "jid") : NULL;
		if (s == NULL) {
			module_error(c, "modify", "bad-request");
			rc = -1;
			break;
		}
		if (jid_parse(j, s, strlen(s)) != 0 ||
		    jid_format(j, key, 3 * JID_PART_MAX + 3) < 0) {
			module_error(c, "modify", "jid-malformed");
			rc = -1;
			break;
		}
		bool dup = false;
		for (int i = 0; i < out->n && !dup; i++)
			dup = strcmp(out->v[i].key, key) == 0;
		if (dup)
			continue;
		struct block_item *it = &out->v[out->n++];
		it->key = arena_strdup(c->a, key);
		it->local = arena_strdup(c->a, j->local);
		it->domain = arena_strdup(c->a, j->domain);
		it->resource = arena_strdup(c->a, j->resource);
	}
	free(key);
	free(j);
	return rc;
}

/* --- pushes and presence --- */

/* XEP-0191 §3.3/§3.4: the change goes to every session that may hold a
 * copy of the list. The registry knows one kind of interest, the roster
 * fetch (RFC 6121 §2.1.6), and that is what is used. */
static void blocking_push(struct iq_ctx *c, const char *what, const struct item_list *items)
{
	char owner[BARE_MAX];
	struct router_target t[ROUTER_MAX_TARGETS];
	jid_format_bare(c->from, owner, sizeof owner);
	int n = router_find_interested(c->loop->srv->router, owner, ROUTER_WANTS_BLOCKLIST, t,
				       ROUTER_MAX_TARGETS);
	if (n == 0)
		return;
	struct xml_node *iq = xml_new(c->a, NS_CLIENT, "iq");
	char id[24];
	random_hex(id, 6);
	xml_set_attr(c->a, iq, "type", "set");
	xml_set_attr(c->a, iq, "id", id);
	struct xml_node *cmd = xml_add_child(c->a, iq, NS_BLOCKING, what);
	for (int i = 0; i < items->n; i++)
		xml_set_attr(c->a, xml_add_child(c->a, cmd, NS_BLOCKING, "item"), "jid",
			     items->v[i].key);
	deliver_to_targets(c->loop, iq, t, n);
}

struct subscribers {
	const char **jid; /* bare JIDs in the stanza arena */
	int n, cap;
};

static void blocking_collect(void *arg, struct roster_item *it)
{
	struct subscribers *s = arg;
	if (!(it->sub & SUB_FROM))
		return;
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 32;
		s->jid = xrealloc(s->jid, (size_t)s->cap * sizeof *s->jid);
	}
	s->jid[s->n++] = it->jid;
}

/* Whether item designates sessions of the subscriber sub_local@sub_domain;
 * *resource gets the one resource it names ("" for all of them). */
static bool blocking_item_hits(const struct block_item *it, const char *sub_local,
			       const char *sub_domain, const char **resource)
{
	if (strcmp(it->domain, sub_domain) != 0)
		return false;
	if (it->local[0] != '\0' && strcmp(it->local, sub_local) != 0)
		return false;
	*resource = it->resource;
	return true;
}

/* Whether an item of list designates the subscriber at all (want NULL),
 * as a whole (want ""), or with the resource want (a whole hit counts). */
static bool blocking_list_hits(const struct item_list *list, const char *sub_local,
			       const char *sub_domain, const char *want)
{
	const char *res;
	for (int k = 0; k < list->n; k++)
		if (blocking_item_hits(&list->v[k], sub_local, sub_domain, &res) &&
		    (want == NULL || res[0] == '\0' || strcmp(res, want) == 0))
			return true;
	return false;
}

/* Sends every presence in p, or an unavailable one from each of their
 * senders, to the local sessions of contact (bare) or contact/resource. */
static void blocking_send(struct iq_ctx *c, struct refbuf **p, int np, const char *contact,
			  const char *resource, bool unavailable)
{
	struct loop *l = c->loop;
	struct router_target t[ROUTER_MAX_TARGETS];
	int n;
	if (resource[0] != '\0')
		n = router_find_full(l->srv->router, contact, resource, &t[0]) == 0 ? 1 : 0;
	else
		n = router_find_available(l->srv->router, contact, t, ROUTER_MAX_TARGETS);
	if (n == 0)
		return;
	struct buf to;
	buf_init(&to);
	buf_puts(&to, contact);
	if (resource[0] != '\0')
		buf_printf(&to, "/%s", resource);
	buf_append(&to, "", 1);
	for (int i = 0; i < np; i++) {
		struct xml_node *pres = xml_parse_element(c->a, p[i]->data, p[i]->len);
		const char *from = pres ? xml_attr(pres, "from") : NULL;
		if (from == NULL)
			continue;
		if (unavailable) {
			pres = xml_new(c->a, NS_CLIENT, "presence");
			xml_set_attr(c->a, pres, "type", "unavailable");
			xml_set_attr(c->a, pres, "from", from);
		}
		xml_set_attr(c->a, pres, "to", to.data);
		deliver_to_targets(l, pres, t, n);
	}
	buf_free(&to);
}

static void blocking_list_one(void *arg, const char *key, const void *value, size_t len);

struct list_ctx {
	struct arena *a;
	struct xml_node *parent;   /* <blocklist/>, or NULL */
	struct item_list *items;   /* or NULL */
	int cap;
	size_t max_bytes;          /* of the items under parent */
	size_t bytes;
	int left_out;              /* items past max_bytes */
};

/* What one subscriber hears after the change: one stanza per recipient
 * (an item for the bare JID covers every resource; two items may name
 * the same resource). On unblock, whatever the remaining items rest
 * still cover stays silent; when rest names some of the contact's
 * resources, the bare JID is not told at all, since the registry cannot
 * say which resource is which. */
static void blocking_tell(struct iq_ctx *c, struct refbuf **p, int np, const char *contact,
			  const struct item_list *items, const struct item_list *rest,
			  bool blocked)
{
	const char *at = strchr(contact, '@');
	if (at == NULL || at - contact > JID_PART_MAX)
		return;
	const char *sub_domain = at + 1;
	char sub_local[JID_PART_MAX + 1];
	memcpy(sub_local, contact, (size_t)(at - contact));
	sub_local[at - contact] = '\0';
	if (!blocking_list_hits(items, sub_local, sub_domain, NULL))
		return;
	if (config_find_host(c->loop->srv->cfg, sub_domain) == NULL)
		return; /* federation is not built */
	if (blocking_list_hits(items, sub_local, sub_domain, "")) {
		if (blocked || !blocking_list_hits(rest, sub_local, sub_domain, NULL))
			blocking_send(c, p, np, contact, "", blocked);
		return;
	}
	for (int k = 0; k < items->n; k++) {
		const char *res, *r2;
		if (!blocking_item_hits(&items->v[k], sub_local, sub_domain, &res))
			continue;
		bool seen = false;
		for (int m = 0; m < k && !seen; m++)
			seen = blocking_item_hits(&items->v[m], sub_local, sub_domain, &r2) &&
			       strcmp(r2, res) == 0;
		if (seen || (!blocked && blocking_list_hits(rest, sub_local, sub_domain, res)))
			continue;
		blocking_send(c, p, np, contact, res, blocked);
	}
}

/* After a block (blocked true) or unblock of items: subscribed contacts
 * the items cover see the user go offline, or get the current presence
 * back (XEP-0191 §3.3-§3.5). Only roster subscribers ('from' or 'both')
 * are told: others were never entitled to presence, and the server does
 * not track directed presence. Only local contacts are reached. */
static void blocking_presence(struct iq_ctx *c, const struct item_list *items, bool blocked)
{
	struct loop *l = c->loop;
	char owner[BARE_MAX];
	jid_format_bare(c->from, owner, sizeof owner);
	struct refbuf *p[ROUTER_MAX_TARGETS];
	int np = router_get_presences(l->srv->router, owner, p, ROUTER_MAX_TARGETS);
	struct subscribers s = { NULL, 0, 0 };
	struct item_list rest = { NULL, 0 };
	if (np == 0 || items->n == 0)
		goto out;
	if (!blocked) {
		int cap = blocking_max_items(l);
		rest.v = arena_alloc(c->a, (size_t)cap * sizeof *rest.v);
		struct list_ctx x = { c->a, NULL, &rest, cap, 0, 0, 0 };
		if (l->srv->storage->map_list(l->store, c->from->domain, c->from->local,
					      STORE_BLOCKLIST, blocking_list_one, &x) < 0) {
			log_error("blocklist of %s: unreadable, presence not sent", owner);
			goto out;
		}
	}
	if (roster_each(l, owner, c->a, blocking_collect, &s) < 0) {
		log_error("blocklist of %s: roster unreadable, presence not sent", owner);
		goto out;
	}
	for (int i = 0; i < s.n; i++)
		blocking_tell(c, p, np, s.jid[i], items, &rest, blocked);
out:
	free(s.jid);
	for (int i = 0; i < np; i++)
		refbuf_release(p[i]);
}

/* --- the iq handlers --- */

static void blocking_list_one(void *arg, const char *key, const void *value, size_t len)
{
	struct list_ctx *x = arg;
	(void)value, (void)len;
	if (x->parent != NULL) {
		/* Only a list filled before the limits existed gets past
		 * max_bytes: it is answered short rather than built whole. */
		size_t n = blocking_item_bytes(key);
		if (x->left_out == 0 && x->bytes + n <= x->max_bytes) {
			xml_set_attr(x->a, xml_add_child(x->a, x->parent, NS_BLOCKING, "item"),
				     "jid", key);
			x->bytes += n;
		} else {
			x->left_out++;
		}
	}
	if (x->items == NULL || x->items->n == x->cap)
		return;
	/* Items stored by this module are normalised JIDs: split them back
	 * (local and domain hold neither '@' nor '/', a resource may). */
	struct block_item *it = &x->items->v[x->items->n++];
	const char *slash = strchr(key, '/');
	size_t head = slash ? (size_t)(slash - key) : strlen(key);
	const char *at = memchr(key, '@', head);
	it->key = arena_strdup(x->a, key);
	it->local = at ? arena_strndup(x->a, key, (size_t)(at - key)) : "";
	it->domain = at ? arena_strndup(x->a, at + 1, head - (size_t)(at + 1 - key))
			: arena_strndup(x->a, key, head);
	it->resource = slash ? arena_strdup(x->a, slash + 1) : "";
}

struct list_size {
	int n;
	size_t bytes; /* blocking_item_bytes of them all */
};

static void blocking_count_one(void *arg, const char *key, const void *value, size_t len)
{
	struct list_size *sz = arg;
	(void)value, (void)len;
	sz->n++;
	sz->bytes += blocking_item_bytes(key);
}

static enum status blocking_get(struct iq_ctx *c)
{
	if (!blocking_own_account(c))
		return OK;
	presence_mark_interested(c->loop, c->from, ROUTER_WANTS_BLOCKLIST);
	struct xml_node *list = xml_new(c->a, NS_BLOCKING, "blocklist");
	struct list_ctx x = { c->a, list, NULL, 0, c->loop->srv->cfg->limits.max_blocklist_size,
			      0, 0 };
	if (c->loop->srv->storage->map_list(c->loop->store, c->from->domain, c->from->local,
					    STORE_BLOCKLIST, blocking_list_one, &x) < 0) {
		module_error(c, "wait", "internal-server-error");
		return OK;
	}
	if (x.left_out > 0)
		log_warn("blocklist of %s@%s is over limits.max_blocklist_size: %d item(s) "
			 "left out of the result", c->from->local, c->from->domain, x.left_out);
	module_reply(c, list);
	return OK;
}

static enum status blocking_block(struct iq_ctx *c)
{
	const struct storage_driver *sd = c->loop->srv->storage;
	struct storage *st = c->loop->store;
	const char *domain = c->from->domain, *local = c->from->local;
	if (!blocking_own_account(c))
		return OK;
	struct item_list items;
	if (blocking_parse_items(c, &items) != 0)
		return OK;
	if (items.n == 0) {
		module_error(c, "modify", "bad-request");
		return OK;
	}
	for (int i = 0; i < items.n; i++) {
		/* Blocking oneself would only cut the user's own resources off. */
		if (strcmp(items.v[i].local, local) == 0 && strcmp(items.v[i].domain, domain) == 0) {
			module_error(c, "modify", "not-acceptable");
			return OK;
		}
	}
	struct list_size have = { 0, 0 };
	if (sd->map_list(st, domain, local, STORE_BLOCKLIST, blocking_count_one, &have) < 0) {
		module_error(c, "wait", "internal-server-error");
		return OK;
	}
	struct buf val;
	buf_init(&val);
	int added = 0;
	size_t added_bytes = 0;
	for (int i = 0; i < items.n; i++) {
		int rc = sd->map_get(st, domain, local, STORE_BLOCKLIST, items.v[i].key, &val);
		if (rc < 0) {
			buf_free(&val);
			module_error(c, "wait", "internal-server-error");
			return OK;
		}
		added += rc == 1;
		added_bytes += rc == 1 ? blocking_item_bytes(items.v[i].key) : 0;
	}
	buf_free(&val);
	if (added > 0 && (have.n + added > blocking_max_items(c->loop) ||
			  have.bytes + added_bytes > c->loop->srv->cfg->limits.max_blocklist_size)) {
		module_error(c, "wait", "resource-constraint");
		return OK;
	}
	char owner[BARE_MAX];
	snprintf(owner, sizeof owner, "%s@%s", local, domain);
	if (c->loop->srv->blocking_cache)
		cache_set(c->loop->srv->blocking_cache, owner, LIST_NONEMPTY, false);
	for (int i = 0; i < items.n; i++) {
		if (sd->map_put(st, domain, local, STORE_BLOCKLIST, items.v[i].key, "", 0) != 0) {
			/* No transaction: the items before this one stay blocked,
			 * and the next <blocklist/> shows them. */
			module_error(c, "wait", "internal-server-error");
			return OK;
		}
	}
	module_reply(c, NULL);
	blocking_push(c, "block", &items);
	blocking_presence(c, &items, true);
	return OK;
}

static enum status blocking_unblock(struct iq_ctx *c)
{
	const struct storage_driver *sd = c->loop->srv->storage;
	struct storage *st = c->loop->store;
	const char *domain = c->from->domain, *local = c->from->local;
	if (!blocking_own_account(c))
		return OK;
	struct item_list items;
	if (blocking_parse_items(c, &items) != 0)
		return OK;
	struct item_list removed = items;
	if (items.n == 0) {
		/* §3.5: everything goes; keep what it was for the presence. */
		int cap = blocking_max_items(c->loop);
		removed.v = arena_alloc(c->a, (size_t)cap * sizeof *removed.v);
		struct list_ctx x = { c->a, NULL, &removed, cap, 0, 0, 0 };
		if (sd->map_list(st, domain, local, STORE_BLOCKLIST, blocking_list_one, &x) < 0 ||
		    sd->map_del(st, domain, local, STORE_BLOCKLIST, NULL) < 0) {
			module_error(c, "wait", "internal-server-error");
			return OK;
		}
	} else {
		for (int i = 0; i < items.n; i++) {
			if (sd->map_del(st, domain, local, STORE_BLOCKLIST, items.v[i].key) < 0) {
				module_error(c, "wait", "internal-server-error");
				return OK;
			}
		}
	}
	char owner[BARE_MAX];
	snprintf(owner, sizeof owner, "%s@%s", local, domain);
	if (c->loop->srv->blocking_cache)
		cache_set(c->loop->srv->blocking_cache, owner, LIST_UNKNOWN, false);
	module_reply(c, NULL);
	blocking_push(c, "unblock", &items);
	blocking_presence(c, &removed, false);
	return OK;
}

static const char *const features[] = { NS_BLOCKING, NULL };

static const struct module_iq iqs[] = {
	{ "get", NS_BLOCKING, "blocklist", IQ_ACCOUNT, blocking_get },
	{ "set", NS_BLOCKING, "block", IQ_ACCOUNT, blocking_block },
	{ "set", NS_BLOCKING, "unblock", IQ_ACCOUNT, blocking_unblock },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_blocking = { "blocking", features, iqs, NULL, NULL };
