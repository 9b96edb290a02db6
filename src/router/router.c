#include "router/router.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define SHARDS 64

struct rsession {
	struct router_target t;
	struct refbuf *presence; /* last broadcast presence; NULL if none */
	unsigned interest;       /* ROUTER_WANTS_* the session asked for */
	bool has_sm_key;
	unsigned char sm_key[ROUTER_SM_KEY]; /* resumption (XEP-0198) */
	struct rsession *next;
	char resource[]; /* normalised resourcepart */
};

struct raccount {
	struct raccount *next;    /* hash chain */
	struct rsession *sessions;
	char bare[];              /* normalised bare JID */
};

/* A resumable session that ended: what a late <resume/> is told (the
 * count of the client's stanzas it had handled). */
struct ended_sm {
	uint64_t account;                     /* hash of the bare JID */
	unsigned char key[ROUTER_SM_KEY];
	uint32_t h;
	bool used;
};

struct shard {
	pthread_mutex_t lock;
	struct raccount **buckets;
	size_t cap;   /* power of two */
	size_t count; /* accounts */
	struct ended_sm *ended; /* ROUTER_ENDED_SM, oldest overwritten; lazily */
	unsigned ended_next;
};

struct router {
	struct shard shards[SHARDS];
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

struct router *router_new(void)
{
	struct router *r = xcalloc(1, sizeof *r);
	for (int i = 0; i < SHARDS; i++) {
		pthread_mutex_init(&r->shards[i].lock, NULL);
		r->shards[i].cap = 16;
		r->shards[i].buckets = xcalloc(16, sizeof(struct raccount *));
	}
	return r;
}

void router_free(struct router *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < SHARDS; i++) {
		struct shard *s = &r->shards[i];
		for (size_t b = 0; b < s->cap; b++) {
			struct raccount *a = s->buckets[b];
			while (a) {
				struct raccount *na = a->next;
				struct rsession *rs = a->sessions;
				while (rs) {
					struct rsession *nrs = rs->next;
					refbuf_release(rs->presence);
					free(rs);
					rs = nrs;
				}
				free(a);
				a = na;
			}
		}
		free(s->buckets);
		free(s->ended);
		pthread_mutex_destroy(&s->lock);
	}
	free(r);
}

static struct shard *shard_of(struct router *r, const char *bare, uint64_t *h)
{
	*h = hash_str(bare);
	return &r->shards[*h % SHARDS];
}

/* Caller holds the shard lock. */
static struct raccount **find_account(struct shard *s, uint64_t h, const char *bare)
{
	struct raccount **pp = &s->buckets[(h / SHARDS) & (s->cap - 1)];
	while (*pp && strcmp((*pp)->bare, bare) != 0)
		pp = &(*pp)->next;
	return pp;
}

static void grow(struct shard *s)
{
	size_t cap = s->cap * 2;
	struct raccount **nb = xcalloc(cap, sizeof *nb);
	for (size_t i = 0; i < s->cap; i++) {
		struct raccount *a = s->buckets[i];
		while (a) {
			struct raccount *next = a->next;
			size_t j = (hash_str(a->bare) / SHARDS) & (cap - 1);
			a->next = nb[j];
			nb[j] = a;
			a = next;
		}
	}
	free(s->buckets);
	s->buckets = nb;
	s->cap = cap;
}

int router_bind(struct router *r, const char *bare, const char *resource, uint64_t session,
		int loop, struct router_target *replaced)
{
	uint64_t h;
	struct shard *s = shard_of(r, bare, &h);
	int result = 0;
	pthread_mutex_lock(&s->lock);
	struct raccount **pp = find_account(s, h, bare);
	if (*pp == NULL) {
		if (s->count + 1 > s->cap) {
			grow(s);
			pp = find_account(s, h, bare);
		}
		size_t n = strlen(bare) + 1;
		struct raccount *a = xcalloc(1, sizeof *a + n);
		memcpy(a->bare, bare, n);
		*pp = a;
		s->count++;
	}
	struct raccount *a = *pp;
	for (struct rsession **sp = &a->sessions; *sp; sp = &(*sp)->next) {
		if (strcmp((*sp)->resource, resource) == 0) {
			struct rsession *old = *sp;
			*replaced = old->t;
			*sp = old->next;
			refbuf_release(old->presence);
			free(old);
			result = 1;
			break;
		}
	}
	size_t n = strlen(resource) + 1;
	struct rsession *rs = xcalloc(1, sizeof *rs + n);
	memcpy(rs->resource, resource, n);
	rs->t.session = session;
	rs->t.loop = loop;
	rs->next = a->sessions;
	a->sessions = rs;
	pthread_mutex_unlock(&s->lock);
	return result;
}

void router_unbind(struct router *r, const char *bare, const char *resource, uint64_t session)
{
	uint64_t h;
	struct shard *s = shard_of(r, bare, &h);
	pthread_mutex_lock(&s->lock);
	struct raccount **pp = find_account(s, h, bare);
	if (*pp != NULL) {
		struct raccount *a = *pp;
		for (struct rsession **sp = &a->sessions; *sp; sp = &(*sp)->next) {
			if ((*sp)->t.session == session && strcmp((*sp)->resource, resource) == 0) {
				struct rsession *old = *sp;
				*sp = old->next;
				refbuf_release(old->presence);
				free(old);
				break;
			}
		}
		if (a->sessions == NULL) {
			*pp = a->next;
			free(a);
			s->count--;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

void router_set_presence(struct router *r, const char *bare, const char *resource,
			 uint64_t session, bool available, int priority)
{
	uint64_t h;
	struct shard *s = shard_of(r, bare, &h);
	pthread_mutex_lock(&s->lock);
	struct raccount *a = *find_account(s, h, bare);
	for (struct rsession *rs = a ? a->sessions : NULL; rs; rs = rs->next) {
		if (rs->t.session == session && strcmp(rs->resource, resource) == 0) {
			rs->t.available = available;
			rs->t.priority = priority;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

int router_find_full(struct router *r, const char *bare, const char *resource,
		     struct router_target *out)
{
	uint64_t h;
	struct shard *s = shard_of(r, bare, &h);
	int rc = -1;
	pthread_mutex_lock(&s->lock);
	struct raccount *a = *find_account(s, h, bare);
	for (struct rsession *rs = a ? a->sessions : NULL; rs; rs = rs->next) {
		if (strcmp(rs->resource, resource) == 0) {
			*out = rs->t;
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int router_find_bare_message(struct router *r, const char *bare, struct router_target *out,
			     int max, int *n_sessions)
{
	uint64_t h;
	struct shard *s = shard_of(r, bare, &h);
	int n = 0, total = 0, best = -1;
	pthread_mutex_lock(&s->lock);
	struct raccount *a = *find_account(s, h, bare);
	for (struct rsession *rs = a ? a->sessions : NULL; rs; rs = rs->next) {
		total++;
		if (rs->t.available && rs->t.priority > best)
			best = rs->t.priority;
	}
	for (struct rsession *rs = a ? a->sessions : NULL; rs && best >= 0; rs = rs->next)
		if (rs->t.available && rs->t.priority == best && n < max)
			out[n++] = rs->t;
	pthread_mutex_unlock(&s->lock);
	*n_sessions = total;
	return n;
}


/* Calls fn on the session under the shard lock. */
static void with_session(struct router *r, const char *bare, const char *resource,
			 uint64_t session, void (*fn)(struct rsession *rs, void *arg), void *arg)
{
	uint64_t h;
	struct shard *s = shard_of(r, bare, &h);
	pthread_mutex_lock(&s->lock);
	struct raccount *a = *find_account(s, h, bare);
	for (struct rsession *rs = a ? a->sessions : NULL; rs; rs = rs->next) {
		if (rs->t.session == session && strcmp(rs->resource, resource) == 0) {
			fn(rs, arg);
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

static void store_presence(struct rsession *rs, void *arg)
{
	refbuf_release(rs->presence);
	rs->presence = arg ? refbuf_ref(arg) : NULL;
}

void router_set_presence_stanza(struct router *r, const char *bare, const char *resource,
				uint64_t session, struct refbuf *presence)
{
	with_session(r, bare, resource, session, store_presence, presence);
}

static void mark_interested(struct rsession *rs, void *arg)
{
	rs->interest |= *(unsigned *)arg;
}

static void unmark_interested(struct rsession *rs, void *arg)
{
	rs->interest &= ~*(unsigned *)arg;
}

void router_clear_interested(struct router *r, const char *bare, const char *resource,
			     uint64_t session, unsigned what)
{
	with_session(r, bare, resource, session, unmark_interested, &what);
}

void router_set_interested(struct router *r, const char *bare, const char *resource,
			   uint64_t session, unsigned what)
{
	with_session(r, bare, resource, session, mark_interested, &what);
}

/* Collects up to max targets of bare's sessions that keep() accepts, under
 * the shard lock. */
static int collect(struct router *r, const char *bare, bool (*keep)(const struct rsession *rs,
							     unsigned what),
		   unsigned what, struct router_target *out, struct refbuf **presences, int max)
{
	uint64_t h;
	struct shard *s = shard_of(r, bare, &h);
	int n = 0;
	pthread_mutex_lock(&s->lock);
	struct raccount *a = *find_account(s, h, bare);
	for (struct rsession *rs = a ? a->sessions : NULL; rs && n < max; rs = rs->next) {
		if (!keep(rs, what))
			continue;
		if (out != NULL)
			out[n] = rs->t;
		if (presences != NULL)
			presences[n] = refbuf_ref(rs->presence);
		n++;
	}
	pthread_mutex_unlock(&s->lock);
	return n;
}

static bool is_available(const struct rsession *rs, unsigned what)
{
	(void)what;
	return rs->t.available;
}

static bool has_presence(const struct rsession *rs, unsigned what)
{
	(void)what;
	return rs->t.available && rs->presence != NULL;
}

static bool is_interested(const struct rsession *rs, unsigned what)
{
	return (rs->interest & what) != 0;
}

static bool any(const struct rsession *rs, unsigned what)
{
	(void)rs, (void)what;
	return true;
}

int router_find_available(struct router *r, const char *bare, struct router_target *out,
			  int max)
{
	return collect(r, bare, is_available, 0, out, NULL, max);
}

int router_get_presences(struct router *r, const char *bare, struct refbuf **out, int max)
{
	return collect(r, bare, has_presence, 0, NULL, out, max);
}

int router_find_interested(struct router *r, const char *bare, unsigned what,
			   struct router_target *out, int max)
{
	return collect(r, bare, is_interested, what, out, NULL, max);
}

int router_find_all(struct router *r, const char *bare, struct router_target *out, int max)
{
	return collect(r, bare, any, 0, out, NULL, max);
}

static void store_sm_key(struct rsession *rs, void *arg)
{
	memcpy(rs->sm_key, arg, ROUTER_SM_KEY);
	rs->has_sm_key = true;
}

void router_set_sm_key(struct router *r, const char *bare, const char *resource,
		       uint64_t session, const unsigned char *key)
{
	with_session(r, bare, resource, session, store_sm_key, (void *)key);
}

/* Compares in constant time: the key is a secret. */
static bool same_key(const unsigned char *a, const unsigned char *b)
{
	unsigned char d = 0;
	for (int i = 0; i < ROUTER_SM_KEY; i++)
		d |= a[i] ^ b[i];
	return d == 0;
}

int router_find_sm(struct router *r, const char *bare, const unsigned char *key,
		   struct router_target *out, char *resource, size_t resource_size)
{
	uint64_t h;
	struct shard *s = shard_of(r, bare, &h);
	int rc = -1;
	pthread_mutex_lock(&s->lock);
	struct raccount *a = *find_account(s, h, bare);
	for (struct rsession *rs = a ? a->sessions : NULL; rs; rs = rs->next) {
		if (rs->has_sm_key && same_key(rs->sm_key, key)) {
			*out = rs->t;
			snprintf(resource, resource_size, "%s", rs->resource);
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

struct move {
	uint64_t session;
	int loop;
	bool done;
};

static void move_session(struct rsession *rs, void *arg)
{
	struct move *m = arg;
	rs->t.session = m->session;
	rs->t.loop = m->loop;
	m->done = true;
}

int router_move(struct router *r, const char *bare, const char *resource, uint64_t session,
		uint64_t new_session, int new_loop)
{
	struct move m = { new_session, new_loop, false };
	with_session(r, bare, resource, session, move_session, &m);
	return m.done ? 0 : -1;
}

void router_sm_ended(struct router *r, const char *bare, const unsigned char *key, uint32_t h)
{
	uint64_t hash;
	struct shard *s = shard_of(r, bare, &hash);
	pthread_mutex_lock(&s->lock);
	if (s->ended == NULL)
		s->ended = xcalloc(ROUTER_ENDED_SM, sizeof *s->ended);
	struct ended_sm *e = &s->ended[s->ended_next++ % ROUTER_ENDED_SM];
	e->account = hash;
	memcpy(e->key, key, ROUTER_SM_KEY);
	e->h = h;
	e->used = true;
	pthread_mutex_unlock(&s->lock);
}

int router_find_ended_sm(struct router *r, const char *bare, const unsigned char *key,
			 uint32_t *h)
{
	uint64_t hash;
	struct shard *s = shard_of(r, bare, &hash);
	int rc = -1;
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; s->ended != NULL && i < ROUTER_ENDED_SM; i++) {
		struct ended_sm *e = &s->ended[i];
		if (e->used && e->account == hash && same_key(e->key, key)) {
			*h = e->h;
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}
