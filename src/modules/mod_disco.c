/* XEP-0030: Service Discovery. The server's identity and the features of
 * every compiled-in module; accounts answer with their own identity. */
#include "core/server.h"
#include "modules/module.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

static void add_feature(struct iq_ctx *c, struct xml_node *q, const char *var)
{
	struct xml_node *f = xml_add_child(c->a, q, NS_DISCO_INFO, "feature");
	xml_set_attr(c->a, f, "var", var);
}

static enum status info(struct iq_ctx *c)
{
	if (xml_attr(c->payload, "node") != NULL) {
		module_error(c, "cancel", "item-not-found");
		return OK;
	}
	struct xml_node *q = xml_new(c->a, NS_DISCO_INFO, "query");
	struct xml_node *id = xml_add_child(c->a, q, NS_DISCO_INFO, "identity");
	if (c->to_account) {
		xml_set_attr(c->a, id, "category", "account");
		xml_set_attr(c->a, id, "type", "registered");
	} else {
		xml_set_attr(c->a, id, "category", "server");
		xml_set_attr(c->a, id, "type", "im");
		xml_set_attr(c->a, id, "name", "natter");
	}
	for (const struct module *const *m = modules_all; *m; m++)
		for (const char *const *f = (*m)->features; f && *f; f++)
			add_feature(c, q, *f);
	module_reply(c, q);
	return OK;
}

static enum status items(struct iq_ctx *c)
{
	module_reply(c, xml_new(c->a, NS_DISCO_ITEMS, "query"));
	return OK;
}

static const char *const features[] = { NS_DISCO_INFO, NS_DISCO_ITEMS, NULL };

static const struct module_iq iqs[] = {
	{ "get", NS_DISCO_INFO, "query", IQ_SERVER | IQ_ACCOUNT, info },
	{ "get", NS_DISCO_ITEMS, "query", IQ_SERVER | IQ_ACCOUNT, items },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_disco = { "disco", features, iqs };
