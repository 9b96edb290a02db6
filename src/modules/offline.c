#include "modules/offline.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "c2s/c2s.h"
#include "core/log.h"
#include "core/server.h"
#include "modules/module.h"

#define STORE_OFFLINE "offline"

int offline_store(struct loop *l, const struct jid *to, struct xml_node *st)
{
	const struct storage_driver *drv = l->srv->storage;
	const struct config_limits *lim = &l->srv->cfg->limits;
	long long bytes;
	int n = drv->list_size(l->store, to->domain, to->local, STORE_OFFLINE, &bytes);
	if (n < 0)
		return -1;
	if (n >= lim->max_offline_messages)
		return 1;
	struct buf b;
	buf_init(&b);
	xml_serialize(st, NS_CLIENT, &b);
	int rc = 1;
	if ((unsigned long long)bytes + b.len <= lim->max_offline_size)
		rc = drv->list_push(l->store, to->domain, to->local, STORE_OFFLINE, b.data, b.len,
				    NULL) == 0 ? 0 : -1;
	buf_free(&b);
	return rc;
}

struct deliver_ctx {
	struct loop *l;
	const char *domain;
	uint64_t session;
	long long last_id;
	int sent;
};

/* Adds the XEP-0203 delay element before the stanza's end tag. */
static void send_one(void *arg, long long id, long long stamp, const void *value, size_t len)
{
	struct deliver_ctx *c = arg;
	const char *v = value;
	struct buf b;
	buf_init(&b);
	char when[32];
	time_t t = (time_t)stamp;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	static const char end[] = "</message>";
	size_t cut;
	if (len >= 2 && memcmp(v + len - 2, "/>", 2) == 0) {
		cut = len - 2;
		buf_append(&b, v, cut);
		buf_puts(&b, ">");
	} else if (len >= sizeof end - 1 && memcmp(v + len - (sizeof end - 1), end, sizeof end - 1) == 0) {
		cut = len - (sizeof end - 1);
		buf_append(&b, v, cut);
	} else {
		log_warn("offline message %lld is not a message; dropped", id);
		c->last_id = id;
		return;
	}
	buf_printf(&b, "<delay xmlns='urn:xmpp:delay' from='%s' stamp='%s'>Offline Storage</delay>",
		   c->domain, when);
	buf_puts(&b, end);
	if (c2s_deliver(c->l, c->session, b.data, b.len) == 0) {
		c->last_id = id;
		c->sent++;
	}
	buf_free(&b);
}

void offline_deliver(struct loop *l, const char *owner, uint64_t session)
{
	const char *at = strchr(owner, '@');
	if (at == NULL)
		return;
	char local[1024];
	snprintf(local, sizeof local, "%.*s", (int)(at - owner), owner);
	struct deliver_ctx c = { l, at + 1, session, 0, 0 };
	const struct storage_driver *drv = l->srv->storage;
	if (drv->list_fetch(l->store, c.domain, local, STORE_OFFLINE, send_one, &c) < 0)
		return;
	/* Only what was handed to the session is removed: a session that
	 * vanished meanwhile leaves the rest for next time. */
	if (c.last_id > 0)
		drv->list_trim(l->store, c.domain, local, STORE_OFFLINE, c.last_id);
	if (c.sent > 0)
		log_info("delivered %d offline message(s) to %s", c.sent, owner);
}

/* Disco only: the behaviour lives in the delivery path (deliver.c) and at
 * initial presence (presence.c). */
static const char *const features[] = { "msgoffline", NULL };

const struct module mod_offline = { "offline", features, NULL };
