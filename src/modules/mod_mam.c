/* XEP-0313: Message Archive Management (urn:xmpp:mam:2), with XEP-0359
 * stanza-ids, XEP-0059 paging and XEP-0431 full-text search.
 *
 * Archiving hooks the stanza path (hooks.h): a message a local client sent
 * goes to the sender's archive, a message delivered to a local account to
 * the recipient's, which also gets the archive id as its stanza-id. The
 * writes and the queries run on the storage thread (storeq.h), in order,
 * so a query answers with everything archived before it was asked. The
 * archive ids come from one generator (mam_new_id): time-ordered, so a
 * time range is an id range. */
#include "modules/mam.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "modules/module.h"
#include "modules/roster.h"
#include "router/deliver.h"
#include "router/router.h"
#include "muc/muc.h"
#include "xml/xml_parse.h"
#include "storage/storeq.h"

#define NS_RSM "http://jabber.org/protocol/rsm"
#define NS_FORWARD "urn:xmpp:forward:0"
#define NS_DELAY "urn:xmpp:delay"
#define NS_DATA "jabber:x:data"
#define NS_HINTS "urn:xmpp:hints"
#define NS_FULLTEXT "urn:xmpp:fulltext:0"
#define NS_MAM_EXTENDED "urn:xmpp:mam:2#extended"

/* Bytes of one page of results at most (one message always goes). */
#define MAM_PAGE_BYTES (1u << 20)
/* Ids in one query's 'ids' field at most; more: policy-violation. */
#define MAM_MAX_IDS 250
/* JIDs in one prefs list at most; more: policy-violation. */
#define MAM_MAX_PREF_JIDS 200
/* The store of an account's preferences. */
#define STORE_MAM "mam"

/* Preferences of one account, cached; a fixed table of sets, as the
 * failure budgets (authfail.c): bounded whatever the number of accounts
 * (3 MiB, touched as used). 16,384 entries: with 1,024, a run of 2,000
 * chatting accounts missed on most messages, a store read on the loop
 * for each. */
#define MAM_PREF_SETS 4096
#define MAM_PREF_WAYS 4
#define MAM_PREF_KEY_MAX 160
/* Locks over the sets (set modulo this): every archived message looks up
 * its owner's preferences, from every loop, so one lock for all would
 * serialise the loops. */
#define MAM_PREF_LOCKS 64

struct mam_prefs {
	char key[MAM_PREF_KEY_MAX]; /* bare JID; "" free */
	unsigned long long used;    /* for eviction */
	int def;                    /* enum mam_default, or -1: the host's */
	char *always;               /* "\n"-separated bare JIDs, NULL none */
	char *never;
};

/* Sessions that queried their archive before their initial presence. */
#define MAM_HORIZON_SLOTS 1024

struct mam {
	long long last_id;          /* atomically advanced */
	pthread_mutex_t lock;       /* the horizons */
	struct mam_pref_lock {
		pthread_mutex_t lock;
		unsigned long long tick; /* for mam_prefs.used */
	} pref_locks[MAM_PREF_LOCKS];
	struct mam_prefs prefs[MAM_PREF_SETS][MAM_PREF_WAYS];
	/* Per set, advanced when an entry of it is forgotten: a read of the
	 * store that began before must not be cached (it may predate the
	 * change that made the entry go). Under the set's lock. */
	unsigned gen[MAM_PREF_SETS];
	struct {
		uint64_t session;
		long long horizon;
	} horizons[MAM_HORIZON_SLOTS]; /* open addressing by session; under lock */
	time_t next_expiry;         /* service loop only */
};

/* --- ids --- */

long long mam_new_id(struct server *srv)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	long long now = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	long long cur = __atomic_load_n(&srv->mam->last_id, __ATOMIC_RELAXED);
	for (;;) {
		long long next = now > cur ? now : cur + 1;
		if (__atomic_compare_exchange_n(&srv->mam->last_id, &cur, next, false,
						__ATOMIC_RELAXED, __ATOMIC_RELAXED))
			return next;
	}
}

long long mam_last_id(struct server *srv)
{
	return __atomic_load_n(&srv->mam->last_id, __ATOMIC_RELAXED);
}

long long mam_parse_id(const char *s)
{
	if (s == NULL || *s < '1' || *s > '9' || strlen(s) > 18)
		return 0;
	long long v = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return 0;
		v = v * 10 + (*s - '0');
	}
	return v;
}

int mam_init(struct server *srv, char *err, size_t errlen)
{
	srv->mam = xcalloc(1, sizeof *srv->mam);
	pthread_mutex_init(&srv->mam->lock, NULL);
	for (int i = 0; i < MAM_PREF_LOCKS; i++)
		pthread_mutex_init(&srv->mam->pref_locks[i].lock, NULL);
	struct storage *st = srv->store_driver->open(srv->cfg->data_dir, err, errlen);
	if (st == NULL)
		return -1;
	long long last = srv->store_driver->archive_last_id(st);
	srv->store_driver->close(st);
	if (last < 0) {
		snprintf(err, errlen, "cannot read the message archive");
		return -1;
	}
	srv->mam->last_id = last;
	return 0;
}

void mam_free(struct server *srv)
{
	struct mam *m = srv->mam;
	if (m == NULL)
		return;
	for (int i = 0; i < MAM_PREF_SETS; i++) {
		for (int w = 0; w < MAM_PREF_WAYS; w++) {
			free(m->prefs[i][w].always);
			free(m->prefs[i][w].never);
		}
	}
	pthread_mutex_destroy(&m->lock);
	for (int i = 0; i < MAM_PREF_LOCKS; i++)
		pthread_mutex_destroy(&m->pref_locks[i].lock);
	free(m);
	srv->mam = NULL;
}

static const struct config_mam *mam_config(struct loop *l, const char *domain)
{
	const struct config_host *h = config_find_host(l->srv->cfg, domain);
	return h != NULL && h->mam.enabled ? &h->mam : NULL;
}

/* --- preferences --- */

static bool mam_same_account(const struct jid *a, const struct jid *b)
{
	return strcmp(a->local, b->local) == 0 && strcmp(a->domain, b->domain) == 0;
}

static bool mam_list_has(const char *list, const char *jid)
{
	size_t n = strlen(jid);
	for (const char *p = list; p && *p;) {
		const char *e = strchr(p, '\n');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == n && memcmp(p, jid, n) == 0)
			return true;
		p = e ? e + 1 : p + len;
	}
	return false;
}

/* Parses stored prefs (the <prefs/> element) into p. */
static void mam_prefs_parse(struct mam_prefs *p, const char *xml, size_t len)
{
	struct arena a;
	arena_init(&a);
	struct xml_node *n = xml_parse_element(&a, xml, len);
	p->def = -1;
	if (n != NULL) {
		const char *d = xml_attr(n, "default");
		p->def = d == NULL ? -1 : strcmp(d, "always") == 0 ? MAM_ALWAYS
				       : strcmp(d, "never") == 0  ? MAM_NEVER
				       : strcmp(d, "roster") == 0 ? MAM_ROSTER : -1;
		const char *names[2] = { "always", "never" };
		char **out[2] = { &p->always, &p->never };
		for (int k = 0; k < 2; k++) {
			struct xml_node *list = xml_child(n, NS_MAM, names[k]);
			struct buf b;
			buf_init(&b);
			for (struct xml_node *j = list ? list->children : NULL; j; j = j->next) {
				if (!xml_is(j, NS_MAM, "jid"))
					continue;
				if (b.len)
					buf_puts(&b, "\n");
				buf_puts(&b, xml_text(&a, j));
			}
			if (b.len) {
				buf_append(&b, "", 1);
				*out[k] = xstrdup(b.data);
			}
			buf_free(&b);
		}
	}
	arena_reset(&a);
}

/* The set owner_bare's preferences go in (its index in *k) and the lock
 * over it. */
static struct mam_pref_lock *mam_prefs_set_of(struct mam *m, const char *owner_bare, size_t *k)
{
	*k = str_hash(owner_bare) % MAM_PREF_SETS;
	return &m->pref_locks[*k % MAM_PREF_LOCKS];
}

/* The way of set holding owner_bare's preferences, or NULL. Under the
 * set's lock. */
static struct mam_prefs *mam_prefs_way(struct mam_prefs *set, const char *owner_bare)
{
	for (int w = 0; w < MAM_PREF_WAYS; w++)
		if (strcmp(set[w].key, owner_bare) == 0)
			return &set[w];
	return NULL;
}

/* Whether owner's preferences let a message with `with` (bare JID) into
 * its archive. Loads them on a miss (one small read). */
static bool mam_prefs_allow(struct loop *l, const struct jid *owner, const char *owner_bare,
			    const char *with, const struct config_mam *mc)
{
	struct mam *m = l->srv->mam;
	if (strlen(owner_bare) >= MAM_PREF_KEY_MAX)
		return mc->def == MAM_ALWAYS;
	size_t k;
	struct mam_pref_lock *pl = mam_prefs_set_of(m, owner_bare, &k);
	struct mam_prefs *set = m->prefs[k];
	pthread_mutex_t *lock = &pl->lock;
	pthread_mutex_lock(lock);
	struct mam_prefs *p = mam_prefs_way(set, owner_bare);
	struct mam_prefs fresh = { .def = -1 };
	if (p == NULL) {
		unsigned gen = m->gen[k];
		pthread_mutex_unlock(lock);
		struct buf b;
		buf_init(&b);
		int rc = l->srv->storage->map_get(l->store, owner->domain, owner->local, STORE_MAM,
						  "prefs", &b);
		if (rc == 0)
			mam_prefs_parse(&fresh, b.data, b.len);
		buf_free(&b);
		pthread_mutex_lock(lock);
		/* Another loop may have cached them meanwhile; a change may have
		 * made them go (then what was read may be older: it answers this
		 * message, and is not kept). */
		p = mam_prefs_way(set, owner_bare);
		if (p == NULL && m->gen[k] == gen) {
			p = &set[0];
			for (int w = 1; w < MAM_PREF_WAYS; w++)
				if (set[w].used < p->used)
					p = &set[w];
			free(p->always);
			free(p->never);
			*p = fresh;
			fresh.always = fresh.never = NULL;
			snprintf(p->key, sizeof p->key, "%s", owner_bare);
		} else if (p == NULL) {
			p = &fresh;
		}
	}
	p->used = ++pl->tick;
	int def = p->def >= 0 ? p->def : (int)mc->def;
	int verdict = mam_list_has(p->never, with) ? 0 : mam_list_has(p->always, with) ? 1
						      : def == MAM_ALWAYS ? 1
						      : def == MAM_NEVER  ? 0 : -1;
	pthread_mutex_unlock(lock);
	free(fresh.always);
	free(fresh.never);
	if (verdict >= 0)
		return verdict == 1;
	struct arena a;
	arena_init(&a);
	struct roster_item it;
	bool in_roster = roster_load(l, owner_bare, with, &a, &it) == 1;
	arena_reset(&a);
	return in_roster;
}

static void mam_prefs_forget(struct server *srv, const char *owner_bare)
{
	struct mam *m = srv->mam;
	size_t k;
	pthread_mutex_t *lock = &mam_prefs_set_of(m, owner_bare, &k)->lock;
	struct mam_prefs *set = m->prefs[k];
	pthread_mutex_lock(lock);
	m->gen[k]++;
	for (int w = 0; w < MAM_PREF_WAYS; w++) {
		if (strcmp(set[w].key, owner_bare) == 0) {
			free(set[w].always);
			free(set[w].never);
			memset(&set[w], 0, sizeof set[w]);
		}
	}
	pthread_mutex_unlock(lock);
}

/* --- archiving --- */

bool mam_archivable(const struct xml_node *st)
{
	const char *type = xml_attr(st, "type");
	if (type != NULL && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0)
		return false;
	if (xml_child(st, NS_HINTS, "no-store") || xml_child(st, NS_HINTS, "no-permanent-store"))
		return false;
	return xml_child(st, NS_CLIENT, "body") != NULL || xml_child(st, NS_HINTS, "store") != NULL;
}

/* Takes out every <stanza-id/> claiming to be by `by`: only the archive
 * of `by` may say (XEP-0359 §5). */
static void mam_strip_stanza_ids(struct xml_node *st, const char *by)
{
	struct xml_node **pp = &st->children;
	st->last = NULL;
	while (*pp) {
		struct xml_node *c = *pp;
		const char *b = xml_is(c, NS_SID, "stanza-id") ? xml_attr(c, "by") : NULL;
		if (b != NULL && strcmp(b, by) == 0) {
			*pp = c->next;
			continue;
		}
		st->last = c;
		pp = &c->next;
	}
}

/* One archive write: a single allocation holding the stanza's bytes and
 * the strings (jobs queue by the thousand under load; see storeq.h). */
struct mam_put_job {
	long long id;
	long long ref; /* archive_entry.ref */
	int outgoing;
	size_t len;  /* of value */
	size_t size; /* of the allocation (STOREQ_MAX_BYTES) */
	const char *domain, *local, *with, *with_resource, *body;
	char value[];
};

/* A job with room for len bytes of value (the caller fills them) and
 * copies of the strings; body may be NULL. */
static struct mam_put_job *mam_job_new(const char *domain, const char *local, const char *with,
				       const char *with_resource, const char *body, size_t len)
{
	const char *src[] = { domain, local, with, with_resource, body ? body : "" };
	size_t n[5], size = sizeof(struct mam_put_job) + len;
	for (int i = 0; i < 5; i++)
		size += (n[i] = strlen(src[i]) + 1);
	struct mam_put_job *j = xmalloc(size);
	j->size = size;
	j->id = j->ref = 0;
	j->outgoing = 0;
	j->len = len;
	char *p = j->value + len;
	const char **dst[] = { &j->domain, &j->local, &j->with, &j->with_resource, &j->body };
	for (int i = 0; i < 5; i++) {
		memcpy(p, src[i], n[i]);
		*dst[i] = p;
		p += n[i];
	}
	return j;
}

static int mam_put_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct mam_put_job *j = arg;
	struct archive_entry e = { .id = j->id, .with = j->with, .with_resource = j->with_resource,
				   .outgoing = j->outgoing, .body = j->body,
				   .value = j->value, .len = j->len, .ref = j->ref };
	return drv->archive_put(st, j->domain, j->local, &e);
}

/* On the storage thread: nothing waits for an archive write. */
static void mam_put_done(struct loop *l, void *arg, int rc)
{
	(void)l;
	struct mam_put_job *j = arg;
	if (rc < 0)
		log_error("mam: message %lld of %s@%s could not be archived", j->id, j->local,
			  j->domain);
	free(j);
}

/* Queues st for the archive of owner with id; with ref, as the same
 * message as entry ref, queued before (nothing serialised again). */
static void mam_put(struct loop *l, const struct jid *owner, const struct jid *with, int outgoing,
		    long long id, long long ref, struct xml_node *st, struct arena *a)
{
	char with_bare[2 * JID_PART_MAX + 2];
	jid_format_bare(with, with_bare, sizeof with_bare);
	struct mam_put_job *j;
	if (ref != 0) {
		j = mam_job_new(owner->domain, owner->local, with_bare, with->resource, NULL, 0);
	} else {
		struct buf value;
		buf_init(&value);
		buf_reserve(&value, 1024); /* most stanzas: one allocation */
		/* Written inside <forwarded/> later: the message keeps its xmlns. */
		xml_serialize(st, NS_FORWARD, &value);
		struct xml_node *body = xml_child(st, NS_CLIENT, "body");
		j = mam_job_new(owner->domain, owner->local, with_bare, with->resource,
				body != NULL ? xml_text(a, body) : NULL, value.len);
		memcpy(j->value, value.data, value.len);
		buf_free(&value);
	}
	j->outgoing = outgoing;
	j->id = id;
	j->ref = ref;
	storeq_call_sized(l->srv->storeq, NULL, mam_put_run, mam_put_done, j, j->size);
}

static enum status mam_on_sent(struct hook_ctx *c)
{
	const struct config_mam *mc = mam_config(c->loop, c->from->domain);
	if (mc == NULL || !mam_archivable(c->st))
		return OK;
	char owner[2 * JID_PART_MAX + 2], with[2 * JID_PART_MAX + 2];
	jid_format_bare(c->from, owner, sizeof owner);
	jid_format_bare(c->to, with, sizeof with);
	if (strcmp(owner, with) == 0 || c->to->local[0] == '\0')
		return OK; /* to oneself: archived once, as received */
	if (!mam_prefs_allow(c->loop, c->from, owner, with, mc))
		return OK;
	bool local_archive = mam_config(c->loop, c->to->domain) != NULL;
	/* The recipient's archive may store this very entry (mam_on_deliver):
	 * a stanza-id the sender forged in the recipient's name goes now, as
	 * delivery would remove it. */
	if (local_archive)
		mam_strip_stanza_ids(c->st, with);
	long long id = mam_new_id(c->loop->srv);
	mam_put(c->loop, c->from, c->to, 1, id, 0, c->st, c->a);
	if (local_archive) {
		c->loop->archived_sent.st = c->st;
		c->loop->archived_sent.id = id;
	}
	return OK;
}

static enum status mam_on_deliver(struct hook_ctx *c)
{
	char owner[2 * JID_PART_MAX + 2], with[2 * JID_PART_MAX + 2];
	jid_format_bare(c->to, owner, sizeof owner);
	mam_strip_stanza_ids(c->st, owner);
	/* The sender's archive has this message already (one local account
	 * to another, on this loop, in this deliver_stanza): refer to it. */
	long long ref = c->loop->archived_sent.st == c->st ? c->loop->archived_sent.id : 0;
	c->loop->archived_sent.st = NULL;
	c->loop->archived_sent.id = 0;
	const struct config_mam *mc = mam_config(c->loop, c->to->domain);
	if (mc == NULL || !mam_archivable(c->st))
		return OK;
	jid_format_bare(c->from, with, sizeof with);
	if (!mam_prefs_allow(c->loop, c->to, owner, with, mc))
		return OK;
	long long id = mam_new_id(c->loop->srv);
	char ids[24];
	snprintf(ids, sizeof ids, "%lld", id);
	struct xml_node *sid = xml_add_child(c->a, c->st, NS_SID, "stanza-id");
	xml_set_attr(c->a, sid, "id", ids);
	xml_set_attr(c->a, sid, "by", owner);
	struct jid owner_jid = *c->to;
	owner_jid.resource[0] = '\0';
	mam_put(c->loop, &owner_jid, c->from, 0, id, ref, c->st, c->a);
	return OK;
}

void mam_archive_room(struct loop *l, const char *service, const char *room, long long id,
		      const char *nick, const char *body, const char *bytes, size_t len)
{
	char with[2 * JID_PART_MAX + 2];
	snprintf(with, sizeof with, "%s@%s", room, service);
	/* The room broadcasts in the stream's default namespace; inside
	 * <forwarded/> the message must say it is jabber:client. */
	static const char open[] = "<message", ns[] = " xmlns='" NS_CLIENT "'";
	size_t skip = 0;
	if (len > sizeof open && memcmp(bytes, open, sizeof open - 1) == 0 &&
	    (bytes[sizeof open - 1] == ' ' || bytes[sizeof open - 1] == '>'))
		skip = sizeof open - 1;
	size_t add = skip ? skip + sizeof ns - 1 : 0;
	struct mam_put_job *j = mam_job_new(service, room, with, nick, body, add + len - skip);
	if (skip) {
		memcpy(j->value, open, skip);
		memcpy(j->value + skip, ns, sizeof ns - 1);
	}
	memcpy(j->value + add, bytes + skip, len - skip);
	j->id = id;
	storeq_call_sized(l->srv->storeq, NULL, mam_put_run, mam_put_done, j, j->size);
}

long long mam_stanza_id_of(const char *xml, size_t len, const char *owner)
{
	struct arena a;
	arena_init(&a);
	long long id = 0;
	struct xml_node *n = xml_parse_element(&a, xml, len);
	for (struct xml_node *c = n ? n->children : NULL; c; c = c->next) {
		const char *by = xml_is(c, NS_SID, "stanza-id") ? xml_attr(c, "by") : NULL;
		if (by != NULL && strcmp(by, owner) == 0)
			id = mam_parse_id(xml_attr(c, "id"));
	}
	arena_reset(&a);
	return id;
}

/* --- the catch-up horizon --- */

static void mam_set_horizon(struct server *srv, uint64_t session, long long horizon)
{
	struct mam *m = srv->mam;
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < MAM_HORIZON_SLOTS; i++) {
		size_t k = (session + i) % MAM_HORIZON_SLOTS;
		if (m->horizons[k].session == session || m->horizons[k].session == 0) {
			m->horizons[k].session = session;
			if (m->horizons[k].horizon < horizon)
				m->horizons[k].horizon = horizon;
			break;
		}
	}
	/* A full table (a thousand sessions querying before presence at
	 * once) only means one of them may get some messages twice. */
	pthread_mutex_unlock(&m->lock);
}

long long mam_take_horizon(struct server *srv, uint64_t session)
{
	struct mam *m = srv->mam;
	long long h = 0;
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < MAM_HORIZON_SLOTS; i++) {
		size_t k = (session + i) % MAM_HORIZON_SLOTS;
		if (m->horizons[k].session == 0)
			break;
		if (m->horizons[k].session == session) {
			h = m->horizons[k].horizon;
			/* Backward-shift deletion keeps the probe chains whole. */
			size_t hole = k;
			for (size_t j = (k + 1) % MAM_HORIZON_SLOTS; m->horizons[j].session != 0;
			     j = (j + 1) % MAM_HORIZON_SLOTS) {
				size_t home = m->horizons[j].session % MAM_HORIZON_SLOTS;
				bool movable = hole <= j ? (home <= hole || home > j)
							 : (home <= hole && home > j);
				if (movable) {
					m->horizons[hole] = m->horizons[j];
					hole = j;
				}
			}
			m->horizons[hole].session = 0;
			m->horizons[hole].horizon = 0;
			break;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return h;
}

static enum status mam_on_session_ended(struct hook_ctx *c)
{
	mam_take_horizon(c->loop->srv, c->session);
	return OK;
}

static enum status mam_on_account_deleted(struct hook_ctx *c)
{
	char owner[2 * JID_PART_MAX + 2];
	jid_format_bare(c->from, owner, sizeof owner);
	mam_prefs_forget(c->loop->srv, owner);
	return OK;
}

/* --- queries --- */

struct mam_query_job {
	char domain[JID_PART_MAX + 1];
	char local[JID_PART_MAX + 1];
	char archive_jid[3 * JID_PART_MAX + 3]; /* results come from it */
	char to[3 * JID_PART_MAX + 3];          /* the asker */
	char *queryid, *iq_id;
	char with[2 * JID_PART_MAX + 2];
	char with_resource[JID_PART_MAX + 1];
	char *text;
	long long ids[MAM_MAX_IDS];
	long long rsm_after, rsm_before;        /* to check they exist */
	bool count;
	struct archive_query q;
	/* the answer, built on the storage thread */
	int rc;                                 /* -1 error, -2 item-not-found, -3 busy */
	struct buf out;                         /* the result messages */
	size_t *ends;                           /* where each one ends in out */
	long long first, last, total;
	bool complete;
	int n;
};

static void mam_xml_attr(struct buf *b, const char *name, const char *value)
{
	buf_printf(b, " %s='", name);
	buf_append_escaped(b, value, strlen(value));
	buf_puts(b, "'");
}

static void mam_result(void *arg, long long id, const void *value, size_t len, int outgoing,
		       const char *with)
{
	struct mam_query_job *j = arg;
	(void)outgoing;
	(void)with;
	char stamp[40];
	datetime_format(id, stamp, sizeof stamp);
	buf_puts(&j->out, "<message");
	mam_xml_attr(&j->out, "to", j->to);
	mam_xml_attr(&j->out, "from", j->archive_jid);
	buf_puts(&j->out, "><result xmlns='" NS_MAM "'");
	if (j->queryid != NULL)
		mam_xml_attr(&j->out, "queryid", j->queryid);
	buf_printf(&j->out, " id='%lld'><forwarded xmlns='" NS_FORWARD "'>"
			    "<delay xmlns='" NS_DELAY "' stamp='%s'/>", id, stamp);
	buf_append(&j->out, value, len);
	buf_puts(&j->out, "</forwarded></result></message>");
	j->ends = xrealloc(j->ends, (size_t)(j->n + 2) * sizeof *j->ends);
	j->ends[j->n] = j->out.len;
	if (j->n++ == 0)
		j->first = id;
	j->last = id;
}

static int mam_query_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct mam_query_job *j = arg;
	long long check[2] = { j->rsm_after, j->rsm_before };
	for (int i = 0; i < 2; i++) {
		if (check[i] == 0)
			continue;
		int has = drv->archive_has(st, j->domain, j->local, check[i]);
		if (has <= 0) {
			j->rc = has < 0 ? -1 : -2;
			return 0;
		}
	}
	int n = drv->archive_query(st, j->domain, j->local, &j->q, mam_result, j, &j->complete,
				   j->count ? &j->total : NULL);
	j->rc = n == -2 ? -3 : n < 0 ? -1 : 0;
	return 0;
}

static void mam_query_free(struct mam_query_job *j)
{
	free(j->queryid);
	free(j->iq_id);
	free(j->text);
	free(j->ends);
	buf_free(&j->out);
	free(j);
}

/* Sends n stanzas (serialised for a client stream, the i-th ending at
 * ends[i] in b) to the full JID to: as they are to a local session,
 * through the router as trees to anyone else (a remote occupant asking a
 * room). */
static void mam_send(struct loop *l, const char *to, const struct buf *b, const size_t *ends,
		     int n)
{
	struct jid j;
	if (jid_parse(&j, to, strlen(to)) != 0)
		return;
	if (config_find_host(l->srv->cfg, j.domain) != NULL) {
		char bare[2 * JID_PART_MAX + 2];
		struct router_target t;
		jid_format_bare(&j, bare, sizeof bare);
		if (router_find_full(l->srv->router, bare, j.resource, &t) == 0) {
			struct refbuf *r = refbuf_new(b->data, b->len);
			deliver_to_session(l, &t, r);
			refbuf_release(r);
		}
		return;
	}
	size_t start = 0;
	for (int i = 0; i < n; i++) {
		struct arena a;
		arena_init(&a);
		struct xml_node *st = xml_parse_element(&a, b->data + start, ends[i] - start);
		if (st != NULL)
			deliver_to_jid(l, st, &j);
		arena_reset(&a);
		start = ends[i];
	}
}

/* Sends the finished query's answer: the results, then the iq result
 * with <fin/>, in that order. */
static void mam_query_done(struct loop *l, void *arg, int rc)
{
	struct mam_query_job *j = arg;
	if (l == NULL) {
		mam_query_free(j);
		return;
	}
	struct buf b;
	buf_init(&b);
	int n = 0;
	if (rc < 0 || j->rc < 0) {
		/* -3: a first search of a big archive, its words being
		 * indexed (each query does a part). */
		const char *cond = j->rc == -2   ? "item-not-found"
				   : j->rc == -3 ? "resource-constraint"
						 : "internal-server-error";
		const char *type = j->rc == -2 ? "cancel" : "wait";
		buf_puts(&b, "<iq type='error'");
		mam_xml_attr(&b, "to", j->to);
		mam_xml_attr(&b, "from", j->archive_jid);
		if (j->iq_id)
			mam_xml_attr(&b, "id", j->iq_id);
		buf_printf(&b, "><error type='%s'><%s xmlns='" NS_STANZA_ERRORS "'/>", type, cond);
		if (j->rc == -3)
			buf_puts(&b, "<text xmlns='" NS_STANZA_ERRORS "'>The archive is being"
				     " indexed for its first search: ask again.</text>");
		buf_puts(&b, "</error></iq>");
	} else {
		buf_append(&b, j->out.data, j->out.len);
		n = j->n;
		buf_puts(&b, "<iq type='result'");
		mam_xml_attr(&b, "to", j->to);
		mam_xml_attr(&b, "from", j->archive_jid);
		if (j->iq_id)
			mam_xml_attr(&b, "id", j->iq_id);
		buf_puts(&b, "><fin xmlns='" NS_MAM "'");
		if (j->complete)
			buf_puts(&b, " complete='true'");
		buf_puts(&b, "><set xmlns='" NS_RSM "'>");
		if (j->n > 0)
			buf_printf(&b, "<first>%lld</first><last>%lld</last>", j->first, j->last);
		if (j->count && j->total >= 0)
			buf_printf(&b, "<count>%lld</count>", j->total);
		buf_puts(&b, "</set></fin></iq>");
	}
	j->ends = xrealloc(j->ends, (size_t)(n + 1) * sizeof *j->ends);
	j->ends[n] = b.len;
	mam_send(l, j->to, &b, j->ends, n + 1);
	buf_free(&b);
	mam_query_free(j);
}

/* The values of a submitted form's field, or NULL. */
static struct xml_node *mam_field(struct xml_node *form, const char *var)
{
	for (struct xml_node *f = form ? form->children : NULL; f; f = f->next) {
		const char *v = xml_is(f, NS_DATA, "field") ? xml_attr(f, "var") : NULL;
		if (v != NULL && strcmp(v, var) == 0)
			return f;
	}
	return NULL;
}

static const char *mam_field_value(struct arena *a, struct xml_node *form, const char *var)
{
	struct xml_node *f = mam_field(form, var);
	struct xml_node *v = f ? xml_child(f, NS_DATA, "value") : NULL;
	return v ? xml_text(a, v) : NULL;
}

/* Reads the form and the RSM set into j; returns NULL, or the stanza error
 * condition to answer with. */
static const char *mam_query_parse(struct iq_ctx *c, struct mam_query_job *j, int max_page)
{
	struct xml_node *form = xml_child(c->payload, NS_DATA, "x");
	const char *v;
	if ((v = mam_field_value(c->a, form, "with")) != NULL) {
		struct jid w;
		if (jid_parse(&w, v, strlen(v)) != 0)
			return "bad-request"; /* a field's value, not an address */
		jid_format_bare(&w, j->with, sizeof j->with);
		j->q.with = j->with;
		if (w.resource[0] != '\0') {
			snprintf(j->with_resource, sizeof j->with_resource, "%s", w.resource);
			j->q.with_resource = j->with_resource;
		}
	}
	long long usec;
	if ((v = mam_field_value(c->a, form, "start")) != NULL) {
		if (datetime_parse(v, &usec) != 0)
			return "bad-request";
		j->q.after_id = usec > 0 ? usec - 1 : 0;
	}
	if ((v = mam_field_value(c->a, form, "end")) != NULL) {
		if (datetime_parse(v, &usec) != 0)
			return "bad-request";
		j->q.before_id = usec + 1 > 0 ? usec + 1 : 1;
	}
	if ((v = mam_field_value(c->a, form, "after-id")) != NULL) {
		long long id = mam_parse_id(v);
		if (id == 0)
			return "bad-request";
		if (id > j->q.after_id)
			j->q.after_id = id;
	}
	if ((v = mam_field_value(c->a, form, "before-id")) != NULL) {
		long long id = mam_parse_id(v);
		if (id == 0)
			return "bad-request";
		if (j->q.before_id == 0 || id < j->q.before_id)
			j->q.before_id = id;
	}
	struct xml_node *ids = mam_field(form, "ids");
	for (struct xml_node *n = ids ? ids->children : NULL; n; n = n->next) {
		if (!xml_is(n, NS_DATA, "value"))
			continue;
		if (j->q.n_ids == MAM_MAX_IDS)
			return "policy-violation";
		long long id = mam_parse_id(xml_text(c->a, n));
		if (id == 0)
			return "bad-request";
		j->ids[j->q.n_ids++] = id;
	}
	if (ids != NULL && j->q.n_ids == 0)
		return "bad-request";
	j->q.ids = j->ids;
	if ((v = mam_field_value(c->a, form, "{" NS_FULLTEXT "}fulltext")) != NULL ||
	    (v = mam_field_value(c->a, form, "fulltext")) != NULL) {
		if (strlen(v) > 1024)
			return "policy-violation";
		j->text = xstrdup(v);
		j->q.text = j->text;
	}
	j->q.max = max_page;
	j->q.max_bytes = MAM_PAGE_BYTES;
	struct xml_node *set = xml_child(c->payload, NS_RSM, "set");
	if (set != NULL) {
		struct xml_node *n;
		if ((n = xml_child(set, NS_RSM, "max")) != NULL) {
			long m;
			if (parse_count(xml_text(c->a, n), &m) != 0)
				return "bad-request"; /* not a count (XEP-0059 2.1) */
			j->q.max = m < max_page ? (int)m : max_page;
		}
		if ((n = xml_child(set, NS_RSM, "after")) != NULL) {
			j->rsm_after = mam_parse_id(xml_text(c->a, n));
			if (j->rsm_after == 0)
				return "item-not-found";
			j->q.page_after = j->rsm_after;
		}
		if ((n = xml_child(set, NS_RSM, "before")) != NULL) {
			j->q.from_end = true;
			const char *b = xml_text(c->a, n);
			if (b[0] != '\0') {
				j->rsm_before = mam_parse_id(b);
				if (j->rsm_before == 0)
					return "item-not-found";
				j->q.page_before = j->rsm_before;
			}
		}
	}
	j->count = true;
	return NULL;
}

void mam_query(struct iq_ctx *c, const char *domain, const char *local, const char *archive_jid)
{
	const struct config_host *h = config_find_host(c->loop->srv->cfg, c->to->domain);
	int max_page = h != NULL ? h->mam.max_page : 100;
	struct mam_query_job *j = xcalloc(1, sizeof *j);
	buf_init(&j->out);
	snprintf(j->domain, sizeof j->domain, "%s", domain);
	snprintf(j->local, sizeof j->local, "%s", local);
	snprintf(j->archive_jid, sizeof j->archive_jid, "%s", archive_jid);
	jid_format(c->from, j->to, sizeof j->to);
	const char *qid = xml_attr(c->payload, "queryid");
	const char *id = xml_attr(c->iq, "id");
	if (qid != NULL)
		j->queryid = xstrdup(qid);
	if (id != NULL)
		j->iq_id = xstrdup(id);
	const char *cond = mam_query_parse(c, j, max_page);
	if (cond != NULL) {
		module_error(c, strcmp(cond, "item-not-found") == 0 ? "cancel" : "modify", cond);
		mam_query_free(j);
		return;
	}
	storeq_call(c->loop->srv->storeq, c->loop, mam_query_run, mam_query_done, j);
}

/* An account's own archive. A query by a session that has not sent its
 * initial presence, over everything since some point, is a catch-up: its
 * offline messages up to now are then not sent again (offline.c). */
static enum status mam_query_own(struct iq_ctx *c)
{
	if (!mam_same_account(c->from, c->to)) {
		module_error(c, "cancel", "forbidden");
		return OK;
	}
	struct xml_node *form = xml_child(c->payload, NS_DATA, "x");
	bool catch_up = mam_field(form, "with") == NULL && mam_field(form, "end") == NULL &&
			mam_field(form, "ids") == NULL && mam_field(form, "before-id") == NULL &&
			mam_field(form, "fulltext") == NULL &&
			mam_field(form, "{" NS_FULLTEXT "}fulltext") == NULL;
	char bare[2 * JID_PART_MAX + 2];
	jid_format_bare(c->to, bare, sizeof bare);
	struct router_target t;
	if (catch_up &&
	    router_find_full(c->loop->srv->router, bare, c->from->resource, &t) == 0 &&
	    !t.available)
		mam_set_horizon(c->loop->srv, t.session, mam_last_id(c->loop->srv));
	mam_query(c, c->to->domain, c->to->local, bare);
	return OK;
}

void mam_query_form(struct iq_ctx *c)
{
	struct xml_node *q = xml_new(c->a, NS_MAM, "query");
	struct xml_node *x = xml_add_child(c->a, q, NS_DATA, "x");
	xml_set_attr(c->a, x, "type", "form");
	static const struct {
		const char *var, *type;
	} fields[] = {
		{ "FORM_TYPE", "hidden" },  { "with", "jid-single" },
		{ "start", "text-single" }, { "end", "text-single" },
		{ "before-id", "text-single" }, { "after-id", "text-single" },
		{ "ids", "list-multi" },    { "{" NS_FULLTEXT "}fulltext", "text-single" },
	};
	for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
		struct xml_node *f = xml_add_child(c->a, x, NS_DATA, "field");
		xml_set_attr(c->a, f, "var", fields[i].var);
		xml_set_attr(c->a, f, "type", fields[i].type);
		if (i == 0) {
			struct xml_node *v = xml_add_child(c->a, f, NS_DATA, "value");
			xml_add_text(c->a, v, NS_MAM, strlen(NS_MAM));
		}
	}
	module_reply(c, q);
}

static enum status mam_form(struct iq_ctx *c)
{
	mam_query_form(c);
	return OK;
}

struct mam_forget_job {
	char domain[JID_PART_MAX + 1];
	char local[JID_PART_MAX + 1];
};

static int mam_forget_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct mam_forget_job *j = arg;
	return drv->archive_delete(st, j->domain, j->local, LLONG_MAX) < 0 ? -1 : 0;
}

void mam_forget_archive(struct loop *l, const char *domain, const char *local)
{
	struct mam_forget_job *j = xcalloc(1, sizeof *j);
	snprintf(j->domain, sizeof j->domain, "%s", domain);
	snprintf(j->local, sizeof j->local, "%s", local);
	storeq_call(l->srv->storeq, NULL, mam_forget_run, NULL, j);
}

/* --- preferences iqs --- */

static void mam_prefs_node(struct iq_ctx *c, struct xml_node *q, const struct mam_prefs *p,
			   int host_def)
{
	static const char *const names[] = { "always", "never", "roster" };
	xml_set_attr(c->a, q, "default", names[p->def >= 0 ? p->def : host_def]);
	const char *lists[2] = { p->always, p->never };
	for (int k = 0; k < 2; k++) {
		struct xml_node *l = xml_add_child(c->a, q, NS_MAM, names[k]);
		for (const char *s = lists[k]; s && *s;) {
			const char *e = strchr(s, '\n');
			size_t len = e ? (size_t)(e - s) : strlen(s);
			struct xml_node *j = xml_add_child(c->a, l, NS_MAM, "jid");
			xml_add_text(c->a, j, s, len);
			s = e ? e + 1 : s + len;
		}
	}
}

static enum status mam_prefs_get(struct iq_ctx *c)
{
	if (!mam_same_account(c->from, c->to)) {
		module_error(c, "cancel", "forbidden");
		return OK;
	}
	struct buf b;
	buf_init(&b);
	struct mam_prefs p = { .def = -1 };
	int rc = c->loop->srv->storage->map_get(c->loop->store, c->to->domain, c->to->local,
						STORE_MAM, "prefs", &b);
	if (rc < 0) {
		buf_free(&b);
		module_error(c, "wait", "internal-server-error");
		return OK;
	}
	if (rc == 0)
		mam_prefs_parse(&p, b.data, b.len);
	buf_free(&b);
	const struct config_host *h = config_find_host(c->loop->srv->cfg, c->to->domain);
	struct xml_node *q = xml_new(c->a, NS_MAM, "prefs");
	mam_prefs_node(c, q, &p, h ? (int)h->mam.def : MAM_ALWAYS);
	free(p.always);
	free(p.never);
	module_reply(c, q);
	return OK;
}

/* Normalises one prefs list into b ("\n"-separated bare JIDs); returns
 * NULL or the error condition. */
static const char *mam_prefs_list(struct iq_ctx *c, struct xml_node *list, struct buf *b)
{
	int n = 0;
	for (struct xml_node *j = list ? list->children : NULL; j; j = j->next) {
		if (!xml_is(j, NS_MAM, "jid"))
			continue;
		if (++n > MAM_MAX_PREF_JIDS)
			return "policy-violation";
		const char *v = xml_text(c->a, j);
		struct jid w;
		char bare[2 * JID_PART_MAX + 2];
		if (jid_parse(&w, v, strlen(v)) != 0)
			return "jid-malformed";
		jid_format_bare(&w, bare, sizeof bare);
		if (b->len)
			buf_puts(b, "\n");
		buf_puts(b, bare);
	}
	buf_append(b, "", 1);
	return NULL;
}

static enum status mam_prefs_set(struct iq_ctx *c)
{
	if (!mam_same_account(c->from, c->to)) {
		module_error(c, "cancel", "forbidden");
		return OK;
	}
	const char *d = xml_attr(c->payload, "default");
	struct mam_prefs p = { .def = -1 };
	if (d != NULL) {
		p.def = strcmp(d, "always") == 0 ? MAM_ALWAYS : strcmp(d, "never") == 0 ? MAM_NEVER
			: strcmp(d, "roster") == 0 ? MAM_ROSTER : -2;
	}
	if (p.def == -2) {
		module_error(c, "modify", "bad-request");
		return OK;
	}
	struct buf lists[2];
	const char *names[2] = { "always", "never" };
	const char *cond = NULL;
	for (int k = 0; k < 2; k++) {
		buf_init(&lists[k]);
		if (cond == NULL)
			cond = mam_prefs_list(c, xml_child(c->payload, NS_MAM, names[k]), &lists[k]);
	}
	if (cond == NULL) {
		p.always = lists[0].len > 1 ? lists[0].data : NULL;
		p.never = lists[1].len > 1 ? lists[1].data : NULL;
		const struct config_host *h = config_find_host(c->loop->srv->cfg, c->to->domain);
		struct xml_node *q = xml_new(c->a, NS_MAM, "prefs");
		mam_prefs_node(c, q, &p, h ? (int)h->mam.def : MAM_ALWAYS);
		struct buf b;
		buf_init(&b);
		xml_serialize(q, NS_CLIENT, &b);
		int rc = c->loop->srv->storage->map_put(c->loop->store, c->to->domain, c->to->local,
							STORE_MAM, "prefs", b.data, b.len);
		buf_free(&b);
		char bare[2 * JID_PART_MAX + 2];
		jid_format_bare(c->to, bare, sizeof bare);
		mam_prefs_forget(c->loop->srv, bare);
		if (rc != 0)
			module_error(c, "wait", "internal-server-error");
		else
			module_reply(c, q);
	} else {
		module_error(c, "modify", cond);
	}
	buf_free(&lists[0]);
	buf_free(&lists[1]);
	return OK;
}

/* --- retention --- */

struct mam_expire_job {
	char domain[JID_PART_MAX + 1];
	char service[JID_PART_MAX + 1]; /* the host's chat service, or "" */
	long long before;
	long long deleted;
};

static int mam_expire_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct mam_expire_job *j = arg;
	long long n = drv->archive_delete(st, j->domain, NULL, j->before);
	long long m = j->service[0] ? drv->archive_delete(st, j->service, NULL, j->before) : 0;
	if (n < 0 || m < 0)
		return -1;
	j->deleted = n + m;
	return 0;
}

static void mam_expire_done(struct loop *l, void *arg, int rc)
{
	struct mam_expire_job *j = arg;
	if (l != NULL && rc == 0 && j->deleted > 0)
		log_info("mam: %lld archived message(s) of %s expired", j->deleted, j->domain);
	free(j);
}

void mam_sweep(struct loop *l)
{
	struct mam *m = l->srv->mam;
	time_t now = time(NULL);
	if (m == NULL || now < m->next_expiry)
		return;
	m->next_expiry = now + 3600;
	const struct config *cfg = l->srv->cfg;
	for (size_t i = 0; i < cfg->n_hosts; i++) {
		const struct config_host *h = &cfg->hosts[i];
		if (!h->mam.enabled || h->mam.archive_expiry <= 0)
			continue;
		struct mam_expire_job *j = xcalloc(1, sizeof *j);
		snprintf(j->domain, sizeof j->domain, "%s", h->domain);
		const char *svc = muc_service_domain(l->srv, h->domain);
		snprintf(j->service, sizeof j->service, "%s", svc ? svc : "");
		j->before = ((long long)now - (long long)h->mam.archive_expiry * 86400) * 1000000;
		storeq_call(l->srv->storeq, l, mam_expire_run, mam_expire_done, j);
	}
}

/* --- the module --- */

static bool mam_on_host(const struct config_host *h)
{
	return h->mam.enabled;
}

static const char *const features[] = { NS_MAM, NS_MAM_EXTENDED, NS_SID, NS_FULLTEXT, NULL };

static const struct module_iq iqs[] = {
	{ "set", NS_MAM, "query", IQ_ACCOUNT, mam_query_own },
	{ "get", NS_MAM, "query", IQ_ACCOUNT, mam_form },
	{ "get", NS_MAM, "prefs", IQ_ACCOUNT, mam_prefs_get },
	{ "set", NS_MAM, "prefs", IQ_ACCOUNT, mam_prefs_set },
	{ NULL, NULL, NULL, 0, NULL },
};

static const struct module_hook hooks[] = {
	{ HOOK_MESSAGE_SENT, 50, mam_on_sent },
	{ HOOK_MESSAGE_DELIVER, 50, mam_on_deliver },
	{ HOOK_SESSION_ENDED, 50, mam_on_session_ended },
	{ HOOK_ACCOUNT_DELETED, 50, mam_on_account_deleted },
	{ 0, 0, NULL },
};

const struct module mod_mam = { .name = "mam", .features = features, .iqs = iqs,
				.hooks = hooks, .on_host = mam_on_host };
