/* XEP-0280: Message Carbons. A session that enables carbons gets a copy
 * of every chat message its account receives on another resource
 * (<received/>) and of every one another resource of its account sends
 * (<sent/>). The copies are made in the delivery path (carbons_copy). */
#include "modules/carbons.h"

#include <string.h>

#include "core/server.h"
#include "modules/module.h"
#include "modules/presence.h"
#include "router/deliver.h"
#include "router/router.h"

#define NS_CARBONS "urn:xmpp:carbons:2"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_HINTS "urn:xmpp:hints"

static enum status set_carbons(struct iq_ctx *c, bool on)
{
	if (c->to_account && strcmp(c->to->local, c->from->local) != 0) {
		module_error(c, "cancel", "forbidden");
		return OK;
	}
	char bare[2 * JID_PART_MAX + 2];
	struct router_target t;
	jid_format_bare(c->from, bare, sizeof bare);
	if (router_find_full(c->loop->srv->router, bare, c->from->resource, &t) == 0) {
		if (on)
			router_set_interested(c->loop->srv->router, bare, c->from->resource,
					      t.session, ROUTER_WANTS_CARBONS);
		else
			router_clear_interested(c->loop->srv->router, bare, c->from->resource,
						t.session, ROUTER_WANTS_CARBONS);
	}
	module_reply(c, NULL);
	return OK;
}

static enum status enable(struct iq_ctx *c) { return set_carbons(c, true); }

static enum status disable(struct iq_ctx *c) { return set_carbons(c, false); }

/* Which messages are copied (XEP-0280 §6): chat messages, and normal ones
 * with a body; never those marked private or no-copy. */
static bool eligible(const struct xml_node *st)
{
	const char *type = xml_attr(st, "type");
	bool chat = type != NULL && strcmp(type, "chat") == 0;
	bool normal = type == NULL || strcmp(type, "normal") == 0;
	if (!chat && !(normal && xml_child(st, NS_CLIENT, "body") != NULL))
		return false;
	return xml_child(st, NS_CARBONS, "private") == NULL &&
	       xml_child(st, NS_HINTS, "no-copy") == NULL &&
	       xml_child(st, NS_CARBONS, "received") == NULL &&
	       xml_child(st, NS_CARBONS, "sent") == NULL;
}

void carbons_copy(struct loop *l, struct xml_node *st, const char *owner, const char *direction,
		  uint64_t skip, const struct router_target *already, int n_already)
{
	if (!eligible(st))
		return;
	struct router_target t[ROUTER_MAX_TARGETS];
	int n = router_find_interested(l->srv->router, owner, ROUTER_WANTS_CARBONS, t,
				       ROUTER_MAX_TARGETS);
	struct refbuf *bytes = NULL;
	for (int i = 0; i < n; i++) {
		bool had = t[i].session == skip;
		for (int k = 0; k < n_already && !had; k++)
			had = already[k].session == t[i].session;
		if (had)
			continue;
		if (bytes == NULL) {
			struct buf b;
			buf_init(&b);
			buf_puts(&b, "<message type='chat' from='");
			buf_append_escaped(&b, owner, strlen(owner));
			buf_puts(&b, "' to='");
			buf_append_escaped(&b, owner, strlen(owner));
			buf_printf(&b, "'><%s xmlns='" NS_CARBONS "'><forwarded xmlns='" NS_FORWARD "'>",
				   direction);
			xml_serialize(st, NS_FORWARD, &b);
			buf_printf(&b, "</forwarded></%s></message>", direction);
			bytes = refbuf_new(b.data, b.len);
			buf_free(&b);
		}
		deliver_to_session(l, &t[i], bytes);
	}
	refbuf_release(bytes);
}

static const char *const features[] = { NS_CARBONS, NULL };

static const struct module_iq iqs[] = {
	{ "set", NS_CARBONS, "enable", IQ_ACCOUNT, enable },
	{ "set", NS_CARBONS, "disable", IQ_ACCOUNT, disable },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_carbons = { "carbons", features, iqs, NULL, NULL };
