/* XEP-0357: Push Notifications (urn:xmpp:push:0).
 *
 * A client registers its app's push service (an XMPP entity, the "app
 * server", and a node there) with <enable/>, optionally with a
 * publish-options form the app server wants back on every notification (a
 * secret). When a message worth waking the phone for arrives while the
 * account has nobody online (it goes to offline storage), every
 * registration of the account gets a pubsub publish of a <notification/>
 * with the urn:xmpp:push:summary form, from the account's bare JID. When
 * one is kept for a session detached by stream management
 * (HOOK_MESSAGE_QUEUED), the registration that session enabled gets one.
 *
 * Registrations live in the account's map store "push" (key: a digest of
 * app server JID and node; value: the registration as XML), read and
 * written on the storage thread. In memory (struct push, shared by the
 * loops under one mutex) are only: per registration, what is in flight
 * and what was folded since (a fixed table of sets, as mod_mam's
 * preference cache, so bounded whatever the number of accounts), and
 * which session enabled which registration (one entry per session).
 *
 * The rules, as docs/mobile.md states them:
 *  - one notification in flight per registration, and at most one per
 *    push.min_interval seconds; messages in between are folded into the
 *    next (its count covers them; sender and body are the latest);
 *  - an error answer disables the registration (it is deleted), except
 *    type 'wait' and remote-server-not-found/-timeout (the path to the
 *    app server, not its verdict); no answer within IQREQ_TIMEOUT_MS
 *    keeps it, and the next notification may go;
 *  - last-message-sender and last-message-body only as push.include_sender
 *    and push.include_body say: never, opt-in (the client asked for them
 *    with the fields x-natter-include-sender / x-natter-include-body in the
 *    enable's publish-options; these are not passed on), or always. */
#include "modules/push.h"

#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "modules/module.h"
#include "router/deliver.h"
#include "router/iqreq.h"
#include "router/router.h"
#include "storage/storeq.h"
#include "xml/xml_parse.h"

#define NS_PUSH "urn:xmpp:push:0"
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_DATA "jabber:x:data"
#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_REGISTRATION "https://natter.chat/push"
#define FORM_PUBLISH_OPTIONS "http://jabber.org/protocol/pubsub#publish-options"
#define FORM_SUMMARY "urn:xmpp:push:summary"
#define FIELD_INCLUDE_SENDER "x-natter-include-sender"
#define FIELD_INCLUDE_BODY "x-natter-include-body"

#define STORE_PUSH "push"
/* A registration's key: hex of the first 16 bytes of SHA-256(jid NUL node). */
#define PUSH_KEY_LEN 32
/* A node name at most (bytes); longer: not-acceptable. */
#define PUSH_NODE_MAX 1023
/* The publish-options form at most, serialised; larger: not-acceptable. */
#define PUSH_OPTIONS_MAX 4096
/* A stored registration at most: the form, the JID and node escaped. */
#define PUSH_VALUE_MAX (PUSH_OPTIONS_MAX + 6 * (3 * JID_PART_MAX + 3 + PUSH_NODE_MAX) + 256)
/* Registrations per account at most, whatever the configuration. */
#define PUSH_REGS_MAX 32
/* Bytes of a body kept for a notification (cut at a character). */
#define PUSH_BODY_MAX 512

/* The notification state: PUSH_SETS sets of PUSH_WAYS slots, an account's
 * registrations all in the set its bare JID hashes to. */
#define PUSH_SETS 256
#define PUSH_WAYS PUSH_REGS_MAX
/* Sessions that enabled a registration: hash buckets. */
#define PUSH_SESSION_BUCKETS 1024

struct push_slot {
	char *account;              /* bare JID; NULL: free */
	char key[PUSH_KEY_LEN + 1];
	unsigned long long used;    /* for eviction */
	unsigned count;             /* messages since a session of the account came online */
	unsigned long long seq;     /* the notification in flight, 0 none */
	unsigned long long sent_ms; /* when the last one went */
	int interval_ms;            /* the host's min_interval */
	bool pending;               /* messages folded since the last one */
	int loop;                   /* the loop that sends the folded one */
	char *sender, *body;        /* the latest message's, or NULL */
};

struct push_session {
	uint64_t session;
	char key[PUSH_KEY_LEN + 1];
	struct push_session *next;
};

struct push {
	pthread_mutex_t lock;
	unsigned long long tick;
	unsigned long long next_seq;
	struct push_slot slots[PUSH_SETS][PUSH_WAYS];
	struct push_session *sessions[PUSH_SESSION_BUCKETS];
};

void push_init(struct server *srv)
{
	srv->push = xcalloc(1, sizeof *srv->push);
	pthread_mutex_init(&srv->push->lock, NULL);
}

static void slot_clear(struct push_slot *s)
{
	free(s->account);
	free(s->sender);
	free(s->body);
	memset(s, 0, sizeof *s);
}

void push_free(struct server *srv)
{
	struct push *p = srv->push;
	if (p == NULL)
		return;
	for (int i = 0; i < PUSH_SETS; i++)
		for (int w = 0; w < PUSH_WAYS; w++)
			slot_clear(&p->slots[i][w]);
	for (int i = 0; i < PUSH_SESSION_BUCKETS; i++) {
		while (p->sessions[i]) {
			struct push_session *s = p->sessions[i];
			p->sessions[i] = s->next;
			free(s);
		}
	}
	pthread_mutex_destroy(&p->lock);
	free(p);
	srv->push = NULL;
}

static const struct config_push *push_cfg(struct loop *l, const char *domain)
{
	const struct config_host *h = config_find_host(l->srv->cfg, domain);
	return h ? &h->push : NULL;
}

static void registration_key(const char *jid, const char *node, char out[PUSH_KEY_LEN + 1])
{
	struct buf b;
	unsigned char md[SHA256_DIGEST_LENGTH];
	buf_init(&b);
	buf_append(&b, jid, strlen(jid) + 1);
	buf_append(&b, node, strlen(node));
	SHA256((const unsigned char *)b.data, b.len, md);
	buf_free(&b);
	for (int i = 0; i < PUSH_KEY_LEN / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* --- the notification state (under p->lock) --- */

/* The slot of (account, key); with create, a new one (evicting the least
 * recently used of the set, idle ones first). */
static struct push_slot *slot_find(struct push *p, const char *account, const char *key,
				   bool create)
{
	struct push_slot *set = p->slots[str_hash(account) % PUSH_SETS];
	struct push_slot *victim = NULL;
	for (int w = 0; w < PUSH_WAYS; w++) {
		struct push_slot *s = &set[w];
		if (s->account != NULL && strcmp(s->account, account) == 0 &&
		    strcmp(s->key, key) == 0) {
			s->used = ++p->tick;
			return s;
		}
		if (!create)
			continue;
		bool idle = s->account == NULL || (s->seq == 0 && !s->pending);
		bool victim_idle = victim != NULL &&
				   (victim->account == NULL || (victim->seq == 0 && !victim->pending));
		if (victim == NULL || (idle && !victim_idle) ||
		    (idle == victim_idle && s->used < victim->used))
			victim = s;
	}
	if (!create)
		return NULL;
	slot_clear(victim);
	victim->account = xstrdup(account);
	snprintf(victim->key, sizeof victim->key, "%s", key);
	victim->used = ++p->tick;
	return victim;
}

static void replace_str(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? xstrdup(src) : NULL;
}

/* What one notification carries, taken from its slot when it is sent. */
struct push_summary {
	unsigned long long seq;
	unsigned count;
	char *sender, *body; /* owned */
};

/* Reserves a notification for the slot: the next seq, its count and the
 * latest sender and body (moved out). */
static void slot_take(struct push *p, struct push_slot *s, unsigned long long now,
		      struct push_summary *out)
{
	s->seq = ++p->next_seq;
	s->sent_ms = now;
	s->pending = false;
	out->seq = s->seq;
	out->count = s->count;
	out->sender = s->sender;
	out->body = s->body;
	s->sender = s->body = NULL;
}

/* --- which session enabled which registration --- */

static void session_set(struct push *p, uint64_t session, const char *key)
{
	struct push_session **b = &p->sessions[session % PUSH_SESSION_BUCKETS];
	for (struct push_session *s = *b; s; s = s->next) {
		if (s->session == session) {
			snprintf(s->key, sizeof s->key, "%s", key);
			return;
		}
	}
	struct push_session *s = xcalloc(1, sizeof *s);
	s->session = session;
	snprintf(s->key, sizeof s->key, "%s", key);
	s->next = *b;
	*b = s;
}

/* Forgets the session's registration (all of it when key is NULL, else
 * only if it is key). */
static void session_forget(struct push *p, uint64_t session, const char *key)
{
	for (struct push_session **s = &p->sessions[session % PUSH_SESSION_BUCKETS]; *s;
	     s = &(*s)->next) {
		if ((*s)->session == session) {
			if (key == NULL || strcmp((*s)->key, key) == 0) {
				struct push_session *gone = *s;
				*s = gone->next;
				free(gone);
			}
			return;
		}
	}
}

static bool session_get(struct push *p, uint64_t session, char key[PUSH_KEY_LEN + 1])
{
	for (struct push_session *s = p->sessions[session % PUSH_SESSION_BUCKETS]; s; s = s->next) {
		if (s->session == session) {
			memcpy(key, s->key, PUSH_KEY_LEN + 1);
			return true;
		}
	}
	return false;
}

/* --- data forms --- */

static const char *field_value(struct arena *a, const struct xml_node *field)
{
	struct xml_node *v = xml_child(field, NS_DATA, "value");
	return v ? xml_text(a, v) : NULL;
}

static const char *form_type(struct arena *a, const struct xml_node *form)
{
	for (struct xml_node *f = form->children; f; f = f->next)
		if (xml_is(f, NS_DATA, "field") && xml_attr(f, "var") != NULL &&
		    strcmp(xml_attr(f, "var"), "FORM_TYPE") == 0)
			return field_value(a, f);
	return NULL;
}

static bool is_true(const char *v)
{
	return v != NULL && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0);
}

static void add_field(struct arena *a, struct xml_node *form, const char *var, const char *value)
{
	struct xml_node *f = xml_add_child(a, form, NS_DATA, "field");
	xml_set_attr(a, f, "var", var);
	xml_add_text(a, xml_add_child(a, f, NS_DATA, "value"), value, strlen(value));
}

/* --- answering the client after the storage thread --- */

/* What an iq answered from a storage job needs to be answered. */
struct push_asker {
	char account[2 * JID_PART_MAX + 2]; /* the reply's from */
	char to[3 * JID_PART_MAX + 3];      /* the asker's full JID */
	char *id;
};

static void asker_init(struct push_asker *w, struct iq_ctx *c)
{
	jid_format_bare(c->to, w->account, sizeof w->account);
	jid_format(c->from, w->to, sizeof w->to);
	const char *id = xml_attr(c->iq, "id");
	w->id = id ? xstrdup(id) : NULL;
}

/* Sends the result (condition NULL) or a stanza error to the asker. */
static void asker_answer(struct loop *l, struct push_asker *w, const char *type,
			 const char *condition, const char *text)
{
	deliver_iq_answer(l, w->account, w->to, w->id, type, condition, text);
}

static void error_text(struct iq_ctx *c, const char *type, const char *condition,
		       const char *text)
{
	struct push_asker w;
	asker_init(&w, c);
	asker_answer(c->loop, &w, type, condition, text);
	free(w.id);
}

/* --- enable --- */

struct push_enable_job {
	char domain[JID_PART_MAX + 1], local[JID_PART_MAX + 1];
	char key[PUSH_KEY_LEN + 1];
	struct buf value;
	int max;
	uint64_t session;
	int result; /* 0 stored, 1 too many registrations */
	int others; /* registrations with another key */
	struct push_asker asker;
};

static void count_others(void *arg, const char *key, const void *value, size_t len)
{
	struct push_enable_job *j = arg;
	(void)value, (void)len;
	if (strcmp(key, j->key) != 0)
		j->others++;
}

static int enable_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct push_enable_job *j = arg;
	if (drv->map_list(st, j->domain, j->local, STORE_PUSH, count_others, j) < 0)
		return -1;
	if (j->others >= j->max) {
		j->result = 1;
		return 0;
	}
	return drv->map_put(st, j->domain, j->local, STORE_PUSH, j->key, j->value.data,
			    j->value.len);
}

static void enable_done(struct loop *l, void *arg, int rc)
{
	struct push_enable_job *j = arg;
	if (l != NULL) {
		if (rc < 0) {
			asker_answer(l, &j->asker, "wait", "internal-server-error", NULL);
		} else if (j->result == 1) {
			char text[96];
			snprintf(text, sizeof text, "at most %d push registrations per account",
				 j->max);
			asker_answer(l, &j->asker, "modify", "policy-violation", text);
		} else {
			pthread_mutex_lock(&l->srv->push->lock);
			session_set(l->srv->push, j->session, j->key);
			pthread_mutex_unlock(&l->srv->push->lock);
			log_info("push: %s@%s enabled registration %s", j->local, j->domain, j->key);
			asker_answer(l, &j->asker, NULL, NULL, NULL);
		}
	}
	buf_free(&j->value);
	free(j->asker.id);
	free(j);
}

static bool own_account(const struct iq_ctx *c)
{
	return strcmp(c->to->local, c->from->local) == 0 &&
	       strcmp(c->to->domain, c->from->domain) == 0;
}

/* Checks the enable's publish-options form and writes it to b without
 * natter's own fields (the app server would refuse unknown fields,
 * XEP-0060 §7.1.5), noting those in *sender / *body. Returns NULL or the
 * reason it is refused (bad-request). */
static const char *copy_options(struct iq_ctx *c, const struct xml_node *form, struct buf *b,
				bool *sender, bool *body)
{
	const char *type = xml_attr(form, "type");
	if (type != NULL && strcmp(type, "submit") != 0)
		return "the publish-options form must be of type submit";
	const char *ft = form_type(c->a, form);
	if (ft == NULL || strcmp(ft, FORM_PUBLISH_OPTIONS) != 0)
		return "the form must have the FORM_TYPE " FORM_PUBLISH_OPTIONS;
	struct xml_node *out = xml_new(c->a, NS_DATA, "x");
	xml_set_attr(c->a, out, "type", "submit");
	int kept = 0;
	for (struct xml_node *f = form->children; f; f = f->next) {
		if (!xml_is(f, NS_DATA, "field"))
			continue;
		const char *var = xml_attr(f, "var");
		if (var == NULL)
			return "a form field without var";
		if (strcmp(var, FIELD_INCLUDE_SENDER) == 0) {
			*sender = is_true(field_value(c->a, f));
			continue;
		}
		if (strcmp(var, FIELD_INCLUDE_BODY) == 0) {
			*body = is_true(field_value(c->a, f));
			continue;
		}
		struct xml_node *copy = xml_add_child(c->a, out, NS_DATA, "field");
		xml_set_attr(c->a, copy, "var", var);
		kept += strcmp(var, "FORM_TYPE") != 0;
		for (struct xml_node *v = f->children; v; v = v->next) {
			if (!xml_is(v, NS_DATA, "value"))
				continue;
			const char *t = xml_text(c->a, v);
			xml_add_text(c->a, xml_add_child(c->a, copy, NS_DATA, "value"), t,
				     strlen(t));
		}
	}
	/* A form that only carried natter's fields leaves nothing to pass on. */
	if (kept > 0)
		xml_serialize(out, NS_REGISTRATION, b);
	return NULL;
}

static enum status push_enable(struct iq_ctx *c)
{
	if (!own_account(c)) {
		module_error(c, "cancel", "forbidden");
		return OK;
	}
	const char *jid_s = xml_attr(c->payload, "jid");
	const char *node = xml_attr(c->payload, "node");
	if (jid_s == NULL || node == NULL || node[0] == '\0') {
		error_text(c, "modify", "bad-request",
			   jid_s == NULL ? "enable needs a jid" : "enable needs a node");
		return OK;
	}
	struct jid app;
	if (jid_parse(&app, jid_s, strlen(jid_s)) != 0) {
		module_error(c, "modify", "jid-malformed");
		return OK;
	}
	char app_s[3 * JID_PART_MAX + 3];
	jid_format(&app, app_s, sizeof app_s);
	if (strcmp(app.local, c->to->local) == 0 && strcmp(app.domain, c->to->domain) == 0 &&
	    app.resource[0] == '\0') {
		error_text(c, "modify", "bad-request", "the push service cannot be the account itself");
		return OK;
	}
	if (strlen(node) > PUSH_NODE_MAX) {
		error_text(c, "modify", "not-acceptable", "node name too long");
		return OK;
	}
	struct xml_node *form = NULL;
	for (struct xml_node *k = c->payload->children; k; k = k->next) {
		if (!xml_is(k, NS_DATA, "x"))
			continue;
		if (form != NULL) {
			error_text(c, "modify", "bad-request", "one publish-options form at most");
			return OK;
		}
		form = k;
	}
	bool want_sender = false, want_body = false;
	struct buf options;
	buf_init(&options);
	if (form != NULL) {
		const char *why = copy_options(c, form, &options, &want_sender, &want_body);
		if (why != NULL || options.len > PUSH_OPTIONS_MAX) {
			error_text(c, "modify", why ? "bad-request" : "not-acceptable",
				   why ? why : "publish-options form too large");
			buf_free(&options);
			return OK;
		}
	}
	char bare[2 * JID_PART_MAX + 2];
	struct router_target t;
	jid_format_bare(c->from, bare, sizeof bare);
	struct push_enable_job *j = xcalloc(1, sizeof *j);
	snprintf(j->domain, sizeof j->domain, "%s", c->to->domain);
	snprintf(j->local, sizeof j->local, "%s", c->to->local);
	registration_key(app_s, node, j->key);
	j->max = push_cfg(c->loop, c->to->domain)->max_registrations;
	if (router_find_full(c->loop->srv->router, bare, c->from->resource, &t) == 0)
		j->session = t.session;
	buf_init(&j->value);
	buf_puts(&j->value, "<registration xmlns='" NS_REGISTRATION "' jid='");
	buf_append_escaped(&j->value, app_s, strlen(app_s));
	buf_puts(&j->value, "' node='");
	buf_append_escaped(&j->value, node, strlen(node));
	buf_printf(&j->value, "' include-sender='%d' include-body='%d'>", want_sender, want_body);
	buf_append(&j->value, options.data, options.len);
	buf_puts(&j->value, "</registration>");
	buf_free(&options);
	asker_init(&j->asker, c);
	storeq_call(c->loop->srv->storeq, c->loop, enable_run, enable_done, j);
	return OK;
}

/* --- disable --- */

struct push_disable_job {
	char domain[JID_PART_MAX + 1], local[JID_PART_MAX + 1];
	char jid[3 * JID_PART_MAX + 3];
	char key[PUSH_KEY_LEN + 1]; /* "" every node of jid */
	char gone[PUSH_REGS_MAX][PUSH_KEY_LEN + 1];
	int n_gone;
	uint64_t session;
	struct push_asker asker;
};

static void find_by_jid(void *arg, const char *key, const void *value, size_t len)
{
	struct push_disable_job *j = arg;
	struct arena a;
	arena_init(&a);
	struct xml_node *r = xml_parse_element(&a, value, len);
	const char *jid = r ? xml_attr(r, "jid") : NULL;
	if (jid != NULL && strcmp(jid, j->jid) == 0 && j->n_gone < PUSH_REGS_MAX &&
	    strlen(key) == PUSH_KEY_LEN)
		memcpy(j->gone[j->n_gone++], key, PUSH_KEY_LEN + 1);
	arena_reset(&a);
}

static int disable_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct push_disable_job *j = arg;
	if (j->key[0] != '\0') {
		memcpy(j->gone[j->n_gone++], j->key, PUSH_KEY_LEN + 1);
	} else if (drv->map_list_max(st, j->domain, j->local, STORE_PUSH,
				     (size_t)PUSH_REGS_MAX * PUSH_VALUE_MAX, find_by_jid, j) < 0) {
		return -1;
	}
	for (int i = 0; i < j->n_gone; i++)
		if (drv->map_del(st, j->domain, j->local, STORE_PUSH, j->gone[i]) < 0)
			return -1;
	return 0;
}

static void disable_done(struct loop *l, void *arg, int rc)
{
	struct push_disable_job *j = arg;
	if (l != NULL) {
		struct push *p = l->srv->push;
		char account[2 * JID_PART_MAX + 2];
		snprintf(account, sizeof account, "%s@%s", j->local, j->domain);
		pthread_mutex_lock(&p->lock);
		for (int i = 0; i < j->n_gone; i++) {
			struct push_slot *s = slot_find(p, account, j->gone[i], false);
			if (s != NULL)
				slot_clear(s);
			session_forget(p, j->session, j->gone[i]);
		}
		pthread_mutex_unlock(&p->lock);
		if (rc < 0) {
			asker_answer(l, &j->asker, "wait", "internal-server-error", NULL);
		} else {
			log_info("push: %s disabled %d registration(s) of %s", account, j->n_gone,
				 j->jid);
			asker_answer(l, &j->asker, NULL, NULL, NULL);
		}
	}
	free(j->asker.id);
	free(j);
}

static enum status push_disable(struct iq_ctx *c)
{
	if (!own_account(c)) {
		module_error(c, "cancel", "forbidden");
		return OK;
	}
	const char *jid_s = xml_attr(c->payload, "jid");
	const char *node = xml_attr(c->payload, "node");
	if (jid_s == NULL) {
		error_text(c, "modify", "bad-request", "disable needs a jid");
		return OK;
	}
	struct jid app;
	if (jid_parse(&app, jid_s, strlen(jid_s)) != 0) {
		module_error(c, "modify", "jid-malformed");
		return OK;
	}
	struct push_disable_job *j = xcalloc(1, sizeof *j);
	snprintf(j->domain, sizeof j->domain, "%s", c->to->domain);
	snprintf(j->local, sizeof j->local, "%s", c->to->local);
	jid_format(&app, j->jid, sizeof j->jid);
	if (node != NULL)
		registration_key(j->jid, node, j->key);
	char bare[2 * JID_PART_MAX + 2];
	struct router_target t;
	jid_format_bare(c->from, bare, sizeof bare);
	if (router_find_full(c->loop->srv->router, bare, c->from->resource, &t) == 0)
		j->session = t.session;
	asker_init(&j->asker, c);
	storeq_call(c->loop->srv->storeq, c->loop, disable_run, disable_done, j);
	return OK;
}

/* --- what is worth a notification --- */

/* Whether the message would make a phone show something: a body, an
 * encrypted payload (OMEMO, OpenPGP: no readable body), or a call
 * (XEP-0353 propose). Chat states, receipts, markers and the copies of
 * one's own sent messages are not. *body gets the body, or NULL; *sender
 * the from of the message a received carbon carries (else it stays). */
static bool worth_waking(struct arena *a, const struct xml_node *st, const char **body,
			 const char **sender)
{
	*body = NULL;
	if (st == NULL || strcmp(st->name, "message") != 0)
		return false;
	const char *type = xml_attr(st, "type");
	if (type != NULL && (strcmp(type, "error") == 0 || strcmp(type, "headline") == 0))
		return false;
	if (xml_child(st, NS_CARBONS, "sent") != NULL)
		return false;
	struct xml_node *received = xml_child(st, NS_CARBONS, "received");
	if (received != NULL) {
		struct xml_node *fwd = xml_child(received, NS_FORWARD, "forwarded");
		st = fwd ? xml_child(fwd, NULL, "message") : NULL;
		if (st == NULL)
			return false;
		if (xml_attr(st, "from") != NULL)
			*sender = xml_attr(st, "from");
	}
	struct xml_node *b = xml_child(st, NULL, "body");
	if (b != NULL && strcmp(b->ns, NS_CLIENT) != 0 && strcmp(b->ns, NS_SERVER) != 0)
		b = NULL;
	const char *text = b ? xml_text(a, b) : NULL;
	if (text != NULL && text[0] != '\0') {
		*body = text;
		return true;
	}
	return xml_child(st, "eu.siacs.conversations.axolotl", "encrypted") != NULL ||
	       xml_child(st, "urn:xmpp:omemo:2", "encrypted") != NULL ||
	       xml_child(st, "urn:xmpp:openpgp:0", "openpgp") != NULL ||
	       xml_child(st, "jabber:x:encrypted", "x") != NULL ||
	       xml_child(st, "urn:xmpp:jingle-message:0", "propose") != NULL;
}

/* A copy of body cut to PUSH_BODY_MAX bytes, at a character boundary. */
static char *cut_body(const char *body)
{
	if (body == NULL)
		return NULL;
	size_t n = strlen(body);
	if (n > PUSH_BODY_MAX) {
		n = PUSH_BODY_MAX;
		while (n > 0 && ((unsigned char)body[n] & 0xC0) == 0x80)
			n--;
	}
	char *s = xmalloc(n + 1);
	memcpy(s, body, n);
	s[n] = '\0';
	return s;
}

/* --- sending --- */

struct push_req {
	char account[2 * JID_PART_MAX + 2];
	char key[PUSH_KEY_LEN + 1];
	char app[3 * JID_PART_MAX + 3];
	unsigned long long seq;
};

static void remove_registration(struct loop *l, const char *account, const char *key);

/* Whether an error answer leaves the registration on: a passing state
 * ('wait'), or the way to the app server failing rather than the app
 * server refusing. */
static bool error_is_transient(const struct xml_node *reply)
{
	struct xml_node *e = xml_child(reply, NULL, "error");
	if (e == NULL)
		return false;
	const char *type = xml_attr(e, "type");
	if (type != NULL && strcmp(type, "wait") == 0)
		return true;
	return xml_child(e, NS_STANZA_ERRORS, "remote-server-not-found") != NULL ||
	       xml_child(e, NS_STANZA_ERRORS, "remote-server-timeout") != NULL;
}

static void push_answered(struct loop *l, void *arg, struct xml_node *reply, struct arena *a)
{
	struct push_req *r = arg;
	(void)a;
	if (l == NULL) {
		free(r);
		return;
	}
	struct push *p = l->srv->push;
	pthread_mutex_lock(&p->lock);
	struct push_slot *s = slot_find(p, r->account, r->key, false);
	if (s != NULL && s->seq == r->seq)
		s->seq = 0;
	pthread_mutex_unlock(&p->lock);
	const char *type = reply ? xml_attr(reply, "type") : NULL;
	if (reply == NULL) {
		log_info("push: no answer from %s for %s (registration %s kept)", r->app,
			 r->account, r->key);
	} else if (type != NULL && strcmp(type, "error") == 0) {
		if (error_is_transient(reply)) {
			log_info("push: %s answered %s with a passing error (registration %s kept)",
				 r->app, r->account, r->key);
		} else {
			log_info("push: %s refused a notification for %s: registration %s disabled",
				 r->app, r->account, r->key);
			remove_registration(l, r->account, r->key);
		}
	}
	free(r);
}

static bool include(enum push_include host, bool client)
{
	return host == PUSH_INCLUDE_ALWAYS || (host == PUSH_INCLUDE_OPT_IN && client);
}

/* Publishes one notification for the registration reg (as stored) of
 * account (bare JID) with summary sum (whose strings stay the caller's). */
static void publish(struct loop *l, const char *account, const char *key,
		    const struct xml_node *reg, const struct push_summary *sum)
{
	const char *app_s = xml_attr(reg, "jid");
	const char *node = xml_attr(reg, "node");
	struct jid app, from;
	if (app_s == NULL || node == NULL || jid_parse(&app, app_s, strlen(app_s)) != 0 ||
	    jid_parse(&from, account, strlen(account)) != 0)
		return;
	const struct config_push *cfg = push_cfg(l, from.domain);
	if (cfg == NULL)
		return;
	struct arena a;
	arena_init(&a);
	struct xml_node *iq = xml_new(&a, NS_CLIENT, "iq");
	xml_set_attr(&a, iq, "type", "set");
	xml_set_attr(&a, iq, "from", account);
	xml_set_attr(&a, iq, "to", app_s);
	struct xml_node *ps = xml_add_child(&a, iq, NS_PUBSUB, "pubsub");
	struct xml_node *pub = xml_add_child(&a, ps, NS_PUBSUB, "publish");
	xml_set_attr(&a, pub, "node", node);
	struct xml_node *item = xml_add_child(&a, pub, NS_PUBSUB, "item");
	struct xml_node *n = xml_add_child(&a, item, NS_PUSH, "notification");
	struct xml_node *x = xml_add_child(&a, n, NS_DATA, "x");
	xml_set_attr(&a, x, "type", "submit");
	add_field(&a, x, "FORM_TYPE", FORM_SUMMARY);
	char count[16];
	snprintf(count, sizeof count, "%u", sum->count);
	add_field(&a, x, "message-count", count);
	if (sum->sender && include(cfg->include_sender, is_true(xml_attr(reg, "include-sender"))))
		add_field(&a, x, "last-message-sender", sum->sender);
	if (sum->body && include(cfg->include_body, is_true(xml_attr(reg, "include-body"))))
		add_field(&a, x, "last-message-body", sum->body);
	struct xml_node *opts = xml_child(reg, NS_DATA, "x");
	if (opts != NULL) {
		struct xml_node *po = xml_add_child(&a, ps, NS_PUBSUB, "publish-options");
		struct xml_node *copy = xml_copy(&a, opts);
		copy->parent = po;
		po->children = po->last = copy;
	}
	struct push_req *r = xcalloc(1, sizeof *r);
	snprintf(r->account, sizeof r->account, "%s", account);
	snprintf(r->key, sizeof r->key, "%s", key);
	jid_format(&app, r->app, sizeof r->app);
	r->seq = sum->seq;
	iqreq_send(l, iq, &a, &app, push_answered, r);
	arena_reset(&a);
}

/* --- reading registrations on the storage thread --- */

struct push_read_job {
	char domain[JID_PART_MAX + 1], local[JID_PART_MAX + 1];
	char key[PUSH_KEY_LEN + 1];   /* one registration, or "" all */
	char *sender, *body;          /* a new message's (owned), or NULL */
	bool followup;                /* a folded notification, already reserved */
	struct push_summary sum;      /* followup: what it carries */
	int n;
	char keys[PUSH_REGS_MAX][PUSH_KEY_LEN + 1];
	struct buf values;
	size_t ends[PUSH_REGS_MAX];
};

static void read_one(void *arg, const char *key, const void *value, size_t len)
{
	struct push_read_job *j = arg;
	if (j->n >= PUSH_REGS_MAX || strlen(key) != PUSH_KEY_LEN)
		return;
	memcpy(j->keys[j->n], key, PUSH_KEY_LEN + 1);
	buf_append(&j->values, value, len);
	j->ends[j->n++] = j->values.len;
}

static int read_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct push_read_job *j = arg;
	if (j->key[0] == '\0')
		return drv->map_list_max(st, j->domain, j->local, STORE_PUSH,
					 (size_t)PUSH_REGS_MAX * PUSH_VALUE_MAX, read_one, j) < 0
			       ? -1
			       : 0;
	struct buf v;
	buf_init(&v);
	int rc = drv->map_get(st, j->domain, j->local, STORE_PUSH, j->key, &v);
	if (rc == 0)
		read_one(j, j->key, v.data, v.len);
	buf_free(&v);
	return rc < 0 ? -1 : 0;
}

static void read_free(struct push_read_job *j)
{
	free(j->sender);
	free(j->body);
	free(j->sum.sender);
	free(j->sum.body);
	buf_free(&j->values);
	free(j);
}

/* A new message for the registration: counted, and sent at once when
 * nothing is in flight and the interval has passed, else folded. */
static void notify_registration(struct loop *l, struct push_read_job *j, const char *account,
				const char *key, const struct xml_node *reg, int interval_ms)
{
	struct push *p = l->srv->push;
	unsigned long long now = now_ms();
	struct push_summary sum = { 0 };
	bool send = false;
	pthread_mutex_lock(&p->lock);
	struct push_slot *s = slot_find(p, account, key, true);
	s->count++;
	s->loop = l->index;
	s->interval_ms = interval_ms;
	replace_str(&s->sender, j->sender);
	replace_str(&s->body, j->body);
	if (s->seq != 0 && now - s->sent_ms > IQREQ_TIMEOUT_MS + 5000)
		s->seq = 0; /* its answer was lost without a word */
	if (s->seq == 0 && (s->sent_ms == 0 || now - s->sent_ms >= (unsigned long long)interval_ms)) {
		slot_take(p, s, now, &sum);
		send = true;
	} else {
		s->pending = true;
	}
	pthread_mutex_unlock(&p->lock);
	if (send)
		publish(l, account, key, reg, &sum);
	free(sum.sender);
	free(sum.body);
}

static void read_done(struct loop *l, void *arg, int rc)
{
	struct push_read_job *j = arg;
	if (l == NULL || rc < 0) {
		read_free(j);
		return;
	}
	char account[2 * JID_PART_MAX + 2];
	snprintf(account, sizeof account, "%s@%s", j->local, j->domain);
	const struct config_push *cfg = push_cfg(l, j->domain);
	if (j->followup && j->n == 0) {
		/* Disabled meanwhile: nothing is in flight for it. */
		struct push *p = l->srv->push;
		pthread_mutex_lock(&p->lock);
		struct push_slot *s = slot_find(p, account, j->key, false);
		if (s != NULL && s->seq == j->sum.seq)
			slot_clear(s);
		pthread_mutex_unlock(&p->lock);
	}
	size_t start = 0;
	for (int i = 0; i < j->n && cfg != NULL; i++) {
		struct arena a;
		arena_init(&a);
		struct xml_node *reg = xml_parse_element(&a, j->values.data + start,
							 j->ends[i] - start);
		start = j->ends[i];
		if (reg != NULL) {
			if (j->followup)
				publish(l, account, j->keys[i], reg, &j->sum);
			else
				notify_registration(l, j, account, j->keys[i], reg,
						    cfg->min_interval * 1000);
		}
		arena_reset(&a);
	}
	read_free(j);
}

static struct push_read_job *read_job(const struct jid *account, const char *key)
{
	struct push_read_job *j = xcalloc(1, sizeof *j);
	snprintf(j->domain, sizeof j->domain, "%s", account->domain);
	snprintf(j->local, sizeof j->local, "%s", account->local);
	if (key != NULL)
		snprintf(j->key, sizeof j->key, "%s", key);
	buf_init(&j->values);
	return j;
}

/* The message st from `from` concerns account's registration key (NULL:
 * all of them). */
static void push_event(struct hook_ctx *c, const struct jid *account, const char *key)
{
	const char *body, *sender = NULL;
	char from[3 * JID_PART_MAX + 3];
	if (c->from != NULL && jid_format(c->from, from, sizeof from) >= 0)
		sender = from;
	if (!worth_waking(c->a, c->st, &body, &sender))
		return;
	struct push_read_job *j = read_job(account, key);
	j->sender = sender ? xstrdup(sender) : NULL;
	j->body = cut_body(body);
	storeq_call(c->loop->srv->storeq, c->loop, read_run, read_done, j);
}

/* --- removal --- */

struct push_del_job {
	char domain[JID_PART_MAX + 1], local[JID_PART_MAX + 1];
	char key[PUSH_KEY_LEN + 1]; /* "" all */
};

static int del_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct push_del_job *j = arg;
	return drv->map_del(st, j->domain, j->local, STORE_PUSH, j->key[0] ? j->key : NULL) < 0
		       ? -1
		       : 0;
}

static void remove_registration(struct loop *l, const char *account, const char *key)
{
	struct jid acc;
	if (jid_parse(&acc, account, strlen(account)) != 0)
		return;
	struct push *p = l->srv->push;
	pthread_mutex_lock(&p->lock);
	struct push_slot *s = slot_find(p, account, key, false);
	if (s != NULL)
		slot_clear(s);
	pthread_mutex_unlock(&p->lock);
	struct push_del_job *j = xcalloc(1, sizeof *j);
	snprintf(j->domain, sizeof j->domain, "%s", acc.domain);
	snprintf(j->local, sizeof j->local, "%s", acc.local);
	snprintf(j->key, sizeof j->key, "%s", key);
	storeq_call(l->srv->storeq, NULL, del_run, NULL, j);
}

/* --- the sweep: folded notifications whose time has come --- */

void push_sweep(struct loop *l)
{
	struct push *p = l->srv->push;
	if (p == NULL || l == l->srv->service)
		return;
	if (l->index == 0)
		iqreq_expire_due(l);
	unsigned long long now = now_ms();
	struct push_read_job *due[64];
	int n = 0;
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < PUSH_SETS && n < 64; i++) {
		for (int w = 0; w < PUSH_WAYS && n < 64; w++) {
			struct push_slot *s = &p->slots[i][w];
			if (s->account == NULL || !s->pending || s->loop != l->index)
				continue;
			if (s->seq != 0 && now - s->sent_ms > IQREQ_TIMEOUT_MS + 5000)
				s->seq = 0;
			if (s->seq != 0 || now - s->sent_ms < (unsigned long long)s->interval_ms)
				continue;
			struct jid acc;
			if (jid_parse(&acc, s->account, strlen(s->account)) != 0) {
				slot_clear(s);
				continue;
			}
			struct push_read_job *j = read_job(&acc, s->key);
			j->followup = true;
			slot_take(p, s, now, &j->sum);
			due[n++] = j;
		}
	}
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < n; i++)
		storeq_call(l->srv->storeq, l, read_run, read_done, due[i]);
}

/* --- hooks --- */

/* A message going to offline storage: every registration of the account. */
static enum status push_on_deliver(struct hook_ctx *c)
{
	if (!c->offline)
		return OK;
	const struct config_push *cfg = push_cfg(c->loop, c->to->domain);
	if (cfg == NULL || !cfg->enabled)
		return OK;
	struct jid account = *c->to;
	account.resource[0] = '\0';
	push_event(c, &account, NULL);
	return OK;
}

/* A message kept for a detached session: the registration it enabled. */
static enum status push_on_queued(struct hook_ctx *c)
{
	const struct config_push *cfg = push_cfg(c->loop, c->to->domain);
	if (cfg == NULL || !cfg->enabled)
		return OK;
	char key[PUSH_KEY_LEN + 1];
	struct push *p = c->loop->srv->push;
	pthread_mutex_lock(&p->lock);
	bool has = session_get(p, c->session, key);
	pthread_mutex_unlock(&p->lock);
	if (!has)
		return OK;
	struct jid account = *c->to;
	account.resource[0] = '\0';
	push_event(c, &account, key);
	return OK;
}

/* A session came online, or a detached one was resumed: the count starts
 * again, what was folded is moot (the client fetches it). */
static enum status push_on_session_started(struct hook_ctx *c)
{
	char account[2 * JID_PART_MAX + 2];
	jid_format_bare(c->from, account, sizeof account);
	struct push *p = c->loop->srv->push;
	pthread_mutex_lock(&p->lock);
	struct push_slot *set = p->slots[str_hash(account) % PUSH_SETS];
	for (int w = 0; w < PUSH_WAYS; w++) {
		struct push_slot *s = &set[w];
		if (s->account == NULL || strcmp(s->account, account) != 0)
			continue;
		s->count = 0;
		s->pending = false;
		replace_str(&s->sender, NULL);
		replace_str(&s->body, NULL);
	}
	pthread_mutex_unlock(&p->lock);
	return OK;
}

/* A resumed session has its new connection's id: the registration it
 * enabled goes with it, and its count starts again. */
static enum status push_on_session_resumed(struct hook_ctx *c)
{
	struct push *p = c->loop->srv->push;
	char key[PUSH_KEY_LEN + 1];
	pthread_mutex_lock(&p->lock);
	if (c->previous != c->session && session_get(p, c->previous, key)) {
		session_forget(p, c->previous, NULL);
		session_set(p, c->session, key);
	}
	pthread_mutex_unlock(&p->lock);
	return push_on_session_started(c);
}

static enum status push_on_session_ended(struct hook_ctx *c)
{
	struct push *p = c->loop->srv->push;
	pthread_mutex_lock(&p->lock);
	session_forget(p, c->session, NULL);
	pthread_mutex_unlock(&p->lock);
	return OK;
}

static enum status push_on_account_deleted(struct hook_ctx *c)
{
	char account[2 * JID_PART_MAX + 2];
	jid_format_bare(c->from, account, sizeof account);
	struct push *p = c->loop->srv->push;
	pthread_mutex_lock(&p->lock);
	struct push_slot *set = p->slots[str_hash(account) % PUSH_SETS];
	for (int w = 0; w < PUSH_WAYS; w++)
		if (set[w].account != NULL && strcmp(set[w].account, account) == 0)
			slot_clear(&set[w]);
	pthread_mutex_unlock(&p->lock);
	struct push_del_job *j = xcalloc(1, sizeof *j);
	snprintf(j->domain, sizeof j->domain, "%s", c->from->domain);
	snprintf(j->local, sizeof j->local, "%s", c->from->local);
	storeq_call(c->loop->srv->storeq, NULL, del_run, NULL, j);
	return OK;
}

/* --- the module --- */

static bool push_on_host(const struct config_host *h)
{
	return h->push.enabled;
}

static const char *const features[] = { NS_PUSH, NULL };

static const struct module_iq iqs[] = {
	{ "set", NS_PUSH, "enable", IQ_ACCOUNT, push_enable },
	{ "set", NS_PUSH, "disable", IQ_ACCOUNT, push_disable },
	{ NULL, NULL, NULL, 0, NULL },
};

/* Late on HOOK_MESSAGE_DELIVER: after anything that may consume the
 * message (then it is not kept, and wakes nobody). */
static const struct module_hook hooks[] = {
	{ HOOK_MESSAGE_DELIVER, 900, push_on_deliver },
	{ HOOK_MESSAGE_QUEUED, 900, push_on_queued },
	{ HOOK_SESSION_STARTED, 50, push_on_session_started },
	{ HOOK_SESSION_RESUMED, 50, push_on_session_resumed },
	{ HOOK_SESSION_ENDED, 50, push_on_session_ended },
	{ HOOK_ACCOUNT_DELETED, 50, push_on_account_deleted },
	{ 0, 0, NULL },
};

const struct module mod_push = { .name = "push", .features = features, .iqs = iqs,
				 .hooks = hooks, .on_host = push_on_host };
