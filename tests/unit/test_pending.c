/* Tests of src/storage/pending.c: the loops' handles write maps through
 * the storage thread, see their writes at once, and never wait for the
 * store's write lock. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "storage/pending.h"
#include "storage/storeq.h"
#include "store_files.h"

struct fixture {
	const struct storage_driver *drv; /* underneath */
	const struct storage_driver *pd;  /* the loops' */
	char dir[64], data_dir[128];
	struct storeq *q;
	struct pending *p;
	struct storage *a, *b; /* two loops' handles */
	struct storage *raw;   /* the store itself */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	char err[512];
	assert_non_null(f);
	f->drv = storage_driver_find("sqlite");
	f->pd = &storage_pending_driver;
	snprintf(f->dir, sizeof f->dir, "/tmp/natter-pending-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->data_dir, sizeof f->data_dir, "%s/data", f->dir);
	f->q = storeq_start(f->drv, f->data_dir, err, sizeof err);
	if (f->q == NULL)
		fail_msg("storeq_start: %s", err);
	f->p = pending_new(f->drv, f->q);
	f->a = pending_open(f->p, f->data_dir, err, sizeof err);
	f->b = pending_open(f->p, f->data_dir, err, sizeof err);
	f->raw = f->drv->open(f->data_dir, err, sizeof err);
	assert_non_null(f->a);
	assert_non_null(f->b);
	assert_non_null(f->raw);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	storeq_stop(f->q);
	f->pd->close(f->a);
	f->pd->close(f->b);
	pending_free(f->p);
	f->drv->close(f->raw);
	store_dir_remove(f->data_dir, f->dir);
	free(f);
	return 0;
}

/* The value of key through handle st with driver d, or "(none)". */
static const char *get(const struct storage_driver *d, struct storage *st, const char *key,
		       char *out, size_t cap)
{
	struct buf b;
	buf_init(&b);
	int rc = d->map_get(st, "example.com", "alice", "roster", key, &b);
	assert_true(rc >= 0);
	snprintf(out, cap, "%.*s", rc == 0 ? (int)b.len : 6, rc == 0 ? b.data : "(none)");
	buf_free(&b);
	return out;
}

struct listing {
	char text[512];
};

static void collect(void *arg, const char *key, const void *value, size_t len)
{
	struct listing *l = arg;
	size_t n = strlen(l->text);
	snprintf(l->text + n, sizeof l->text - n, "%s=%.*s;", key, (int)len, (const char *)value);
}

static const char *list(const struct storage_driver *d, struct storage *st, size_t max,
			struct listing *l)
{
	l->text[0] = '\0';
	int n = max ? d->map_list_max(st, "example.com", "alice", "roster", max, collect, l)
		    : d->map_list(st, "example.com", "alice", "roster", collect, l);
	assert_true(n >= 0);
	return l->text;
}

static void put(struct fixture *f, struct storage *st, const char *key, const char *value)
{
	assert_int_equal(f->pd->map_put(st, "example.com", "alice", "roster", key, value,
					 strlen(value)),
			 0);
}

static void test_write_is_seen_at_once_and_committed_later(void **state)
{
	struct fixture *f = *state;
	char v[64];
	put(f, f->a, "bob", "1");
	assert_string_equal(get(f->pd, f->b, "bob", v, sizeof v), "1");
	put(f, f->b, "bob", "2");
	assert_string_equal(get(f->pd, f->a, "bob", v, sizeof v), "2");
	storeq_flush(f->q);
	assert_int_equal(pending_count(f->p), 0);
	assert_string_equal(get(f->drv, f->raw, "bob", v, sizeof v), "2");
	assert_string_equal(get(f->pd, f->a, "bob", v, sizeof v), "2");
}

/* Another writer holds the store's write lock (as the storage thread
 * does through a batch): a loop's write returns at once all the same,
 * and every loop reads it; it lands once the lock is free. */
static void test_write_does_not_wait_for_the_write_lock(void **state)
{
	struct fixture *f = *state;
	char path[256], v[64];
	sqlite3 *db;
	snprintf(path, sizeof path, "%s/natter.db", f->data_dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	put(f, f->a, "carol", "while-locked");
	assert_int_equal(f->pd->map_del(f->a, "example.com", "alice", "roster", "carol"), 0);
	put(f, f->a, "carol", "again");
	assert_string_equal(get(f->pd, f->b, "carol", v, sizeof v), "again");
	assert_int_equal(pending_count(f->p), 3);
	assert_string_equal(get(f->drv, f->raw, "carol", v, sizeof v), "(none)");
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	storeq_flush(f->q);
	assert_int_equal(pending_count(f->p), 0);
	assert_string_equal(get(f->drv, f->raw, "carol", v, sizeof v), "again");
}

/* Listings merge what is queued with what is stored, sorted by key, as
 * the store lists; deleting one key or all of them counts at once. */
static void test_listing_merges_queued_writes(void **state)
{
	struct fixture *f = *state;
	struct listing l;
	long long bytes;
	char path[256];
	put(f, f->a, "b", "stored-b");
	put(f, f->a, "d", "stored-d");
	storeq_flush(f->q);
	/* Hold the store so that the next writes stay queued. */
	sqlite3 *db;
	snprintf(path, sizeof path, "%s/natter.db", f->data_dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	put(f, f->a, "c", "new-c");
	put(f, f->b, "d", "new-d");
	put(f, f->a, "a", "new-a");
	assert_int_equal(f->pd->map_del(f->b, "example.com", "alice", "roster", "b"), 0);
	assert_int_equal(f->pd->map_del(f->b, "example.com", "alice", "roster", "zz"), 1);
	assert_string_equal(list(f->pd, f->a, 0, &l), "a=new-a;c=new-c;d=new-d;");
	/* "a" and its value are 6 bytes, and so on: room for two. */
	assert_string_equal(list(f->pd, f->a, 12, &l), "a=new-a;c=new-c;");
	assert_int_equal(f->pd->map_size(f->b, "example.com", "alice", "roster", &bytes), 3);
	assert_int_equal(bytes, 18);
	assert_int_equal(f->pd->map_del(f->a, "example.com", "alice", "roster", NULL), 0);
	assert_string_equal(list(f->pd, f->b, 0, &l), "");
	assert_int_equal(f->pd->map_del(f->a, "example.com", "alice", "roster", NULL), 1);
	put(f, f->a, "e", "after-all");
	assert_string_equal(list(f->pd, f->b, 0, &l), "e=after-all;");
	assert_int_equal(f->pd->map_size(f->b, "example.com", "alice", "roster", &bytes), 1);
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	storeq_flush(f->q);
	assert_int_equal(pending_count(f->p), 0);
	assert_string_equal(list(f->drv, f->raw, 0, &l), "e=after-all;");
	assert_string_equal(list(f->pd, f->a, 0, &l), "e=after-all;");
}

/* Deleting an account waits for its queued writes, so none lands after
 * the account is gone. */
static void test_user_del_comes_after_queued_writes(void **state)
{
	struct fixture *f = *state;
	struct user_credentials cred;
	struct listing l;
	memset(&cred, 0, sizeof cred);
	snprintf(cred.sha1.salt, sizeof cred.sha1.salt, "c2FsdA==");
	cred.sha1.iterations = cred.sha256.iterations = 4096;
	assert_int_equal(f->pd->user_put(f->a, "example.com", "alice", &cred), 0);
	put(f, f->a, "bob", "1");
	put(f, f->b, "carol", "2");
	assert_int_equal(f->pd->user_del(f->b, "example.com", "alice"), 0);
	assert_int_equal(pending_count(f->p), 0);
	assert_string_equal(list(f->drv, f->raw, 0, &l), "");
	assert_string_equal(list(f->pd, f->a, 0, &l), "");
}

int main(void)
{
	log_set_level(LOG_WARN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_write_is_seen_at_once_and_committed_later,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_does_not_wait_for_the_write_lock, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_listing_merges_queued_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_user_del_comes_after_queued_writes, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
