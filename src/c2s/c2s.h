/* Client-to-server sessions (RFC 6120): stream negotiation (STARTTLS, SASL,
 * resource binding) and the authenticated session's stanza intake. */
#ifndef NATTER_C2S_H
#define NATTER_C2S_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/buf.h"

struct loop;

/* Accepts one pending connection on a c2s listener of loop l. direct is
 * true for a direct TLS (XEP-0368) listener. */
void c2s_accept(struct loop *l, uv_stream_t *listener, bool direct);

/* Writes serialised stanza bytes to the session with that connection id on
 * loop l, if it is still there. Returns 0, or -1 when it is gone. */
int c2s_deliver(struct loop *l, uint64_t session, const char *data, size_t len);

/* What to do with stanza bytes whose session was gone when they reached
 * its loop (it ended, or its time to resume ran out, while they were on
 * their way): a chat or normal message goes to offline storage, an iq
 * get or set is answered with an error, the rest is dropped. */
void c2s_undeliverable(struct loop *l, const char *data, size_t len);

/* Closes that session with a stream error: "conflict" when it was replaced
 * by a new session with the same full JID (it is then already out of the
 * registry), "not-authorized" when its account was removed. */
void c2s_kick(struct loop *l, uint64_t session, const char *condition);

/* Writes bytes to a stream that is not authenticated yet (an answer that
 * came back from a worker thread, e.g. in-band registration). Nothing
 * happens if the connection is gone or has logged in meanwhile. */
void c2s_write_unauthenticated(struct loop *l, uint64_t session, const char *data, size_t len);

/* Releases what idle sessions of loop l hold only to be quick when busy
 * (the XML parser, the output buffer). Called periodically. */
void c2s_sweep(struct loop *l);

/* Closes every session of the account bare, on whichever loop, with the
 * stream error condition (a static string). */
void c2s_kick_account(struct loop *l, const char *bare, const char *condition);

/* The loop stops: sessions detached by stream management (c2s/sm.h) end
 * now, their unacknowledged messages kept offline. */
void c2s_loop_shutdown(struct loop *l);

#endif
