/* XEP-0092: Software Version, answered for the server (accounts' versions
 * are their clients' to tell). Config: hide_version, hide_os_version.
 *
 * Disco features are static per module, so with hide_version the feature
 * stays advertised and queries get <service-unavailable/>: what the
 * operator hides is the version, not that the protocol exists. */
#include <string.h>
#include <sys/utsname.h>

#include "core/server.h"
#include "modules/module.h"

/* The release; one place until the build writes it. */
#define NATTER_VERSION "0.1.0"

#define NS_VERSION "jabber:iq:version"

static void add_text(struct arena *a, struct xml_node *q, const char *name, const char *text)
{
	struct xml_node *n = xml_add_child(a, q, NS_VERSION, name);
	xml_add_text(a, n, text, strlen(text));
}

static enum status version_get(struct iq_ctx *c)
{
	const struct config *cfg = c->loop->srv->cfg;
	if (cfg->hide_version) {
		module_error(c, "cancel", "service-unavailable");
		return OK;
	}
	struct xml_node *q = xml_new(c->a, NS_VERSION, "query");
	add_text(c->a, q, "name", "natter");
	add_text(c->a, q, "version", NATTER_VERSION);
	struct utsname u;
	if (!cfg->hide_os_version && uname(&u) == 0)
		add_text(c->a, q, "os", u.sysname);
	module_reply(c, q);
	return OK;
}

static const char *const features[] = { NS_VERSION, NULL };

static const struct module_iq iqs[] = {
	{ "get", NS_VERSION, "query", IQ_SERVER, version_get },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_version = { "version", features, iqs, NULL, NULL };
