/* archive-batch: what a commit costs the archive per row, on SQLite alone.
 *
 * Writes N messages between local accounts the way the storage thread
 * does (two archive rows each, in the sender's and the recipient's
 * archive, with the owner index and a full-text entry per row; the schema
 * and pragmas of src/storage/storage_sqlite.c), B messages per
 * transaction, and prints the CPU time per message. Comparing B = 16 with
 * B = 4096 is the case for group commit (docs/decisions/0008).
 *
 * -r writes a message as natterd does since schema 4: the recipient's
 * entry refers to the sender's (no value, no text of its own). -t gives
 * every body a word of its own (a timestamp, as natter-load's bodies
 * have), which costs the full-text index a new term per message.
 *
 * Variants of the schema, to measure what a change would save before
 * making it: -i keeps owners and parties as integer ids instead of text
 * (an index entry of three integers), -s writes no full-text entry, and
 * -f adds options to the full-text table (e.g. -f "columnsize=0").
 *
 * -k writes natterd's layout since schema 6: no row per message, but per
 * commit one row per owner (a block) holding that owner's entries of the
 * commit, each entry whole (id, direction, with, body, value), under one
 * index entry (owner, last id), and a row of a contentless full-text
 * table per entry (none with -s). -r, -i and -f do not apply to it.
 *
 * -g N prices a staged owner index (implies -i): the rows have no index
 * of their own; each entry's (owner, id, with) goes to a small table,
 * and once it holds N entries they move, in the owners' order, to the
 * big one, so a commit rewrites the small table's pages rather than a
 * leaf of the big index per owner. (A trigger would do the staging
 * write for free in SQL, but a statement that fires a trigger opens a
 * statement savepoint, and FTS5 flushes its pending terms as a new
 * segment at every savepoint: twice the cost per message.)
 *
 *   build/archive-batch [-r] [-t] [-i] [-s] [-k] [-g STAGED] [-f FTS5_OPTIONS]
 *                       [-n MESSAGES] [-b PER_COMMIT] [-u OWNERS] [-c CHECKPOINT_PAGES] DIR
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void exec_or_die(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "archive-batch: %s: %s\n", sql, err ? err : "?");
		exit(1);
	}
}

static sqlite3_stmt *prepare_or_die(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "archive-batch: %s: %s\n", sql, sqlite3_errmsg(db));
		exit(1);
	}
	return st;
}

static void step_or_die(sqlite3 *db, sqlite3_stmt *st)
{
	if (sqlite3_step(st) != SQLITE_DONE) {
		fprintf(stderr, "archive-batch: %s\n", sqlite3_errmsg(db));
		exit(1);
	}
	sqlite3_reset(st);
}

/* What every message carries: a body (unless -t), and a value of 300
 * bytes, about a chat message as natterd serialises it. */
#define FIRST_ID 1700000000000000LL
static const char default_body[] = "hello there, this is a message of a few words";
static char value[300];

static void report(long n, long per_commit, long owners, double s)
{
	printf("%ld messages (%ld entries), %ld per commit, %ld owners: %.2f s CPU, %.1f us per "
	       "message, %.0f messages/s\n",
	       n, 2 * n, per_commit, owners, s, s * 1e6 / (double)n, (double)n / s);
}

/* One owner's entries of the running commit (-k). */
struct block {
	unsigned char *data;
	size_t len, cap;
	long long first, last;
	int n;
};

static void block_put(struct block *b, const void *p, size_t len)
{
	if (b->len + len > b->cap) {
		b->cap = (b->len + len) * 2;
		b->data = realloc(b->data, b->cap);
		if (b->data == NULL)
			exit(1);
	}
	memcpy(b->data + b->len, p, len);
	b->len += len;
}

static void block_varint(struct block *b, size_t len)
{
	unsigned char v[5];
	int k = 0;
	do {
		v[k++] = (unsigned char)((len & 0x7f) | (len > 0x7f ? 0x80 : 0));
		len >>= 7;
	} while (len > 0);
	block_put(b, v, (size_t)k);
}

static void block_entry(struct block *b, long long id, int outgoing, const char *with,
			const char *body, const void *stanza, size_t len)
{
	if (b->n++ == 0)
		b->first = id;
	b->last = id;
	block_put(b, &id, sizeof id);
	unsigned char out = (unsigned char)outgoing;
	block_put(b, &out, 1);
	const void *field[] = { with, "r", body, stanza };
	size_t flen[] = { strlen(with), 1, strlen(body), len };
	for (int i = 0; i < 4; i++) {
		block_varint(b, flen[i]);
		block_put(b, field[i], flen[i]);
	}
}

/* -k: returns the CPU seconds. */
static double write_blocks(sqlite3 *db, long n, long per_commit, long owners, int unique,
			   int no_text)
{
	exec_or_die(db, "CREATE TABLE archive_block (id INTEGER PRIMARY KEY, owner INTEGER NOT NULL,"
			" first_id INTEGER NOT NULL, last_id INTEGER NOT NULL, n INTEGER NOT NULL,"
			" data BLOB NOT NULL);"
			"CREATE INDEX archive_block_owner ON archive_block (owner, last_id, first_id, n);"
			"CREATE VIRTUAL TABLE archive_text USING fts5(body, content = '',"
			" columnsize = 0, tokenize = 'unicode61 remove_diacritics 2');");
	sqlite3_stmt *put = prepare_or_die(db, "INSERT INTO archive_block"
		" (owner, first_id, last_id, n, data) VALUES (?1, ?2, ?3, ?4, ?5)");
	sqlite3_stmt *text = prepare_or_die(db, "INSERT INTO archive_text (rowid, body) VALUES (?1, ?2)");
	sqlite3_stmt *begin = prepare_or_die(db, "BEGIN IMMEDIATE");
	sqlite3_stmt *commit = prepare_or_die(db, "COMMIT");
	struct block *b = calloc((size_t)owners, sizeof *b);
	long *touched = calloc((size_t)owners, sizeof *touched);
	long n_touched = 0;
	char body[64];
	snprintf(body, sizeof body, "%s", default_body);
	long long id = FIRST_ID;
	srand(1);
	clock_t t0 = clock();
	step_or_die(db, begin);
	for (long i = 0; i <= n; i++) {
		if ((i % per_commit == 0 && i > 0) || i == n) {
			for (long k = 0; k < n_touched; k++) {
				struct block *o = &b[touched[k]];
				sqlite3_bind_int64(put, 1, touched[k]);
				sqlite3_bind_int64(put, 2, o->first);
				sqlite3_bind_int64(put, 3, o->last);
				sqlite3_bind_int(put, 4, o->n);
				sqlite3_bind_blob(put, 5, o->data, (int)o->len, SQLITE_STATIC);
				step_or_die(db, put);
				o->len = 0;
				o->n = 0;
			}
			n_touched = 0;
			step_or_die(db, commit);
			if (i < n)
				step_or_die(db, begin);
		}
		if (i == n)
			break;
		long from = (long)rand() % owners, to = (long)rand() % owners;
		char with[2][32];
		snprintf(with[0], sizeof with[0], "u%ld@localhost", to);
		snprintf(with[1], sizeof with[1], "u%ld@localhost", from);
		if (unique)
			snprintf(body, sizeof body, "t=%lld a message of a few words", id * 7919);
		for (int copy = 0; copy < 2; copy++) {
			long owner = copy ? to : from;
			if (b[owner].n == 0)
				touched[n_touched++] = owner;
			block_entry(&b[owner], ++id, !copy, with[copy], body, value, sizeof value);
			if (no_text)
				continue;
			sqlite3_bind_int64(text, 1, id);
			sqlite3_bind_text(text, 2, body, -1, SQLITE_STATIC);
			step_or_die(db, text);
		}
	}
	double s = (double)(clock() - t0) / CLOCKS_PER_SEC;
	for (long k = 0; k < owners; k++)
		free(b[k].data);
	free(b);
	free(touched);
	sqlite3_finalize(put);
	sqlite3_finalize(text);
	sqlite3_finalize(begin);
	sqlite3_finalize(commit);
	return s;
}

int main(int argc, char **argv)
{
	memset(value, 'x', sizeof value);
	long n = 200000, per_commit = 4096, owners = 1000, checkpoint = 32768;
	int opt, ref = 0, unique = 0, int_ids = 0, no_text = 0, blocks = 0;
	long staged = 0, page_size = 0;
	const char *fts_options = NULL;
	while ((opt = getopt(argc, argv, "rtiskf:n:b:u:c:g:p:")) != -1) {
		long *number = NULL;
		switch (opt) {
		case 'r': ref = 1; continue;
		case 't': unique = 1; continue;
		case 'i': int_ids = 1; continue;
		case 's': no_text = 1; continue;
		case 'k': blocks = 1; continue;
		case 'f': fts_options = optarg; continue;
		case 'n': number = &n; break;
		case 'b': number = &per_commit; break;
		case 'u': number = &owners; break;
		case 'c': number = &checkpoint; break;
		case 'g': number = &staged; int_ids = 1; break;
		case 'p': number = &page_size; break;
		default: return 2;
		}
		*number = atol(optarg);
		if (*number <= 0) {
			fprintf(stderr, "archive-batch: -%c needs a positive number\n", opt);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: archive-batch [-r] [-t] [-i] [-s] [-k] [-g STAGED] "
				"[-f FTS5_OPTIONS] [-n MESSAGES] [-b PER_COMMIT] [-u OWNERS] "
				"[-c CHECKPOINT_PAGES] DIR\n");
		return 2;
	}
	char path[4096], wal[4200];
	snprintf(path, sizeof path, "%s/archive-batch.db", argv[optind]);
	snprintf(wal, sizeof wal, "%s-wal", path);
	unlink(path);
	unlink(wal);
	sqlite3 *db;
	if (sqlite3_open(path, &db) != SQLITE_OK) {
		fprintf(stderr, "archive-batch: %s: cannot open\n", path);
		return 1;
	}
	char pragma[64];
	if (page_size) {
		snprintf(pragma, sizeof pragma, "PRAGMA page_size = %ld", page_size);
		exec_or_die(db, pragma);
	}
	snprintf(pragma, sizeof pragma, "PRAGMA wal_autocheckpoint = %ld", checkpoint);
	exec_or_die(db, "PRAGMA journal_mode = WAL");
	exec_or_die(db, "PRAGMA synchronous = NORMAL");
	exec_or_die(db, "PRAGMA cache_size = -32768");
	exec_or_die(db, pragma);
	if (blocks) {
		double s = write_blocks(db, n, per_commit, owners, unique, no_text);
		report(n, per_commit, owners, s);
		sqlite3_close(db);
		unlink(path);
		unlink(wal);
		return 0;
	}
	if (staged)
		exec_or_die(db, "CREATE TABLE archive (id INTEGER PRIMARY KEY, owner INTEGER NOT NULL,"
				" with_id INTEGER NOT NULL, with_res TEXT NOT NULL,"
				" outgoing INTEGER NOT NULL, value BLOB NOT NULL, ref INTEGER);"
				"CREATE TABLE archive_owner (owner INTEGER, id INTEGER, with_id INTEGER,"
				" PRIMARY KEY (owner, id)) WITHOUT ROWID;"
				"CREATE TABLE archive_owner_new (owner INTEGER, id INTEGER, with_id INTEGER,"
				" PRIMARY KEY (owner, id)) WITHOUT ROWID;");
	else if (int_ids)
		exec_or_die(db, "CREATE TABLE archive (id INTEGER PRIMARY KEY, owner INTEGER NOT NULL,"
				" with_id INTEGER NOT NULL, with_res TEXT NOT NULL,"
				" outgoing INTEGER NOT NULL, value BLOB NOT NULL, ref INTEGER);"
				"CREATE INDEX archive_owner ON archive (owner, id, with_id);");
	else
		exec_or_die(db, "CREATE TABLE archive (id INTEGER PRIMARY KEY, domain TEXT NOT NULL,"
				" local TEXT NOT NULL, with_bare TEXT NOT NULL, with_res TEXT NOT NULL,"
				" outgoing INTEGER NOT NULL, value BLOB NOT NULL, ref INTEGER);"
				"CREATE INDEX archive_owner ON archive (domain, local, id, with_bare);");
	char fts[512];
	snprintf(fts, sizeof fts,
		 "CREATE INDEX archive_ref ON archive (ref) WHERE ref IS NOT NULL;"
		 "CREATE VIRTUAL TABLE archive_text USING fts5(body,"
		 " tokenize = 'unicode61 remove_diacritics 2'%s%s);",
		 fts_options ? ", " : "", fts_options ? fts_options : "");
	exec_or_die(db, fts);
	/* With -i, the owner "u17" is the id 17. */
	sqlite3_stmt *put = prepare_or_die(db, int_ids
		? "INSERT INTO archive (id, owner, with_id, with_res, outgoing, value)"
		  " VALUES (?1, CAST(substr(?2, 2) AS INTEGER), CAST(substr(?3, 2) AS INTEGER), 'r', ?4, ?5)"
		: "INSERT INTO archive (id, domain, local, with_bare, with_res, outgoing, value)"
		  " VALUES (?1, 'localhost', ?2, ?3, 'r', ?4, ?5)");
	sqlite3_stmt *put_ref = prepare_or_die(db, int_ids
		? "INSERT INTO archive (id, owner, with_id, with_res, outgoing, value, ref)"
		  " VALUES (?1, CAST(substr(?2, 2) AS INTEGER), CAST(substr(?3, 2) AS INTEGER), 'r', 0, x'', ?4)"
		: "INSERT INTO archive (id, domain, local, with_bare, with_res, outgoing, value, ref)"
		  " VALUES (?1, 'localhost', ?2, ?3, 'r', 0, x'', ?4)");
	sqlite3_stmt *text = prepare_or_die(db, "INSERT INTO archive_text (rowid, body) VALUES (?1, ?2)");
	sqlite3_stmt *begin = prepare_or_die(db, "BEGIN IMMEDIATE");
	sqlite3_stmt *commit = prepare_or_die(db, "COMMIT");
	char body[64];
	snprintf(body, sizeof body, "%s", default_body);
	long long id = FIRST_ID;
	sqlite3_stmt *stage = NULL, *merge = NULL, *merged = NULL;
	if (staged) {
		stage = prepare_or_die(db, "INSERT INTO archive_owner_new VALUES"
			" (CAST(substr(?1, 2) AS INTEGER), ?2, CAST(substr(?3, 2) AS INTEGER))");
		merge = prepare_or_die(db, "INSERT INTO archive_owner SELECT * FROM archive_owner_new");
		merged = prepare_or_die(db, "DELETE FROM archive_owner_new");
	}
	long since_merge = 0;
	srand(1);
	clock_t t0 = clock();
	for (long i = 0; i < n; i++) {
		if (i % per_commit == 0) {
			if (staged && since_merge >= staged) {
				step_or_die(db, merge);
				step_or_die(db, merged);
				since_merge = 0;
			}
			if (i > 0)
				step_or_die(db, commit);
			step_or_die(db, begin);
		}
		char from[32], to[32];
		snprintf(from, sizeof from, "u%ld", (long)rand() % owners);
		snprintf(to, sizeof to, "u%ld", (long)rand() % owners);
		if (unique)
			snprintf(body, sizeof body, "t=%lld a message of a few words", id * 7919);
		since_merge += 2;
		for (int copy = 0; copy < 2; copy++) {
			id++;
			if (staged) {
				sqlite3_bind_text(stage, 1, copy ? to : from, -1, SQLITE_STATIC);
				sqlite3_bind_int64(stage, 2, id);
				sqlite3_bind_text(stage, 3, copy ? from : to, -1, SQLITE_STATIC);
				step_or_die(db, stage);
			}
			if (ref && copy) {
				sqlite3_bind_int64(put_ref, 1, id);
				sqlite3_bind_text(put_ref, 2, to, -1, SQLITE_STATIC);
				sqlite3_bind_text(put_ref, 3, from, -1, SQLITE_STATIC);
				sqlite3_bind_int64(put_ref, 4, id - 1);
				step_or_die(db, put_ref);
				continue;
			}
			sqlite3_bind_int64(put, 1, id);
			sqlite3_bind_text(put, 2, copy ? to : from, -1, SQLITE_STATIC);
			sqlite3_bind_text(put, 3, copy ? from : to, -1, SQLITE_STATIC);
			sqlite3_bind_int(put, 4, !copy);
			sqlite3_bind_blob(put, 5, value, sizeof value, SQLITE_STATIC);
			step_or_die(db, put);
			if (no_text)
				continue;
			sqlite3_bind_int64(text, 1, id);
			sqlite3_bind_text(text, 2, body, -1, SQLITE_STATIC);
			step_or_die(db, text);
		}
	}
	step_or_die(db, commit);
	report(n, per_commit, owners, (double)(clock() - t0) / CLOCKS_PER_SEC);
	sqlite3_finalize(put);
	sqlite3_finalize(put_ref);
	sqlite3_finalize(text);
	sqlite3_finalize(stage);
	sqlite3_finalize(merge);
	sqlite3_finalize(merged);
	sqlite3_finalize(begin);
	sqlite3_finalize(commit);
	sqlite3_close(db);
	unlink(path);
	unlink(wal);
	return 0;
}
