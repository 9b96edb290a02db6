/* Server-to-server federation (RFC 6120, XEP-0220 dialback, XEP-0178 SASL
 * EXTERNAL, XEP-0368 direct TLS): links to and from remote domains, found
 * through DNS SRV (dns.h). docs/federation.md.
 *
 * An outgoing link carries stanzas from one local domain to one remote
 * domain and is owned by one client loop (chosen by hashing the remote
 * domain); stanzas from other loops cross to it through the inbox.
 * Incoming links belong to the loop that accepted them. */
#ifndef NATTER_S2S_H
#define NATTER_S2S_H

#include <stdbool.h>
#include <uv.h>

#include "core/arena.h"
#include "jid/jid.h"
#include "xml/xml.h"

struct loop;
struct server;
struct buf;

#define NS_SERVER "jabber:server"
#define NS_DIALBACK "jabber:server:dialback"

/* Process-wide federation state (dialback secret, link list for natterctl
 * s2s). Returns 0 or -1 (logged). Called by server_run before the loops run
 * when s2s.enabled; s2s_loop_init once per client loop. */
int s2s_init(struct server *srv);
int s2s_loop_init(struct loop *l, char *err, size_t errlen);
void s2s_loop_free(struct loop *l);
void s2s_free(struct server *srv);

/* Whether stanzas may go to / come from this remote domain (s2s.enabled,
 * allow, deny, remotes with auth refuse). */
bool s2s_allowed(const struct server *srv, const char *remote);

/* Sends st (a stanza in the jabber:client namespace, 'from' a local JID,
 * 'to' a JID of a remote domain) to its domain. It is serialised here;
 * st and a stay the caller's. If it cannot be delivered (federation off
 * or refused, no such server, timeout) the sender gets the stanza error
 * (remote-server-not-found, remote-server-timeout, not-allowed), unless
 * it is an error or result itself. Any loop. */
void s2s_route(struct loop *l, struct xml_node *st, struct arena *a, const struct jid *from,
	       const struct jid *to);

/* Sends a stanza already serialised (as for a client: jabber:client
 * context, with 'from' a local JID and 'to' a JID of remote_domain) over
 * the link from local_domain to remote_domain. Takes a reference of its
 * own. Nothing bounces: for presence, which is never answered with an
 * error. Any loop. */
struct refbuf;
void s2s_send_bytes(struct loop *l, const char *local_domain, const char *remote_domain,
		    struct refbuf *bytes);

/* Accepts a connection on an s2s listener (direct: s2s_tls). */
void s2s_accept(struct loop *l, uv_stream_t *listener, bool direct);

/* Writes the live links, one line each ("remote-domain direction auth tls
 * idle-seconds local-domain"), for natterctl s2s. Any thread. */
void s2s_list(struct server *srv, struct buf *out);

#endif
