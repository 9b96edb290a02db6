/* Rosters (RFC 6121 §2) and roster versioning (XEP-0237): the stored
 * items, the jabber:iq:roster handler, and pushes. The subscription state
 * machine that changes items lives in presence.c. */
#ifndef NATTER_ROSTER_H
#define NATTER_ROSTER_H

#include <stdbool.h>

#include "core/arena.h"
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

/* Calls fn for every item of owner's roster. Returns the count or -1. */
int roster_each(struct loop *l, const char *owner, struct arena *a,
		void (*fn)(void *arg, struct roster_item *it), void *arg);

#endif
