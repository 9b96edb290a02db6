/* XEP-0191: Blocking Command. mod_blocking.c answers the urn:xmpp:blocking
 * iqs, keeps each account's block list and pushes changes; this header is
 * the check the delivery path uses to enforce the list.
 *
 * Enforcement (done by the caller of blocking_blocks, XEP-0191 §4):
 *  - a stanza from a blocked entity to the user: message and iq get/set
 *    are answered with <service-unavailable/>, presence (and everything
 *    else) is dropped;
 *  - a stanza from the user to a blocked entity: answered with
 *    <not-acceptable/> plus <blocked xmlns='urn:xmpp:blocking:errors'/>
 *    in the <error/> element, and not delivered. */
#ifndef NATTER_BLOCKING_H
#define NATTER_BLOCKING_H

#include <stdbool.h>

#include "jid/jid.h"

#define NS_BLOCKING "urn:xmpp:blocking"
#define NS_BLOCKING_ERRORS "urn:xmpp:blocking:errors"

struct loop;

/* Whether owner_bare ("local@domain", normalised) has blocked other.
 * Items match in the order of XEP-0016 §2.1: other's full JID, bare JID,
 * domain/resource, domain; an item "example.com" thus blocks everyone
 * there, a bare JID all of its resources, a full JID that resource only.
 * The owner's own JIDs are never blocked.
 *
 * Called on loop l for every stanza between a local account and someone
 * else, so it costs at most four primary-key lookups in l's store and
 * allocates nothing that outlives the call (a per-account cache is a
 * future optimisation). A store error counts as "not blocked" and is
 * logged: delivery fails open rather than silently dropping everything. */
bool blocking_blocks(struct loop *l, const char *owner_bare, const struct jid *other);

/* The server-wide cache of which accounts have an empty list (struct
 * server's blocking_cache; made once at start, shared by all loops). */
struct blocking_cache;
struct blocking_cache *blocking_cache_new(void);
void blocking_cache_free(struct blocking_cache *c);

#endif
