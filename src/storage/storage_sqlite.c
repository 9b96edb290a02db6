/* The "sqlite" storage driver: the embedded default, one file
 * <data_dir>/natter.db shared by natterd and natterctl.
 *
 * WAL mode lets readers run while one writer writes, and busy_timeout makes
 * a second process wait for the write lock instead of failing, so the admin
 * tool can write while the server runs. The schema is versioned: open runs
 * every migration the file has not seen yet, each in its own transaction.
 * All SQL is parameterised; the statements are prepared once per handle. */
#include "storage/storage.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

/* How long one statement waits for another process's write lock. */
#define STORAGE_SQLITE_BUSY_MS 5000

/* Migration i takes the schema from version i to i + 1. Append only: a
 * released migration is never edited. */
static const char *const storage_sqlite_migrations[] = {
	/* 0 -> 1: accounts with their SCRAM secrets; created is Unix time. */
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
	") WITHOUT ROWID;",
};

#define STORAGE_SQLITE_VERSION \
	(sizeof storage_sqlite_migrations / sizeof storage_sqlite_migrations[0])

struct storage {
	sqlite3 *db;
	sqlite3_stmt *user_get;
	sqlite3_stmt *user_put;
	sqlite3_stmt *user_del;
	sqlite3_stmt *user_list_all;
	sqlite3_stmt *user_list_domain;
};

static const char storage_sqlite_sql_get[] =
	"SELECT sha1_salt, sha1_iter, sha1_stored, sha1_server,"
	" sha256_salt, sha256_iter, sha256_stored, sha256_server"
	" FROM users WHERE domain = ?1 AND local = ?2";

/* Replacing keeps the account's creation time. */
static const char storage_sqlite_sql_put[] =
	"INSERT INTO users (domain, local, sha1_salt, sha1_iter, sha1_stored, sha1_server,"
	" sha256_salt, sha256_iter, sha256_stored, sha256_server, created)"
	" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
	" ON CONFLICT (domain, local) DO UPDATE SET"
	" sha1_salt = excluded.sha1_salt, sha1_iter = excluded.sha1_iter,"
	" sha1_stored = excluded.sha1_stored, sha1_server = excluded.sha1_server,"
	" sha256_salt = excluded.sha256_salt, sha256_iter = excluded.sha256_iter,"
	" sha256_stored = excluded.sha256_stored, sha256_server = excluded.sha256_server";

static const char storage_sqlite_sql_del[] =
	"DELETE FROM users WHERE domain = ?1 AND local = ?2";

static const char storage_sqlite_sql_list_all[] =
	"SELECT domain, local FROM users ORDER BY domain, local";

static const char storage_sqlite_sql_list_domain[] =
	"SELECT domain, local FROM users WHERE domain = ?1 ORDER BY local";

__attribute__((format(printf, 3, 4)))
static void storage_sqlite_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Logs a failed statement; the interface returns only -1. */
static int storage_sqlite_fail(struct storage *st, const char *what)
{
	log_error("storage sqlite: %s: %s", what, sqlite3_errmsg(st->db));
	return -1;
}

static void storage_sqlite_done(sqlite3_stmt *stmt)
{
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
}

static int storage_sqlite_exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		storage_sqlite_err(err, errlen, "%s", msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* Reads the schema version; 0 for a new file. */
static int storage_sqlite_version(sqlite3 *db, int *version, char *err, size_t errlen)
{
	sqlite3_stmt *stmt;
	if (sqlite3_prepare_v2(db, "SELECT version FROM schema_version", -1, &stmt, NULL) !=
	    SQLITE_OK) {
		storage_sqlite_err(err, errlen, "%s", sqlite3_errmsg(db));
		return -1;
	}
	int rc = sqlite3_step(stmt);
	*version = rc == SQLITE_ROW ? sqlite3_column_int(stmt, 0) : 0;
	sqlite3_finalize(stmt);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		storage_sqlite_err(err, errlen, "%s", sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

/* Brings the schema up to STORAGE_SQLITE_VERSION. BEGIN IMMEDIATE takes the
 * write lock before the version is read, so two processes opening a new
 * file at once cannot both run a migration. */
static int storage_sqlite_migrate(sqlite3 *db, char *err, size_t errlen)
{
	if (storage_sqlite_exec(db, "CREATE TABLE IF NOT EXISTS schema_version"
				    " (version INTEGER NOT NULL)", err, errlen) < 0)
		return -1;
	for (;;) {
		int version;
		if (storage_sqlite_exec(db, "BEGIN IMMEDIATE", err, errlen) < 0)
			return -1;
		if (storage_sqlite_version(db, &version, err, errlen) < 0)
			goto rollback;
		if (version < 0 || (size_t)version > STORAGE_SQLITE_VERSION) {
			storage_sqlite_err(err, errlen,
					   "schema version %d is newer than this natter knows (%zu)",
					   version, STORAGE_SQLITE_VERSION);
			goto rollback;
		}
		if ((size_t)version == STORAGE_SQLITE_VERSION)
			return storage_sqlite_exec(db, "COMMIT", err, errlen);

		sqlite3_stmt *stmt = NULL;
		if (storage_sqlite_exec(db, storage_sqlite_migrations[version], err, errlen) < 0 ||
		    storage_sqlite_exec(db, "DELETE FROM schema_version", err, errlen) < 0)
			goto rollback;
		if (sqlite3_prepare_v2(db, "INSERT INTO schema_version (version) VALUES (?1)", -1,
				       &stmt, NULL) != SQLITE_OK) {
			storage_sqlite_err(err, errlen, "%s", sqlite3_errmsg(db));
			goto rollback;
		}
		sqlite3_bind_int(stmt, 1, version + 1);
		int rc = sqlite3_step(stmt);
		sqlite3_finalize(stmt);
		if (rc != SQLITE_DONE) {
			storage_sqlite_err(err, errlen, "%s", sqlite3_errmsg(db));
			goto rollback;
		}
		if (storage_sqlite_exec(db, "COMMIT", err, errlen) < 0)
			goto rollback;
		log_info("storage sqlite: schema migrated to version %d", version + 1);
	}
rollback:
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* The database holds password-equivalent secrets: the directory is made
 * 0700 and the file 0600 before SQLite creates it with its default mode
 * (SQLite gives the -wal and -shm files the database file's mode). */
static int storage_sqlite_prepare_files(const char *data_dir, const char *path, char *err,
					size_t errlen)
{
	if (mkdir(data_dir, 0700) < 0 && errno != EEXIST) {
		storage_sqlite_err(err, errlen, "cannot create %s: %s", data_dir, strerror(errno));
		return -1;
	}
	/* Only ever create: closing any descriptor of a database file drops
	 * every POSIX lock this process holds on it, including those of
	 * connections already open (another loop's), which then read stale
	 * data and let other processes checkpoint the WAL under them. */
	struct stat sb;
	if (stat(path, &sb) == 0)
		return 0;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && errno != EEXIST) {
		storage_sqlite_err(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (fd >= 0)
		close(fd);
	return 0;
}

/* Switches to WAL. A file system without shared memory (some network
 * mounts) keeps the old journal: that works, with readers blocking the
 * writer, so it is a warning, not an error. */
static int storage_sqlite_wal(sqlite3 *db, const char *path, char *err, size_t errlen)
{
	sqlite3_stmt *stmt;
	if (sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL) != SQLITE_OK) {
		storage_sqlite_err(err, errlen, "%s", sqlite3_errmsg(db));
		return -1;
	}
	int rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		const char *mode = (const char *)sqlite3_column_text(stmt, 0);
		if (!mode || strcmp(mode, "wal") != 0)
			log_warn("storage sqlite: %s: WAL mode unavailable, journal mode is %s",
				 path, mode ? mode : "unknown");
	} else {
		storage_sqlite_err(err, errlen, "%s", sqlite3_errmsg(db));
	}
	sqlite3_finalize(stmt);
	return rc == SQLITE_ROW ? 0 : -1;
}

static void storage_sqlite_close(struct storage *st)
{
	if (!st)
		return;
	sqlite3_finalize(st->user_get);
	sqlite3_finalize(st->user_put);
	sqlite3_finalize(st->user_del);
	sqlite3_finalize(st->user_list_all);
	sqlite3_finalize(st->user_list_domain);
	sqlite3_close(st->db);
	free(st);
}

static struct storage *storage_sqlite_open(const char *data_dir, char *err, size_t errlen)
{
	struct {
		sqlite3_stmt **stmt;
		const char *sql;
	} prepare[5];
	char path[4096];
	struct storage *st = NULL;

	if ((size_t)snprintf(path, sizeof path, "%s/natter.db", data_dir) >= sizeof path) {
		storage_sqlite_err(err, errlen, "data_dir is too long");
		return NULL;
	}
	if (storage_sqlite_prepare_files(data_dir, path, err, errlen) < 0)
		return NULL;
	st = calloc(1, sizeof *st);
	if (!st) {
		storage_sqlite_err(err, errlen, "out of memory");
		return NULL;
	}
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
	if (sqlite3_open_v2(path, &st->db, flags, NULL) != SQLITE_OK) {
		storage_sqlite_err(err, errlen, "%s: %s", path,
				   st->db ? sqlite3_errmsg(st->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(st->db, STORAGE_SQLITE_BUSY_MS);
	/* synchronous=NORMAL is durable across application crashes in WAL
	 * mode; only a power loss can lose the last commits. */
	if (storage_sqlite_wal(st->db, path, err, errlen) < 0 ||
	    storage_sqlite_exec(st->db, "PRAGMA synchronous = NORMAL", err, errlen) < 0 ||
	    storage_sqlite_exec(st->db, "PRAGMA foreign_keys = ON", err, errlen) < 0 ||
	    storage_sqlite_migrate(st->db, err, errlen) < 0)
		goto fail_path;

	prepare[0].stmt = &st->user_get, prepare[0].sql = storage_sqlite_sql_get;
	prepare[1].stmt = &st->user_put, prepare[1].sql = storage_sqlite_sql_put;
	prepare[2].stmt = &st->user_del, prepare[2].sql = storage_sqlite_sql_del;
	prepare[3].stmt = &st->user_list_all, prepare[3].sql = storage_sqlite_sql_list_all;
	prepare[4].stmt = &st->user_list_domain, prepare[4].sql = storage_sqlite_sql_list_domain;
	for (size_t i = 0; i < sizeof prepare / sizeof prepare[0]; i++) {
		if (sqlite3_prepare_v3(st->db, prepare[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
				       prepare[i].stmt, NULL) != SQLITE_OK) {
			storage_sqlite_err(err, errlen, "%s", sqlite3_errmsg(st->db));
			goto fail_path;
		}
	}
	return st;

fail_path:
	{
		/* Prefix the path so the message stands on its own. */
		char msg[512];
		snprintf(msg, sizeof msg, "%s", err);
		storage_sqlite_err(err, errlen, "%s: %s", path, msg);
	}
fail:
	storage_sqlite_close(st);
	return NULL;
}

static int storage_sqlite_bind_text(sqlite3_stmt *stmt, int idx, const char *s)
{
	return sqlite3_bind_text(stmt, idx, s, -1, SQLITE_STATIC) == SQLITE_OK ? 0 : -1;
}

/* Copies a column into a fixed field; a value that does not fit means the
 * row was not written by us. */
static int storage_sqlite_column(sqlite3_stmt *stmt, int col, char *out, size_t cap)
{
	const unsigned char *v = sqlite3_column_text(stmt, col);
	int n = sqlite3_column_bytes(stmt, col);
	if (!v || n < 0 || (size_t)n >= cap)
		return -1;
	memcpy(out, v, (size_t)n);
	out[n] = '\0';
	return 0;
}

static int storage_sqlite_secret(sqlite3_stmt *stmt, int col, struct scram_secret *s)
{
	sqlite3_int64 iter = sqlite3_column_int64(stmt, col + 1);
	if (iter <= 0 || iter > (sqlite3_int64)UINT_MAX)
		return -1;
	s->iterations = (unsigned)iter;
	if (storage_sqlite_column(stmt, col, s->salt, sizeof s->salt) < 0 ||
	    storage_sqlite_column(stmt, col + 2, s->stored_key, sizeof s->stored_key) < 0 ||
	    storage_sqlite_column(stmt, col + 3, s->server_key, sizeof s->server_key) < 0)
		return -1;
	return 0;
}

static int storage_sqlite_user_get(struct storage *st, const char *domain, const char *local,
				   struct user_credentials *out)
{
	sqlite3_stmt *stmt = st->user_get;
	int ret = -1;

	if (storage_sqlite_bind_text(stmt, 1, domain) < 0 ||
	    storage_sqlite_bind_text(stmt, 2, local) < 0) {
		storage_sqlite_fail(st, "user_get");
		goto out;
	}
	int rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE) {
		ret = 1;
	} else if (rc != SQLITE_ROW) {
		storage_sqlite_fail(st, "user_get");
	} else {
		memset(out, 0, sizeof *out);
		if (storage_sqlite_secret(stmt, 0, &out->sha1) < 0 ||
		    storage_sqlite_secret(stmt, 4, &out->sha256) < 0)
			log_error("storage sqlite: user_get: malformed row for %s@%s", local, domain);
		else
			ret = 0;
	}
out:
	storage_sqlite_done(stmt);
	return ret;
}

static int storage_sqlite_bind_secret(sqlite3_stmt *stmt, int idx, const struct scram_secret *s)
{
	if (storage_sqlite_bind_text(stmt, idx, s->salt) < 0 ||
	    sqlite3_bind_int64(stmt, idx + 1, s->iterations) != SQLITE_OK ||
	    storage_sqlite_bind_text(stmt, idx + 2, s->stored_key) < 0 ||
	    storage_sqlite_bind_text(stmt, idx + 3, s->server_key) < 0)
		return -1;
	return 0;
}

static int storage_sqlite_user_put(struct storage *st, const char *domain, const char *local,
				   const struct user_credentials *cred)
{
	sqlite3_stmt *stmt = st->user_put;
	int ret = -1;

	if (storage_sqlite_bind_text(stmt, 1, domain) < 0 ||
	    storage_sqlite_bind_text(stmt, 2, local) < 0 ||
	    storage_sqlite_bind_secret(stmt, 3, &cred->sha1) < 0 ||
	    storage_sqlite_bind_secret(stmt, 7, &cred->sha256) < 0 ||
	    sqlite3_bind_int64(stmt, 11, (sqlite3_int64)time(NULL)) != SQLITE_OK)
		storage_sqlite_fail(st, "user_put");
	else if (sqlite3_step(stmt) != SQLITE_DONE)
		storage_sqlite_fail(st, "user_put");
	else
		ret = 0;
	storage_sqlite_done(stmt);
	return ret;
}

static int storage_sqlite_user_del(struct storage *st, const char *domain, const char *local)
{
	sqlite3_stmt *stmt = st->user_del;
	int ret = -1;

	if (storage_sqlite_bind_text(stmt, 1, domain) < 0 ||
	    storage_sqlite_bind_text(stmt, 2, local) < 0)
		storage_sqlite_fail(st, "user_del");
	else if (sqlite3_step(stmt) != SQLITE_DONE)
		storage_sqlite_fail(st, "user_del");
	else
		ret = sqlite3_changes(st->db) > 0 ? 0 : 1;
	storage_sqlite_done(stmt);
	return ret;
}

/* fn runs while the statement is open: it must not write to this handle. */
static int storage_sqlite_user_list(struct storage *st, const char *domain,
				    void (*fn)(void *arg, const char *domain, const char *local),
				    void *arg)
{
	sqlite3_stmt *stmt = domain ? st->user_list_domain : st->user_list_all;
	int rc;

	if (domain && storage_sqlite_bind_text(stmt, 1, domain) < 0) {
		storage_sqlite_done(stmt);
		return storage_sqlite_fail(st, "user_list");
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
		fn(arg, (const char *)sqlite3_column_text(stmt, 0),
		   (const char *)sqlite3_column_text(stmt, 1));
	if (rc != SQLITE_DONE)
		storage_sqlite_fail(st, "user_list");
	storage_sqlite_done(stmt);
	return rc == SQLITE_DONE ? 0 : -1;
}

const struct storage_driver storage_sqlite_driver = {
	.name = "sqlite",
	.open = storage_sqlite_open,
	.close = storage_sqlite_close,
	.user_get = storage_sqlite_user_get,
	.user_put = storage_sqlite_user_put,
	.user_del = storage_sqlite_user_del,
	.user_list = storage_sqlite_user_list,
};
