#include "modules/offline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "c2s/c2s.h"
#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "stream/conn.h"
#include "modules/mam.h"
#include "modules/module.h"
#include "router/deliver.h"
#include "storage/pending.h"
#include "storage/storeq.h"
#include "xml/xml_parse.h"

#define STORE_OFFLINE "offline"

/* --- storing: on the storage thread --- */

struct offline_put {
	char domain[JID_PART_MAX + 1];
	char local[JID_PART_MAX + 1];
	long long max_items;
	unsigned long long max_bytes;
	struct buf value;
	int result;          /* 0 stored, 1 over the quota */
};

static int put_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct offline_put *p = arg;
	long long bytes;
	int n = drv->list_size(st, p->domain, p->local, STORE_OFFLINE, &bytes);
	if (n < 0)
		return -1;
	if (n >= p->max_items || (unsigned long long)bytes + p->value.len > p->max_bytes) {
		p->result = 1;
		return 0;
	}
	return drv->list_push(st, p->domain, p->local, STORE_OFFLINE, p->value.data, p->value.len,
			      NULL);
}

/* The message could not be kept: the sender hears so (RFC 6121
 * §8.5.2.2.1), as it would have at once. */
static void put_done(struct loop *l, void *arg, int rc)
{
	struct offline_put *p = arg;
	if (l != NULL && (rc < 0 || p->result == 1)) {
		struct arena a;
		arena_init(&a);
		struct xml_node *st = xml_parse_element(&a, p->value.data, p->value.len);
		if (st != NULL) {
			if (rc < 0)
				deliver_error(l, st, &a, "wait", "internal-server-error");
			else
				deliver_error(l, st, &a, "cancel", "service-unavailable");
		}
		arena_reset(&a);
	}
	buf_free(&p->value);
	free(p);
}

int offline_store(struct loop *l, const struct jid *to, struct xml_node *st)
{
	const struct config_limits *lim = &l->srv->cfg->limits;
	if (lim->max_offline_messages <= 0)
		return 1;
	/* Removed in-band, its sessions not all closed yet (a detached one
	 * hands back what it held): nowhere to keep it. */
	if (pending_account_is_removed(l->srv->pending, to->domain, to->local))
		return 1;
	struct offline_put *p = xcalloc(1, sizeof *p);
	snprintf(p->domain, sizeof p->domain, "%s", to->domain);
	snprintf(p->local, sizeof p->local, "%s", to->local);
	p->max_items = lim->max_offline_messages;
	p->max_bytes = lim->max_offline_size;
	buf_init(&p->value);
	xml_serialize(st, NS_CLIENT, &p->value);
	storeq_call_sized(l->srv->storeq, l, put_run, put_done, p, sizeof *p + p->value.cap);
	return 0;
}

/* The backlog goes out a page at a time, each page once the one before
 * has been written to the socket, so a slow client is never buried (nor
 * cut for not reading), and a message leaves the store only after it
 * was written. A crash or a lost connection in between sends the
 * unconfirmed page again at the next login: at least once, never lost.
 * Reading a page and trimming it are jobs of the storage thread, behind
 * the writes queued before them: a message stored a moment before the
 * login is in the first page. */
#define OFFLINE_PAGE_ITEMS 16
#define OFFLINE_PAGE_BYTES (128u << 10)

struct offline_item {
	long long id, stamp;
	size_t len;
	char *value;
};

struct offline_drain {
	struct loop *l;
	uint64_t session;
	long long page_end;  /* id of the last message in the page */
	long long horizon;   /* archive ids up to it came by MAM (mam.h) */
	struct offline_item items[OFFLINE_PAGE_ITEMS];
	int n_items;
	size_t page_bytes;
	int sent;            /* messages confirmed written so far */
	int skipped;         /* already fetched from the archive */
	int page_sent;
	char owner[2 * JID_PART_MAX + 2];
	char local[JID_PART_MAX + 1];
	const char *domain;  /* points into owner */
};

static void page_read(void *arg, long long id, long long stamp, const void *value, size_t len)
{
	struct offline_drain *d = arg;
	/* The page is full: the rest waits for the next one. */
	if (d->n_items == OFFLINE_PAGE_ITEMS ||
	    (d->n_items > 0 && d->page_bytes + len > OFFLINE_PAGE_BYTES))
		return;
	struct offline_item *it = &d->items[d->n_items++];
	it->id = id;
	it->stamp = stamp;
	it->len = len;
	it->value = xmalloc(len ? len : 1);
	memcpy(it->value, value, len);
	d->page_bytes += len;
}

static int read_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct offline_drain *d = arg;
	d->n_items = 0;
	d->page_bytes = 0;
	return drv->list_page(st, d->domain, d->local, STORE_OFFLINE, d->page_end,
			      OFFLINE_PAGE_ITEMS, page_read, d);
}

static int trim_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct offline_drain *d = arg;
	return drv->list_trim(st, d->domain, d->local, STORE_OFFLINE, d->page_end);
}

static void drop_items(struct offline_drain *d)
{
	for (int i = 0; i < d->n_items; i++)
		free(d->items[i].value);
	d->n_items = 0;
}

static void drain_end(struct offline_drain *d, const char *why)
{
	if (d->l != NULL && (d->sent > 0 || d->skipped > 0 || why != NULL))
		log_info("delivered %d offline message(s) to %s%s%s%s", d->sent, d->owner,
			 d->skipped ? " (the rest came by the archive)" : "", why ? "; " : "",
			 why ? why : "");
	drop_items(d);
	free(d);
}

/* One stored message with the XEP-0203 delay element before its end tag;
 * returns 0 sent (or skipped), 1 not a message, -1 the session is gone. */
static int send_one(struct offline_drain *d, const struct offline_item *it)
{
	const char *v = it->value;
	size_t len = it->len;
	if (d->horizon > 0) {
		long long aid = mam_stanza_id_of(v, len, d->owner);
		if (aid > 0 && aid <= d->horizon) {
			d->skipped++;
			return 0;
		}
	}
	struct buf b;
	buf_init(&b);
	char when[32];
	time_t t = (time_t)it->stamp;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	static const char end[] = "</message>";
	if (len >= 2 && memcmp(v + len - 2, "/>", 2) == 0) {
		buf_append(&b, v, len - 2);
		buf_puts(&b, ">");
	} else if (len >= sizeof end - 1 && memcmp(v + len - (sizeof end - 1), end, sizeof end - 1) == 0) {
		buf_append(&b, v, len - (sizeof end - 1));
	} else {
		log_warn("offline message %lld is not a message; dropped", it->id);
		buf_free(&b);
		return 1;
	}
	buf_printf(&b, "<delay xmlns='urn:xmpp:delay' from='%s' stamp='%s'>Offline Storage</delay>",
		   d->domain, when);
	buf_puts(&b, end);
	int rc = c2s_deliver(d->l, d->session, b.data, b.len);
	buf_free(&b);
	if (rc == 0)
		d->page_sent++;
	return rc == 0 ? 0 : -1;
}

static void page_written(struct conn *c, void *arg, bool written);
static void page_trimmed(struct loop *l, void *arg, int rc);

static void page_ready(struct loop *l, void *arg, int rc)
{
	struct offline_drain *d = arg;
	if (l == NULL) {
		d->l = NULL;
		drain_end(d, NULL);
		return;
	}
	if (rc < 0) {
		drain_end(d, "store error, the rest stays stored");
		return;
	}
	if (d->n_items == 0) {
		drain_end(d, NULL); /* nothing left */
		return;
	}
	struct conn *c = conn_find(l, d->session);
	if (c == NULL) {
		drain_end(d, "session gone, the rest stays stored");
		return;
	}
	d->page_sent = 0;
	for (int i = 0; i < d->n_items; i++) {
		if (send_one(d, &d->items[i]) < 0) {
			drain_end(d, "session gone, the rest stays stored");
			return;
		}
		d->page_end = d->items[i].id;
	}
	drop_items(d);
	if (conn_when_written(c, page_written, d) != 0)
		drain_end(d, "connection busy, the rest stays stored");
}

static void page_written(struct conn *c, void *arg, bool written)
{
	(void)c;
	struct offline_drain *d = arg;
	if (!written) {
		drain_end(d, "connection lost, the rest stays stored");
		return;
	}
	storeq_call(d->l->srv->storeq, d->l, trim_run, page_trimmed, d);
}

static void page_trimmed(struct loop *l, void *arg, int rc)
{
	struct offline_drain *d = arg;
	if (l == NULL) {
		d->l = NULL;
		drain_end(d, NULL);
		return;
	}
	if (rc < 0) {
		drain_end(d, "store error, the rest stays stored");
		return;
	}
	d->sent += d->page_sent;
	storeq_call(l->srv->storeq, l, read_run, page_ready, d);
}

void offline_deliver(struct loop *l, const char *owner, uint64_t session)
{
	const char *at = strchr(owner, '@');
	if (at == NULL || conn_find(l, session) == NULL || (size_t)(at - owner) > JID_PART_MAX ||
	    strlen(owner) >= sizeof ((struct offline_drain *)0)->owner)
		return;
	struct offline_drain *d = xcalloc(1, sizeof *d);
	d->l = l;
	d->session = session;
	d->horizon = mam_take_horizon(l->srv, session);
	snprintf(d->owner, sizeof d->owner, "%s", owner);
	snprintf(d->local, sizeof d->local, "%.*s", (int)(at - owner), owner);
	d->domain = d->owner + (at - owner) + 1;
	storeq_call(l->srv->storeq, l, read_run, page_ready, d);
}

/* Disco only: the behaviour lives in the delivery path (deliver.c) and at
 * initial presence (presence.c). */
static const char *const features[] = { "msgoffline", NULL };

const struct module mod_offline = { .name = "offline", .features = features, .iqs = NULL };
