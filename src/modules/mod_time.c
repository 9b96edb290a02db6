/* XEP-0202: Entity Time, answered for the server only: an account's time
 * is its clients' (they know the user's time zone, the server does not). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "modules/module.h"

#define NS_TIME "urn:xmpp:time"

static void add_text(struct arena *a, struct xml_node *t, const char *name, const char *text)
{
	struct xml_node *n = xml_add_child(a, t, NS_TIME, name);
	xml_add_text(a, n, text, strlen(text));
}

static enum status time_get(struct iq_ctx *c)
{
	time_t now = time(NULL);
	struct tm utc, local;
	if (gmtime_r(&now, &utc) == NULL || localtime_r(&now, &local) == NULL) {
		module_error(c, "wait", "internal-server-error");
		return OK;
	}
	/* XEP-0082 formats: tzo is the offset of the server's local time. */
	long off = local.tm_gmtoff;
	int minutes = (int)(labs(off) % 86400 / 60); /* real offsets are under 24 h */
	char tzo[32], stamp[32];
	snprintf(tzo, sizeof tzo, "%c%02d:%02d", off < 0 ? '-' : '+', minutes / 60, minutes % 60);
	strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);
	struct xml_node *t = xml_new(c->a, NS_TIME, "time");
	add_text(c->a, t, "tzo", tzo);
	add_text(c->a, t, "utc", stamp);
	module_reply(c, t);
	return OK;
}

static const char *const features[] = { NS_TIME, NULL };

static const struct module_iq iqs[] = {
	{ "get", NS_TIME, "time", IQ_SERVER, time_get },
	{ NULL, NULL, NULL, 0, NULL },
};

const struct module mod_time = { "time", features, iqs, NULL, NULL };
