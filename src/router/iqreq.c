#include "router/iqreq.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/server.h"
#include "core/util.h"
#include "router/deliver.h"

struct iqreq_entry {
	char id[40];
	char to[3 * JID_PART_MAX + 3]; /* who must answer: the from of the reply */
	unsigned long long deadline;   /* now_ms() */
	iqreq_done *done;
	void *arg;
	bool used;
};

struct iqreq {
	pthread_mutex_t lock;
	unsigned long long next_id;
	struct iqreq_entry e[IQREQ_MAX];
};

struct iqreq *iqreq_new(void)
{
	struct iqreq *q = xcalloc(1, sizeof *q);
	pthread_mutex_init(&q->lock, NULL);
	return q;
}

void iqreq_free(struct iqreq *q)
{
	if (q == NULL)
		return;
	for (size_t i = 0; i < IQREQ_MAX; i++)
		if (q->e[i].used)
			q->e[i].done(NULL, q->e[i].arg, NULL, NULL);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

/* Takes the expired entries out of the table (under the lock) into out;
 * their done runs after the lock is released. */
static size_t iqreq_expire(struct iqreq *q, unsigned long long now, struct iqreq_entry *out,
			   size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; i < IQREQ_MAX && n < cap; i++) {
		if (q->e[i].used && q->e[i].deadline <= now) {
			out[n++] = q->e[i];
			q->e[i].used = false;
		}
	}
	return n;
}

int iqreq_send(struct loop *l, struct xml_node *iq, struct arena *a, const struct jid *to,
	       iqreq_done *done, void *arg)
{
	struct iqreq *q = l->srv->iqreq;
	struct iqreq_entry expired[16];
	unsigned long long now = now_ms();
	char id[40];
	int slot = -1;
	pthread_mutex_lock(&q->lock);
	size_t n_expired = iqreq_expire(q, now, expired, 16);
	for (int i = 0; i < IQREQ_MAX && slot < 0; i++)
		if (!q->e[i].used)
			slot = i;
	if (slot >= 0) {
		struct iqreq_entry *e = &q->e[slot];
		snprintf(id, sizeof id, "natter-iq-%llu", ++q->next_id);
		snprintf(e->id, sizeof e->id, "%s", id);
		jid_format(to, e->to, sizeof e->to);
		e->deadline = now + IQREQ_TIMEOUT_MS;
		e->done = done;
		e->arg = arg;
		e->used = true;
	}
	pthread_mutex_unlock(&q->lock);
	for (size_t i = 0; i < n_expired; i++)
		expired[i].done(l, expired[i].arg, NULL, NULL);
	if (slot < 0) {
		done(l, arg, NULL, NULL);
		return -1;
	}
	xml_set_attr(a, iq, "id", id);
	deliver_to_jid(l, iq, to);
	return 0;
}

void iqreq_expire_due(struct loop *l)
{
	struct iqreq *q = l->srv->iqreq;
	struct iqreq_entry expired[16];
	size_t n;
	if (q == NULL)
		return;
	do {
		pthread_mutex_lock(&q->lock);
		n = iqreq_expire(q, now_ms(), expired, 16);
		pthread_mutex_unlock(&q->lock);
		for (size_t i = 0; i < n; i++)
			expired[i].done(l, expired[i].arg, NULL, NULL);
	} while (n == 16);
}

bool iqreq_answer(struct loop *l, struct xml_node *st, struct arena *a, const struct jid *from)
{
	const char *id = xml_attr(st, "id");
	if (id == NULL || strncmp(id, "natter-iq-", 10) != 0)
		return false;
	struct iqreq *q = l->srv->iqreq;
	char who[3 * JID_PART_MAX + 3];
	jid_format(from, who, sizeof who);
	struct iqreq_entry found = { 0 };
	pthread_mutex_lock(&q->lock);
	for (size_t i = 0; i < IQREQ_MAX; i++) {
		struct iqreq_entry *e = &q->e[i];
		/* Only the entity asked may answer: an id is no secret. */
		if (e->used && strcmp(e->id, id) == 0 && strcmp(e->to, who) == 0) {
			found = *e;
			e->used = false;
			break;
		}
	}
	pthread_mutex_unlock(&q->lock);
	if (!found.used)
		return false;
	found.done(l, found.arg, st, a);
	return true;
}
