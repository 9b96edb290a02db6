#include "modules/presence.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/server.h"
#include "modules/blocking.h"
#include "modules/offline.h"
#include "modules/pubsub_service.h"
#include "muc/muc.h"
#include "router/hooks.h"
#include "router/deliver.h"
#include "router/router.h"
#include "s2s/s2s.h"
#include "xml/xml_parse.h"

#define STORE_SUB_IN "sub_in"   /* pending inbound requests, by contact */
#define STORE_ACCOUNT "account" /* "last": logout time and status */

enum sub_type { SUBSCRIBE, SUBSCRIBED, UNSUBSCRIBE, UNSUBSCRIBED };
static const char *const sub_names[] = { "subscribe", "subscribed", "unsubscribe",
					 "unsubscribed" };

static void inbound_sub(struct loop *l, const char *owner, const char *contact,
			enum sub_type type, struct arena *a);
static void note_last_activity(struct loop *l, const struct jid *who);

/* The domain part of a JID string, bare or full: a resource may hold an
 * '@' of its own, so the local part ends before the first '/'. */
static void domain_of(const char *jid, char *out, size_t cap)
{
	const char *slash = strchr(jid, '/');
	size_t end = slash ? (size_t)(slash - jid) : strlen(jid);
	const char *at = memchr(jid, '@', end);
	const char *d = at ? at + 1 : jid;
	size_t n = (size_t)(jid + end - d);
	if (n >= cap)
		n = cap - 1;
	memcpy(out, d, n);
	out[n] = '\0';
}

/* Whether the JID (bare or full) is on one of our hosts; anything else
 * goes over s2s. */
static bool is_local(struct loop *l, const char *jid)
{
	char domain[JID_PART_MAX + 1];
	domain_of(jid, domain, sizeof domain);
	return config_find_host(l->srv->cfg, domain) != NULL;
}

static void split(const char *bare, char *local, size_t lcap, const char **domain)
{
	const char *at = strchr(bare, '@');
	size_t n = at ? (size_t)(at - bare) : 0;
	if (n >= lcap)
		n = lcap - 1;
	memcpy(local, bare, n);
	local[n] = '\0';
	*domain = at ? at + 1 : bare;
}

/* A copy of presence bytes P ("<presence ...") with a 'to' attribute:
 * fan-out serialises once and only splices the address in. */
static struct refbuf *with_to(const char *p, size_t len, const char *to)
{
	static const char head[] = "<presence";
	struct buf b;
	buf_init(&b);
	if (len < sizeof head - 1 || memcmp(p, head, sizeof head - 1) != 0)
		return refbuf_new(p, len);
	buf_puts(&b, "<presence to='");
	buf_append_escaped(&b, to, strlen(to));
	buf_puts(&b, "'");
	buf_append(&b, p + sizeof head - 1, len - (sizeof head - 1));
	struct refbuf *r = refbuf_new(b.data, b.len);
	buf_free(&b);
	return r;
}

/* <presence type='type' from='from'/>, without 'to', into b (initialised
 * here; the caller frees it). */
static void simple_presence(struct buf *b, const char *type, const char *from)
{
	buf_init(b);
	buf_printf(b, "<presence type='%s' from='", type);
	buf_append_escaped(b, from, strlen(from));
	buf_puts(b, "'/>");
}

/* Presence bytes P (without 'to') from sender, a local JID, to recipient
 * on a remote domain, over the link between the two domains. The s2s
 * layer takes its own reference; nothing bounces. */
static void send_remote(struct loop *l, const char *sender, const char *recipient, const char *p,
			size_t len)
{
	char local_domain[JID_PART_MAX + 1], remote_domain[JID_PART_MAX + 1];
	domain_of(sender, local_domain, sizeof local_domain);
	domain_of(recipient, remote_domain, sizeof remote_domain);
	struct refbuf *r = with_to(p, len, recipient);
	s2s_send_bytes(l, local_domain, remote_domain, r);
	refbuf_release(r);
}

/* Sends P (with to=recipient) to every available session of recipient,
 * except the session skip. */
static void send_to_available(struct loop *l, const char *recipient, const char *p, size_t len,
			      uint64_t skip)
{
	struct router_target t[ROUTER_MAX_TARGETS];
	int n = router_find_available(l->srv->router, recipient, t, ROUTER_MAX_TARGETS);
	struct refbuf *bytes = NULL;
	for (int i = 0; i < n; i++) {
		if (t[i].session == skip)
			continue;
		if (bytes == NULL)
			bytes = with_to(p, len, recipient);
		deliver_to_session(l, &t[i], bytes);
	}
	refbuf_release(bytes);
}

/* A subscription stanza from contact, delivered to owner's available
 * sessions. */
static void deliver_sub_stanza(struct loop *l, const char *owner, const char *contact,
			       enum sub_type type)
{
	struct buf b;
	simple_presence(&b, sub_names[type], contact);
	send_to_available(l, owner, b.data, b.len, 0);
	buf_free(&b);
}

/* Presence bytes P (without 'to') from sender, a local JID: to every
 * available session of a local recipient, or over s2s to a remote one. */
static void send_presence_to(struct loop *l, const char *sender, const char *recipient,
			     const char *p, size_t len)
{
	if (is_local(l, recipient))
		send_to_available(l, recipient, p, len, 0);
	else
		send_remote(l, sender, recipient, p, len);
}

/* <presence type='unavailable' from='from'/> to recipient: its available
 * sessions if local, over s2s if remote (from is then a local JID). */
static void send_unavailable(struct loop *l, const char *from, const char *recipient)
{
	struct buf b;
	simple_presence(&b, "unavailable", from);
	send_presence_to(l, from, recipient, b.data, b.len);
	buf_free(&b);
}

/* The current presence of every available session of from_bare goes to
 * recipient (a local account's available sessions, or a remote JID, bare
 * or full, over s2s); with unavailable set, an unavailable presence from
 * each of those resources instead. Returns how many resources that was:
 * always 0 for a remote from_bare, whose presence the registry lacks. */
static int send_presences(struct loop *l, const char *from_bare, const char *recipient,
			  bool unavailable, struct arena *a)
{
	struct refbuf *p[ROUTER_MAX_TARGETS];
	int n = router_get_presences(l->srv->router, from_bare, p, ROUTER_MAX_TARGETS);
	for (int i = 0; i < n; i++) {
		if (!unavailable) {
			send_presence_to(l, from_bare, recipient, p[i]->data, p[i]->len);
		} else {
			struct xml_node *pres = xml_parse_element(a, p[i]->data, p[i]->len);
			const char *from = pres ? xml_attr(pres, "from") : NULL;
			if (from != NULL)
				send_unavailable(l, from, recipient);
		}
		refbuf_release(p[i]);
	}
	return n;
}

static int sub_in_get(struct loop *l, const char *owner, const char *contact)
{
	char local[JID_PART_MAX + 1];
	const char *domain;
	split(owner, local, sizeof local, &domain);
	struct buf b;
	buf_init(&b);
	int rc = l->srv->storage->map_get(l->store, domain, local, STORE_SUB_IN, contact, &b);
	buf_free(&b);
	return rc == 0;
}

/* Anyone, on any domain, may ask: the pending requests of one account are
 * kept within the roster's limits (limits.max_roster_items, and
 * max_roster_size of JIDs), and each is shown again at every login. A
 * request past them is dropped, as a server may (RFC 6121 §3.1.3). */
static void sub_in_set(struct loop *l, const char *owner, const char *contact, bool on)
{
	const struct config_limits *lim = &l->srv->cfg->limits;
	const struct storage_driver *drv = l->srv->storage;
	char local[JID_PART_MAX + 1];
	const char *domain;
	split(owner, local, sizeof local, &domain);
	if (!on) {
		drv->map_del(l->store, domain, local, STORE_SUB_IN, contact);
		return;
	}
	long long bytes;
	int n = drv->map_size(l->store, domain, local, STORE_SUB_IN, &bytes);
	if (n < 0 || (!sub_in_get(l, owner, contact) &&
		      (n >= lim->max_roster_items ||
		       (unsigned long long)bytes + strlen(contact) > lim->max_roster_size))) {
		log_warn("subscription request from %s to %s dropped: %d requests pending",
			 contact, owner, n);
		return;
	}
	drv->map_put(l->store, domain, local, STORE_SUB_IN, contact, "", 0);
}

/* Hands a subscription stanza from owner to contact's side. */
static void route_sub(struct loop *l, const char *owner, const char *contact,
		      enum sub_type type, struct arena *a)
{
	if (is_local(l, contact)) {
		inbound_sub(l, contact, owner, type, a);
		return;
	}
	/* RFC 6121 §3: stamped with the user's bare JID. */
	struct buf b;
	simple_presence(&b, sub_names[type], owner);
	send_remote(l, owner, contact, b.data, b.len);
	buf_free(&b);
}

/* What a subscription stanza does besides changing rosters. The rosters
 * change under the owner's roster lock (roster_lock); these run after it
 * is released, since they reach the other account's side, which takes its
 * own lock. */
enum sub_act { ACT_ROUTE, ACT_PRESENCE, ACT_DELIVER };

struct sub_actions {
	int n;
	struct {
		enum sub_act kind;
		enum sub_type type;  /* ACT_ROUTE, ACT_DELIVER */
		bool unavailable;    /* ACT_PRESENCE */
		bool reverse;        /* ACT_PRESENCE: contact's presence to owner */
	} v[4];
};

static void act(struct sub_actions *acts, enum sub_act kind, enum sub_type type,
		bool unavailable, bool reverse)
{
	acts->v[acts->n].kind = kind;
	acts->v[acts->n].type = type;
	acts->v[acts->n].unavailable = unavailable;
	acts->v[acts->n].reverse = reverse;
	acts->n++;
}

static void run_actions(struct loop *l, const char *owner, const char *contact,
			const struct sub_actions *acts, struct arena *a)
{
	for (int i = 0; i < acts->n; i++) {
		switch (acts->v[i].kind) {
		case ACT_ROUTE:
			route_sub(l, owner, contact, acts->v[i].type, a);
			break;
		case ACT_PRESENCE:
			if (acts->v[i].reverse)
				send_presences(l, contact, owner, acts->v[i].unavailable, a);
			else
				send_presences(l, owner, contact, acts->v[i].unavailable, a);
			break;
		case ACT_DELIVER:
			deliver_sub_stanza(l, owner, contact, acts->v[i].type);
			break;
		}
	}
}

/* RFC 6121 §3: the user's side of a subscription stanza it sends. Called
 * with owner's roster locked. */
static void outbound_rules(struct loop *l, const char *owner, const char *contact,
			   enum sub_type type, struct arena *a, struct sub_actions *acts)
{
	struct roster_item it;
	int found = roster_load(l, owner, contact, a, &it);
	if (found < 0)
		return;
	if (found && it.managed && (type == UNSUBSCRIBE || type == UNSUBSCRIBED))
		return; /* the directory's groups decide (groups.h): ignored */
	switch (type) {
	case SUBSCRIBE:
		if (!found)
			roster_new_item(a, contact, &it);
		if (!(it.sub & SUB_TO) && !it.ask) {
			it.ask = true;
			roster_save(l, owner, &it, a);
		}
		act(acts, ACT_ROUTE, SUBSCRIBE, false, false);
		break;
	case SUBSCRIBED:
		if (sub_in_get(l, owner, contact)) {
			sub_in_set(l, owner, contact, false);
			if (!found)
				roster_new_item(a, contact, &it);
			it.sub |= SUB_FROM;
			it.approved = false;
			roster_save(l, owner, &it, a);
			act(acts, ACT_ROUTE, SUBSCRIBED, false, false);
			act(acts, ACT_PRESENCE, SUBSCRIBED, false, false);
		} else if (!found || !(it.sub & SUB_FROM)) {
			/* Pre-approval (RFC 6121 §3.4). */
			if (!found)
				roster_new_item(a, contact, &it);
			if (!it.approved) {
				it.approved = true;
				roster_save(l, owner, &it, a);
			}
		}
		break;
	case UNSUBSCRIBE:
		if (found && ((it.sub & SUB_TO) || it.ask)) {
			it.sub &= ~SUB_TO;
			it.ask = false;
			roster_save(l, owner, &it, a);
		}
		act(acts, ACT_ROUTE, UNSUBSCRIBE, false, false);
		break;
	case UNSUBSCRIBED: {
		bool pending = sub_in_get(l, owner, contact);
		bool had_from = found && (it.sub & SUB_FROM);
		if (pending)
			sub_in_set(l, owner, contact, false);
		if (found && (had_from || it.approved)) {
			it.sub &= ~SUB_FROM;
			it.approved = false;
			roster_save(l, owner, &it, a);
		}
		if (pending || had_from) {
			act(acts, ACT_ROUTE, UNSUBSCRIBED, false, false);
			act(acts, ACT_PRESENCE, UNSUBSCRIBED, true, false);
		}
		break;
	}
	}
}

/* Whether a subscription stanza from owner may go ahead: subscribe and
 * subscribed (pre-approval) add an item for a contact not in the roster,
 * which must fit limits.max_roster_items and max_roster_size like one the
 * client sets. Returns false when the roster is full (or unreadable). */
static bool outbound_room(struct loop *l, const char *owner, const char *contact,
			  enum sub_type type, struct arena *a)
{
	if (type != SUBSCRIBE && type != SUBSCRIBED)
		return true;
	struct roster_item it;
	roster_new_item(a, contact, &it);
	return roster_room(l, owner, &it) == 1;
}

static void outbound_sub(struct loop *l, const char *owner, const char *contact,
			 enum sub_type type, struct arena *a)
{
	struct sub_actions acts = { 0 };
	roster_lock(l, owner);
	outbound_rules(l, owner, contact, type, a, &acts);
	roster_unlock(l, owner);
	run_actions(l, owner, contact, &acts, a);
}

/* RFC 6121 §3: the contact's side, for a local owner receiving a
 * subscription stanza from contact. Called with owner's roster locked. */
static void inbound_rules(struct loop *l, const char *owner, const char *contact,
			  enum sub_type type, struct arena *a, struct sub_actions *acts)
{
	char local[JID_PART_MAX + 1];
	const char *domain;
	split(owner, local, sizeof local, &domain);
	if (deliver_account_exists(l, domain, local) != 1) {
		/* No such account: the request is refused (RFC 6121 §3.1.3). */
		if (type == SUBSCRIBE)
			act(acts, ACT_ROUTE, UNSUBSCRIBED, false, false);
		return;
	}
	struct roster_item it;
	int found = roster_load(l, owner, contact, a, &it);
	if (found < 0)
		return;
	if (found && it.managed && (type == UNSUBSCRIBE || type == UNSUBSCRIBED))
		return; /* as on the user's side: the directory decides */
	switch (type) {
	case SUBSCRIBE:
		if (found && (it.sub & SUB_FROM)) {
			/* Already subscribed: answer for the owner. */
			act(acts, ACT_ROUTE, SUBSCRIBED, false, false);
			act(acts, ACT_PRESENCE, SUBSCRIBED, false, false);
		} else if (found && it.approved) {
			it.sub |= SUB_FROM;
			it.approved = false;
			roster_save(l, owner, &it, a);
			act(acts, ACT_ROUTE, SUBSCRIBED, false, false);
			act(acts, ACT_PRESENCE, SUBSCRIBED, false, false);
		} else {
			/* Kept until answered, and shown again at each login. */
			sub_in_set(l, owner, contact, true);
			act(acts, ACT_DELIVER, SUBSCRIBE, false, false);
		}
		break;
	case SUBSCRIBED:
		if (found && it.ask) {
			it.ask = false;
			it.sub |= SUB_TO;
			roster_save(l, owner, &it, a);
			act(acts, ACT_DELIVER, SUBSCRIBED, false, false);
		}
		break;
	case UNSUBSCRIBE:
		sub_in_set(l, owner, contact, false);
		if (found && (it.sub & SUB_FROM)) {
			it.sub &= ~SUB_FROM;
			roster_save(l, owner, &it, a);
			act(acts, ACT_DELIVER, UNSUBSCRIBE, false, false);
			act(acts, ACT_PRESENCE, UNSUBSCRIBE, true, false);
		}
		break;
	case UNSUBSCRIBED:
		if (found && ((it.sub & SUB_TO) || it.ask)) {
			it.sub &= ~SUB_TO;
			it.ask = false;
			roster_save(l, owner, &it, a);
			act(acts, ACT_DELIVER, UNSUBSCRIBED, false, false);
			act(acts, ACT_PRESENCE, UNSUBSCRIBED, true, true);
		}
		break;
	}
}

static void inbound_sub(struct loop *l, const char *owner, const char *contact,
			enum sub_type type, struct arena *a)
{
	struct sub_actions acts = { 0 };
	roster_lock(l, owner);
	inbound_rules(l, owner, contact, type, a, &acts);
	roster_unlock(l, owner);
	run_actions(l, owner, contact, &acts, a);
}

static void jid_from_bare(struct jid *j, const char *bare)
{
	const char *at = strchr(bare, '@');
	size_t n = at ? (size_t)(at - bare) : 0;
	memcpy(j->local, bare, n);
	j->local[n] = '\0';
	snprintf(j->domain, sizeof j->domain, "%s", at ? at + 1 : bare);
	j->resource[0] = '\0';
}

/* XEP-0191: no presence either way between an account and whom it blocks,
 * nor towards an account that blocks the sender. */
static bool presence_blocked(struct loop *l, const char *a_bare, const char *b_bare)
{
	struct jid j;
	jid_from_bare(&j, b_bare);
	if (blocking_blocks(l, a_bare, &j))
		return true;
	if (!is_local(l, b_bare))
		return false;
	jid_from_bare(&j, a_bare);
	return blocking_blocks(l, b_bare, &j);
}

static int sub_type_of(const char *type)
{
	for (int i = 0; i < 4; i++)
		if (type != NULL && strcmp(type, sub_names[i]) == 0)
			return i;
	return -1;
}

/* --- broadcast --- */

struct contacts {
	struct arena *a;
	const char **from; /* contacts subscribed to us: they get our presence */
	const char **to;   /* contacts we are subscribed to: we probe them */
	int n_from, n_to, cap;
};

static void collect(void *arg, struct roster_item *it)
{
	struct contacts *c = arg;
	if (c->n_from == c->cap || c->n_to == c->cap) {
		int cap = c->cap ? c->cap * 2 : 32;
		const char **f = arena_alloc(c->a, (size_t)cap * sizeof *f);
		const char **t = arena_alloc(c->a, (size_t)cap * sizeof *t);
		if (c->n_from)
			memcpy(f, c->from, (size_t)c->n_from * sizeof *f);
		if (c->n_to)
			memcpy(t, c->to, (size_t)c->n_to * sizeof *t);
		c->from = f;
		c->to = t;
		c->cap = cap;
	}
	if (it->sub & SUB_FROM)
		c->from[c->n_from++] = it->jid;
	if (it->sub & SUB_TO)
		c->to[c->n_to++] = it->jid;
}

struct pending_ctx {
	struct loop *l;
	const char *owner;
	uint64_t session;
};

static void send_pending(void *arg, const char *key, const void *value, size_t len)
{
	struct pending_ctx *c = arg;
	(void)value, (void)len;
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "<presence type='subscribe' to='");
	buf_append_escaped(&b, c->owner, strlen(c->owner));
	buf_puts(&b, "' from='");
	buf_append_escaped(&b, key, strlen(key));
	buf_puts(&b, "'/>");
	struct refbuf *r = refbuf_new(b.data, b.len);
	struct router_target t = { .session = c->session, .loop = c->l->index };
	deliver_to_session(c->l, &t, r);
	refbuf_release(r);
	buf_free(&b);
}

/* RFC 6121 §4.3.1: a probe from the user's bare JID to a remote contact;
 * its server answers with the contact's presence (presence_inbound). */
static void send_probe(struct loop *l, const char *owner, const char *contact)
{
	struct buf b;
	simple_presence(&b, "probe", owner);
	send_remote(l, owner, contact, b.data, b.len);
	buf_free(&b);
}

/* What a session gets when it becomes available: the presence of the
 * contacts it is subscribed to, of its own other resources, the requests
 * waiting for an answer, and (priority >= 0) the offline messages. */
static void initial_presence(struct loop *l, uint64_t session, const struct jid *from,
			     const char *owner, struct contacts *c, int priority)
{
	char full[3 * JID_PART_MAX + 3];
	jid_format(from, full, sizeof full);
	struct router_target self = { .session = session, .loop = l->index };
	struct buf own_from;
	buf_init(&own_from);
	buf_puts(&own_from, "from='");
	buf_append_escaped(&own_from, full, strlen(full));
	buf_puts(&own_from, "'");
	for (int i = -1; i < c->n_to; i++) {
		const char *contact = i < 0 ? owner : c->to[i];
		if (i >= 0 && presence_blocked(l, owner, contact))
			continue;
		if (!is_local(l, contact)) {
			send_probe(l, owner, contact);
			continue;
		}
		struct refbuf *p[ROUTER_MAX_TARGETS];
		int n = router_get_presences(l->srv->router, contact, p, ROUTER_MAX_TARGETS);
		if (n == 0 && i >= 0) {
			/* RFC 6121 §4.3.2: a contact with no available resource
			 * answers the probe as unavailable, from its bare JID. */
			struct buf b;
			buf_init(&b);
			buf_puts(&b, "<presence type='unavailable' to='");
			buf_append_escaped(&b, full, strlen(full));
			buf_puts(&b, "' from='");
			buf_append_escaped(&b, contact, strlen(contact));
			buf_puts(&b, "'/>");
			struct refbuf *r = refbuf_new(b.data, b.len);
			deliver_to_session(l, &self, r);
			refbuf_release(r);
			buf_free(&b);
		}
		for (int k = 0; k < n; k++) {
			struct refbuf *r = with_to(p[k]->data, p[k]->len, full);
			/* Our own presence, just stored, is not echoed back. */
			bool own = i < 0 && memmem(p[k]->data, p[k]->len, own_from.data,
						   own_from.len) != NULL;
			if (!own)
				deliver_to_session(l, &self, r);
			refbuf_release(r);
			refbuf_release(p[k]);
		}
	}
	buf_free(&own_from);
	char local[JID_PART_MAX + 1];
	const char *domain;
	split(owner, local, sizeof local, &domain);
	struct pending_ctx pc = { l, owner, session };
	l->srv->storage->map_list_max(l->store, domain, local, STORE_SUB_IN,
				      l->srv->cfg->limits.max_roster_size, send_pending, &pc);
	if (priority >= 0)
		offline_deliver(l, owner, session);
}

/* HOOK_PRESENCE_DELIVER: presence st from contact (a full JID) reached
 * the local account recipient (a bare JID string). */
static void deliver_hook(struct loop *l, struct xml_node *st, struct arena *a,
			 const struct jid *contact, const char *recipient)
{
	struct jid to;
	if (jid_parse(&to, recipient, strlen(recipient)) != 0)
		return;
	struct hook_ctx hc = { .loop = l, .st = st, .a = a, .from = contact, .to = &to };
	hooks_run(HOOK_PRESENCE_DELIVER, &hc);
}

void presence_broadcast(struct loop *l, uint64_t session, const struct jid *from,
			struct xml_node *st, struct arena *a, bool was_available)
{
	const char *type = xml_attr(st, "type");
	bool available = type == NULL;
	char owner[2 * JID_PART_MAX + 2];
	jid_format_bare(from, owner, sizeof owner);
	int priority = 0;
	struct xml_node *pr = xml_child(st, NS_CLIENT, "priority");
	if (pr != NULL)
		priority = atoi(xml_text(a, pr));
	xml_set_attr(a, st, "to", NULL);
	struct buf b;
	buf_init(&b);
	xml_serialize(st, NS_CLIENT, &b);
	struct refbuf *p = refbuf_new(b.data, b.len);
	buf_free(&b);
	router_set_presence_stanza(l->srv->router, owner, from->resource, session,
				   available ? p : NULL);
	struct hook_ctx hc = { .loop = l, .st = st, .a = a, .from = from, .to = from,
			       .session = session };
	hooks_run(HOOK_PRESENCE_BROADCAST, &hc);
	if (!available && !was_available) {
		refbuf_release(p);
		return; /* nothing was announced, so there is nothing to withdraw */
	}
	if (!available)
		note_last_activity(l, from);
	struct contacts c = { .a = a };
	roster_each(l, owner, a, collect, &c);
	for (int i = 0; i < c.n_from; i++) {
		if (presence_blocked(l, owner, c.from[i]))
			continue;
		send_presence_to(l, owner, c.from[i], p->data, p->len);
		if (is_local(l, c.from[i]))
			deliver_hook(l, st, a, from, c.from[i]);
	}
	/* RFC 6121 §4.2.2: the sending resource gets its presence back too. */
	send_to_available(l, owner, p->data, p->len, 0);
	refbuf_release(p);
	if (available && !was_available)
		initial_presence(l, session, from, owner, &c, priority);
}

/* Last activity (XEP-0012): when the account last went unavailable. */
static void note_last_activity(struct loop *l, const struct jid *who)
{
	if (deliver_account_exists(l, who->domain, who->local) != 1)
		return; /* a removed account keeps nothing */
	char stamp[32];
	int n = snprintf(stamp, sizeof stamp, "%lld", (long long)time(NULL));
	l->srv->storage->map_put(l->store, who->domain, who->local, STORE_ACCOUNT, "last", stamp,
				 (size_t)n);
}

void presence_session_ended(struct loop *l, const struct jid *full, bool was_available)
{
	char owner[2 * JID_PART_MAX + 2];
	char full_str[3 * JID_PART_MAX + 3];
	jid_format_bare(full, owner, sizeof owner);
	jid_format(full, full_str, sizeof full_str);
	struct arena a;
	arena_init(&a);
	if (was_available) {
		struct contacts c = { .a = &a };
		roster_each(l, owner, &a, collect, &c);
		for (int i = 0; i < c.n_from; i++)
			if (!presence_blocked(l, owner, c.from[i]))
				send_unavailable(l, full_str, c.from[i]);
		send_unavailable(l, full_str, owner);
	}
	note_last_activity(l, full);
	arena_reset(&a);
}

void presence_mark_interested(struct loop *l, const struct jid *full, unsigned what)
{
	char owner[2 * JID_PART_MAX + 2];
	struct router_target t;
	jid_format_bare(full, owner, sizeof owner);
	if (router_find_full(l->srv->router, owner, full->resource, &t) == 0)
		router_set_interested(l->srv->router, owner, full->resource, t.session, what);
}

void presence_outbound(struct loop *l, struct xml_node *st, struct arena *a,
		       const struct jid *from, const struct jid *to)
{
	/* A chat room's presence (joins, leaves, a session's end) is the
	 * room's business, not the roster's. */
	if (muc_route(l, st, a, from, to) || pubsub_service_route(l, st, a, from, to))
		return;
	const char *type = xml_attr(st, "type");
	char owner[2 * JID_PART_MAX + 2], contact[2 * JID_PART_MAX + 2];
	jid_format_bare(from, owner, sizeof owner);
	jid_format_bare(to, contact, sizeof contact);
	if (strcmp(owner, contact) != 0 && (blocking_blocks(l, owner, to) ||
					     (is_local(l, contact) && blocking_blocks(l, contact, from))))
		return; /* XEP-0191: presence is dropped both ways */
	int sub = sub_type_of(type);
	if (sub >= 0) {
		if (to->local[0] == '\0' || strcmp(owner, contact) == 0)
			return; /* no subscriptions to servers or to oneself */
		if (!outbound_room(l, owner, contact, (enum sub_type)sub, a)) {
			deliver_error(l, st, a, "wait", "resource-constraint");
			return;
		}
		outbound_sub(l, owner, contact, (enum sub_type)sub, a);
		return;
	}
	if (type != NULL && strcmp(type, "probe") == 0) {
		struct roster_item it;
		if (roster_load(l, owner, contact, a, &it) != 1 || !(it.sub & SUB_TO))
			return;
		if (!is_local(l, contact)) {
			/* The answer comes to all of the user's resources. */
			send_probe(l, owner, contact);
			return;
		}
		if (send_presences(l, contact, owner, false, a) == 0) {
			/* RFC 6121 §4.3.2: a contact with no available resource
			 * is reported unavailable. */
			send_unavailable(l, contact, owner);
		}
		return;
	}
	if (type != NULL && strcmp(type, "unavailable") != 0 && strcmp(type, "error") != 0)
		return; /* unknown presence type */
	/* Directed presence (RFC 6121 §4.6) and presence errors. */
	if (!is_local(l, contact)) {
		s2s_route(l, st, a, from, to);
		return;
	}
	struct buf b;
	buf_init(&b);
	xml_serialize(st, NS_CLIENT, &b);
	struct refbuf *r = refbuf_new(b.data, b.len);
	buf_free(&b);
	if (to->resource[0] != '\0') {
		struct router_target t;
		if (router_find_full(l->srv->router, contact, to->resource, &t) == 0)
			deliver_to_session(l, &t, r);
	} else {
		struct router_target t[ROUTER_MAX_TARGETS];
		int n = router_find_available(l->srv->router, contact, t, ROUTER_MAX_TARGETS);
		for (int i = 0; i < n; i++)
			deliver_to_session(l, &t[i], r);
	}
	refbuf_release(r);
}

/* --- from remote domains --- */

/* RFC 6121 §4.3.2: a remote contact probes a local owner. Only a
 * subscriber learns anything: the owner's current presences, or an
 * unavailable presence from the bare JID when no resource is available.
 * Anyone else is ignored rather than told "unsubscribed". */
static void inbound_probe(struct loop *l, const char *owner, const char *contact,
			  const struct jid *from, struct arena *a)
{
	struct roster_item it;
	if (roster_load(l, owner, contact, a, &it) != 1 || !(it.sub & SUB_FROM))
		return;
	char prober[3 * JID_PART_MAX + 3];
	jid_format(from, prober, sizeof prober);
	if (send_presences(l, owner, prober, false, a) == 0)
		send_unavailable(l, owner, prober);
}

/* Available, unavailable or error presence from a remote entity: to every
 * available resource for a bare 'to', else to that one session. Directed
 * presence needs no subscription. */
static void inbound_deliver(struct loop *l, struct xml_node *st, struct arena *a,
			    const struct jid *from, const struct jid *to, const char *owner)
{
	char sender[3 * JID_PART_MAX + 3];
	jid_format(from, sender, sizeof sender);
	xml_set_attr(a, st, "from", sender);
	/* with_to splices the address back in. */
	xml_set_attr(a, st, "to", NULL);
	struct buf b;
	buf_init(&b);
	xml_serialize(st, NS_CLIENT, &b);
	if (to->resource[0] == '\0') {
		send_to_available(l, owner, b.data, b.len, 0);
	} else {
		struct router_target t;
		if (router_find_full(l->srv->router, owner, to->resource, &t) == 0) {
			char full[3 * JID_PART_MAX + 3];
			jid_format(to, full, sizeof full);
			struct refbuf *r = with_to(b.data, b.len, full);
			deliver_to_session(l, &t, r);
			refbuf_release(r);
		}
	}
	buf_free(&b);
	struct hook_ctx hc = { .loop = l, .st = st, .a = a, .from = from, .to = to };
	hooks_run(HOOK_PRESENCE_DELIVER, &hc);
}

void presence_inbound(struct loop *l, struct xml_node *st, struct arena *a,
		      const struct jid *from, const struct jid *to)
{
	/* A remote user's presence to a room here: a join, a leave. */
	if (muc_route(l, st, a, from, to) || pubsub_service_route(l, st, a, from, to))
		return;
	char owner[2 * JID_PART_MAX + 2], contact[2 * JID_PART_MAX + 2];
	jid_format_bare(to, owner, sizeof owner);
	jid_format_bare(from, contact, sizeof contact);
	if (to->local[0] == '\0' || !is_local(l, owner) || is_local(l, contact))
		return; /* presence to a server, or not across domains */
	if (blocking_blocks(l, owner, from))
		return; /* XEP-0191 §4: presence from a blocked entity is dropped */
	const char *type = xml_attr(st, "type");
	int sub = sub_type_of(type);
	if (sub >= 0) {
		/* As outbound: no subscriptions with servers. */
		if (from->local[0] != '\0')
			inbound_sub(l, owner, contact, (enum sub_type)sub, a);
		return;
	}
	if (type != NULL && strcmp(type, "probe") == 0) {
		inbound_probe(l, owner, contact, from, a);
		return;
	}
	if (type != NULL && strcmp(type, "unavailable") != 0 && strcmp(type, "error") != 0)
		return; /* unknown presence type */
	inbound_deliver(l, st, a, from, to, owner);
}

struct removal_ctx {
	struct loop *l;
	const struct jid *owner;
	struct arena *a;
};

static void cancel_item(void *arg, struct roster_item *it)
{
	struct removal_ctx *c = arg;
	presence_roster_removed(c->l, c->owner, it, c->a);
}

void presence_account_removed(struct loop *l, const struct jid *owner)
{
	char o[2 * JID_PART_MAX + 2];
	jid_format_bare(owner, o, sizeof o);
	struct arena a;
	arena_init(&a);
	struct removal_ctx c = { l, owner, &a };
	roster_each(l, o, &a, cancel_item, &c);
	arena_reset(&a);
}

void presence_roster_removed(struct loop *l, const struct jid *owner, struct roster_item *it,
			     struct arena *a)
{
	char o[2 * JID_PART_MAX + 2];
	jid_format_bare(owner, o, sizeof o);
	bool pending = sub_in_get(l, o, it->jid);
	if ((it->sub & SUB_TO) || it->ask)
		route_sub(l, o, it->jid, UNSUBSCRIBE, a);
	if ((it->sub & SUB_FROM) || pending) {
		sub_in_set(l, o, it->jid, false);
		route_sub(l, o, it->jid, UNSUBSCRIBED, a);
		send_presences(l, o, it->jid, true, a);
	}
}

void presence_pair_changed(struct loop *l, const char *owner, const char *contact, bool added,
			   struct arena *a)
{
	if (added && sub_in_get(l, owner, contact))
		sub_in_set(l, owner, contact, false); /* the request is answered */
	/* Presence flows only between two available accounts: checked first,
	 * as it is cheaper than the block lists and usually false. */
	struct router_target t;
	if (router_find_available(l->srv->router, owner, &t, 1) == 0 ||
	    router_find_available(l->srv->router, contact, &t, 1) == 0 ||
	    presence_blocked(l, owner, contact))
		return;
	/* One way only: contact's roster changes in the same apply (managed
	 * items come in pairs), and its own call sends owner's presence. Both
	 * ways here sent everything twice. */
	send_presences(l, contact, owner, !added, a);
}
