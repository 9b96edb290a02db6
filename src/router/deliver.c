#include "router/deliver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c2s/c2s.h"
#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "directory/directory.h"
#include "modules/blocking.h"
#include "modules/carbons.h"
#include "modules/module.h"
#include "modules/offline.h"
#include "muc/muc.h"
#include "router/hooks.h"
#include "storage/storeq.h"
#include "xml/xml_parse.h"
#include "router/iqreq.h"
#include "modules/presence.h"
#include "modules/pubsub_service.h"
#include "s2s/s2s.h"

static bool is_local_domain(struct loop *l, const char *domain)
{
	return config_find_host(l->srv->cfg, domain) != NULL;
}

int deliver_account_exists(struct loop *l, const char *domain, const char *local)
{
	struct router_target t[1];
	int n_sessions = 0;
	char bare[2 * JID_PART_MAX + 2];
	snprintf(bare, sizeof bare, "%s@%s", local, domain);
	router_find_bare_message(l->srv->router, bare, t, 1, &n_sessions);
	if (n_sessions > 0)
		return 1;
	struct directory *d = directory_of(l->srv, domain);
	if (d != NULL)
		return directory_user_exists(d, local);
	struct user_credentials cred;
	int rc = l->srv->storage->user_get(l->store, domain, local, &cred);
	return rc == 0 ? 1 : rc == 1 ? 0 : -1;
}

static int account_exists(struct loop *l, const struct jid *j, const char *bare)
{
	(void)bare;
	return deliver_account_exists(l, j->domain, j->local);
}

void deliver_to_session(struct loop *l, const struct router_target *t, struct refbuf *bytes)
{
	if (t->loop == l->index) {
		if (c2s_deliver(l, t->session, bytes->data, bytes->len) != 0)
			c2s_undeliverable(l, bytes->data, bytes->len);
		return;
	}
	struct inbox_item *item = xcalloc(1, sizeof *item);
	item->kind = INBOX_DELIVER;
	item->session = t->session;
	item->bytes = refbuf_ref(bytes);
	loop_post(&l->srv->loops[t->loop], item);
}

static struct refbuf *serialize(struct xml_node *st)
{
	struct buf b;
	buf_init(&b);
	xml_serialize(st, NS_CLIENT, &b);
	struct refbuf *r = refbuf_new(b.data, b.len);
	buf_free(&b);
	return r;
}

void deliver_to_targets(struct loop *l, struct xml_node *st, const struct router_target *t,
			int n)
{
	if (n == 0)
		return;
	struct refbuf *bytes = serialize(st);
	for (int i = 0; i < n; i++)
		deliver_to_session(l, &t[i], bytes);
	refbuf_release(bytes);
}

void deliver_to_jid(struct loop *l, struct xml_node *st, const struct jid *to)
{
	char bare[2 * JID_PART_MAX + 2];
	struct router_target t;
	if (jid_format_bare(to, bare, sizeof bare) < 0)
		return;
	if (!is_local_domain(l, to->domain)) {
		/* An answer to a remote sender goes back over federation. */
		const char *f = xml_attr(st, "from");
		struct jid from;
		if (f != NULL && jid_parse(&from, f, strlen(f)) == 0) {
			struct arena a;
			arena_init(&a);
			s2s_route(l, st, &a, &from, to);
			arena_reset(&a);
		}
		return;
	}
	if (router_find_full(l->srv->router, bare, to->resource, &t) == 0)
		deliver_to_targets(l, st, &t, 1);
}

void deliver_iq_answer(struct loop *l, const char *from, const char *to, const char *id,
		       const char *etype, const char *condition, const char *text)
{
	struct jid asker;
	if (jid_parse(&asker, to, strlen(to)) != 0)
		return;
	struct arena a;
	arena_init(&a);
	struct xml_node *iq = xml_new(&a, NS_CLIENT, "iq");
	xml_set_attr(&a, iq, "type", condition ? "error" : "result");
	if (id)
		xml_set_attr(&a, iq, "id", id);
	xml_set_attr(&a, iq, "from", from);
	xml_set_attr(&a, iq, "to", to);
	if (condition) {
		struct xml_node *e = xml_add_child(&a, iq, NS_CLIENT, "error");
		xml_set_attr(&a, e, "type", etype);
		xml_add_child(&a, e, NS_STANZA_ERRORS, condition);
		if (text)
			xml_add_text(&a, xml_add_child(&a, e, NS_STANZA_ERRORS, "text"), text,
				     strlen(text));
	}
	deliver_to_jid(l, iq, &asker);
	arena_reset(&a);
}

void deliver_error(struct loop *l, struct xml_node *st, struct arena *a, const char *type,
		   const char *condition)
{
	deliver_error_app(l, st, a, type, condition, NULL, NULL);
}

void deliver_error_app(struct loop *l, struct xml_node *st, struct arena *a, const char *type,
		       const char *condition, const char *app_ns, const char *app_name)
{
	const char *st_type = xml_attr(st, "type");
	if (st_type != NULL && strcmp(st_type, "error") == 0)
		return;
	const char *from = xml_attr(st, "from");
	const char *to = xml_attr(st, "to");
	struct jid sender;
	if (from == NULL || jid_parse(&sender, from, strlen(from)) != 0)
		return;
	xml_set_attr(a, st, "from", to);
	xml_set_attr(a, st, "to", from);
	xml_set_attr(a, st, "type", "error");
	struct xml_node *err = xml_add_child(a, st, st->ns, "error");
	xml_set_attr(a, err, "type", type);
	xml_add_child(a, err, NS_STANZA_ERRORS, condition);
	if (app_ns != NULL)
		xml_add_child(a, err, app_ns, app_name);
	deliver_to_jid(l, st, &sender);
}

static bool type_is(const struct xml_node *st, const char *type)
{
	const char *t = xml_attr(st, "type");
	if (t == NULL)
		t = strcmp(st->name, "message") == 0 ? "normal" : "";
	return strcmp(t, type) == 0;
}

static void answer_iq(struct loop *l, struct xml_node *st, struct arena *a,
		      const struct jid *from, const struct jid *to, bool to_account)
{
	struct iq_ctx c = { .loop = l, .iq = st, .a = a, .from = from, .to = to,
			    .to_account = to_account };
	c.payload = xml_first_element(st);
	if (module_dispatch_iq(&c) != OK)
		deliver_error(l, st, a, "cancel", "service-unavailable");
}

/* An iq held until the storage thread committed what was queued before
 * it: a copy, with its own arena. */
struct held_iq {
	struct arena a;
	struct xml_node *st;
	struct jid from, to;
	bool to_account;
};

static int held_iq_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	(void)st, (void)drv, (void)arg;
	return 0;
}

static void held_iq_done(struct loop *l, void *arg, int rc)
{
	(void)rc;
	struct held_iq *h = arg;
	if (l != NULL) {
		l->iqs_waiting--;
		answer_iq(l, h->st, &h->a, &h->from, &h->to, h->to_account);
	}
	arena_reset(&h->a);
	free(h);
}

static void hold_iq(struct loop *l, struct xml_node *st, const struct jid *from,
		    const struct jid *to, bool to_account)
{
	struct held_iq *h = xcalloc(1, sizeof *h);
	arena_init(&h->a);
	h->st = xml_copy(&h->a, st);
	h->from = *from;
	h->to = *to;
	h->to_account = to_account;
	l->iqs_waiting++;
	storeq_call(l->srv->storeq, l, held_iq_run, held_iq_done, h);
}

static void handle_iq(struct loop *l, struct xml_node *st, struct arena *a,
		      const struct jid *from, const struct jid *to, bool to_account)
{
	if (!type_is(st, "get") && !type_is(st, "set")) {
		/* Results and errors to the server or to an account's bare
		 * JID end here, unless they answer a request the server sent
		 * (iqreq.h; push notifications go from the bare JID). */
		iqreq_answer(l, st, a, from);
		return;
	}
	/* An answer from the server means that what the sender sent before
	 * is durable (offline messages, the archive): while the storage
	 * thread has work in hand, the iq waits behind it, and so do the
	 * iqs after it, which keeps them in order. */
	if (l->iqs_waiting > 0 || storeq_busy(l->srv->storeq)) {
		hold_iq(l, st, from, to, to_account);
		return;
	}
	answer_iq(l, st, a, from, to, to_account);
}

/* HOOK_MESSAGE_DELIVER for a message to a local account; true when a
 * handler consumed it. */
static bool deliver_hook(struct loop *l, struct xml_node *st, struct arena *a,
			 const struct jid *from, const struct jid *to, bool offline)
{
	struct hook_ctx c = { .loop = l, .st = st, .a = a, .from = from, .to = to,
			      .offline = offline };
	return hooks_run(HOOK_MESSAGE_DELIVER, &c) == DONE;
}

/* RFC 6121 §8.5.2: a message to the bare JID of a local account. */
static void message_to_bare(struct loop *l, struct xml_node *st, struct arena *a,
			    const struct jid *from, const struct jid *to, const char *bare)
{
	struct router_target t[ROUTER_MAX_TARGETS];
	int n_sessions;
	int n = router_find_bare_message(l->srv->router, bare, t, ROUTER_MAX_TARGETS, &n_sessions);
	if (type_is(st, "error")) {
		deliver_to_targets(l, st, t, n);
		return;
	}
	if (n > 0 && !type_is(st, "groupchat")) {
		if (deliver_hook(l, st, a, from, to, false))
			return;
		deliver_to_targets(l, st, t, n);
		carbons_copy(l, st, bare, "received", 0, t, n);
		return;
	}
	if (type_is(st, "headline"))
		return;
	int exists = n_sessions > 0 ? 1 : account_exists(l, to, bare);
	if (exists < 0) {
		deliver_error(l, st, a, "wait", "internal-server-error");
		return;
	}
	if (exists == 0 || type_is(st, "groupchat")) {
		deliver_error(l, st, a, "cancel", "service-unavailable");
		return;
	}
	/* chat and normal: kept for the next login (XEP-0160); over the
	 * quota the sender hears so (RFC 6121 §8.5.2.2.1). */
	if (deliver_hook(l, st, a, from, to, true))
		return;
	switch (offline_store(l, to, st)) {
	case 0:
		break;
	case 1:
		deliver_error(l, st, a, "cancel", "service-unavailable");
		break;
	default:
		deliver_error(l, st, a, "wait", "internal-server-error");
		break;
	}
}

/* XEP-0191 in both directions. Returns true when the stanza stops here
 * (answered with an error where the XEP says so). */
static bool blocked(struct loop *l, struct xml_node *st, struct arena *a, const struct jid *from,
		    const struct jid *to)
{
	char from_bare[2 * JID_PART_MAX + 2], to_bare[2 * JID_PART_MAX + 2];
	jid_format_bare(from, from_bare, sizeof from_bare);
	jid_format_bare(to, to_bare, sizeof to_bare);
	if (strcmp(from_bare, to_bare) == 0)
		return false;
	bool answer = !type_is(st, "error") && !type_is(st, "result") &&
		      !type_is(st, "groupchat") && !type_is(st, "headline");
	if (blocking_blocks(l, from_bare, to)) {
		if (answer)
			deliver_error_app(l, st, a, "cancel", "not-acceptable", NS_BLOCKING_ERRORS,
					  "blocked");
		return true;
	}
	if (to->local[0] != '\0' && is_local_domain(l, to->domain) &&
	    blocking_blocks(l, to_bare, from)) {
		if (answer)
			deliver_error(l, st, a, "cancel", "service-unavailable");
		return true;
	}
	return false;
}

void deliver_inbound(struct loop *l, struct xml_node *st, struct arena *a, const struct jid *from,
		     const struct jid *to)
{
	if (strcmp(st->name, "presence") == 0) {
		presence_inbound(l, st, a, from, to);
		return;
	}
	/* The same rules as for a local sender; the sender's own-account
	 * parts (carbons of sent messages) find no session and do nothing. */
	deliver_stanza(l, st, a, from, to);
}

static void deliver_stanza_now(struct loop *l, struct xml_node *st, struct arena *a,
			       const struct jid *from, const struct jid *to);

void deliver_stanza(struct loop *l, struct xml_node *st, struct arena *a, const struct jid *from,
		    const struct jid *to)
{
	/* Nested deliveries (bounces) have their own. */
	__typeof__(l->archived_sent) outer = l->archived_sent;
	l->archived_sent.st = NULL;
	l->archived_sent.id = 0;
	deliver_stanza_now(l, st, a, from, to);
	l->archived_sent = outer;
}

static void deliver_stanza_now(struct loop *l, struct xml_node *st, struct arena *a,
			       const struct jid *from, const struct jid *to)
{
	const char *kind = st->name;
	struct jid self;
	if (to == NULL) {
		/* No 'to': the stanza is for the sender's own account. */
		memcpy(self.local, from->local, sizeof self.local);
		memcpy(self.domain, from->domain, sizeof self.domain);
		self.resource[0] = '\0';
		to = &self;
	}
	if (strcmp(kind, "presence") == 0) {
		presence_outbound(l, st, a, from, to);
		return;
	}
	if (muc_route(l, st, a, from, to) || pubsub_service_route(l, st, a, from, to))
		return;
	if (blocked(l, st, a, from, to))
		return;
	if (strcmp(kind, "message") == 0 && from->local[0] != '\0' &&
	    is_local_domain(l, from->domain)) {
		struct hook_ctx c = { .loop = l, .st = st, .a = a, .from = from, .to = to };
		if (hooks_run(HOOK_MESSAGE_SENT, &c) == DONE)
			return;
	}
	if (strcmp(kind, "message") == 0) {
		/* The sender's other resources see what it sent (XEP-0280). */
		char from_bare[2 * JID_PART_MAX + 2];
		struct router_target self;
		jid_format_bare(from, from_bare, sizeof from_bare);
		if (router_find_full(l->srv->router, from_bare, from->resource, &self) == 0)
			carbons_copy(l, st, from_bare, "sent", self.session, NULL, 0);
	}
	if (!is_local_domain(l, to->domain)) {
		s2s_route(l, st, a, from, to);
		return;
	}
	if (to->local[0] == '\0') {
		if (strcmp(kind, "iq") == 0 && to->resource[0] == '\0')
			handle_iq(l, st, a, from, to, false);
		else if (strcmp(kind, "iq") == 0 && (type_is(st, "get") || type_is(st, "set")))
			deliver_error(l, st, a, "cancel", "service-unavailable");
		return;
	}
	char bare[2 * JID_PART_MAX + 2];
	jid_format_bare(to, bare, sizeof bare);
	if (to->resource[0] != '\0') {
		struct router_target t;
		if (router_find_full(l->srv->router, bare, to->resource, &t) == 0) {
			bool message = strcmp(kind, "message") == 0;
			if (message && !type_is(st, "error") && !type_is(st, "groupchat") &&
			    deliver_hook(l, st, a, from, to, false))
				return;
			deliver_to_targets(l, st, &t, 1);
			if (message)
				carbons_copy(l, st, bare, "received", 0, &t, 1);
			return;
		}
		/* RFC 6121 §8.5.3.2: no such resource. */
		if (strcmp(kind, "message") == 0) {
			if (type_is(st, "chat") || type_is(st, "normal")) {
				message_to_bare(l, st, a, from, to, bare);
				return;
			}
			if (type_is(st, "groupchat")) {
				deliver_error(l, st, a, "cancel", "service-unavailable");
				return;
			}
			return;
		}
		if (strcmp(kind, "iq") == 0) {
			if (type_is(st, "get") || type_is(st, "set"))
				deliver_error(l, st, a, "cancel", "service-unavailable");
			return;
		}
		return; /* presence to an unavailable resource is dropped */
	}
	if (strcmp(kind, "message") == 0) {
		message_to_bare(l, st, a, from, to, bare);
		return;
	}
	/* iq to a bare JID: answered by the server on the account's behalf. */
	int exists = account_exists(l, to, bare);
	if (exists == 0) {
		if (type_is(st, "get") || type_is(st, "set"))
			deliver_error(l, st, a, "cancel", "service-unavailable");
		return;
	}
	handle_iq(l, st, a, from, to, true);
}
