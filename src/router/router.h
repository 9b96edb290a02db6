/* The session registry: which sessions each account has, on which loop,
 * with what presence. Shared by all loops, sharded by account with a lock
 * per shard; entries are small copies, never pointers into a loop's
 * connections, so a reader on any thread can use what it got after the lock
 * is released. Delivery then goes to the owner loop by session id.
 *
 * The same interface is what a cluster backend will implement for many
 * nodes ("deliver to owner"). */
#ifndef NATTER_ROUTER_H
#define NATTER_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"

#define ROUTER_MAX_TARGETS 64

struct router;

struct router_target {
	uint64_t session; /* connection id */
	int loop;         /* owner loop index */
	int priority;
	bool available;
};

struct router *router_new(void);
void router_free(struct router *r);

/* Registers a bound session as bare/resource. If a session with the same
 * full JID exists it is removed from the registry and returned in *replaced
 * (return 1) so the caller can close it with <conflict/>; 0 otherwise.
 * A new session starts unavailable with priority 0. */
int router_bind(struct router *r, const char *bare, const char *resource, uint64_t session,
		int loop, struct router_target *replaced);

/* Removes the session if it is still registered under that id. */
void router_unbind(struct router *r, const char *bare, const char *resource, uint64_t session);

/* Records broadcast presence (available or not, and its priority). */
void router_set_presence(struct router *r, const char *bare, const char *resource,
			 uint64_t session, bool available, int priority);

/* The session bound as bare/resource; returns 0 found, -1 none. */
int router_find_full(struct router *r, const char *bare, const char *resource,
		     struct router_target *out);

/* Sessions for a message to the bare JID (RFC 6121 §8.5.2.1.1): the
 * available ones with the highest non-negative priority (all that tie).
 * Returns how many were written to out (at most max). *n_sessions gets how
 * many sessions the account has at all. */
int router_find_bare_message(struct router *r, const char *bare, struct router_target *out,
			     int max, int *n_sessions);

/* Every available session of the account (presence/iq fan-out). */
int router_find_available(struct router *r, const char *bare, struct router_target *out,
			  int max);

/* Every session of the account, available or not. */
int router_find_all(struct router *r, const char *bare, struct router_target *out, int max);

/* Keeps the session's last broadcast presence (serialised, without 'to')
 * so probes from contacts can be answered from any loop. Takes a reference
 * of its own; NULL forgets it. */
void router_set_presence_stanza(struct router *r, const char *bare, const char *resource,
				uint64_t session, struct refbuf *presence);

/* The last presence of every available session of the account: a new
 * reference each, which the caller releases. Returns how many. */
int router_get_presences(struct router *r, const char *bare, struct refbuf **out, int max);

/* What a session fetched, and so gets pushes of. */
#define ROUTER_WANTS_ROSTER 1u    /* roster pushes (RFC 6121 §2.1.6) */
#define ROUTER_WANTS_BLOCKLIST 2u /* blocklist pushes (XEP-0191 §3.3) */
#define ROUTER_WANTS_CARBONS 4u   /* message carbons (XEP-0280) */

/* Marks the session as interested in what (ROUTER_WANTS_*). */
void router_set_interested(struct router *r, const char *bare, const char *resource,
			   uint64_t session, unsigned what);

/* Clears what (ROUTER_WANTS_*) for the session. */
void router_clear_interested(struct router *r, const char *bare, const char *resource,
			     uint64_t session, unsigned what);

/* The sessions interested in any of what. */
int router_find_interested(struct router *r, const char *bare, unsigned what,
			   struct router_target *out, int max);

/* Stream management (XEP-0198, c2s/sm.h): a session that can be resumed
 * is found again by its account and the secret part of its SM id. */
#define ROUTER_SM_KEY 16

/* Records the session's resumption key (ROUTER_SM_KEY bytes). */
void router_set_sm_key(struct router *r, const char *bare, const char *resource,
		       uint64_t session, const unsigned char *key);

/* The session of account bare whose resumption key is key: 0 and its
 * target and resource (room for JID_PART_MAX + 1 bytes), or -1 when the
 * account has none (another account's key finds nothing). */
int router_find_sm(struct router *r, const char *bare, const unsigned char *key,
		   struct router_target *out, char *resource, size_t resource_size);

/* Resumable sessions that ended are remembered, the last
 * ROUTER_ENDED_SM per shard (of 64), so that a late <resume/> is told how
 * many of its stanzas were handled (XEP-0198's 'h' on <failed/>). */
#define ROUTER_ENDED_SM 256

/* Records that the session of bare with that key ended having handled h
 * of the client's stanzas. */
void router_sm_ended(struct router *r, const char *bare, const unsigned char *key, uint32_t h);

/* The h of an ended session of bare with that key: 0 and *h, or -1. */
int router_find_ended_sm(struct router *r, const char *bare, const unsigned char *key,
			 uint32_t *h);

/* A resumed session moves to another connection, perhaps on another loop:
 * the entry (bare, resource, session) takes the new id and loop, keeping
 * presence and interests. Returns 0, or -1 when it is not registered. */
int router_move(struct router *r, const char *bare, const char *resource, uint64_t session,
		uint64_t new_session, int new_loop);

#endif
