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

/* Frees every room of loop l (shutdown). */
void room_loop_free(struct loop *l);

#endif
