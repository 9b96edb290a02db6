/* Tests of src/storage/storage.c and of every storage driver: a new driver
 * adds a setup_<name> and runs the same driver tests as a group of its own. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "storage/storage.h"

struct fixture {
	const struct storage_driver *drv;
	char dir[64];        /* mkdtemp directory */
	char data_dir[128];  /* dir/data, created by open */
	struct storage *st;
};

static int setup(void **state, const char *driver)
{
	struct fixture *f = calloc(1, sizeof *f);
	char err[512];
	assert_non_null(f);
	f->drv = storage_driver_find(driver);
	assert_non_null(f->drv);
	snprintf(f->dir, sizeof f->dir, "/tmp/natter-storage-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->data_dir, sizeof f->data_dir, "%s/data", f->dir);
	f->st = f->drv->open(f->data_dir, err, sizeof err);
	if (!f->st)
		fail_msg("open: %s", err);
	*state = f;
	return 0;
}

static int setup_sqlite(void **state)
{
	return setup(state, "sqlite");
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	static const char *const files[] = { "natter.db", "natter.db-wal", "natter.db-shm" };
	char path[256];
	if (f->st)
		f->drv->close(f->st);
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", f->data_dir, files[i]);
		unlink(path);
	}
	rmdir(f->data_dir);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Credentials with recognisable, distinct contents (no PBKDF2 needed). */
static void fake_credentials(struct user_credentials *c, const char *tag)
{
	memset(c, 0, sizeof *c);
	snprintf(c->sha1.salt, sizeof c->sha1.salt, "salt1-%s", tag);
	c->sha1.iterations = 4096;
	snprintf(c->sha1.stored_key, sizeof c->sha1.stored_key, "stored1-%s", tag);
	snprintf(c->sha1.server_key, sizeof c->sha1.server_key, "server1-%s", tag);
	snprintf(c->sha256.salt, sizeof c->sha256.salt, "salt256-%s", tag);
	c->sha256.iterations = 8192;
	snprintf(c->sha256.stored_key, sizeof c->sha256.stored_key, "stored256-%s", tag);
	snprintf(c->sha256.server_key, sizeof c->sha256.server_key, "server256-%s", tag);
}

static void assert_same_credentials(const struct user_credentials *a,
				    const struct user_credentials *b)
{
	const struct scram_secret *x[] = { &a->sha1, &a->sha256 };
	const struct scram_secret *y[] = { &b->sha1, &b->sha256 };
	for (int i = 0; i < 2; i++) {
		assert_string_equal(x[i]->salt, y[i]->salt);
		assert_int_equal(x[i]->iterations, y[i]->iterations);
		assert_string_equal(x[i]->stored_key, y[i]->stored_key);
		assert_string_equal(x[i]->server_key, y[i]->server_key);
	}
}

struct listing {
	char text[1024];
};

static void collect(void *arg, const char *domain, const char *local)
{
	struct listing *l = arg;
	size_t n = strlen(l->text);
	snprintf(l->text + n, sizeof l->text - n, "%s@%s;", local, domain);
}

static void test_driver_find(void **state)
{
	(void)state;
	const struct storage_driver *d = storage_driver_find("sqlite");
	assert_non_null(d);
	assert_string_equal(d->name, "sqlite");
	assert_null(storage_driver_find("nosuch"));
	assert_null(storage_driver_find(""));
}

static void test_open_creates_private_files(void **state)
{
	struct fixture *f = *state;
	struct stat sb;
	char path[256];
	assert_int_equal(stat(f->data_dir, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0700);
	if (strcmp(f->drv->name, "sqlite") == 0) {
		snprintf(path, sizeof path, "%s/natter.db", f->data_dir);
		assert_int_equal(stat(path, &sb), 0);
		assert_int_equal(sb.st_mode & 0777, 0600);
	}
}

static void test_open_fails_with_message(void **state)
{
	struct fixture *f = *state;
	char file[256], bad[300], err[512] = "";
	snprintf(file, sizeof file, "%s/plainfile", f->dir);
	FILE *fp = fopen(file, "w");
	assert_non_null(fp);
	fclose(fp);
	snprintf(bad, sizeof bad, "%s/data", file); /* a directory under a file */
	assert_null(f->drv->open(bad, err, sizeof err));
	assert_non_null(strstr(err, bad));
	unlink(file);
}

static void test_put_get(void **state)
{
	struct fixture *f = *state;
	struct user_credentials in, out;
	fake_credentials(&in, "alice");
	assert_int_equal(f->drv->user_put(f->st, "localhost", "alice", &in), 0);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "alice", &out), 0);
	assert_same_credentials(&in, &out);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "bob", &out), 1);
	assert_int_equal(f->drv->user_get(f->st, "example.org", "alice", &out), 1);
}

static void test_put_replaces(void **state)
{
	struct fixture *f = *state;
	struct user_credentials a, b, out;
	struct listing l = { "" };
	fake_credentials(&a, "first");
	fake_credentials(&b, "second");
	assert_int_equal(f->drv->user_put(f->st, "localhost", "alice", &a), 0);
	assert_int_equal(f->drv->user_put(f->st, "localhost", "alice", &b), 0);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "alice", &out), 0);
	assert_same_credentials(&b, &out);
	assert_int_equal(f->drv->user_list(f->st, NULL, collect, &l), 0);
	assert_string_equal(l.text, "alice@localhost;");
}

static void test_del(void **state)
{
	struct fixture *f = *state;
	struct user_credentials c, out;
	fake_credentials(&c, "x");
	assert_int_equal(f->drv->user_put(f->st, "localhost", "alice", &c), 0);
	assert_int_equal(f->drv->user_put(f->st, "localhost", "bob", &c), 0);
	assert_int_equal(f->drv->user_del(f->st, "localhost", "alice"), 0);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "alice", &out), 1);
	assert_int_equal(f->drv->user_del(f->st, "localhost", "alice"), 1);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "bob", &out), 0);
}

static void test_list_sorted_and_filtered(void **state)
{
	struct fixture *f = *state;
	struct user_credentials c;
	struct listing all = { "" }, one = { "" }, none = { "" };
	fake_credentials(&c, "x");
	/* Quotes and SQL in names are data: the statements are parameterised. */
	const char *users[][2] = {
		{ "zeta.example", "carol" }, { "localhost", "bob" },
		{ "localhost", "alice" }, { "zeta.example", "o'brien; DROP TABLE users" },
		{ "alpha.example", "dave" },
	};
	for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
		assert_int_equal(f->drv->user_put(f->st, users[i][0], users[i][1], &c), 0);
	assert_int_equal(f->drv->user_list(f->st, NULL, collect, &all), 0);
	assert_string_equal(all.text, "dave@alpha.example;alice@localhost;bob@localhost;"
				      "carol@zeta.example;o'brien; DROP TABLE users@zeta.example;");
	assert_int_equal(f->drv->user_list(f->st, "localhost", collect, &one), 0);
	assert_string_equal(one.text, "alice@localhost;bob@localhost;");
	assert_int_equal(f->drv->user_list(f->st, "nowhere.example", collect, &none), 0);
	assert_string_equal(none.text, "");
}

static void test_reopen_persists(void **state)
{
	struct fixture *f = *state;
	struct user_credentials in, out;
	char err[512];
	fake_credentials(&in, "persist");
	assert_int_equal(f->drv->user_put(f->st, "localhost", "alice", &in), 0);
	f->drv->close(f->st);
	f->st = f->drv->open(f->data_dir, err, sizeof err);
	if (!f->st)
		fail_msg("reopen: %s", err);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "alice", &out), 0);
	assert_same_credentials(&in, &out);
}

static void test_two_handles(void **state)
{
	struct fixture *f = *state;
	struct user_credentials c, out;
	char err[512];
	struct storage *other = f->drv->open(f->data_dir, err, sizeof err);
	if (!other)
		fail_msg("second open: %s", err);
	fake_credentials(&c, "shared");
	assert_int_equal(f->drv->user_put(f->st, "localhost", "alice", &c), 0);
	assert_int_equal(f->drv->user_get(other, "localhost", "alice", &out), 0);
	assert_same_credentials(&c, &out);
	assert_int_equal(f->drv->user_del(other, "localhost", "alice"), 0);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "alice", &out), 1);
	f->drv->close(other);
}

static void test_credentials_roundtrip_through_store(void **state)
{
	struct fixture *f = *state;
	struct user_credentials in, out;
	assert_int_equal(storage_credentials_from_password("correct horse", 4096, &in), 0);
	assert_int_equal(f->drv->user_put(f->st, "localhost", "alice", &in), 0);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "alice", &out), 0);
	assert_same_credentials(&in, &out);
	assert_int_equal(storage_credentials_check(&out, "correct horse"), 1);
	assert_int_equal(storage_credentials_check(&out, "battery staple"), 0);
}

/* sqlite only: the schema version is recorded, and a file from a newer
 * natter is refused rather than written with the old schema. */
static void test_sqlite_schema_version(void **state)
{
	struct fixture *f = *state;
	char path[256], err[512] = "";
	sqlite3 *db;
	sqlite3_stmt *stmt;
	f->drv->close(f->st);
	f->st = NULL;
	snprintf(path, sizeof path, "%s/natter.db", f->data_dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1,
					    &stmt, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(stmt, 0), 1);
	assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
	sqlite3_finalize(stmt);
	assert_int_equal(sqlite3_exec(db, "UPDATE schema_version SET version = 99", NULL, NULL,
				      NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_null(f->drv->open(f->data_dir, err, sizeof err));
	assert_non_null(strstr(err, "schema version 99 is newer"));
}

static void assert_lower_hex(const char *s, size_t len)
{
	assert_int_equal(strlen(s), len);
	for (size_t i = 0; i < len; i++)
		assert_non_null(strchr("0123456789abcdef", s[i]));
}

static void test_credentials_from_password(void **state)
{
	(void)state;
	struct user_credentials a, b;
	assert_int_equal(storage_credentials_from_password("secret", 4096, &a), 0);
	assert_int_equal(storage_credentials_from_password("secret", 4096, &b), 0);
	assert_int_equal(a.sha1.iterations, 4096);
	assert_int_equal(a.sha256.iterations, 4096);
	assert_int_equal(strlen(a.sha1.salt), 24); /* 16 bytes in base64 */
	assert_int_equal(strlen(a.sha256.salt), 24);
	assert_lower_hex(a.sha1.stored_key, 40);
	assert_lower_hex(a.sha1.server_key, 40);
	assert_lower_hex(a.sha256.stored_key, 64);
	assert_lower_hex(a.sha256.server_key, 64);
	/* Fresh salt per hash and per call. */
	assert_string_not_equal(a.sha1.salt, a.sha256.salt);
	assert_string_not_equal(a.sha256.salt, b.sha256.salt);
	assert_string_not_equal(a.sha256.stored_key, b.sha256.stored_key);

	assert_int_equal(storage_credentials_check(&a, "secret"), 1);
	assert_int_equal(storage_credentials_check(&a, "Secret"), 0);
	assert_int_equal(storage_credentials_check(&a, ""), 0);
	assert_int_equal(storage_credentials_check(&b, "secret"), 1);
	assert_int_equal(storage_credentials_from_password("secret", 0, &a), -1);
}

/* RFC 7677 §3 (SCRAM-SHA-256) and RFC 5802 §5 (SCRAM-SHA-1) examples:
 * user "user", password "pencil", 4096 iterations. StoredKey and ServerKey
 * were computed independently (Python hashlib). */
static void test_credentials_known_vectors(void **state)
{
	(void)state;
	struct user_credentials c = { 0 };
	snprintf(c.sha256.salt, sizeof c.sha256.salt, "W22ZaJ0SNY7soEsUEjb6gQ==");
	c.sha256.iterations = 4096;
	snprintf(c.sha256.stored_key, sizeof c.sha256.stored_key,
		 "586e5df283e6dceb5c3e791d8b8528ec191e664045ce971792e2e6b5bb13e2a6");
	snprintf(c.sha256.server_key, sizeof c.sha256.server_key,
		 "c1f3cbc1c13a9d35a14c0990eed97629ea225863e566a4314ab99f3f00e5d9d5");
	assert_int_equal(storage_credentials_check(&c, "pencil"), 1);
	assert_int_equal(storage_credentials_check(&c, "pencil2"), 0);

	/* Upper-case hex written by another tool still matches. */
	snprintf(c.sha256.stored_key, sizeof c.sha256.stored_key,
		 "586E5DF283E6DCEB5C3E791D8B8528EC191E664045CE971792E2E6B5BB13E2A6");
	assert_int_equal(storage_credentials_check(&c, "pencil"), 1);

	/* Malformed secrets are errors, not mismatches. */
	c.sha256.stored_key[10] = '\0';
	assert_int_equal(storage_credentials_check(&c, "pencil"), -1);
	c.sha256.iterations = 0;
	assert_int_equal(storage_credentials_check(&c, "pencil"), -1);
}

int main(void)
{
	const struct CMUnitTest common[] = {
		cmocka_unit_test(test_driver_find),
		cmocka_unit_test(test_credentials_from_password),
		cmocka_unit_test(test_credentials_known_vectors),
	};
	/* One set per driver; setup_<driver> picks it. */
	const struct CMUnitTest sqlite[] = {
		cmocka_unit_test_setup_teardown(test_open_creates_private_files, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_open_fails_with_message, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_put_get, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_put_replaces, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_del, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_list_sorted_and_filtered, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_persists, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_two_handles, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_credentials_roundtrip_through_store,
						setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_sqlite_schema_version, setup_sqlite, teardown),
	};
	log_set_level(LOG_WARN);
	int failed = cmocka_run_group_tests_name("storage", common, NULL, NULL);
	failed += cmocka_run_group_tests_name("storage_sqlite", sqlite, NULL, NULL);
	return failed ? 1 : 0;
}
