/* XEP-0054: vcard-temp. Anyone may read an account's vCard (the router
 * has already refused iq to accounts that do not exist); only the account
 * itself may replace it. Kept serialised in map store "vcard", key
 * "vcard". */
#include <string.h>

#include "core/log.h"
#include "core/server.h"
#include "modules/module.h"
#include "xml/xml_parse.h"

#define NS_VCARD "vcard-temp"
#define STORE_VCARD "vcard"
#define KEY_VCARD "vcard"

/* Largest vCard stored, serialised. Photos (XEP-0153) fit; this is an
 * address card, not a file store. */
#define VCARD_MAX_BYTES (64 * 1024)

static enum status vcard_get(struct iq_ctx *c)
{
	struct server *srv = c->loop->srv;
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
	struct buf b;
	buf_init(&b);
	/* Serialised in a jabber:client context, so it carries its xmlns and
	 * xml_parse_element reads it back as it was. */
	xml_serialize(c->payload, NS_CLIENT, &b);
	int rc = 0;
	if (b.len > VCARD_MAX_BYTES) {
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

const struct module mod_vcard = { "vcard", features, iqs };
