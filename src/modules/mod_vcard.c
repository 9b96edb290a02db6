/* XEP-0054: vcard-temp. Anyone may read an account's vCard (the router
 * has already refused iq to accounts that do not exist); only the account
 * itself may replace it. Kept serialised in map store "vcard", key
 * "vcard". */
#include <string.h>

#include <stdlib.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "directory/directory.h"
#include "router/deliver.h"
#include "modules/module.h"
#include "xml/xml_parse.h"

#define NS_VCARD "vcard-temp"
#define STORE_VCARD "vcard"
#define KEY_VCARD "vcard"

/* A vCard request waiting for the directory. */
struct vcard_wait {
	char *id;        /* the request's id, or NULL */
	char *requester; /* full JID the answer goes to */
	char *account;   /* bare JID it comes from */
};

static void vcard_wait_free(struct vcard_wait *w)
{
	free(w->id);
	free(w->requester);
	free(w->account);
	free(w);
}

static void on_directory_vcard(struct loop *l, void *arg, enum dir_status st,
			       const struct buf *vcard)
{
	struct vcard_wait *w = arg;
	struct jid to;
	if (loop_stopping(l) || jid_parse(&to, w->requester, strlen(w->requester)) != 0) {
		vcard_wait_free(w);
		return;
	}
	struct arena a;
	arena_init(&a);
	struct xml_node *r = xml_new(&a, NS_CLIENT, "iq");
	if (w->id)
		xml_set_attr(&a, r, "id", w->id);
	xml_set_attr(&a, r, "from", w->account);
	xml_set_attr(&a, r, "to", w->requester);
	struct xml_node *v = NULL;
	if (st == DIR_OK)
		v = xml_parse_element(&a, vcard->data, vcard->len);
	if (v != NULL || st == DIR_UNKNOWN) {
		/* An account the directory no longer has: an empty vCard. */
		if (v == NULL)
			v = xml_new(&a, NS_VCARD, "vCard");
		xml_set_attr(&a, r, "type", "result");
		v->parent = r;
		r->children = r->last = v;
	} else {
		xml_set_attr(&a, r, "type", "error");
		struct xml_node *e = xml_add_child(&a, r, NS_CLIENT, "error");
		xml_set_attr(&a, e, "type", "wait");
		xml_add_child(&a, e, NS_STANZA_ERRORS, "remote-server-timeout");
	}
	deliver_to_jid(l, r, &to);
	arena_reset(&a);
	vcard_wait_free(w);
}

static void vcard_from_directory(struct iq_ctx *c, struct directory *d)
{
	struct vcard_wait *w = xcalloc(1, sizeof *w);
	const char *id = xml_attr(c->iq, "id");
	char buf[3 * JID_PART_MAX + 3];
	w->id = id ? xstrdup(id) : NULL;
	jid_format(c->from, buf, sizeof buf);
	w->requester = xstrdup(buf);
	jid_format_bare(c->to, buf, sizeof buf);
	w->account = xstrdup(buf);
	directory_vcard(d, c->loop, c->to->local, on_directory_vcard, w);
}

/* The directory's vCard map for the account's host, or NULL. */
static const struct config_vcard_map *directory_map(struct iq_ctx *c, struct directory **d)
{
	*d = directory_of(c->loop->srv, c->to->domain);
	const struct config_host *h = config_find_host(c->loop->srv->cfg, c->to->domain);
	if (*d == NULL || h == NULL || !h->ldap.vcard.enabled)
		return NULL;
	return &h->ldap.vcard;
}

static enum status vcard_get(struct iq_ctx *c)
{
	struct server *srv = c->loop->srv;
	struct directory *d;
	const struct config_vcard_map *map = directory_map(c, &d);
	if (map != NULL && map->read_only) {
		vcard_from_directory(c, d);
		return OK;
	}
	struct buf b;
	buf_init(&b);
	int rc = srv->storage->map_get(c->loop->store, c->to->domain, c->to->local, STORE_VCARD,
				       KEY_VCARD, &b);
	struct xml_node *v = NULL;
	if (rc == 0) {
		v = xml_parse_element(c->a, b.data, b.len);
		if (v == NULL || !xml_is(v, NS_VCARD, "vCard")) {
			log_error("vcard of %s@%s: unreadable, answering an empty one",
				  c->to->local, c->to->domain);
			v = NULL;
		}
	}
	buf_free(&b);
	if (rc < 0) {
		module_error(c, "wait", "internal-server-error");
		return OK;
	}
	if (v == NULL && map != NULL) {
		/* read_only off: the user's own vCard if set, else the directory's. */
		vcard_from_directory(c, d);
		return OK;
	}
	/* XEP-0054 §3.1: no vCard is an empty one. */
	if (v == NULL)
		v = xml_new(c->a, NS_VCARD, "vCard");
	module_reply(c, v);
	return OK;
}

static enum status vcard_set(struct iq_ctx *c)
{
	if (strcmp(c->to->local, c->from->local) != 0 ||
	    strcmp(c->to->domain, c->from->domain) != 0) {
		module_error(c, "auth", "forbidden");
		return OK;
	}
	struct directory *d;
	const struct config_vcard_map *map = directory_map(c, &d);
	if (map != NULL && map->read_only) {
		/* The directory is the source of truth (docs/directory.md). */
		module_error(c, "cancel", "not-allowed");
		return OK;
	}
	struct buf b;
	buf_init(&b);
	/* Serialised in a jabber:client context, so it carries its xmlns and
	 * xml_parse_element reads it back as it was. */
	xml_serialize(c->payload, NS_CLIENT, &b);
	int rc = 0;
	/* limits.max_vcard_size: photos (XEP-0153) fit; this is an address
	 * card, not a file store. */
	if (b.len > c->loop->srv->cfg->limits.max_vcard_size) {
		module_error(c, "modify", "not-acceptable");
	} else {
		struct server *srv = c->loop->srv;
		rc = srv->storage->map_put(c->loop->store, c->from->domain, c->from->local,
					   STORE_VCARD, KEY_VCARD, b.data, b.len);
		if (rc == 0)
			module_reply(c, NULL);
		else
			module_error(c, "wait", "internal-server-error");
	}
	buf_free(&b);
	return OK;
}

static const char *const features[] = { NS_VCARD, NULL };

static const struct module_iq iqs[] = {
	{ "get", NS_VCARD, "vCard", IQ_ACCOUNT, vcard_get },
	{ "set", NS_VCARD, "vCard", IQ_ACCOUNT, vcard_set },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_vcard = { "vcard", features, iqs, NULL, NULL };
