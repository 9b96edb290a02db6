/* The archive-all journal (docs/archive.md, "The journal"): per host, an
 * append-only, hash-chained, signed record of every message through it.
 *
 * On disk a journal is a directory of segment files seg-NNNNNNNN.njl,
 * numbered from 1. A segment is a sequence of records; every record is
 *
 *   offset 0   4 bytes  magic "NJR1"
 *          4   u32      length of the whole record, hash included
 *          8   u8       kind (enum journal_kind)
 *          9   u64      seq: 1, 2, 3 ... over the whole journal
 *         17   i64      time, microseconds since 1970 UTC
 *         25   ...      the kind's fields (below)
 *   length-32  32 bytes chain hash = SHA-256(previous record's chain hash
 *                       || every byte of this record before the hash)
 *
 * integers little-endian, strings as u32 length + bytes (not terminated).
 * The first record ever chains to 32 zero bytes.
 *
 *   JOURNAL_MESSAGE    strings how, from, to, type, id, thread, subject, body
 *   JOURNAL_CHECKPOINT u32 segment, u8 reason, u32 prev_segment,
 *                      u64 prev_valid_len, u64 prev_torn, 32 bytes
 *                      prev_hash (the chain hash before this record),
 *                      string host, 32 bytes key id (SHA-256 of the raw
 *                      Ed25519 public key), 64 bytes Ed25519 signature over
 *                      every byte of the record before the signature
 *   JOURNAL_RETENTION  u32 removed_below (segments below it were removed
 *                      by retention), u32 removed (how many this time)
 *
 * Every segment starts with a checkpoint (reason OPEN) that carries the
 * chain hash it continues from and how the previous segment ended (its
 * number, its length in whole records, and the bytes of a torn record
 * after them that a crash left), so a segment can be verified on its own
 * and retention can remove whole old segments. */
#ifndef NATTER_JOURNAL_H
#define NATTER_JOURNAL_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/buf.h"

#define JOURNAL_MAGIC "NJR1"
#define JOURNAL_HASH_LEN 32
#define JOURNAL_SIG_LEN 64
#define JOURNAL_HEADER_LEN 25
/* No record is larger: a message is bounded by limits.max_stanza_size
 * (at most 16 MiB), so this bounds every read of a damaged file. */
#define JOURNAL_RECORD_MAX (32u * 1024 * 1024)
/* The disco feature a host with a journal shows (docs/archive.md). */
#define NS_JOURNAL "urn:natter:journal:0"

enum journal_kind {
	JOURNAL_MESSAGE = 1,
	JOURNAL_CHECKPOINT = 2,
	JOURNAL_RETENTION = 3
};

enum journal_reason {
	JOURNAL_CP_OPEN = 1,     /* first record of a segment */
	JOURNAL_CP_PERIODIC = 2, /* every checkpoint_records / checkpoint_interval */
	JOURNAL_CP_SEAL = 3,     /* last record of a full segment */
	JOURNAL_CP_SHUTDOWN = 4  /* last record before natterd stopped */
};

/* A piece of a record being read: points into the caller's buffer. */
struct journal_str {
	const char *p;
	size_t n;
};

/* What journal_record_parse() read. Pointers point into its buffer. */
struct journal_rec {
	enum journal_kind kind;
	uint32_t len;
	uint64_t seq;
	int64_t time_us;
	/* JOURNAL_MESSAGE */
	struct journal_str how, from, to, type, id, thread, subject, body;
	/* JOURNAL_CHECKPOINT */
	uint32_t segment;
	uint8_t reason;
	uint32_t prev_segment;
	uint64_t prev_valid_len, prev_torn;
	const uint8_t *prev_hash;
	struct journal_str host;
	const uint8_t *key_id;
	const uint8_t *sig;
	size_t signed_len;      /* bytes the signature covers */
	/* JOURNAL_RETENTION */
	uint32_t removed_below, removed;
	const uint8_t *hash;    /* the stored chain hash */
};

/* A message to record, as a loop hands it over: every string is a
 * NUL-terminated copy owned by the struct (journal_msg_free). */
struct journal_msg {
	int64_t time_us;
	char *how, *from, *to, *type, *id, *thread, *subject, *body;
};

void journal_msg_free(struct journal_msg *m);

/* Appends a complete message record (seq, chain hash computed from
 * *chain, which is updated to the new record's hash) to out. */
void journal_record_message(struct buf *out, uint64_t seq, const struct journal_msg *m,
			    uint8_t chain[JOURNAL_HASH_LEN]);

/* Appends a signed checkpoint record; r gives segment, reason and the
 * prev_* fields (prev_hash is taken from *chain). Returns 0, or -1 when
 * signing failed (nothing appended). key is the private key. */
int journal_record_checkpoint(struct buf *out, uint64_t seq, int64_t time_us,
			      const struct journal_rec *r, const char *host, EVP_PKEY *key,
			      const uint8_t key_id[JOURNAL_HASH_LEN],
			      uint8_t chain[JOURNAL_HASH_LEN]);

/* Appends a retention record. */
void journal_record_retention(struct buf *out, uint64_t seq, int64_t time_us,
			      uint32_t removed_below, uint32_t removed,
			      uint8_t chain[JOURNAL_HASH_LEN]);

/* Reads one record at buf (avail bytes). Returns its length; 0 when avail
 * holds only the start of a record (a torn or still-growing tail); -1 when
 * the bytes are not a record (why says what is wrong). The chain hash is
 * not checked here (journal_record_chain does). */
long journal_record_parse(const uint8_t *buf, size_t avail, struct journal_rec *r,
			  const char **why);

/* Computes the chain hash of the record at buf (of its parsed length) from
 * prev into out. */
void journal_record_chain(const uint8_t *buf, const struct journal_rec *r,
			  const uint8_t prev[JOURNAL_HASH_LEN], uint8_t out[JOURNAL_HASH_LEN]);

/* Checks a checkpoint's signature with the public key. Returns true if good. */
bool journal_record_signature_ok(const uint8_t *buf, const struct journal_rec *r, EVP_PKEY *pub);

/* Reads the records of one segment file in order, holding one record
 * (at most JOURNAL_RECORD_MAX bytes) at a time. */
struct journal_reader {
	FILE *f;
	uint8_t *buf;
	size_t cap, len, pos;
	uint64_t offset;     /* file offset of buf[pos] */
	uint64_t size;       /* of the file when opened */
};

enum journal_next {
	JOURNAL_NEXT_RECORD = 1, /* *r, *bytes and *offset describe the next record */
	JOURNAL_NEXT_END = 0,    /* the file ends after the last record */
	JOURNAL_NEXT_TORN = -1,  /* the file ends inside a record (from *offset) */
	JOURNAL_NEXT_BAD = -2,   /* no record can start at *offset (why) */
	JOURNAL_NEXT_IO = -3     /* read error (errno) */
};

/* Returns 0, or -1 with errno. */
int journal_reader_open(struct journal_reader *rd, const char *path);
enum journal_next journal_reader_next(struct journal_reader *rd, struct journal_rec *r,
				      const uint8_t **bytes, uint64_t *offset, const char **why);
void journal_reader_close(struct journal_reader *rd);

/* The segment files of dir, ascending by number, in *nums (malloc'd, the
 * caller frees). Returns the count, or -1 with errno (no such dir: 0). */
long journal_segments(const char *dir, uint32_t **nums);

/* Writes dir/seg-NNNNNNNN.njl into out. */
void journal_segment_path(const char *dir, uint32_t num, char *out, size_t cap);

/* The journal directory of a host: its journal.dir, else
 * data_dir/journal/DOMAIN. */
struct config;
struct config_host;
void journal_dir(const struct config *cfg, const struct config_host *h, char *out, size_t cap);

/* The signing key pair lives in data_dir as journal.key (PKCS#8 PEM,
 * mode 0600) and journal.pub (SubjectPublicKeyInfo PEM). Only the journal
 * writer (natterd) holds the private key.
 *
 * journal_key_load_or_create: called once at natterd start when a host
 * has a journal; makes the pair if there is none. Returns the private key
 * (the caller frees it with EVP_PKEY_free) or NULL with err filled. */
EVP_PKEY *journal_key_load_or_create(const char *data_dir, char *err, size_t errlen);

/* Reads a public key (PEM) from path, for verify. NULL with err. */
EVP_PKEY *journal_key_load_public(const char *path, char *err, size_t errlen);

/* SHA-256 of the raw 32-byte Ed25519 public key of key (private or
 * public). Returns 0 or -1. */
int journal_key_id(EVP_PKEY *key, uint8_t out[JOURNAL_HASH_LEN]);

/* Lowercase hex of n bytes into out (2n+1 bytes). */
void journal_hex(const uint8_t *p, size_t n, char *out);

/* natterctl journal verify: checks every segment of dir against pub and
 * prints what it finds to out (one line per problem, each naming the
 * segment file, the record number and its byte offset). Returns 0 when
 * the journal is intact, 1 when something was edited, removed, reordered
 * or cut. */
int journal_verify(const char *dir, const char *host, EVP_PKEY *pub, FILE *out);

enum journal_format { JOURNAL_FORMAT_JSON, JOURNAL_FORMAT_MBOX };

/* What journal_export() selects: messages from or to the bare JID user
 * (groupchat messages the user sent included), or of the room (its
 * groupchat, and private messages through it); in [from_us, to_us). */
struct journal_filter {
	const char *user;   /* bare JID or NULL */
	const char *room;   /* bare room JID or NULL */
	int64_t from_us, to_us;
};

/* natterctl journal export: writes the selected messages of dir to out.
 * Records whose chain hash does not match are still written, and a
 * warning naming each goes to warn. Returns 0, or 1 on an I/O error. */
int journal_export(const char *dir, const struct journal_filter *f, enum journal_format fmt,
		   FILE *out, FILE *warn);

/* Parses "2024-05-01", "2024-05-01T10:00", "2024-05-01T10:00:00Z",
 * "...+02:00", fractions of a second allowed, into microseconds since
 * 1970 UTC (no zone: UTC). Returns 0 or -1. */
int journal_parse_time(const char *s, int64_t *out_us);

#endif
