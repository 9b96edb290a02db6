/* Directory accounts (docs/directory.md): an LDAP account source for the
 * virtual hosts configured with `auth: ldap`.
 *
 * Each such host has one struct directory: a pool of pool_size threads,
 * each owning its own LDAP connections (ldap.c), fed by one job queue. An
 * event loop never waits on the directory: it submits a job and gets its
 * callback later, on the same loop, through the loop's inbox. A directory
 * that hangs only ever holds its own threads.
 *
 * Besides logins, the directory keeps (refreshed every refresh_interval and
 * on `natterctl directory refresh`):
 *  - the index of its accounts (username -> display name), which answers
 *    "does this account exist" for routing without a round trip;
 *  - the auto-buddy groups, applied to the stored rosters (groups.c).
 *
 * State changes (up, down) are logged once each. While the directory is
 * down, jobs fail at once with DIR_UNAVAILABLE and one thread retries the
 * connection with back-off (1 s doubling to 30 s). */
#ifndef NATTER_DIRECTORY_H
#define NATTER_DIRECTORY_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/config.h"
#include "jid/jid.h"

struct loop;
struct server;
struct directory;

enum dir_status {
	DIR_OK,          /* done */
	DIR_DENIED,      /* wrong password */
	DIR_UNKNOWN,     /* no such user (or more than one entry matched) */
	DIR_LOCKED,      /* the entry matches locked_filter */
	DIR_UNAVAILABLE, /* directory down, too slow, or the queue is full */
	DIR_ERROR        /* anything else (logged) */
};

/* What a login or a lookup learns about the user. */
struct dir_user {
	char local[JID_PART_MAX + 1]; /* the username, normalised (JID localpart) */
	char name[256];               /* display name; "" if none */
	char photo_hash[41];          /* SHA-1 hex of the photo (XEP-0153); "" none */
};

/* Called on the loop that submitted the job; u is NULL unless DIR_OK and
 * only valid during the call. arg is the submitter's. */
typedef void (*dir_user_cb)(struct loop *l, void *arg, enum dir_status st,
			    const struct dir_user *u);

/* vcard is the serialised <vCard xmlns='vcard-temp'> (valid during the
 * call) when DIR_OK. */
typedef void (*dir_vcard_cb)(struct loop *l, void *arg, enum dir_status st,
			     const struct buf *vcard);

/* summary is one line for the operator ("3 groups, 41 members, 2 roster
 * changes" or the error). */
typedef void (*dir_refresh_cb)(struct loop *l, void *arg, enum dir_status st,
			       const char *summary);

/* Starts a directory for every host with auth ldap (threads, refresh timer
 * on the service loop, where groups are applied). Called by server_run after the loops exist, before they run.
 * Returns 0 or -1 (logged). */
int directory_start(struct server *srv);

/* Stops the threads and frees everything; jobs still queued are dropped
 * without their callbacks (the loops are stopping too). */
void directory_stop(struct server *srv);

/* The directory of a host, or NULL for a host with internal accounts. */
struct directory *directory_of(struct server *srv, const char *domain);

/* Checks user's password: finds the entry by user_filter, refuses a locked
 * one, binds as its DN. user is what the client sent as authcid (not yet
 * normalised); an empty password is DIR_DENIED without asking the
 * directory (an empty simple bind is anonymous, RFC 4513 §5.1.2). A cached
 * success (cache_ttl) answers without the directory, but still on a later
 * loop iteration. */
void directory_auth(struct directory *d, struct loop *l, const char *user, const char *password,
		    dir_user_cb cb, void *arg);

/* Finds user (for GSSAPI logins, whose password the KDC checked): DIR_OK,
 * DIR_UNKNOWN, DIR_LOCKED or DIR_UNAVAILABLE. */
void directory_lookup(struct directory *d, struct loop *l, const char *user, dir_user_cb cb,
		      void *arg);

/* Reads user's vCard attributes (config vcard) into a vcard-temp vCard. */
void directory_vcard(struct directory *d, struct loop *l, const char *user, dir_vcard_cb cb,
		     void *arg);

/* Whether the account exists, from the index: 1 yes, 0 no, -1 not known
 * (the index was never read: the directory has been down since start).
 * Any thread. */
int directory_user_exists(struct directory *d, const char *local);

/* Re-reads the account index and the groups now and applies the groups to
 * the rosters, on loop l (the service loop: applying a large group takes
 * long); cb (may be NULL) runs there when done. */
void directory_refresh(struct directory *d, struct loop *l, dir_refresh_cb cb, void *arg);

/* Whether the directory is reachable as far as natter knows. Any thread. */
bool directory_up(struct directory *d);

/* Escapes value for use inside an LDAP filter (RFC 4515 §3): * ( ) \ NUL
 * and bytes >= 0x80 outside valid UTF-8 become \XX. Returns 0, or -1 when
 * out is too small. */
int directory_filter_escape(const char *value, char *out, size_t cap);

/* Builds the user filter: every %u in pattern becomes the escaped user.
 * Returns 0 or -1 (too long). */
int directory_user_filter(const char *pattern, const char *user, char *out, size_t cap);

#endif
