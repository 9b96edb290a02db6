/* Message archives (XEP-0313, mod_mam.c): what the rest of the server
 * needs of them. Archive ids are time-ordered numbers unique in the
 * process (storage.h, struct archive_entry); on the wire they are decimal
 * strings, also the XEP-0359 stanza-ids. */
#ifndef NATTER_MAM_H
#define NATTER_MAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "jid/jid.h"
#include "xml/xml.h"

struct server;
struct loop;
struct iq_ctx;

#define NS_MAM "urn:xmpp:mam:2"
#define NS_SID "urn:xmpp:sid:0"

/* At start, before the loops: reads the newest id so that new ones follow
 * it. Returns 0, or -1 with a message in err. */
int mam_init(struct server *srv, char *err, size_t errlen);
void mam_free(struct server *srv);

/* A new archive id: greater than every id given before, the current time
 * in microseconds unless that would not be. Safe from any thread. */
long long mam_new_id(struct server *srv);

/* The newest id given so far. */
long long mam_last_id(struct server *srv);

/* Parses a decimal archive id; 0 when s is not one. */
long long mam_parse_id(const char *s);

/* Once a second on the service loop: deletes expired entries hourly
 * (hosts[].mam.archive_expiry). */
void mam_sweep(struct loop *l);

/* The multi-device catch-up (docs/archive.md): when a session queried its
 * archive before its initial presence, the offline messages that query
 * could return (archive id <= the horizon) are not sent again. Returns the
 * session's horizon, or 0, and forgets it. */
long long mam_take_horizon(struct server *srv, uint64_t session);

/* The archive id in a stored message's <stanza-id by='owner'/>, or 0. */
long long mam_stanza_id_of(const char *xml, size_t len, const char *owner);

/* Whether XEP-0313 would archive st (a message): chat or normal with a
 * body (or an XEP-0334 store hint), without no-store hints. */
bool mam_archivable(const struct xml_node *st);

/* Queries the archive of (domain, local) for the iq c (a MAM query the
 * caller has allowed): answers with the result messages and <fin/>, from
 * archive_jid. Used for accounts and by rooms. */
void mam_query(struct iq_ctx *c, const char *domain, const char *local, const char *archive_jid);

/* Answers an iq get of the query form (XEP-0313 §4.1.1). */
void mam_query_form(struct iq_ctx *c);

/* Deletes the archive of (domain, local), on the storage thread. */
void mam_forget_archive(struct loop *l, const char *domain, const char *local);

/* Adds a room's message to its archive: id (its stanza-id), sent by the
 * occupant nick, bytes as broadcast (without 'to'). */
void mam_archive_room(struct loop *l, const char *service, const char *room, long long id,
		      const char *nick, const char *body, const char *bytes, size_t len);

#endif
