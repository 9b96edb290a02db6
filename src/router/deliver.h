/* Delivery rules for stanzas from local sessions: RFC 6120 §10 and
 * RFC 6121 §8, applied to the registry in router.c. */
#ifndef NATTER_DELIVER_H
#define NATTER_DELIVER_H

#include "core/arena.h"
#include "core/buf.h"
#include "jid/jid.h"
#include "router/router.h"
#include "xml/xml.h"

struct loop;

/* Routes a stanza whose 'from' the sending session has stamped (from is its
 * full JID) and whose 'to', if any, parsed as *to (NULL: none). Runs on the
 * sender's loop; st and a belong to the caller. */
void deliver_stanza(struct loop *l, struct xml_node *st, struct arena *a, const struct jid *from,
		    const struct jid *to);

/* Routes a stanza that arrived from a remote server (s2s): from is the
 * sender on the verified remote domain, to a JID of a local domain. The
 * same rules as for local senders apply (RFC 6121 §8), with presence
 * through presence_inbound. Runs on the link's loop; st and a belong to
 * the caller. */
void deliver_inbound(struct loop *l, struct xml_node *st, struct arena *a, const struct jid *from,
		     const struct jid *to);

/* Writes bytes to one session: directly when it is on loop l, else through
 * its owner's inbox. Takes a reference of its own. */
void deliver_to_session(struct loop *l, const struct router_target *t, struct refbuf *bytes);

/* Serialises st once and writes the same bytes to each of the n sessions. */
void deliver_to_targets(struct loop *l, struct xml_node *st, const struct router_target *t,
			int n);

/* Answers st to its sender with a stanza error (RFC 6120 §8.3): type is
 * "cancel", "modify", "auth", "wait"; condition is the element name.
 * Stanzas of type error are never answered. */
void deliver_error(struct loop *l, struct xml_node *st, struct arena *a, const char *type,
		   const char *condition);

/* Whether the local account exists: 1 yes, 0 no, -1 store error. An
 * account with a session exists without asking the store. */
int deliver_account_exists(struct loop *l, const char *domain, const char *local);

/* Same, with an application-specific condition element app_ns/app_name
 * beside the defined one (e.g. XEP-0191's <blocked/>). */
void deliver_error_app(struct loop *l, struct xml_node *st, struct arena *a, const char *type,
		       const char *condition, const char *app_ns, const char *app_name);

/* Serialises st once and sends it to the full JID to (a local session). */
void deliver_to_jid(struct loop *l, struct xml_node *st, const struct jid *to);

/* The answer to an iq that was answered later (after a worker or the
 * storage thread), from what was kept of it: a result when condition is
 * NULL, else a stanza error of type etype with an optional text; from
 * from (a bare JID) to the asker's full JID to, with the request's id. */
void deliver_iq_answer(struct loop *l, const char *from, const char *to, const char *id,
		       const char *etype, const char *condition, const char *text);

#endif
