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
#include <stdbool.h>
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
 * released migration is never edited. A migration of exactly two string
 * pieces trips clang's -Wstring-concatenation (the fuzz build, -Werror):
 * write it on one line, or in three pieces or more. */
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
	/* 5 -> 6: archives in blocks, one per owner per commit (decision
	 * 0008, "Blocks"); storage_sqlite_migrate_blocks moves the entries
	 * and their text. The index carries the bounds and the count, so a
	 * walk and a count read no block it does not need. */
	"CREATE TABLE archive_block ("
	" id INTEGER PRIMARY KEY,"
	" owner INTEGER NOT NULL,"
	" first_id INTEGER NOT NULL,"
	" last_id INTEGER NOT NULL,"
	" n INTEGER NOT NULL,"
	" data BLOB NOT NULL"
	");"
	"CREATE INDEX archive_block_owner ON archive_block (owner, last_id, first_id, n);",
	/* 6 -> 7: the archive's log, entries committed and not in blocks
	 * yet (decision 0008, "The log"). */
	"CREATE TABLE archive_log (id INTEGER PRIMARY KEY, slice INT NOT NULL, data BLOB NOT NULL);",
	/* 7 -> 8: FTS5 merges 8 segments of a level at a time instead of 4
	 * (fewer levels, each word rewritten fewer times), and all of a
	 * level at once only at 64 instead of 16, so that the bigger merges
	 * stay spread over the commits (decision 0008, "The text and the
	 * queue"). */
	"INSERT INTO archive_text (archive_text, rank) VALUES ('automerge', 8), ('crisismerge', 64);",
	/* 8 -> 9: an archive's words are indexed when it is first searched
	 * (decision 0008, "Words on demand"): each owner's are up to upto
	 * (owner 0: every owner's), and everything stored before is. */
	"CREATE TABLE archive_text_upto (owner INTEGER PRIMARY KEY, upto INTEGER NOT NULL);"
	"INSERT INTO archive_text_upto (owner, upto)"
	" SELECT 0, coalesce(max(last_id), 0) FROM archive_block;",
};

#define STORAGE_SQLITE_VERSION \
	(sizeof storage_sqlite_migrations / sizeof storage_sqlite_migrations[0])

/* --- archive blocks: the format --- */

/* Since schema 6 an archive is kept in blocks (decision 0008, "Blocks"):
 * the storage thread gathers the entries of a transaction and writes, per
 * owner, one row of archive_block holding that owner's entries of the
 * transaction in id order, under one index entry (owner, last_id,
 * first_id, n), instead of a row and an index entry per entry. On
 * SQLite alone, 2,000 owners, a commit of 2,048 local messages costs 9.3
 * us per message against 14.6 for rows, 4,096 cost 7.3 against 12.3
 * (build/archive-batch -t -k against -t -r -i, which copies local
 * messages). A message between two local accounts is stored once: the
 * recipient's entry links to the sender's (both written in one
 * transaction, as nearly always), and deleting the sender's entry first
 * hands its value and text over to the recipient's (a block rewritten).
 * An owner's blocks never overlap: an entry older than the owner's last
 * block (ids are taken on the loops, so they reach the thread slightly
 * out of order) is merged into the blocks it falls in. A message's words
 * are one row of archive_text, a contentless FTS5 table, under the id of
 * the entry holding its body (the body is in the block; deleting a row
 * hands FTS5 the body back).
 *
 * A block: one byte, the format (1), then its entries, each
 *   id (8 bytes, little-endian), flags (1 byte), with (8 bytes, the
 *   archive_jid id), with LINK, TWIN or COPY a link (8 bytes), then the
 *   resource, the body and the value, each a varint length and its
 *   bytes.
 *
 * Since schema 7 entries are held for several transactions (decision
 * 0008, "The log"). The owners fall into ARCHIVE_SLICES slices (owner id
 * modulo); a commit writes the held entries of one slice, in turn, as
 * blocks, and the transaction's other new entries as rows of
 * archive_log, one per slice, appended. So a block holds the entries of
 * ARCHIVE_SLICES commits, and a commit rewrites the index leaves of a
 * slice's owners only, with no burst of writing every owner at once.
 * Everything held becomes blocks before anything reads or deletes an
 * archive, beyond ARCHIVE_HOLD_ENTRIES or ARCHIVE_HOLD_BYTES, and when
 * the handle closes. A handle that finds archive_log other than it left
 * it (natterd after kill -9; natterctl; another process) reads it back
 * first (archive_log_sync). A row of archive_log: its slice, and the
 * format (1) then entries as in a block, each after its owner (8 bytes).
 * An entry is a TWIN in the log only through the LINK naming it, which
 * may be in a later row. */

#define ARCHIVE_BLOCK_FORMAT 1
#define ARCHIVE_F_OUTGOING 1
/* Words in archive_text, under archive_text_id(). */
#define ARCHIVE_F_TEXT 2
/* Body and value are those of entry `link` of the archive of `with`
 * (none here). */
#define ARCHIVE_F_LINK 4
/* Entry `link` of the archive of `with` is a LINK to this one. */
#define ARCHIVE_F_TWIN 8
/* Was a LINK; has its own body and value now, its text still under
 * `link`. */
#define ARCHIVE_F_COPY 16
#define ARCHIVE_F_LINKED (ARCHIVE_F_LINK | ARCHIVE_F_TWIN | ARCHIVE_F_COPY)
/* A block holds at most so many entries and bytes (of values): a query
 * decodes whole blocks. */
#define ARCHIVE_BLOCK_ENTRIES 256
#define ARCHIVE_BLOCK_BYTES (64 * 1024)
/* The slices of held entries (see above), and when all that is held
 * becomes blocks at once: so many entries or bytes (of resources, bodies
 * and values). */
#define ARCHIVE_SLICES 16
#define ARCHIVE_HOLD_ENTRIES 262144
#define ARCHIVE_HOLD_BYTES (64u << 20)
/* The buffers of held entries and blocks are kept after they are written
 * up to this size. */
#define ARCHIVE_PEND_KEEP (32u << 20)
/* The owners whose last block the handle knows, to see an entry that
 * falls before it (a merge) without a read: a table that starts small
 * and doubles up to this many slots. */
#define ARCHIVE_LASTS 65536
#define ARCHIVE_LASTS_FIRST 256
/* A full-text query reads at most so many matching ids at once; beyond,
 * each entry of the archive is asked of FTS5 alone. */
#define ARCHIVE_TEXT_IDS 100000
/* A search indexes the words of at most so many entries, or so many
 * bytes of bodies, of its archive not searched before
 * (archive_text_catch_up); beyond, it answers that it is busy. */
#define ARCHIVE_TEXT_CATCHUP 100000
#define ARCHIVE_TEXT_CATCHUP_BYTES (32u << 20)
/* A LINK is written within this many microseconds of the entry it
 * names (the same deliver_stanza; a minute is ample). */
#define ARCHIVE_LINK_SPAN 60000000LL

/* One entry, decoded (pointers into its block) or pending. */
struct archive_item {
	long long id, with, link;
	int flags;
	const char *res, *body;
	const void *value;
	size_t res_len, body_len, value_len;
};

/* A block as read (bytes) and its entries decoded (pointing into it). */
struct archive_dec {
	struct buf bytes;
	struct archive_item *items;
	size_t cap;
};

/* A held entry (not in a block yet): its bytes (resource, body, value) in
 * its slice's bytes at off. */
struct archive_pend {
	long long owner, id, with, link;
	int flags;
	size_t off, res_len, body_len, value_len;
};

/* The held entries of one slice, in the order they came: the first
 * n_logged are in archive_log. */
struct archive_slice {
	struct archive_pend *pend;
	size_t n, cap, n_logged;
	struct buf bytes;
	long long min_id; /* the lowest id held */
};

struct archive_last {
	long long owner; /* 0: a free slot */
	long long last;
};

/* A row of archive_text_upto: owner's words are indexed up to id upto. */
struct archive_upto {
	long long owner, upto;
};

static void archive_u64(struct buf *b, unsigned long long v)
{
	unsigned char p[8];
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
	buf_append(b, p, 8);
}

static void archive_varint(struct buf *b, size_t v)
{
	unsigned char p[10];
	int n = 0;
	do {
		p[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v > 0);
	buf_append(b, p, (size_t)n);
}

static void archive_encode(struct buf *b, const struct archive_item *it)
{
	archive_u64(b, (unsigned long long)it->id);
	unsigned char f = (unsigned char)it->flags;
	buf_append(b, &f, 1);
	archive_u64(b, (unsigned long long)it->with);
	if (it->flags & ARCHIVE_F_LINKED)
		archive_u64(b, (unsigned long long)it->link);
	archive_varint(b, it->res_len);
	buf_append(b, it->res, it->res_len);
	archive_varint(b, it->body_len);
	buf_append(b, it->body, it->body_len);
	archive_varint(b, it->value_len);
	buf_append(b, it->value, it->value_len);
}

static int archive_get_u64(const unsigned char **p, const unsigned char *end, long long *out)
{
	if (end - *p < 8)
		return -1;
	unsigned long long v = 0;
	for (int i = 0; i < 8; i++)
		v |= (unsigned long long)(*p)[i] << (8 * i);
	*p += 8;
	*out = (long long)v;
	return 0;
}

/* A varint length and that many bytes. */
static int archive_get_bytes(const unsigned char **p, const unsigned char *end, const void **out,
			     size_t *len)
{
	size_t v = 0;
	for (int shift = 0;; shift += 7) {
		if (*p == end || shift > 56)
			return -1;
		unsigned char c = *(*p)++;
		v |= (size_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			break;
	}
	if ((size_t)(end - *p) < v)
		return -1;
	*out = *p;
	*len = v;
	*p += v;
	return 0;
}

/* Decodes the entry at *p (archive_encode's bytes). Returns 0 or -1. */
static int archive_decode_one(const unsigned char **p, const unsigned char *end,
			      struct archive_item *it)
{
	const void *res, *body;
	if (archive_get_u64(p, end, &it->id) < 0 || *p == end)
		return -1;
	it->flags = *(*p)++;
	it->link = 0;
	if (archive_get_u64(p, end, &it->with) < 0 ||
	    ((it->flags & ARCHIVE_F_LINKED) && archive_get_u64(p, end, &it->link) < 0) ||
	    archive_get_bytes(p, end, &res, &it->res_len) < 0 ||
	    archive_get_bytes(p, end, &body, &it->body_len) < 0 ||
	    archive_get_bytes(p, end, &it->value, &it->value_len) < 0)
		return -1;
	it->res = res;
	it->body = body;
	return 0;
}

/* Decodes a block into *items after the n entries there (grown as
 * needed; *cap its room). Returns the number of entries then, or -1 for a
 * block natter did not write. */
static long archive_decode(const void *data, size_t len, struct archive_item **items, size_t *cap,
			   size_t n)
{
	const unsigned char *p = data, *end = p + len;
	if (len == 0 || *p++ != ARCHIVE_BLOCK_FORMAT)
		return -1;
	while (p < end) {
		if (n == *cap) {
			*cap = *cap ? *cap * 2 : 64;
			*items = xrealloc(*items, *cap * sizeof **items);
		}
		if (archive_decode_one(&p, end, &(*items)[n++]) < 0)
			return -1;
	}
	return (long)n;
}

static int archive_item_cmp(const void *a, const void *b)
{
	long long x = ((const struct archive_item *)a)->id, y = ((const struct archive_item *)b)->id;
	return x < y ? -1 : x > y;
}

/* The rowid of an entry's words in archive_text. */
static long long archive_text_id(const struct archive_item *it)
{
	return it->flags & (ARCHIVE_F_LINK | ARCHIVE_F_COPY) ? it->link : it->id;
}

/* Writes items (sorted by id) of owner as blocks. Returns 0 or -1. */
static int archive_write_blocks(sqlite3 *db, sqlite3_stmt *ins, long long owner,
				const struct archive_item *items, size_t n, struct buf *scratch)
{
	size_t i = 0;
	while (i < n) {
		size_t k = i, bytes = 0;
		scratch->len = 0;
		unsigned char fmt = ARCHIVE_BLOCK_FORMAT;
		buf_append(scratch, &fmt, 1);
		while (k < n && k - i < ARCHIVE_BLOCK_ENTRIES &&
		       (k == i || bytes + items[k].value_len <= ARCHIVE_BLOCK_BYTES)) {
			archive_encode(scratch, &items[k]);
			bytes += items[k].value_len;
			k++;
		}
		int rc = sqlite3_bind_int64(ins, 1, owner) == SQLITE_OK &&
				 sqlite3_bind_int64(ins, 2, items[i].id) == SQLITE_OK &&
				 sqlite3_bind_int64(ins, 3, items[k - 1].id) == SQLITE_OK &&
				 sqlite3_bind_int64(ins, 4, (sqlite3_int64)(k - i)) == SQLITE_OK &&
				 sqlite3_bind_blob64(ins, 5, scratch->data, scratch->len,
						     SQLITE_STATIC) == SQLITE_OK
			 ? sqlite3_step(ins)
			 : SQLITE_ERROR;
		sqlite3_reset(ins);
		sqlite3_clear_bindings(ins);
		if (rc != SQLITE_DONE) {
			log_error("storage sqlite: archive block: %s", sqlite3_errmsg(db));
			return -1;
		}
		i = k;
	}
	return 0;
}

static const char storage_sqlite_sql_block_put[] =
	"INSERT INTO archive_block (owner, first_id, last_id, n, data) VALUES (?1, ?2, ?3, ?4, ?5)";


/* Every statement is listed in storage_sqlite_statements below, which
 * prepares and finalizes them. */

/* The handle's table of archive_jid ids: open addressing, emptied when
 * three quarters full. */
#define STORAGE_SQLITE_JIDS 16384

struct storage_sqlite_jid {
	char *key; /* "local@domain", or "domain"; NULL: a free slot */
	long long id;
};


struct storage {
	sqlite3 *db;
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
	sqlite3_stmt *block_put;
	sqlite3_stmt *block_last;
	sqlite3_stmt *block_from;
	sqlite3_stmt *block_del;
	sqlite3_stmt *block_update;
	sqlite3_stmt *block_data;
	sqlite3_stmt *block_at;
	sqlite3_stmt *blocks_up;
	sqlite3_stmt *blocks_down;
	sqlite3_stmt *text_put;
	sqlite3_stmt *text_del;
	sqlite3_stmt *text_ids;
	sqlite3_stmt *text_one;
	sqlite3_stmt *upto_all;
	sqlite3_stmt *upto_put;
	sqlite3_stmt *block_owners;
	sqlite3_stmt *jid_name;
	sqlite3_stmt *expire_all;       /* every archive */
	sqlite3_stmt *expire_one;
	sqlite3_stmt *expire_domain;
	sqlite3_stmt *archive_last_id;
	sqlite3_stmt *jid_get;
	sqlite3_stmt *jid_add;
	sqlite3_stmt *log_put;
	sqlite3_stmt *log_all;
	sqlite3_stmt *log_clear;
	sqlite3_stmt *log_clear_slice;
	sqlite3_stmt *data_version;
	/* archive_jid ids known to this handle ("local@domain" -> id), so a
	 * write looks none up; emptied when a transaction rolls back (the
	 * ids it added are gone and may be given to other JIDs). */
	struct storage_sqlite_jid *jids;
	size_t n_jids;
	/* The held archive entries: those of archive_log and of the running
	 * transaction, by slice. Valid while log_loaded; log_version is the
	 * store's data_version they were read at, log_checked whether the
	 * running transaction has compared it, and log_mixed whether a row
	 * of archive_log had entries of another slice than its own. turn:
	 * the slice the next commit writes as blocks. */
	struct archive_slice held[ARCHIVE_SLICES];
	size_t n_held, held_bytes;
	unsigned turn;
	long long log_version;
	bool log_loaded, log_checked, log_mixed;
	bool archive_broken; /* a write failed: the transaction must not commit */
	struct archive_last *lasts; /* see archive_last_get */
	size_t n_lasts, size_lasts;
	/* archive_text_upto as read with the log (archive_covered): owner
	 * 0's upto, and the other owners' sorted by owner. */
	long long upto_all_owners;
	struct archive_upto *uptos;
	size_t n_uptos, cap_uptos;
	/* Blocks as read and decoded: dec for walks and lookups, link_dec
	 * for the entries a LINK names; a block to write. */
	struct archive_dec dec, link_dec;
	struct buf scratch;
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

/* ?1 (domain) and ?2 (local): an owner's archive_jid id. */
#define STORAGE_SQLITE_OWNER "(SELECT id FROM archive_jid WHERE domain = ?1 AND local = ?2)"

static const char storage_sqlite_sql_block_last[] =
	"SELECT last_id FROM archive_block WHERE owner = ?1 ORDER BY last_id DESC LIMIT 1";
static const char storage_sqlite_sql_block_from[] =
	"SELECT rowid, data FROM archive_block WHERE owner = ?1 AND last_id >= ?2 ORDER BY last_id";
static const char storage_sqlite_sql_block_del[] = "DELETE FROM archive_block WHERE rowid = ?1";
static const char storage_sqlite_sql_block_update[] =
	"UPDATE archive_block SET first_id = ?2, n = ?3, data = ?4 WHERE rowid = ?1";
static const char storage_sqlite_sql_block_data[] =
	"SELECT data FROM archive_block WHERE rowid = ?1";
/* The owner's block holding ?2, if any: the first ending at or after it. */
static const char storage_sqlite_sql_block_at[] =
	"SELECT rowid, first_id, last_id, n FROM archive_block WHERE owner = ?1 AND last_id >= ?2"
	" ORDER BY last_id LIMIT 1";
static const char storage_sqlite_sql_blocks_up[] =
	"SELECT rowid, first_id, last_id, n FROM archive_block WHERE owner = ?1 AND last_id > ?2"
	" ORDER BY last_id";
static const char storage_sqlite_sql_blocks_down[] =
	"SELECT rowid, first_id, last_id, n FROM archive_block WHERE owner = ?1 AND last_id < ?2"
	" ORDER BY last_id DESC";
static const char storage_sqlite_sql_text_put[] =
	"INSERT INTO archive_text (rowid, body) VALUES (?1, ?2)";
/* A contentless table forgets a row when handed its text back. */
static const char storage_sqlite_sql_text_del[] =
	"INSERT INTO archive_text (archive_text, rowid, body) VALUES ('delete', ?1, ?2)";
static const char storage_sqlite_sql_text_ids[] =
	"SELECT rowid FROM archive_text WHERE archive_text MATCH ?1 AND rowid > ?2 AND rowid < ?3"
	" ORDER BY rowid LIMIT ?4";
static const char storage_sqlite_sql_text_one[] =
	"SELECT 1 FROM archive_text WHERE archive_text MATCH ?1 AND rowid = ?2";
static const char storage_sqlite_sql_jid_name[] =
	"SELECT CASE local WHEN '' THEN domain ELSE local || '@' || domain END"
	" FROM archive_jid WHERE id = ?1";
static const char storage_sqlite_sql_expire_all[] =
	"SELECT rowid, owner FROM archive_block WHERE first_id < ?3";
static const char storage_sqlite_sql_expire_one[] =
	"SELECT rowid, owner FROM archive_block WHERE owner = " STORAGE_SQLITE_OWNER
	" AND first_id < ?3";
static const char storage_sqlite_sql_expire_domain[] =
	"SELECT rowid, owner FROM archive_block WHERE owner IN"
	" (SELECT id FROM archive_jid WHERE domain = ?1) AND first_id < ?3";
static const char storage_sqlite_sql_archive_last_id[] =
	"SELECT coalesce(max(last_id), 0) FROM archive_block";
static const char storage_sqlite_sql_jid_get[] =
	"SELECT id FROM archive_jid WHERE domain = ?1 AND local = ?2";
static const char storage_sqlite_sql_jid_add[] =
	"INSERT OR IGNORE INTO archive_jid (domain, local) VALUES (?1, ?2)";

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
	STORAGE_SQLITE_STMT(block_put, storage_sqlite_sql_block_put),
	STORAGE_SQLITE_STMT(block_last, storage_sqlite_sql_block_last),
	STORAGE_SQLITE_STMT(block_from, storage_sqlite_sql_block_from),
	STORAGE_SQLITE_STMT(block_del, storage_sqlite_sql_block_del),
	STORAGE_SQLITE_STMT(block_update, storage_sqlite_sql_block_update),
	STORAGE_SQLITE_STMT(block_data, storage_sqlite_sql_block_data),
	STORAGE_SQLITE_STMT(block_at, storage_sqlite_sql_block_at),
	STORAGE_SQLITE_STMT(blocks_up, storage_sqlite_sql_blocks_up),
	STORAGE_SQLITE_STMT(blocks_down, storage_sqlite_sql_blocks_down),
	STORAGE_SQLITE_STMT(text_put, storage_sqlite_sql_text_put),
	STORAGE_SQLITE_STMT(text_del, storage_sqlite_sql_text_del),
	STORAGE_SQLITE_STMT(text_ids, storage_sqlite_sql_text_ids),
	STORAGE_SQLITE_STMT(text_one, storage_sqlite_sql_text_one),
	STORAGE_SQLITE_STMT(upto_all, "SELECT owner, upto FROM archive_text_upto ORDER BY owner"),
	STORAGE_SQLITE_STMT(upto_put, "INSERT OR REPLACE INTO archive_text_upto (owner, upto)"
				      " VALUES (?1, ?2)"),
	STORAGE_SQLITE_STMT(block_owners, "SELECT DISTINCT owner FROM archive_block ORDER BY owner"),
	STORAGE_SQLITE_STMT(jid_name, storage_sqlite_sql_jid_name),
	STORAGE_SQLITE_STMT(expire_all, storage_sqlite_sql_expire_all),
	STORAGE_SQLITE_STMT(expire_one, storage_sqlite_sql_expire_one),
	STORAGE_SQLITE_STMT(expire_domain, storage_sqlite_sql_expire_domain),
	STORAGE_SQLITE_STMT(archive_last_id, storage_sqlite_sql_archive_last_id),
	STORAGE_SQLITE_STMT(jid_get, storage_sqlite_sql_jid_get),
	STORAGE_SQLITE_STMT(jid_add, storage_sqlite_sql_jid_add),
	STORAGE_SQLITE_STMT(log_put, "INSERT INTO archive_log (slice, data) VALUES (?1, ?2)"),
	STORAGE_SQLITE_STMT(log_all, "SELECT id, slice, data FROM archive_log ORDER BY id"),
	STORAGE_SQLITE_STMT(log_clear, "DELETE FROM archive_log"),
	STORAGE_SQLITE_STMT(log_clear_slice, "DELETE FROM archive_log WHERE slice = ?1"),
	STORAGE_SQLITE_STMT(data_version, "PRAGMA data_version"),
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

/* 5 -> 6 (after its SQL): every entry of the row archive into blocks of
 * ARCHIVE_BLOCK_ENTRIES, its text into the contentless table. */
static int storage_sqlite_migrate_blocks(sqlite3 *db, char *err, size_t errlen)
{
	static const char read_rows[] =
		"SELECT a.owner, a.id, a.outgoing, a.with_jid, a.with_res,"
		" CASE WHEN a.ref IS NULL THEN a.value ELSE r.value END,"
		" (SELECT t.body FROM archive_text t WHERE t.rowid = coalesce(a.ref, a.id))"
		" FROM archive a LEFT JOIN archive r ON r.id = a.ref ORDER BY a.owner, a.id";
	sqlite3_stmt *rows = NULL, *ins = NULL, *text = NULL;
	struct archive_item *items = NULL;
	size_t n = 0, cap = 0;
	struct buf bytes, scratch;
	buf_init(&bytes);
	buf_init(&scratch);
	int ret = -1, rc;
	long long owner = 0;
	size_t *offs = NULL; /* items point into bytes by offset until the owner's run is written */
	err[0] = '\0';
	if (storage_sqlite_exec(db, "CREATE TEMP TABLE archive_text_new (id INTEGER PRIMARY KEY,"
				    " body TEXT NOT NULL)", err, errlen) < 0)
		return -1;
	if (sqlite3_prepare_v2(db, read_rows, -1, &rows, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, storage_sqlite_sql_block_put, -1, &ins, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "INSERT INTO archive_text_new (id, body) VALUES (?1, ?2)", -1,
			       &text, NULL) != SQLITE_OK)
		goto out;
	for (;;) {
		rc = sqlite3_step(rows);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			goto out;
		long long o = rc == SQLITE_ROW ? sqlite3_column_int64(rows, 0) : 0;
		if (n > 0 && (rc == SQLITE_DONE || o != owner)) {
			for (size_t i = 0; i < n; i++) {
				items[i].res = bytes.data + offs[i];
				items[i].body = items[i].res + items[i].res_len;
				items[i].value = items[i].body + items[i].body_len;
			}
			if (archive_write_blocks(db, ins, owner, items, n, &scratch) < 0)
				goto out;
			n = 0;
			bytes.len = 0;
		}
		if (rc == SQLITE_DONE)
			break;
		owner = o;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			items = xrealloc(items, cap * sizeof *items);
			offs = xrealloc(offs, cap * sizeof *offs);
		}
		struct archive_item *it = &items[n];
		offs[n++] = bytes.len;
		const char *res = (const char *)sqlite3_column_text(rows, 4);
		const char *body = (const char *)sqlite3_column_text(rows, 6);
		const void *value = sqlite3_column_blob(rows, 5);
		it->id = sqlite3_column_int64(rows, 1);
		it->with = sqlite3_column_int64(rows, 3);
		it->link = 0;
		it->res_len = res ? strlen(res) : 0;
		it->body_len = body ? strlen(body) : 0;
		it->value_len = (size_t)sqlite3_column_bytes(rows, 5);
		it->flags = (sqlite3_column_int(rows, 2) ? ARCHIVE_F_OUTGOING : 0) |
			    (it->body_len > 0 ? ARCHIVE_F_TEXT : 0);
		buf_append(&bytes, res ? res : "", it->res_len);
		buf_append(&bytes, body ? body : "", it->body_len);
		buf_append(&bytes, value ? value : "", it->value_len);
		if (it->body_len > 0) {
			if (sqlite3_bind_int64(text, 1, it->id) != SQLITE_OK ||
			    sqlite3_bind_text(text, 2, body, (int)it->body_len, SQLITE_STATIC) !=
				    SQLITE_OK ||
			    sqlite3_step(text) != SQLITE_DONE)
				goto out;
			sqlite3_reset(text);
		}
	}
	sqlite3_finalize(rows);
	rows = NULL;
	if (storage_sqlite_exec(db,
				"DROP TABLE archive;" /* its indexes and triggers */
				"DROP TABLE archive_text;"
				"CREATE VIRTUAL TABLE archive_text USING fts5(body, content = '',"
				" columnsize = 0, tokenize = 'unicode61 remove_diacritics 2');"
				"INSERT INTO archive_text (rowid, body) SELECT id, body"
				" FROM archive_text_new ORDER BY id;"
				"DROP TABLE archive_text_new;",
				err, errlen) < 0)
		goto out;
	ret = 0;
out:
	free(offs);
	if (ret < 0 && err[0] == '\0')
		storage_sqlite_err(err, errlen, "archive to blocks: %s", sqlite3_errmsg(db));
	sqlite3_finalize(rows);
	sqlite3_finalize(ins);
	sqlite3_finalize(text);
	free(items);
	buf_free(&bytes);
	buf_free(&scratch);
	return ret;
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
		    (version == 5 && storage_sqlite_migrate_blocks(db, err, errlen) < 0) ||
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
	/* A new file gets pages of 16 KiB (an existing one keeps its own):
	 * a block fits a page or a few, and a commit writes fewer, bigger
	 * frames to the WAL (storage thread at 20,000 msgs/s: 5.5-5.6 us per
	 * message against 6.6-7.0 with 4 KiB; decision 0008, "The log"). */
	if (storage_sqlite_exec(db, "PRAGMA page_size = 16384", err, errlen) < 0)
		return -1;
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

static int archive_flush(struct storage *st);

static void storage_sqlite_close(struct storage *st)
{
	if (!st)
		return;
	/* Held entries become blocks now rather than at the next open. */
	if (st->log_loaded && st->n_held > 0 && archive_flush(st) < 0)
		log_error("storage sqlite: archive entries stay in archive_log until the next open");
	for (size_t i = 0; i < sizeof storage_sqlite_statements / sizeof storage_sqlite_statements[0];
	     i++)
		sqlite3_finalize(*storage_sqlite_stmt(st, i));
	storage_sqlite_jids_forget(st);
	free(st->jids);
	for (size_t i = 0; i < ARCHIVE_SLICES; i++) {
		free(st->held[i].pend);
		buf_free(&st->held[i].bytes);
	}
	free(st->lasts);
	free(st->uptos);
	buf_free(&st->dec.bytes);
	free(st->dec.items);
	buf_free(&st->link_dec.bytes);
	free(st->link_dec.items);
	buf_free(&st->scratch);
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
	/* Checkpoint every 128 MiB of log rather than 4: a page written by
	 * many commits (an owner's index leaf) is copied back once.
	 * archive-batch -r -t -b 1000 -u 2000: 15.1 us per message at 32 MiB,
	 * 13.4 at 128 MiB (decision 0008). In bytes, not pages: with 16 KiB
	 * pages 32,768 of them made checkpoints that held the storage thread
	 * for 0.3-0.6 s, and the loops behind it (p99 240 ms at 30,000
	 * msgs/s); at 128 MiB they take about 0.2 s. */
	sqlite3_stmt *ps;
	long long page = 0;
	if (sqlite3_prepare_v2(st->db, "PRAGMA page_size", -1, &ps, NULL) == SQLITE_OK &&
	    sqlite3_step(ps) == SQLITE_ROW)
		page = sqlite3_column_int64(ps, 0);
	sqlite3_finalize(ps);
	sqlite3_wal_autocheckpoint(st->db, (int)((128LL << 20) / (page > 0 ? page : 4096)));
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

static long long storage_sqlite_archive_delete(struct storage *st, const char *domain,
					       const char *local, long long before_id);

/* user_del's deletions, in the caller's transaction. *found: whether
 * the account row was there. Returns 0 or -1 (logged). */
static int storage_sqlite_user_del_steps(struct storage *st, const char *domain,
					 const char *local, int *found)
{
	sqlite3_stmt *const steps[] = { st->user_del, st->map_del_user, st->list_del_user };
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
	return storage_sqlite_archive_delete(st, domain, local, LLONG_MAX) < 0 ? -1 : 0;
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
		/* Other archives' pending entries are written before the
		 * savepoint: undoing it must not undo them. */
		if (archive_flush(st) < 0)
			return -1;
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

/* The handle's knowledge of owners' last ids (archive_last): open
 * addressing, doubled when three quarters full up to ARCHIVE_LASTS slots,
 * then emptied; emptied too when a transaction is undone (a last id it
 * wrote may be gone; one too high only costs a read). */
static struct archive_last *archive_last_slot(struct archive_last *t, size_t size,
					      long long owner)
{
	size_t i = (size_t)((unsigned long long)owner * 0x9e3779b97f4a7c15ull >> 40) & (size - 1);
	while (t[i].owner != 0 && t[i].owner != owner)
		i = (i + 1) & (size - 1);
	return &t[i];
}

static void archive_lasts_forget(struct storage *st)
{
	if (st->lasts != NULL)
		memset(st->lasts, 0, st->size_lasts * sizeof *st->lasts);
	st->n_lasts = 0;
}

/* The greatest id in owner's blocks (0: none), or -1. */
static long long archive_last_get(struct storage *st, long long owner)
{
	if (st->lasts != NULL) {
		struct archive_last *s = archive_last_slot(st->lasts, st->size_lasts, owner);
		if (s->owner == owner)
			return s->last;
	}
	sqlite3_stmt *stmt = st->block_last;
	int rc = sqlite3_bind_int64(stmt, 1, owner) == SQLITE_OK ? sqlite3_step(stmt) : SQLITE_ERROR;
	long long last = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : rc == SQLITE_DONE ? 0 : -1;
	storage_sqlite_done(stmt);
	if (last < 0)
		return storage_sqlite_fail(st, "archive: last block");
	return last;
}

static void archive_last_set(struct storage *st, long long owner, long long last)
{
	if (st->lasts == NULL) {
		st->size_lasts = ARCHIVE_LASTS_FIRST;
		st->lasts = xcalloc(st->size_lasts, sizeof *st->lasts);
	}
	struct archive_last *s = archive_last_slot(st->lasts, st->size_lasts, owner);
	if (s->owner == 0 && st->n_lasts >= st->size_lasts / 4 * 3) {
		if (st->size_lasts < ARCHIVE_LASTS) {
			size_t size = st->size_lasts * 2;
			struct archive_last *t = xcalloc(size, sizeof *t);
			for (size_t i = 0; i < st->size_lasts; i++)
				if (st->lasts[i].owner != 0)
					*archive_last_slot(t, size, st->lasts[i].owner) = st->lasts[i];
			free(st->lasts);
			st->lasts = t;
			st->size_lasts = size;
		} else {
			archive_lasts_forget(st);
		}
		s = archive_last_slot(st->lasts, st->size_lasts, owner);
	}
	if (s->owner == 0)
		st->n_lasts++;
	s->owner = owner;
	s->last = last;
}

static struct archive_slice *archive_slice_of(struct storage *st, long long owner)
{
	return &st->held[(unsigned long long)owner % ARCHIVE_SLICES];
}

static void archive_pend_item(struct storage *st, const struct archive_pend *p,
			      struct archive_item *it)
{
	const char *b = archive_slice_of(st, p->owner)->bytes.data + p->off;
	*it = (struct archive_item){ .id = p->id, .with = p->with, .link = p->link,
				     .flags = p->flags,
				     .res = b, .res_len = p->res_len,
				     .body = b + p->res_len, .body_len = p->body_len,
				     .value = b + p->res_len + p->body_len,
				     .value_len = p->value_len };
}

/* Writes one owner's pending entries run[0..n) (sorted by id), merged
 * with the blocks they fall into when they are not all after them. */
static int archive_flush_owner(struct storage *st, long long owner, struct archive_item *run,
			       size_t n)
{
	long long last = archive_last_get(st, owner);
	if (last < 0)
		return -1;
	long long top = run[n - 1].id > last ? run[n - 1].id : last;
	if (run[0].id > last) {
		if (archive_write_blocks(st->db, st->block_put, owner, run, n, &st->scratch) < 0)
			return -1;
		archive_last_set(st, owner, top);
		return 0;
	}
	/* An entry older than the last block: the blocks from it on are
	 * read, and written again with the new entries among theirs. Their
	 * bytes are kept (the entries point into them) until then. */
	struct buf bytes;
	buf_init(&bytes);
	struct {
		long long rowid;
		size_t off, len;
	} *blocks = NULL;
	size_t n_blocks = 0, cap_blocks = 0;
	struct archive_item *all = NULL;
	size_t n_all = 0, cap_all = 0;
	int ret = -1, rc;
	sqlite3_stmt *stmt = st->block_from;
	rc = sqlite3_bind_int64(stmt, 1, owner) == SQLITE_OK &&
			 sqlite3_bind_int64(stmt, 2, run[0].id) == SQLITE_OK
		 ? SQLITE_ROW
		 : SQLITE_ERROR;
	while (rc == SQLITE_ROW && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (n_blocks == cap_blocks) {
			cap_blocks = cap_blocks ? cap_blocks * 2 : 8;
			blocks = xrealloc(blocks, cap_blocks * sizeof *blocks);
		}
		blocks[n_blocks].rowid = sqlite3_column_int64(stmt, 0);
		blocks[n_blocks].off = bytes.len;
		blocks[n_blocks].len = (size_t)sqlite3_column_bytes(stmt, 1);
		buf_append(&bytes, sqlite3_column_blob(stmt, 1), blocks[n_blocks].len);
		n_blocks++;
	}
	storage_sqlite_done(stmt);
	if (rc != SQLITE_DONE) {
		storage_sqlite_fail(st, "archive: blocks");
		goto out;
	}
	for (size_t i = 0; i < n_blocks; i++) {
		long k = archive_decode(bytes.data + blocks[i].off, blocks[i].len, &all, &cap_all,
					n_all);
		if (k < 0) {
			log_error("storage sqlite: archive block %lld is not natter's",
				  blocks[i].rowid);
			goto out;
		}
		n_all = (size_t)k;
	}
	if (n_all + n > cap_all) {
		cap_all = n_all + n;
		all = xrealloc(all, cap_all * sizeof *all);
	}
	memcpy(all + n_all, run, n * sizeof *run);
	n_all += n;
	qsort(all, n_all, sizeof *all, archive_item_cmp);
	for (size_t i = 0; i < n_blocks; i++) {
		sqlite3_stmt *del = st->block_del;
		rc = sqlite3_bind_int64(del, 1, blocks[i].rowid) == SQLITE_OK ? sqlite3_step(del)
									       : SQLITE_ERROR;
		storage_sqlite_done(del);
		if (rc != SQLITE_DONE) {
			storage_sqlite_fail(st, "archive: merge");
			goto out;
		}
	}
	if (archive_write_blocks(st->db, st->block_put, owner, all, n_all, &st->scratch) < 0)
		goto out;
	archive_last_set(st, owner, top);
	ret = 0;
out:
	buf_free(&bytes);
	free(blocks);
	free(all);
	return ret;
}

static void archive_slice_drop(struct storage *st, struct archive_slice *sl)
{
	st->n_held -= sl->n;
	st->held_bytes -= sl->bytes.len;
	sl->n = sl->n_logged = 0;
	sl->bytes.len = 0;
	sl->min_id = 0;
	if (sl->bytes.cap > ARCHIVE_PEND_KEEP / ARCHIVE_SLICES)
		buf_free(&sl->bytes);
}

static void archive_held_drop(struct storage *st)
{
	for (size_t i = 0; i < ARCHIVE_SLICES; i++)
		archive_slice_drop(st, &st->held[i]);
	if (st->dec.bytes.cap > ARCHIVE_PEND_KEEP)
		buf_free(&st->dec.bytes);
	if (st->link_dec.bytes.cap > ARCHIVE_PEND_KEEP)
		buf_free(&st->link_dec.bytes);
	if (st->scratch.cap > ARCHIVE_PEND_KEEP)
		buf_free(&st->scratch);
}

/* Holds p in sl (its bytes appended to sl->bytes by the caller, who
 * counts them in st->held_bytes). */
static void archive_pend_push(struct storage *st, struct archive_slice *sl,
			      const struct archive_pend *p)
{
	if (sl->n == sl->cap) {
		sl->cap = sl->cap ? sl->cap * 2 : 64;
		sl->pend = xrealloc(sl->pend, sl->cap * sizeof *sl->pend);
	}
	if (sl->n == 0 || p->id < sl->min_id)
		sl->min_id = p->id;
	sl->pend[sl->n++] = *p;
	st->n_held++;
}

/* The held entry id of owner, or NULL. */
static struct archive_pend *archive_held_find(struct storage *st, long long owner, long long id)
{
	struct archive_slice *sl = archive_slice_of(st, owner);
	if (sl->n == 0 || id < sl->min_id)
		return NULL;
	for (size_t i = sl->n; i-- > 0;) /* most often the last */
		if (sl->pend[i].id == id && sl->pend[i].owner == owner)
			return &sl->pend[i];
	return NULL;
}

/* Marks the entries that a held LINK names as its TWIN: a row of the log
 * has an entry as it was then, before a later row linked to it. */
static void archive_log_twins(struct storage *st)
{
	for (size_t s = 0; s < ARCHIVE_SLICES; s++) {
		const struct archive_slice *sl = &st->held[s];
		for (size_t i = 0; i < sl->n; i++) {
			const struct archive_pend *l = &sl->pend[i];
			struct archive_pend *t;
			if ((l->flags & ARCHIVE_F_LINK) &&
			    (t = archive_held_find(st, l->with, l->link)) != NULL) {
				t->flags |= ARCHIVE_F_TWIN;
				t->link = l->id;
			}
		}
	}
}

/* Appends one row of archive_log (its slice, then data) to the held
 * entries. Returns 0, or -1 for a row natter did not write. */
static int archive_log_row(struct storage *st, long long slice, const unsigned char *p,
			   const unsigned char *end)
{
	if (p == NULL || p == end || *p++ != ARCHIVE_BLOCK_FORMAT)
		return -1;
	while (p < end) {
		struct archive_item it;
		struct archive_pend e;
		if (archive_get_u64(&p, end, &e.owner) < 0 || archive_decode_one(&p, end, &it) < 0)
			return -1;
		struct archive_slice *sl = archive_slice_of(st, e.owner);
		if (slice < 0 || slice >= ARCHIVE_SLICES || sl != &st->held[slice])
			st->log_mixed = true; /* written with other slices: all at once */
		e.id = it.id;
		e.with = it.with;
		e.link = it.link;
		e.flags = it.flags;
		e.res_len = it.res_len;
		e.body_len = it.body_len;
		e.value_len = it.value_len;
		e.off = sl->bytes.len;
		buf_append(&sl->bytes, it.res, it.res_len);
		buf_append(&sl->bytes, it.body, it.body_len);
		buf_append(&sl->bytes, it.value, it.value_len);
		st->held_bytes += it.res_len + it.body_len + it.value_len;
		archive_pend_push(st, sl, &e);
	}
	return 0;
}

/* Reads archive_log into the held entries, in place of those held. */
static int archive_log_load(struct storage *st)
{
	archive_held_drop(st);
	st->log_loaded = st->log_mixed = false;
	sqlite3_stmt *s = st->log_all;
	int rc;
	long long bad = 0;
	while (bad == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		const unsigned char *p = sqlite3_column_blob(s, 2);
		if (archive_log_row(st, sqlite3_column_int64(s, 1), p,
				    p + sqlite3_column_bytes(s, 2)) < 0)
			bad = sqlite3_column_int64(s, 0);
	}
	storage_sqlite_done(s);
	if (bad != 0) {
		log_error("storage sqlite: archive log row %lld is not natter's", bad);
		archive_held_drop(st);
		return -1;
	}
	if (rc != SQLITE_DONE) {
		archive_held_drop(st);
		return storage_sqlite_fail(st, "archive: log");
	}
	archive_log_twins(st);
	for (size_t i = 0; i < ARCHIVE_SLICES; i++)
		st->held[i].n_logged = st->held[i].n;
	st->log_loaded = true;
	return 0;
}

/* Room in st->uptos for one more row. */
static void archive_uptos_room(struct storage *st)
{
	if (st->n_uptos == st->cap_uptos) {
		st->cap_uptos = st->cap_uptos ? st->cap_uptos * 2 : 64;
		st->uptos = xrealloc(st->uptos, st->cap_uptos * sizeof *st->uptos);
	}
}

/* Reads archive_text_upto into the handle. Returns 0 or -1. */
static int archive_uptos_load(struct storage *st)
{
	sqlite3_stmt *s = st->upto_all;
	int rc;
	st->upto_all_owners = 0;
	st->n_uptos = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		long long owner = sqlite3_column_int64(s, 0), upto = sqlite3_column_int64(s, 1);
		if (owner == 0) {
			st->upto_all_owners = upto;
			continue;
		}
		archive_uptos_room(st);
		st->uptos[st->n_uptos++] = (struct archive_upto){ owner, upto };
	}
	storage_sqlite_done(s);
	return rc == SQLITE_DONE ? 0 : storage_sqlite_fail(st, "archive: text upto");
}

/* Where owner's row of archive_text_upto is, or would be, in st->uptos. */
static size_t archive_upto_slot(const struct storage *st, long long owner)
{
	size_t lo = 0, hi = st->n_uptos;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (st->uptos[mid].owner < owner)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Up to which id owner's words are indexed. */
static long long archive_upto(const struct storage *st, long long owner)
{
	size_t i = archive_upto_slot(st, owner);
	long long upto = i < st->n_uptos && st->uptos[i].owner == owner ? st->uptos[i].upto : 0;
	return upto > st->upto_all_owners ? upto : st->upto_all_owners;
}

/* Whether entry id of owner is at or below where its words are indexed:
 * an entry there has its words in archive_text, or its twin has. */
static bool archive_covered(const struct storage *st, long long owner, long long id)
{
	return id <= archive_upto(st, owner);
}

/* Whether the words of an entry with text of its own (not a LINK) are in
 * archive_text: its owner's index reaches it, or (a TWIN) the index of
 * the entry linking to it reaches that one (a COPY's are its own). */
static bool archive_text_present(const struct storage *st, long long owner,
				 const struct archive_item *it)
{
	return archive_covered(st, owner, it->id) ||
	       ((it->flags & ARCHIVE_F_TWIN) && archive_covered(st, it->with, it->link));
}

static int archive_upto_set(struct storage *st, long long owner, long long upto)
{
	sqlite3_stmt *s = st->upto_put;
	if (sqlite3_bind_int64(s, 1, owner) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 2, upto) != SQLITE_OK) {
		storage_sqlite_done(s);
		return storage_sqlite_fail(st, "archive: text upto");
	}
	if (storage_sqlite_run(st, s, "archive: text upto") < 0)
		return -1;
	size_t i = archive_upto_slot(st, owner);
	if (i == st->n_uptos || st->uptos[i].owner != owner) {
		archive_uptos_room(st);
		memmove(&st->uptos[i + 1], &st->uptos[i], (st->n_uptos - i) * sizeof *st->uptos);
		st->n_uptos++;
	}
	st->uptos[i] = (struct archive_upto){ owner, upto };
	return 0;
}

/* In a transaction: makes the held entries those of archive_log, unless
 * they are already (the store unchanged by any other handle since they
 * were read). Once per transaction. */
static int archive_log_sync(struct storage *st)
{
	if (st->log_loaded && st->log_checked)
		return 0;
	sqlite3_stmt *s = st->data_version;
	int rc = sqlite3_step(s);
	long long v = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	storage_sqlite_done(s);
	if (rc != SQLITE_ROW)
		return storage_sqlite_fail(st, "archive: data_version");
	st->log_checked = true;
	if (st->log_loaded && v == st->log_version)
		return 0;
	st->log_version = v;
	archive_lasts_forget(st); /* another handle may have written blocks */
	if (archive_log_load(st) < 0)
		return -1;
	if (archive_uptos_load(st) < 0) {
		st->log_loaded = false;
		return -1;
	}
	return 0;
}

/* Held entries (pointers to them) by owner, then id. */
static int archive_pend_order_cmp(const void *a, const void *b)
{
	const struct archive_pend *x = *(const struct archive_pend *const *)a;
	const struct archive_pend *y = *(const struct archive_pend *const *)b;
	if (x->owner != y->owner)
		return x->owner < y->owner ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static int archive_pend_id_cmp(const void *a, const void *b)
{
	long long x = (*(const struct archive_pend *const *)a)->id;
	long long y = (*(const struct archive_pend *const *)b)->id;
	return x < y ? -1 : x > y;
}

/* Writes the held entries of slice `only` (every slice: -1) as blocks,
 * then their text in id order (FTS5 writes out what it holds whenever a
 * rowid is lower than the last), and deletes their rows of archive_log.
 * Returns 0, or -1 with the transaction marked broken: some may be
 * written, so it must not commit (a savepoint would undo just this, but
 * FTS5 writes a segment at each one). */
static int archive_write_held(struct storage *st, int only)
{
	size_t first = only < 0 ? 0 : (size_t)only, last = only < 0 ? ARCHIVE_SLICES - 1 : first;
	size_t n = 0, logged = 0;
	for (size_t s = first; s <= last; s++) {
		n += st->held[s].n;
		logged += st->held[s].n_logged;
	}
	if (n == 0)
		return 0;
	const struct archive_pend **order = xmalloc(n * sizeof *order);
	n = 0;
	for (size_t s = first; s <= last; s++)
		for (size_t i = 0; i < st->held[s].n; i++)
			order[n++] = &st->held[s].pend[i];
	qsort(order, n, sizeof *order, archive_pend_order_cmp);
	int ret = 0;
	struct archive_item *run = NULL;
	size_t cap = 0;
	for (size_t i = 0; i < n && ret == 0;) {
		size_t j = i;
		while (j < n && order[j]->owner == order[i]->owner)
			j++;
		if (j - i > cap) {
			cap = j - i;
			run = xrealloc(run, cap * sizeof *run);
		}
		for (size_t k = i; k < j; k++)
			archive_pend_item(st, order[k], &run[k - i]);
		ret = archive_flush_owner(st, order[i]->owner, run, j - i);
		i = j;
	}
	free(run);
	/* The words of an owner not searched yet wait for its first search
	 * (archive_text_catch_up); only an entry that arrives below where
	 * an index already reaches (ids are taken on the loops) is indexed
	 * now. */
	size_t n_text = 0;
	for (size_t i = 0; i < n && ret == 0; i++) {
		struct archive_item it;
		archive_pend_item(st, order[i], &it);
		if ((it.flags & (ARCHIVE_F_TEXT | ARCHIVE_F_LINK)) == ARCHIVE_F_TEXT &&
		    archive_text_present(st, order[i]->owner, &it))
			order[n_text++] = order[i];
	}
	qsort(order, n_text, sizeof *order, archive_pend_id_cmp);
	for (size_t i = 0; i < n_text && ret == 0; i++) {
		struct archive_item it;
		archive_pend_item(st, order[i], &it);
		sqlite3_stmt *stmt = st->text_put;
		if (sqlite3_bind_int64(stmt, 1, it.id) != SQLITE_OK ||
		    sqlite3_bind_text(stmt, 2, it.body, (int)it.body_len, SQLITE_STATIC) !=
			    SQLITE_OK ||
		    sqlite3_step(stmt) != SQLITE_DONE)
			ret = storage_sqlite_fail(st, "archive: text");
		storage_sqlite_done(stmt);
	}
	free(order);
	if (ret == 0 && logged > 0) {
		sqlite3_stmt *del = only < 0 ? st->log_clear : st->log_clear_slice;
		if (only >= 0 && sqlite3_bind_int(del, 1, only) != SQLITE_OK)
			ret = storage_sqlite_fail(st, "archive: log");
		else
			ret = storage_sqlite_run(st, del, "archive: log");
	}
	if (ret < 0) {
		st->archive_broken = true;
		return -1;
	}
	for (size_t s = first; s <= last; s++)
		archive_slice_drop(st, &st->held[s]);
	if (only < 0)
		st->log_mixed = false;
	return 0;
}

static int storage_sqlite_begin(struct storage *st);
static int storage_sqlite_end(struct storage *st, int commit);

/* Writes every held entry as blocks (archive_write_held), in the
 * caller's transaction or in one of its own; the held entries are read
 * from archive_log first if need be. Returns 0 or -1. */
static int archive_flush(struct storage *st)
{
	bool own = sqlite3_get_autocommit(st->db);
	if (!own && st->log_loaded && st->log_checked && st->n_held == 0)
		return 0;
	if (own && storage_sqlite_begin(st) < 0)
		return -1;
	int ret = archive_log_sync(st);
	if (ret == 0)
		ret = archive_write_held(st, -1);
	/* (A failure undoes the transaction and forgets what is held.) */
	if (own && storage_sqlite_end(st, ret == 0) < 0)
		ret = -1;
	return ret;
}

/* At a commit: one slice's held entries become blocks, in turn, and the
 * transaction's other new entries go to archive_log, a row per slice
 * (all at once when too much is held, or the log was written with other
 * slices). Returns 0 or -1. */
static int archive_hold(struct storage *st)
{
	if (!st->log_loaded || st->n_held == 0)
		return 0;
	/* Another handle may have written the log since this transaction
	 * began (if it touched no archive, nothing has looked). */
	if (archive_log_sync(st) < 0)
		return -1;
	if (st->n_held == 0)
		return 0;
	if (st->log_mixed || st->n_held >= ARCHIVE_HOLD_ENTRIES ||
	    st->held_bytes >= ARCHIVE_HOLD_BYTES)
		return archive_write_held(st, -1);
	if (archive_write_held(st, (int)st->turn) < 0)
		return -1;
	st->turn = (st->turn + 1) % ARCHIVE_SLICES;
	for (size_t s = 0; s < ARCHIVE_SLICES; s++) {
		struct archive_slice *sl = &st->held[s];
		if (sl->n == sl->n_logged)
			continue;
		struct buf *b = &st->scratch;
		b->len = 0;
		unsigned char fmt = ARCHIVE_BLOCK_FORMAT;
		buf_append(b, &fmt, 1);
		for (size_t i = sl->n_logged; i < sl->n; i++) {
			struct archive_item it;
			archive_pend_item(st, &sl->pend[i], &it);
			archive_u64(b, (unsigned long long)sl->pend[i].owner);
			archive_encode(b, &it);
		}
		sqlite3_stmt *put = st->log_put;
		int rc = sqlite3_bind_int(put, 1, (int)s) == SQLITE_OK &&
				 sqlite3_bind_blob64(put, 2, b->data, b->len, SQLITE_STATIC) ==
					 SQLITE_OK
			 ? sqlite3_step(put)
			 : SQLITE_ERROR;
		storage_sqlite_done(put);
		if (rc != SQLITE_DONE)
			return storage_sqlite_fail(st, "archive: log");
		sl->n_logged = sl->n;
	}
	return 0;
}

/* Reads block rowid into d and decodes it. Returns the number of
 * entries, or -1. */
static long archive_load(struct storage *st, struct archive_dec *d, long long rowid)
{
	sqlite3_stmt *s = st->block_data;
	int rc = sqlite3_bind_int64(s, 1, rowid) == SQLITE_OK ? sqlite3_step(s) : SQLITE_ERROR;
	if (rc == SQLITE_ROW) {
		d->bytes.len = 0;
		buf_append(&d->bytes, sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0));
	}
	storage_sqlite_done(s);
	if (rc != SQLITE_ROW)
		return storage_sqlite_fail(st, "archive: block");
	long n = archive_decode(d->bytes.data, d->bytes.len, &d->items, &d->cap, 0);
	if (n < 0)
		log_error("storage sqlite: archive block %lld is not natter's", rowid);
	return n;
}

/* Finds entry id in owner's archive: decodes its block into d and
 * points *it at the entry (and, when not NULL, *block at the block and
 * *count at its number of entries). Returns 1 found, 0 not, -1. The
 * entry lives until d's next use. */
static int archive_find(struct storage *st, struct archive_dec *d, long long owner, long long id,
			struct archive_item **it, long long *block, long *count)
{
	sqlite3_stmt *stmt = st->block_at;
	int rc = sqlite3_bind_int64(stmt, 1, owner) == SQLITE_OK &&
			 sqlite3_bind_int64(stmt, 2, id) == SQLITE_OK
		 ? sqlite3_step(stmt)
		 : SQLITE_ERROR;
	long long rowid = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : 0;
	long long first = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 1) : 0;
	storage_sqlite_done(stmt);
	if (rc == SQLITE_DONE || (rc == SQLITE_ROW && first > id))
		return 0;
	if (rc != SQLITE_ROW)
		return storage_sqlite_fail(st, "archive: find");
	long n = archive_load(st, d, rowid);
	for (long i = 0; i < n; i++) {
		if (d->items[i].id == id) {
			*it = &d->items[i];
			if (block != NULL)
				*block = rowid;
			if (count != NULL)
				*count = n;
			return 1;
		}
	}
	return n < 0 ? -1 : 0;
}

static int storage_sqlite_archive_put(struct storage *st, const char *domain, const char *local,
				      const struct archive_entry *e)
{
	/* Outside a transaction (a batch that could not begin one, or a
	 * tool) the entry is written at once, in one of its own. */
	if (sqlite3_get_autocommit(st->db)) {
		if (storage_sqlite_begin(st) < 0)
			return -1;
		int rc = storage_sqlite_archive_put(st, domain, local, e);
		return storage_sqlite_end(st, rc == 0) == 0 && rc == 0 ? 0 : -1;
	}
	if (archive_log_sync(st) < 0)
		return -1;
	struct storage_sqlite_bare o = { domain, local, (int)strlen(domain), (int)strlen(local) };
	struct storage_sqlite_bare w = storage_sqlite_split(e->with);
	long long owner = storage_sqlite_jid_id(st, &o);
	long long with = owner < 0 ? -1 : storage_sqlite_jid_id(st, &w);
	if (with < 0)
		return -1;
	const char *res = e->with_resource ? e->with_resource : "";
	struct archive_pend p = { .owner = owner, .id = e->id, .with = with,
				  .flags = e->outgoing ? ARCHIVE_F_OUTGOING : 0,
				  .res_len = strlen(res) };
	/* A referring entry links to the one it names, queued just before
	 * it, so held still; else it copies its body and value (from the
	 * sender's archive, the entry's with). */
	struct archive_item ref_it = { 0 };
	struct archive_pend *r = NULL;
	bool link = false;
	if (e->ref) {
		struct archive_item *found;
		r = archive_held_find(st, with, e->ref);
		if (r != NULL && !(r->flags & ARCHIVE_F_LINKED) && r->owner != owner) {
			link = true;
			p.flags |= ARCHIVE_F_LINK | (r->flags & ARCHIVE_F_TEXT);
			p.link = r->id;
			r->flags |= ARCHIVE_F_TWIN;
			r->link = e->id;
		} else if (r != NULL) {
			p.body_len = r->body_len;
			p.value_len = r->value_len;
		} else {
			int rc = archive_find(st, &st->dec, with, e->ref, &found, NULL, NULL);
			if (rc > 0 && (found->flags & ARCHIVE_F_LINK))
				rc = 0; /* a link is no message of its own */
			if (rc == 0)
				log_error("storage: archive entry %lld refers to %lld, which is not "
					  "stored", e->id, e->ref);
			if (rc <= 0)
				return -1;
			ref_it = *found;
			p.body_len = ref_it.body_len;
			p.value_len = ref_it.value_len;
		}
	} else {
		p.body_len = e->body ? strlen(e->body) : 0;
		p.value_len = e->len;
	}
	if (p.body_len > 0)
		p.flags |= ARCHIVE_F_TEXT;
	struct archive_slice *sl = archive_slice_of(st, owner);
	size_t len = p.res_len + (link ? 0 : p.body_len + p.value_len);
	/* Room first: a copy may come from this very buffer. */
	buf_reserve(&sl->bytes, len);
	if (r != NULL && !link)
		archive_pend_item(st, r, &ref_it);
	p.off = sl->bytes.len;
	buf_append(&sl->bytes, res, p.res_len);
	if (link) {
		/* Nothing more: the body and value are the sender's. */
	} else if (e->ref) {
		buf_append(&sl->bytes, ref_it.body, p.body_len);
		buf_append(&sl->bytes, ref_it.value, p.value_len);
	} else {
		buf_append(&sl->bytes, e->body ? e->body : "", p.body_len);
		if (p.value_len > 0)
			buf_append(&sl->bytes, e->value, p.value_len);
	}
	st->held_bytes += len;
	archive_pend_push(st, sl, &p);
	return 0;
}

/* An owner's id without adding it: 1 found, 0 not, -1. */
static int archive_owner_of(struct storage *st, const char *bare, long long *id)
{
	struct storage_sqlite_bare j = storage_sqlite_split(bare);
	int rc = storage_sqlite_jid_step(st->jid_get, &j);
	*id = rc == SQLITE_ROW ? sqlite3_column_int64(st->jid_get, 0) : 0;
	storage_sqlite_done(st->jid_get);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return storage_sqlite_fail(st, "archive: owner");
	return rc == SQLITE_ROW;
}

/* A walk over an owner's blocks between two exclusive bounds (0: none),
 * upwards or downwards, one decoded block at a time. */
struct archive_walk {
	struct storage *st;
	long long lo, hi;
	bool down;
	bool held;             /* the block at hand is next (down: the one
				* holding hi, read before the rest) */
	sqlite3_stmt *stmt;    /* blocks_up or blocks_down, while open */
	long long rowid, first, last, n; /* the block at hand */
};

/* The block at hand from a row of block_at, blocks_up or blocks_down. */
static void archive_walk_take(struct archive_walk *w, sqlite3_stmt *s)
{
	w->rowid = sqlite3_column_int64(s, 0);
	w->first = sqlite3_column_int64(s, 1);
	w->last = sqlite3_column_int64(s, 2);
	w->n = sqlite3_column_int64(s, 3);
}

static int archive_walk_start(struct archive_walk *w, struct storage *st, long long owner,
			      long long lo, long long hi, bool down)
{
	*w = (struct archive_walk){ .st = st, .lo = lo, .hi = hi, .down = down };
	if (down && hi > 0) {
		/* The block holding hi first: it ends after hi. */
		sqlite3_stmt *s = st->block_at;
		int rc = sqlite3_bind_int64(s, 1, owner) == SQLITE_OK &&
				 sqlite3_bind_int64(s, 2, hi) == SQLITE_OK
			 ? sqlite3_step(s)
			 : SQLITE_ERROR;
		if (rc == SQLITE_ROW && sqlite3_column_int64(s, 1) < hi) {
			archive_walk_take(w, s);
			w->held = true;
		}
		storage_sqlite_done(s);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return storage_sqlite_fail(st, "archive: walk");
	}
	w->stmt = down ? st->blocks_down : st->blocks_up;
	long long from = down ? (hi > 0 ? hi : LLONG_MAX) : lo;
	if (sqlite3_bind_int64(w->stmt, 1, owner) != SQLITE_OK ||
	    sqlite3_bind_int64(w->stmt, 2, from) != SQLITE_OK) {
		storage_sqlite_done(w->stmt);
		return storage_sqlite_fail(st, "archive: walk");
	}
	return 0;
}

/* The next block's bounds into w: 1, 0 at the end, -1. */
static int archive_walk_next(struct archive_walk *w)
{
	if (w->held) {
		w->held = false;
		return 1;
	}
	int rc = sqlite3_step(w->stmt);
	if (rc == SQLITE_ROW) {
		archive_walk_take(w, w->stmt);
		/* Past the far bound: done. */
		if (w->down ? (w->lo > 0 && w->last <= w->lo) : (w->hi > 0 && w->first >= w->hi))
			return 0;
		return 1;
	}
	return rc == SQLITE_DONE ? 0 : storage_sqlite_fail(w->st, "archive: walk");
}

static void archive_walk_end(struct archive_walk *w)
{
	if (w->stmt != NULL)
		storage_sqlite_done(w->stmt);
	w->stmt = NULL;
}


/* What a query asks of each entry, prepared once. */
struct archive_filter {
	const struct archive_query *q;
	long long with;         /* archive_jid id, or 0: anyone */
	long long *ids;         /* q->ids sorted */
	const char *fts;        /* the FTS5 query, or NULL */
	long long *text_ids;    /* the ids matching fts (sorted), or NULL: ask FTS5 */
	size_t n_text_ids;
	bool per_entry;         /* anything beyond the id bounds */
};

static int archive_ll_cmp(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return x < y ? -1 : x > y;
}

/* 1 the entry matches, 0 not, -1. */
static int archive_matches(struct storage *st, const struct archive_filter *f,
			   const struct archive_item *it)
{
	const struct archive_query *q = f->q;
	if (f->with != 0 && it->with != f->with)
		return 0;
	if (q->with_resource != NULL && (strlen(q->with_resource) != it->res_len ||
					 memcmp(q->with_resource, it->res, it->res_len) != 0))
		return 0;
	if (q->n_ids > 0 &&
	    bsearch(&it->id, f->ids, (size_t)q->n_ids, sizeof *f->ids, archive_ll_cmp) == NULL)
		return 0;
	if (f->fts == NULL)
		return 1;
	if (!(it->flags & ARCHIVE_F_TEXT))
		return 0;
	long long text_id = archive_text_id(it);
	if (f->text_ids != NULL)
		return bsearch(&text_id, f->text_ids, f->n_text_ids, sizeof *f->text_ids,
			       archive_ll_cmp) != NULL;
	sqlite3_stmt *s = st->text_one;
	int rc = sqlite3_bind_text(s, 1, f->fts, -1, SQLITE_STATIC) == SQLITE_OK &&
			 sqlite3_bind_int64(s, 2, text_id) == SQLITE_OK
		 ? sqlite3_step(s)
		 : SQLITE_ERROR;
	storage_sqlite_done(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return storage_sqlite_fail(st, "archive: text");
	return rc == SQLITE_ROW;
}

/* The ids between lo and hi whose text matches f->fts, when there are
 * at most ARCHIVE_TEXT_IDS of them. */
static int archive_text_ids(struct storage *st, struct archive_filter *f, long long lo,
			    long long hi)
{
	sqlite3_stmt *s = st->text_ids;
	size_t cap = 0;
	/* A linked entry's words are under its sender's entry, a little older. */
	lo = lo > ARCHIVE_LINK_SPAN ? lo - ARCHIVE_LINK_SPAN : 0;
	if (sqlite3_bind_text(s, 1, f->fts, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 2, lo) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 3, hi > 0 ? hi : LLONG_MAX) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 4, ARCHIVE_TEXT_IDS + 1) != SQLITE_OK) {
		storage_sqlite_done(s);
		return storage_sqlite_fail(st, "archive: text");
	}
	int rc;
	f->n_text_ids = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (f->n_text_ids == cap) {
			cap = cap ? cap * 2 : 256;
			f->text_ids = xrealloc(f->text_ids, cap * sizeof *f->text_ids);
		}
		f->text_ids[f->n_text_ids++] = sqlite3_column_int64(s, 0);
	}
	storage_sqlite_done(s);
	if (rc != SQLITE_DONE)
		return storage_sqlite_fail(st, "archive: text");
	if (f->n_text_ids > ARCHIVE_TEXT_IDS) {
		free(f->text_ids); /* too many to hold: each entry asks */
		f->text_ids = NULL;
	} else if (f->text_ids == NULL) {
		f->text_ids = xmalloc(sizeof *f->text_ids); /* none match */
	}
	return 0;
}

/* Words to index: the rowid, and the body at off in a buffer. */
struct archive_words {
	long long rowid;
	size_t off, len;
};

static int archive_words_cmp(const void *a, const void *b)
{
	long long x = ((const struct archive_words *)a)->rowid;
	long long y = ((const struct archive_words *)b)->rowid;
	return x < y ? -1 : x > y;
}

/* Indexes the words of owner's entries beyond archive_upto (decision
 * 0008, "Words on demand"), at most ARCHIVE_TEXT_CATCHUP entries or
 * ARCHIVE_TEXT_CATCHUP_BYTES of bodies at once, whole blocks. An entry
 * whose twin's index reaches that twin is left out (its words are there),
 * and a LINK's words are its sender's body, under the sender's id.
 * Returns 0 when the index reaches owner's last entry, 1 when there is
 * more to do, -1 (the transaction marked broken). */
static int archive_text_catch_up_run(struct storage *st, long long owner, size_t *indexed)
{
	/* Where the index reaches as this transaction sees it: another
	 * handle (natterctl mam index, natterd) may have moved it. */
	if (archive_log_sync(st) < 0)
		return -1;
	long long from = archive_upto(st, owner), upto = from;
	struct archive_walk w;
	if (archive_walk_start(&w, st, owner, from, 0, false) < 0)
		return -1;
	struct buf bodies;
	buf_init(&bodies);
	struct archive_words *words = NULL;
	size_t n_words = 0, cap = 0, entries = 0;
	/* The block a LINK's words were last found in: the next LINK's are
	 * most often there too. */
	struct archive_dec src = { 0 };
	long long src_owner = 0;
	long n_src = 0;
	int rc, more = 0;
	while ((rc = archive_walk_next(&w)) == 1) {
		if (entries >= ARCHIVE_TEXT_CATCHUP || bodies.len >= ARCHIVE_TEXT_CATCHUP_BYTES) {
			more = 1;
			break;
		}
		long n = archive_load(st, &st->dec, w.rowid);
		if (n < 0) {
			rc = -1;
			break;
		}
		for (long i = 0; i < n && rc == 1; i++) {
			const struct archive_item *it = &st->dec.items[i];
			if (it->id <= from)
				continue;
			entries++;
			if (!(it->flags & ARCHIVE_F_TEXT) ||
			    ((it->flags & (ARCHIVE_F_LINK | ARCHIVE_F_TWIN)) &&
			     archive_covered(st, it->with, it->link)))
				continue;
			const char *body = it->body;
			size_t len = it->body_len;
			if (it->flags & ARCHIVE_F_LINK) {
				struct archive_item *s = NULL;
				for (long k = 0; src_owner == it->with && s == NULL && k < n_src; k++)
					if (src.items[k].id == it->link)
						s = &src.items[k];
				if (s == NULL) {
					int f = archive_find(st, &src, it->with, it->link, &s, NULL,
							     &n_src);
					src_owner = f > 0 ? it->with : 0;
					if (f < 0)
						rc = -1;
					if (f == 0)
						log_error("storage sqlite: archive entry %lld links to "
							  "%lld, which is not stored", it->id, it->link);
					if (f <= 0)
						continue;
				}
				body = s->body;
				len = s->body_len;
			}
			if (n_words == cap) {
				cap = cap ? cap * 2 : 256;
				words = xrealloc(words, cap * sizeof *words);
			}
			words[n_words++] = (struct archive_words){ archive_text_id(it), bodies.len, len };
			buf_append(&bodies, body, len);
		}
		if (rc == 1 && w.last > upto)
			upto = w.last;
	}
	archive_walk_end(&w);
	/* In rowid order: FTS5 writes out what it holds whenever a rowid is
	 * lower than the last. */
	if (rc >= 0 && n_words > 0)
		qsort(words, n_words, sizeof *words, archive_words_cmp);
	for (size_t i = 0; i < n_words && rc >= 0; i++) {
		sqlite3_stmt *stmt = st->text_put;
		if (sqlite3_bind_int64(stmt, 1, words[i].rowid) != SQLITE_OK ||
		    sqlite3_bind_text(stmt, 2, bodies.data + words[i].off, (int)words[i].len,
				      SQLITE_STATIC) != SQLITE_OK ||
		    sqlite3_step(stmt) != SQLITE_DONE)
			rc = storage_sqlite_fail(st, "archive: text");
		storage_sqlite_done(stmt);
	}
	if (rc >= 0 && upto > from)
		rc = archive_upto_set(st, owner, upto);
	*indexed = n_words;
	free(words);
	buf_free(&bodies);
	buf_free(&src.bytes);
	free(src.items);
	if (rc < 0) {
		st->archive_broken = true;
		return -1;
	}
	return more;
}

/* archive_text_catch_up_run in the caller's transaction or in one of its
 * own; *indexed: how many entries' words it indexed. */
static int archive_text_catch_up(struct storage *st, long long owner, size_t *indexed)
{
	bool own = sqlite3_get_autocommit(st->db);
	*indexed = 0;
	if (own && storage_sqlite_begin(st) < 0)
		return -1;
	int ret = archive_text_catch_up_run(st, owner, indexed);
	if (own && storage_sqlite_end(st, ret >= 0) < 0)
		ret = -1;
	return ret;
}

/* Counts the matches between lo and hi, up to ARCHIVE_COUNT_MAX + 1. */
static long long archive_count(struct storage *st, long long owner, const struct archive_filter *f,
			       long long lo, long long hi)
{
	struct archive_walk w;
	long long count = 0;
	if (archive_walk_start(&w, st, owner, lo, hi, false) < 0)
		return -1;
	int rc;
	while (count <= ARCHIVE_COUNT_MAX && (rc = archive_walk_next(&w)) == 1) {
		if (!f->per_entry && w.first > lo && (hi == 0 || w.last < hi)) {
			count += w.n; /* wholly inside: its count is in the index */
			continue;
		}
		long n = archive_load(st, &st->dec, w.rowid);
		if (n < 0) {
			rc = -1;
			break;
		}
		for (long i = 0; i < n; i++) {
			const struct archive_item *it = &st->dec.items[i];
			if (it->id <= lo || (hi > 0 && it->id >= hi))
				continue;
			int m = archive_matches(st, f, it);
			if (m < 0) {
				archive_walk_end(&w);
				return -1;
			}
			count += m;
		}
	}
	archive_walk_end(&w);
	return rc < 0 ? -1 : count;
}

/* An entry of a page collected in the walk's order, to be handed out
 * oldest first. */
struct storage_sqlite_row {
	long long id;
	int outgoing;
	size_t len;
	char *with;
	char *value;
};

/* "bare" or "bare/resource" of an entry's party. */
static char *archive_with_name(struct storage *st, const struct archive_item *it)
{
	sqlite3_stmt *s = st->jid_name;
	int rc = sqlite3_bind_int64(s, 1, it->with) == SQLITE_OK ? sqlite3_step(s) : SQLITE_ERROR;
	const char *bare = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : NULL;
	size_t bl = bare ? strlen(bare) : 0;
	char *out = xmalloc(bl + it->res_len + 2);
	memcpy(out, bare ? bare : "", bl);
	if (it->res_len > 0) {
		out[bl] = '/';
		memcpy(out + bl + 1, it->res, it->res_len);
		bl += it->res_len + 1;
	}
	out[bl] = '\0';
	storage_sqlite_done(s);
	return out;
}

static long long archive_min_bound(long long a, long long b)
{
	return a == 0 ? b : b == 0 ? a : a < b ? a : b;
}

static int storage_sqlite_archive_query(struct storage *st, const char *domain, const char *local,
					const struct archive_query *q,
					void (*fn)(void *arg, long long id, const void *value,
						   size_t len, int outgoing, const char *with),
					void *arg, bool *complete, long long *count)
{
	struct buf fts;
	buf_init(&fts);
	struct archive_filter f = { .q = q };
	int n = -1, max = q->max < 0 ? 0 : q->max;
	struct storage_sqlite_row *rows = NULL;
	int n_rows = 0;
	long long owner = 0;
	char bare[2048];
	*complete = true;
	if (count)
		*count = 0;
	if (archive_flush(st) < 0)
		goto out;
	snprintf(bare, sizeof bare, "%s%s%s", local, local[0] ? "@" : "", domain);
	if (q->n_ids > 1000)
		goto out; /* the caller bounds it */
	int known = archive_owner_of(st, bare, &owner);
	if (known < 0)
		goto out;
	if (q->with != NULL && known) {
		known = archive_owner_of(st, q->with, &f.with);
		if (known < 0)
			goto out;
	}
	if (q->text != NULL && storage_sqlite_fts_words(q->text, &fts) < 0)
		known = 0; /* no word at all: nothing can match */
	if (!known) {
		n = 0;
		goto out;
	}
	if (q->n_ids > 0) {
		f.ids = xmalloc((size_t)q->n_ids * sizeof *f.ids);
		memcpy(f.ids, q->ids, (size_t)q->n_ids * sizeof *f.ids);
		qsort(f.ids, (size_t)q->n_ids, sizeof *f.ids, archive_ll_cmp);
	}
	if (q->text != NULL) {
		size_t indexed;
		int more = archive_text_catch_up(st, owner, &indexed);
		if (more != 0) {
			n = more > 0 ? -2 : -1;
			goto out;
		}
		f.fts = fts.data;
		if (archive_text_ids(st, &f, q->after_id, q->before_id) < 0)
			goto out;
	}
	f.per_entry = f.with != 0 || q->with_resource != NULL || q->n_ids > 0 || f.fts != NULL;
	if (count != NULL) {
		/* Counting walks every match: bounded, beyond it the count is
		 * left out (XEP-0313 makes it optional for this reason). */
		*count = archive_count(st, owner, &f, q->after_id, q->before_id);
		if (*count < 0)
			goto out;
		if (*count > ARCHIVE_COUNT_MAX)
			*count = -1;
	}
	long long lo = q->after_id > q->page_after ? q->after_id : q->page_after;
	long long hi = archive_min_bound(q->before_id, q->page_before);
	struct archive_walk w;
	if (archive_walk_start(&w, st, owner, lo, hi, q->from_end) < 0)
		goto out;
	rows = xcalloc((size_t)max + 1, sizeof *rows);
	size_t bytes = 0;
	bool done = false;
	int rc = 0;
	while (!done && (rc = archive_walk_next(&w)) == 1) {
		long k = archive_load(st, &st->dec, w.rowid);
		if (k < 0) {
			rc = -1;
			break;
		}
		for (long j = 0; j < k && !done; j++) {
			const struct archive_item *it = &st->dec.items[q->from_end ? k - 1 - j : j];
			if (it->id <= lo || (hi > 0 && it->id >= hi))
				continue;
			int m = archive_matches(st, &f, it);
			if (m < 0) {
				rc = -1;
				done = true;
				break;
			}
			if (m == 0)
				continue;
			const void *value = it->value;
			size_t value_len = it->value_len;
			if (it->flags & ARCHIVE_F_LINK) {
				struct archive_item *src;
				int rc2 = archive_find(st, &st->link_dec, it->with, it->link, &src,
						       NULL, NULL);
				if (rc2 < 0) {
					rc = -1;
					done = true;
					break;
				}
				if (rc2 == 0)
					log_error("storage sqlite: archive entry %lld links to %lld, "
						  "which is not stored", it->id, it->link);
				value = rc2 ? src->value : "";
				value_len = rc2 ? src->value_len : 0;
			}
			if (n_rows == max || (n_rows > 0 && bytes + value_len > q->max_bytes)) {
				*complete = false; /* one more matches beyond the page */
				done = true;
				break;
			}
			struct storage_sqlite_row *r = &rows[n_rows++];
			r->id = it->id;
			r->outgoing = (it->flags & ARCHIVE_F_OUTGOING) != 0;
			r->with = archive_with_name(st, it);
			r->value = xmalloc(value_len ? value_len : 1);
			memcpy(r->value, value, value_len);
			r->len = value_len;
			bytes += value_len;
		}
	}
	archive_walk_end(&w);
	if (rc < 0)
		goto out;
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
	free(f.ids);
	free(f.text_ids);
	buf_free(&fts);
	return n;
}

static int storage_sqlite_archive_has(struct storage *st, const char *domain, const char *local,
				      long long id)
{
	char bare[2048];
	long long owner;
	struct archive_item *it;
	if (archive_flush(st) < 0)
		return -1;
	snprintf(bare, sizeof bare, "%s%s%s", local, local[0] ? "@" : "", domain);
	int rc = archive_owner_of(st, bare, &owner);
	return rc <= 0 ? rc : archive_find(st, &st->dec, owner, id, &it, NULL, NULL);
}

/* Deletes the entries below before_id of one block; its text goes with
 * them. Returns how many, or -1. */
/* Before twin s (a sender's entry) goes: the entry linking to it, if
 * still there, gets s's value and body (a COPY; the words stay under s's
 * id). Returns 1 handed over, 0 no such entry, -1. */
static int archive_hand_over(struct storage *st, const struct archive_item *s)
{
	struct archive_item *r;
	long long rowid;
	long n;
	int rc = archive_find(st, &st->link_dec, s->with, s->link, &r, &rowid, &n);
	if (rc <= 0)
		return rc;
	if (!(r->flags & ARCHIVE_F_LINK) || r->link != s->id)
		return 0;
	struct buf b;
	buf_init(&b);
	unsigned char fmt = ARCHIVE_BLOCK_FORMAT;
	buf_append(&b, &fmt, 1);
	for (long i = 0; i < n; i++) {
		struct archive_item it = st->link_dec.items[i];
		if (it.id == s->link) {
			it.flags = (it.flags & ~ARCHIVE_F_LINK) | ARCHIVE_F_COPY;
			it.body = s->body;
			it.body_len = s->body_len;
			it.value = s->value;
			it.value_len = s->value_len;
		}
		archive_encode(&b, &it);
	}
	sqlite3_stmt *u = st->block_update;
	rc = sqlite3_bind_int64(u, 1, rowid) == SQLITE_OK &&
			     sqlite3_bind_int64(u, 2, st->link_dec.items[0].id) == SQLITE_OK &&
			     sqlite3_bind_int64(u, 3, n) == SQLITE_OK &&
			     sqlite3_bind_blob64(u, 4, b.data, b.len, SQLITE_STATIC) == SQLITE_OK
		     ? sqlite3_step(u)
		     : SQLITE_ERROR;
	storage_sqlite_done(u);
	buf_free(&b);
	if (rc != SQLITE_DONE)
		return storage_sqlite_fail(st, "archive: hand over");
	return 1;
}

static long long archive_expire_block(struct storage *st, long long rowid, long long owner,
					long long before_id)
{
	long n = archive_load(st, &st->dec, rowid);
	if (n < 0)
		return -1;
	long gone = 0;
	for (long i = 0; i < n; i++) {
		const struct archive_item *it = &st->dec.items[i];
		if (it->id >= before_id)
			continue;
		gone++;
		if ((it->flags & (ARCHIVE_F_TEXT | ARCHIVE_F_LINK)) != ARCHIVE_F_TEXT)
			continue; /* no words, or the linked entry's */
		bool present = archive_text_present(st, owner, it);
		if (it->flags & ARCHIVE_F_TWIN) {
			int h = archive_hand_over(st, it);
			if (h < 0)
				return -1;
			/* The words are the other entry's now, a COPY: in
			 * the index if its owner's index reaches it. */
			if (h > 0 && (!present || archive_covered(st, it->with, it->link)))
				continue;
		}
		if (!present)
			continue;
		sqlite3_stmt *s = st->text_del;
		int rc = sqlite3_bind_int64(s, 1, archive_text_id(it)) == SQLITE_OK &&
				 sqlite3_bind_text(s, 2, it->body, (int)it->body_len,
						   SQLITE_STATIC) == SQLITE_OK
			 ? sqlite3_step(s)
			 : SQLITE_ERROR;
		storage_sqlite_done(s);
		if (rc != SQLITE_DONE)
			return storage_sqlite_fail(st, "archive: text delete");
	}
	sqlite3_stmt *s;
	int rc;
	if (gone == n) {
		s = st->block_del;
		rc = sqlite3_bind_int64(s, 1, rowid) == SQLITE_OK ? sqlite3_step(s) : SQLITE_ERROR;
	} else {
		/* Entries are in id order: the rest are the block's tail. */
		st->scratch.len = 0;
		unsigned char fmt = ARCHIVE_BLOCK_FORMAT;
		buf_append(&st->scratch, &fmt, 1);
		for (long i = gone; i < n; i++)
			archive_encode(&st->scratch, &st->dec.items[i]);
		s = st->block_update;
		rc = sqlite3_bind_int64(s, 1, rowid) == SQLITE_OK &&
				     sqlite3_bind_int64(s, 2, st->dec.items[gone].id) == SQLITE_OK &&
				     sqlite3_bind_int64(s, 3, n - gone) == SQLITE_OK &&
				     sqlite3_bind_blob64(s, 4, st->scratch.data, st->scratch.len,
							 SQLITE_STATIC) == SQLITE_OK
			     ? sqlite3_step(s)
			     : SQLITE_ERROR;
	}
	storage_sqlite_done(s);
	if (rc != SQLITE_DONE)
		return storage_sqlite_fail(st, "archive: expire");
	return gone;
}

static long long storage_sqlite_archive_delete(struct storage *st, const char *domain,
					       const char *local, long long before_id)
{
	if (archive_flush(st) < 0)
		return -1;
	sqlite3_stmt *stmt = !domain ? st->expire_all : local ? st->expire_one : st->expire_domain;
	/* The blocks first, then each: none is changed under the read. */
	long long *rowids = NULL, ret = -1;
	size_t n = 0, cap = 0;
	int rc = (domain == NULL || storage_sqlite_bind_text(stmt, 1, domain) == 0) &&
			 (local == NULL || storage_sqlite_bind_text(stmt, 2, local) == 0) &&
			 sqlite3_bind_int64(stmt, 3, before_id) == SQLITE_OK
		 ? SQLITE_ROW
		 : SQLITE_ERROR;
	while (rc == SQLITE_ROW && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			rowids = xrealloc(rowids, cap * 2 * sizeof *rowids);
		}
		rowids[2 * n] = sqlite3_column_int64(stmt, 0);
		rowids[2 * n + 1] = sqlite3_column_int64(stmt, 1); /* its owner */
		n++;
	}
	storage_sqlite_done(stmt);
	if (rc != SQLITE_DONE) {
		storage_sqlite_fail(st, "archive_delete");
		goto out;
	}
	ret = 0;
	for (size_t i = 0; i < n; i++) {
		long long gone = archive_expire_block(st, rowids[2 * i], rowids[2 * i + 1], before_id);
		if (gone < 0) {
			ret = -1;
			break;
		}
		ret += gone;
	}
out:
	free(rowids);
	return ret;
}

/* Indexes all of owner's words not indexed yet, a part at a time.
 * Returns how many entries' words, or -1. */
static long long archive_index_owner(struct storage *st, long long owner)
{
	long long ret = 0;
	int more;
	do {
		size_t indexed;
		more = archive_text_catch_up(st, owner, &indexed);
		ret += (long long)indexed;
	} while (more > 0);
	return more < 0 ? -1 : ret;
}

static long long storage_sqlite_archive_index(struct storage *st, const char *domain,
					      const char *local)
{
	if (archive_flush(st) < 0)
		return -1;
	if (domain != NULL) {
		char bare[2048];
		long long owner;
		snprintf(bare, sizeof bare, "%s%s%s", local, local[0] ? "@" : "", domain);
		int known = archive_owner_of(st, bare, &owner);
		return known <= 0 ? known : archive_index_owner(st, owner);
	}
	/* The owners first: none is changed under the read. */
	long long *owners = NULL, ret = 0;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s = st->block_owners;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			owners = xrealloc(owners, cap * sizeof *owners);
		}
		owners[n++] = sqlite3_column_int64(s, 0);
	}
	storage_sqlite_done(s);
	if (rc != SQLITE_DONE)
		ret = storage_sqlite_fail(st, "archive: owners");
	for (size_t i = 0; i < n && ret >= 0; i++) {
		long long k = archive_index_owner(st, owners[i]);
		ret = k < 0 ? -1 : ret + k;
	}
	free(owners);
	return ret;
}

static long long storage_sqlite_archive_last_id(struct storage *st)
{
	if (archive_flush(st) < 0)
		return -1;
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
	st->log_checked = st->archive_broken = false;
	return storage_sqlite_run(st, st->begin, "begin");
}

static int storage_sqlite_end(struct storage *st, int commit)
{
	bool ok = commit && !st->archive_broken && archive_hold(st) == 0 &&
		  storage_sqlite_run(st, st->commit, "commit") == 0;
	st->log_checked = st->archive_broken = false;
	if (ok)
		return 0;
	/* Held entries of the transaction are gone: read the log again. */
	archive_held_drop(st);
	st->log_loaded = false;
	archive_lasts_forget(st);
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
	.archive_index = storage_sqlite_archive_index,
	.archive_last_id = storage_sqlite_archive_last_id,
	.begin = storage_sqlite_begin,
	.end = storage_sqlite_end,
};
