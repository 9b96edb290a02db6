/* A chat room's state and its stanzas (XEP-0045), on the room's owner loop
 * only (muc.h says how stanzas get there). */
#ifndef NATTER_ROOM_H
#define NATTER_ROOM_H

#include "core/arena.h"
#include "jid/jid.h"
#include "muc/muc.h"
#include "xml/xml.h"

struct loop;

/* Handles st, addressed to a room of svc (to has a localpart) by from (a
 * real full JID). Runs on the room's owner loop; st and a are the
 * caller's, and st may be changed. */
void room_handle(struct loop *l, const struct muc_service *svc, struct xml_node *st,
		 struct arena *a, const struct jid *from, const struct jid *to);

/* Creates the persistent rooms of every service that loop l owns, from
 * the store (before the loop runs). */
void room_load_all(struct loop *l);

/* For natterctl room, on the room's owner loop: a line per room of loop
 * l; one room's settings, occupants and affiliations; a new persistent
 * room (owner: a bare JID or NULL); destroying a room (its occupants are
 * told). Each writes what it did, or why not, into out; the last three
 * return 0 or -1. */
void room_list(struct loop *l, struct buf *out);
int room_info(struct loop *l, const char *jid, struct buf *out);
int room_admin_create(struct loop *l, const struct muc_service *svc, const char *jid,
		      const char *owner, struct buf *out);
int room_admin_destroy(struct loop *l, const char *jid, const char *reason, struct buf *out);

/* The room of a directory group, on its owner loop: made persistent if it
 * is not there; members (bare JIDs) become members, owners owners; those
 * the directory made members or owners before and no longer lists lose
 * that (and their place, status 321, when members_only). A ban or a
 * higher affiliation given in the room stays. */
void room_directory_sync(struct loop *l, const struct muc_service *svc, const char *jid,
			 const char *name, bool members_only, char *const *members, size_t n_members,
			 char *const *owners, size_t n_owners);

/* Tells every occupant of loop l's rooms that natterd stops (332);
 * once: a second call does nothing. */
void room_loop_shutdown(struct loop *l);

/* Frees every room of loop l (shutdown). */
void room_loop_free(struct loop *l);

#endif
