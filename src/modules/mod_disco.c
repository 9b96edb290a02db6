/* XEP-0030: Service Discovery. The server's identity and the features of
 * every compiled-in module; accounts answer with their own identity. */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/server.h"
#include "modules/module.h"
#include "modules/pubsub_service.h"
#include "muc/muc.h"

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"

static void add_feature(struct iq_ctx *c, struct xml_node *q, const char *var)
{
	struct xml_node *f = xml_add_child(c->a, q, NS_DISCO_INFO, "feature");
	xml_set_attr(c->a, f, "var", var);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* XEP-0115 §5.1: the verification string over identity and features. */
void disco_caps_ver(const struct server *srv, const char *domain, char *out, size_t cap)
{
	const char *features[256];
	size_t n = 0;
	const struct config_host *h = config_find_host(srv->cfg, domain);
	for (const struct module *const *m = modules_all; *m; m++) {
		if ((*m)->on_host != NULL && (h == NULL || !(*m)->on_host(h)))
			continue;
		for (const char *const *f = (*m)->features; f && *f && n < 256; f++)
			features[n++] = *f;
	}
	qsort(features, n, sizeof *features, cmp_str);
	struct buf b;
	buf_init(&b);
	buf_puts(&b, "server/im//natter<");
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && strcmp(features[i], features[i - 1]) == 0)
			continue;
		buf_puts(&b, features[i]);
		buf_puts(&b, "<");
	}
	unsigned char md[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *)b.data, b.len, md);
	buf_free(&b);
	if (cap >= 29)
		EVP_EncodeBlock((unsigned char *)out, md, sizeof md);
	else if (cap > 0)
		out[0] = '\0';
}

/* An account lists what the server answers for accounts; the server lists
 * everything but a hidden version. */
static bool module_shown(const struct iq_ctx *c, const struct module *m)
{
	if (!module_on_host(m, c->loop, c->to->domain))
		return false;
	if (!c->to_account)
		return !(strcmp(m->name, "version") == 0 && c->loop->srv->cfg->hide_version);
	if (strcmp(m->name, "disco") == 0 || strcmp(m->name, "offline") == 0)
		return true;
	for (const struct module_iq *h = m->iqs; h && h->type; h++)
		if (h->targets & IQ_ACCOUNT)
			return true;
	return false;
}

static enum status info(struct iq_ctx *c)
{
	const char *node = xml_attr(c->payload, "node");
	if (node != NULL) {
		/* Only the caps node of the server itself is known. */
		char ver[64], want[128];
		disco_caps_ver(c->loop->srv, c->to->domain, ver, sizeof ver);
		snprintf(want, sizeof want, "%s#%s", DISCO_CAPS_NODE, ver);
		if (c->to_account || strcmp(node, want) != 0) {
			module_error(c, "cancel", "item-not-found");
			return OK;
		}
	}
	struct xml_node *q = xml_new(c->a, NS_DISCO_INFO, "query");
	if (node != NULL)
		xml_set_attr(c->a, q, "node", node);
	struct xml_node *id = xml_add_child(c->a, q, NS_DISCO_INFO, "identity");
	if (c->to_account) {
		xml_set_attr(c->a, id, "category", "account");
		xml_set_attr(c->a, id, "type", "registered");
		/* XEP-0163 §6.1: every account is a PEP service (mod_pep). */
		struct xml_node *pep = xml_add_child(c->a, q, NS_DISCO_INFO, "identity");
		xml_set_attr(c->a, pep, "category", "pubsub");
		xml_set_attr(c->a, pep, "type", "pep");
	} else {
		xml_set_attr(c->a, id, "category", "server");
		xml_set_attr(c->a, id, "type", "im");
		xml_set_attr(c->a, id, "name", "natter");
	}
	for (const struct module *const *m = modules_all; *m; m++) {
		if (!module_shown(c, *m))
			continue;
		for (const char *const *f = (*m)->features; f && *f; f++)
			add_feature(c, q, *f);
	}
	module_reply(c, q);
	return OK;
}

static enum status items(struct iq_ctx *c)
{
	struct xml_node *q = xml_new(c->a, NS_DISCO_ITEMS, "query");
	/* The server's own services (XEP-0030 §4): the chat and pubsub
	 * services. */
	const char *muc = c->to_account ? NULL : muc_service_domain(c->loop->srv, c->to->domain);
	if (muc != NULL && xml_attr(c->payload, "node") == NULL) {
		struct xml_node *it = xml_add_child(c->a, q, NS_DISCO_ITEMS, "item");
		xml_set_attr(c->a, it, "jid", muc);
		xml_set_attr(c->a, it, "name", "Chatrooms");
	}
	const char *ps = c->to_account ? NULL : pubsub_service_domain(c->loop->srv, c->to->domain);
	if (ps != NULL && xml_attr(c->payload, "node") == NULL) {
		struct xml_node *it = xml_add_child(c->a, q, NS_DISCO_ITEMS, "item");
		xml_set_attr(c->a, it, "jid", ps);
		xml_set_attr(c->a, it, "name", "Publish-Subscribe");
	}
	module_reply(c, q);
	return OK;
}

static const char *const features[] = { NS_DISCO_INFO, NS_DISCO_ITEMS, NULL };

static const struct module_iq iqs[] = {
	{ "get", NS_DISCO_INFO, "query", IQ_SERVER | IQ_ACCOUNT, info },
	{ "get", NS_DISCO_ITEMS, "query", IQ_SERVER | IQ_ACCOUNT, items },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_disco = { .name = "disco", .features = features, .iqs = iqs };
