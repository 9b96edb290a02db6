#include "auth/authfail.h"

#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "core/netaddr.h"
#include "core/util.h"

/* Failure budgets: a fixed table of sets, so an attacker with many
 * addresses can only evict entries, never grow memory; the hash is seeded
 * at start, so nobody can aim at the set of a given account. */
#define AUTHFAIL_SETS 512
#define AUTHFAIL_WAYS 4
/* Keys longer than this are cut: "u " + a localpart near 1023 bytes. */
#define AUTHFAIL_KEY_MAX 128
/* Streams not logged in yet: a chained table whose entries live only while
 * their count is above zero, so it is bounded by the open connections. */
#define AUTHFAIL_STREAM_BUCKETS 1024

struct budget {
	char key[AUTHFAIL_KEY_MAX]; /* "a ADDRESS" or "u ACCOUNT"; "" = free */
	/* The instant (now_ms()) at which the recorded failures will have
	 * drained, refilling one every window/budget ms (a leaky bucket
	 * kept as one time stamp). */
	unsigned long long drained_at;
};

struct stream_count {
	struct stream_count *next;
	int count;
	char addr[]; /* netaddr_key_str() form */
};

struct authfail {
	pthread_mutex_t lock;
	unsigned long long seed;
	struct budget sets[AUTHFAIL_SETS][AUTHFAIL_WAYS];
	struct stream_count *streams[AUTHFAIL_STREAM_BUCKETS];
};

struct authfail *authfail_new(void)
{
	struct authfail *af = xcalloc(1, sizeof *af);
	char hex[33];
	pthread_mutex_init(&af->lock, NULL);
	random_hex(hex, 16);
	af->seed = strtoull(hex + 16, NULL, 16) ^ (strtoull(hex, NULL, 16) << 1);
	return af;
}

void authfail_free(struct authfail *af)
{
	if (af == NULL)
		return;
	for (size_t i = 0; i < AUTHFAIL_STREAM_BUCKETS; i++) {
		while (af->streams[i] != NULL) {
			struct stream_count *sc = af->streams[i];
			af->streams[i] = sc->next;
			free(sc);
		}
	}
	pthread_mutex_destroy(&af->lock);
	free(af);
}

static unsigned long long authfail_hash(const struct authfail *af, const char *key)
{
	unsigned long long h = 14695981039346656037ULL ^ af->seed;
	for (const char *p = key; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return h ^ (h >> 29);
}

/* The milliseconds one failure stays in a budget of per_window failures. */
static unsigned long long authfail_step(const struct config_limits *lim, int per_window)
{
	unsigned long long step = (unsigned long long)lim->auth_failure_window * 1000 /
				  (unsigned)(per_window > 0 ? per_window : 1);
	return step > 0 ? step : 1;
}

/* The entry of key (kind 'a' or 'u'), or NULL. With create, a missing one
 * takes the free or most nearly drained way of its set. Under af->lock. */
static struct budget *authfail_find(struct authfail *af, char kind, const char *name,
				    unsigned long long now, bool create)
{
	char key[AUTHFAIL_KEY_MAX];
	snprintf(key, sizeof key, "%c %s", kind, name);
	struct budget *set = af->sets[authfail_hash(af, key) % AUTHFAIL_SETS];
	struct budget *victim = &set[0];
	for (int i = 0; i < AUTHFAIL_WAYS; i++) {
		if (set[i].key[0] != '\0' && strcmp(set[i].key, key) == 0)
			return &set[i];
		if (set[i].key[0] == '\0' || set[i].drained_at < victim->drained_at)
			victim = &set[i];
	}
	if (!create)
		return NULL;
	memcpy(victim->key, key, sizeof key);
	victim->drained_at = now;
	return victim;
}

/* Failures still in the budget, rounded up. */
static unsigned long long authfail_level(const struct budget *b, unsigned long long now,
					 unsigned long long step)
{
	if (b == NULL || b->drained_at <= now)
		return 0;
	return (b->drained_at - now + step - 1) / step;
}

/* Whether addr or account has spent its budget. Under af->lock. */
static bool authfail_spent(struct authfail *af, const struct config_limits *lim, const char *addr,
			   const char *account, unsigned long long now)
{
	if (authfail_level(authfail_find(af, 'a', addr, now, false), now,
			   authfail_step(lim, lim->auth_failures_per_address)) >=
	    (unsigned long long)lim->auth_failures_per_address)
		return true;
	return account != NULL && account[0] != '\0' &&
	       authfail_level(authfail_find(af, 'u', account, now, false), now,
			      authfail_step(lim, lim->auth_failures_per_account)) >=
		       (unsigned long long)lim->auth_failures_per_account;
}

bool authfail_blocked(struct authfail *af, const struct config_limits *lim, const char *addr,
		      const char *account)
{
	unsigned long long now = now_ms();
	pthread_mutex_lock(&af->lock);
	bool blocked = authfail_spent(af, lim, addr, account, now);
	pthread_mutex_unlock(&af->lock);
	return blocked;
}

/* Adds one failure to b; returns the failures now in it. */
static unsigned long long authfail_add(struct budget *b, unsigned long long now,
				       unsigned long long step)
{
	if (b->drained_at < now)
		b->drained_at = now;
	b->drained_at += step;
	return authfail_level(b, now, step);
}

int authfail_record(struct authfail *af, const struct config_limits *lim, const char *addr,
		    const char *account, unsigned *delay_ms)
{
	unsigned long long now = now_ms();
	pthread_mutex_lock(&af->lock);
	if (authfail_spent(af, lim, addr, account, now)) {
		pthread_mutex_unlock(&af->lock);
		return -1;
	}
	unsigned long long n = authfail_add(authfail_find(af, 'a', addr, now, true), now,
					    authfail_step(lim, lim->auth_failures_per_address));
	if (account != NULL && account[0] != '\0') {
		unsigned long long m =
			authfail_add(authfail_find(af, 'u', account, now, true), now,
				     authfail_step(lim, lim->auth_failures_per_account));
		if (m > n)
			n = m;
	}
	pthread_mutex_unlock(&af->lock);
	unsigned shift = n - 1 > 5 ? 5 : (unsigned)(n - 1);
	*delay_ms = 250u << shift;
	return 0;
}

void authfail_success(struct authfail *af, const char *account)
{
	pthread_mutex_lock(&af->lock);
	struct budget *b = authfail_find(af, 'u', account, 0, false);
	if (b != NULL) {
		b->key[0] = '\0';
		b->drained_at = 0;
	}
	pthread_mutex_unlock(&af->lock);
}

static struct stream_count **authfail_stream_slot(struct authfail *af, const char *addr)
{
	struct stream_count **p = &af->streams[authfail_hash(af, addr) % AUTHFAIL_STREAM_BUCKETS];
	while (*p != NULL && strcmp((*p)->addr, addr) != 0)
		p = &(*p)->next;
	return p;
}

int authfail_stream_open(struct authfail *af, const char *addr, int max)
{
	int rc = 0;
	pthread_mutex_lock(&af->lock);
	struct stream_count **p = authfail_stream_slot(af, addr);
	if (*p == NULL) {
		size_t len = strlen(addr) + 1;
		*p = xcalloc(1, sizeof **p + len);
		memcpy((*p)->addr, addr, len);
	}
	if ((*p)->count >= max)
		rc = -1;
	else
		(*p)->count++;
	pthread_mutex_unlock(&af->lock);
	return rc;
}

void authfail_stream_done(struct authfail *af, const char *addr)
{
	pthread_mutex_lock(&af->lock);
	struct stream_count **p = authfail_stream_slot(af, addr);
	struct stream_count *sc = *p;
	if (sc != NULL && --sc->count <= 0) {
		*p = sc->next;
		free(sc);
	}
	pthread_mutex_unlock(&af->lock);
}
