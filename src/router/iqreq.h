/* Iq requests the server itself sends (a client's disco#info for its
 * entity capabilities, XEP-0115) and the answers it waits for.
 *
 * The table of requests in flight is shared by every loop (one mutex):
 * the answer comes back on whichever loop owns the answering session, or
 * the s2s link. It is bounded (IQREQ_MAX requests) and every request
 * expires after IQREQ_TIMEOUT_MS; an expired or refused one is reported
 * as reply NULL. */
#ifndef NATTER_IQREQ_H
#define NATTER_IQREQ_H

#include <stdbool.h>

#include "core/arena.h"
#include "jid/jid.h"
#include "xml/xml.h"

struct loop;
struct server;
struct iqreq;

#define IQREQ_MAX 1024
#define IQREQ_TIMEOUT_MS 30000

/* Called once per request: with the result or error iq (reply, in arena
 * a, both the caller's until it returns) on the loop that received it; or
 * with reply NULL when the request expired, could not be sent, or natterd
 * stops (then l may be NULL and done must only release arg). */
typedef void iqreq_done(struct loop *l, void *arg, struct xml_node *reply, struct arena *a);

struct iqreq *iqreq_new(void);
/* Reports every request still in flight as failed, then frees the table. */
void iqreq_free(struct iqreq *q);

/* Sends iq (type get or set, with from and to set; its id is replaced
 * here) to `to`, and calls done when the answer comes. Returns 0 sent,
 * -1 when the table is full (done has then been called with NULL). */
int iqreq_send(struct loop *l, struct xml_node *iq, struct arena *a, const struct jid *to,
	       iqreq_done *done, void *arg);

/* Reports the requests past their deadline as failed (reply NULL), on l.
 * Called once a second, so that a request nobody answers is known to
 * have failed soon after IQREQ_TIMEOUT_MS even when no other request is
 * sent. */
void iqreq_expire_due(struct loop *l);

/* An iq result or error addressed to the server (from is its stamped
 * sender): if it answers a request of ours, runs its done and returns
 * true; false for anything else (the caller drops it). */
bool iqreq_answer(struct loop *l, struct xml_node *st, struct arena *a, const struct jid *from);

#endif
