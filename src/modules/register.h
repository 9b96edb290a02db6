/* XEP-0077: In-Band Registration. After login the jabber:iq:register
 * handlers of mod_register.c change the password or remove the account;
 * before login c2s hands registration requests to register_preauth(). */
#ifndef NATTER_REGISTER_H
#define NATTER_REGISTER_H

#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "xml/xml.h"

#define NS_REGISTER "jabber:iq:register"
/* The stream feature c2s offers when config allow_registration is set. */
#define NS_REGISTER_FEATURE "http://jabber.org/features/iq-register"

struct loop;

/* Called by c2s on loop l for an <iq/> received on a stream that is not
 * yet authenticated (and only once TLS is up: the password travels in
 * it). peer_addr is the peer's numeric address (conn->peer), domain the
 * stream's normalised 'to'. A get answers the registration form, a set
 * creates the account (XEP-0077 §3.1); with allow_registration off, or
 * for any other payload, the answer is <service-unavailable/>. One
 * account per address (IPv6: per /64) per registration_interval seconds,
 * counted across all loops.
 *
 * Returns 0 when the serialised reply iq (id copied, no from/to) was
 * appended to reply (nothing for an iq of type result or error); 1 when
 * the account's SCRAM keys are being derived on a worker thread (PBKDF2,
 * slow) and the reply goes to the stream of connection session later
 * (c2s_write_unauthenticated). iq and the nodes built for the reply live
 * in a; the caller owns both and reply. */
int register_preauth(struct loop *l, uint64_t session, const char *peer_addr, const char *domain,
		     struct xml_node *iq, struct arena *a, struct buf *reply);

#endif
