#include "auth/authfail.h"

#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "core/util.h"

#define AUTHFAIL_SLOTS 1024
#define AUTHFAIL_FORGET_MS (5 * 60 * 1000ULL)

struct slot {
	char addr[64];
	unsigned count;
	unsigned long long last;
};

/* A fixed table: an attacker with many addresses can only evict entries,
 * never grow memory. */
struct authfail {
	pthread_mutex_t lock;
	struct slot slots[AUTHFAIL_SLOTS];
};

struct authfail *authfail_new(void)
{
	struct authfail *af = xcalloc(1, sizeof *af);
	pthread_mutex_init(&af->lock, NULL);
	return af;
}

void authfail_free(struct authfail *af)
{
	if (af == NULL)
		return;
	pthread_mutex_destroy(&af->lock);
	free(af);
}

static struct slot *slot_of(struct authfail *af, const char *addr)
{
	unsigned h = 2166136261u;
	for (const char *p = addr; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return &af->slots[h % AUTHFAIL_SLOTS];
}

unsigned authfail_record(struct authfail *af, const char *addr)
{
	unsigned long long now = now_ms();
	pthread_mutex_lock(&af->lock);
	struct slot *s = slot_of(af, addr);
	if (strcmp(s->addr, addr) != 0 || now - s->last > AUTHFAIL_FORGET_MS) {
		snprintf(s->addr, sizeof s->addr, "%s", addr);
		s->count = 0;
	}
	s->count++;
	s->last = now;
	unsigned shift = s->count - 1 > 5 ? 5 : s->count - 1;
	pthread_mutex_unlock(&af->lock);
	return 250u << shift;
}

void authfail_success(struct authfail *af, const char *addr)
{
	pthread_mutex_lock(&af->lock);
	struct slot *s = slot_of(af, addr);
	if (strcmp(s->addr, addr) == 0)
		s->count = 0;
	pthread_mutex_unlock(&af->lock);
}
