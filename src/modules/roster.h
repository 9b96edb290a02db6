/* Rosters (RFC 6121 §2) and roster versioning (XEP-0237): the stored
 * items, the jabber:iq:roster handler, and pushes. The subscription state
 * machine that changes items lives in presence.c. */
#ifndef NATTER_ROSTER_H
#define NATTER_ROSTER_H

#include <stdbool.h>

#include "core/arena.h"
#include "core/buf.h"
#include "xml/xml.h"

#define NS_ROSTER "jabber:iq:roster"

struct loop;

enum { SUB_TO = 1, SUB_FROM = 2 };

/* A roster item as stored: the jabber:iq:roster <item/>. Everything lives
 * in the arena given to roster_load. (Pending-in requests are kept apart,
 * by presence.c: a contact who asked is not in the roster until the user
 * adds them.) */
struct roster_item {
	const char *jid;       /* contact's bare JID */
	const char *name;      /* NULL: none */
	const char **groups;
	int n_groups;
	unsigned sub;          /* SUB_TO | SUB_FROM */
	bool ask;              /* we asked for their presence (pending-out) */
	bool approved;         /* pre-approved (RFC 6121 §3.4) */
	bool managed;          /* put there by the directory's auto-buddy groups
				* (directory/groups.h): the user can neither
				* remove nor rename nor regroup it (not-allowed),
				* and unsubscribe/unsubscribed about it are
				* ignored; never shown to clients */
};

/* Loads owner's item for contact (bare JIDs). Returns 1 found, 0 none,
 * -1 store error. */
int roster_load(struct loop *l, const char *owner, const char *contact, struct arena *a,
		struct roster_item *out);

/* A fresh item (subscription none) for contact. */
void roster_new_item(struct arena *a, const char *contact, struct roster_item *out);

/* Serialise changes to owner's roster across loops: hold the lock from
 * roster_load to roster_save. Never take a second account's lock while
 * holding one. */
void roster_lock(struct loop *l, const char *owner);
void roster_unlock(struct loop *l, const char *owner);

/* The item as a jabber:iq:roster <item/> element, allocated in a. */
struct xml_node *roster_item_node(struct arena *a, const struct roster_item *it);

/* Stores the item, bumps the roster
 * version and pushes the item to owner's interested sessions. Returns 0
 * or -1. */
int roster_save(struct loop *l, const char *owner, struct roster_item *it, struct arena *a);

/* Removes the item, bumps the version, pushes subscription='remove'. */
int roster_remove(struct loop *l, const char *owner, const char *contact, struct arena *a);

/* The bytes it takes in a roster result at its largest subscription state
 * (both, ask, approved), which is what limits.max_roster_size counts.
 * scratch and b are the caller's, for the serialisation. */
size_t roster_item_size(const struct roster_item *it, struct arena *scratch, struct buf *b);

/* Whether owner's roster may take it (replacing owner's item for it->jid,
 * if any) within limits.max_roster_items and max_roster_size. A change
 * that does not make an existing item larger always may. Reads the whole
 * roster, as far as that limit, without the lock: call it before
 * roster_lock (the limits may be passed by the few changes that race with
 * it, never by much). Returns 1 yes, 0 no, -1 store error. */
int roster_room(struct loop *l, const char *owner, const struct roster_item *it);

/* Calls fn for every item of owner's roster, in key order, as far as
 * twice limits.max_roster_size of stored bytes (a roster filled before
 * the limit is read only that far). Returns the count or -1. */
int roster_each(struct loop *l, const char *owner, struct arena *a,
		void (*fn)(void *arg, struct roster_item *it), void *arg);

#endif
