/* Hooks on the stanza path (DESIGN.md, "Where the next features plug in"):
 * a small, fixed set of events that feature modules handle by declaring
 * them in their module table (module.h), instead of the delivery code
 * calling each feature by name.
 *
 * Handlers of one event run in ascending priority (then in the order of
 * modules_all), on the loop that handles the stanza. A handler returns
 * DECLINED or OK to let the next one run, DONE when it consumed the
 * stanza (nothing else runs, and the caller delivers nothing). */
#ifndef NATTER_HOOKS_H
#define NATTER_HOOKS_H

#include <stdint.h>

#include "core/arena.h"
#include "core/status.h"
#include "jid/jid.h"
#include "xml/xml.h"

struct loop;

enum hook_event {
	/* A message a local client sent, after its from was stamped and
	 * before it is routed anywhere (to a local account, another domain;
	 * a private message to a room occupant from the room, with to = the
	 * occupant JID; not groupchat, see HOOK_ROOM_MESSAGE). st may be
	 * changed (e.g. a stanza-id added). */
	HOOK_MESSAGE_SENT,
	/* A message about to be delivered to a local account (to is its
	 * bare or full JID), from anyone: a local account, another domain or
	 * a room; after blocking rules, before it is written to the
	 * sessions or kept offline. st may be changed; c->offline says
	 * whether it goes to offline storage. */
	HOOK_MESSAGE_DELIVER,
	/* A groupchat message a room accepted, about to go to its
	 * occupants: from = the sender's real full JID, to = the room's bare
	 * JID, st = the message as the occupants get it (from room/nick).
	 * Runs on the room's owner loop. */
	HOOK_ROOM_MESSAGE,
	/* A presence a local session sent without a to (its broadcast),
	 * after the server stored it; st is that presence. */
	HOOK_PRESENCE_BROADCAST,
	/* A presence (available or unavailable) from a contact, local or
	 * remote, delivered to the local account to, after the roster rules
	 * let it through. */
	HOOK_PRESENCE_DELIVER,
	/* A session bound a resource (from = its full JID; st is NULL). */
	HOOK_SESSION_STARTED,
	/* A session ended (from = its full JID; st is NULL). A session
	 * that stream management (XEP-0198) keeps detached has not ended:
	 * this runs when it is closed or its resumption time runs out. */
	HOOK_SESSION_ENDED,
	/* A session that stream management kept detached has a connection
	 * again (from = its full JID; st is NULL), on the loop that now owns
	 * it. HOOK_SESSION_STARTED does not run for it: the session did not
	 * start again (no initial presence, no login notice). */
	HOOK_SESSION_RESUMED,
	/* A message was kept for a local session that has no connection now
	 * (detached by stream management, XEP-0198, waiting to resume):
	 * session = that session, to = its full JID, from = the sender.
	 * Push notifications (XEP-0357) hang here. st must not be changed. */
	HOOK_MESSAGE_QUEUED,
	/* An account was deleted (from = its bare JID; st is NULL), before
	 * its stores are. */
	HOOK_ACCOUNT_DELETED,
	HOOK__COUNT
};

struct hook_ctx {
	struct loop *loop;
	struct xml_node *st;    /* the stanza, or NULL (see the event) */
	struct arena *a;        /* st's arena: changes to st are allocated here */
	const struct jid *from; /* stamped sender */
	const struct jid *to;   /* addressee (never NULL for stanzas) */
	uint64_t session;       /* the local session concerned, or 0 */
	uint64_t previous;      /* HOOK_SESSION_RESUMED: the session's id before
				 * (a resumed session takes its new connection's) */
	bool offline;           /* HOOK_MESSAGE_DELIVER: going to offline storage */
};

struct module_hook {
	enum hook_event event;
	int priority;           /* lower runs first */
	enum status (*handle)(struct hook_ctx *c);
};

/* Runs the handlers of event for c. Returns DONE if one consumed the
 * stanza, else OK. */
enum status hooks_run(enum hook_event event, struct hook_ctx *c);

#endif
