/* Presence (RFC 6121 §4) and subscriptions (RFC 6121 §3): broadcast to
 * subscribers, probes answered from the registry, directed presence,
 * unavailable on logout, and the subscription state machine on both the
 * user's and the contact's side. Offline messages go out at initial
 * presence. */
#ifndef NATTER_PRESENCE_H
#define NATTER_PRESENCE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "jid/jid.h"
#include "modules/roster.h"
#include "xml/xml.h"

struct loop;

/* A session (full JID from, connection id session) sent presence without
 * 'to'. st has 'from' stamped. was_available tells whether the session had
 * sent available presence before: the first available one is "initial"
 * (probes, pending requests, offline messages follow). */
void presence_broadcast(struct loop *l, uint64_t session, const struct jid *from,
			struct xml_node *st, struct arena *a, bool was_available);

/* The session ended: unavailable to subscribers and own resources if it
 * was available, and the time is kept for last activity (XEP-0012). */
void presence_session_ended(struct loop *l, const struct jid *full, bool was_available);

/* Presence with a 'to' from a local session (from is its full JID):
 * subscription types go through the state machine, probes are answered,
 * directed presence is delivered. */
void presence_outbound(struct loop *l, struct xml_node *st, struct arena *a,
		       const struct jid *from, const struct jid *to);

/* Presence that arrived over s2s, called by the delivery path once the
 * sending domain is verified: from is the remote sender (bare or full), to
 * a JID of a local host (bare or full); st is in the jabber:client
 * namespace with 'from' and 'to' set. st and a stay the caller's; nothing
 * is ever answered with an error. Runs on any loop.
 *  - subscribe, subscribed, unsubscribe, unsubscribed (from a JID with a
 *    local part): the contact's side of RFC 6121 §3 for the owner, to's
 *    bare JID; the owner's sessions see the request or the change, and
 *    automatic answers go back over s2s.
 *  - probe: if the owner's roster has the sender's bare JID with a 'from'
 *    subscription, the owner's current presences go to the sender (the JID
 *    it probed from), or an unavailable presence from the owner's bare JID
 *    if none is available; otherwise nothing (RFC 6121 §4.3.2).
 *  - none (available), unavailable, error: delivered without regard to
 *    subscriptions (directed presence, RFC 6121 §4.6): a bare 'to' to every
 *    available session, a full one to that session if it exists, else
 *    dropped.
 * Dropped: anything from an entity the owner blocks (XEP-0191), to a
 * server JID or a non-local domain, from a local domain, or of another
 * type. */
void presence_inbound(struct loop *l, struct xml_node *st, struct arena *a,
		      const struct jid *from, const struct jid *to);

/* The session fetched its roster or blocklist (ROUTER_WANTS_*): it gets
 * those pushes from now on. */
void presence_mark_interested(struct loop *l, const struct jid *full, unsigned what);

/* The user removes contact from the roster (RFC 6121 §2.5.2): cancel the
 * subscriptions both ways, as far as they exist. */
void presence_roster_removed(struct loop *l, const struct jid *owner, struct roster_item *it,
			     struct arena *a);

/* Outside the subscription state machine (the directory's auto-buddy
 * groups, groups.h), owner's roster gained (added) or lost a subscription
 * both ways with contact, a local account. Owner's sessions get contact's
 * current presence, or an unavailable presence from each of contact's
 * available resources, unless one blocks the other; the other way is the
 * call for contact's roster, which changes in the same apply. Added also
 * drops a pending request from contact, now answered. Called without any
 * roster lock held. */
void presence_pair_changed(struct loop *l, const char *owner, const char *contact, bool added,
			   struct arena *a);

/* The account is about to be deleted (XEP-0077 §3.2): every contact's
 * subscription to and from it is cancelled as if each item were removed. */
void presence_account_removed(struct loop *l, const struct jid *owner);

#endif
