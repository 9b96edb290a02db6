/* Entity capabilities (XEP-0115) as PEP needs them: which of an online
 * entity's resources want notifications of which nodes ("NODE+notify"
 * features, XEP-0163 §4.3).
 *
 * Learnt from available presence: the <c/> element names a verification
 * string (ver); an unknown ver is asked for once, by a disco#info query to
 * the resource that announced it (iqreq.h), and kept only when the answer
 * hashes to that ver (§5.4). Shared by every loop under one mutex:
 *  - the versions: at most limits.caps_cache_size, the oldest forgotten
 *    first, each with the nodes it wants notifications for;
 *  - the resources: full JID -> ver, for local sessions and remote
 *    contacts whose presence reached a local account, at most
 *    CAPS_MAX_RESOURCES; forgotten at unavailable presence and at a
 *    session's end. */
#ifndef NATTER_CAPS_H
#define NATTER_CAPS_H

#include <stdbool.h>

#include "core/arena.h"
#include "jid/jid.h"
#include "xml/xml.h"

struct loop;
struct server;
struct caps;

#define NS_CAPS "http://jabber.org/protocol/caps"
#define CAPS_MAX_RESOURCES 100000
/* Resources waiting for one unknown ver to be learnt. */
#define CAPS_MAX_WAITERS 32

/* Runs once who's features are known, for each resource that waited for
 * them, with the owner given to caps_presence; on the loop that received
 * the disco#info answer. */
typedef void caps_known_fn(struct loop *l, const struct jid *who, const char *owner);

struct caps *caps_new(int cache_size);
void caps_free(struct caps *c);

enum caps_state {
	CAPS_NONE,    /* no (usable) caps in the presence */
	CAPS_KNOWN,   /* the features are known now */
	CAPS_PENDING  /* asked for; known() runs when the answer comes */
};

/* who (a full JID) sent available presence st: records its ver. *fresh
 * is set when who had no ver recorded or another one, i.e. its interests
 * may have changed. On CAPS_PENDING, known(l, who, owner) runs later (at
 * most CAPS_MAX_WAITERS resources wait for one ver; beyond, nothing). */
enum caps_state caps_presence(struct loop *l, const struct jid *who, struct xml_node *st,
			      struct arena *a, bool *fresh, caps_known_fn *known,
			      const char *owner);

/* who went unavailable or its session ended. */
void caps_forget(struct server *srv, const struct jid *who);

/* Whether who's recorded caps include node+notify. */
bool caps_wants(struct server *srv, const struct jid *who, const char *node);

/* Calls fn for each resource of bare (a bare JID) with recorded caps; at
 * most max of them. fn gets the resource's full JID and whether its caps
 * include node+notify (node NULL: false). */
int caps_each(struct server *srv, const char *bare, const char *node, int max,
	      void (*fn)(void *arg, const char *full, bool wants), void *arg);

/* Whether owner's last items went to who since who's ver was recorded;
 * marks them as sent. Returns true the first time. */
bool caps_first_for(struct server *srv, const struct jid *who, const char *owner);

/* XEP-0115 §5.1: the SHA-1 verification string of a disco#info <query/>
 * into out (>= 29 bytes). Returns 0, or -1 when the query is one §5.4
 * refuses (duplicate identities or features, malformed forms). */
int caps_hash(const struct xml_node *query, struct arena *a, char *out, size_t cap);

#endif
