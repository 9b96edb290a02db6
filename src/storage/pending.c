#include "storage/pending.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "storage/storeq.h"

#define PENDING_BUCKETS 1024

/* The latest uncommitted write of one key: its value, or its deletion. */
struct pending_entry {
	struct pending_entry *next;
	char *key;
	void *value;
	size_t len;
	bool gone;
	unsigned long long seq; /* of that write: only its commit removes the entry */
};

/* The uncommitted writes of one (domain, local, store). */
struct pending_shelf {
	struct pending_shelf *next;
	uint32_t hash;
	char *domain, *local, *store;
	struct pending_entry *entries;
	unsigned long long wipe_seq; /* not 0: every key deleted by that write,
				      * so the store's rows do not count */
};

struct pending {
	const struct storage_driver *drv;
	struct storeq *q;
	pthread_mutex_t lock;
	/* Held from a write's seq to its submission, so that the queue gets
	 * writes in seq order; never while taking `lock` in write_done's way
	 * (submission may wait for room in the queue). */
	pthread_mutex_t submit;
	struct pending_shelf *buckets[PENDING_BUCKETS]; /* under lock */
	unsigned long long seq;                          /* under lock */
	size_t writes;  /* writes queued and not committed (atomic) */
	size_t shelves; /* (atomic: read without the lock for the common case) */
	struct pending_removed *removed; /* under lock */
	size_t n_removed;                /* (atomic, as shelves) */
};

/* An account removed while natterd runs: map writes for it are dropped
 * (its sessions may write until they are closed) until it exists again. */
struct pending_removed {
	struct pending_removed *next;
	char *domain, *local;
};

struct pending_handle {
	struct pending *p;
	struct storage *inner;
	unsigned long long queued; /* map writes queued through it */
};

/* One map write on its way to the store; owned by its job. */
struct pending_write {
	struct pending *p;
	unsigned long long seq;
	char *domain, *local, *store, *key; /* key NULL: every key */
	void *value;                        /* NULL: a deletion */
	size_t len;
};

static struct pending_handle *handle_of(struct storage *st)
{
	return (struct pending_handle *)st;
}

static uint32_t shelf_hash(const char *domain, const char *local, const char *store)
{
	return str_hash_more(str_hash_more(str_hash(domain), local), store);
}

/* Under p->lock. */
static struct pending_shelf **shelf_find(struct pending *p, const char *domain,
					 const char *local, const char *store, uint32_t h)
{
	struct pending_shelf **s = &p->buckets[h % PENDING_BUCKETS];
	while (*s != NULL && ((*s)->hash != h || strcmp((*s)->store, store) != 0 ||
			      strcmp((*s)->local, local) != 0 || strcmp((*s)->domain, domain) != 0))
		s = &(*s)->next;
	return s;
}

static struct pending_entry **entry_find(struct pending_shelf *s, const char *key)
{
	struct pending_entry **e = &s->entries;
	while (*e != NULL && strcmp((*e)->key, key) != 0)
		e = &(*e)->next;
	return e;
}

static void entry_free(struct pending_entry *e)
{
	free(e->key);
	free(e->value);
	free(e);
}

/* Under p->lock: frees *s when it holds nothing any more. */
static void shelf_tidy(struct pending *p, struct pending_shelf **s)
{
	struct pending_shelf *shelf = *s;
	if (shelf->entries != NULL || shelf->wipe_seq != 0)
		return;
	*s = shelf->next;
	free(shelf->domain);
	free(shelf->local);
	free(shelf->store);
	free(shelf);
	__atomic_sub_fetch(&p->shelves, 1, __ATOMIC_RELEASE);
}

/* --- removed accounts --- */

/* Under p->lock. */
static struct pending_removed **removed_find(struct pending *p, const char *domain,
					     const char *local)
{
	struct pending_removed **r = &p->removed;
	while (*r != NULL && (strcmp((*r)->local, local) != 0 || strcmp((*r)->domain, domain) != 0))
		r = &(*r)->next;
	return r;
}

bool pending_account_is_removed(struct pending *p, const char *domain, const char *local)
{
	if (__atomic_load_n(&p->n_removed, __ATOMIC_ACQUIRE) == 0)
		return false;
	pthread_mutex_lock(&p->lock);
	bool has = *removed_find(p, domain, local) != NULL;
	pthread_mutex_unlock(&p->lock);
	return has;
}

void pending_account_removed(struct pending *p, const char *domain, const char *local)
{
	pthread_mutex_lock(&p->lock);
	if (*removed_find(p, domain, local) == NULL) {
		struct pending_removed *r = xcalloc(1, sizeof *r);
		r->domain = xstrdup(domain);
		r->local = xstrdup(local);
		r->next = p->removed;
		p->removed = r;
		__atomic_add_fetch(&p->n_removed, 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&p->lock);
}

void pending_account_exists(struct pending *p, const char *domain, const char *local)
{
	if (__atomic_load_n(&p->n_removed, __ATOMIC_ACQUIRE) == 0)
		return;
	pthread_mutex_lock(&p->lock);
	struct pending_removed **r = removed_find(p, domain, local);
	if (*r != NULL) {
		struct pending_removed *gone = *r;
		*r = gone->next;
		free(gone->domain);
		free(gone->local);
		free(gone);
		__atomic_sub_fetch(&p->n_removed, 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&p->lock);
}

/* --- writes: on the loop, then on the storage thread --- */

static int write_run(struct storage *st, const struct storage_driver *drv, void *arg)
{
	struct pending_write *w = arg;
	if (w->value != NULL)
		return drv->map_put(st, w->domain, w->local, w->store, w->key, w->value, w->len);
	return drv->map_del(st, w->domain, w->local, w->store, w->key) < 0 ? -1 : 0;
}

/* On the storage thread once committed (l NULL): the write is in the
 * store now, so its entry goes unless a later write replaced it. */
static void write_done(struct loop *l, void *arg, int rc)
{
	(void)l;
	struct pending_write *w = arg;
	struct pending *p = w->p;
	if (rc < 0)
		log_error("storage: a write to %s of %s@%s was lost (the store failed)", w->store,
			  w->local, w->domain);
	pthread_mutex_lock(&p->lock);
	struct pending_shelf **s =
		shelf_find(p, w->domain, w->local, w->store, shelf_hash(w->domain, w->local, w->store));
	if (*s != NULL) {
		if (w->key == NULL) {
			if ((*s)->wipe_seq == w->seq)
				(*s)->wipe_seq = 0;
		} else {
			struct pending_entry **e = entry_find(*s, w->key);
			if (*e != NULL && (*e)->seq == w->seq) {
				struct pending_entry *gone = *e;
				*e = gone->next;
				entry_free(gone);
			}
		}
		shelf_tidy(p, s);
	}
	pthread_mutex_unlock(&p->lock);
	__atomic_sub_fetch(&p->writes, 1, __ATOMIC_RELEASE);
	free(w->domain);
	free(w->local);
	free(w->store);
	free(w->key);
	free(w->value);
	free(w);
}

/* Records the write in the table (value NULL: a deletion; key NULL:
 * every key) and queues it. */
static void pending_write(struct pending *p, const char *domain, const char *local,
			  const char *store, const char *key, const void *value, size_t len)
{
	struct pending_write *w = xcalloc(1, sizeof *w);
	w->p = p;
	w->domain = xstrdup(domain);
	w->local = xstrdup(local);
	w->store = xstrdup(store);
	w->key = key ? xstrdup(key) : NULL;
	if (value != NULL) {
		w->value = xmalloc(len ? len : 1);
		memcpy(w->value, value, len);
		w->len = len;
	}
	uint32_t h = shelf_hash(domain, local, store);
	pthread_mutex_lock(&p->submit);
	pthread_mutex_lock(&p->lock);
	w->seq = ++p->seq;
	struct pending_shelf **s = shelf_find(p, domain, local, store, h);
	if (*s == NULL) {
		struct pending_shelf *shelf = xcalloc(1, sizeof *shelf);
		shelf->hash = h;
		shelf->domain = xstrdup(domain);
		shelf->local = xstrdup(local);
		shelf->store = xstrdup(store);
		*s = shelf;
		__atomic_add_fetch(&p->shelves, 1, __ATOMIC_RELEASE);
	}
	struct pending_shelf *shelf = *s;
	if (key == NULL) {
		/* Every key: what was pending is deleted with the rest. */
		while (shelf->entries != NULL) {
			struct pending_entry *e = shelf->entries;
			shelf->entries = e->next;
			entry_free(e);
		}
		shelf->wipe_seq = w->seq;
	} else {
		struct pending_entry **e = entry_find(shelf, key);
		if (*e == NULL) {
			*e = xcalloc(1, sizeof **e);
			(*e)->key = xstrdup(key);
		}
		free((*e)->value);
		(*e)->value = NULL;
		(*e)->len = 0;
		(*e)->gone = value == NULL;
		if (value != NULL) {
			(*e)->value = xmalloc(len ? len : 1);
			memcpy((*e)->value, value, len);
			(*e)->len = len;
		}
		(*e)->seq = w->seq;
	}
	__atomic_add_fetch(&p->writes, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&p->lock);
	/* In seq order (two loops writing one key), but outside `lock`: the
	 * storage thread needs it to finish the batch that makes room. */
	storeq_call(p->q, NULL, write_run, write_done, w);
	pthread_mutex_unlock(&p->submit);
}

/* --- reads --- */

static bool pending_none(struct pending *p)
{
	return __atomic_load_n(&p->shelves, __ATOMIC_ACQUIRE) == 0;
}

/* 0 found (value in out), 1 deleted, 2 not in the table. */
static int pending_lookup(struct pending *p, const char *domain, const char *local,
			  const char *store, const char *key, struct buf *out)
{
	if (pending_none(p))
		return 2;
	int rc = 2;
	pthread_mutex_lock(&p->lock);
	struct pending_shelf *s =
		*shelf_find(p, domain, local, store, shelf_hash(domain, local, store));
	if (s != NULL) {
		struct pending_entry *e = *entry_find(s, key);
		if (e != NULL && !e->gone) {
			out->len = 0;
			buf_append(out, e->value, e->len);
			rc = 0;
		} else if (e != NULL || s->wipe_seq != 0) {
			rc = 1;
		}
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

struct pending_row {
	char *key;
	void *value;
	size_t len;
	bool dropped; /* deleted by a queued write */
};

struct pending_rows {
	struct pending_row *v;
	size_t n, cap;
};

static void rows_add(struct pending_rows *r, const char *key, const void *value, size_t len)
{
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 16;
		r->v = xrealloc(r->v, r->cap * sizeof *r->v);
	}
	struct pending_row *row = &r->v[r->n++];
	row->key = xstrdup(key);
	row->value = xmalloc(len ? len : 1);
	memcpy(row->value, value, len);
	row->len = len;
	row->dropped = false;
}

static void rows_collect(void *arg, const char *key, const void *value, size_t len)
{
	rows_add(arg, key, value, len);
}

static int row_cmp(const void *a, const void *b)
{
	return strcmp(((const struct pending_row *)a)->key, ((const struct pending_row *)b)->key);
}

static void rows_free(struct pending_rows *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->v[i].key);
		free(r->v[i].value);
	}
	free(r->v);
}

/* The store's rows of (domain, local, store), up to max_bytes (0: all),
 * with the table's writes applied, sorted by key. Returns 0, -1 (rows
 * empty), or 1 when the table holds nothing for it (rows empty: ask the
 * store itself). */
static int pending_merge(struct pending_handle *h, const char *domain, const char *local,
			 const char *store, size_t max_bytes, struct pending_rows *rows)
{
	struct pending *p = h->p;
	*rows = (struct pending_rows){ 0 };
	if (pending_none(p))
		return 1;
	uint32_t hash = shelf_hash(domain, local, store);
	pthread_mutex_lock(&p->lock);
	bool any = *shelf_find(p, domain, local, store, hash) != NULL;
	pthread_mutex_unlock(&p->lock);
	if (!any)
		return 1;
	/* Read before looking at the table again: a write committed in
	 * between has left the table and is in what was read. */
	int n = max_bytes ? p->drv->map_list_max(h->inner, domain, local, store, max_bytes,
						 rows_collect, rows)
			  : p->drv->map_list(h->inner, domain, local, store, rows_collect, rows);
	if (n < 0) {
		rows_free(rows);
		*rows = (struct pending_rows){ 0 };
		return -1;
	}
	if (rows->n > 1)
		qsort(rows->v, rows->n, sizeof *rows->v, row_cmp);
	pthread_mutex_lock(&p->lock);
	struct pending_shelf *s = *shelf_find(p, domain, local, store, hash);
	if (s != NULL && s->wipe_seq != 0) {
		rows_free(rows);
		*rows = (struct pending_rows){ 0 };
	}
	size_t stored = rows->n;
	for (struct pending_entry *e = s ? s->entries : NULL; e != NULL; e = e->next) {
		struct pending_row probe = { .key = e->key };
		struct pending_row *row =
			stored ? bsearch(&probe, rows->v, stored, sizeof *rows->v, row_cmp) : NULL;
		if (row != NULL) {
			free(row->value);
			row->value = NULL;
			row->len = 0;
			row->dropped = e->gone;
			if (!e->gone) {
				row->value = xmalloc(e->len ? e->len : 1);
				memcpy(row->value, e->value, e->len);
				row->len = e->len;
			}
		} else if (!e->gone) {
			rows_add(rows, e->key, e->value, e->len);
		}
	}
	pthread_mutex_unlock(&p->lock);
	size_t kept = 0;
	for (size_t i = 0; i < rows->n; i++) {
		if (rows->v[i].dropped) {
			free(rows->v[i].key);
			free(rows->v[i].value);
		} else {
			rows->v[kept++] = rows->v[i];
		}
	}
	rows->n = kept;
	if (rows->n > 1)
		qsort(rows->v, rows->n, sizeof *rows->v, row_cmp);
	return 0;
}

/* --- the driver --- */

static struct storage *pending_driver_open(const char *data_dir, char *err, size_t errlen)
{
	(void)data_dir;
	snprintf(err, errlen, "the loops' storage handles are opened by pending_open");
	return NULL;
}

static void pending_close(struct storage *st)
{
	struct pending_handle *h = handle_of(st);
	h->p->drv->close(h->inner);
	free(h);
}

static int pending_user_get(struct storage *st, const char *domain, const char *local,
			    struct user_credentials *out)
{
	struct pending_handle *h = handle_of(st);
	int rc = h->p->drv->user_get(h->inner, domain, local, out);
	if (rc == 0)
		pending_account_exists(h->p, domain, local); /* made again (natterctl) */
	return rc;
}

static int pending_user_put(struct storage *st, const char *domain, const char *local,
			    const struct user_credentials *cred)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->user_put(h->inner, domain, local, cred);
}

static int pending_user_del(struct storage *st, const char *domain, const char *local)
{
	struct pending_handle *h = handle_of(st);
	/* The account's stores go with it: no write queued before may land
	 * after. Rare (in-band removal), so waiting here is acceptable. */
	storeq_flush(h->p->q);
	return h->p->drv->user_del(h->inner, domain, local);
}

static int pending_user_list(struct storage *st, const char *domain,
			     void (*fn)(void *arg, const char *domain, const char *local), void *arg)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->user_list(h->inner, domain, fn, arg);
}

static int pending_map_get(struct storage *st, const char *domain, const char *local,
			   const char *store, const char *key, struct buf *out)
{
	struct pending_handle *h = handle_of(st);
	int rc = pending_lookup(h->p, domain, local, store, key, out);
	if (rc != 2)
		return rc;
	return h->p->drv->map_get(h->inner, domain, local, store, key, out);
}

static int pending_map_put(struct storage *st, const char *domain, const char *local,
			   const char *store, const char *key, const void *value, size_t len)
{
	if (pending_account_is_removed(handle_of(st)->p, domain, local))
		return 0; /* nowhere to keep it */
	handle_of(st)->queued++;
	pending_write(handle_of(st)->p, domain, local, store, key, value ? value : "", len);
	return 0;
}

static int pending_map_size(struct storage *st, const char *domain, const char *local,
			    const char *store, long long *bytes);

static int pending_map_del(struct storage *st, const char *domain, const char *local,
			   const char *store, const char *key)
{
	struct pending_handle *h = handle_of(st);
	int there;
	if (pending_account_is_removed(h->p, domain, local))
		return 1; /* its stores went with it */
	if (key == NULL) {
		long long bytes;
		there = pending_map_size(st, domain, local, store, &bytes);
	} else {
		struct buf b;
		buf_init(&b);
		int rc = pending_map_get(st, domain, local, store, key, &b);
		buf_free(&b);
		there = rc < 0 ? -1 : rc == 0;
	}
	if (there < 0)
		return -1;
	h->queued++;
	pending_write(h->p, domain, local, store, key, NULL, 0);
	return there > 0 ? 0 : 1;
}

static int pending_map_list_max(struct storage *st, const char *domain, const char *local,
				const char *store, size_t max_bytes,
				void (*fn)(void *arg, const char *key, const void *value, size_t len),
				void *arg)
{
	struct pending_handle *h = handle_of(st);
	struct pending_rows rows;
	int rc = pending_merge(h, domain, local, store, max_bytes, &rows);
	if (rc == 1)
		return max_bytes ? h->p->drv->map_list_max(h->inner, domain, local, store, max_bytes,
							   fn, arg)
				 : h->p->drv->map_list(h->inner, domain, local, store, fn, arg);
	if (rc < 0)
		return -1;
	size_t used = 0;
	int n = 0;
	for (size_t i = 0; i < rows.n; i++) {
		used += strlen(rows.v[i].key) + rows.v[i].len;
		if (max_bytes && used > max_bytes)
			break;
		fn(arg, rows.v[i].key, rows.v[i].value, rows.v[i].len);
		n++;
	}
	rows_free(&rows);
	return n;
}

static int pending_map_list(struct storage *st, const char *domain, const char *local,
			    const char *store,
			    void (*fn)(void *arg, const char *key, const void *value, size_t len),
			    void *arg)
{
	return pending_map_list_max(st, domain, local, store, 0, fn, arg);
}

static int pending_map_size(struct storage *st, const char *domain, const char *local,
			    const char *store, long long *bytes)
{
	struct pending_handle *h = handle_of(st);
	struct pending_rows rows;
	int rc = pending_merge(h, domain, local, store, 0, &rows);
	if (rc == 1)
		return h->p->drv->map_size(h->inner, domain, local, store, bytes);
	if (rc < 0)
		return -1;
	*bytes = 0;
	for (size_t i = 0; i < rows.n; i++)
		*bytes += (long long)(strlen(rows.v[i].key) + rows.v[i].len);
	int n = (int)rows.n;
	rows_free(&rows);
	return n;
}

static int pending_list_push(struct storage *st, const char *domain, const char *local,
			     const char *store, const void *value, size_t len, long long *id)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->list_push(h->inner, domain, local, store, value, len, id);
}

static int pending_list_fetch(struct storage *st, const char *domain, const char *local,
			      const char *store,
			      void (*fn)(void *arg, long long id, long long stamp, const void *value,
					 size_t len),
			      void *arg)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->list_fetch(h->inner, domain, local, store, fn, arg);
}

static int pending_list_page(struct storage *st, const char *domain, const char *local,
			     const char *store, long long after_id, int max_items,
			     void (*fn)(void *arg, long long id, long long stamp, const void *value,
					size_t len),
			     void *arg)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->list_page(h->inner, domain, local, store, after_id, max_items, fn, arg);
}

static int pending_list_trim(struct storage *st, const char *domain, const char *local,
			     const char *store, long long max_id)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->list_trim(h->inner, domain, local, store, max_id);
}

static int pending_list_count(struct storage *st, const char *domain, const char *local,
			      const char *store)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->list_count(h->inner, domain, local, store);
}

static int pending_list_size(struct storage *st, const char *domain, const char *local,
			     const char *store, long long *bytes)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->list_size(h->inner, domain, local, store, bytes);
}

static int pending_archive_put(struct storage *st, const char *domain, const char *local,
			       const struct archive_entry *e)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->archive_put(h->inner, domain, local, e);
}

static int pending_archive_query(struct storage *st, const char *domain, const char *local,
				 const struct archive_query *q,
				 void (*fn)(void *arg, long long id, const void *value, size_t len,
					    int outgoing, const char *with),
				 void *arg, bool *complete, long long *count)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->archive_query(h->inner, domain, local, q, fn, arg, complete, count);
}

static int pending_archive_has(struct storage *st, const char *domain, const char *local,
			       long long id)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->archive_has(h->inner, domain, local, id);
}

static long long pending_archive_delete(struct storage *st, const char *domain,
				       const char *local, long long before_id)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->archive_delete(h->inner, domain, local, before_id);
}

static long long pending_archive_index(struct storage *st, const char *domain, const char *local)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->archive_index(h->inner, domain, local);
}

static long long pending_archive_last_id(struct storage *st)
{
	struct pending_handle *h = handle_of(st);
	return h->p->drv->archive_last_id(h->inner);
}

/* Map writes are jobs of their own, batched by the storage thread: there
 * is nothing to group, and nothing to undo. */
static int pending_begin(struct storage *st)
{
	(void)st;
	return 0;
}

static int pending_end(struct storage *st, int commit)
{
	(void)st;
	(void)commit;
	return 0;
}

const struct storage_driver storage_pending_driver = {
	.name = "pending",
	.open = pending_driver_open,
	.close = pending_close,
	.user_get = pending_user_get,
	.user_put = pending_user_put,
	.user_del = pending_user_del,
	.user_list = pending_user_list,
	.map_get = pending_map_get,
	.map_put = pending_map_put,
	.map_del = pending_map_del,
	.map_list = pending_map_list,
	.map_list_max = pending_map_list_max,
	.map_size = pending_map_size,
	.list_push = pending_list_push,
	.list_fetch = pending_list_fetch,
	.list_page = pending_list_page,
	.list_trim = pending_list_trim,
	.list_count = pending_list_count,
	.list_size = pending_list_size,
	.archive_put = pending_archive_put,
	.archive_query = pending_archive_query,
	.archive_has = pending_archive_has,
	.archive_delete = pending_archive_delete,
	.archive_index = pending_archive_index,
	.archive_last_id = pending_archive_last_id,
	.begin = pending_begin,
	.end = pending_end,
};

/* --- the table --- */

struct pending *pending_new(const struct storage_driver *drv, struct storeq *q)
{
	struct pending *p = xcalloc(1, sizeof *p);
	p->drv = drv;
	p->q = q;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->submit, NULL);
	return p;
}

void pending_free(struct pending *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < PENDING_BUCKETS; i++) {
		while (p->buckets[i] != NULL) {
			struct pending_shelf *s = p->buckets[i];
			p->buckets[i] = s->next;
			while (s->entries != NULL) {
				struct pending_entry *e = s->entries;
				s->entries = e->next;
				entry_free(e);
			}
			free(s->domain);
			free(s->local);
			free(s->store);
			free(s);
		}
	}
	while (p->removed != NULL) {
		struct pending_removed *r = p->removed;
		p->removed = r->next;
		free(r->domain);
		free(r->local);
		free(r);
	}
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->submit);
	free(p);
}

struct storage *pending_open(struct pending *p, const char *data_dir, char *err, size_t errlen)
{
	struct storage *inner = p->drv->open(data_dir, err, errlen);
	if (inner == NULL)
		return NULL;
	struct pending_handle *h = xcalloc(1, sizeof *h);
	h->p = p;
	h->inner = inner;
	return (struct storage *)h;
}

unsigned long long pending_queued(struct storage *st)
{
	return handle_of(st)->queued;
}

size_t pending_count(struct pending *p)
{
	return __atomic_load_n(&p->writes, __ATOMIC_ACQUIRE);
}
