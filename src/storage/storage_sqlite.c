/* The "sqlite" storage driver: the embedded default, one file
 * <data_dir>/natter.db shared by natterd and natterctl.
 *
 * WAL mode lets readers run while one writer writes, and busy_timeout makes
 * a second process wait for the write lock instead of failing, so the admin
 * tool can write while the server runs. The schema is versioned: open runs
 * every migration the file has not seen yet, each in its own transaction.
 * All SQL is parameterised; the statements are prepared once per handle.
 *
 * Map and list stores hang off an account by (domain, local) without a
 * foreign key: user_del removes them in its own transaction, and a store
 * may be written for an account that only an external auth backend knows. */
#include "storage/storage.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

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
	/* 1 -> 2: map stores (values by key) and list stores (queues) per
	 * account. AUTOINCREMENT keeps list ids increasing even after a
	 * queue was trimmed empty, so a client's last seen id stays valid. */
	"CREATE TABLE map ("
	" domain TEXT NOT NULL,"
	" local TEXT NOT NULL,"
	" store TEXT NOT NULL,"
	" key TEXT NOT NULL,"
	" value BLOB NOT NULL,"
	" PRIMARY KEY (domain, local, store, key)"
	") WITHOUT ROWID;"
	"CREATE TABLE list ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" domain TEXT NOT NULL,"
	" local TEXT NOT NULL,"
	" store TEXT NOT NULL,"
	" stamp INTEGER NOT NULL,"
	" value BLOB NOT NULL"
	");"
	"CREATE INDEX list_owner ON list (domain, local, store, id);",
	/* 2 -> 3: message archives (XEP-0313). The id is the caller's
	 * (time-ordered, see storage.h), so a time range is an id range.
	 * Bodies are indexed by FTS5 under the same rowid; deleting an entry
	 * deletes its text. No index led by the other party: it cost 40 % of
	 * the archive's write rate (every write lands on a random leaf). The
	 * owner's index carries with_bare instead, so a query 'with' someone
	 * (and its count) walks the owner's index, not its rows. */
	"CREATE TABLE archive ("
	" id INTEGER PRIMARY KEY,"
	" domain TEXT NOT NULL,"
	" local TEXT NOT NULL,"
	" with_bare TEXT NOT NULL,"
	" with_res TEXT NOT NULL,"
	" outgoing INTEGER NOT NULL,"
	" value BLOB NOT NULL"
	");"
	"CREATE INDEX archive_owner ON archive (domain, local, id, with_bare);"
	"CREATE VIRTUAL TABLE archive_text USING fts5(body, tokenize = 'unicode61 remove_diacritics 2');"
	"CREATE TRIGGER archive_text_del AFTER DELETE ON archive BEGIN"
	" DELETE FROM archive_text WHERE rowid = old.id; END;",
	/* 3 -> 4: a message between two local accounts is written once. The
	 * recipient's entry refers to the sender's (ref: its id) and has no
	 * value and no text of its own; queries read through ref. Deleting
	 * a referred entry (its owner deleted, its archive expired) first
	 * gives its value and text to the entries referring to it. ref
	 * grows with time, so its index is written at its end. */
	"ALTER TABLE archive ADD COLUMN ref INTEGER;"
	"CREATE INDEX archive_ref ON archive (ref) WHERE ref IS NOT NULL;"
	"CREATE TRIGGER archive_ref_keep BEFORE DELETE ON archive WHEN old.ref IS NULL BEGIN"
	" INSERT INTO archive_text (rowid, body) SELECT a.id, t.body FROM archive a, archive_text t"
	"  WHERE a.ref = old.id AND t.rowid = old.id;"
	" UPDATE archive SET value = old.value, ref = NULL WHERE ref = old.id; END;",
	/* 4 -> 5: owners and parties are numbers (archive_jid), so an index
	 * entry is three integers instead of three strings: on SQLite alone
	 * a local message costs about a quarter less CPU (archive-batch -i).
	 * A bare JID is stored split, "local@domain" as (domain, local) and
	 * a domain alone with local ''. Rows are never removed from
	 * archive_jid (a few dozen bytes per JID ever archived). */
	"CREATE TABLE archive_jid ("
	" id INTEGER PRIMARY KEY,"
	" domain TEXT NOT NULL,"
	" local TEXT NOT NULL,"
	" UNIQUE (domain, local)"
	");"
	"INSERT OR IGNORE INTO archive_jid (domain, local) SELECT DISTINCT domain, local FROM archive;"
	"INSERT OR IGNORE INTO archive_jid (domain, local) SELECT DISTINCT"
	" CASE WHEN instr(with_bare, '@') > 0 THEN substr(with_bare, instr(with_bare, '@') + 1)"
	"  ELSE with_bare END,"
	" CASE WHEN instr(with_bare, '@') > 0 THEN substr(with_bare, 1, instr(with_bare, '@') - 1)"
	"  ELSE '' END FROM archive;"
	"CREATE TABLE archive_new ("
	" id INTEGER PRIMARY KEY,"
	" owner INTEGER NOT NULL,"
	" with_jid INTEGER NOT NULL,"
	" with_res TEXT NOT NULL,"
	" outgoing INTEGER NOT NULL,"
	" value BLOB NOT NULL,"
	" ref INTEGER"
	");"
	"INSERT INTO archive_new (id, owner, with_jid, with_res, outgoing, value, ref)"
	" SELECT a.id, o.id, w.id, a.with_res, a.outgoing, a.value, a.ref FROM archive a"
	" JOIN archive_jid o ON o.domain = a.domain AND o.local = a.local"
	" JOIN archive_jid w ON w.domain = CASE WHEN instr(a.with_bare, '@') > 0"
	"  THEN substr(a.with_bare, instr(a.with_bare, '@') + 1) ELSE a.with_bare END"
	" AND w.local = CASE WHEN instr(a.with_bare, '@') > 0"
	"  THEN substr(a.with_bare, 1, instr(a.with_bare, '@') - 1) ELSE '' END;"
	"DROP TABLE archive;" /* its indexes and triggers; DROP deletes no text */
	"ALTER TABLE archive_new RENAME TO archive;"
	"CREATE INDEX archive_owner ON archive (owner, id, with_jid);"
	"CREATE INDEX archive_ref ON archive (ref) WHERE ref IS NOT NULL;"
	"CREATE TRIGGER archive_text_del AFTER DELETE ON archive BEGIN"
	" DELETE FROM archive_text WHERE rowid = old.id; END;"
	"CREATE TRIGGER archive_ref_keep BEFORE DELETE ON archive WHEN old.ref IS NULL BEGIN"
	" INSERT INTO archive_text (rowid, body) SELECT a.id, t.body FROM archive a, archive_text t"
	"  WHERE a.ref = old.id AND t.rowid = old.id;"
	" UPDATE archive SET value = old.value, ref = NULL WHERE ref = old.id; END;",
};

#define STORAGE_SQLITE_VERSION \
	(sizeof storage_sqlite_migrations / sizeof storage_sqlite_migrations[0])

/* Every statement is listed in storage_sqlite_statements below, which
 * prepares and finalizes them. */
/* Archive queries are built from their filters, so their SQL varies; the
 * handle keeps the last few compiled (a query of the same shape then
 * skips SQLite's compiler). */
#define STORAGE_SQLITE_QCACHE 16

/* The handle's table of archive_jid ids: open addressing, emptied when
 * three quarters full. */
#define STORAGE_SQLITE_JIDS 16384

struct storage_sqlite_jid {
	char *key; /* "local@domain", or "domain"; NULL: a free slot */
	long long id;
};

struct storage_sqlite_cached {
	char *sql;
	sqlite3_stmt *stmt;
};

struct storage {
	sqlite3 *db;
	struct storage_sqlite_cached qcache[STORAGE_SQLITE_QCACHE];
	unsigned qcache_next;           /* the slot replaced next */
	sqlite3_stmt *begin;            /* BEGIN IMMEDIATE */
	sqlite3_stmt *commit;
	sqlite3_stmt *rollback;
	sqlite3_stmt *user_get;
	sqlite3_stmt *user_put;
	sqlite3_stmt *user_del;
	sqlite3_stmt *user_list_all;
	sqlite3_stmt *user_list_domain;
	sqlite3_stmt *map_get;
	sqlite3_stmt *map_put;
	sqlite3_stmt *map_del;
	sqlite3_stmt *map_del_store;    /* map_del with key NULL */
	sqlite3_stmt *map_del_user;     /* user_del's part */
	sqlite3_stmt *map_list;
	sqlite3_stmt *map_size;
	sqlite3_stmt *list_push;
	sqlite3_stmt *list_fetch;
	sqlite3_stmt *list_page;
	sqlite3_stmt *list_trim;
	sqlite3_stmt *list_count;
	sqlite3_stmt *list_size;
	sqlite3_stmt *list_del_user;    /* user_del's part */
	sqlite3_stmt *archive_put;
	sqlite3_stmt *archive_put_ref;
	sqlite3_stmt *archive_ref_has;
	sqlite3_stmt *archive_text_put;
	sqlite3_stmt *archive_has;
	sqlite3_stmt *archive_del_user; /* user_del's part */
	sqlite3_stmt *archive_expire;   /* every archive */
	sqlite3_stmt *archive_expire_one;
	sqlite3_stmt *archive_expire_domain;
	sqlite3_stmt *archive_last_id;
	sqlite3_stmt *jid_get;
	sqlite3_stmt *jid_add;
	/* archive_jid ids known to this handle ("local@domain" -> id), so a
	 * write looks none up; emptied when a transaction rolls back (the
	 * ids it added are gone and may be given to other JIDs). */
	struct storage_sqlite_jid *jids;
	size_t n_jids;
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

static const char storage_sqlite_sql_map_get[] =
	"SELECT value FROM map WHERE domain = ?1 AND local = ?2 AND store = ?3 AND key = ?4";

static const char storage_sqlite_sql_map_put[] =
	"INSERT INTO map (domain, local, store, key, value) VALUES (?1, ?2, ?3, ?4, ?5)"
	" ON CONFLICT (domain, local, store, key) DO UPDATE SET value = excluded.value";

static const char storage_sqlite_sql_map_del[] =
	"DELETE FROM map WHERE domain = ?1 AND local = ?2 AND store = ?3 AND key = ?4";

static const char storage_sqlite_sql_map_del_store[] =
	"DELETE FROM map WHERE domain = ?1 AND local = ?2 AND store = ?3";

static const char storage_sqlite_sql_map_del_user[] =
	"DELETE FROM map WHERE domain = ?1 AND local = ?2";

static const char storage_sqlite_sql_map_list[] =
	"SELECT key, value FROM map WHERE domain = ?1 AND local = ?2 AND store = ?3"
	" ORDER BY key";

/* length() of a blob reads only its header, not its overflow pages: a
 * store of hundreds of megabytes is measured without being read. Keys are
 * text, whose length() counts characters: cast, to count bytes. */
static const char storage_sqlite_sql_map_size[] =
	"SELECT count(*), coalesce(sum(length(CAST(key AS BLOB)) + length(value)), 0)"
	" FROM map WHERE domain = ?1 AND local = ?2 AND store = ?3";

static const char storage_sqlite_sql_list_size[] =
	"SELECT count(*), coalesce(sum(length(value)), 0)"
	" FROM list WHERE domain = ?1 AND local = ?2 AND store = ?3";

static const char storage_sqlite_sql_list_push[] =
	"INSERT INTO list (domain, local, store, stamp, value) VALUES (?1, ?2, ?3, ?4, ?5)";

static const char storage_sqlite_sql_list_fetch[] =
	"SELECT id, stamp, value FROM list WHERE domain = ?1 AND local = ?2 AND store = ?3"
	" ORDER BY id";

static const char storage_sqlite_sql_list_page[] =
	"SELECT id, stamp, value FROM list WHERE domain = ?1 AND local = ?2 AND store = ?3"
	" AND id > ?4 ORDER BY id LIMIT ?5";

static const char storage_sqlite_sql_list_trim[] =
	"DELETE FROM list WHERE domain = ?1 AND local = ?2 AND store = ?3 AND id <= ?4";

static const char storage_sqlite_sql_list_count[] =
	"SELECT count(*) FROM list WHERE domain = ?1 AND local = ?2 AND store = ?3";

static const char storage_sqlite_sql_list_del_user[] =
	"DELETE FROM list WHERE domain = ?1 AND local = ?2";

/* ?2 and ?3: archive_jid ids (storage_sqlite_jid_id). */
static const char storage_sqlite_sql_archive_put[] =
	"INSERT INTO archive (id, owner, with_jid, with_res, outgoing, value)"
	" VALUES (?1, ?2, ?3, ?5, ?6, ?7)";

/* An entry reading its value through ref (archive_ref_has: while ref is
 * there). Not one INSERT ... SELECT: that takes a statement savepoint,
 * and FTS5 writes its pending text at every savepoint (it cost a third
 * of the storage thread's time). */
static const char storage_sqlite_sql_archive_put_ref[] =
	"INSERT INTO archive (id, owner, with_jid, with_res, outgoing, value, ref)"
	" VALUES (?1, ?2, ?3, ?5, ?6, x'', ?8)";

static const char storage_sqlite_sql_archive_ref_has[] =
	"SELECT 1 FROM archive WHERE id = ?1 AND ref IS NULL";

static const char storage_sqlite_sql_archive_text_put[] =
	"INSERT INTO archive_text (rowid, body) VALUES (?1, ?2)";

/* An owner's entries: its id looked up once (a scalar subquery). */
#define STORAGE_SQLITE_OWNER "owner = (SELECT id FROM archive_jid WHERE domain = ?1 AND local = ?2)"

static const char storage_sqlite_sql_archive_has[] =
	"SELECT 1 FROM archive WHERE id = ?3 AND " STORAGE_SQLITE_OWNER;

static const char storage_sqlite_sql_archive_del_user[] =
	"DELETE FROM archive WHERE " STORAGE_SQLITE_OWNER;

static const char storage_sqlite_sql_archive_expire[] =
	"DELETE FROM archive WHERE id < ?1";

static const char storage_sqlite_sql_archive_expire_one[] =
	"DELETE FROM archive WHERE " STORAGE_SQLITE_OWNER " AND id < ?3";

static const char storage_sqlite_sql_archive_expire_domain[] =
	"DELETE FROM archive WHERE owner IN (SELECT id FROM archive_jid WHERE domain = ?1)"
	" AND id < ?2";

static const char storage_sqlite_sql_jid_get[] =
	"SELECT id FROM archive_jid WHERE domain = ?1 AND local = ?2";

static const char storage_sqlite_sql_jid_add[] =
	"INSERT OR IGNORE INTO archive_jid (domain, local) VALUES (?1, ?2)";

static const char storage_sqlite_sql_archive_last_id[] =
	"SELECT coalesce(max(id), 0) FROM archive";

#define STORAGE_SQLITE_STMT(field, sql) { offsetof(struct storage, field), sql }

/* The statements of a handle: where each lives in struct storage, and its
 * SQL. One table for open and close so that none is left unfinalized. */
static const struct {
	size_t offset;
	const char *sql;
} storage_sqlite_statements[] = {
	STORAGE_SQLITE_STMT(begin, "BEGIN IMMEDIATE"),
	STORAGE_SQLITE_STMT(commit, "COMMIT"),
	STORAGE_SQLITE_STMT(rollback, "ROLLBACK"),
	STORAGE_SQLITE_STMT(user_get, storage_sqlite_sql_get),
	STORAGE_SQLITE_STMT(user_put, storage_sqlite_sql_put),
	STORAGE_SQLITE_STMT(user_del, storage_sqlite_sql_del),
	STORAGE_SQLITE_STMT(user_list_all, storage_sqlite_sql_list_all),
	STORAGE_SQLITE_STMT(user_list_domain, storage_sqlite_sql_list_domain),
	STORAGE_SQLITE_STMT(map_get, storage_sqlite_sql_map_get),
	STORAGE_SQLITE_STMT(map_put, storage_sqlite_sql_map_put),
	STORAGE_SQLITE_STMT(map_del, storage_sqlite_sql_map_del),
	STORAGE_SQLITE_STMT(map_del_store, storage_sqlite_sql_map_del_store),
	STORAGE_SQLITE_STMT(map_del_user, storage_sqlite_sql_map_del_user),
	STORAGE_SQLITE_STMT(map_list, storage_sqlite_sql_map_list),
	STORAGE_SQLITE_STMT(map_size, storage_sqlite_sql_map_size),
	STORAGE_SQLITE_STMT(list_push, storage_sqlite_sql_list_push),
	STORAGE_SQLITE_STMT(list_fetch, storage_sqlite_sql_list_fetch),
	STORAGE_SQLITE_STMT(list_page, storage_sqlite_sql_list_page),
	STORAGE_SQLITE_STMT(list_trim, storage_sqlite_sql_list_trim),
	STORAGE_SQLITE_STMT(list_count, storage_sqlite_sql_list_count),
	STORAGE_SQLITE_STMT(list_size, storage_sqlite_sql_list_size),
	STORAGE_SQLITE_STMT(list_del_user, storage_sqlite_sql_list_del_user),
	STORAGE_SQLITE_STMT(archive_put, storage_sqlite_sql_archive_put),
	STORAGE_SQLITE_STMT(archive_put_ref, storage_sqlite_sql_archive_put_ref),
	STORAGE_SQLITE_STMT(archive_ref_has, storage_sqlite_sql_archive_ref_has),
	STORAGE_SQLITE_STMT(archive_text_put, storage_sqlite_sql_archive_text_put),
	STORAGE_SQLITE_STMT(archive_has, storage_sqlite_sql_archive_has),
	STORAGE_SQLITE_STMT(archive_del_user, storage_sqlite_sql_archive_del_user),
	STORAGE_SQLITE_STMT(archive_expire, storage_sqlite_sql_archive_expire),
	STORAGE_SQLITE_STMT(archive_expire_one, storage_sqlite_sql_archive_expire_one),
	STORAGE_SQLITE_STMT(archive_expire_domain, storage_sqlite_sql_archive_expire_domain),
	STORAGE_SQLITE_STMT(archive_last_id, storage_sqlite_sql_archive_last_id),
	STORAGE_SQLITE_STMT(jid_get, storage_sqlite_sql_jid_get),
	STORAGE_SQLITE_STMT(jid_add, storage_sqlite_sql_jid_add),
};

static sqlite3_stmt **storage_sqlite_stmt(struct storage *st, size_t i)
{
	return (sqlite3_stmt **)((char *)st + storage_sqlite_statements[i].offset);
}

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
		/* An existing store: rewriting its archive takes a while
		 * (about 9 s per million entries, and free disk space about
		 * the archive's size until the old pages are reused). */
		if (version > 0)
			log_info("storage sqlite: migrating the schema from version %d to %d", version,
				 version + 1);
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

static void storage_sqlite_jids_forget(struct storage *st)
{
	for (size_t i = 0; st->jids != NULL && i < STORAGE_SQLITE_JIDS; i++) {
		free(st->jids[i].key);
		st->jids[i].key = NULL;
	}
	st->n_jids = 0;
}

static void storage_sqlite_close(struct storage *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < sizeof storage_sqlite_statements / sizeof storage_sqlite_statements[0];
	     i++)
		sqlite3_finalize(*storage_sqlite_stmt(st, i));
	for (int i = 0; i < STORAGE_SQLITE_QCACHE; i++) {
		sqlite3_finalize(st->qcache[i].stmt);
		free(st->qcache[i].sql);
	}
	storage_sqlite_jids_forget(st);
	free(st->jids);
	sqlite3_close(st->db);
	free(st);
}

/* Before SQLite's first use in the process: no statistics of its memory
 * use (natterd reads none), so that each of its allocations does not take
 * a lock every thread shares (a twentieth of the storage thread's time
 * under archive load). */
static void storage_sqlite_configure(void)
{
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static struct storage *storage_sqlite_open(const char *data_dir, char *err, size_t errlen)
{
	static pthread_once_t configured = PTHREAD_ONCE_INIT;
	char path[4096];
	struct storage *st = NULL;

	pthread_once(&configured, storage_sqlite_configure);

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
	    /* Archive indexes are written all over (one leaf per owner):
	     * a page cache of up to 32 MiB keeps them from being read back,
	     * and reads map the file instead of copying it (measured: archive
	     * capacity up by about a tenth, p99 at 25,000 msgs/s 62 -> 5 ms). */
	    storage_sqlite_exec(st->db, "PRAGMA cache_size = -32768", err, errlen) < 0 ||
	    storage_sqlite_exec(st->db, "PRAGMA mmap_size = 268435456", err, errlen) < 0 ||
	    /* Checkpoint every 128 MiB of log rather than 4: a page written
	     * by many commits (an owner's index leaf) is copied back once.
	     * archive-batch -r -t -b 1000 -u 2000: 15.1 us per message at
	     * 32 MiB, 13.4 at 128 MiB (decision 0008). */
	    storage_sqlite_exec(st->db, "PRAGMA wal_autocheckpoint = 32768", err, errlen) < 0 ||
	    storage_sqlite_exec(st->db, "PRAGMA journal_size_limit = 268435456", err, errlen) < 0 ||
	    storage_sqlite_exec(st->db, "PRAGMA foreign_keys = ON", err, errlen) < 0 ||
	    storage_sqlite_migrate(st->db, err, errlen) < 0)
		goto fail_path;

	for (size_t i = 0; i < sizeof storage_sqlite_statements / sizeof storage_sqlite_statements[0];
	     i++) {
		if (sqlite3_prepare_v3(st->db, storage_sqlite_statements[i].sql, -1,
				       SQLITE_PREPARE_PERSISTENT, storage_sqlite_stmt(st, i),
				       NULL) != SQLITE_OK) {
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

/* Steps a statement that returns no rows (BEGIN, COMMIT, ...) and resets
 * it. Returns 0 or -1 (logged). */
static int storage_sqlite_run(struct storage *st, sqlite3_stmt *stmt, const char *what)
{
	int ret = 0;
	if (sqlite3_step(stmt) != SQLITE_DONE)
		ret = storage_sqlite_fail(st, what);
	storage_sqlite_done(stmt);
	return ret;
}

/* user_del's deletions, in the caller's transaction. *found: whether
 * the account row was there. Returns 0 or -1 (logged). */
static int storage_sqlite_user_del_steps(struct storage *st, const char *domain,
					 const char *local, int *found)
{
	sqlite3_stmt *const steps[] = { st->user_del, st->map_del_user, st->list_del_user,
					st->archive_del_user };
	for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
		sqlite3_stmt *stmt = steps[i];
		if (storage_sqlite_bind_text(stmt, 1, domain) < 0 ||
		    storage_sqlite_bind_text(stmt, 2, local) < 0 ||
		    sqlite3_step(stmt) != SQLITE_DONE) {
			storage_sqlite_fail(st, "user_del");
			storage_sqlite_done(stmt);
			return -1;
		}
		if (stmt == st->user_del)
			*found = sqlite3_changes(st->db) > 0;
		storage_sqlite_done(stmt);
	}
	return 0;
}

/* The account row and its stores go in one transaction: a crash or an
 * error never leaves an account without its roster, nor a roster that a
 * new account of the same name would inherit. Inside a transaction (the
 * storage thread's batch) they go in a savepoint of it instead, undone
 * alone if a step fails. */
static int storage_sqlite_user_del(struct storage *st, const char *domain, const char *local)
{
	int found = 0;

	if (!sqlite3_get_autocommit(st->db)) {
		if (sqlite3_exec(st->db, "SAVEPOINT user_del", NULL, NULL, NULL) != SQLITE_OK)
			return storage_sqlite_fail(st, "user_del: savepoint");
		int rc = storage_sqlite_user_del_steps(st, domain, local, &found);
		if (rc < 0)
			sqlite3_exec(st->db, "ROLLBACK TO user_del", NULL, NULL, NULL);
		if (sqlite3_exec(st->db, "RELEASE user_del", NULL, NULL, NULL) != SQLITE_OK)
			return storage_sqlite_fail(st, "user_del: release");
		return rc < 0 ? -1 : found ? 0 : 1;
	}
	if (storage_sqlite_run(st, st->begin, "user_del: begin") < 0)
		return -1;
	if (storage_sqlite_user_del_steps(st, domain, local, &found) < 0)
		goto rollback;
	if (storage_sqlite_run(st, st->commit, "user_del: commit") < 0)
		goto rollback;
	return found ? 0 : 1;

rollback:
	/* A failed COMMIT may already have ended the transaction. */
	if (!sqlite3_get_autocommit(st->db))
		storage_sqlite_run(st, st->rollback, "user_del: rollback");
	return -1;
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

/* Binds the store's owner and name to ?1, ?2, ?3, as every map and list
 * statement takes them. */
static int storage_sqlite_bind_store(sqlite3_stmt *stmt, const char *domain, const char *local,
				     const char *store)
{
	if (storage_sqlite_bind_text(stmt, 1, domain) < 0 ||
	    storage_sqlite_bind_text(stmt, 2, local) < 0 ||
	    storage_sqlite_bind_text(stmt, 3, store) < 0)
		return -1;
	return 0;
}

/* SQLite binds NULL for a NULL pointer whatever the length, and value is
 * NOT NULL: an empty value goes in as a zero-length blob. */
static int storage_sqlite_bind_blob(sqlite3_stmt *stmt, int idx, const void *value, size_t len)
{
	int rc = len == 0 ? sqlite3_bind_zeroblob(stmt, idx, 0)
			  : sqlite3_bind_blob64(stmt, idx, value, len, SQLITE_STATIC);
	return rc == SQLITE_OK ? 0 : -1;
}

/* Reads a value column. SQLite returns NULL for an empty blob; callers get
 * "" instead, so that they may hand it to memcpy. Returns 0, or -1 when
 * SQLite ran out of memory. */
static int storage_sqlite_column_blob(sqlite3_stmt *stmt, int col, const void **value,
				      size_t *len)
{
	const void *v = sqlite3_column_blob(stmt, col);
	int n = sqlite3_column_bytes(stmt, col);
	if (!v && sqlite3_errcode(sqlite3_db_handle(stmt)) == SQLITE_NOMEM)
		return -1;
	if (n < 0 || (!v && n > 0))
		return -1;
	*value = v ? v : "";
	*len = (size_t)n;
	return 0;
}

static int storage_sqlite_map_get(struct storage *st, const char *domain, const char *local,
				  const char *store, const char *key, struct buf *out)
{
	sqlite3_stmt *stmt = st->map_get;
	const void *value;
	size_t len;
	int ret = -1;

	if (storage_sqlite_bind_store(stmt, domain, local, store) < 0 ||
	    storage_sqlite_bind_text(stmt, 4, key) < 0) {
		storage_sqlite_fail(st, "map_get");
		goto out;
	}
	int rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE) {
		ret = 1;
	} else if (rc != SQLITE_ROW || storage_sqlite_column_blob(stmt, 0, &value, &len) < 0) {
		storage_sqlite_fail(st, "map_get");
	} else {
		out->len = 0;
		buf_append(out, value, len);
		ret = 0;
	}
out:
	storage_sqlite_done(stmt);
	return ret;
}

static int storage_sqlite_map_put(struct storage *st, const char *domain, const char *local,
				  const char *store, const char *key, const void *value, size_t len)
{
	sqlite3_stmt *stmt = st->map_put;
	int ret = -1;

	if (storage_sqlite_bind_store(stmt, domain, local, store) < 0 ||
	    storage_sqlite_bind_text(stmt, 4, key) < 0 ||
	    storage_sqlite_bind_blob(stmt, 5, value, len) < 0)
		storage_sqlite_fail(st, "map_put");
	else if (sqlite3_step(stmt) != SQLITE_DONE)
		storage_sqlite_fail(st, "map_put");
	else
		ret = 0;
	storage_sqlite_done(stmt);
	return ret;
}

static int storage_sqlite_map_del(struct storage *st, const char *domain, const char *local,
				  const char *store, const char *key)
{
	sqlite3_stmt *stmt = key ? st->map_del : st->map_del_store;
	int ret = -1;

	if (storage_sqlite_bind_store(stmt, domain, local, store) < 0 ||
	    (key && storage_sqlite_bind_text(stmt, 4, key) < 0))
		storage_sqlite_fail(st, "map_del");
	else if (sqlite3_step(stmt) != SQLITE_DONE)
		storage_sqlite_fail(st, "map_del");
	else
		ret = sqlite3_changes(st->db) > 0 ? 0 : 1;
	storage_sqlite_done(stmt);
	return ret;
}

/* fn runs while the statement is open: it must not write to this handle,
 * nor list the same kind of store again (the statement is shared). Stops
 * before the entry that would bring the bytes listed over max_bytes; the
 * rows after it are never read. */
static int storage_sqlite_map_list_max(struct storage *st, const char *domain,
				       const char *local, const char *store, size_t max_bytes,
				       void (*fn)(void *arg, const char *key, const void *value,
						  size_t len),
				       void *arg)
{
	sqlite3_stmt *stmt = st->map_list;
	const void *value;
	size_t len, total = 0;
	int n = 0, rc;

	if (storage_sqlite_bind_store(stmt, domain, local, store) < 0) {
		storage_sqlite_done(stmt);
		return storage_sqlite_fail(st, "map_list");
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *key = (const char *)sqlite3_column_text(stmt, 0);
		if (!key || storage_sqlite_column_blob(stmt, 1, &value, &len) < 0)
			break;
		total += (size_t)sqlite3_column_bytes(stmt, 0) + len;
		if (total > max_bytes) {
			rc = SQLITE_DONE;
			break;
		}
		fn(arg, key, value, len);
		n++;
	}
	if (rc != SQLITE_DONE)
		n = storage_sqlite_fail(st, "map_list");
	storage_sqlite_done(stmt);
	return n;
}

static int storage_sqlite_map_list(struct storage *st, const char *domain, const char *local,
				   const char *store,
				   void (*fn)(void *arg, const char *key, const void *value,
					      size_t len),
				   void *arg)
{
	return storage_sqlite_map_list_max(st, domain, local, store, SIZE_MAX, fn, arg);
}

/* The count and byte sum of statement stmt (map_size, list_size), bound to
 * one store. Returns the count, or -1. */
static int storage_sqlite_measure(struct storage *st, sqlite3_stmt *stmt, const char *what,
				  const char *domain, const char *local, const char *store,
				  long long *bytes)
{
	int ret = -1;

	if (storage_sqlite_bind_store(stmt, domain, local, store) < 0 ||
	    sqlite3_step(stmt) != SQLITE_ROW) {
		storage_sqlite_fail(st, what);
	} else {
		sqlite3_int64 count = sqlite3_column_int64(stmt, 0);
		*bytes = (long long)sqlite3_column_int64(stmt, 1);
		ret = count > INT_MAX ? INT_MAX : (int)count;
	}
	storage_sqlite_done(stmt);
	return ret;
}

static int storage_sqlite_map_size(struct storage *st, const char *domain, const char *local,
				   const char *store, long long *bytes)
{
	return storage_sqlite_measure(st, st->map_size, "map_size", domain, local, store, bytes);
}

static int storage_sqlite_list_size(struct storage *st, const char *domain, const char *local,
				    const char *store, long long *bytes)
{
	return storage_sqlite_measure(st, st->list_size, "list_size", domain, local, store,
				      bytes);
}

static int storage_sqlite_list_push(struct storage *st, const char *domain, const char *local,
				    const char *store, const void *value, size_t len,
				    long long *id)
{
	sqlite3_stmt *stmt = st->list_push;
	int ret = -1;

	if (storage_sqlite_bind_store(stmt, domain, local, store) < 0 ||
	    sqlite3_bind_int64(stmt, 4, (sqlite3_int64)time(NULL)) != SQLITE_OK ||
	    storage_sqlite_bind_blob(stmt, 5, value, len) < 0) {
		storage_sqlite_fail(st, "list_push");
	} else if (sqlite3_step(stmt) != SQLITE_DONE) {
		storage_sqlite_fail(st, "list_push");
	} else {
		/* Per connection, and this handle is used by one thread. */
		if (id)
			*id = sqlite3_last_insert_rowid(st->db);
		ret = 0;
	}
	storage_sqlite_done(stmt);
	return ret;
}

/* fn runs while the statement is open, as for map_list. */
/* Steps a bound SELECT id, stamp, value through fn; resets it. */
static int storage_sqlite_list_rows(struct storage *st, sqlite3_stmt *stmt, const char *what,
				    void (*fn)(void *arg, long long id, long long stamp,
					       const void *value, size_t len),
				    void *arg)
{
	const void *value;
	size_t len;
	int n = 0, rc;

	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (storage_sqlite_column_blob(stmt, 2, &value, &len) < 0)
			break;
		fn(arg, sqlite3_column_int64(stmt, 0), sqlite3_column_int64(stmt, 1), value, len);
		n++;
	}
	if (rc != SQLITE_DONE)
		n = storage_sqlite_fail(st, what);
	storage_sqlite_done(stmt);
	return n;
}

static int storage_sqlite_list_fetch(struct storage *st, const char *domain, const char *local,
				     const char *store,
				     void (*fn)(void *arg, long long id, long long stamp,
						const void *value, size_t len),
				     void *arg)
{
	sqlite3_stmt *stmt = st->list_fetch;
	if (storage_sqlite_bind_store(stmt, domain, local, store) < 0) {
		storage_sqlite_done(stmt);
		return storage_sqlite_fail(st, "list_fetch");
	}
	return storage_sqlite_list_rows(st, stmt, "list_fetch", fn, arg);
}

static int storage_sqlite_list_page(struct storage *st, const char *domain, const char *local,
				    const char *store, long long after_id, int max_items,
				    void (*fn)(void *arg, long long id, long long stamp,
					       const void *value, size_t len),
				    void *arg)
{
	sqlite3_stmt *stmt = st->list_page;
	if (storage_sqlite_bind_store(stmt, domain, local, store) < 0 ||
	    sqlite3_bind_int64(stmt, 4, (sqlite3_int64)after_id) != SQLITE_OK ||
	    sqlite3_bind_int(stmt, 5, max_items) != SQLITE_OK) {
		storage_sqlite_done(stmt);
		return storage_sqlite_fail(st, "list_page");
	}
	return storage_sqlite_list_rows(st, stmt, "list_page", fn, arg);
}

static int storage_sqlite_list_trim(struct storage *st, const char *domain, const char *local,
				    const char *store, long long max_id)
{
	sqlite3_stmt *stmt = st->list_trim;
	int ret = -1;

	if (storage_sqlite_bind_store(stmt, domain, local, store) < 0 ||
	    sqlite3_bind_int64(stmt, 4, (sqlite3_int64)max_id) != SQLITE_OK)
		storage_sqlite_fail(st, "list_trim");
	else if (sqlite3_step(stmt) != SQLITE_DONE)
		storage_sqlite_fail(st, "list_trim");
	else
		ret = 0;
	storage_sqlite_done(stmt);
	return ret;
}

static int storage_sqlite_list_count(struct storage *st, const char *domain, const char *local,
				     const char *store)
{
	sqlite3_stmt *stmt = st->list_count;
	int ret = -1;

	if (storage_sqlite_bind_store(stmt, domain, local, store) < 0 ||
	    sqlite3_step(stmt) != SQLITE_ROW) {
		storage_sqlite_fail(st, "list_count");
	} else {
		sqlite3_int64 count = sqlite3_column_int64(stmt, 0);
		ret = count > INT_MAX ? INT_MAX : (int)count;
	}
	storage_sqlite_done(stmt);
	return ret;
}

/* --- archives --- */

/* A bare JID as archive_jid keeps it: "local@domain" as (domain, local),
 * a domain alone with local "". */
struct storage_sqlite_bare {
	const char *domain, *local;
	int dlen, llen;
};

static struct storage_sqlite_bare storage_sqlite_split(const char *bare)
{
	const char *at = strchr(bare, '@');
	if (at == NULL)
		return (struct storage_sqlite_bare){ bare, "", (int)strlen(bare), 0 };
	return (struct storage_sqlite_bare){ at + 1, bare, (int)strlen(at + 1), (int)(at - bare) };
}

/* Binds j as ?1 (domain) and ?2 (local) and steps stmt once. */
static int storage_sqlite_jid_step(sqlite3_stmt *stmt, const struct storage_sqlite_bare *j)
{
	if (sqlite3_bind_text(stmt, 1, j->domain, j->dlen, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_text(stmt, 2, j->local, j->llen, SQLITE_STATIC) != SQLITE_OK)
		return SQLITE_ERROR;
	return sqlite3_step(stmt);
}

/* The archive_jid id of j, added if new. Returns the id, or -1 (logged). */
static long long storage_sqlite_jid_id(struct storage *st, const struct storage_sqlite_bare *j)
{
	char key[2048];
	struct storage_sqlite_jid *slot = NULL;
	if ((size_t)j->llen + (size_t)j->dlen + 2 <= sizeof key &&
	    (st->jids != NULL || (st->jids = calloc(STORAGE_SQLITE_JIDS, sizeof *st->jids)) != NULL)) {
		char *k = key;
		memcpy(k, j->local, (size_t)j->llen);
		k += j->llen;
		if (j->llen)
			*k++ = '@';
		memcpy(k, j->domain, (size_t)j->dlen);
		k[j->dlen] = '\0';
		size_t i = str_hash(key) & (STORAGE_SQLITE_JIDS - 1);
		while (st->jids[i].key != NULL && strcmp(st->jids[i].key, key) != 0)
			i = (i + 1) & (STORAGE_SQLITE_JIDS - 1);
		if (st->jids[i].key != NULL)
			return st->jids[i].id;
		slot = &st->jids[i];
	}
	int rc = storage_sqlite_jid_step(st->jid_get, j);
	if (rc == SQLITE_DONE) { /* new: added, then read back */
		storage_sqlite_done(st->jid_get);
		rc = storage_sqlite_jid_step(st->jid_add, j);
		storage_sqlite_done(st->jid_add);
		if (rc == SQLITE_DONE)
			rc = storage_sqlite_jid_step(st->jid_get, j);
	}
	long long id = rc == SQLITE_ROW ? sqlite3_column_int64(st->jid_get, 0) : -1;
	storage_sqlite_done(st->jid_get);
	if (id < 0)
		return storage_sqlite_fail(st, "archive: archive_jid");
	if (slot != NULL) {
		if (st->n_jids >= STORAGE_SQLITE_JIDS / 4 * 3) {
			storage_sqlite_jids_forget(st);
			return id; /* the slot was emptied with the rest */
		}
		slot->key = strdup(key);
		if (slot->key != NULL) {
			slot->id = id;
			st->n_jids++;
		}
	}
	return id;
}

static int storage_sqlite_archive_put(struct storage *st, const char *domain, const char *local,
				      const struct archive_entry *e)
{
	sqlite3_stmt *stmt = e->ref ? st->archive_put_ref : st->archive_put;
	int ret = -1;
	if (e->ref) {
		sqlite3_stmt *has = st->archive_ref_has;
		int rc = sqlite3_bind_int64(has, 1, (sqlite3_int64)e->ref) == SQLITE_OK
				 ? sqlite3_step(has) : SQLITE_ERROR;
		storage_sqlite_done(has);
		if (rc == SQLITE_DONE)
			log_error("storage: archive entry %lld refers to %lld, which is not stored",
				  e->id, e->ref);
		if (rc != SQLITE_ROW)
			return rc == SQLITE_DONE ? -1 : storage_sqlite_fail(st, "archive_put: ref");
	}
	struct storage_sqlite_bare o = { domain, local, (int)strlen(domain), (int)strlen(local) };
	struct storage_sqlite_bare w = storage_sqlite_split(e->with);
	long long owner = storage_sqlite_jid_id(st, &o);
	long long with = owner < 0 ? -1 : storage_sqlite_jid_id(st, &w);
	if (with < 0)
		return -1;
	if (sqlite3_bind_int64(stmt, 1, (sqlite3_int64)e->id) != SQLITE_OK ||
	    sqlite3_bind_int64(stmt, 2, (sqlite3_int64)owner) != SQLITE_OK ||
	    sqlite3_bind_int64(stmt, 3, (sqlite3_int64)with) != SQLITE_OK ||
	    storage_sqlite_bind_text(stmt, 5, e->with_resource ? e->with_resource : "") < 0 ||
	    sqlite3_bind_int(stmt, 6, e->outgoing ? 1 : 0) != SQLITE_OK ||
	    (e->ref ? sqlite3_bind_int64(stmt, 8, (sqlite3_int64)e->ref) != SQLITE_OK
		    : storage_sqlite_bind_blob(stmt, 7, e->value, e->len) < 0) ||
	    sqlite3_step(stmt) != SQLITE_DONE)
		storage_sqlite_fail(st, "archive_put");
	else
		ret = 0;
	storage_sqlite_done(stmt);
	if (ret == 0 && !e->ref && e->body != NULL && e->body[0] != '\0') {
		stmt = st->archive_text_put;
		if (sqlite3_bind_int64(stmt, 1, (sqlite3_int64)e->id) != SQLITE_OK ||
		    storage_sqlite_bind_text(stmt, 2, e->body) < 0 ||
		    sqlite3_step(stmt) != SQLITE_DONE)
			ret = storage_sqlite_fail(st, "archive_put: text");
		storage_sqlite_done(stmt);
	}
	return ret;
}

/* The words of text as an FTS5 query: each word quoted (quotes doubled),
 * so that nothing a user types is FTS5 syntax; all must match. Returns
 * -1 when there is no word. */
static int storage_sqlite_fts_words(const char *text, struct buf *out)
{
	int words = 0;
	const char *p = text;
	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!*p)
			break;
		if (words++)
			buf_puts(out, " ");
		buf_puts(out, "\"");
		for (; *p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r'; p++)
			buf_append(out, *p == '"' ? "\"\"" : p, *p == '"' ? 2 : 1);
		buf_puts(out, "\"");
	}
	buf_append(out, "", 1); /* NUL */
	return words > 0 ? 0 : -1;
}

/* A compiled statement for sql from the handle's cache (compiled and
 * cached on a miss, replacing the oldest), reset and unbound; NULL on
 * error. The caller resets it when done, never finalizes it. */
static sqlite3_stmt *storage_sqlite_cached_stmt(struct storage *st, const char *sql)
{
	for (int i = 0; i < STORAGE_SQLITE_QCACHE; i++) {
		struct storage_sqlite_cached *c = &st->qcache[i];
		if (c->sql != NULL && strcmp(c->sql, sql) == 0) {
			sqlite3_reset(c->stmt);
			sqlite3_clear_bindings(c->stmt);
			return c->stmt;
		}
	}
	sqlite3_stmt *stmt;
	if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL) != SQLITE_OK)
		return NULL;
	struct storage_sqlite_cached *c = &st->qcache[st->qcache_next++ % STORAGE_SQLITE_QCACHE];
	sqlite3_finalize(c->stmt);
	free(c->sql);
	c->sql = xstrdup(sql);
	c->stmt = stmt;
	return stmt;
}

/* The WHERE clause of a query: fixed SQL with numbered parameters; the
 * values are bound by storage_sqlite_archive_bind. page adds the RSM
 * bounds. */
static void storage_sqlite_archive_where(const struct archive_query *q, bool page, struct buf *sql)
{
	buf_puts(sql, " FROM archive WHERE " STORAGE_SQLITE_OWNER);
	if (q->with != NULL)
		buf_puts(sql, " AND with_jid = (SELECT id FROM archive_jid WHERE domain = ?10"
			      " AND local = ?11)");
	if (q->with_resource != NULL)
		buf_puts(sql, " AND with_res = ?4");
	if (q->after_id > 0)
		buf_puts(sql, " AND id > ?5");
	if (q->before_id > 0)
		buf_puts(sql, " AND id < ?6");
	if (page && q->page_after > 0)
		buf_puts(sql, " AND id > ?7");
	if (page && q->page_before > 0)
		buf_puts(sql, " AND id < ?8");
	if (q->text != NULL)
		buf_puts(sql, " AND coalesce(ref, id) IN"
			      " (SELECT rowid FROM archive_text WHERE archive_text MATCH ?9)");
	if (q->n_ids > 0) {
		buf_puts(sql, " AND id IN (");
		for (int i = 0; i < q->n_ids; i++)
			buf_printf(sql, "%s?%d", i ? ", " : "", 20 + i);
		buf_puts(sql, ")");
	}
}

static int storage_sqlite_archive_bind(sqlite3_stmt *stmt, const char *domain, const char *local,
				       const struct archive_query *q, const char *fts)
{
	struct storage_sqlite_bare w = storage_sqlite_split(q->with != NULL ? q->with : "");
	/* Unused numbers stay NULL; sqlite3_bind_parameter_index tells which
	 * the statement has. */
	struct {
		const char *name;
		bool text;
		const char *s;
		int len; /* of s; -1: to its end */
		long long num;
	} params[] = {
		{ "?1", true, domain, -1, 0 },
		{ "?2", true, local, -1, 0 },
		{ "?4", true, q->with_resource, -1, 0 },
		{ "?5", false, NULL, 0, q->after_id },
		{ "?6", false, NULL, 0, q->before_id },
		{ "?7", false, NULL, 0, q->page_after },
		{ "?8", false, NULL, 0, q->page_before },
		{ "?9", true, fts, -1, 0 },
		{ "?10", true, w.domain, w.dlen, 0 },
		{ "?11", true, w.local, w.llen, 0 },
	};
	for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
		int idx = sqlite3_bind_parameter_index(stmt, params[i].name);
		if (idx == 0)
			continue;
		int rc = params[i].text
				 ? sqlite3_bind_text(stmt, idx, params[i].s, params[i].len, SQLITE_STATIC)
				 : sqlite3_bind_int64(stmt, idx, params[i].num);
		if (rc != SQLITE_OK)
			return -1;
	}
	for (int i = 0; i < q->n_ids; i++) {
		char name[16];
		snprintf(name, sizeof name, "?%d", 20 + i);
		int idx = sqlite3_bind_parameter_index(stmt, name);
		if (idx == 0 || sqlite3_bind_int64(stmt, idx, q->ids[i]) != SQLITE_OK)
			return -1;
	}
	return 0;
}

/* An entry of a page collected newest first, to be handed out oldest
 * first. */
struct storage_sqlite_row {
	long long id;
	int outgoing;
	size_t len;
	char *with;
	char *value;
};

static int storage_sqlite_archive_query(struct storage *st, const char *domain, const char *local,
					const struct archive_query *q,
					void (*fn)(void *arg, long long id, const void *value,
						   size_t len, int outgoing, const char *with),
					void *arg, bool *complete, long long *count)
{
	struct buf sql, fts;
	buf_init(&sql);
	buf_init(&fts);
	int n = -1, max = q->max < 0 ? 0 : q->max;
	sqlite3_stmt *stmt = NULL;
	struct storage_sqlite_row *rows = NULL;
	int n_rows = 0;
	*complete = true;
	if (q->n_ids > 1000)
		goto out; /* beyond SQLite's parameters; the caller bounds it */
	if (q->text != NULL && storage_sqlite_fts_words(q->text, &fts) < 0) {
		n = 0; /* no word at all: nothing can match */
		if (count)
			*count = 0;
		goto out;
	}
	const char *fts_text = q->text != NULL ? fts.data : NULL;
	if (count != NULL) {
		/* Counting walks every match: bounded, beyond it the count is
		 * left out (XEP-0313 makes it optional for this reason). */
		buf_puts(&sql, "SELECT count(*) FROM (SELECT 1");
		storage_sqlite_archive_where(q, false, &sql);
		buf_printf(&sql, " LIMIT %d)", ARCHIVE_COUNT_MAX + 1);
		buf_append(&sql, "", 1);
		if ((stmt = storage_sqlite_cached_stmt(st, sql.data)) == NULL ||
		    storage_sqlite_archive_bind(stmt, domain, local, q, fts_text) < 0 ||
		    sqlite3_step(stmt) != SQLITE_ROW) {
			storage_sqlite_fail(st, "archive_query: count");
			goto out;
		}
		*count = sqlite3_column_int64(stmt, 0);
		if (*count > ARCHIVE_COUNT_MAX)
			*count = -1;
		sqlite3_reset(stmt);
		stmt = NULL;
		sql.len = 0;
	}
	buf_puts(&sql, "SELECT id, outgoing, (SELECT CASE local WHEN '' THEN domain"
		       " ELSE local || '@' || domain END FROM archive_jid WHERE archive_jid.id ="
		       " archive.with_jid), with_res, CASE WHEN ref IS NULL THEN value"
		       " ELSE (SELECT r.value FROM archive r WHERE r.id = archive.ref) END");
	storage_sqlite_archive_where(q, true, &sql);
	buf_printf(&sql, " ORDER BY id %s LIMIT %d", q->from_end ? "DESC" : "ASC", max + 1);
	buf_append(&sql, "", 1);
	if ((stmt = storage_sqlite_cached_stmt(st, sql.data)) == NULL ||
	    storage_sqlite_archive_bind(stmt, domain, local, q, fts_text) < 0) {
		storage_sqlite_fail(st, "archive_query");
		goto out;
	}
	rows = calloc((size_t)max + 1, sizeof *rows);
	if (rows == NULL)
		goto out;
	size_t bytes = 0;
	int rc;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const void *value;
		size_t len;
		if (storage_sqlite_column_blob(stmt, 4, &value, &len) < 0) {
			rc = SQLITE_ERROR;
			break;
		}
		if (n_rows == max || (n_rows > 0 && bytes + len > q->max_bytes)) {
			*complete = false; /* one more matches beyond the page */
			rc = SQLITE_DONE;
			break;
		}
		const char *wb = (const char *)sqlite3_column_text(stmt, 2);
		const char *wr = (const char *)sqlite3_column_text(stmt, 3);
		struct storage_sqlite_row *r = &rows[n_rows++];
		r->id = sqlite3_column_int64(stmt, 0);
		r->outgoing = sqlite3_column_int(stmt, 1);
		size_t wl = strlen(wb ? wb : ""), rl = strlen(wr ? wr : "");
		r->with = malloc(wl + rl + 2);
		r->value = malloc(len ? len : 1);
		if (r->with == NULL || r->value == NULL) {
			rc = SQLITE_NOMEM;
			break;
		}
		snprintf(r->with, wl + rl + 2, "%s%s%s", wb ? wb : "", rl ? "/" : "", wr ? wr : "");
		memcpy(r->value, value, len);
		r->len = len;
		bytes += len;
	}
	if (rc != SQLITE_DONE) {
		storage_sqlite_fail(st, "archive_query");
		goto out;
	}
	for (int i = 0; i < n_rows; i++) {
		struct storage_sqlite_row *r = &rows[q->from_end ? n_rows - 1 - i : i];
		fn(arg, r->id, r->value, r->len, r->outgoing, r->with);
	}
	n = n_rows;
out:
	for (int i = 0; i < n_rows; i++) {
		free(rows[i].with);
		free(rows[i].value);
	}
	free(rows);
	if (stmt != NULL)
		sqlite3_reset(stmt); /* cached: kept compiled */
	buf_free(&sql);
	buf_free(&fts);
	return n;
}

static int storage_sqlite_archive_has(struct storage *st, const char *domain, const char *local,
				      long long id)
{
	sqlite3_stmt *stmt = st->archive_has;
	int ret = -1, rc;
	if (storage_sqlite_bind_text(stmt, 1, domain) < 0 ||
	    storage_sqlite_bind_text(stmt, 2, local) < 0 ||
	    sqlite3_bind_int64(stmt, 3, (sqlite3_int64)id) != SQLITE_OK)
		storage_sqlite_fail(st, "archive_has");
	else if ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
		ret = 1;
	else if (rc == SQLITE_DONE)
		ret = 0;
	else
		storage_sqlite_fail(st, "archive_has");
	storage_sqlite_done(stmt);
	return ret;
}

static long long storage_sqlite_archive_delete(struct storage *st, const char *domain,
					       const char *local, long long before_id)
{
	sqlite3_stmt *stmt = !domain ? st->archive_expire
			     : local ? st->archive_expire_one : st->archive_expire_domain;
	long long ret = -1;
	int ok = !domain ? sqlite3_bind_int64(stmt, 1, before_id) == SQLITE_OK
		 : local ? storage_sqlite_bind_text(stmt, 1, domain) == 0 &&
				   storage_sqlite_bind_text(stmt, 2, local) == 0 &&
				   sqlite3_bind_int64(stmt, 3, before_id) == SQLITE_OK
			 : storage_sqlite_bind_text(stmt, 1, domain) == 0 &&
				   sqlite3_bind_int64(stmt, 2, before_id) == SQLITE_OK;
	if (!ok || sqlite3_step(stmt) != SQLITE_DONE)
		storage_sqlite_fail(st, "archive_delete");
	else
		ret = sqlite3_changes64(st->db);
	storage_sqlite_done(stmt);
	return ret;
}

static long long storage_sqlite_archive_last_id(struct storage *st)
{
	sqlite3_stmt *stmt = st->archive_last_id;
	long long ret = -1;
	if (sqlite3_step(stmt) == SQLITE_ROW)
		ret = sqlite3_column_int64(stmt, 0);
	else
		storage_sqlite_fail(st, "archive_last_id");
	storage_sqlite_done(stmt);
	return ret;
}

/* Batches of writes (directory groups: one owner's roster at a time) pay
 * for one commit instead of one per write. */
static int storage_sqlite_begin(struct storage *st)
{
	return storage_sqlite_run(st, st->begin, "begin");
}

static int storage_sqlite_end(struct storage *st, int commit)
{
	if (commit && storage_sqlite_run(st, st->commit, "commit") == 0)
		return 0;
	if (!sqlite3_get_autocommit(st->db))
		storage_sqlite_run(st, st->rollback, "rollback");
	storage_sqlite_jids_forget(st); /* the ids the transaction added are gone */
	return commit ? -1 : 0;
}

const struct storage_driver storage_sqlite_driver = {
	.name = "sqlite",
	.open = storage_sqlite_open,
	.close = storage_sqlite_close,
	.user_get = storage_sqlite_user_get,
	.user_put = storage_sqlite_user_put,
	.user_del = storage_sqlite_user_del,
	.user_list = storage_sqlite_user_list,
	.map_get = storage_sqlite_map_get,
	.map_put = storage_sqlite_map_put,
	.map_del = storage_sqlite_map_del,
	.map_list = storage_sqlite_map_list,
	.map_list_max = storage_sqlite_map_list_max,
	.map_size = storage_sqlite_map_size,
	.list_push = storage_sqlite_list_push,
	.list_fetch = storage_sqlite_list_fetch,
	.list_page = storage_sqlite_list_page,
	.list_trim = storage_sqlite_list_trim,
	.list_count = storage_sqlite_list_count,
	.list_size = storage_sqlite_list_size,
	.archive_put = storage_sqlite_archive_put,
	.archive_query = storage_sqlite_archive_query,
	.archive_has = storage_sqlite_archive_has,
	.archive_delete = storage_sqlite_archive_delete,
	.archive_last_id = storage_sqlite_archive_last_id,
	.begin = storage_sqlite_begin,
	.end = storage_sqlite_end,
};
