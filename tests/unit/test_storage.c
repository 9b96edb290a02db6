/* Tests of src/storage/storage.c and of every storage driver: a new driver
 * adds a setup_<name> and runs the same driver tests as a group of its own. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <gsasl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "storage/storage.h"
#include "store_files.h"

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
	if (f->st)
		f->drv->close(f->st);
	store_dir_remove(f->data_dir, f->dir);
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

/* Map and list stores. */

/* Appends "key=value;" to a listing, bytes outside printable ASCII as \xx. */
static void collect_entry(void *arg, const char *key, const void *value, size_t len)
{
	struct listing *l = arg;
	const unsigned char *v = value;
	size_t n = strlen(l->text);
	n += (size_t)snprintf(l->text + n, sizeof l->text - n, "%s=", key);
	for (size_t i = 0; i < len && n < sizeof l->text; i++) {
		if (v[i] >= 0x20 && v[i] < 0x7f)
			n += (size_t)snprintf(l->text + n, sizeof l->text - n, "%c", v[i]);
		else
			n += (size_t)snprintf(l->text + n, sizeof l->text - n, "\\%02x", v[i]);
	}
	if (n < sizeof l->text)
		snprintf(l->text + n, sizeof l->text - n, ";");
}

static int map_put_str(struct fixture *f, const char *local, const char *store, const char *key,
		       const char *value)
{
	return f->drv->map_put(f->st, "localhost", local, store, key, value, strlen(value));
}

/* Gets a value as a string ("" when not found) and returns map_get's code. */
static int map_get_str(struct fixture *f, struct storage *st, const char *local,
		       const char *store, const char *key, char *out, size_t cap)
{
	struct buf b;
	buf_init(&b);
	int rc = f->drv->map_get(st, "localhost", local, store, key, &b);
	snprintf(out, cap, "%.*s", (int)b.len, b.len ? b.data : "");
	buf_free(&b);
	return rc;
}

static void test_map_put_get(void **state)
{
	struct fixture *f = *state;
	struct buf b;
	assert_int_equal(map_put_str(f, "alice", "roster", "bob@localhost", "<item/>"), 0);

	/* out is replaced, not appended to. */
	buf_init(&b);
	buf_puts(&b, "old contents");
	assert_int_equal(f->drv->map_get(f->st, "localhost", "alice", "roster", "bob@localhost",
					 &b), 0);
	assert_int_equal(b.len, 7);
	assert_memory_equal(b.data, "<item/>", 7);
	/* Not found leaves out alone. */
	assert_int_equal(f->drv->map_get(f->st, "localhost", "alice", "roster", "carol@localhost",
					 &b), 1);
	assert_int_equal(b.len, 7);
	buf_free(&b);
}

static void test_map_put_replaces(void **state)
{
	struct fixture *f = *state;
	struct listing l = { "" };
	char v[64];
	assert_int_equal(map_put_str(f, "alice", "roster", "bob@localhost", "first"), 0);
	assert_int_equal(map_put_str(f, "alice", "roster", "bob@localhost", "second, longer"), 0);
	assert_int_equal(map_get_str(f, f->st, "alice", "roster", "bob@localhost", v, sizeof v), 0);
	assert_string_equal(v, "second, longer");
	assert_int_equal(f->drv->map_list(f->st, "localhost", "alice", "roster", collect_entry, &l),
			 1);
	assert_string_equal(l.text, "bob@localhost=second, longer;");
}

static void test_map_del_one(void **state)
{
	struct fixture *f = *state;
	char v[64];
	assert_int_equal(map_put_str(f, "alice", "roster", "bob@localhost", "b"), 0);
	assert_int_equal(map_put_str(f, "alice", "roster", "carol@localhost", "c"), 0);
	assert_int_equal(f->drv->map_del(f->st, "localhost", "alice", "roster", "bob@localhost"), 0);
	assert_int_equal(map_get_str(f, f->st, "alice", "roster", "bob@localhost", v, sizeof v), 1);
	assert_int_equal(f->drv->map_del(f->st, "localhost", "alice", "roster", "bob@localhost"), 1);
	assert_int_equal(map_get_str(f, f->st, "alice", "roster", "carol@localhost", v, sizeof v), 0);
	assert_string_equal(v, "c");
}

static void test_map_del_store(void **state)
{
	struct fixture *f = *state;
	struct listing l = { "" };
	char v[64];
	assert_int_equal(map_put_str(f, "alice", "roster", "bob@localhost", "b"), 0);
	assert_int_equal(map_put_str(f, "alice", "roster", "carol@localhost", "c"), 0);
	assert_int_equal(map_put_str(f, "alice", "vcard", "", "<vCard/>"), 0);
	assert_int_equal(map_put_str(f, "bob", "roster", "alice@localhost", "a"), 0);
	assert_int_equal(f->drv->map_del(f->st, "localhost", "alice", "roster", NULL), 0);
	assert_int_equal(f->drv->map_list(f->st, "localhost", "alice", "roster", collect_entry, &l),
			 0);
	assert_string_equal(l.text, "");
	assert_int_equal(f->drv->map_del(f->st, "localhost", "alice", "roster", NULL), 1);
	/* Other stores and other accounts keep theirs. */
	assert_int_equal(map_get_str(f, f->st, "alice", "vcard", "", v, sizeof v), 0);
	assert_string_equal(v, "<vCard/>");
	assert_int_equal(map_get_str(f, f->st, "bob", "roster", "alice@localhost", v, sizeof v), 0);
	assert_string_equal(v, "a");
}

static void test_map_list_sorted(void **state)
{
	struct fixture *f = *state;
	struct listing l = { "" }, none = { "" };
	const char *keys[] = { "zed@localhost", "amy@example.org", "o'hara; DROP TABLE map",
			       "Bob@localhost", "amy@example.com" };
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		assert_int_equal(map_put_str(f, "alice", "roster", keys[i], "x"), 0);
	assert_int_equal(f->drv->map_list(f->st, "localhost", "alice", "roster", collect_entry, &l),
			 5);
	/* Byte order: upper case before lower case. */
	assert_string_equal(l.text, "Bob@localhost=x;amy@example.com=x;amy@example.org=x;"
				    "o'hara; DROP TABLE map=x;zed@localhost=x;");
	assert_int_equal(f->drv->map_list(f->st, "localhost", "alice", "nosuch", collect_entry,
					  &none), 0);
	assert_string_equal(none.text, "");
}

/* map_size counts keys and values in bytes (a key's UTF-8, not its
 * characters); map_list_max stops before the entry that passes its budget
 * and lists nothing of what follows. */
static void test_map_size_and_list_max(void **state)
{
	struct fixture *f = *state;
	struct listing l = { "" };
	long long bytes = -1;
	assert_int_equal(f->drv->map_size(f->st, "localhost", "alice", "roster", &bytes), 0);
	assert_int_equal(bytes, 0);
	assert_int_equal(map_put_str(f, "alice", "roster", "a", "12345"), 0);       /* 6 */
	assert_int_equal(map_put_str(f, "alice", "roster", "b\xc3\xa9", "1234"), 0); /* 7 */
	assert_int_equal(map_put_str(f, "alice", "roster", "c", "1"), 0);           /* 2 */
	assert_int_equal(map_put_str(f, "alice", "other", "d", "123456789"), 0);
	assert_int_equal(map_put_str(f, "bob", "roster", "e", "123456789"), 0);
	assert_int_equal(f->drv->map_size(f->st, "localhost", "alice", "roster", &bytes), 3);
	assert_int_equal(bytes, 15);
	assert_int_equal(f->drv->map_list_max(f->st, "localhost", "alice", "roster", 12,
					      collect_entry, &l), 1);
	assert_string_equal(l.text, "a=12345;");
	l.text[0] = '\0';
	assert_int_equal(f->drv->map_list_max(f->st, "localhost", "alice", "roster", 13,
					      collect_entry, &l), 2);
	l.text[0] = '\0';
	assert_int_equal(f->drv->map_list_max(f->st, "localhost", "alice", "roster", 5,
					      collect_entry, &l), 0);
	assert_string_equal(l.text, "");
	assert_int_equal(f->drv->map_list_max(f->st, "localhost", "alice", "roster", 15,
					      collect_entry, &l), 3);
	/* The statement is left reusable after a stop. */
	l.text[0] = '\0';
	assert_int_equal(f->drv->map_list(f->st, "localhost", "alice", "roster", collect_entry, &l),
			 3);
}

static void test_map_isolated(void **state)
{
	struct fixture *f = *state;
	char v[64];
	struct buf b;
	/* The same store and key under different accounts and stores. */
	assert_int_equal(f->drv->map_put(f->st, "localhost", "alice", "roster", "k", "1", 1), 0);
	assert_int_equal(f->drv->map_put(f->st, "localhost", "bob", "roster", "k", "2", 1), 0);
	assert_int_equal(f->drv->map_put(f->st, "example.org", "alice", "roster", "k", "3", 1), 0);
	assert_int_equal(f->drv->map_put(f->st, "localhost", "alice", "private", "k", "4", 1), 0);
	assert_int_equal(map_get_str(f, f->st, "alice", "roster", "k", v, sizeof v), 0);
	assert_string_equal(v, "1");
	assert_int_equal(map_get_str(f, f->st, "bob", "roster", "k", v, sizeof v), 0);
	assert_string_equal(v, "2");
	assert_int_equal(map_get_str(f, f->st, "alice", "private", "k", v, sizeof v), 0);
	assert_string_equal(v, "4");
	buf_init(&b);
	assert_int_equal(f->drv->map_get(f->st, "example.org", "alice", "roster", "k", &b), 0);
	assert_int_equal(b.len, 1);
	assert_memory_equal(b.data, "3", 1);
	buf_free(&b);
	assert_int_equal(map_get_str(f, f->st, "carol", "roster", "k", v, sizeof v), 1);

	/* Deleting one store of one account touches nothing else. */
	assert_int_equal(f->drv->map_del(f->st, "localhost", "alice", "roster", NULL), 0);
	assert_int_equal(map_get_str(f, f->st, "bob", "roster", "k", v, sizeof v), 0);
	assert_int_equal(map_get_str(f, f->st, "alice", "private", "k", v, sizeof v), 0);
	assert_int_equal(f->drv->map_del(f->st, "localhost", "bob", "roster", "k"), 0);
	buf_init(&b);
	assert_int_equal(f->drv->map_get(f->st, "example.org", "alice", "roster", "k", &b), 0);
	buf_free(&b);
}

static void test_map_binary_and_empty(void **state)
{
	struct fixture *f = *state;
	static const char bin[] = { 'a', '\0', 'b', '\0', '\0', (char)0xff, 'c' };
	struct listing l = { "" };
	struct buf b;
	assert_int_equal(f->drv->map_put(f->st, "localhost", "alice", "s", "bin", bin, sizeof bin),
			 0);
	assert_int_equal(f->drv->map_put(f->st, "localhost", "alice", "s", "empty", "", 0), 0);
	/* A NULL pointer with length 0 is an empty value too. */
	assert_int_equal(f->drv->map_put(f->st, "localhost", "alice", "s", "null", NULL, 0), 0);

	buf_init(&b);
	assert_int_equal(f->drv->map_get(f->st, "localhost", "alice", "s", "bin", &b), 0);
	assert_int_equal(b.len, sizeof bin);
	assert_memory_equal(b.data, bin, sizeof bin);
	assert_int_equal(f->drv->map_get(f->st, "localhost", "alice", "s", "empty", &b), 0);
	assert_int_equal(b.len, 0);
	buf_puts(&b, "x");
	assert_int_equal(f->drv->map_get(f->st, "localhost", "alice", "s", "null", &b), 0);
	assert_int_equal(b.len, 0);
	buf_free(&b);

	assert_int_equal(f->drv->map_list(f->st, "localhost", "alice", "s", collect_entry, &l), 3);
	assert_string_equal(l.text, "bin=a\\00b\\00\\00\\ffc;empty=;null=;");
}

struct items {
	int n;
	long long id[8];
	long long stamp[8];
	size_t len[8];
	char value[8][32];
};

static void collect_item(void *arg, long long id, long long stamp, const void *value, size_t len)
{
	struct items *it = arg;
	assert_true(it->n < 8);
	assert_true(len <= sizeof it->value[0]);
	assert_non_null(value);
	it->id[it->n] = id;
	it->stamp[it->n] = stamp;
	it->len[it->n] = len;
	memcpy(it->value[it->n], value, len);
	it->n++;
}

static void push_str(struct fixture *f, const char *local, const char *store, const char *value,
		     long long *id)
{
	assert_int_equal(f->drv->list_push(f->st, "localhost", local, store, value, strlen(value),
					   id), 0);
}

static void test_list_push_fetch(void **state)
{
	struct fixture *f = *state;
	struct items it = { 0 };
	long long id[3];
	long long before = (long long)time(NULL);
	push_str(f, "alice", "offline", "one", &id[0]);
	push_str(f, "alice", "offline", "two", &id[1]);
	push_str(f, "alice", "offline", "three", &id[2]);
	assert_int_equal(f->drv->list_push(f->st, "localhost", "alice", "offline", "four", 4, NULL),
			 0);
	long long after = (long long)time(NULL);
	assert_true(id[0] < id[1]);
	assert_true(id[1] < id[2]);

	assert_int_equal(f->drv->list_fetch(f->st, "localhost", "alice", "offline", collect_item,
					    &it), 4);
	assert_int_equal(it.n, 4);
	const char *want[] = { "one", "two", "three", "four" };
	for (int i = 0; i < 4; i++) {
		if (i < 3)
			assert_int_equal(it.id[i], id[i]);
		else
			assert_true(it.id[i] > id[2]);
		assert_true(it.stamp[i] >= before && it.stamp[i] <= after);
		assert_int_equal(it.len[i], strlen(want[i]));
		assert_memory_equal(it.value[i], want[i], it.len[i]);
	}
}

/* list_page: the next max_items after an id, oldest first; the offline
 * backlog is sent a page at a time. */
static void test_list_page(void **state)
{
	struct fixture *f = *state;
	long long id[5];
	push_str(f, "alice", "offline", "a", &id[0]);
	push_str(f, "bob", "offline", "x", &id[1]);
	push_str(f, "alice", "offline", "b", &id[2]);
	push_str(f, "alice", "offline", "c", &id[3]);
	push_str(f, "alice", "offline", "d", &id[4]);

	struct items it = { 0 };
	assert_int_equal(f->drv->list_page(f->st, "localhost", "alice", "offline", 0, 2,
					   collect_item, &it), 2);
	assert_int_equal(it.id[0], id[0]);
	assert_int_equal(it.id[1], id[2]);
	struct items next = { 0 };
	assert_int_equal(f->drv->list_page(f->st, "localhost", "alice", "offline", id[2], 2,
					   collect_item, &next), 2);
	assert_int_equal(next.id[0], id[3]);
	assert_int_equal(next.id[1], id[4]);
	assert_memory_equal(next.value[1], "d", 1);
	struct items none = { 0 };
	assert_int_equal(f->drv->list_page(f->st, "localhost", "alice", "offline", id[4], 2,
					   collect_item, &none), 0);
}

static void test_list_trim(void **state)
{
	struct fixture *f = *state;
	struct items it = { 0 };
	long long id[4], next;
	push_str(f, "alice", "offline", "a", &id[0]);
	push_str(f, "alice", "offline", "b", &id[1]);
	push_str(f, "alice", "offline", "c", &id[2]);
	push_str(f, "bob", "offline", "x", &id[3]);

	assert_int_equal(f->drv->list_trim(f->st, "localhost", "alice", "offline", id[1]), 0);
	assert_int_equal(f->drv->list_fetch(f->st, "localhost", "alice", "offline", collect_item,
					    &it), 1);
	assert_int_equal(it.id[0], id[2]);
	assert_memory_equal(it.value[0], "c", 1);
	/* Below every id: nothing goes. Bob's item has a higher id than
	 * alice's, and stays when alice's queue is trimmed past it. */
	assert_int_equal(f->drv->list_trim(f->st, "localhost", "alice", "offline", 0), 0);
	assert_int_equal(f->drv->list_count(f->st, "localhost", "alice", "offline"), 1);
	assert_int_equal(f->drv->list_trim(f->st, "localhost", "alice", "offline", id[3] + 10), 0);
	assert_int_equal(f->drv->list_count(f->st, "localhost", "alice", "offline"), 0);
	assert_int_equal(f->drv->list_count(f->st, "localhost", "bob", "offline"), 1);
	/* Trimming an empty queue is not an error. */
	assert_int_equal(f->drv->list_trim(f->st, "localhost", "alice", "offline", id[3]), 0);

	/* Ids keep increasing after a queue was emptied. */
	assert_int_equal(f->drv->list_trim(f->st, "localhost", "bob", "offline", id[3]), 0);
	push_str(f, "alice", "offline", "d", &next);
	assert_true(next > id[3]);
}

static void test_list_count_isolated(void **state)
{
	struct fixture *f = *state;
	struct items it = { 0 };
	assert_int_equal(f->drv->list_count(f->st, "localhost", "alice", "offline"), 0);
	push_str(f, "alice", "offline", "1", NULL);
	push_str(f, "alice", "offline", "2", NULL);
	push_str(f, "alice", "archive", "3", NULL);
	push_str(f, "bob", "offline", "4", NULL);
	assert_int_equal(f->drv->list_push(f->st, "example.org", "alice", "offline", "5", 1, NULL),
			 0);
	assert_int_equal(f->drv->list_count(f->st, "localhost", "alice", "offline"), 2);
	assert_int_equal(f->drv->list_count(f->st, "localhost", "alice", "archive"), 1);
	assert_int_equal(f->drv->list_count(f->st, "localhost", "bob", "offline"), 1);
	assert_int_equal(f->drv->list_count(f->st, "example.org", "alice", "offline"), 1);
	assert_int_equal(f->drv->list_count(f->st, "localhost", "carol", "offline"), 0);
	assert_int_equal(f->drv->list_fetch(f->st, "localhost", "alice", "archive", collect_item,
					    &it), 1);
	assert_memory_equal(it.value[0], "3", 1);
	it.n = 0;
	assert_int_equal(f->drv->list_fetch(f->st, "localhost", "carol", "offline", collect_item,
					    &it), 0);
	assert_int_equal(it.n, 0);
}

static void test_list_size(void **state)
{
	struct fixture *f = *state;
	long long bytes = -1;
	assert_int_equal(f->drv->list_size(f->st, "localhost", "alice", "offline", &bytes), 0);
	assert_int_equal(bytes, 0);
	push_str(f, "alice", "offline", "12345", NULL);
	push_str(f, "alice", "offline", "", NULL);
	push_str(f, "alice", "offline", "123", NULL);
	push_str(f, "alice", "archive", "123456789", NULL);
	push_str(f, "bob", "offline", "123456789", NULL);
	assert_int_equal(f->drv->list_size(f->st, "localhost", "alice", "offline", &bytes), 3);
	assert_int_equal(bytes, 8);
}

static void test_list_binary_and_empty(void **state)
{
	struct fixture *f = *state;
	static const char bin[] = { '\0', 'x', '\0', (char)0x80 };
	struct items it = { 0 };
	assert_int_equal(f->drv->list_push(f->st, "localhost", "alice", "q", bin, sizeof bin, NULL),
			 0);
	assert_int_equal(f->drv->list_push(f->st, "localhost", "alice", "q", NULL, 0, NULL), 0);
	assert_int_equal(f->drv->list_fetch(f->st, "localhost", "alice", "q", collect_item, &it), 2);
	assert_int_equal(it.len[0], sizeof bin);
	assert_memory_equal(it.value[0], bin, sizeof bin);
	assert_int_equal(it.len[1], 0);
}

static void test_user_del_removes_stores(void **state)
{
	struct fixture *f = *state;
	struct user_credentials c, out;
	struct listing l = { "" };
	char v[64];
	fake_credentials(&c, "x");
	assert_int_equal(f->drv->user_put(f->st, "localhost", "alice", &c), 0);
	assert_int_equal(f->drv->user_put(f->st, "localhost", "bob", &c), 0);
	assert_int_equal(map_put_str(f, "alice", "roster", "bob@localhost", "b"), 0);
	assert_int_equal(map_put_str(f, "alice", "vcard", "", "v"), 0);
	assert_int_equal(map_put_str(f, "bob", "roster", "alice@localhost", "a"), 0);
	push_str(f, "alice", "offline", "m1", NULL);
	push_str(f, "alice", "offline", "m2", NULL);
	push_str(f, "bob", "offline", "m3", NULL);
	/* The same localpart on another domain is another account. */
	assert_int_equal(f->drv->map_put(f->st, "example.org", "alice", "roster", "k", "o", 1), 0);

	assert_int_equal(f->drv->user_del(f->st, "localhost", "alice"), 0);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "alice", &out), 1);
	assert_int_equal(f->drv->map_list(f->st, "localhost", "alice", "roster", collect_entry, &l),
			 0);
	assert_int_equal(f->drv->map_list(f->st, "localhost", "alice", "vcard", collect_entry, &l),
			 0);
	assert_string_equal(l.text, "");
	assert_int_equal(f->drv->list_count(f->st, "localhost", "alice", "offline"), 0);

	assert_int_equal(f->drv->user_get(f->st, "localhost", "bob", &out), 0);
	assert_int_equal(map_get_str(f, f->st, "bob", "roster", "alice@localhost", v, sizeof v), 0);
	assert_int_equal(f->drv->list_count(f->st, "localhost", "bob", "offline"), 1);
	assert_int_equal(f->drv->map_list(f->st, "example.org", "alice", "roster", collect_entry,
					  &l), 1);

	/* Not found still clears stores left without an account. */
	assert_int_equal(map_put_str(f, "ghost", "roster", "k", "v"), 0);
	assert_int_equal(f->drv->user_del(f->st, "localhost", "ghost"), 1);
	assert_int_equal(map_get_str(f, f->st, "ghost", "roster", "k", v, sizeof v), 1);
	/* The handle is usable after the transaction. */
	assert_int_equal(f->drv->user_del(f->st, "localhost", "bob"), 0);
	assert_int_equal(f->drv->list_count(f->st, "localhost", "bob", "offline"), 0);
}

/* Inside a batch's transaction (the storage thread), user_del is a
 * savepoint of it: committed or undone with the batch, and the writes
 * around it stay. */
static void test_user_del_inside_a_batch(void **state)
{
	struct fixture *f = *state;
	struct user_credentials c, out;
	char v[64];
	fake_credentials(&c, "x");
	assert_int_equal(f->drv->user_put(f->st, "localhost", "alice", &c), 0);
	assert_int_equal(f->drv->user_put(f->st, "localhost", "bob", &c), 0);
	assert_int_equal(map_put_str(f, "alice", "roster", "bob@localhost", "b"), 0);

	assert_int_equal(f->drv->begin(f->st), 0);
	assert_int_equal(map_put_str(f, "bob", "vcard", "", "before"), 0);
	assert_int_equal(f->drv->user_del(f->st, "localhost", "alice"), 0);
	assert_int_equal(f->drv->user_del(f->st, "localhost", "nobody"), 1);
	assert_int_equal(map_put_str(f, "bob", "private", "k", "after"), 0);
	assert_int_equal(f->drv->end(f->st, 0), 0); /* undone, all of it */
	assert_int_equal(f->drv->user_get(f->st, "localhost", "alice", &out), 0);
	assert_int_equal(map_get_str(f, f->st, "alice", "roster", "bob@localhost", v, sizeof v), 0);
	assert_int_equal(map_get_str(f, f->st, "bob", "vcard", "", v, sizeof v), 1);

	assert_int_equal(f->drv->begin(f->st), 0);
	assert_int_equal(map_put_str(f, "bob", "vcard", "", "before"), 0);
	assert_int_equal(f->drv->user_del(f->st, "localhost", "alice"), 0);
	assert_int_equal(map_put_str(f, "bob", "private", "k", "after"), 0);
	assert_int_equal(f->drv->end(f->st, 1), 0);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "alice", &out), 1);
	assert_int_equal(map_get_str(f, f->st, "alice", "roster", "bob@localhost", v, sizeof v), 1);
	assert_int_equal(map_get_str(f, f->st, "bob", "vcard", "", v, sizeof v), 0);
	assert_string_equal(v, "before");
	assert_int_equal(map_get_str(f, f->st, "bob", "private", "k", v, sizeof v), 0);
	assert_string_equal(v, "after");
}

/* Two event loops each hold a handle: a write through one is seen by the
 * next read through the other. */
static void test_two_handles_stores(void **state)
{
	struct fixture *f = *state;
	struct items it = { 0 };
	char v[64], err[512];
	long long id;
	struct storage *other = f->drv->open(f->data_dir, err, sizeof err);
	if (!other)
		fail_msg("second open: %s", err);

	/* Read first, so that both handles have statements that ran. */
	assert_int_equal(map_get_str(f, other, "alice", "roster", "bob@localhost", v, sizeof v), 1);
	assert_int_equal(f->drv->list_count(other, "localhost", "alice", "offline"), 0);

	assert_int_equal(map_put_str(f, "alice", "roster", "bob@localhost", "one"), 0);
	assert_int_equal(map_get_str(f, other, "alice", "roster", "bob@localhost", v, sizeof v), 0);
	assert_string_equal(v, "one");
	assert_int_equal(f->drv->map_put(other, "localhost", "alice", "roster", "bob@localhost",
					 "two", 3), 0);
	assert_int_equal(map_get_str(f, f->st, "alice", "roster", "bob@localhost", v, sizeof v), 0);
	assert_string_equal(v, "two");
	assert_int_equal(f->drv->map_del(other, "localhost", "alice", "roster", NULL), 0);
	assert_int_equal(map_get_str(f, f->st, "alice", "roster", "bob@localhost", v, sizeof v), 1);

	push_str(f, "alice", "offline", "m1", &id);
	assert_int_equal(f->drv->list_count(other, "localhost", "alice", "offline"), 1);
	assert_int_equal(f->drv->list_fetch(other, "localhost", "alice", "offline", collect_item,
					    &it), 1);
	assert_int_equal(it.id[0], id);
	assert_int_equal(f->drv->list_trim(other, "localhost", "alice", "offline", id), 0);
	assert_int_equal(f->drv->list_count(f->st, "localhost", "alice", "offline"), 0);
	/* Ids stay increasing across handles. */
	long long id2;
	assert_int_equal(f->drv->list_push(other, "localhost", "alice", "offline", "m2", 2, &id2),
			 0);
	assert_true(id2 > id);
	assert_int_equal(f->drv->list_count(f->st, "localhost", "alice", "offline"), 1);
	f->drv->close(other);
}

/* sqlite only: db is at the newest schema (9), FTS5's merges included
 * (migration 7 -> 8; decision 0008, "The text and the queue"), and
 * where the full-text index reaches (8 -> 9, "Words on demand"). */
static void assert_schema_current(sqlite3 *db)
{
	sqlite3_stmt *stmt;
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &stmt,
					    NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(stmt, 0), 9);
	assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
	sqlite3_finalize(stmt);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM archive_text_upto"
					    " WHERE owner = 0", -1, &stmt, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(stmt, 0), 1);
	sqlite3_finalize(stmt);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT group_concat(k || '=' || v, ' ') FROM"
					    " (SELECT k, v FROM archive_text_config WHERE k"
					    " IN ('automerge', 'crisismerge') ORDER BY k)",
					    -1, &stmt, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "automerge=8 crisismerge=64");
	sqlite3_finalize(stmt);
}

/* sqlite only: the schema version is recorded, and a file from a newer
 * natter is refused rather than written with the old schema. */
static void test_sqlite_schema_version(void **state)
{
	struct fixture *f = *state;
	char path[256], err[512] = "";
	sqlite3 *db;
	f->drv->close(f->st);
	f->st = NULL;
	snprintf(path, sizeof path, "%s/natter.db", f->data_dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_schema_current(db);
	assert_int_equal(sqlite3_exec(db, "UPDATE schema_version SET version = 99", NULL, NULL,
				      NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_null(f->drv->open(f->data_dir, err, sizeof err));
	assert_non_null(strstr(err, "schema version 99 is newer"));
}

/* An archive page as archive_query hands it over. */
struct page {
	long long ids[64];
	int outgoing[64];
	char with[64][64];
	char value[64][16];
	int n;
};

static void page_add(void *arg, long long id, const void *value, size_t len, int outgoing,
		     const char *with)
{
	struct page *p = arg;
	assert_true(p->n < 64);
	p->ids[p->n] = id;
	p->outgoing[p->n] = outgoing;
	snprintf(p->with[p->n], sizeof p->with[p->n], "%s", with);
	snprintf(p->value[p->n], sizeof p->value[p->n], "%.*s", (int)len, (const char *)value);
	p->n++;
}

static int values_of(struct fixture *f, const char *local, const struct archive_query *q,
		     struct page *v)
{
	bool complete;
	memset(v, 0, sizeof *v);
	return f->drv->archive_query(f->st, "localhost", local, q, page_add, v, &complete, NULL);
}

/* sqlite only: an archive of schema 4 (owners and parties as text) is
 * migrated to 5 (archive_jid numbers) and 6 (blocks) on open: every
 * entry keeps its owner, party, value and text, an entry read through ref
 * gets its own copy of both, and a domain alone as the party survives
 * the split. */
static void test_sqlite_migrate_archive_from_v4(void **state)
{
	struct fixture *f = *state;
	char path[256], err[512];
	sqlite3 *db;
	f->drv->close(f->st);
	f->st = NULL;
	snprintf(path, sizeof path, "%s/natter.db", f->data_dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	/* The archive as schema 4 made it, with the full-text table of
	 * schemas 3 to 5. */
	assert_int_equal(sqlite3_exec(db,
		"DROP TABLE archive_block; DROP TABLE archive_jid; DROP TABLE archive_text;"
		"DROP TABLE archive_log; DROP TABLE archive_text_upto;"
		"CREATE VIRTUAL TABLE archive_text USING fts5(body,"
		" tokenize = 'unicode61 remove_diacritics 2');"
		"CREATE TABLE archive (id INTEGER PRIMARY KEY, domain TEXT NOT NULL,"
		" local TEXT NOT NULL, with_bare TEXT NOT NULL, with_res TEXT NOT NULL,"
		" outgoing INTEGER NOT NULL, value BLOB NOT NULL, ref INTEGER);"
		"CREATE INDEX archive_owner ON archive (domain, local, id, with_bare);"
		"CREATE INDEX archive_ref ON archive (ref) WHERE ref IS NOT NULL;"
		"INSERT INTO archive VALUES (1, 'localhost', 'alice', 'bob@localhost', '', 1, 'v1', NULL);"
		"INSERT INTO archive VALUES (2, 'localhost', 'bob', 'alice@localhost', 'r', 0, x'', 1);"
		"INSERT INTO archive VALUES (3, 'localhost', 'alice', 'example.org', '', 0, 'v3', NULL);"
		"INSERT INTO archive_text (rowid, body) VALUES (1, 'hello one'), (3, 'hello three');"
		"UPDATE schema_version SET version = 4;", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
	f->st = f->drv->open(f->data_dir, err, sizeof err);
	if (!f->st)
		fail_msg("open v4: %s", err);
	struct page v;
	struct archive_query q = { .max = 8, .max_bytes = 1 << 20 };
	assert_int_equal(values_of(f, "alice", &q, &v), 2);
	assert_true(v.ids[0] == 1 && v.ids[1] == 3);
	assert_string_equal(v.with[0], "bob@localhost");
	assert_string_equal(v.with[1], "example.org");
	assert_string_equal(v.value[1], "v3");
	assert_int_equal(values_of(f, "bob", &q, &v), 1);
	assert_string_equal(v.with[0], "alice@localhost/r");
	assert_string_equal(v.value[0], "v1");
	q.with = "example.org";
	assert_int_equal(values_of(f, "alice", &q, &v), 1);
	assert_true(v.ids[0] == 3);
	q = (struct archive_query){ .max = 8, .max_bytes = 1 << 20, .text = "one" };
	assert_int_equal(values_of(f, "bob", &q, &v), 1);
	/* alice's entries go; bob's keeps the value and text it read. */
	assert_int_equal(f->drv->archive_delete(f->st, "localhost", "alice", LLONG_MAX), 2);
	assert_int_equal(values_of(f, "bob", &q, &v), 1);
	assert_string_equal(v.value[0], "v1");
	/* New entries go on with the numbers the migration gave. */
	struct archive_entry e = { .id = 4, .with = "example.org", .with_resource = "",
				   .body = "four", .value = "v4", .len = 2 };
	assert_int_equal(f->drv->archive_put(f->st, "localhost", "bob", &e), 0);
	q = (struct archive_query){ .max = 8, .max_bytes = 1 << 20, .with = "example.org" };
	assert_int_equal(values_of(f, "bob", &q, &v), 1);
	assert_string_equal(v.value[0], "v4");
}

/* sqlite only: a file written by the version-1 driver (accounts only) is
 * migrated on open, keeping its accounts. The file is made the way that
 * driver made it: created 0600, WAL, then migration 0 -> 1 in a
 * transaction. No connection is open in this process meanwhile. */
static void test_sqlite_migrate_from_v1(void **state)
{
	struct fixture *f = *state;
	char path[256], err[512];
	struct user_credentials c, out;
	struct items it = { 0 };
	sqlite3 *db;
	sqlite3_stmt *stmt;
	char v[64];

	f->drv->close(f->st);
	f->st = NULL;
	store_files_remove(f->data_dir);
	snprintf(path, sizeof path, "%s/natter.db", f->data_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
		"PRAGMA journal_mode = WAL;"
		"CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);"
		"BEGIN IMMEDIATE;"
		"CREATE TABLE users ("
		" domain TEXT NOT NULL,"
		" local TEXT NOT NULL,"
		" sha1_salt TEXT NOT NULL,"
		" sha1_iter INTEGER NOT NULL,"
		" sha1_stored TEXT NOT NULL,"
		" sha1_server TEXT NOT NULL,"
		" sha256_salt TEXT NOT NULL,"
		" sha256_iter INTEGER NOT NULL,"
		" sha256_stored TEXT NOT NULL,"
		" sha256_server TEXT NOT NULL,"
		" created INTEGER NOT NULL,"
		" PRIMARY KEY (domain, local)"
		") WITHOUT ROWID;"
		"DELETE FROM schema_version;"
		"INSERT INTO schema_version (version) VALUES (1);"
		"COMMIT;", NULL, NULL, NULL), SQLITE_OK);
	fake_credentials(&c, "v1");
	assert_int_equal(sqlite3_prepare_v2(db,
		"INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)", -1,
		&stmt, NULL), SQLITE_OK);
	sqlite3_bind_text(stmt, 1, "localhost", -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, "alice", -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 3, c.sha1.salt, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 4, c.sha1.iterations);
	sqlite3_bind_text(stmt, 5, c.sha1.stored_key, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 6, c.sha1.server_key, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 7, c.sha256.salt, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 8, c.sha256.iterations);
	sqlite3_bind_text(stmt, 9, c.sha256.stored_key, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 10, c.sha256.server_key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 11, 1700000000);
	assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
	sqlite3_finalize(stmt);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);

	f->st = f->drv->open(f->data_dir, err, sizeof err);
	if (!f->st)
		fail_msg("open v1: %s", err);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "alice", &out), 0);
	assert_same_credentials(&c, &out);
	assert_int_equal(map_put_str(f, "alice", "roster", "bob@localhost", "b"), 0);
	assert_int_equal(map_get_str(f, f->st, "alice", "roster", "bob@localhost", v, sizeof v), 0);
	push_str(f, "alice", "offline", "m", NULL);
	assert_int_equal(f->drv->list_fetch(f->st, "localhost", "alice", "offline", collect_item,
					    &it), 1);
	f->drv->close(f->st);
	f->st = NULL;

	/* Version 2 recorded, once; a second open migrates nothing. */
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_schema_current(db);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
	f->st = f->drv->open(f->data_dir, err, sizeof err);
	if (!f->st)
		fail_msg("reopen v2: %s", err);
	assert_int_equal(f->drv->user_get(f->st, "localhost", "alice", &out), 0);
	assert_int_equal(map_get_str(f, f->st, "alice", "roster", "bob@localhost", v, sizeof v), 0);
	assert_string_equal(v, "b");
	assert_int_equal(f->drv->list_count(f->st, "localhost", "alice", "offline"), 1);
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

/* The SCRAM-SHA-256 secret gsasl itself derives for password (4096
 * iterations, a fixed salt); returns gsasl's code. */
static int gsasl_credentials(const char *password, struct user_credentials *c)
{
	static const char salt[] = "0123456789abcdef";
	char salted[GSASL_HASH_MAX_SIZE], client_key[GSASL_HASH_MAX_SIZE];
	char server_key[GSASL_HASH_MAX_SIZE], stored_key[GSASL_HASH_MAX_SIZE];
	int rc = gsasl_scram_secrets_from_password(GSASL_HASH_SHA256, password, 4096, salt, 16,
						   salted, client_key, server_key, stored_key);
	memset(c, 0, sizeof *c);
	EVP_EncodeBlock((unsigned char *)c->sha256.salt, (const unsigned char *)salt, 16);
	c->sha256.iterations = 4096;
	for (size_t k = 0; k < GSASL_HASH_SHA256_SIZE; k++) {
		snprintf(c->sha256.stored_key + 2 * k, 3, "%02x", (unsigned char)stored_key[k]);
		snprintf(c->sha256.server_key + 2 * k, 3, "%02x", (unsigned char)server_key[k]);
	}
	return rc;
}

/* natterd derives SaltedPassword with OpenSSL's PBKDF2 (its cost does not
 * grow with the password's length); what it computes must be what gsasl
 * computes, and what it refuses what gsasl refuses, for every kind of
 * password SASLprep treats differently. */
static void test_credentials_as_gsasl_derives(void **state)
{
	(void)state;
	static char longest[STORAGE_PASSWORD_MAX + 1], too_long[STORAGE_PASSWORD_MAX + 2];
	memset(longest, 'p', sizeof longest - 1);
	memset(too_long, 'p', sizeof too_long - 1);
	const struct {
		const char *password;
		bool refused;
	} cases[] = {
		{ "pencil", false },
		{ "\xe2\x85\xa8", false },	   /* U+2168 ROMAN NUMERAL NINE: NFKC makes "IX" */
		{ "soft\xc2\xadhyphen", false }, /* U+00AD: mapped to nothing */
		{ "longer than the 64 bytes of an HMAC block, so HMAC hashes it to make its key",
		  false },
		{ longest, false },
		{ "\xc8\xa1", true },   /* U+0221, unassigned in Unicode 3.2 */
		{ "bell\x07", true }, /* a control character */
	};
	struct user_credentials pencil, gsasl, mine;
	assert_int_equal(storage_credentials_from_password("pencil", 4096, &pencil), 0);
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		const char *pw = cases[i].password;
		int rc = gsasl_credentials(pw, &gsasl);
		if (cases[i].refused) {
			assert_int_equal(rc, GSASL_SASLPREP_ERROR);
			assert_int_equal(storage_credentials_from_password(pw, 4096, &mine), -1);
			assert_int_equal(storage_credentials_check(&pencil, pw), 0);
			continue;
		}
		assert_int_equal(rc, GSASL_OK);
		assert_int_equal(storage_credentials_check(&gsasl, pw), 1);
		assert_int_equal(storage_credentials_from_password(pw, 4096, &mine), 0);
		assert_int_equal(storage_credentials_check(&mine, pw), 1);
	}
	/* Longer than natterd takes: refused before SASLprep, even where a
	 * secret made elsewhere (gsasl takes any length) would match. */
	assert_int_equal(gsasl_credentials(too_long, &gsasl), GSASL_OK);
	assert_int_equal(storage_credentials_check(&gsasl, too_long), 0);
	assert_int_equal(storage_credentials_from_password(too_long, 4096, &mine), -1);
}

/* --- archives --- */

/* alice's archive: ids 100..109, with bob (even) and carol/phone (odd);
 * bodies "hello N" and, for 105, "the quick brown fox". */
static void archive_fill(struct fixture *f)
{
	for (int i = 0; i < 10; i++) {
		char body[32];
		snprintf(body, sizeof body, i == 5 ? "the quick brown fox" : "hello %d", i);
		struct archive_entry e = { .id = 100 + i,
					   .with = i % 2 ? "carol@localhost" : "bob@localhost",
					   .with_resource = i % 2 ? "phone" : "",
					   .outgoing = i % 3 == 0, .body = body,
					   .value = body, .len = strlen(body) };
		assert_int_equal(f->drv->archive_put(f->st, "localhost", "alice", &e), 0);
	}
	struct archive_entry other = { .id = 200, .with = "alice@localhost", .with_resource = "",
				       .body = "hello", .value = "x", .len = 1 };
	assert_int_equal(f->drv->archive_put(f->st, "localhost", "bob", &other), 0);
}

static int archive_run(struct fixture *f, const struct archive_query *q, struct page *p,
		       bool *complete, long long *count)
{
	memset(p, 0, sizeof *p);
	return f->drv->archive_query(f->st, "localhost", "alice", q, page_add, p, complete, count);
}

static void test_archive_pages_both_ways(void **state)
{
	struct fixture *f = *state;
	struct page p;
	bool complete;
	long long count;
	archive_fill(f);
	struct archive_query q = { .max = 4, .max_bytes = 1 << 20 };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 4);
	assert_int_equal(p.ids[0], 100);
	assert_int_equal(p.ids[3], 103);
	assert_false(complete);
	assert_int_equal(count, 10);
	q.page_after = 107;
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 2);
	assert_int_equal(p.ids[0], 108);
	assert_true(complete);
	assert_int_equal(count, 10); /* the page does not change the count */
	/* From the end: the newest, still oldest first in the page. */
	q.page_after = 0;
	q.from_end = true;
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), 4);
	assert_int_equal(p.ids[0], 106);
	assert_int_equal(p.ids[3], 109);
	assert_false(complete);
	q.page_before = 102;
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), 2);
	assert_int_equal(p.ids[0], 100);
	assert_int_equal(p.ids[1], 101);
	assert_true(complete);
}

static void archive_put_one(struct fixture *f, const char *local, long long id, const char *body)
{
	struct archive_entry e = { .id = id, .with = "bob@localhost", .with_resource = "",
				   .body = body, .value = body, .len = strlen(body) };
	assert_int_equal(f->drv->archive_put(f->st, "localhost", local, &e), 0);
}

/* sqlite: entries written in a transaction are one block per owner.
 * A query inside the transaction sees them, undoing it forgets them, and
 * the pages, counts and filters read several entries per block as they
 * read one. */
static void test_archive_blocks_in_a_transaction(void **state)
{
	struct fixture *f = *state;
	struct page p;
	bool complete;
	long long count;
	assert_int_equal(f->drv->begin(f->st), 0);
	archive_put_one(f, "alice", 50, "undone");
	struct archive_query q = { .max = 8, .max_bytes = 1 << 20 };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 1);
	assert_int_equal(f->drv->end(f->st, 0), 0);
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 0);
	q.text = "undone";
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 0);

	assert_int_equal(f->drv->begin(f->st), 0);
	archive_fill(f);
	assert_int_equal(f->drv->end(f->st, 1), 0);
	q = (struct archive_query){ .max = 4, .max_bytes = 1 << 20, .from_end = true };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 4);
	assert_true(p.ids[0] == 106 && p.ids[3] == 109 && !complete && count == 10);
	q = (struct archive_query){ .max = 8, .max_bytes = 1 << 20, .with = "carol@localhost",
				    .after_id = 101, .before_id = 109 };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 3);
	assert_true(p.ids[0] == 103 && p.ids[2] == 107 && complete && count == 3);
	assert_string_equal(p.with[0], "carol@localhost/phone");
	q = (struct archive_query){ .max = 8, .max_bytes = 1 << 20, .text = "fox" };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 1);
	assert_int_equal(p.ids[0], 105);
	assert_int_equal(f->drv->archive_has(f->st, "localhost", "alice", 104), 1);
	assert_int_equal(f->drv->archive_has(f->st, "localhost", "alice", 200), 0);
}

/* sqlite: an entry that reaches the store after a later one (ids are
 * taken on the loops) is merged into the owner's blocks, so the blocks
 * never overlap and every page is in id order; a transaction of more
 * entries than a block holds makes several. */
static void test_archive_blocks_merge_late_entries(void **state)
{
	struct fixture *f = *state;
	struct page p;
	bool complete;
	long long count;
	assert_int_equal(f->drv->begin(f->st), 0);
	archive_put_one(f, "alice", 10, "ten");
	archive_put_one(f, "alice", 30, "thirty");
	assert_int_equal(f->drv->end(f->st, 1), 0);
	assert_int_equal(f->drv->begin(f->st), 0);
	archive_put_one(f, "alice", 40, "forty");
	archive_put_one(f, "alice", 20, "twenty");
	assert_int_equal(f->drv->end(f->st, 1), 0);
	struct archive_query q = { .max = 2, .max_bytes = 1 << 20, .from_end = true };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 2);
	assert_true(p.ids[0] == 30 && p.ids[1] == 40 && count == 4);
	q.page_before = 30;
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 2);
	assert_true(p.ids[0] == 10 && p.ids[1] == 20 && complete);
	assert_string_equal(p.value[1], "twenty");
	q = (struct archive_query){ .max = 8, .max_bytes = 1 << 20, .text = "twenty" };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 1);

	assert_int_equal(f->drv->begin(f->st), 0);
	for (int i = 0; i < 600; i++)
		archive_put_one(f, "carol", 1000 + i, i == 599 ? "last" : "many");
	assert_int_equal(f->drv->end(f->st, 1), 0);
	q = (struct archive_query){ .max = 3, .max_bytes = 1 << 20, .after_id = 1254 };
	memset(&p, 0, sizeof p);
	assert_int_equal(f->drv->archive_query(f->st, "localhost", "carol", &q, page_add, &p,
					       &complete, &count), 3);
	assert_true(p.ids[0] == 1255 && p.ids[2] == 1257 && count == 345);
	q = (struct archive_query){ .max = 3, .max_bytes = 1 << 20, .text = "last" };
	memset(&p, 0, sizeof p);
	assert_int_equal(f->drv->archive_query(f->st, "localhost", "carol", &q, page_add, &p,
					       &complete, &count), 1);
	assert_int_equal(p.ids[0], 1599);

	/* Many owners (the handle's table of last ids grows), then a late
	 * entry of each: every archive stays in order. */
	for (int round = 0; round < 2; round++) {
		assert_int_equal(f->drv->begin(f->st), 0);
		for (int i = 0; i < 500; i++) {
			char local[16];
			snprintf(local, sizeof local, "u%d", i);
			archive_put_one(f, local, 5000 + 2 * i + (round ? 0 : 1000), "x");
		}
		assert_int_equal(f->drv->end(f->st, 1), 0);
	}
	for (int i = 0; i < 500; i += 99) {
		char local[16];
		snprintf(local, sizeof local, "u%d", i);
		q = (struct archive_query){ .max = 3, .max_bytes = 1 << 20 };
		memset(&p, 0, sizeof p);
		assert_int_equal(f->drv->archive_query(f->st, "localhost", local, &q, page_add, &p,
						       &complete, &count), 2);
		assert_true(p.ids[0] == 5000 + 2 * i && p.ids[1] == 6000 + 2 * i && count == 2);
	}
}

/* sqlite: expiry cuts a block in two: the entries before the bound go,
 * with their text, and the rest stay, found by id and by word. A user
 * deleted inside a batch takes only their own archive, not others'
 * entries of the same batch. */
static void test_archive_blocks_expire_and_user_del(void **state)
{
	struct fixture *f = *state;
	struct page p;
	bool complete;
	long long count;
	struct user_credentials c;
	fake_credentials(&c, "x");
	assert_int_equal(f->drv->user_put(f->st, "localhost", "dave", &c), 0);
	assert_int_equal(f->drv->begin(f->st), 0);
	archive_put_one(f, "alice", 10, "apple");
	archive_put_one(f, "alice", 20, "banana");
	archive_put_one(f, "alice", 30, "cherry");
	assert_int_equal(f->drv->end(f->st, 1), 0);
	assert_int_equal(f->drv->archive_delete(f->st, "localhost", "alice", 25), 2);
	struct archive_query q = { .max = 8, .max_bytes = 1 << 20 };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 1);
	assert_true(p.ids[0] == 30 && count == 1);
	q.text = "banana";
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 0);
	q.text = "cherry";
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 1);
	assert_int_equal(f->drv->archive_has(f->st, "localhost", "alice", 20), 0);
	assert_int_equal(f->drv->archive_has(f->st, "localhost", "alice", 30), 1);

	assert_int_equal(f->drv->begin(f->st), 0);
	archive_put_one(f, "alice", 40, "date");
	archive_put_one(f, "dave", 41, "elder");
	assert_int_equal(f->drv->user_del(f->st, "localhost", "dave"), 0);
	archive_put_one(f, "alice", 42, "fig");
	assert_int_equal(f->drv->end(f->st, 1), 0);
	q = (struct archive_query){ .max = 8, .max_bytes = 1 << 20 };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 3);
	assert_true(p.ids[1] == 40 && p.ids[2] == 42);
	memset(&p, 0, sizeof p);
	assert_int_equal(f->drv->archive_query(f->st, "localhost", "dave", &q, page_add, &p,
					       &complete, &count), 0);
	/* Everything before 2100, every archive: the text goes too. */
	assert_int_equal(f->drv->archive_delete(f->st, NULL, NULL, LLONG_MAX), 3);
	q.text = "fig";
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 0);
}

/* The RSM count is exact up to ARCHIVE_COUNT_MAX and left out (-1)
 * beyond; the page itself does not depend on it. A query of the same
 * shape again (the handle's compiled statements) gives the same. */
static void test_archive_count_is_bounded(void **state)
{
	struct fixture *f = *state;
	struct page p;
	bool complete;
	long long count;
	assert_int_equal(f->drv->begin(f->st), 0);
	for (int i = 0; i <= ARCHIVE_COUNT_MAX; i++) {
		struct archive_entry e = { .id = 1000 + i, .with = "bob@localhost",
					   .with_resource = "", .body = "hi", .value = "x", .len = 1 };
		assert_int_equal(f->drv->archive_put(f->st, "localhost", "alice", &e), 0);
	}
	assert_int_equal(f->drv->end(f->st, 1), 0);
	struct archive_query q = { .max = 3, .max_bytes = 1 << 20, .from_end = true };
	for (int round = 0; round < 2; round++) {
		assert_int_equal(archive_run(f, &q, &p, &complete, &count), 3);
		assert_int_equal(count, -1);
		assert_int_equal(p.ids[2], 1000 + ARCHIVE_COUNT_MAX);
		assert_false(complete);
	}
	/* One fewer match: counted. */
	q.after_id = 1000;
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 3);
	assert_int_equal(count, ARCHIVE_COUNT_MAX);
}

static void test_archive_filters(void **state)
{
	struct fixture *f = *state;
	struct page p;
	bool complete;
	long long count;
	archive_fill(f);
	struct archive_query q = { .max = 50, .max_bytes = 1 << 20, .with = "carol@localhost" };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 5);
	assert_string_equal(p.with[0], "carol@localhost/phone");
	q.with_resource = "laptop";
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 0);
	assert_int_equal(count, 0);
	q = (struct archive_query){ .max = 50, .max_bytes = 1 << 20, .after_id = 102,
				    .before_id = 106 };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 3);
	assert_int_equal(p.ids[0], 103);
	long long ids[] = { 101, 104, 200, 999 };
	q = (struct archive_query){ .max = 50, .max_bytes = 1 << 20, .ids = ids, .n_ids = 4 };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 2); /* 200 is bob's */
	/* Full text: every word must match; FTS5 syntax is only words. */
	q = (struct archive_query){ .max = 50, .max_bytes = 1 << 20, .text = "quick fox" };
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 1);
	assert_int_equal(p.ids[0], 105);
	q.text = "quick cat";
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 0);
	static const char *const hostile[] = { "\"", "fox*", "NEAR(quick fox)", "quick OR cat",
					       "-fox", "body:fox", "^fox", "(", "  " };
	for (size_t i = 0; i < sizeof hostile / sizeof *hostile; i++) {
		q.text = hostile[i];
		assert_true(archive_run(f, &q, &p, &complete, &count) >= 0);
	}
	/* Bytes bound the page, but one item always goes. */
	q = (struct archive_query){ .max = 50, .max_bytes = 1 };
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), 1);
	assert_false(complete);
}

/* The value a page's single entry had, into out. */
static void value_of(void *arg, long long id, const void *value, size_t len, int outgoing,
		     const char *with)
{
	(void)id;
	(void)outgoing;
	(void)with;
	snprintf(arg, 64, "%.*s", (int)len, (const char *)value);
}

static int bob_query(struct fixture *f, const char *text, char out[64])
{
	struct archive_query q = { .max = 5, .max_bytes = 1 << 20, .text = text };
	bool complete;
	out[0] = '\0';
	return f->drv->archive_query(f->st, "localhost", "bob", &q, value_of, out, &complete,
				     NULL);
}

/* A message between two local accounts is written once: the recipient's
 * entry refers to the sender's, reads its value and matches its text,
 * and keeps both when the sender's entry goes. */
static void test_archive_ref_shares_one_message(void **state)
{
	struct fixture *f = *state;
	char v[64];
	struct archive_entry sent = { .id = 500, .with = "bob@localhost", .with_resource = "",
				      .outgoing = 1, .body = "meet at noon",
				      .value = "<m>noon</m>", .len = 11 };
	struct archive_entry got = { .id = 501, .with = "alice@localhost", .with_resource = "pc",
				     .ref = 500 };
	assert_int_equal(f->drv->archive_put(f->st, "localhost", "alice", &sent), 0);
	assert_int_equal(f->drv->archive_put(f->st, "localhost", "bob", &got), 0);
	assert_int_equal(bob_query(f, NULL, v), 1);
	assert_string_equal(v, "<m>noon</m>");
	assert_int_equal(bob_query(f, "noon", v), 1);
	assert_int_equal(bob_query(f, "midnight", v), 0);
	/* A reference to an entry that is not stored is refused. */
	struct archive_entry dangling = { .id = 502, .with = "alice@localhost",
					  .with_resource = "", .ref = 499 };
	assert_int_equal(f->drv->archive_put(f->st, "localhost", "bob", &dangling), -1);
	/* alice's archive goes (her account deleted): bob's entry keeps the
	 * message and its text. */
	assert_int_equal(f->drv->archive_delete(f->st, "localhost", "alice", LLONG_MAX), 1);
	assert_int_equal(bob_query(f, NULL, v), 1);
	assert_string_equal(v, "<m>noon</m>");
	assert_int_equal(bob_query(f, "noon", v), 1);
	/* Expiry of both at once. */
	assert_int_equal(f->drv->archive_put(f->st, "localhost", "alice", &(struct archive_entry){
		.id = 600, .with = "bob@localhost", .with_resource = "", .outgoing = 1,
		.body = "later", .value = "<m>later</m>", .len = 12 }), 0);
	assert_int_equal(f->drv->archive_put(f->st, "localhost", "bob", &(struct archive_entry){
		.id = 601, .with = "alice@localhost", .with_resource = "", .ref = 600 }), 0);
	assert_int_equal(f->drv->archive_delete(f->st, NULL, NULL, 602), 3);
	assert_int_equal(bob_query(f, NULL, v), 0);
	assert_int_equal(bob_query(f, "later", v), 0);
}

/* How many rows of the full-text index hold word (sqlite, read beside
 * the driver's handle). */
static int text_rows(struct fixture *f, const char *word)
{
	char path[256];
	sqlite3 *db;
	sqlite3_stmt *stmt;
	int n = 0;
	snprintf(path, sizeof path, "%s/natter.db", f->data_dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT rowid FROM archive_text WHERE archive_text"
					    " MATCH ?1", -1, &stmt, NULL), SQLITE_OK);
	sqlite3_bind_text(stmt, 1, word, -1, SQLITE_STATIC);
	while (sqlite3_step(stmt) == SQLITE_ROW)
		n++;
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return n;
}

static void put_pair(struct fixture *f, long long id, const char *word)
{
	char value[32];
	snprintf(value, sizeof value, "<m>%s</m>", word);
	struct archive_entry sent = { .id = id, .with = "bob@localhost", .with_resource = "",
				      .outgoing = 1, .body = word, .value = value,
				      .len = strlen(value) };
	struct archive_entry got = { .id = id + 1, .with = "alice@localhost",
				     .with_resource = "pc", .ref = id };
	assert_int_equal(f->drv->begin(f->st), 0);
	assert_int_equal(f->drv->archive_put(f->st, "localhost", "alice", &sent), 0);
	assert_int_equal(f->drv->archive_put(f->st, "localhost", "bob", &got), 0);
	assert_int_equal(f->drv->end(f->st, 1), 0);
}

/* sqlite: written in one transaction (as the storage thread writes
 * them), the two entries of a local message share one value and one row
 * of the full-text index. Whichever side goes first, the other keeps the
 * message and its words, and the index forgets them with the last. The
 * words are indexed at an archive's first search (decision 0008, "Words
 * on demand"), once for both sides, whichever searches first; a late
 * entry below where an index reaches is indexed as it is written. */
static void test_archive_links_share_and_hand_over(void **state)
{
	struct fixture *f = *state;
	char v[64];
	struct archive_query q = { .max = 5, .max_bytes = 1 << 20, .text = "dusk" };
	struct page p;
	bool complete;
	put_pair(f, 500, "noon");
	assert_int_equal(bob_query(f, NULL, v), 1);
	assert_string_equal(v, "<m>noon</m>");
	assert_int_equal(text_rows(f, "noon"), 0); /* nobody searched yet */
	assert_int_equal(bob_query(f, "noon", v), 1);
	assert_int_equal(text_rows(f, "noon"), 1);
	/* The sender's side first: bob's entry gets the message. */
	assert_int_equal(f->drv->archive_delete(f->st, "localhost", "alice", LLONG_MAX), 1);
	assert_int_equal(bob_query(f, "noon", v), 1);
	assert_string_equal(v, "<m>noon</m>");
	assert_int_equal(text_rows(f, "noon"), 1);
	assert_int_equal(f->drv->archive_delete(f->st, "localhost", "bob", LLONG_MAX), 1);
	assert_int_equal(text_rows(f, "noon"), 0);
	/* The recipient's side first, before anyone searched the message:
	 * the sender's first search indexes it. */
	put_pair(f, 600, "dusk");
	assert_int_equal(f->drv->archive_delete(f->st, "localhost", "bob", LLONG_MAX), 1);
	assert_int_equal(text_rows(f, "dusk"), 0);
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), 1);
	assert_string_equal(p.value[0], "<m>dusk</m>");
	assert_int_equal(text_rows(f, "dusk"), 1);
	assert_int_equal(f->drv->archive_delete(f->st, "localhost", "alice", LLONG_MAX), 1);
	assert_int_equal(text_rows(f, "dusk"), 0);
	/* Both in one expiry, and expiry cutting between them: bob's entry
	 * of "eve" becomes a copy, indexed at his next search. */
	put_pair(f, 700, "dawn");
	put_pair(f, 800, "eve");
	assert_int_equal(f->drv->archive_delete(f->st, NULL, NULL, 801), 3);
	assert_int_equal(text_rows(f, "dawn"), 0);
	assert_int_equal(text_rows(f, "eve"), 0);
	assert_int_equal(bob_query(f, "eve", v), 1);
	assert_string_equal(v, "<m>eve</m>");
	assert_int_equal(text_rows(f, "eve"), 1);
	assert_int_equal(f->drv->archive_delete(f->st, NULL, NULL, LLONG_MAX), 1);
	assert_int_equal(text_rows(f, "eve"), 0);
	/* Both search: one row. A message whose ids fall below where both
	 * indexes reach is indexed at once, and both find it. */
	put_pair(f, 900, "dew");
	q.text = "dew";
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), 1);
	assert_int_equal(bob_query(f, "dew", v), 1);
	assert_int_equal(text_rows(f, "dew"), 1);
	put_pair(f, 850, "late");
	assert_int_equal(bob_query(f, NULL, v), 2); /* a read: the log becomes blocks */
	assert_int_equal(text_rows(f, "late"), 1);
	q.text = "late";
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), 1);
	assert_int_equal(p.ids[0], 850);
	assert_int_equal(bob_query(f, "late", v), 1);
	assert_string_equal(v, "<m>late</m>");
	/* bob's side first again, now both indexed: the row stays with
	 * alice's entry, and goes with it. */
	assert_int_equal(f->drv->archive_delete(f->st, "localhost", "bob", LLONG_MAX), 2);
	assert_int_equal(text_rows(f, "late"), 1);
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), 1);
	assert_int_equal(f->drv->archive_delete(f->st, NULL, NULL, LLONG_MAX), 2);
	assert_int_equal(text_rows(f, "late"), 0);
	assert_int_equal(text_rows(f, "dew"), 0);
}

/* archive_index (natterctl mam index) indexes ahead what no search has,
 * one row per message whichever side it indexes first. */
static void test_archive_index_ahead(void **state)
{
	struct fixture *f = *state;
	char v[64];
	put_pair(f, 500, "noon");
	put_pair(f, 600, "dusk");
	assert_int_equal(f->drv->archive_index(f->st, "localhost", "bob"), 2);
	assert_int_equal(text_rows(f, "noon"), 1);
	assert_int_equal(f->drv->archive_index(f->st, NULL, NULL), 0); /* alice's are there */
	put_pair(f, 700, "dawn");
	assert_int_equal(f->drv->archive_index(f->st, NULL, NULL), 1);
	assert_int_equal(f->drv->archive_index(f->st, "localhost", "nobody"), 0);
	assert_int_equal(text_rows(f, "dawn"), 1);
	assert_int_equal(bob_query(f, "dawn", v), 1);
	assert_string_equal(v, "<m>dawn</m>");
	/* What another handle indexed (natterctl beside natterd) is not
	 * indexed twice. */
	char err[256];
	struct storage *other = f->drv->open(f->data_dir, err, sizeof err);
	assert_non_null(other);
	put_pair(f, 800, "eve");
	assert_int_equal(f->drv->archive_index(other, NULL, NULL), 1);
	assert_int_equal(bob_query(f, "eve", v), 1);
	assert_int_equal(f->drv->archive_index(f->st, NULL, NULL), 0);
	assert_int_equal(text_rows(f, "eve"), 1);
	f->drv->close(other);
}

/* A first search of a big archive indexes a part of it per query
 * (ARCHIVE_TEXT_CATCHUP entries, 100,000, in whole blocks of up to 256)
 * and answers -2 (busy) until
 * the index reaches the last entry. */
static void test_archive_first_search_in_parts(void **state)
{
	struct fixture *f = *state;
	char body[32], value[48];
	assert_int_equal(f->drv->begin(f->st), 0);
	for (long long i = 1; i <= 100500; i++) {
		snprintf(body, sizeof body, i == 100400 ? "needle %lld" : "hay %lld", i);
		snprintf(value, sizeof value, "<m>%s</m>", body);
		struct archive_entry e = { .id = i, .with = "bob@example.org", .with_resource = "",
					   .outgoing = 1, .body = body, .value = value,
					   .len = strlen(value) };
		assert_int_equal(f->drv->archive_put(f->st, "localhost", "alice", &e), 0);
	}
	assert_int_equal(f->drv->end(f->st, 1), 0);
	struct archive_query q = { .max = 5, .max_bytes = 1 << 20, .text = "needle" };
	struct page p;
	bool complete;
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), -2);
	assert_in_range(text_rows(f, "hay"), 100000, 100000 + 255); /* whole blocks */
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), 1);
	assert_int_equal(p.ids[0], 100400);
	assert_int_equal(text_rows(f, "hay"), 100499);
	/* Then each search indexes only what came since. */
	struct archive_entry e = { .id = 100501, .with = "bob@example.org", .with_resource = "",
				   .outgoing = 0, .body = "needle again", .value = "<m/>", .len = 4 };
	assert_int_equal(f->drv->archive_put(f->st, "localhost", "alice", &e), 0);
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), 2);
	assert_int_equal(p.ids[1], 100501);
}

/* The count sql (a SELECT count(*), with ?1 bound to arg) gives in
 * natter.db, read by a connection of the test's own. */
static int db_count(struct fixture *f, const char *sql, int arg)
{
	char path[256];
	sqlite3 *db;
	sqlite3_stmt *stmt;
	snprintf(path, sizeof path, "%s/natter.db", f->data_dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
	if (sqlite3_bind_parameter_count(stmt) > 0)
		sqlite3_bind_int(stmt, 1, arg);
	assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
	int n = sqlite3_column_int(stmt, 0);
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return n;
}

static int table_rows(struct fixture *f, const char *table)
{
	char sql[128];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
	return db_count(f, sql, 0);
}

/* sqlite: committed entries are held in archive_log, not in blocks yet,
 * and a process that dies without closing its handle loses none: the
 * next handle reads the log back, LINKs made across its rows included
 * (the sender's entry logged before the recipient's linked to it), and
 * writes the blocks before it reads. What a transaction undid is not in
 * the log. The owners' ids (archive_jid: dummy 1, x 2, alice 3, bob 4)
 * put alice's and bob's entries in slices the three commits (which write
 * slices 0, 1 and 2 as blocks, in turn) do not write. */
static void test_archive_log_survives_a_crash(void **state)
{
	struct fixture *f = *state;
	f->drv->close(f->st);
	f->st = NULL;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[512];
		struct storage *st = f->drv->open(f->data_dir, err, sizeof err);
		struct archive_entry sent = { .id = 900, .with = "bob@localhost",
					      .with_resource = "", .outgoing = 1, .body = "crash",
					      .value = "<m>crash</m>", .len = 12 };
		struct archive_entry got = { .id = 901, .with = "alice@localhost",
					     .with_resource = "pc", .ref = 900 };
		struct archive_entry undone = { .id = 902, .with = "bob@localhost",
						.with_resource = "", .body = "undone",
						.value = "<m>undone</m>", .len = 13 };
		struct archive_entry dummy = { .id = 800, .with = "x@localhost",
					       .with_resource = "", .body = "dummy",
					       .value = "dummy", .len = 5 };
		int ok = st != NULL && f->drv->begin(st) == 0 &&
			 f->drv->archive_put(st, "localhost", "dummy", &dummy) == 0 &&
			 f->drv->end(st, 1) == 0 && f->drv->begin(st) == 0 &&
			 f->drv->archive_put(st, "localhost", "alice", &sent) == 0 &&
			 f->drv->end(st, 1) == 0 && f->drv->begin(st) == 0 &&
			 f->drv->archive_put(st, "localhost", "bob", &got) == 0 &&
			 f->drv->end(st, 1) == 0 && f->drv->begin(st) == 0 &&
			 f->drv->archive_put(st, "localhost", "alice", &undone) == 0 &&
			 f->drv->end(st, 0) == 0;
		_exit(ok ? 0 : 1); /* no close: as if killed */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(table_rows(f, "archive_log"), 2);
	assert_int_equal(table_rows(f, "archive_block"), 1); /* dummy's */

	char err[512], v[64];
	f->st = f->drv->open(f->data_dir, err, sizeof err);
	assert_non_null(f->st);
	assert_int_equal(bob_query(f, "crash", v), 1);
	assert_string_equal(v, "<m>crash</m>");
	assert_int_equal(table_rows(f, "archive_log"), 0);
	assert_int_equal(table_rows(f, "archive_block"), 3);
	assert_int_equal(text_rows(f, "crash"), 1);
	assert_int_equal(text_rows(f, "undone"), 0);
	/* alice's entry was read back as the TWIN of bob's: deleting it
	 * hands the message over. */
	assert_int_equal(f->drv->archive_delete(f->st, "localhost", "alice", LLONG_MAX), 1);
	assert_int_equal(bob_query(f, "crash", v), 1);
	assert_string_equal(v, "<m>crash</m>");
	assert_int_equal(text_rows(f, "crash"), 1);
}

/* sqlite: another handle (natterctl while natterd runs) that reads an
 * archive writes the entries held in the log as blocks; the handle that
 * held them sees the store changed and does not write them twice. */
static void test_archive_log_two_handles(void **state)
{
	struct fixture *f = *state;
	char err[512];
	struct page p;
	bool complete;
	long long count;
	assert_int_equal(f->drv->begin(f->st), 0);
	archive_put_one(f, "alice", 10, "ten");
	assert_int_equal(f->drv->end(f->st, 1), 0);
	struct storage *other = f->drv->open(f->data_dir, err, sizeof err);
	assert_non_null(other);
	struct archive_query q = { .max = 8, .max_bytes = 1 << 20 };
	memset(&p, 0, sizeof p);
	assert_int_equal(f->drv->archive_query(other, "localhost", "alice", &q, page_add, &p,
					       &complete, &count), 1);
	assert_int_equal(table_rows(f, "archive_log"), 0);
	assert_int_equal(f->drv->begin(f->st), 0);
	archive_put_one(f, "alice", 20, "twenty");
	assert_int_equal(f->drv->end(f->st, 1), 0);
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 2);
	assert_true(p.ids[0] == 10 && p.ids[1] == 20 && count == 2);
	/* And the other way: what other holds, f reads. */
	assert_int_equal(f->drv->begin(other), 0);
	struct archive_entry e = { .id = 30, .with = "bob@localhost", .with_resource = "",
				   .body = "thirty", .value = "thirty", .len = 6 };
	assert_int_equal(f->drv->archive_put(other, "localhost", "alice", &e), 0);
	assert_int_equal(f->drv->end(other, 1), 0);
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 3);
	assert_true(p.ids[2] == 30 && count == 3);
	/* other writes f's held entries while f runs a transaction that
	 * touches no archive: f's commit sees the log changed. */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(f->drv->begin(f->st), 0);
		archive_put_one(f, "alice", 40 + i, "later");
		assert_int_equal(f->drv->end(f->st, 1), 0);
	}
	memset(&p, 0, sizeof p);
	assert_int_equal(f->drv->archive_query(other, "localhost", "alice", &q, page_add, &p,
					       &complete, &count), 5);
	for (int turn = 0; turn < 16; turn++) { /* every slice's turn */
		assert_int_equal(f->drv->begin(f->st), 0);
		assert_int_equal(f->drv->end(f->st, 1), 0);
	}
	f->drv->close(other);
	assert_int_equal(archive_run(f, &q, &p, &complete, &count), 5);
	assert_true(p.ids[3] == 40 && p.ids[4] == 41 && count == 5);
}

/* Owners of slice `slice` (archive_jid id modulo 16) whose local part
 * starts with u. */
static int slice_owners(struct fixture *f, int slice)
{
	return db_count(f, "SELECT count(*) FROM archive_jid WHERE local LIKE 'u%' AND id % 16 = ?1",
			slice);
}

/* sqlite: each commit writes the held entries of one slice of the
 * owners as blocks, in turn, and logs the rest, a row per slice; after
 * 16 commits every entry of the first is in a block, one per owner. */
static void test_archive_log_slices_in_turn(void **state)
{
	struct fixture *f = *state;
	long long id = 1;
	int blocks = 0;
	for (int txn = 0; txn < 16; txn++) {
		assert_int_equal(f->drv->begin(f->st), 0);
		for (int i = 0; i < (txn == 0 ? 8192 : 1); i++) {
			char local[16];
			snprintf(local, sizeof local, "u%d", i % 1000);
			archive_put_one(f, local, id++, "hi");
		}
		assert_int_equal(f->drv->end(f->st, 1), 0);
		blocks += slice_owners(f, txn);
		if (txn == 0) {
			assert_true(blocks > 0);
			assert_int_equal(table_rows(f, "archive_log"), 15);
		}
		assert_int_equal(table_rows(f, "archive_block"), blocks);
	}
	/* u0 (id 1, slice 1) got an entry in each commit: those after the
	 * second are held, a row each. */
	assert_int_equal(table_rows(f, "archive_log"), 14);
	struct archive_query q = { .max = 3, .max_bytes = 1 << 20, .from_end = true };
	struct page p;
	bool complete;
	long long count;
	memset(&p, 0, sizeof p);
	assert_int_equal(f->drv->archive_query(f->st, "localhost", "u7", &q, page_add, &p,
					       &complete, &count), 3);
	assert_true(count == 9 && p.ids[2] == 8008); /* i = 7, 1007, ..., 8007 */
}

static void test_archive_has_delete_and_user_del(void **state)
{
	struct fixture *f = *state;
	struct page p;
	bool complete;
	archive_fill(f);
	assert_int_equal(f->drv->archive_has(f->st, "localhost", "alice", 105), 1);
	assert_int_equal(f->drv->archive_has(f->st, "localhost", "alice", 200), 0);
	assert_int_equal(f->drv->archive_last_id(f->st), 200);
	assert_int_equal(f->drv->archive_delete(f->st, "localhost", "alice", 103), 3);
	struct archive_query q = { .max = 50, .max_bytes = 1 << 20, .text = "hello" };
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), 6); /* 103,104,106..109 */
	assert_int_equal(f->drv->archive_delete(f->st, NULL, NULL, 107), 4);
	assert_int_equal(f->drv->archive_has(f->st, "localhost", "bob", 200), 1);
	struct user_credentials c;
	memset(&c, 0, sizeof c);
	c.sha1.iterations = c.sha256.iterations = 4096;
	assert_int_equal(f->drv->user_put(f->st, "localhost", "alice", &c), 0);
	assert_int_equal(f->drv->user_del(f->st, "localhost", "alice"), 0);
	q.text = NULL;
	assert_int_equal(archive_run(f, &q, &p, &complete, NULL), 0);
	assert_int_equal(f->drv->archive_has(f->st, "localhost", "bob", 200), 1);
}

int main(void)
{
	const struct CMUnitTest common[] = {
		cmocka_unit_test(test_driver_find),
		cmocka_unit_test(test_credentials_from_password),
		cmocka_unit_test(test_credentials_known_vectors),
		cmocka_unit_test(test_credentials_as_gsasl_derives),
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
		cmocka_unit_test_setup_teardown(test_map_put_get, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_map_put_replaces, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_map_del_one, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_map_del_store, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_map_list_sorted, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_map_size_and_list_max, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_map_isolated, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_map_binary_and_empty, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_list_push_fetch, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_list_page, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_list_trim, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_list_count_isolated, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_list_size, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_list_binary_and_empty, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_user_del_removes_stores, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_user_del_inside_a_batch, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_two_handles_stores, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_archive_pages_both_ways, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_archive_filters, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_archive_ref_shares_one_message, setup_sqlite,
						teardown),
		cmocka_unit_test_setup_teardown(test_archive_count_is_bounded, setup_sqlite,
						teardown),
		cmocka_unit_test_setup_teardown(test_archive_blocks_in_a_transaction, setup_sqlite,
						teardown),
		cmocka_unit_test_setup_teardown(test_archive_blocks_merge_late_entries, setup_sqlite,
						teardown),
		cmocka_unit_test_setup_teardown(test_archive_blocks_expire_and_user_del,
						setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_archive_links_share_and_hand_over,
						setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_archive_first_search_in_parts,
						setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_archive_index_ahead,
						setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_archive_log_survives_a_crash, setup_sqlite,
						teardown),
		cmocka_unit_test_setup_teardown(test_archive_log_two_handles, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_archive_log_slices_in_turn, setup_sqlite,
						teardown),
		cmocka_unit_test_setup_teardown(test_archive_has_delete_and_user_del, setup_sqlite,
						teardown),
		cmocka_unit_test_setup_teardown(test_sqlite_schema_version, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_sqlite_migrate_from_v1, setup_sqlite, teardown),
		cmocka_unit_test_setup_teardown(test_sqlite_migrate_archive_from_v4, setup_sqlite,
						teardown),
	};
	log_set_level(LOG_WARN);
	int failed = cmocka_run_group_tests_name("storage", common, NULL, NULL);
	failed += cmocka_run_group_tests_name("storage_sqlite", sqlite, NULL, NULL);
	return failed ? 1 : 0;
}
