#include "c2s/sm.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "xml/xml.h"

struct sm *sm_new(bool resumable)
{
	struct sm *sm = xcalloc(1, sizeof *sm);
	sm->resumable = resumable;
	if (resumable && RAND_bytes(sm->key, sizeof sm->key) != 1)
		fatal("RAND_bytes failed");
	return sm;
}

static struct refbuf *take_oldest(struct sm *sm)
{
	struct refbuf *r = sm->ring[sm->head];
	sm->ring[sm->head] = NULL;
	sm->head = (sm->head + 1) & (sm->cap - 1);
	sm->len--;
	sm->bytes -= r->len;
	if (sm->written > 0)
		sm->written--;
	return r;
}

void sm_free(struct sm *sm)
{
	if (sm == NULL)
		return;
	while (sm->len > 0)
		refbuf_release(take_oldest(sm));
	free(sm->ring);
	free(sm);
}

void sm_id(const struct sm *sm, char out[2 * ROUTER_SM_KEY + 1])
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < ROUTER_SM_KEY; i++) {
		out[2 * i] = hex[sm->key[i] >> 4];
		out[2 * i + 1] = hex[sm->key[i] & 15];
	}
	out[2 * ROUTER_SM_KEY] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int sm_parse_id(const char *id, unsigned char key[ROUTER_SM_KEY])
{
	if (id == NULL || strlen(id) != 2 * ROUTER_SM_KEY)
		return -1;
	for (int i = 0; i < ROUTER_SM_KEY; i++) {
		int hi = hexval(id[2 * i]), lo = hexval(id[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		key[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

int sm_parse_h(const char *text, uint32_t *h)
{
	if (text == NULL || *text < '0' || *text > '9' || strlen(text) > 10)
		return -1;
	char *end;
	unsigned long long v = strtoull(text, &end, 10);
	if (*end != '\0' || v > UINT32_MAX)
		return -1;
	*h = (uint32_t)v;
	return 0;
}

static void grow(struct sm *sm)
{
	uint32_t cap = sm->cap ? sm->cap * 2 : 16;
	struct refbuf **ring = xcalloc(cap, sizeof *ring);
	for (uint32_t i = 0; i < sm->len; i++)
		ring[i] = sm->ring[(sm->head + i) & (sm->cap - 1)];
	free(sm->ring);
	sm->ring = ring;
	sm->cap = cap;
	sm->head = 0;
}

int sm_push(struct sm *sm, const struct config_sm *cfg, struct refbuf *stanza)
{
	if (sm->len == sm->cap)
		grow(sm);
	sm->ring[(sm->head + sm->len) & (sm->cap - 1)] = refbuf_ref(stanza);
	sm->len++;
	sm->bytes += stanza->len;
	return sm->len > (uint32_t)cfg->max_unacked || sm->bytes > cfg->max_unacked_size ? -1 : 0;
}

void sm_append(struct sm *sm, struct sm *from)
{
	while (from->len > 0) {
		struct refbuf *r = take_oldest(from);
		if (sm->len == sm->cap)
			grow(sm);
		sm->ring[(sm->head + sm->len) & (sm->cap - 1)] = r;
		sm->len++;
		sm->bytes += r->len;
	}
}

uint32_t sm_sent(const struct sm *sm)
{
	return sm->acked + sm->len;
}

int sm_ack(struct sm *sm, uint32_t h)
{
	/* Counters wrap at 2^32 (XEP-0198 §4): what h acknowledges beyond
	 * the last ack is its distance from it. */
	uint32_t n = h - sm->acked;
	if (n > sm->len)
		return -1;
	for (uint32_t i = 0; i < n; i++)
		refbuf_release(take_oldest(sm));
	sm->acked = h;
	return 0;
}

void sm_each_unwritten(struct sm *sm, void (*fn)(void *arg, struct refbuf *stanza), void *arg)
{
	while (sm->written < sm->len) {
		fn(arg, sm->ring[(sm->head + sm->written) & (sm->cap - 1)]);
		sm->written++;
		sm->since_request++;
	}
}

void sm_drain(struct sm *sm, void (*fn)(void *arg, struct refbuf *stanza), void *arg)
{
	while (sm->len > 0) {
		struct refbuf *r = take_oldest(sm);
		sm->acked++;
		fn(arg, r);
	}
}

bool sm_trim(struct sm *sm)
{
	if (sm->len != 0 || sm->ring == NULL)
		return false;
	free(sm->ring);
	sm->ring = NULL;
	sm->cap = 0;
	sm->head = 0;
	return true;
}

void sm_write_enabled(struct buf *b, const struct sm *sm, int resume_timeout)
{
	if (!sm->resumable) {
		buf_puts(b, "<enabled xmlns='" NS_SM "'/>");
		return;
	}
	char id[2 * ROUTER_SM_KEY + 1];
	sm_id(sm, id);
	buf_printf(b, "<enabled xmlns='" NS_SM "' id='%s' resume='true' max='%d'/>", id,
		   resume_timeout);
}

void sm_write_resumed(struct buf *b, const struct sm *sm)
{
	char id[2 * ROUTER_SM_KEY + 1];
	sm_id(sm, id);
	buf_printf(b, "<resumed xmlns='" NS_SM "' previd='%s' h='%u'/>", id, sm->in);
}

void sm_write_failed(struct buf *b, const char *condition, long long h, bool too_high,
		     uint32_t claimed, uint32_t sent)
{
	buf_puts(b, "<failed xmlns='" NS_SM "'");
	if (h >= 0)
		buf_printf(b, " h='%lld'", h);
	buf_printf(b, "><%s xmlns='" NS_STANZA_ERRORS "'/>", condition);
	if (too_high)
		buf_printf(b, "<handled-count-too-high xmlns='" NS_SM "' h='%u' send-count='%u'/>",
			   claimed, sent);
	buf_puts(b, "</failed>");
}

/* --- the loop's table: chained hash by registry id --- */

/* A forward lasts long enough for a stanza a sender routed by the old
 * registry entry to arrive: it was already posted when the entry moved. */
#define SM_FORWARD_MS 10000

struct sm_entry {
	uint64_t id;
	void *session;               /* NULL: a forward */
	struct router_target to;     /* a forward's destination */
	unsigned long long until;    /* a forward's end (now_ms) */
	struct sm_entry *next;
};

struct sm_table {
	struct sm_entry **buckets;
	size_t cap;   /* power of two */
	size_t count;
};

static struct sm_entry **slot(struct sm_table *t, uint64_t id)
{
	struct sm_entry **pp = &t->buckets[(id * 0x9E3779B97F4A7C15ULL >> 32) & (t->cap - 1)];
	while (*pp != NULL && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

static void table_grow(struct sm_table *t)
{
	size_t old = t->cap;
	struct sm_entry **ob = t->buckets;
	t->cap = old ? old * 2 : 64;
	t->buckets = xcalloc(t->cap, sizeof *t->buckets);
	for (size_t i = 0; i < old; i++) {
		for (struct sm_entry *e = ob[i], *n; e != NULL; e = n) {
			n = e->next;
			struct sm_entry **pp = slot(t, e->id);
			e->next = *pp;
			*pp = e;
		}
	}
	free(ob);
}

static struct sm_entry *table_add(struct loop *l, uint64_t id)
{
	if (l->sm == NULL)
		l->sm = xcalloc(1, sizeof *l->sm);
	struct sm_table *t = l->sm;
	if (t->count + 1 > t->cap)
		table_grow(t);
	struct sm_entry **pp = slot(t, id);
	if (*pp == NULL) {
		*pp = xcalloc(1, sizeof **pp);
		(*pp)->id = id;
		t->count++;
	}
	return *pp;
}

void sm_table_put(struct loop *l, uint64_t id, void *session)
{
	struct sm_entry *e = table_add(l, id);
	e->session = session;
}

void sm_table_forward(struct loop *l, uint64_t id, uint64_t to_session, int to_loop)
{
	struct sm_entry *e = table_add(l, id);
	e->session = NULL;
	e->to.session = to_session;
	e->to.loop = to_loop;
	e->until = now_ms() + SM_FORWARD_MS;
}

void *sm_table_get(struct loop *l, uint64_t id)
{
	if (l->sm == NULL || l->sm->count == 0)
		return NULL;
	struct sm_entry *e = *slot(l->sm, id);
	return e ? e->session : NULL;
}

void sm_table_del(struct loop *l, uint64_t id)
{
	if (l->sm == NULL || l->sm->count == 0)
		return;
	struct sm_entry **pp = slot(l->sm, id);
	if (*pp == NULL)
		return;
	struct sm_entry *e = *pp;
	*pp = e->next;
	free(e);
	l->sm->count--;
}

int sm_table_get_forward(struct loop *l, uint64_t id, struct router_target *t)
{
	if (l->sm == NULL || l->sm->count == 0)
		return -1;
	struct sm_entry *e = *slot(l->sm, id);
	if (e == NULL || e->session != NULL)
		return -1;
	if (now_ms() > e->until) {
		sm_table_del(l, id);
		return -1;
	}
	*t = e->to;
	return 0;
}

void sm_table_sweep(struct loop *l)
{
	struct sm_table *t = l->sm;
	if (t == NULL)
		return;
	unsigned long long now = now_ms();
	for (size_t i = 0; i < t->cap; i++) {
		for (struct sm_entry **pp = &t->buckets[i]; *pp != NULL;) {
			struct sm_entry *e = *pp;
			if (e->session == NULL && now > e->until) {
				*pp = e->next;
				t->count--;
				free(e);
			} else {
				pp = &e->next;
			}
		}
	}
}

void *sm_table_pop(struct loop *l)
{
	struct sm_table *t = l->sm;
	for (size_t i = 0; t != NULL && i < t->cap; i++) {
		for (struct sm_entry **pp = &t->buckets[i]; *pp != NULL;) {
			struct sm_entry *e = *pp;
			*pp = e->next;
			t->count--;
			void *s = e->session;
			free(e);
			if (s != NULL)
				return s;
		}
	}
	return NULL;
}

void sm_table_free(struct loop *l)
{
	while (sm_table_pop(l) != NULL)
		;
	if (l->sm != NULL)
		free(l->sm->buckets);
	free(l->sm);
	l->sm = NULL;
}
