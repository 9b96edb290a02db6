/* The storage interface: a table of functions chosen by driver name
 * (STYLE.md habit 3). Every driver passes tests/unit/test_storage.c.
 *
 * A handle is used by one thread at a time; each event loop and each tool
 * opens its own. All strings are normalised JID parts (UTF-8). */
#ifndef NATTER_STORAGE_H
#define NATTER_STORAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/* SCRAM secrets for one hash (RFC 5802): never the password itself. */
struct scram_secret {
	char salt[64];       /* base64 salt, NUL terminated */
	unsigned iterations;
	char stored_key[129];/* hex StoredKey, NUL terminated */
	char server_key[129];/* hex ServerKey, NUL terminated */
};

struct user_credentials {
	struct scram_secret sha1;   /* SCRAM-SHA-1 */
	struct scram_secret sha256; /* SCRAM-SHA-256 */
};

struct storage;

/* One message of an archive (XEP-0313): an account's, or a room's (its
 * local part and service domain). */
struct archive_entry {
	long long id;              /* assigned by the caller (mam.c): unique,
				    * increasing with time, microseconds since
				    * the epoch at most a little ahead */
	const char *with;          /* the other party's bare JID (a room: the
				    * sender's occupant JID room/nick) */
	const char *with_resource; /* its resource, "" when none */
	int outgoing;              /* 1 sent by the owner, 0 received */
	const char *body;          /* indexed for full-text search; "" none */
	const void *value;         /* the message as serialised */
	size_t len;
	long long ref;             /* not 0: the same message as entry ref of
				    * the archive of with, written before (in
				    * the same order of writes); value and body
				    * are then that entry's (the driver copies
				    * them), and deleting it keeps them here. */
};

/* An archive query counts its matches (RSM <count/>) up to this many;
 * beyond, the count is left out: counting walks every match, and a
 * client paging from the newest end needs none. */
#define ARCHIVE_COUNT_MAX 10000

/* What an archive query matches; every bound is exclusive and 0 when
 * absent. Times are ids (see archive_entry). */
struct archive_query {
	const char *with;          /* bare JID, or NULL for everyone */
	const char *with_resource; /* with that resource only, or NULL */
	long long after_id, before_id;   /* the filter (start, end, after-id...) */
	long long page_after, page_before; /* the page within it (RSM after/before) */
	bool from_end;             /* the page is the newest max matches
				    * (RSM <before/>), else the oldest */
	int max;                   /* items in the page at most (>= 0) */
	size_t max_bytes;          /* and their bytes at most (one item always) */
	const char *text;          /* words that must all be in the body, or NULL */
	const long long *ids;      /* only these ids (n_ids > 0) */
	int n_ids;
};

struct storage_driver {
	const char *name;
	/* Opens (and on first use creates and migrates) the store under
	 * data_dir. Returns NULL and writes a message into err on failure. */
	struct storage *(*open)(const char *data_dir, char *err, size_t errlen);
	void (*close)(struct storage *st);
	/* Returns 0 found, 1 not found, -1 error. */
	int (*user_get)(struct storage *st, const char *domain, const char *local,
			struct user_credentials *out);
	/* Creates or replaces. Returns 0 or -1. */
	int (*user_put)(struct storage *st, const char *domain, const char *local,
			const struct user_credentials *cred);
	/* Returns 0 deleted, 1 not found, -1 error. Deletes the account's
	 * map and list stores and its archive with it (also when the account
	 * row is not there). */
	int (*user_del)(struct storage *st, const char *domain, const char *local);
	/* Calls fn for each account of domain (all domains if domain is NULL),
	 * sorted by domain then localpart. Returns 0 or -1. */
	int (*user_list)(struct storage *st, const char *domain,
			 void (*fn)(void *arg, const char *domain, const char *local),
			 void *arg);

	/* Map stores: per account and store name, values by key (roster
	 * items by contact JID, the vCard, private XML by namespace, ...).
	 * Values are opaque bytes (modules keep serialised XML). A write
	 * is committed when the call returns. */

	/* Returns 0 found (out replaced with the value), 1 not found, -1 error. */
	int (*map_get)(struct storage *st, const char *domain, const char *local,
		       const char *store, const char *key, struct buf *out);
	/* Creates or replaces. Returns 0 or -1. */
	int (*map_put)(struct storage *st, const char *domain, const char *local,
		       const char *store, const char *key, const void *value, size_t len);
	/* Deletes one key, or every key of the store when key is NULL.
	 * Returns 0 deleted (something), 1 nothing there, -1 error. */
	int (*map_del)(struct storage *st, const char *domain, const char *local,
		       const char *store, const char *key);
	/* Calls fn for each key of the store, sorted by key. fn must not
	 * write to this handle. Returns the number of entries, or -1. */
	int (*map_list)(struct storage *st, const char *domain, const char *local,
			const char *store,
			void (*fn)(void *arg, const char *key, const void *value, size_t len),
			void *arg);
	/* As map_list, but stops before the first entry that would bring the
	 * bytes listed (keys and values) over max_bytes, so that a store
	 * filled past its limit costs no more than the limit to read. Returns
	 * the number of entries listed, or -1. */
	int (*map_list_max)(struct storage *st, const char *domain, const char *local,
			    const char *store, size_t max_bytes,
			    void (*fn)(void *arg, const char *key, const void *value,
				       size_t len),
			    void *arg);
	/* The bytes of the store's keys and values together in *bytes, without
	 * reading the values. Returns the number of entries, or -1. */
	int (*map_size)(struct storage *st, const char *domain, const char *local,
			const char *store, long long *bytes);

	/* List stores: per account and store name, an ordered queue (offline
	 * messages). Each item gets an increasing id and the time it was
	 * stored (seconds since the epoch). */

	/* Appends. Returns 0 (and the new id in *id if id is not NULL) or -1. */
	int (*list_push)(struct storage *st, const char *domain, const char *local,
			 const char *store, const void *value, size_t len, long long *id);
	/* Calls fn for each item, oldest first. fn must not write to this
	 * handle. Returns the number of items, or -1. */
	int (*list_fetch)(struct storage *st, const char *domain, const char *local,
			  const char *store,
			  void (*fn)(void *arg, long long id, long long stamp, const void *value,
				     size_t len),
			  void *arg);
	/* Like list_fetch, but only the first max_items items whose id is
	 * greater than after_id. */
	int (*list_page)(struct storage *st, const char *domain, const char *local,
			 const char *store, long long after_id, int max_items,
			 void (*fn)(void *arg, long long id, long long stamp, const void *value,
				    size_t len),
			 void *arg);
	/* Deletes the items with id <= max_id. Returns 0 or -1. */
	int (*list_trim)(struct storage *st, const char *domain, const char *local,
			 const char *store, long long max_id);
	/* Returns the number of items, or -1. */
	int (*list_count)(struct storage *st, const char *domain, const char *local,
			  const char *store);
	/* The bytes of the items' values together in *bytes, without reading
	 * them. Returns the number of items, or -1. */
	int (*list_size)(struct storage *st, const char *domain, const char *local,
			 const char *store, long long *bytes);

	/* The message archive (XEP-0313). */

	/* Adds e to the archive of (domain, local). Returns 0 or -1. */
	int (*archive_put)(struct storage *st, const char *domain, const char *local,
			   const struct archive_entry *e);
	/* Calls fn for the page of entries matching q, oldest first.
	 * *complete is set when nothing beyond the page matches in the
	 * query's direction; *count (when not NULL) to the number of
	 * matches of the filter, whatever the page (RSM count), or -1 when
	 * there are more than ARCHIVE_COUNT_MAX. fn's with is the entry's
	 * with and resource ("bare/res" or "bare"). Returns the number of
	 * entries in the page, -2 when a search finds the archive's words
	 * still being indexed (its first search, of a big archive: ask
	 * again; each call does a part), or -1. */
	int (*archive_query)(struct storage *st, const char *domain, const char *local,
			     const struct archive_query *q,
			     void (*fn)(void *arg, long long id, const void *value, size_t len,
					int outgoing, const char *with),
			     void *arg, bool *complete, long long *count);
	/* Returns 1 if the archive of (domain, local) holds id, 0 if not, -1. */
	int (*archive_has)(struct storage *st, const char *domain, const char *local,
			   long long id);
	/* Deletes the entries older than before_id (LLONG_MAX: all) of one
	 * archive, of every archive of domain when local is NULL, or of every
	 * archive when domain is NULL. Returns the
	 * number deleted, or -1. */
	long long (*archive_delete)(struct storage *st, const char *domain, const char *local,
				    long long before_id);
	/* The greatest id in any archive (0 when empty), or -1. */
	/* Indexes the words of one archive (domain and local), or of every
	 * archive when domain is NULL, that no search has indexed yet (an
	 * archive's words are indexed at its first search: decision 0008,
	 * "Words on demand"), a part at a time: in the caller's transaction,
	 * or each part in one of its own. Returns the number of messages
	 * whose words it indexed, or -1. */
	long long (*archive_index)(struct storage *st, const char *domain, const char *local);
	long long (*archive_last_id)(struct storage *st);

	/* Groups the writes between begin and end into one transaction
	 * (committed by end with commit 1, undone with 0), for batches; other
	 * handles' writers wait meanwhile, so keep it short. No nesting
	 * (user_del inside takes a savepoint of it). Return 0 or -1 (end with
	 * commit: undone). */
	int (*begin)(struct storage *st);
	int (*end)(struct storage *st, int commit);
};

/* The drivers, each in src/storage/storage_<name>.c. */
extern const struct storage_driver storage_sqlite_driver;

/* Returns the driver of that name ("sqlite"), or NULL. */
const struct storage_driver *storage_driver_find(const char *name);

/* The longest password natterd sets or checks, in bytes. SASL PLAIN must
 * take 255 (RFC 4616 §2); SASLprep's cost grows faster than the length
 * (a 180 KB password took most of a second), so longer ones are refused
 * before it: not set (-1 below), and never matched (0). */
#define STORAGE_PASSWORD_MAX 1024

/* Derives the SCRAM secrets of password for SHA-1 and SHA-256 with a fresh
 * random salt each. Runs PBKDF2 (slow by design): call it from a worker, not
 * an event loop. Returns 0, or -1 (also for a password SASLprep refuses or
 * one longer than STORAGE_PASSWORD_MAX). */
int storage_credentials_from_password(const char *password, unsigned iterations,
				      struct user_credentials *out);

/* Checks password against the stored SCRAM-SHA-256 secret (PBKDF2 again).
 * Returns 1 match, 0 mismatch, -1 error. Worker thread only. */
int storage_credentials_check(const struct user_credentials *cred, const char *password);

#endif
