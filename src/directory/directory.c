/* The directory pool (directory.h): job queue, threads, state, login
 * cache, account index and refreshes. The LDAP protocol itself is ldap.c;
 * applying groups to rosters is groups.c. */
#include "directory/directory.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "directory/groups.h"
#include "directory/ldap.h"
#include "muc/muc.h"

/* More jobs than this waiting means the directory cannot keep up: answer
 * at once rather than let logins wait for minutes. */
#define QUEUE_MAX 1024
/* Direct-mapped login cache slots. */
#define CACHE_SLOTS 1024
/* Nested groups deeper than this are ignored (and so are cycles). */
#define GROUP_DEPTH_MAX 8
#define BACKOFF_MAX_MS 30000

enum job_kind { JOB_AUTH, JOB_LOOKUP, JOB_VCARD, JOB_REFRESH };

struct index_entry {
	char *local;
	char *name; /* NULL: none */
};

struct dn_entry {
	char *dn;    /* normalised */
	char *local;
};

/* What a refresh read, handed from the thread to a loop. */
struct snapshot {
	struct index_entry *users; /* sorted by local */
	size_t n_users;
	struct dir_snapshot groups;
	int members;
};

struct job {
	enum job_kind kind;
	struct directory *d;
	struct loop *loop; /* the callback runs there */
	void *cb;
	void *arg;
	char user[1024];
	char *password;    /* JOB_AUTH, wiped on free */
	unsigned long long queued;
	enum dir_status st;
	struct dir_user u;
	struct buf vcard;
	struct snapshot *snap;
	char summary[512];
	struct job *next;
};

struct cache_slot {
	char user[JID_PART_MAX + 1];
	unsigned char salt[16];
	unsigned char hash[32];
	unsigned long long expires;
	struct dir_user u;
};

struct directory {
	struct server *srv;
	const char *domain;
	const struct config_ldap *cfg;
	char *bind_password;

	pthread_mutex_t lock;  /* queue, state */
	pthread_cond_t cond;
	struct job *head, *tail;
	size_t queued;
	bool stopping;
	bool up;               /* as far as we know; starts up (untried) */
	bool refresh_queued;
	pthread_t *threads;
	int n_threads;

	pthread_mutex_t cache_lock;
	struct cache_slot *cache;

	pthread_mutex_t index_lock;
	struct index_entry *index; /* sorted by local */
	size_t n_index;
	char **extra;              /* logged in, not in the index yet; sorted */
	size_t n_extra;
	bool index_loaded;

	pthread_mutex_t apply_lock; /* one groups_apply at a time */
	struct groups_state *gs;
	uv_timer_t *timer;         /* on the service loop; heap: it may close after d is gone */
};

/* --- small helpers --- */

static int cmp_index(const void *a, const void *b)
{
	return strcmp(((const struct index_entry *)a)->local, ((const struct index_entry *)b)->local);
}

static int cmp_dn(const void *a, const void *b)
{
	return strcmp(((const struct dn_entry *)a)->dn, ((const struct dn_entry *)b)->dn);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void index_free(struct index_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(e[i].local);
		free(e[i].name);
	}
	free(e);
}

static void snapshot_free(struct snapshot *s)
{
	if (s == NULL)
		return;
	index_free(s->users, s->n_users);
	for (size_t i = 0; i < s->groups.n_groups; i++) {
		struct dir_group *g = &s->groups.groups[i];
		free(g->name);
		for (size_t j = 0; j < g->n_members; j++)
			free(g->members[j]);
		free(g->members);
		for (size_t j = 0; j < g->n_owners; j++)
			free(g->owners[j]);
		free(g->owners);
	}
	free(s->groups.groups);
	free(s);
}

static void job_free(struct job *j)
{
	if (j->password) {
		OPENSSL_cleanse(j->password, strlen(j->password));
		free(j->password);
	}
	buf_free(&j->vcard);
	snapshot_free(j->snap);
	free(j);
}

static void set_state(struct directory *d, bool up, const char *reason)
{
	pthread_mutex_lock(&d->lock);
	bool changed = d->up != up;
	d->up = up;
	if (changed && !up)
		pthread_cond_broadcast(&d->cond); /* the prober starts retrying */
	pthread_mutex_unlock(&d->lock);
	if (!changed)
		return;
	if (up)
		log_info("directory %s is up again", d->domain);
	else
		log_error("directory %s is down: %s (%s); new logins get temporary-auth-failure "
			  "until it is back",
			  d->domain, reason && reason[0] ? reason : "no answer", d->cfg->uri);
}

bool directory_up(struct directory *d)
{
	pthread_mutex_lock(&d->lock);
	bool up = d->up;
	pthread_mutex_unlock(&d->lock);
	return up;
}

struct directory *directory_of(struct server *srv, const char *domain)
{
	for (size_t i = 0; i < srv->n_directories; i++)
		if (strcmp(srv->directories[i]->domain, domain) == 0)
			return srv->directories[i];
	return NULL;
}

/* --- completion on the submitting loop --- */

static void job_done(struct loop *l, void *arg)
{
	struct job *j = arg;
	if (loop_stopping(l)) {
		job_free(j);
		return;
	}
	switch (j->kind) {
	case JOB_AUTH:
	case JOB_LOOKUP:
		((dir_user_cb)j->cb)(l, j->arg, j->st, j->st == DIR_OK ? &j->u : NULL);
		break;
	case JOB_VCARD:
		((dir_vcard_cb)j->cb)(l, j->arg, j->st, j->st == DIR_OK ? &j->vcard : NULL);
		break;
	case JOB_REFRESH: {
		struct directory *d = j->d;
		if (j->st == DIR_OK) {
			unsigned long long read_ms = now_ms() - j->queued;
			unsigned long long t0 = now_ms();
			pthread_mutex_lock(&d->apply_lock);
			int changes = groups_apply(l, d->gs, d->domain, &j->snap->groups);
			pthread_mutex_unlock(&d->apply_lock);
			if (changes >= 0)
				muc_directory_rooms(l->srv, d->domain, d->cfg->groups,
						    &j->snap->groups);
			unsigned long long apply_ms = now_ms() - t0;
			if (changes < 0) {
				j->st = DIR_ERROR;
				snprintf(j->summary, sizeof j->summary,
					 "store error while applying the groups");
			} else {
				snprintf(j->summary, sizeof j->summary,
					 "%s: %zu accounts, %zu groups, %d members, %d roster changes "
					 "(read %llu ms, applied %llu ms)",
					 d->domain, j->snap->n_users, j->snap->groups.n_groups,
					 j->snap->members, changes, read_ms, apply_ms);
			}
			log_info("directory refresh %s", j->summary);
		} else {
			log_error("directory refresh for %s failed: %s", d->domain, j->summary);
		}
		if (j->cb)
			((dir_refresh_cb)j->cb)(l, j->arg, j->st, j->summary);
		pthread_mutex_lock(&d->lock);
		d->refresh_queued = false;
		pthread_mutex_unlock(&d->lock);
		break;
	}
	}
	job_free(j);
}

static void finish(struct job *j)
{
	loop_call(j->loop, job_done, j);
}

/* Queues j, or answers it at once when the directory is known to be down
 * or overloaded. */
static void submit(struct directory *d, struct job *j)
{
	j->queued = now_ms();
	pthread_mutex_lock(&d->lock);
	if (d->stopping || (!d->up && j->kind != JOB_REFRESH) || d->queued >= QUEUE_MAX) {
		bool down = !d->up;
		pthread_mutex_unlock(&d->lock);
		j->st = DIR_UNAVAILABLE;
		snprintf(j->summary, sizeof j->summary, "%s",
			 down ? "the directory is down" : "the directory is overloaded");
		finish(j);
		return;
	}
	if (d->tail)
		d->tail->next = j;
	else
		d->head = j;
	d->tail = j;
	d->queued++;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static struct job *job_new(struct directory *d, struct loop *l, enum job_kind kind,
			   const char *user, void *cb, void *arg)
{
	struct job *j = xcalloc(1, sizeof *j);
	j->kind = kind;
	j->d = d;
	j->loop = l;
	j->cb = cb;
	j->arg = arg;
	buf_init(&j->vcard);
	snprintf(j->user, sizeof j->user, "%s", user ? user : "");
	return j;
}

/* --- login cache --- */

static unsigned cache_slot_of(const char *user)
{
	return str_hash(user) % CACHE_SLOTS;
}

static void cache_hash(const unsigned char *salt, const char *password, unsigned char *out)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned len = 32;
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	EVP_DigestUpdate(ctx, salt, 16);
	EVP_DigestUpdate(ctx, password, strlen(password));
	EVP_DigestFinal_ex(ctx, out, &len);
	EVP_MD_CTX_free(ctx);
}

static bool cache_lookup(struct directory *d, const char *user, const char *password,
			 struct dir_user *out)
{
	if (d->cfg->cache_ttl <= 0 || strlen(user) > JID_PART_MAX)
		return false;
	struct cache_slot *s = &d->cache[cache_slot_of(user)];
	bool hit = false;
	pthread_mutex_lock(&d->cache_lock);
	if (s->expires > now_ms() && strcmp(s->user, user) == 0) {
		unsigned char h[32];
		cache_hash(s->salt, password, h);
		if (CRYPTO_memcmp(h, s->hash, sizeof h) == 0) {
			*out = s->u;
			hit = true;
		}
	}
	pthread_mutex_unlock(&d->cache_lock);
	return hit;
}

static void cache_store(struct directory *d, const char *user, const char *password,
			const struct dir_user *u)
{
	if (d->cfg->cache_ttl <= 0 || strlen(user) > JID_PART_MAX)
		return;
	struct cache_slot *s = &d->cache[cache_slot_of(user)];
	pthread_mutex_lock(&d->cache_lock);
	snprintf(s->user, sizeof s->user, "%s", user);
	RAND_bytes(s->salt, sizeof s->salt);
	cache_hash(s->salt, password, s->hash);
	s->u = *u;
	s->expires = now_ms() + (unsigned long long)d->cfg->cache_ttl * 1000;
	pthread_mutex_unlock(&d->cache_lock);
}

/* --- account index --- */

int directory_user_exists(struct directory *d, const char *local)
{
	int rc;
	pthread_mutex_lock(&d->index_lock);
	struct index_entry key = { .local = (char *)local };
	char *k = (char *)local;
	if ((d->n_index > 0 &&
	     bsearch(&key, d->index, d->n_index, sizeof *d->index, cmp_index) != NULL) ||
	    (d->n_extra > 0 && bsearch(&k, d->extra, d->n_extra, sizeof *d->extra, cmp_str) != NULL))
		rc = 1;
	else
		rc = d->index_loaded ? 0 : -1;
	pthread_mutex_unlock(&d->index_lock);
	return rc;
}

/* A user who logged in exists, whatever the last index said. */
static void index_note(struct directory *d, const char *local)
{
	if (directory_user_exists(d, local) == 1)
		return;
	pthread_mutex_lock(&d->index_lock);
	d->extra = xrealloc(d->extra, (d->n_extra + 1) * sizeof *d->extra);
	d->extra[d->n_extra++] = xstrdup(local);
	qsort(d->extra, d->n_extra, sizeof *d->extra, cmp_str);
	pthread_mutex_unlock(&d->index_lock);
}

static void index_replace(struct directory *d, struct snapshot *s)
{
	struct index_entry *copy = xcalloc(s->n_users + 1, sizeof *copy);
	for (size_t i = 0; i < s->n_users; i++) {
		copy[i].local = xstrdup(s->users[i].local);
		copy[i].name = s->users[i].name ? xstrdup(s->users[i].name) : NULL;
	}
	pthread_mutex_lock(&d->index_lock);
	struct index_entry *old = d->index;
	size_t n_old = d->n_index;
	char **old_extra = d->extra;
	size_t n_old_extra = d->n_extra;
	d->index = copy;
	d->n_index = s->n_users;
	d->extra = NULL;
	d->n_extra = 0;
	d->index_loaded = true;
	pthread_mutex_unlock(&d->index_lock);
	index_free(old, n_old);
	for (size_t i = 0; i < n_old_extra; i++)
		free(old_extra[i]);
	free(old_extra);
}

/* --- the work, in a directory thread --- */

struct list_ctx {
	struct index_entry *users;
	size_t n_users, cap_users;
	struct dn_entry *dns;
	size_t n_dns, cap_dns;
};

static void on_listed(void *arg, const char *dn, const char *local, const char *name)
{
	struct list_ctx *c = arg;
	char norm[1024];
	if (c->n_users == c->cap_users) {
		c->cap_users = c->cap_users ? 2 * c->cap_users : 256;
		c->users = xrealloc(c->users, c->cap_users * sizeof *c->users);
	}
	c->users[c->n_users].local = xstrdup(local);
	c->users[c->n_users].name = name && name[0] ? xstrdup(name) : NULL;
	c->n_users++;
	if (ldap_dn_normalise(dn, norm, sizeof norm) != 0)
		return;
	if (c->n_dns == c->cap_dns) {
		c->cap_dns = c->cap_dns ? 2 * c->cap_dns : 256;
		c->dns = xrealloc(c->dns, c->cap_dns * sizeof *c->dns);
	}
	c->dns[c->n_dns].dn = xstrdup(norm);
	c->dns[c->n_dns].local = c->users[c->n_users - 1].local;
	c->n_dns++;
}

struct members {
	char **v;
	size_t n, cap;
};

static void members_add(struct members *m, const char *local)
{
	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 16;
		m->v = xrealloc(m->v, m->cap * sizeof *m->v);
	}
	m->v[m->n++] = xstrdup(local);
}

static bool in_users(const struct list_ctx *c, const char *local)
{
	struct index_entry key = { .local = (char *)local };
	return c->n_users > 0 &&
	       bsearch(&key, c->users, c->n_users, sizeof *c->users, cmp_index) != NULL;
}

/* Adds the members of the group at dn (and of groups nested in it) that are
 * accounts of this host. visited holds the normalised DNs on the path. */
static enum dir_status expand_group(struct ldap_conn *lc, const struct list_ctx *c,
				    const char *dn, int depth, char **visited, struct members *out,
				    char **name_out, char *err, size_t errlen)
{
	char norm[1024];
	if (ldap_dn_normalise(dn, norm, sizeof norm) != 0)
		return DIR_OK;
	for (int i = 0; i < depth; i++)
		if (strcmp(visited[i], norm) == 0)
			return DIR_OK; /* a cycle */
	struct ldap_group g;
	memset(&g, 0, sizeof g);
	enum dir_status st = ldap_read_group(lc, dn, &g, err, errlen);
	if (st == DIR_UNKNOWN) {
		log_warn("directory: group %s does not exist", dn);
		return DIR_OK;
	}
	if (st != DIR_OK)
		return st;
	if (name_out && g.name)
		*name_out = xstrdup(g.name);
	visited[depth] = norm;
	for (size_t i = 0; i < g.n_member_uids; i++) {
		char local[JID_PART_MAX + 1];
		const char *u = g.member_uids[i];
		if (jid_prep_local(u, strlen(u), local, sizeof local) >= 0 && in_users(c, local))
			members_add(out, local);
	}
	for (size_t i = 0; i < g.n_member_dns && st == DIR_OK; i++) {
		char mnorm[1024];
		if (ldap_dn_normalise(g.member_dns[i], mnorm, sizeof mnorm) != 0)
			continue;
		struct dn_entry key = { .dn = mnorm };
		struct dn_entry *hit =
			c->n_dns > 0 ? bsearch(&key, c->dns, c->n_dns, sizeof *c->dns, cmp_dn) : NULL;
		if (hit != NULL) {
			members_add(out, hit->local);
			continue;
		}
		/* Not an account of ours: perhaps a nested group. */
		if (depth + 1 < GROUP_DEPTH_MAX)
			st = expand_group(lc, c, g.member_dns[i], depth + 1, visited, out, NULL, err,
					  errlen);
	}
	ldap_group_free(&g);
	return st;
}

static void members_finish(struct members *m)
{
	if (m->n > 0)
		qsort(m->v, m->n, sizeof *m->v, cmp_str);
	size_t w = 0;
	for (size_t i = 0; i < m->n; i++) {
		if (w > 0 && strcmp(m->v[w - 1], m->v[i]) == 0) {
			free(m->v[i]);
			continue;
		}
		m->v[w++] = m->v[i];
	}
	m->n = w;
}

static const char *snapshot_name_of(void *arg, const char *local)
{
	struct snapshot *s = arg;
	struct index_entry key = { .local = (char *)local };
	struct index_entry *e =
		s->n_users > 0 ? bsearch(&key, s->users, s->n_users, sizeof *s->users, cmp_index) : NULL;
	return e ? e->name : NULL;
}

static enum dir_status run_refresh(struct directory *d, struct ldap_conn *lc, struct job *j)
{
	struct list_ctx c;
	memset(&c, 0, sizeof c);
	enum dir_status st = ldap_list_users(lc, on_listed, &c, j->summary, sizeof j->summary);
	struct snapshot *s = xcalloc(1, sizeof *s);
	j->snap = s;
	if (st != DIR_OK) {
		index_free(c.users, c.n_users);
		for (size_t i = 0; i < c.n_dns; i++)
			free(c.dns[i].dn);
		free(c.dns);
		return st;
	}
	if (c.n_users > 0)
		qsort(c.users, c.n_users, sizeof *c.users, cmp_index);
	/* Keep the first of duplicate usernames. */
	size_t w = 0;
	for (size_t i = 0; i < c.n_users; i++) {
		if (w > 0 && strcmp(c.users[w - 1].local, c.users[i].local) == 0) {
			free(c.users[i].name);
			c.users[i].name = NULL;
			continue; /* its local stays referenced by dns: freed below */
		}
		c.users[w++] = c.users[i];
	}
	if (c.n_dns > 0)
		qsort(c.dns, c.n_dns, sizeof *c.dns, cmp_dn);
	size_t n_groups = d->cfg->n_groups;
	s->groups.groups = xcalloc(n_groups + 1, sizeof *s->groups.groups);
	for (size_t gi = 0; gi < n_groups && st == DIR_OK; gi++) {
		const struct config_group *cg = &d->cfg->groups[gi];
		struct members m = { 0 };
		char *visited[GROUP_DEPTH_MAX];
		char *cn = NULL;
		st = expand_group(lc, &c, cg->dn, 0, visited, &m, &cn, j->summary,
				  sizeof j->summary);
		members_finish(&m);
		struct dir_group *g = &s->groups.groups[s->groups.n_groups++];
		g->name = xstrdup(cg->name ? cg->name : cn ? cn : cg->dn);
		g->members = m.v;
		g->n_members = m.n;
		if (st == DIR_OK && cg->room && cg->room_owners) {
			struct members owners = { 0 };
			char *ocn = NULL;
			st = expand_group(lc, &c, cg->room_owners, 0, visited, &owners, &ocn,
					  j->summary, sizeof j->summary);
			members_finish(&owners);
			g->owners = owners.v;
			g->n_owners = owners.n;
			free(ocn);
		}
		s->members += (int)m.n;
		free(cn);
	}
	/* The duplicate entries' locals, now only referenced from dns. */
	for (size_t i = 0; i < c.n_dns; i++)
		free(c.dns[i].dn);
	free(c.dns);
	for (size_t i = w; i < c.n_users; i++)
		free(c.users[i].local);
	s->users = c.users;
	s->n_users = w;
	s->groups.name_of = snapshot_name_of;
	s->groups.name_arg = s;
	if (st == DIR_OK)
		index_replace(d, s);
	return st;
}

static void fill_user(struct dir_user *u, const struct ldap_user *lu)
{
	snprintf(u->local, sizeof u->local, "%s", lu->local);
	snprintf(u->name, sizeof u->name, "%s", lu->name);
	snprintf(u->photo_hash, sizeof u->photo_hash, "%s", lu->photo_hash);
}

static enum dir_status run_job(struct directory *d, struct ldap_conn *lc, struct job *j)
{
	char err[256] = "";
	enum dir_status st = ldap_conn_open(lc, err, sizeof err);
	if (st != DIR_OK) {
		snprintf(j->summary, sizeof j->summary, "%s", err);
		return st;
	}
	int photo = d->cfg->vcard.enabled && d->cfg->vcard.photo != NULL;
	struct ldap_user lu;
	switch (j->kind) {
	case JOB_AUTH:
	case JOB_LOOKUP:
		memset(&lu, 0, sizeof lu);
		st = ldap_find_user(lc, j->user, photo, &lu, err, sizeof err);
		if (st == DIR_OK && lu.locked)
			st = DIR_LOCKED;
		if (st == DIR_OK && j->kind == JOB_AUTH)
			st = ldap_check_password(lc, lu.dn, j->password, err, sizeof err);
		if (st == DIR_OK)
			fill_user(&j->u, &lu);
		break;
	case JOB_VCARD:
		st = ldap_read_vcard(lc, j->user, &j->vcard, err, sizeof err);
		break;
	case JOB_REFRESH:
		return run_refresh(d, lc, j);
	}
	if (st != DIR_OK && err[0])
		snprintf(j->summary, sizeof j->summary, "%s", err);
	return st;
}

struct worker {
	struct directory *d;
	int index;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct directory *d = w->d;
	pthread_setname_np(pthread_self(), "natter-dir");
	struct ldap_conn *lc = ldap_conn_new(d->cfg, d->bind_password);
	unsigned backoff = 1000;
	for (;;) {
		pthread_mutex_lock(&d->lock);
		while (!d->stopping && d->head == NULL) {
			if (w->index == 0 && !d->up) {
				/* The prober: retry the connection with back-off. */
				struct timespec ts;
				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_sec += backoff / 1000;
				ts.tv_nsec += (long)(backoff % 1000) * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				int rc = pthread_cond_timedwait(&d->cond, &d->lock, &ts);
				if (rc == ETIMEDOUT && !d->stopping && d->head == NULL && !d->up) {
					pthread_mutex_unlock(&d->lock);
					char err[256] = "";
					ldap_conn_reset(lc);
					enum dir_status st = ldap_conn_open(lc, err, sizeof err);
					if (st == DIR_OK) {
						backoff = 1000;
						set_state(d, true, NULL);
					} else {
						backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
										       : backoff * 2;
						log_debug("directory for %s: still down: %s", d->domain, err);
					}
					pthread_mutex_lock(&d->lock);
				}
				continue;
			}
			pthread_cond_wait(&d->cond, &d->lock);
		}
		if (d->stopping) {
			pthread_mutex_unlock(&d->lock);
			break;
		}
		struct job *j = d->head;
		d->head = j->next;
		if (d->head == NULL)
			d->tail = NULL;
		d->queued--;
		bool up = d->up;
		pthread_mutex_unlock(&d->lock);
		j->next = NULL;

		unsigned long long waited = now_ms() - j->queued;
		if (j->kind != JOB_REFRESH &&
		    (!up || waited > (unsigned long long)d->cfg->timeout * 1000)) {
			/* It waited behind a directory that stopped answering. */
			j->st = DIR_UNAVAILABLE;
			snprintf(j->summary, sizeof j->summary, "the directory is down");
			finish(j);
			continue;
		}
		unsigned long long start = now_ms();
		j->st = run_job(d, lc, j);
		/* A connection that died while idle fails at once; a try on a
		 * fresh one tells that from a directory that is down. Twice:
		 * the search and the bind handle may both be stale. */
		for (int retry = 0; retry < 2 && j->st == DIR_UNAVAILABLE && now_ms() - start < 1000;
		     retry++) {
			start = now_ms();
			buf_free(&j->vcard);
			buf_init(&j->vcard);
			snapshot_free(j->snap);
			j->snap = NULL;
			j->st = run_job(d, lc, j);
		}
		if (j->st == DIR_UNAVAILABLE) {
			backoff = 1000;
			set_state(d, false, j->summary);
		} else if (j->st != DIR_ERROR) {
			set_state(d, true, NULL);
		}
		if (j->kind == JOB_AUTH && j->st == DIR_OK) {
			cache_store(d, j->user, j->password, &j->u);
			index_note(d, j->u.local);
		}
		if (j->st == DIR_ERROR)
			log_error("directory %s: %s", d->domain, j->summary);
		else if (j->kind == JOB_AUTH && j->st != DIR_OK && j->st != DIR_UNAVAILABLE)
			log_debug("directory for %s: login of '%s': %s", d->domain, j->user,
				  j->summary);
		finish(j);
	}
	ldap_conn_free(lc);
	free(w);
	return NULL;
}

/* --- the interface --- */

void directory_auth(struct directory *d, struct loop *l, const char *user, const char *password,
		    dir_user_cb cb, void *arg)
{
	struct job *j = job_new(d, l, JOB_AUTH, user, (void *)cb, arg);
	if (password == NULL || password[0] == '\0' || user == NULL || user[0] == '\0') {
		/* An empty simple bind is an anonymous bind (RFC 4513 §5.1.2). */
		j->st = DIR_DENIED;
		finish(j);
		return;
	}
	if (cache_lookup(d, user, password, &j->u)) {
		j->st = DIR_OK;
		finish(j);
		return;
	}
	j->password = xstrdup(password);
	submit(d, j);
}

void directory_lookup(struct directory *d, struct loop *l, const char *user, dir_user_cb cb,
		      void *arg)
{
	submit(d, job_new(d, l, JOB_LOOKUP, user, (void *)cb, arg));
}

void directory_vcard(struct directory *d, struct loop *l, const char *user, dir_vcard_cb cb,
		     void *arg)
{
	submit(d, job_new(d, l, JOB_VCARD, user, (void *)cb, arg));
}

void directory_refresh(struct directory *d, struct loop *l, dir_refresh_cb cb, void *arg)
{
	submit(d, job_new(d, l, JOB_REFRESH, NULL, (void *)cb, arg));
}

static void on_refresh_timer(uv_timer_t *t)
{
	struct directory *d = t->data;
	pthread_mutex_lock(&d->lock);
	bool busy = d->refresh_queued;
	d->refresh_queued = true;
	pthread_mutex_unlock(&d->lock);
	if (!busy)
		directory_refresh(d, d->srv->service, NULL, NULL);
}

static char *read_password_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	char line[1024];
	char *r = NULL;
	if (fgets(line, sizeof line, f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		r = xstrdup(line);
	}
	OPENSSL_cleanse(line, sizeof line);
	fclose(f);
	return r;
}

static void directory_free(struct directory *d)
{
	free(d->threads);
	if (d->bind_password) {
		OPENSSL_cleanse(d->bind_password, strlen(d->bind_password));
		free(d->bind_password);
	}
	free(d->cache);
	index_free(d->index, d->n_index);
	for (size_t i = 0; i < d->n_extra; i++)
		free(d->extra[i]);
	free(d->extra);
	groups_state_free(d->gs);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->cache_lock);
	pthread_mutex_destroy(&d->index_lock);
	pthread_mutex_destroy(&d->apply_lock);
	free(d);
}

int directory_start(struct server *srv)
{
	const struct config *cfg = srv->cfg;
	for (size_t i = 0; i < cfg->n_hosts; i++) {
		const struct config_host *h = &cfg->hosts[i];
		if (h->auth != HOST_AUTH_LDAP)
			continue;
		struct directory *d = xcalloc(1, sizeof *d);
		d->srv = srv;
		d->domain = h->domain;
		d->cfg = &h->ldap;
		d->up = true;
		pthread_mutex_init(&d->lock, NULL);
		pthread_cond_init(&d->cond, NULL);
		pthread_mutex_init(&d->cache_lock, NULL);
		pthread_mutex_init(&d->index_lock, NULL);
		pthread_mutex_init(&d->apply_lock, NULL);
		d->cache = xcalloc(CACHE_SLOTS, sizeof *d->cache);
		d->gs = groups_state_new();
		srv->directories = xrealloc(srv->directories,
					    (srv->n_directories + 1) * sizeof *srv->directories);
		srv->directories[srv->n_directories++] = d;
		if (d->cfg->bind_password)
			d->bind_password = xstrdup(d->cfg->bind_password);
		else if (d->cfg->bind_password_file &&
			 (d->bind_password = read_password_file(d->cfg->bind_password_file)) == NULL) {
			log_error("cannot read bind_password_file %s", d->cfg->bind_password_file);
			return -1;
		}
		d->threads = xcalloc((size_t)d->cfg->pool_size, sizeof *d->threads);
		for (int t = 0; t < d->cfg->pool_size; t++) {
			struct worker *w = xcalloc(1, sizeof *w);
			w->d = d;
			w->index = t;
			if (pthread_create(&d->threads[t], NULL, worker_main, w) != 0) {
				free(w);
				log_error("cannot start directory threads");
				return -1;
			}
			d->n_threads++;
		}
		/* First read right away, then every refresh_interval. */
		d->timer = xcalloc(1, sizeof *d->timer);
		uv_timer_init(&srv->service->uv, d->timer);
		d->timer->data = d;
		uint64_t every = (uint64_t)d->cfg->refresh_interval * 1000;
		uv_timer_start(d->timer, on_refresh_timer, 0, every);
		log_info("host %s: accounts from the directory %s (base %s)", h->domain, d->cfg->uri,
			 d->cfg->base_dn);
	}
	return 0;
}

static void free_handle(uv_handle_t *h) { free(h); }

void directory_stop(struct server *srv)
{
	for (size_t i = 0; i < srv->n_directories; i++) {
		struct directory *d = srv->directories[i];
		pthread_mutex_lock(&d->lock);
		d->stopping = true;
		pthread_cond_broadcast(&d->cond);
		pthread_mutex_unlock(&d->lock);
		for (int t = 0; t < d->n_threads; t++)
			pthread_join(d->threads[t], NULL);
		while (d->head) {
			struct job *j = d->head;
			d->head = j->next;
			job_free(j);
		}
		/* The service loop no longer runs: its stop closed the timer already, or
		 * loop_free's last run will. */
		if (d->timer && uv_is_closing((uv_handle_t *)d->timer))
			free(d->timer);
		else if (d->timer)
			uv_close((uv_handle_t *)d->timer, free_handle);
		directory_free(d);
	}
	free(srv->directories);
	srv->directories = NULL;
	srv->n_directories = 0;
}
