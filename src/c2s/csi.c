#include "c2s/csi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/util.h"
#include "muc/muc.h"
#include "xml/xml_parse.h"

#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"
#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_PUBSUB_EVENT "http://jabber.org/protocol/pubsub#event"
#define NS_REFERENCE "urn:xmpp:reference:0"
#define NS_DELAY "urn:xmpp:delay"

/* One held stanza: its sender, its collapse key (or none) and its bytes,
 * in one allocation. */
struct csi_item {
	size_t len;      /* bytes of the stanza */
	size_t cost;     /* what it counts against the bound */
	uint32_t hash;   /* of key */
	const char *key; /* into data's tail, or NULL: never replaced */
	const char *from;/* into data's tail; "" when the stanza had none */
	char data[];     /* the stanza, then from and key, NUL-terminated */
};

/* The client's nick in a room, learnt from its self-presence (status 110),
 * so that a room message naming it counts as a mention. */
struct csi_nick {
	char *room; /* bare JID of the room (heap) */
	char *nick; /* (heap) */
};

/* Encrypted payloads: a body beside them is only a fallback text, so what
 * they say (a mention, say) cannot be known. */
static const char *const encrypted_ns[] = {
	"eu.siacs.conversations.axolotl", /* OMEMO (XEP-0384, legacy) */
	"urn:xmpp:omemo:2",               /* OMEMO */
	"urn:xmpp:openpgp:0",             /* OpenPGP for XMPP (XEP-0373) */
	"urn:xmpp:eme:0",                 /* XEP-0380 */
	"jabber:x:encrypted",             /* XEP-0027 */
};

/* Children of a message that say nothing the user must see at once. A
 * message made only of these (and no body) may wait. */
static const char *const waiting_ns[] = {
	"urn:xmpp:receipts",                   /* XEP-0184 <received/> */
	"urn:xmpp:chat-markers:0",             /* XEP-0333 */
	"urn:xmpp:hints",                      /* XEP-0334 */
	"urn:xmpp:sid:0",                      /* XEP-0359 ids */
	"http://jabber.org/protocol/address",  /* XEP-0033 */
};

void csi_init(struct csi *c, csi_write_fn *write, void *arg)
{
	memset(c, 0, sizeof *c);
	c->write = write;
	c->arg = arg;
}

static void remove_at(struct csi *c, int i)
{
	c->bytes -= c->items[i]->cost;
	free(c->items[i]);
	memmove(&c->items[i], &c->items[i + 1], (size_t)(c->n - i - 1) * sizeof c->items[0]);
	c->n--;
}

void csi_flush(struct csi *c)
{
	if (c->n == 0)
		return;
	/* The items go first, so that a write that ends the session (a peer
	 * past its output bound) finds nothing half-released. */
	struct csi_item **items = c->items;
	int n = c->n;
	c->items = NULL;
	c->n = c->cap = 0;
	c->bytes = 0;
	for (int i = 0; i < n; i++) {
		c->write(c->arg, items[i]->data, items[i]->len);
		free(items[i]);
	}
	free(items);
}

/* Writes, in order, the held stanzas from sender from (and drops them from
 * what is held): what must come before a stanza of theirs that passes. */
static void flush_from(struct csi *c, const char *from)
{
	int kept = 0;
	for (int i = 0; i < c->n; i++) {
		struct csi_item *it = c->items[i];
		if (strcmp(it->from, from) == 0) {
			c->write(c->arg, it->data, it->len);
			c->bytes -= it->cost;
			free(it);
		} else {
			c->items[kept++] = it;
		}
	}
	c->n = kept;
}

void csi_end(struct csi *c)
{
	c->inactive = false;
	csi_flush(c);
}

static void free_nicks(struct csi *c)
{
	for (int i = 0; i < c->n_nicks; i++) {
		free(c->nicks[i].room);
		free(c->nicks[i].nick);
	}
	free(c->nicks);
}

void csi_free(struct csi *c)
{
	for (int i = 0; i < c->n; i++)
		free(c->items[i]);
	free(c->items);
	free_nicks(c);
	csi_init(c, c->write, c->arg);
}

void csi_move_nicks(struct csi *dst, struct csi *src)
{
	free_nicks(dst);
	dst->nicks = src->nicks;
	dst->n_nicks = src->n_nicks;
	src->nicks = NULL;
	src->n_nicks = 0;
}

void csi_set_inactive(struct csi *c)
{
	c->inactive = true;
}

int csi_nonza(struct csi *c, const struct xml_node *el)
{
	if (xml_is(el, NS_CSI, "inactive")) {
		csi_set_inactive(c);
		return 0;
	}
	if (xml_is(el, NS_CSI, "active")) {
		c->inactive = false;
		csi_flush(c);
		return 0;
	}
	return -1;
}

/* --- room nicks --- */

static size_t bare_len(const char *jid)
{
	const char *slash = strchr(jid, '/');
	return slash ? (size_t)(slash - jid) : strlen(jid);
}

static const char *nick_in(const struct csi *c, const char *room, size_t room_len)
{
	for (int i = 0; i < c->n_nicks; i++)
		if (strlen(c->nicks[i].room) == room_len &&
		    strncmp(c->nicks[i].room, room, room_len) == 0)
			return c->nicks[i].nick;
	return NULL;
}

static void forget_nick(struct csi *c, int i)
{
	free(c->nicks[i].room);
	free(c->nicks[i].nick);
	c->nicks[i] = c->nicks[--c->n_nicks];
}

static bool has_status(const struct xml_node *x, const char *code)
{
	for (const struct xml_node *ch = x->children; ch; ch = ch->next) {
		const char *v = xml_is(ch, NS_MUC_USER, "status") ? xml_attr(ch, "code") : NULL;
		if (v != NULL && strcmp(v, code) == 0)
			return true;
	}
	return false;
}

/* Whether presence st is the client's own presence in a room (status 110). */
static bool is_self_presence(const struct xml_node *st)
{
	const struct xml_node *x = xml_child(st, NS_MUC_USER, "x");
	return x != NULL && has_status(x, "110");
}

/* Remembers (or, when it leaves, forgets) the client's nick in the room
 * that sent self-presence st. */
static void learn_nick(struct csi *c, const struct xml_node *st)
{
	const char *from = xml_attr(st, "from");
	const char *type = xml_attr(st, "type");
	if (from == NULL || strchr(from, '/') == NULL)
		return;
	size_t room_len = bare_len(from);
	for (int i = 0; i < c->n_nicks; i++)
		if (strlen(c->nicks[i].room) == room_len &&
		    strncmp(c->nicks[i].room, from, room_len) == 0) {
			forget_nick(c, i);
			break;
		}
	if (type != NULL)
		return; /* unavailable: it left (or changes nick; the new one follows) */
	if (c->n_nicks == CSI_MAX_NICKS)
		forget_nick(c, 0);
	if (c->nicks == NULL)
		c->nicks = xcalloc(CSI_MAX_NICKS, sizeof *c->nicks);
	c->nicks[c->n_nicks].room = xstrdup(from);
	c->nicks[c->n_nicks].room[room_len] = '\0';
	c->nicks[c->n_nicks].nick = xstrdup(from + room_len + 1);
	c->n_nicks++;
}

/* A cheap look at bytes written to an active client: only what may be a
 * room's self-presence is parsed. */
static void maybe_learn_nick(struct csi *c, const char *data, size_t len)
{
	if (len < 9 || memcmp(data, "<presence", 9) != 0 ||
	    memmem(data, len, NS_MUC_USER, sizeof NS_MUC_USER - 1) == NULL ||
	    memmem(data, len, "110", 3) == NULL)
		return;
	struct arena a;
	arena_init(&a);
	struct xml_node *st = xml_parse_element(&a, data, len);
	if (st != NULL && is_self_presence(st))
		learn_nick(c, st);
	arena_reset(&a);
}

/* --- classification --- */

static bool contains_nocase(const char *text, const char *word, size_t word_len)
{
	if (word_len == 0 || word_len > 1023)
		return false;
	char w[1024];
	memcpy(w, word, word_len);
	w[word_len] = '\0';
	return strcasestr(text, w) != NULL;
}

/* Whether room message m (with body) names the client: its nick in that
 * room, its account's local part, or an XEP-0372 mention of its JID. */
static bool mentions(const struct csi *c, const char *bare, const struct xml_node *m,
		     const struct xml_node *body, struct arena *a)
{
	const char *text = xml_text(a, body);
	const char *at = strchr(bare, '@');
	if (at != NULL && contains_nocase(text, bare, (size_t)(at - bare)))
		return true;
	const char *from = xml_attr(m, "from");
	const char *nick = from ? nick_in(c, from, bare_len(from)) : NULL;
	if (nick != NULL && contains_nocase(text, nick, strlen(nick)))
		return true;
	for (const struct xml_node *ch = m->children; ch; ch = ch->next) {
		const char *uri = xml_is(ch, NS_REFERENCE, "reference") ? xml_attr(ch, "uri") : NULL;
		if (uri != NULL && strncmp(uri, "xmpp:", 5) == 0 &&
		    strncmp(uri + 5, bare, strlen(bare)) == 0)
			return true;
	}
	return false;
}

static bool in_list(const char *ns, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(ns, list[i]) == 0)
			return true;
	return false;
}

static bool is_waiting_ns(const char *ns)
{
	return in_list(ns, waiting_ns, sizeof waiting_ns / sizeof waiting_ns[0]);
}

static bool is_encrypted(const struct xml_node *m)
{
	for (const struct xml_node *ch = m->children; ch; ch = ch->next)
		if (ch->name != NULL &&
		    in_list(ch->ns, encrypted_ns, sizeof encrypted_ns / sizeof encrypted_ns[0]))
			return true;
	return false;
}

static const char *make_key(struct arena *a, char kind, const char *from, const char *node,
			    const char *id)
{
	size_t n = 2 + strlen(from) + (node ? strlen(node) + strlen(id) + 2 : 0);
	char *k = arena_alloc(a, n + 1);
	if (node != NULL)
		snprintf(k, n + 1, "%c%s\n%s\n%s", kind, from, node, id);
	else
		snprintf(k, n + 1, "%c%s", kind, from);
	return k;
}

/* A PEP or pubsub notification: a newer one for the same item of the same
 * node from the same sender replaces an older one; others wait in order. */
static enum csi_class classify_event(const struct xml_node *m, const struct xml_node *ev,
				     struct arena *a, const char **key)
{
	const struct xml_node *items = xml_child(ev, NS_PUBSUB_EVENT, "items");
	const struct xml_node *item = items ? xml_first_element(items) : NULL;
	const char *from = xml_attr(m, "from");
	const char *node = items ? xml_attr(items, "node") : NULL;
	const char *id = item ? xml_attr(item, "id") : NULL;
	if (from == NULL || node == NULL || id == NULL || xml_element_count(ev) != 1 ||
	    xml_element_count(items) != 1 || !xml_is(item, NS_PUBSUB_EVENT, "item"))
		return CSI_HOLD;
	*key = make_key(a, 'e', from, node, id);
	return CSI_COLLAPSE;
}

static enum csi_class classify_message(const struct csi *c, const char *bare,
				       const struct xml_node *m, struct arena *a,
				       const char **key, int depth)
{
	const char *type = xml_attr(m, "type");
	if (type != NULL && strcmp(type, "error") == 0)
		return CSI_URGENT;
	const struct xml_node *body = xml_child(m, NS_CLIENT, "body");
	if (body != NULL) {
		if (type != NULL && strcmp(type, "groupchat") == 0 && !is_encrypted(m) &&
		    !mentions(c, bare, m, body, a))
			return CSI_HOLD;
		return CSI_URGENT;
	}
	bool chat_state = false, other = false, delayed = false;
	const struct xml_node *event = NULL;
	for (const struct xml_node *ch = m->children; ch; ch = ch->next) {
		if (ch->name == NULL)
			continue;
		if (xml_is(ch, NS_CLIENT, "thread")) {
			continue;
		} else if (strcmp(ch->ns, NS_CHATSTATES) == 0) {
			chat_state = true;
		} else if (is_waiting_ns(ch->ns)) {
			other = true;
		} else if (xml_is(ch, NS_DELAY, "delay")) {
			delayed = true;
		} else if (xml_is(ch, NS_PUBSUB_EVENT, "event") && event == NULL) {
			event = ch;
		} else if (depth == 0 && (xml_is(ch, NS_CARBONS, "received") ||
					  xml_is(ch, NS_CARBONS, "sent"))) {
			/* A carbon copy is as urgent as the message it copies;
			 * it is never replaced (its key would be another's). */
			const struct xml_node *fwd = xml_child(ch, NS_FORWARD, "forwarded");
			const struct xml_node *inner = fwd ? xml_child(fwd, NS_CLIENT, "message") : NULL;
			if (inner == NULL || xml_element_count(m) != 1)
				return CSI_URGENT;
			const char *inner_key = NULL;
			enum csi_class cls = classify_message(c, bare, inner, a, &inner_key, 1);
			return cls == CSI_COLLAPSE ? CSI_HOLD : cls;
		} else {
			/* Anything else (encrypted payloads, call invitations,
			 * archive results, invitations, a subject) may matter. */
			return CSI_URGENT;
		}
	}
	if (event != NULL) /* ids, delay or addresses beside it change nothing */
		return chat_state ? CSI_HOLD : classify_event(m, event, a, key);
	/* Delayed: it comes from a store (offline messages), whose copy goes
	 * once it is written; holding it here would risk losing it. */
	if (delayed)
		return CSI_URGENT;
	const char *from = xml_attr(m, "from");
	if (chat_state && !other && from != NULL) {
		*key = make_key(a, 'c', from, NULL, NULL);
		return CSI_COLLAPSE;
	}
	return CSI_HOLD;
}

static enum csi_class classify_presence(const struct xml_node *st, struct arena *a,
					const char **key)
{
	const char *type = xml_attr(st, "type");
	const char *from = xml_attr(st, "from");
	/* Subscription requests and answers, probes and errors are rare and
	 * change the roster; the client's own presence in a room ends its
	 * join or tells it it left. */
	if ((type != NULL && strcmp(type, "unavailable") != 0) || from == NULL ||
	    is_self_presence(st))
		return CSI_URGENT;
	*key = make_key(a, 'p', from, NULL, NULL);
	return CSI_COLLAPSE;
}

enum csi_class csi_classify(const struct csi *c, const char *bare, const struct xml_node *st,
			    struct arena *a, const char **key)
{
	*key = NULL;
	if (xml_is(st, NS_CLIENT, "iq"))
		return CSI_PASS;
	if (xml_is(st, NS_CLIENT, "presence"))
		return classify_presence(st, a, key);
	if (xml_is(st, NS_CLIENT, "message"))
		return classify_message(c, bare, st, a, key, 0);
	return CSI_URGENT;
}

/* --- holding --- */

static void hold(struct csi *c, const struct config_limits *lim, const char *from,
		 const char *key, const char *data, size_t len)
{
	uint32_t h = key ? str_hash(key) : 0;
	if (key != NULL) {
		for (int i = 0; i < c->n; i++) {
			const struct csi_item *it = c->items[i];
			if (it->key != NULL && it->hash == h && strcmp(it->key, key) == 0) {
				remove_at(c, i);
				break;
			}
		}
	}
	size_t from_len = strlen(from), key_len = key ? strlen(key) : 0;
	size_t cost = sizeof(struct csi_item) + len + from_len + key_len + 2;
	if (c->n + 1 > lim->csi_max_held_stanzas || c->bytes + cost > lim->csi_max_held_bytes)
		csi_flush(c);
	if (cost > lim->csi_max_held_bytes) {
		c->write(c->arg, data, len);
		return;
	}
	struct csi_item *it = xmalloc(cost);
	it->len = len;
	it->cost = cost;
	it->hash = h;
	memcpy(it->data, data, len);
	char *tail = it->data + len;
	memcpy(tail, from, from_len + 1);
	it->from = tail;
	if (key != NULL) {
		memcpy(tail + from_len + 1, key, key_len + 1);
		it->key = tail + from_len + 1;
	} else {
		it->key = NULL;
	}
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 16;
		c->items = xrealloc(c->items, (size_t)c->cap * sizeof *c->items);
	}
	c->items[c->n++] = it;
	c->bytes += cost;
}

void csi_deliver(struct csi *c, const char *bare, const struct config_limits *lim,
		 const char *data, size_t len)
{
	if (!c->inactive || lim->csi_max_held_stanzas == 0) {
		csi_flush(c); /* nothing, unless a reload turned holding off */
		maybe_learn_nick(c, data, len);
		c->write(c->arg, data, len);
		return;
	}
	/* An iq passes; with nothing held there is nothing to keep it behind. */
	if (c->n == 0 && len >= 3 && memcmp(data, "<iq", 3) == 0) {
		c->write(c->arg, data, len);
		return;
	}
	struct arena a;
	arena_init(&a);
	struct xml_node *st = xml_parse_element(&a, data, len);
	const char *key = NULL;
	enum csi_class cls = st ? csi_classify(c, bare, st, &a, &key) : CSI_URGENT;
	const char *from = st ? xml_attr(st, "from") : NULL;
	if (st != NULL && xml_is(st, NS_CLIENT, "presence") && is_self_presence(st))
		learn_nick(c, st);
	switch (cls) {
	case CSI_URGENT:
		csi_flush(c);
		c->write(c->arg, data, len);
		break;
	case CSI_PASS:
		if (from != NULL)
			flush_from(c, from);
		c->write(c->arg, data, len);
		break;
	case CSI_HOLD:
	case CSI_COLLAPSE:
		hold(c, lim, from ? from : "", key, data, len);
		break;
	}
	arena_reset(&a);
}
