#include "modules/offline.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "c2s/c2s.h"
#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "stream/conn.h"
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

/* The backlog goes out a page at a time, each page once the one before
 * has been written to the socket, so a slow client is never buried (nor
 * cut for not reading), and a message leaves the store only after it
 * was written. A crash or a lost connection in between sends the
 * unconfirmed page again at the next login: at least once, never lost. */
#define OFFLINE_PAGE_ITEMS 16
#define OFFLINE_PAGE_BYTES (128u << 10)

struct offline_drain {
	struct loop *l;
	uint64_t session;
	long long page_end;  /* id of the last message in the page written */
	size_t page_bytes;
	int page_items;
	int sent;            /* messages confirmed written so far */
	char owner[2 * JID_PART_MAX + 2];
	char local[JID_PART_MAX + 1];
	const char *domain;  /* points into owner */
};

/* Adds the XEP-0203 delay element before the stanza's end tag. */
static void send_one(void *arg, long long id, long long stamp, const void *value, size_t len)
{
	struct offline_drain *d = arg;
	/* The page is full: the rest waits for the next one. */
	if (d->page_bytes >= OFFLINE_PAGE_BYTES || d->page_end < 0)
		return;
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
		d->page_end = id;
		return;
	}
	buf_printf(&b, "<delay xmlns='urn:xmpp:delay' from='%s' stamp='%s'>Offline Storage</delay>",
		   d->domain, when);
	buf_puts(&b, end);
	if (c2s_deliver(d->l, d->session, b.data, b.len) == 0) {
		d->page_end = id;
		d->page_bytes += b.len;
		d->page_items++;
	} else {
		d->page_end = -1; /* the session is gone: stop here */
	}
	buf_free(&b);
}

static void drain_end(struct offline_drain *d, const char *why)
{
	if (d->sent > 0 || why != NULL)
		log_info("delivered %d offline message(s) to %s%s%s", d->sent, d->owner,
			 why ? "; " : "", why ? why : "");
	free(d);
}

static void page_written(struct conn *c, void *arg, bool written);

/* Sends the next page after the last one confirmed, or ends the drain. */
static void send_page(struct offline_drain *d, struct conn *c)
{
	const struct storage_driver *drv = d->l->srv->storage;
	long long after = d->page_end;
	d->page_bytes = 0;
	d->page_items = 0;
	if (drv->list_page(d->l->store, d->domain, d->local, STORE_OFFLINE, after,
			   OFFLINE_PAGE_ITEMS, send_one, d) < 0) {
		drain_end(d, "store error, the rest stays stored");
		return;
	}
	if (d->page_end < 0) {
		drain_end(d, "session gone, the rest stays stored");
		return;
	}
	if (d->page_end == after) {
		drain_end(d, NULL); /* nothing left */
		return;
	}
	if (conn_when_written(c, page_written, d) != 0)
		drain_end(d, "connection busy, the rest stays stored");
}

static void page_written(struct conn *c, void *arg, bool written)
{
	struct offline_drain *d = arg;
	if (!written) {
		drain_end(d, "connection lost, the rest stays stored");
		return;
	}
	const struct storage_driver *drv = d->l->srv->storage;
	if (drv->list_trim(d->l->store, d->domain, d->local, STORE_OFFLINE, d->page_end) != 0) {
		drain_end(d, "store error, the rest stays stored");
		return;
	}
	d->sent += d->page_items;
	send_page(d, c);
}

void offline_deliver(struct loop *l, const char *owner, uint64_t session)
{
	const char *at = strchr(owner, '@');
	struct conn *c = conn_find(l, session);
	if (at == NULL || c == NULL || (size_t)(at - owner) > JID_PART_MAX ||
	    strlen(owner) >= sizeof ((struct offline_drain *)0)->owner)
		return;
	struct offline_drain *d = xcalloc(1, sizeof *d);
	d->l = l;
	d->session = session;
	snprintf(d->owner, sizeof d->owner, "%s", owner);
	snprintf(d->local, sizeof d->local, "%.*s", (int)(at - owner), owner);
	d->domain = d->owner + (at - owner) + 1;
	send_page(d, c);
}

/* Disco only: the behaviour lives in the delivery path (deliver.c) and at
 * initial presence (presence.c). */
static const char *const features[] = { "msgoffline", NULL };

const struct module mod_offline = { "offline", features, NULL, NULL, NULL };
