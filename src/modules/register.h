/* XEP-0077: In-Band Registration. After login the jabber:iq:register
 * handlers of mod_register.c change the password or remove the account;
 * before login c2s hands registration requests to register_preauth(). */
#ifndef NATTER_REGISTER_H
#define NATTER_REGISTER_H

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
 * The serialised reply iq (id copied, no from/to) is appended to reply;
 * nothing is appended for an iq of type result or error. iq and the
 * nodes built for the reply live in a; the caller owns both and reply.
 * Creating an account derives its SCRAM keys here, on the loop (slow:
 * PBKDF2), at most once per address per interval. Returns 0. */
int register_preauth(struct loop *l, const char *peer_addr, const char *domain,
		     struct xml_node *iq, struct arena *a, struct buf *reply);

#endif
