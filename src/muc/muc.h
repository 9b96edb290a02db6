/* Multi-user chat (XEP-0045): one chat service per host, on its own
 * domain (conference.DOMAIN by default), routed like a local domain.
 *
 * Every room is owned by one event loop, picked by hashing its JID: all
 * its state lives there and only there, and stanzas for it travel to that
 * loop through the inbox, as cross-loop delivery does. Owner-by-loop today
 * is owner-by-node tomorrow. The service itself (discovery) answers on any
 * loop, from a small server-wide list of the public rooms. */
#ifndef NATTER_MUC_H
#define NATTER_MUC_H

#include <stdbool.h>

#include "core/arena.h"
#include "core/config.h"
#include "jid/jid.h"
#include "xml/xml.h"

struct loop;
struct server;

#define NS_MUC "http://jabber.org/protocol/muc"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"
#define NS_MUC_OWNER "http://jabber.org/protocol/muc#owner"
#define NS_MUC_ADMIN "http://jabber.org/protocol/muc#admin"

/* One host's chat service. */
struct muc_service {
	const struct config_host *host;
	char domain[JID_PART_MAX + 1];
};

/* Builds the services of every host with muc.enabled. Returns 0, or -1
 * with a message in err. */
int muc_init(struct server *srv, char *err, size_t errlen);

/* Frees what muc_init built (after every loop has stopped). */
void muc_free(struct server *srv);

/* natterd stops: every occupant of loop l's rooms gets its unavailable
 * presence with status 332, while the links still carry it. */
void muc_loop_shutdown(struct loop *l);

/* Frees the rooms of loop l, which is stopping. */
void muc_loop_free(struct loop *l);

/* Loads the persistent rooms loop l owns (before it runs). */
void muc_loop_start(struct loop *l);

/* The loop that owns room (a bare room JID). */
struct loop *muc_owner_loop(struct server *srv, const char *room);

/* The services, by index (0 .. muc_service_count - 1). */
size_t muc_service_count(const struct server *srv);
const struct muc_service *muc_service_at(const struct server *srv, size_t i);

/* The host whose chat service domain is, or NULL: federation treats a
 * service's domain as local, with its host's certificate. */
const struct config_host *muc_service_host(const struct server *srv, const char *domain);

/* The chat service's domain of the host, or NULL when it has none. */
const char *muc_service_domain(const struct server *srv, const char *host_domain);

/* If to is a chat service or one of its rooms, handles st (from a local
 * session, from stamped as from) and returns true: on this loop, or on
 * the room's owner loop, which gets a copy. st and a stay the caller's.
 * Returns false for any other destination. */
bool muc_route(struct loop *l, struct xml_node *st, struct arena *a, const struct jid *from,
	       const struct jid *to);

/* natterctl room: args is what follows "room" ("list", "info ROOM",
 * "create ROOM [OWNER]", "destroy ROOM [REASON]"). Runs on the service
 * loop; done(arg, ok, text) is called there, once, with what to print. */
typedef void muc_control_done(void *arg, bool ok, const char *text);
void muc_control(struct server *srv, const char *args, muc_control_done *done, void *arg);

/* After a directory refresh of host domain: each group of cfg (groups,
 * in the snapshot's order) with room set gets its persistent room, with
 * the group's members as members and the room_owners group's as owners;
 * members who left lose their affiliation (and their place, when the
 * room is members-only). Any loop; each room is updated on its own. */
struct dir_snapshot;
void muc_directory_rooms(struct server *srv, const char *domain, const struct config_group *cfg,
			 const struct dir_snapshot *snap);

/* The server-wide list of public rooms, for disco#items on the service:
 * room_public_add/remove keep it (any loop), muc_public_each reads it. */
void muc_public_set(struct server *srv, const char *room, bool present);
/* Counts the rooms bare made that exist (delta +1 when it makes one, -1
 * when one ends). Returns false, counting nothing, when +1 would pass max. */
bool muc_creator_take(struct server *srv, const char *bare, int delta, int max);

void muc_public_each(struct server *srv, const char *service,
		     void (*fn)(void *arg, const char *room), void *arg);

#endif
