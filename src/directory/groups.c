/* Auto-buddy groups: the directory's groups applied to stored rosters.
 *
 * An apply first turns the snapshot into members sorted by bare JID (the
 * order of the roster's keys, so that an owner's wanted contacts and
 * stored items meet in one merge), each with the groups it is in. An
 * owner's wanted contacts are then a merge of those groups' member lists;
 * their SHA-256 digest, kept per owner in struct groups_state, tells
 * whether the owner's roster needs reading at all.
 *
 * Which accounts hold managed items is kept in a map store of the domain
 * (local "", store "dirgroups", key the owner's localpart), so that after
 * a restart the first apply finds the owners who left every group without
 * reading every account's roster. */
#include "directory/groups.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/log.h"
#include "core/server.h"
#include "core/util.h"
#include "jid/jid.h"
#include "modules/presence.h"
#include "modules/roster.h"

#define STORE_INDEX "dirgroups"
#define INDEX_LOCAL "" /* no account has an empty localpart */
#define DIGEST_LEN 32

struct owner_state {
	char *jid;                        /* bare JID; owned */
	unsigned char digest[DIGEST_LEN]; /* of the wanted contacts last applied */
	bool applied;                     /* false: reconcile at the next apply */
	bool indexed;                     /* known to be in STORE_INDEX */
};

struct groups_state {
	bool loaded;            /* STORE_INDEX has been read into v */
	struct owner_state *v;  /* sorted by jid (strcmp) */
	size_t n;
};

/* One account of the snapshot; everything in the apply's arena. */
struct member {
	const char *local;
	const char *jid;   /* local@domain */
	const char *name;  /* display name, NULL none */
	int *groups;       /* snapshot indexes of its groups, ascending */
	size_t n_groups;
};

/* What one apply works from. */
struct plan {
	const struct dir_snapshot *snap;
	struct member *m;     /* sorted by jid */
	size_t n_m;
	int **gm;             /* per group: member indexes, ascending */
	size_t *n_gm;
};

/* One contact an owner should have. */
struct want {
	int contact;          /* member index */
	const char **groups;  /* names, unique, sorted */
	int n_groups;
};

/* A contact whose pair with the owner appeared or went (presence). */
struct pair_change {
	const char *contact;
	bool added;
};

struct groups_state *groups_state_new(void)
{
	return xcalloc(1, sizeof(struct groups_state));
}

void groups_state_free(struct groups_state *gs)
{
	if (gs == NULL)
		return;
	for (size_t i = 0; i < gs->n; i++)
		free(gs->v[i].jid);
	free(gs->v);
	free(gs);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

static int cmp_item(const void *a, const void *b)
{
	return strcmp(((const struct roster_item *)a)->jid, ((const struct roster_item *)b)->jid);
}

static bool local_ok(const char *local)
{
	size_t n = strlen(local);
	return n > 0 && n <= JID_PART_MAX && strchr(local, '@') == NULL &&
	       strchr(local, '/') == NULL;
}

static char *make_jid(struct arena *a, const char *local, const char *domain)
{
	size_t nl = strlen(local), nd = strlen(domain);
	char *j = arena_alloc(a, nl + nd + 2);
	memcpy(j, local, nl);
	j[nl] = '@';
	memcpy(j + nl + 1, domain, nd + 1);
	return j;
}

static int find_member(const struct plan *p, const char *jid)
{
	size_t lo = 0, hi = p->n_m;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(p->m[mid].jid, jid);
		if (c == 0)
			return (int)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* Members sorted by bare JID, and each group as member indexes. The
 * snapshot's lists are sorted by localpart, which is not the JIDs' order
 * ("bob2@d" < "bob@d"), so they are sorted again here. */
static void plan_build(struct plan *p, struct arena *a, const char *domain,
		       const struct dir_snapshot *snap)
{
	memset(p, 0, sizeof *p);
	p->snap = snap;
	size_t total = 0;
	for (size_t g = 0; g < snap->n_groups; g++)
		total += snap->groups[g].n_members;
	const char **jids = arena_alloc(a, (total ? total : 1) * sizeof *jids);
	size_t n = 0;
	for (size_t g = 0; g < snap->n_groups; g++)
		for (size_t k = 0; k < snap->groups[g].n_members; k++) {
			const char *local = snap->groups[g].members[k];
			if (local_ok(local))
				jids[n++] = make_jid(a, local, domain);
			else
				log_warn("directory groups: %s: member \"%s\" is not a localpart",
					 snap->groups[g].name, local);
		}
	qsort(jids, n, sizeof *jids, cmp_str);
	p->m = arena_alloc(a, (n ? n : 1) * sizeof *p->m);
	for (size_t i = 0; i < n; i++) {
		if (p->n_m > 0 && strcmp(p->m[p->n_m - 1].jid, jids[i]) == 0)
			continue;
		struct member *m = &p->m[p->n_m++];
		memset(m, 0, sizeof *m);
		m->jid = jids[i];
		m->local = arena_strndup(a, jids[i], strcspn(jids[i], "@"));
		const char *name = snap->name_of ? snap->name_of(snap->name_arg, m->local) : NULL;
		m->name = name != NULL && name[0] != '\0' ? arena_strdup(a, name) : NULL;
	}
	p->gm = arena_alloc(a, (snap->n_groups ? snap->n_groups : 1) * sizeof *p->gm);
	p->n_gm = arena_alloc(a, (snap->n_groups ? snap->n_groups : 1) * sizeof *p->n_gm);
	for (size_t g = 0; g < snap->n_groups; g++) {
		const struct dir_group *dg = &snap->groups[g];
		int *v = arena_alloc(a, (dg->n_members ? dg->n_members : 1) * sizeof *v);
		size_t nv = 0;
		for (size_t k = 0; k < dg->n_members; k++) {
			if (!local_ok(dg->members[k]))
				continue;
			int idx = find_member(p, make_jid(a, dg->members[k], domain));
			if (idx >= 0)
				v[nv++] = idx;
		}
		qsort(v, nv, sizeof *v, cmp_int);
		size_t u = 0;
		for (size_t k = 0; k < nv; k++)
			if (u == 0 || v[u - 1] != v[k])
				v[u++] = v[k];
		p->gm[g] = v;
		p->n_gm[g] = u;
		for (size_t k = 0; k < u; k++)
			p->m[v[k]].n_groups++;
	}
	for (size_t i = 0; i < p->n_m; i++) {
		p->m[i].groups = arena_alloc(a, (p->m[i].n_groups ? p->m[i].n_groups : 1) *
							sizeof(int));
		p->m[i].n_groups = 0;
	}
	for (size_t g = 0; g < snap->n_groups; g++)
		for (size_t k = 0; k < p->n_gm[g]; k++) {
			struct member *m = &p->m[p->gm[g][k]];
			m->groups[m->n_groups++] = (int)g;
		}
}

/* Owner o's wanted contacts, sorted by JID: a merge of the member lists
 * of o's groups (a handful per owner, so each step scans their heads).
 * Returns how many were written to out, which holds n_m entries. */
static int wanted_of(const struct plan *p, int o, struct arena *a, struct want *out)
{
	const struct member *m = &p->m[o];
	size_t k = m->n_groups;
	if (k == 0)
		return 0;
	size_t *pos = arena_alloc(a, k * sizeof *pos);
	memset(pos, 0, k * sizeof *pos);
	int n = 0;
	for (;;) {
		int next = -1;
		for (size_t i = 0; i < k; i++) {
			int g = m->groups[i];
			if (pos[i] < p->n_gm[g] && p->gm[g][pos[i]] == o)
				pos[i]++;
			if (pos[i] < p->n_gm[g] && (next < 0 || p->gm[g][pos[i]] < next))
				next = p->gm[g][pos[i]];
		}
		if (next < 0)
			return n;
		struct want *w = &out[n++];
		w->contact = next;
		w->groups = arena_alloc(a, k * sizeof *w->groups);
		w->n_groups = 0;
		for (size_t i = 0; i < k; i++) {
			int g = m->groups[i];
			if (pos[i] >= p->n_gm[g] || p->gm[g][pos[i]] != next)
				continue;
			pos[i]++;
			const char *name = p->snap->groups[g].name;
			bool dup = name == NULL || name[0] == '\0';
			for (int j = 0; j < w->n_groups && !dup; j++)
				dup = strcmp(w->groups[j], name) == 0;
			if (dup)
				continue;
			/* Sorted, so that the directory's order of groups is no change. */
			int at = w->n_groups++;
			while (at > 0 && strcmp(w->groups[at - 1], name) > 0) {
				w->groups[at] = w->groups[at - 1];
				at--;
			}
			w->groups[at] = name;
		}
	}
}

static void digest_of(EVP_MD_CTX *ctx, const struct plan *p, const struct want *w, int n,
		      unsigned char *out)
{
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (int i = 0; i < n; i++) {
		const struct member *c = &p->m[w[i].contact];
		EVP_DigestUpdate(ctx, c->jid, strlen(c->jid) + 1);
		if (c->name != NULL)
			EVP_DigestUpdate(ctx, c->name, strlen(c->name) + 1);
		else
			EVP_DigestUpdate(ctx, "\1", 2); /* never a name: not XML text */
		uint32_t ng = (uint32_t)w[i].n_groups;
		EVP_DigestUpdate(ctx, &ng, sizeof ng);
		for (int g = 0; g < w[i].n_groups; g++)
			EVP_DigestUpdate(ctx, w[i].groups[g], strlen(w[i].groups[g]) + 1);
	}
	EVP_DigestFinal_ex(ctx, out, NULL);
}

/* --- one owner's roster --- */

struct items {
	struct roster_item *v;
	size_t n, cap;
};

static void collect_item(void *arg, struct roster_item *it)
{
	struct items *s = arg;
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->v = xrealloc(s->v, s->cap * sizeof *s->v);
	}
	s->v[s->n++] = *it;
}

static bool same_strings(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Makes it what the directory wants (w); returns whether anything changed. */
static bool set_wanted(struct roster_item *it, const struct plan *p, const struct want *w)
{
	const char *name = p->m[w->contact].name;
	bool same = it->sub == (SUB_TO | SUB_FROM) && !it->ask && !it->approved && it->managed &&
		    same_strings(it->name, name) && it->n_groups == w->n_groups;
	for (int g = 0; same && g < w->n_groups; g++)
		same = strcmp(it->groups[g], w->groups[g]) == 0;
	if (same)
		return false;
	it->sub = SUB_TO | SUB_FROM;
	it->ask = false;
	it->approved = false;
	it->managed = true;
	it->name = name;
	it->groups = w->groups;
	it->n_groups = w->n_groups;
	return true;
}

static void pair_note(struct pair_change **v, size_t *n, size_t *cap, const char *contact,
		      bool added)
{
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 16;
		*v = xrealloc(*v, *cap * sizeof **v);
	}
	(*v)[*n].contact = contact;
	(*v)[*n].added = added;
	(*n)++;
}

static int index_set(struct loop *l, const char *domain, const char *owner_jid, bool on)
{
	char local[JID_PART_MAX + 1];
	size_t n = strcspn(owner_jid, "@");
	if (n > JID_PART_MAX)
		return -1;
	memcpy(local, owner_jid, n);
	local[n] = '\0';
	const struct storage_driver *sd = l->srv->storage;
	if (on)
		return sd->map_put(l->store, domain, INDEX_LOCAL, STORE_INDEX, local, "1", 1);
	return sd->map_del(l->store, domain, INDEX_LOCAL, STORE_INDEX, local) < 0 ? -1 : 0;
}

/* Brings owner's managed items to w (n wanted contacts): adds, updates,
 * removes, under owner's roster lock; then presence for the pairs that
 * changed. *indexed is whether owner is known to be in STORE_INDEX, kept
 * up to date. Adds the number of items changed to *changes. Returns 0 or
 * -1 (store error; what was done stays done). */
static int reconcile(struct loop *l, const char *domain, const char *owner,
		     const struct plan *p, const struct want *w, int n, bool *indexed,
		     struct arena *a, int *changes)
{
	/* Listed before any managed item is written: a crash between the two
	 * leaves an entry too many, which the next start clears. */
	if (n > 0 && !*indexed) {
		if (index_set(l, domain, owner, true) != 0)
			return -1;
		*indexed = true;
	}
	struct items have = { 0 };
	struct pair_change *pairs = NULL;
	size_t n_pairs = 0, cap_pairs = 0;
	int rc = 0;
	const struct storage_driver *drv = l->srv->storage;
	roster_lock(l, owner);
	/* One commit per owner, not two per item (docs/performance.md). */
	if (drv->begin(l->store) != 0) {
		roster_unlock(l, owner);
		free(pairs);
		return -1;
	}
	if (roster_each(l, owner, a, collect_item, &have) < 0) {
		rc = -1;
		goto unlock;
	}
	/* The store lists by key already; sorting again costs little and
	 * does not make the merge depend on a driver's collation. */
	if (have.n > 1)
		qsort(have.v, have.n, sizeof *have.v, cmp_item);
	size_t i = 0, j = 0;
	while (i < (size_t)n || j < have.n) {
		const char *wj = i < (size_t)n ? p->m[w[i].contact].jid : NULL;
		int c = wj == NULL ? 1 : j == have.n ? -1 : strcmp(wj, have.v[j].jid);
		if (c < 0) {
			struct roster_item it;
			roster_new_item(a, wj, &it);
			set_wanted(&it, p, &w[i]);
			if (roster_save(l, owner, &it, a) != 0) {
				rc = -1;
				break;
			}
			pair_note(&pairs, &n_pairs, &cap_pairs, p->m[w[i].contact].jid, true);
			(*changes)++;
			i++;
		} else if (c == 0) {
			struct roster_item *it = &have.v[j];
			bool was_both = it->sub == (SUB_TO | SUB_FROM);
			if (set_wanted(it, p, &w[i])) {
				if (roster_save(l, owner, it, a) != 0) {
					rc = -1;
					break;
				}
				(*changes)++;
				if (!was_both)
					pair_note(&pairs, &n_pairs, &cap_pairs,
						  p->m[w[i].contact].jid, true);
			}
			i++;
			j++;
		} else {
			const struct roster_item *it = &have.v[j];
			if (it->managed) {
				if (roster_remove(l, owner, it->jid, a) != 0) {
					rc = -1;
					break;
				}
				(*changes)++;
				pair_note(&pairs, &n_pairs, &cap_pairs, it->jid, false);
			}
			j++;
		}
	}
unlock:
	if (drv->end(l->store, rc == 0) != 0)
		rc = -1;
	roster_unlock(l, owner);
	if (rc == 0 && n == 0) {
		if (index_set(l, domain, owner, false) != 0)
			rc = -1;
		else
			*indexed = false;
	}
	for (size_t k = 0; k < n_pairs; k++)
		presence_pair_changed(l, owner, pairs[k].contact, pairs[k].added, a);
	free(pairs);
	free(have.v);
	return rc;
}

/* --- the apply --- */

struct index_load {
	struct arena *a;
	const char *domain;
	const char **jids;
	size_t n, cap;
};

static void index_entry(void *arg, const char *key, const void *value, size_t len)
{
	struct index_load *x = arg;
	(void)value, (void)len;
	if (!local_ok(key))
		return;
	if (x->n == x->cap) {
		x->cap = x->cap ? 2 * x->cap : 64;
		x->jids = xrealloc(x->jids, x->cap * sizeof *x->jids);
	}
	x->jids[x->n++] = make_jid(x->a, key, x->domain);
}

/* First apply: every owner listed in the store is to be reconciled. */
static int state_load(struct loop *l, struct groups_state *gs, const char *domain,
		      struct arena *a)
{
	struct index_load x = { .a = a, .domain = domain };
	if (l->srv->storage->map_list(l->store, domain, INDEX_LOCAL, STORE_INDEX, index_entry,
				      &x) < 0) {
		free(x.jids);
		return -1;
	}
	if (x.n > 1)
		qsort(x.jids, x.n, sizeof *x.jids, cmp_str);
	gs->v = xcalloc(x.n ? x.n : 1, sizeof *gs->v);
	gs->n = 0;
	for (size_t i = 0; i < x.n; i++) {
		gs->v[gs->n].jid = xstrdup(x.jids[i]);
		gs->v[gs->n].indexed = true;
		gs->n++;
	}
	free(x.jids);
	gs->loaded = true;
	return 0;
}

int groups_apply(struct loop *l, struct groups_state *gs, const char *domain,
		 const struct dir_snapshot *snap)
{
	struct arena a, oa;
	arena_init(&a);
	arena_init(&oa);
	if (!gs->loaded && state_load(l, gs, domain, &a) != 0) {
		log_error("directory groups: %s: cannot read the owners of managed items", domain);
		arena_reset(&a);
		return -1;
	}
	struct plan p;
	plan_build(&p, &a, domain, snap);
	struct want *w = xcalloc(p.n_m ? p.n_m : 1, sizeof *w);
	struct owner_state *next = xcalloc(p.n_m + gs->n + 1, sizeof *next);
	size_t n_next = 0, o = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL)
		fatal("out of memory");
	int changes = 0, failed = 0;
	for (size_t i = 0; i < p.n_m || o < gs->n;) {
		int c = i == p.n_m ? 1 : o == gs->n ? -1 : strcmp(p.m[i].jid, gs->v[o].jid);
		struct owner_state *old = c >= 0 ? &gs->v[o] : NULL;
		struct owner_state *s = &next[n_next];
		arena_reset(&oa);
		if (c <= 0) {
			int n = wanted_of(&p, (int)i, &oa, w);
			unsigned char d[DIGEST_LEN];
			digest_of(ctx, &p, w, n, d);
			s->jid = old ? old->jid : xstrdup(p.m[i].jid);
			s->indexed = old ? old->indexed : false;
			if (old && old->applied && memcmp(old->digest, d, DIGEST_LEN) == 0) {
				memcpy(s->digest, d, DIGEST_LEN);
				s->applied = true;
			} else if (reconcile(l, domain, s->jid, &p, w, n, &s->indexed, &oa,
					     &changes) == 0) {
				memcpy(s->digest, d, DIGEST_LEN);
				s->applied = true;
			} else {
				s->applied = false;
				failed++;
			}
			n_next++;
			i++;
		} else {
			/* In no group any more (or listed from before a restart). */
			if (reconcile(l, domain, old->jid, &p, w, 0, &old->indexed, &oa,
				      &changes) == 0) {
				free(old->jid);
			} else {
				*s = *old;
				s->applied = false;
				n_next++;
				failed++;
			}
		}
		if (c >= 0)
			o++;
	}
	EVP_MD_CTX_free(ctx);
	free(gs->v);
	gs->v = next;
	gs->n = n_next;
	free(w);
	arena_reset(&oa);
	arena_reset(&a);
	if (failed > 0) {
		log_error("directory groups: %s: %d roster(s) could not be updated", domain, failed);
		return -1;
	}
	return changes;
}
