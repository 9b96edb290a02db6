/* Offline messages (XEP-0160): kept durably for an account with no
 * available resource, delivered with XEP-0203 delay stamps at its next
 * initial presence with non-negative priority. */
#ifndef NATTER_OFFLINE_H
#define NATTER_OFFLINE_H

#include <stdint.h>

#include "core/arena.h"
#include "jid/jid.h"
#include "xml/xml.h"

struct loop;

/* Stores message st for the account to (bare or full JID), on the storage
 * thread. Returns 0 when it is queued; once it is committed it counts as
 * accepted. When the account's quota is full (limits.max_offline_messages,
 * or max_offline_size bytes with this one) the sender then gets
 * service-unavailable, on a store error internal-server-error. Returns 1
 * (nothing queued) when offline storage is off (a quota of 0), or the
 * account is being removed. */
int offline_store(struct loop *l, const struct jid *to, struct xml_node *st);

/* Sends the stored messages of owner (bare JID) to the session on loop l,
 * a page at a time as the connection takes them, and removes each page
 * from the store once it has been written to the socket. */
void offline_deliver(struct loop *l, const char *owner, uint64_t session);

#endif
