/* XEP-0199: XMPP Ping, answered for the server and for accounts. */
#include "modules/module.h"

static enum status ping(struct iq_ctx *c)
{
	module_reply(c, NULL);
	return OK;
}

static const char *const features[] = { NS_PING, NULL };

static const struct module_iq iqs[] = {
	{ "get", NS_PING, "ping", IQ_SERVER | IQ_ACCOUNT, ping },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_ping = { "ping", features, iqs, NULL, NULL };
